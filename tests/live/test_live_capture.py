"""`egress run --interface`: live capture inside network namespaces (see lab.py for the topology)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.conftest import ndjson, run_egress, wait_for
from tests.live.conftest import live_marks
from tests.live.lab import (
    CAMERA_MAC, EGRESS, NETSVC, POLICY, Egress, Lab, alert_key, camera_link, camera_site, injection_link, leftovers, send_udp, stop,
)

pytestmark = live_marks()

DEVICE = CAMERA_MAC.upper().replace(":", "-")
#: what the camera's traffic must raise under deploy/policy.example.yaml (VLAN 20 → street-cctv)
EXPECTED = {
    (DEVICE, "198.51.100.200", 443, "tcp", "deny", "vendor-p2p-cloud"),  # named dev.hik-connect.com by DNS (CNAME chain)
    (DEVICE, "192.0.2.50", 32100, "udp", "deny", "hostile-states"),  # CN
    (DEVICE, "198.51.100.10", 8000, "tcp", "unexpected", "unexpected-destination"),  # GB AS15169, not tcp/443
    (DEVICE, "203.0.113.160", 443, "tcp", "unexpected", "unexpected-destination"),  # DE
}
#: allowed: vms-cloud (GB AS15169 tcp/443) and ntp (pool.ntp.org learned from DNS)
ALLOWED = {("198.51.100.10", 443), ("203.0.113.161", 123)}


def _geoip_args(geoip: dict[str, Path]) -> list[str | Path]:
    return ["--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]]


def _record(lab: Lab, ns, interface: str, path: Path):  # type: ignore[no-untyped-def]
    """dumpcap recording `interface` unfiltered into `path` (pcap), started and ready."""
    err = (lab.workdir / f"{path.name}.stderr").open("wb")
    proc = lab.start(ns, ["dumpcap", "-i", interface, "-P", "-w", path, "-q"], stderr=err)
    assert wait_for(lambda: path.exists() and path.stat().st_size >= 24, 10), "dumpcap did not start recording"
    time.sleep(0.3)
    return proc


def test_trunk_agent_alerts_match_offline_analysis(lab: Lab, geoip: dict[str, Path], tmp_path: Path) -> None:
    """The agent on a VLAN trunk raises, on idle timeouts while capturing, the alerts `egress analyze` raises for a recording of the same link; SIGTERM exits 0 within 10 s and leaves no dumpcap/tshark."""
    site = camera_site(lab)
    pcap = tmp_path / "trunk.pcap"
    recorder = _record(lab, site.router, site.trunk, pcap)
    agent = Egress(lab, site.router, [site.trunk], geoip)
    agent.wait_ready()
    lab.assert_isolated()

    done = site.camera.run(sys.executable, NETSVC, "camera", site.resolver, timeout=60)
    camera = json.loads(done.stdout)
    assert camera["resolved"]["dev.hik-connect.com"] == ["hik-edge.cdn.example", "198.51.100.200"]
    assert len(camera["answered"]) == 6, camera  # every exchange got its answer through the router

    def live_keys() -> set[tuple]:
        return {alert_key(a) for a in agent.alerts()}

    # flows go out on the 3 s idle timeout, driven by the one-second ticks of a quiet link
    arrived = wait_for(lambda: EXPECTED <= live_keys() and any(k[4] == "covered-vendor" for k in live_keys()), 30)
    assert arrived, f"alerts before SIGTERM: {sorted(live_keys())}\n{agent.log_text()}"
    time.sleep(4)  # one more idle period: nothing is left to come
    before = agent.alerts()
    metrics = agent.metrics()
    assert agent.proc.poll() is None
    stop(recorder)

    rc, took = agent.terminate(timeout=10)
    assert rc == 0 and took < 10, f"exit {rc} after {took:.1f}s\n{agent.log_text()}"
    assert leftovers(site.router, site.trunk) == []
    after = agent.alerts()

    offline = run_egress("analyze", pcap, "--format", "json", *_geoip_args(geoip), env={"EGRESS_FLOWS__IDLE_TIMEOUT": "3s"})
    assert offline.returncode == 0, offline.stderr
    offline_keys = {alert_key(a) for a in ndjson(offline.stdout)}

    live = {alert_key(a) for a in before}
    assert EXPECTED <= live
    assert not {(k[1], k[2]) for k in live} & ALLOWED, sorted(live)
    assert live == offline_keys, f"live only: {sorted(live - offline_keys)}; offline only: {sorted(offline_keys - live)}"
    assert {alert_key(a) for a in after} == live  # SIGTERM had nothing left to export
    assert len(after) == len(before)
    assert {a["network"].get("vlan", {}).get("id") for a in before} == {"20"}  # ECS: a keyword
    assert {a["labels"]["group"] for a in before} == {"street-cctv"}
    iface = f'{{interface="{site.trunk}"}}'
    assert metrics[f"egress_packets_captured_total{iface}"] > 0
    assert metrics[f"egress_packets_dropped_total{iface}"] == 0
    assert metrics["egress_flows_exported_total"] >= len(EXPECTED) + len(ALLOWED)


def test_unknown_interface_exits_2_with_one_line(lab: Lab, geoip: dict[str, Path]) -> None:
    """`egress run --interface doesnotexist0` exits 2 and says so in one line, without a traceback."""
    ns = lab.netns("agent")
    res = ns.run(EGRESS, "run", "--interface", "doesnotexist0", *_geoip_args(geoip), "--log-format", "json", "--log-level", "warning",
                 check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "EGRESS_METRICS__LISTEN": "127.0.0.1:0"})  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == ["egress: interface doesnotexist0: no such interface"]
    assert lab.namespaces[0].pids(("dumpcap", "tshark")) == []


def test_agent_unknown_interface_is_a_usage_error_before_kafka(lab: Lab, geoip: dict[str, Path]) -> None:
    """`egress agent --interface doesnotexist0` exits 2 naming the interface, even when Kafka is unreachable: usage is checked before connecting."""
    ns = lab.netns("agent")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "EGRESS_METRICS__LISTEN": "127.0.0.1:0", "EGRESS_KAFKA__BOOTSTRAP_SERVERS": "[127.0.0.1:9]",
           "EGRESS_SPOOL__PATH": str(lab.workdir / "spool")}  # fmt: skip
    res = ns.run(EGRESS, "agent", "--interface", "doesnotexist0", *_geoip_args(geoip), "--log-format", "json", "--log-level", "warning",
                 check=False, env=env, timeout=120)  # fmt: skip
    assert (res.returncode, res.stderr.splitlines()) == (2, ["egress: interface doesnotexist0: no such interface"])


def test_vanished_interface_is_logged_counted_and_retried(lab: Lab, geoip: dict[str, Path]) -> None:
    """Deleting the captured interface logs capture_interrupted and keeps egress alive; when it returns the capture resumes (restart counted); SIGTERM exits 0."""
    agent_ns, cam = lab.netns("agent"), lab.netns("camera")
    cap, cam_if = lab.if_name("cap"), lab.if_name("cam")

    def alerted(port: int) -> bool:
        return any(a["destination"]["ip"] == "203.0.113.10" and a["destination"]["port"] == port for a in agent.alerts())

    camera_link(lab, agent_ns, cam, cap, cam_if)
    agent = Egress(lab, agent_ns, [cap], geoip)
    agent.wait_ready()
    send_udp(cam, 5001)
    assert wait_for(lambda: alerted(5001), 20), agent.log_text()

    agent_ns.ip("link", "del", cap)
    event = agent.wait_event("capture_interrupted", timeout=15)
    assert event["interface"] == cap
    time.sleep(2)
    assert agent.proc.poll() is None, agent.log_text()

    camera_link(lab, agent_ns, cam, cap, cam_if)
    assert wait_for(lambda: (send_udp(cam, 5002), alerted(5002))[1], 60, step=1), agent.log_text()
    metrics = agent.metrics()
    assert metrics[f'egress_capture_restarts_total{{interface="{cap}"}}'] == 1
    rc, took = agent.terminate(timeout=10)
    assert rc == 0 and took < 10, f"exit {rc} after {took:.1f}s\n{agent.log_text()}"
    assert leftovers(agent_ns, cap) == []


def _vlan0_capture(path: Path) -> None:
    from scapy.all import UDP, Dot1Q, Ether, IP, wrpcap  # noqa: N811

    frames = []
    for i in range(3):
        # priority-tagged (VLAN ID 0, PCP 5): a Dahua camera
        frames.append(Ether(src="3c:ef:8c:00:00:21", dst="02:00:00:00:00:01") / Dot1Q(vlan=0, prio=5)
                      / IP(src="10.20.1.21", dst="203.0.113.10") / UDP(sport=40000, dport=5000) / bytes([i]) * 20)  # fmt: skip
        # tagged VLAN 20: the Hikvision camera
        frames.append(Ether(src=CAMERA_MAC, dst="02:00:00:00:00:01") / Dot1Q(vlan=20)
                      / IP(src="10.20.1.11", dst="203.0.113.10") / UDP(sport=40001, dport=5000) / bytes([i]) * 20)  # fmt: skip
    wrpcap(str(path), frames)


def test_priority_tagged_frames_count_as_untagged(lab: Lab, geoip: dict[str, Path], tmp_path: Path, tcpreplay: str) -> None:
    """Frames with VLAN ID 0 (priority tags) captured live carry no VLAN and match no `vlans` group, as in offline analysis."""
    pcap = tmp_path / "vlan0.pcap"
    _vlan0_capture(pcap)
    link = injection_link(lab)
    agent = Egress(lab, link.agent, [link.cap], geoip)
    agent.wait_ready()
    link.inject.run(tcpreplay, "-q", "-i", link.out, "--pps", "100", pcap)

    assert wait_for(lambda: len({a["device"]["id"] for a in agent.alerts() if a["rule"]["category"] != "covered-vendor"}) == 2, 20), agent.log_text()
    rc, _ = agent.terminate()
    assert rc == 0
    by_device = {}
    for a in agent.alerts():
        if a["rule"]["category"] != "covered-vendor":
            by_device[a["device"]["id"]] = a
    dahua, hik = by_device["3C-EF-8C-00-00-21"], by_device[DEVICE]
    assert "vlan" not in dahua["network"] and not dahua.get("egress", {}).get("vlans")
    assert (dahua["labels"]["group"], dahua["rule"]["category"]) == ("unassigned", "unexpected")
    assert hik["network"]["vlan"]["id"] == "20"
    assert (hik["labels"]["group"], hik["rule"]["name"]) == ("street-cctv", "hostile-states")
    offline = run_egress("analyze", pcap, "--format", "json", *_geoip_args(geoip))
    assert offline.returncode == 0, offline.stderr
    assert {alert_key(a) for a in ndjson(offline.stdout)} == {alert_key(a) for a in agent.alerts()}
