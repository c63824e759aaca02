"""The capture fast path: the prefilter and tshark recycling change speed, never packets;
its fields agree with pyshark's full dissection; every pcap and pcapng format reads alike;
a reader that stops early leaves no child behind."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import subprocess
import threading
from pathlib import Path
from typing import Literal

import pytest

from egress.capture import early as capture_early
from egress.capture.file import FileSource
from egress.capture.pcapfile import PCAP_MAGICS, PcapMagic
from egress.capture.process import spawn
from egress.capture.stream import PacketStream
from egress.capture.tshark import tshark_argv, tshark_path
from egress.errors import DependencyMissing, InputError
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


@pytest.mark.parametrize("prefilter", [True, False])
def test_progress_reports_the_whole_file_once(prefilter: bool) -> None:
    """The progress bar's callback gets the file's size in all, whichever route read it
    (tcpdump's read position, or the whole-file tshark), and the packets are the same."""
    path = PCAPS / "street-cctv-vlan20.pcap"
    moved: list[int] = []
    with_bar, source = packets(path, prefilter=prefilter, progress=moved.append)
    without, _ = packets(path, prefilter=prefilter)
    assert source.report.prefiltered is prefilter
    assert sum(moved) == path.stat().st_size and all(n > 0 for n in moved)
    assert with_bar == without and with_bar


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
    crash = pyshark.capture.capture.TSharkCrashException
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
    except crash:
        pass  # pyshark judges tshark's exit code when it cleans up, after the file's end (seen under load): the packets read decide
    finally:
        try:
            cap.close()
        except crash:
            pass
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


# ---- the pcap formats (egress.capture.pcapfile) ----------------------------------------------

def _fresh_tshark(head: bytes) -> subprocess.Popen[bytes]:
    """A new stream-reading tshark given the stream's header (never the early one)."""
    proc = spawn(tshark_argv(tshark_path()), tie_to_thread=False)
    assert proc.stdin is not None
    proc.stdin.write(head)
    return proc


# (byte order, nanosecond timestamps, Kuznetzov's modified records): the file header is written
# from the pcap specification here, not from egress's table, so that tshark and tcpdump judge it.
PCAP_FORMATS = [(order, nanos, modified) for order in "<>" for nanos, modified in ((False, False), (True, False), (False, True))]


def _pcap(order: str, nanos: bool, modified: bool, count: int = 3) -> bytes:
    from scapy.all import IP, UDP, Ether, Raw

    magic = 0xA1B23C4D if nanos else 0xA1B2CD34 if modified else 0xA1B2C3D4
    frame = bytes(Ether(src="44:19:b6:12:34:56", dst="00:00:5e:00:01:14") / IP(src="10.20.1.11", dst="192.0.2.50") / UDP(sport=40000, dport=32100) / Raw(b"x" * 20))
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)
    for i in range(count):
        out += struct.pack(order + "IIII", 1_700_000_000 + i, 250_000_000 if nanos else 250_000, len(frame), len(frame))
        if modified:
            out += struct.pack(order + "iHBx", 0, 0x0800, 0)  # ifindex, protocol, packet type
        out += frame
    return out


def _seen(packets: list[Packet]) -> list[tuple[object, ...]]:
    return [(p.ts, p.length, p.src_mac, p.src_ip, p.dst_ip, p.sport, p.dport) for p in packets]


def test_the_pcap_table_holds_every_pcap_format() -> None:
    """Each of the six pcap magics (both byte orders of µs, ns and modified pcap) is in the table, and no other."""
    assert {_pcap(*f)[:4] for f in PCAP_FORMATS} == set(PCAP_MAGICS)
    assert all(PCAP_MAGICS[_pcap(*f)[:4]] == PcapMagic(*f) for f in PCAP_FORMATS)


