"""Live capture under faults: kernel drops, an interface that stays away, the agent killed."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

from tests.conftest import wait_for
from tests.live.conftest import live_marks
from tests.live.lab import CAMERA_MAC, Egress, Lab, camera_link, injection_link, leftovers, send_udp

pytestmark = live_marks()


def _alerted(agent: Egress, port: int) -> bool:
    return any(a["destination"]["ip"] == "203.0.113.10" and a["destination"]["port"] == port for a in agent.alerts())


def test_flows_expire_while_the_interface_is_away(lab: Lab, geoip: dict[str, Path]) -> None:
    """A flow seen just before the captured interface vanished is exported on its idle timeout while the interface stays away, and SIGTERM during the outage exits 0."""
    agent_ns, cam = lab.netns("agent"), lab.netns("camera")
    cap, cam_if = lab.if_name("cap"), lab.if_name("cam")
    camera_link(lab, agent_ns, cam, cap, cam_if)
    agent = Egress(lab, agent_ns, [cap], geoip)
    agent.wait_ready()
    send_udp(cam, 5001)
    key = f'egress_packets_captured_total{{interface="{cap}"}}'
    assert wait_for(lambda: agent.metrics().get(key, 0) >= 1, 10), agent.log_text()
    agent_ns.ip("link", "del", cap)  # before the 3 s idle timeout
    agent.wait_event("capture_interrupted", timeout=15)
    arrived = wait_for(lambda: _alerted(agent, 5001), 15)
    rc, took = agent.terminate(timeout=10)
    assert rc == 0 and took < 10, f"exit {rc} after {took:.1f}s"
    assert _alerted(agent, 5001)  # at the latest, SIGTERM exported it
    assert arrived, "the flow was exported only at SIGTERM: no idle expiry while the interface was away\n" + agent.log_text()


def test_an_interface_away_then_back_stays_healthy_and_resumes(lab: Lab, geoip: dict[str, Path]) -> None:
    """/healthz is 200 while the captured interface is away and retried (within its 5 minutes)
    and after it is back; `capture_resumed` is logged once dumpcap captures on the new
    interface, and its packets are counted and move egress_last_packet_timestamp_seconds."""
    agent_ns, cam = lab.netns("agent"), lab.netns("camera")
    cap, cam_if = lab.if_name("cap"), lab.if_name("cam")
    camera_link(lab, agent_ns, cam, cap, cam_if)
    agent = Egress(lab, agent_ns, [cap], geoip)
    agent.wait_ready()
    healthz = f"http://{agent.metrics_address}/healthz"
    assert agent_ns.get(healthz) == '{"status":"ok"}\n'
    send_udp(cam, 5001)
    captured, last_packet = f'egress_packets_captured_total{{interface="{cap}"}}', f'egress_last_packet_timestamp_seconds{{interface="{cap}"}}'
    assert wait_for(lambda: agent.metrics().get(captured, 0) >= 1, 10), agent.log_text()
    agent_ns.ip("link", "del", cap)
    agent.wait_event("capture_interrupted", timeout=15)
    assert agent_ns.get(healthz) == '{"status":"ok"}\n'  # away, retried: not failing yet
    first = agent.metrics()[last_packet]
    camera_link(lab, agent_ns, cam, cap, cam_if)  # the interface is back
    agent.wait_event("capture_resumed", timeout=60)
    send_udp(cam, 5002)
    assert wait_for(lambda: agent.metrics().get(captured, 0) >= 2, 10), agent.log_text()
    assert agent.metrics()[last_packet] > first
    assert agent_ns.get(healthz) == '{"status":"ok"}\n'
    rc, _ = agent.terminate(timeout=10)
    assert rc == 0


def _flood_capture(path: Path, frames: int = 1000) -> None:
    """DNS answers in frames of 1,375 bytes: records that go to tshark (they may name a destination),
    so that while tshark is stopped nothing moves on: its stdin, dumpcap's pipe and then the
    kernel's ring fill, however fast this machine is. (A flood that needs no dissection
    overflowed the ring only where egress read slower than tcpreplay sent.)"""
    from scapy.all import DNS, DNSQR, DNSRR, UDP, Ether, IP, wrpcap  # noqa: N811

    name = "vms.camera-cloud.example"
    answer = DNS(id=7, qr=1, qd=DNSQR(qname=name, qtype="TXT"), an=DNSRR(rrname=name, type="TXT", rdata=["x" * 250] * 5))
    wrpcap(str(path), [
        Ether(src="02:00:00:00:00:01", dst=CAMERA_MAC) / IP(src="203.0.113.10", dst="10.20.1.11") / UDP(sport=53, dport=40000 + i % 8) / answer
        for i in range(frames)
    ])  # fmt: skip


def test_kernel_drops_are_counted_while_capturing(lab: Lab, geoip: dict[str, Path], tmp_path: Path, tcpreplay: str) -> None:
    """While the capture runs, every packet sent on the link is either captured or counted in egress_packets_dropped_total."""
    pcap = tmp_path / "flood.pcap"
    _flood_capture(pcap)
    link = injection_link(lab)
    agent_ns, inj, cap, out = link.agent, link.inject, link.cap, link.out
    agent = Egress(lab, agent_ns, [cap], geoip)
    agent.wait_ready()
    # dissection stalls (as under a CPU spike), so dumpcap's pipe and then the kernel's 64 MiB ring fill up
    # (300 x 1,000 frames of 1,375 bytes is ~6 times the ring); the capture's tshark starts once
    # dumpcap's stream has begun, which may be just after readiness
    assert wait_for(lambda: bool(agent_ns.pids(("tshark",))), 30), agent.log_text()
    stalled = [pid for pid, _ in agent_ns.pids(("tshark",))]
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)
    try:
        sent = inj.run(tcpreplay, "-q", "-i", out, "--topspeed", "--loop", "300", pcap, timeout=120)
    finally:
        for pid in stalled:
            os.kill(pid, signal.SIGCONT)
    m = re.search(r"Successful packets:\s+(\d+)", sent.stdout)
    assert m, sent.stdout
    total = int(m.group(1))
    iface = f'{{interface="{cap}"}}'

    def settled() -> tuple[float, float]:
        m = agent.metrics()
        return m[f"egress_packets_captured_total{iface}"], m[f"egress_packets_dropped_total{iface}"]

    last: list[tuple[float, float]] = []

    def stable() -> bool:
        last.append(settled())
        return len(last) >= 3 and last[-1] == last[-2] == last[-3]

    assert wait_for(stable, 180, step=2), last
    captured, dropped = last[-1]
    assert agent.proc.poll() is None
    rc, _ = agent.terminate()
    assert rc == 0
    assert captured < total, "no drops happened: the test did not stress the capture"
    assert captured + dropped == total, f"sent {total}, captured {captured:.0f}, counted dropped {dropped:.0f} while capturing"


def test_sigkill_leaves_no_capture_process(lab: Lab, geoip: dict[str, Path]) -> None:
    """An agent capturing on two interfaces and killed with SIGKILL leaves no dumpcap or tshark behind."""
    agent_ns, cam = lab.netns("agent"), lab.netns("camera")
    cap, cam_if = lab.if_name("cap"), lab.if_name("cam")
    camera_link(lab, agent_ns, cam, cap, cam_if)
    cap2, peer2 = lab.if_name("cpb"), lab.if_name("cpp")
    lab.veth(cam, peer2, agent_ns, cap2)
    agent = Egress(lab, agent_ns, [cap, cap2], geoip)
    agent.wait_ready(sources=2)
    send_udp(cam, 5001)
    assert wait_for(lambda: len(agent_ns.pids(("dumpcap",))) == 2 and len(agent_ns.pids(("tshark",))) >= 2, 10), agent_ns.pids()
    agent.proc.kill()
    agent.proc.wait()
    assert wait_for(lambda: leftovers(agent_ns, cap) == [] and leftovers(agent_ns, cap2) == [], 5), leftovers(agent_ns, cap)


def test_stalled_dissection_does_not_split_an_active_flow(lab: Lab, geoip: dict[str, Path]) -> None:
    """A flow that sends every 0.3 s stays one flow record when dissection stalls longer than the idle timeout: quiet output from a backlogged tshark is not a quiet link."""
    agent_ns, cam = lab.netns("agent"), lab.netns("camera")
    cap, cam_if = lab.if_name("cap"), lab.if_name("cam")
    camera_link(lab, agent_ns, cam, cap, cam_if)
    agent = Egress(lab, agent_ns, [cap], geoip)  # idle timeout 3 s
    agent.wait_ready()
    code = ("import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('10.20.1.11', 40123))\n"
            "for _ in range(40):\n    s.sendto(b'x', ('203.0.113.10', 5003))\n    time.sleep(0.3)\n")  # fmt: skip
    sender = lab.start(cam, [sys.executable, "-c", code])
    key = f'egress_packets_captured_total{{interface="{cap}"}}'
    assert wait_for(lambda: agent.metrics().get(key, 0) >= 3, 20)  # the flow is under way: its first packets were dissected
    stalled = [pid for pid, _ in agent_ns.pids(("tshark",))]
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)  # dissection stalls for 6 s: packets wait in the pipe and the ring
    time.sleep(6)
    for pid in stalled:
        os.kill(pid, signal.SIGCONT)
    sender.wait(30)
    assert wait_for(lambda: agent.metrics().get(key, 0) >= 40, 20)
    time.sleep(5)  # the flow leaves on its idle timeout
    rc, _ = agent.terminate()
    assert rc == 0
    records = [a for a in agent.alerts() if a["destination"]["port"] == 5003 and a["rule"]["category"] != "covered-vendor"]
    assert len(records) == 1, [(a["event"]["start"], a["event"]["end"], a["source"]["packets"]) for a in records]
    assert records[0]["source"]["packets"] == 40
