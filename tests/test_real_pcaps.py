"""Real captures recorded by others (../shared/pcaps-real): no traceback, SPEC's exit
codes, flow accounting that agrees with tshark's own conversation tables, and the
camera verdicts a SOC would expect."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import pytest

from egress.localnet import DEFAULT_LOCAL_NETWORKS, LocalNetworks
from tests.conftest import REAL, geolite2_city, ndjson, real_capture, run_egress

ALL = sorted(p.name for p in REAL.glob("*.pcap*")) if REAL.exists() else []
NOT_READABLE = {"unsupported-linktype-285-edsa.pcap"}  # tshark cannot read link type 285
CUT_SHORT = {"fuzzed-file-cut-short-mid-packet.pcap"}
CAMERAS = [  # the camera captures with egress (edimax and ednet talk only on the LAN)
    "xiaobai-y2-camera-setup-cn-cloud.pcap",
    "xiaobai-y2-camera-idle-cn-p2p-keepalive.pcap",
    "yi-camera-p2p-udp-stream-cs2.pcap",
    "dlink-dcs935l-camera-setup-mydlink.pcap",
    "nest-device-weave-logsink-cloud.pcap",
]
# one flow per conversation, as tshark counts them
NO_SPLIT = {"EGRESS_FLOWS__IDLE_TIMEOUT": "1d", "EGRESS_FLOWS__ACTIVE_TIMEOUT": "1d"}


@pytest.mark.skipif(not ALL, reason="../shared/pcaps-real is absent")
@pytest.mark.parametrize("name", ALL)
def test_every_real_capture_is_analysed_without_traceback(name: str, geoip: dict[str, Path]) -> None:
    """Each real file: exit 0 (2 for a file tshark cannot read), one-line errors, no traceback."""
    proc = run_egress("analyze", real_capture(name), "--format", "json", "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"], "--log-format", "json")
    assert "Traceback" not in proc.stderr
    if name in NOT_READABLE:
        assert proc.returncode == 2
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("egress: ")]
        assert len(errors) == 1 and name in errors[0]
    else:
        assert proc.returncode == 0, proc.stderr
        ndjson(proc.stdout)  # every line is a JSON record
    if name in CUT_SHORT:
        assert "cut short" in proc.stderr


_CONV = re.compile(r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+\d+\s+\S+\s+\S+\s+\d+\s+\S+\s+\S+\s+(\d+)\s+([\d,]+)\s+(bytes|kB|MB)\s")


def _tshark_conversations(path: Path) -> dict[tuple[str, frozenset[tuple[str, int]]], tuple[int, int, str]]:
    out = subprocess.run(["tshark", "-n", "-q", "-r", str(path), "-z", "conv,tcp", "-z", "conv,udp"], capture_output=True, text=True, check=True).stdout
    convs = {}
    transport = ""
    for line in out.splitlines():
        if line.startswith(("TCP Conversations", "UDP Conversations")):
            transport = line[:3].lower()
        m = _CONV.match(line)
        if m:
            a, ap, b, bp, frames, size, unit = m.groups()
            convs[(transport, frozenset({(a, int(ap)), (b, int(bp))}))] = (int(frames), int(size.replace(",", "")), unit)
    return convs


@pytest.mark.skipif(not ALL, reason="../shared/pcaps-real is absent")
@pytest.mark.parametrize("name", CAMERAS)
def test_camera_flows_agree_with_tshark_conversations(name: str, tmp_path: Path) -> None:
    """Flow count, packets and bytes per TCP/UDP flow equal `tshark -z conv` for every
    conversation with a non-local end (local-only traffic is not egress and is not metered)."""
    path = real_capture(name)
    flows_out = tmp_path / "flows.ndjson"
    proc = run_egress("analyze", path, "--format", "json", "--flows-out", flows_out, env=NO_SPLIT)
    assert proc.returncode == 0, proc.stderr
    local = LocalNetworks(DEFAULT_LOCAL_NETWORKS)
    ours = {}
    for f in ndjson(flows_out.read_text()):
        if f["network"]["transport"] not in ("tcp", "udp"):
            continue
        src, dst = f["source"], f["destination"]
        if src["ip"] in local and dst["ip"] in local:
            continue
        key = (f["network"]["transport"], frozenset({(src["ip"], src.get("port", 0)), (dst["ip"], dst.get("port", 0))}))
        assert key not in ours, f"two flows for one conversation: {key}"
        ours[key] = (f["network"]["packets"], f["network"]["bytes"])
    theirs = {k: v for k, v in _tshark_conversations(path).items() if any(ip not in local for ip, _ in k[1])}
    assert ours.keys() == theirs.keys()
    assert theirs, "the capture has egress conversations"
    for key, (frames, size, unit) in theirs.items():
        packets, nbytes = ours[key]
        assert packets == frames, key
        if unit == "bytes":
            assert nbytes == size, key
        else:  # tshark rounds to kB/MB from 10 kB up
            scale = 1000 if unit == "kB" else 1_000_000
            assert abs(nbytes / scale - size) <= 1, key


XIAOBAI_CN_PEERS = {"110.43.68.16", "110.43.39.65", "42.157.163.171", "60.29.153.35", "120.92.65.240", "110.43.87.34", "110.43.0.83"}


@pytest.mark.skipif(not ALL, reason="../shared/pcaps-real is absent")
def test_xiaobai_camera_p2p_and_cloud_in_china_are_denied(tmp_path: Path) -> None:
    """Under a policy that denies CN, the Xiaobai camera's P2P peers and Xiaomi cloud are denied."""
    policy = tmp_path / "deny-cn.yaml"
    policy.write_text("version: 1\ngroups:\n  - name: cameras\n    deny:\n      - {name: china, countries: [CN], severity: critical}\ndefault_verdict: alert\n")
    denied: set[str] = set()
    flows: list[dict] = []
    for name in ("xiaobai-y2-camera-setup-cn-cloud.pcap", "xiaobai-y2-camera-idle-cn-p2p-keepalive.pcap"):
        out = tmp_path / f"{name}.flows"
        proc = run_egress("analyze", real_capture(name), "--policy", policy, "--geoip-country", geolite2_city(), "--format", "json", "--flows-out", out)
        assert proc.returncode == 0, proc.stderr
        denied |= {a["destination"]["ip"] for a in ndjson(proc.stdout) if a["rule"]["category"] == "deny" and a["rule"]["name"] == "china"}
        flows += ndjson(out.read_text())
    assert XIAOBAI_CN_PEERS <= denied
    cn_egress = {f["destination"]["ip"] for f in flows if f["network"]["direction"] == "outbound" and f["destination"].get("geo", {}).get("country_iso_code") == "CN"}
    assert cn_egress == denied  # every CN egress is denied, nothing else is
    sni = {f["destination"].get("domain") for f in flows if f["destination"]["ip"] == "110.43.87.34"}
    assert "business.smartcamera.api.io.mi.com" in sni