@pytest.mark.parametrize("prefilter", [True, False], ids=["prefiltered", "tshark-whole"])
@pytest.mark.parametrize("fmt", PCAP_FORMATS, ids=lambda f: f"{'be' if f[0] == '>' else 'le'}-{'ns' if f[1] else 'modified' if f[2] else 'us'}")
def test_every_pcap_format_gives_the_same_packets(fmt: tuple[str, bool, bool], prefilter: bool, tmp_path: Path) -> None:
    """A file in any pcap byte order and timestamp precision is a capture, read to the same packets."""
    path = tmp_path / "one.pcap"
    path.write_bytes(_pcap(*fmt))
    got, source = packets(path, prefilter=prefilter)
    assert _seen(got) == [(1_700_000_000.25 + i, 62, "44:19:b6:12:34:56", "10.20.1.11", "192.0.2.50", 40000, 32100) for i in range(3)]
    assert source.report.warnings == []


@pytest.mark.parametrize("dissect", ["all", "names"])
@pytest.mark.parametrize("fmt", [f for f in PCAP_FORMATS if not f[2]], ids=lambda f: f"{'be' if f[0] == '>' else 'le'}-{'ns' if f[1] else 'us'}")
def test_a_stream_is_split_in_either_byte_order_and_precision(fmt: tuple[str, bool, bool], dissect: Literal["all", "names"]) -> None:
    """Record lengths and timestamps are read in the stream's own byte order and precision, by the
    header decoder and by tshark alike; dissecting everything recycles tshark mid-stream."""
    rot = PacketStream(io.BytesIO(_pcap(*fmt, count=5)), _fresh_tshark, chunk_packets=2, dissect=dissect)
    got = [p for p in rot.packets() if p is not None]
    assert _seen(got) == [(1_700_000_000.25 + i, 62, "44:19:b6:12:34:56", "10.20.1.11", "192.0.2.50", 40000, 32100) for i in range(5)]
    assert rot.leftover == 0
    assert (rot.to_tshark, rot.rotations) == ((5, 2) if dissect == "all" else (0, 0))


def test_a_tshark_filled_at_the_end_of_a_batch_is_let_go() -> None:
    """A tshark whose share is full exactly at the end of a batch gets its end of input when
    the next one takes over: it used to be left waiting on its stdin, and the stream waited
    for it to exit, forever (a live capture, whose batches are small, would have stopped)."""
    whole = _pcap("<", False, False, count=4)
    frame = (len(whole) - 24) // 4
    read, write = os.pipe()
    os.write(write, whole[: 24 + 2 * frame])  # the header and two records: the first batch
    rot = PacketStream(os.fdopen(read, "rb", buffering=0), _fresh_tshark, chunk_packets=2, dissect="all")
    got: list[Packet] = []

    def consume() -> None:
        for batch in rot.batches():
            if batch and not got:  # the first batch is read and dissected: now the rest
                os.write(write, whole[24 + 2 * frame :])
                os.close(write)
            got.extend(p for p in batch or () if p is not None)

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    consumer.join(timeout=30)
    stuck = consumer.is_alive()
    rot.close()
    assert not stuck, "the stream waited for a tshark that was never told its input had ended"
    assert (len(got), rot.to_tshark, rot.rotations) == (4, 4, 1)


@pytest.mark.parametrize("peeked", [False, True], ids=["read", "peeked"])
def test_the_records_that_came_with_the_header_are_handed_on_at_once(peeked: bool) -> None:
    """A capture's first packets, written with the pcap header into a buffered pipe (what
    dumpcap's stdout is) and then nothing more, come out without waiting for more input: a
    quiet link used to hold them until its next packets arrived. `peeked`: the header was
    peeked at first, as the live source checks dumpcap's start, so the reader's buffer holds it."""
    whole = _pcap("<", False, False, count=2)
    read, write = os.pipe()
    os.write(write, whole)  # and the pipe stays open: no more packets, no end
    stream = os.fdopen(read, "rb")
    if peeked:
        assert stream.peek(24)[:4] == whole[:4]
    rot = PacketStream(stream, _fresh_tshark, dissect="all")
    got: list[Packet] = []
    arrived = threading.Event()

    def consume() -> None:
        for batch in rot.batches():
            got.extend(p for p in batch or () if p is not None)
            if len(got) == 2:
                arrived.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    came = arrived.wait(timeout=20)
    os.close(write)  # the end: the stream finishes before it is closed
    consumer.join(timeout=30)
    rot.close()
    assert came, f"{len(got)} of the 2 packets came out while the pipe stayed quiet"
    assert len(got) == 2


