"""The capture fast path: the prefilter and tshark recycling change speed, never packets;
its fields agree with pyshark's full dissection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from egress.capture.file import FileSource
from egress.flows.table import in_scope
from egress.localnet import DEFAULT_LOCAL_NETWORKS, LocalNetworks
from egress.model import Packet
from tests.conftest import PCAPS, REAL, real_capture

LOCAL = LocalNetworks(DEFAULT_LOCAL_NETWORKS + ("fd00::/8",))
FILES = [PCAPS / "street-cctv-vlan20.pcap", PCAPS / "building-cctv-ipv6.pcapng", PCAPS / "trunk-qinq-mixed.pcap"]
REAL_FILES = ["alexa-app-dns-tls-sni.pcapng", "qinq-pppoe-tls-clienthello-sni.pcap", "vlan42-and-qinq-10-20-mixed-untagged.pcap", "xiaobai-y2-camera-setup-cn-cloud.pcap", "ipv6-tls-sni-gquic.pcap"]


def packets(path: Path, **kw: object) -> tuple[list[Packet], FileSource]:
    source = FileSource.for_networks(path, list(LOCAL.networks), **kw)
    return [p for p in source.packets() if in_scope(p, LOCAL)], source


def _path(name: str) -> Path:
    return real_capture(name) if not name.endswith(("vlan20.pcap", "ipv6.pcapng", "mixed.pcap")) else PCAPS / name


@pytest.mark.parametrize("name", [f.name for f in FILES] + REAL_FILES)
def test_prefilter_keeps_every_packet_that_matters(name: str) -> None:
    """libpcap's BPF route yields exactly the in-scope packets of the whole-file route."""
    fast, src = packets(_path(name))
    slow, whole = packets(_path(name), prefilter=False)
    assert src.report.prefiltered and not whole.report.prefiltered
    assert fast == slow and fast


def test_prefilter_drops_intra_site_video() -> None:
    """The 40 RTP packets camera→NVR never reach tshark."""
    source = FileSource.for_networks(PCAPS / "street-cctv-vlan20.pcap", list(LOCAL.networks))
    seen = list(source.packets())
    assert not [p for p in seen if p.dst_ip == "10.20.0.5"]
    assert source.report.packets == len(seen) < 137


@pytest.mark.parametrize("name", ["alexa-app-dns-tls-sni.pcapng", "xiaobai-y2-camera-idle-cn-p2p-keepalive.pcap"])
def test_recycling_tshark_loses_nothing(name: str) -> None:
    """With a fresh tshark every 50 packets, the packets are the same as with one tshark."""
    one, _ = packets(real_capture(name))
    many, source = packets(real_capture(name), chunk_packets=50)
    assert many == one
    assert len(one) > 500


def test_vlan_tags_and_names_are_read() -> None:
    """QinQ gives (outer, inner); VLAN 0 is dropped; DNS chains and SNI are parsed."""
    qinq, _ = packets(PCAPS / "trunk-qinq-mixed.pcap")
    assert {p.vlans for p in qinq} == {(100, 20), ()}
    dns = next(p for p in qinq if p.dns is not None)
    assert dns.dns is not None and dns.dns.names == ("eucas.ezvizlife.com",) and dns.dns.addresses == ("198.51.100.210",)
    b, _ = packets(PCAPS / "building-cctv-ipv6.pcapng")
    assert {p.vlans for p in b} == {()}
    assert "prod.adm.connect.axis.com" in {p.server_name for p in b}


@pytest.mark.skipif(not REAL.exists(), reason="../shared/pcaps-real is absent")
def test_fast_path_agrees_with_pyshark_full_dissection() -> None:
    """Timestamps, lengths, addresses, ports and SNI equal what pyshark's default (PDML) path reads."""
    import pyshark

    path = real_capture("xiaobai-y2-camera-setup-cn-cloud.pcap")
    source = FileSource.for_networks(path, [], prefilter=False)  # every IP packet
    ours = [(round(p.ts, 6), p.length, p.src_ip, p.dst_ip, p.sport, p.dport, p.server_name) for p in source.packets()]
    theirs = []
    loop = asyncio.new_event_loop()  # pyshark's sync API runs its own loop; earlier tests may have closed the default one
    cap = pyshark.FileCapture(str(path), eventloop=loop)
    try:
        for pkt in cap:
            if "IP" not in pkt:
                continue
            layer = pkt.tcp if "TCP" in pkt else pkt.udp if "UDP" in pkt and "ICMP" not in pkt else None
            sni = None
            if "TLS" in pkt and hasattr(pkt.tls, "handshake_extensions_server_name"):
                sni = str(pkt.tls.handshake_extensions_server_name)
            ports = (int(layer.srcport), int(layer.dstport)) if layer is not None else (0, 0)
            theirs.append((round(float(pkt.sniff_timestamp), 6), int(pkt.length), pkt.ip.src, pkt.ip.dst, *ports, sni))
    finally:
        cap.close()
        loop.close()
    assert ours == theirs


def test_a_tshark_that_cannot_start_is_an_error_not_a_quiet_capture(tmp_path: Path) -> None:
    """If tshark dies before printing anything, analyze exits 3 instead of reporting nothing."""
    import shutil
    import stat

    from tests.conftest import run_egress

    fake = tmp_path / "tshark"
    fake.write_text("#!/bin/sh\necho 'tshark: cannot load libwireshark' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "tcpdump").symlink_to(shutil.which("tcpdump") or "/usr/bin/tcpdump")
    proc = run_egress("analyze", PCAPS / "trunk-qinq-mixed.pcap", env={"PATH": str(tmp_path)})
    assert proc.returncode == 3, proc.stderr
    assert "tshark failed: tshark: cannot load libwireshark" in proc.stderr