@pytest.mark.skipif(not ALL, reason="../shared/pcaps-real is absent")
def test_yi_camera_p2p_hellos_outside_china_are_unexpected(tmp_path: Path) -> None:
    """Under a default-alert policy the YI camera's CS2 P2P hellos (Alibaba Cloud, not CN) are unexpected."""
    policy = tmp_path / "default-alert.yaml"
    policy.write_text("version: 1\ngroups:\n  - name: cameras\n    deny:\n      - {name: china, countries: [CN]}\ndefault_verdict: alert\n")
    proc = run_egress("analyze", real_capture("yi-camera-p2p-udp-stream-cs2.pcap"), "--policy", policy, "--geoip-country", geolite2_city(), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    alerts = ndjson(proc.stdout)
    hellos = {(a["destination"]["ip"], a["destination"]["port"], a["rule"]["category"], a["destination"]["geo"]["country_iso_code"]) for a in alerts}
    assert hellos == {("47.88.59.209", 32100, "unexpected", "US"), ("47.90.240.160", 32100, "unexpected", "US"), ("47.74.255.9", 32100, "unexpected", "SG")}
    assert all(a["source"]["ip"] == "192.168.10.204" for a in alerts)
    assert all(ipaddress.ip_address(a["destination"]["ip"]).is_global for a in alerts)