@pytest.mark.parametrize("order", "<>")
def test_rotation_refuses_a_stream_that_is_not_plain_pcap(order: str) -> None:
    """Modified pcap (24-byte record headers) is no stream dumpcap or tcpdump writes: refused, not mis-split."""
    rot = PacketStream(io.BytesIO(_pcap(order, False, True)), _fresh_tshark)
    with pytest.raises(InputError, match="does not start with a pcap header"):
        list(rot.packets())


def _pcapng(order: str, count: int = 3) -> bytes:
    """A pcapng file in one byte order: section header, one Ethernet interface, enhanced packet blocks."""
    from scapy.all import IP, UDP, Ether, Raw

    frame = bytes(Ether(src="44:19:b6:12:34:56") / IP(src="10.20.1.11", dst="192.0.2.50") / UDP(sport=40000, dport=32100) / Raw(b"x" * 20))
    padded = frame + bytes(-len(frame) % 4)
    out = struct.pack(order + "IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    out += struct.pack(order + "IIHHII", 1, 20, 1, 0, 65535, 20)
    for i in range(count):
        micros = (1_700_000_000 + i) * 1_000_000 + 250_000
        out += struct.pack(order + "IIIIIII", 6, 32 + len(padded), 0, micros >> 32, micros & 0xFFFFFFFF, len(frame), len(frame))
        out += padded + struct.pack(order + "I", 32 + len(padded))
    return out


@pytest.mark.parametrize("order", "<>", ids=["le", "be"])
def test_a_pcapng_file_in_either_byte_order_is_whole(order: str, tmp_path: Path) -> None:
    """The section header's length is read in its own byte order: a whole file is read, not called cut short."""
    path = tmp_path / "one.pcapng"
    path.write_bytes(_pcapng(order))
    got, source = packets(path)
    assert [p.ts for p in got] == [1_700_000_000.25 + i for i in range(3)]
    assert source.report.warnings == [] and not source.report.truncated


def _children() -> set[int]:
    """This process's child pids, from every thread (a zombie is still listed until reaped)."""
    tasks = Path("/proc/self/task")
    return {int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()}


@pytest.mark.parametrize("prefilter", [True, False], ids=["prefiltered", "tshark-whole"])
def test_a_reader_that_stops_early_leaves_no_child_behind(prefilter: bool) -> None:
    """Closing the packet iterator after one packet leaves no tcpdump or tshark running or unreaped."""
    before = _children()
    source = FileSource.for_networks(PCAPS / "street-cctv-vlan20.pcap", list(LOCAL.networks), prefilter=prefilter, chunk_packets=50)
    stream = source.packets()
    next(stream)
    assert _children() - before  # tcpdump and/or tshark are running
    stream.close()
    assert _children() - before == set()


def test_the_early_prefilter_is_the_one_that_reads_its_file() -> None:
    """`analyze` starts its first file's tcpdump before the pipeline is built: that tcpdump
    (same file, same filter) is the one the file's source reads, and the packets are the same."""
    path = PCAPS / "street-cctv-vlan20.pcap"
    expected, _ = packets(path)
    before = _children()
    capture_early.start_early(path, LOCAL.networks)
    assert len(capture_early._early) == 1 and len(_children() - before) == 1  # the tcpdump
    source = FileSource.for_networks(path, list(LOCAL.networks))
    stream = source.packets()
    got = [next(stream)]
    # taken, so no second one was started: one nobody took waits until the stream has ended.
    # (Not told from the process list: the early tcpdump may have finished and been reaped.)
    assert not capture_early._early
    got += list(stream)
    assert [p for p in got if in_scope(p, LOCAL)] == expected and source.report.prefiltered
    assert _children() - before == set()


def test_an_early_prefilter_nobody_takes_is_ended(tmp_path: Path) -> None:
    """A first file that is refused (not a capture), or read with another filter, leaves no tcpdump behind."""
    before = _children()
    text = tmp_path / "notes.pcap"
    text.write_text("not a capture\n")
    capture_early.start_early(text, LOCAL.networks)
    with pytest.raises(InputError, match="not a capture file"):
        packets(text)
    capture_early.start_early(PCAPS / "street-cctv-vlan20.pcap", LOCAL.networks)
    assert _children() - before
    packets(PCAPS / "street-cctv-vlan20.pcap", extra_bpf="tcp")
    assert _children() - before == set()


@pytest.mark.parametrize("name", ["street-cctv-vlan20.pcap", "trunk-qinq-mixed.pcap", "camera-clouds.pcap"])
def test_the_header_guessed_for_the_early_tshark_is_tcpdump_s(name: str) -> None:
    """The pcap header the early tshark is given ahead is the very one tcpdump writes for the file."""
    path = PCAPS / name
    written = subprocess.run(["tcpdump", "-r", str(path), "-w", "-", "-c", "1"], capture_output=True, check=True).stdout[:24]
    assert capture_early._tcpdump_head(path.read_bytes()[:24]) == written


def test_the_early_tshark_serves_the_stream_it_was_primed_for_and_no_other() -> None:
    """Primed with a stream's header, the early tshark is the one that stream gets (and it
    dissects it); a stream with another header gets a fresh one, and the primed one is ended."""
    from egress.capture import tshark

    given: list[subprocess.Popen[bytes]] = []

    def start(head: bytes) -> subprocess.Popen[bytes]:
        given.append(tshark.start_tshark(head))
        return given[-1]

    expected = [(1_700_000_000.25 + i, 62, "44:19:b6:12:34:56", "10.20.1.11", "192.0.2.50", 40000, 32100) for i in range(3)]
    for order, same in (("<", True), (">", False)):  # big-endian: another header than the primed one
        tshark.start_early()
        tshark.prime_early(_pcap("<", False, False, count=1)[:24])
        early = tshark._early[0][0]
        given.clear()
        rot = PacketStream(io.BytesIO(_pcap(order, False, False, count=3)), start, dissect="all")
        assert _seen([p for p in rot.packets() if p is not None]) == expected
        assert (given[0] is early) == same and len(given) == 1
        assert early.poll() is not None and not tshark._early  # used or not, it is reaped


# ---- the header decoder (egress.capture.headers) ----------------------------------------------

ALL_CAPTURES = [f.name for f in FILES] + sorted(p.name for p in REAL.glob("*.pcap*")) if REAL.exists() else [f.name for f in FILES]


def _unfiltered(name: str, dissect: Literal["all", "names"]) -> tuple[list[Packet], FileSource]:
    """Every packet of a capture through tcpdump with an empty filter, then the stream."""
    source = FileSource(_path(name), "", "", dissect=dissect)
    try:
        got = list(source.packets())
    except (InputError, DependencyMissing) as exc:  # tcpdump reads link types tshark does not
        pytest.skip(f"not a capture egress reads this way: {exc}")
    return got, source


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_decoded_headers_give_tshark_s_packets(name: str) -> None:
    """Reading headers in Python and dissecting only what may carry a name gives, packet for
    packet, what tshark's dissection of every packet gives: the same timestamps, lengths, MACs,
    VLANs, addresses, ports, flags, ICMP types, DNS answers and server names."""
    decoded, source = _unfiltered(name, "names")
    dissected, reference = _unfiltered(name, "all")
    assert decoded == dissected
    assert source.report.frames_skipped == reference.report.frames_skipped
    assert source.report.warnings == reference.report.warnings


def test_the_decoder_leaves_video_to_python_and_names_to_tshark() -> None:
    """On the camera capture fewer than one packet in ten reaches tshark (DNS answers, TLS
    handshake records, request headers), and the names still come (the test above: all of them)."""
    source = FileSource(PCAPS / "street-cctv-vlan20.pcap", "", "", dissect="names")
    got = list(source.packets())
    named = [p for p in got if p.dns or p.server_name]
    assert named and source.report.dissected < source.report.packets // 10
