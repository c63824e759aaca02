"""Camera P2P detection on the real captures (../shared/pcaps-real): every CS2 flow of the
YI camera is `network.protocol: cs2-p2p` and denied by a `protocols` rule, and no other
capture shows a detection it should not (the table is printed with `pytest -s`)."""

from __future__ import annotations

import collections
import ipaddress
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REAL, ndjson, real_capture, run_egress

ALL = sorted(p.name for p in REAL.glob("*.pcap*")) if REAL.exists() else []
NOT_READABLE = {"unsupported-linktype-285-edsa.pcap"}
POLICY = """version: 1
groups:
  - name: all
    deny:
      - {name: camera-p2p, protocols: [cs2-p2p, dahua-p2p, stun]}
default_verdict: allow
"""
#: the flows each capture must show per protocol (SOURCES.md: CS2 on UDP/32100 to Alibaba
#: from the YI camera; CS2 on 32100 and a CS2 relay session on 11104-11110 from the xiaobai Y2)
DETECTIONS = {
    "yi-camera-p2p-udp-stream-cs2.pcap": {"cs2-p2p": 3},
    "xiaobai-y2-camera-setup-cn-cloud.pcap": {"cs2-p2p": 29},
    "xiaobai-y2-camera-idle-cn-p2p-keepalive.pcap": {"cs2-p2p": 93},
}


def _analyze(path: Path, tmp_path: Path) -> tuple[list[dict], list[dict]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    flows_out = tmp_path / f"{path.name}.flows.ndjson"
    proc = run_egress("analyze", path, "--policy", policy, "--format", "json", "--flows-out", flows_out)
    assert proc.returncode == 0, proc.stderr
    return ndjson(flows_out.read_text()), ndjson(proc.stdout)


@pytest.mark.skipif(not ALL, reason="../shared/pcaps-real is absent")
def test_each_real_capture_shows_exactly_its_detections(tmp_path: Path) -> None:
    table = {}
    for name in ALL:
        if name in NOT_READABLE:
            continue
        flows, alerts = _analyze(REAL / name, tmp_path)
        found = dict(collections.Counter(f["network"]["protocol"] for f in flows if "protocol" in f["network"]))
        denied = sum(1 for a in alerts if a["rule"]["category"] == "deny")
        table[name] = (len(flows), found, denied)
    print("\ncapture | flows | network.protocol (flows) | denied by camera-p2p")
    for name, (count, found, denied) in table.items():
        print(f"{name} | {count} | {', '.join(f'{k} {v}' for k, v in found.items()) or '-'} | {denied}")
    assert {name: found for name, (_, found, _) in table.items()} == {name: DETECTIONS.get(name, {}) for name in table}
    assert all(denied == sum(found.values()) for _, found, denied in table.values())  # every detected flow here is egress


def _cs2_conversations(path: Path) -> set[tuple[str, int, int]]:
    """(remote address, remote port, local port) of each UDP conversation with a remote peer
    in which some datagram starts with CS2's magic 0xF1, as tshark sees them (the oracle; the
    ICMP errors that quote such a datagram are not conversations of their own)."""
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-Y", "udp.payload[0] == 0xf1 and not icmp", "-T", "fields", "-e", "ip.src", "-e", "udp.srcport",
                          "-e", "ip.dst", "-e", "udp.dstport"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    convs = set()
    for line in out.splitlines():
        src, sport, dst, dport = line.split("\t")
        if ipaddress.ip_address(src).is_private and not ipaddress.ip_address(dst).is_private:
            convs.add((dst, int(dport), int(sport)))
        elif ipaddress.ip_address(dst).is_private and not ipaddress.ip_address(src).is_private:
            convs.add((src, int(sport), int(dport)))
    return convs


@pytest.mark.parametrize("name", list(DETECTIONS))
def test_every_cs2_flow_is_cs2_p2p_and_denied(name: str, tmp_path: Path) -> None:
    """The conversations tshark shows starting with 0xF1 are exactly the cs2-p2p flows, and
    each is denied by the `protocols` rule, its alert message naming the protocol."""
    path = real_capture(name)
    flows, alerts = _analyze(path, tmp_path)
    expected = _cs2_conversations(path)
    if name.startswith("yi-"):  # SOURCES.md: CS2 hellos to three Alibaba addresses on UDP/32100
        assert {(ip, 32100) for ip in ("47.88.59.209", "47.90.240.160", "47.74.255.9")} == {(ip, port) for ip, port, _ in expected}
    cs2 = {(f["destination"]["ip"], f["destination"]["port"], f["source"]["port"]) for f in flows if f["network"].get("protocol") == "cs2-p2p"}
    assert cs2 == expected
    denied = {(a["destination"]["ip"], a["destination"]["port"], a["source"]["port"]) for a in alerts}
    assert denied == expected
    for alert in alerts:
        port = alert["destination"]["port"]
        assert alert["rule"]["id"] == "all/deny/camera-p2p" and alert["network"]["protocol"] == "cs2-p2p"
        assert f"udp/{port} cs2-p2p by rule camera-p2p" in alert["message"]
