"""The flow table: direction, timeouts, memory bound, VLANs (pure, no capture needed)."""

from __future__ import annotations

from egress.enrich.device import DeviceEnricher
from egress.enrich.oui import OuiRegistry
from egress.flows.table import FlowSettings, FlowTable
from egress.localnet import DEFAULT_LOCAL_NETWORKS, LocalNetworks
from egress.model import ICMP, TCP, UDP, FlowRecord, Packet

LOCAL = LocalNetworks(DEFAULT_LOCAL_NETWORKS)
CAM, CAM_MAC, GW_MAC = "10.20.1.11", "44:19:b6:12:34:56", "00:00:5e:00:01:14"


def pkt(ts: float, src: str, sport: int, dst: str, dport: int, proto: int = TCP, flags: int = 0x10, length: int = 100, vlans: tuple[int, ...] = (20,), icmp_type: int = -1) -> Packet:
    out = src == CAM
    return Packet(ts, length, CAM_MAC if out else GW_MAC, GW_MAC if out else CAM_MAC, vlans, src, dst, proto, sport, dport, flags, icmp_type, 0 if icmp_type >= 0 else -1)


def run(packets: list[Packet], **settings: float) -> list[FlowRecord]:
    table = FlowTable(FlowSettings(**settings), LOCAL)  # type: ignore[arg-type]
    out: list[FlowRecord] = []
    for p in packets:
        out += table.add(p)
    return out + list(table.flush())


def test_syn_sender_is_the_initiator_even_on_service_ports() -> None:
    """The sender of the pure SYN initiates, whatever the ports say."""
    (rec,) = run([pkt(0, CAM, 443, "192.0.2.1", 50000, flags=0x02), pkt(0.1, "192.0.2.1", 50000, CAM, 443, flags=0x12)])
    assert (rec.source.ip, rec.source.port, rec.destination.port) == (CAM, 443, 50000)
    assert rec.direction == "outbound"


def test_syn_ack_seen_first_names_its_receiver_initiator() -> None:
    """When the SYN was missed, the SYN/ACK's receiver is the initiator."""
    (rec,) = run([pkt(0, "192.0.2.1", 443, CAM, 50000, flags=0x12), pkt(0.1, CAM, 50000, "192.0.2.1", 443)])
    assert rec.source.ip == CAM and rec.direction == "outbound"


def test_mid_stream_tcp_uses_the_service_port() -> None:
    """Without SYN, the side on the well-known port is the responder, even if it spoke first."""
    (rec,) = run([pkt(0, "192.0.2.80", 443, CAM, 49500, flags=0x18), pkt(0.1, CAM, 49500, "192.0.2.80", 443)])
    assert (rec.source.ip, rec.destination.ip, rec.destination.port) == (CAM, "192.0.2.80", 443)
    assert rec.source.packets == 1 and rec.destination.packets == 1


def test_udp_reply_seen_first_is_turned_around() -> None:
    """A UDP flow whose first packet comes from port 53 was started by the other side."""
    (rec,) = run([pkt(0, "192.0.2.53", 53, CAM, 40000, proto=UDP), pkt(1, CAM, 40000, "192.0.2.53", 53, proto=UDP)])
    assert rec.source.ip == CAM and rec.destination.port == 53


def test_udp_first_sender_initiates_when_ports_do_not_say() -> None:
    """For UDP between two unregistered high ports, the first packet's sender is the initiator."""
    (rec,) = run([pkt(0, "192.0.2.9", 41000, CAM, 42000, proto=UDP)])
    assert rec.source.ip == "192.0.2.9" and rec.direction == "inbound"


def test_icmp_echo_reply_names_the_requester() -> None:
    """An echo reply seen alone makes its receiver the initiator."""
    (rec,) = run([pkt(0, "8.8.8.8", 0, CAM, 0, proto=ICMP, icmp_type=0)])
    assert rec.source.ip == CAM and rec.transport_name == "icmp"


def test_idle_timeout_splits_and_active_timeout_keeps_the_initiator() -> None:
    """A silent gap past idle_timeout starts a new flow; a flow older than active_timeout is
    exported and goes on with the same initiator."""
    idle = run([pkt(0, CAM, 50000, "192.0.2.1", 443, flags=0x02), pkt(100, CAM, 50000, "192.0.2.1", 443)], idle_timeout_seconds=60)
    assert len(idle) == 2
    packets = [pkt(0, CAM, 50000, "192.0.2.1", 443, flags=0x02)] + [pkt(t, "192.0.2.1", 443, CAM, 50000) for t in range(10, 400, 10)]
    active = run(packets, idle_timeout_seconds=60, active_timeout_seconds=300)
    assert len(active) == 2
    assert all(r.source.ip == CAM for r in active)
    assert sum(r.source.packets + r.destination.packets for r in active) == len(packets)


def test_max_flows_exports_the_oldest_early() -> None:
    """Past max_flows the least recently active flow is exported; nothing is lost."""
    table = FlowTable(FlowSettings(max_flows=3), LOCAL)
    early = []
    for i in range(5):
        early += table.add(pkt(i, CAM, 50000 + i, "192.0.2.1", 443, flags=0x02))
    assert [r.source.port for r in early] == [50000, 50001]
    assert len(table) == 3 and table.flows_evicted == 2
    assert len(list(table.flush())) == 3


def test_local_only_traffic_is_not_metered_but_local_dns_is() -> None:
    """Camera→NVR video never becomes a flow; DNS to a site resolver does."""
    recs = run([pkt(0, CAM, 5000, "10.20.0.5", 5000, proto=UDP), pkt(0, CAM, 40000, "10.20.0.53", 53, proto=UDP)])
    assert [(r.destination.ip, r.direction) for r in recs] == [("10.20.0.53", "internal")]


def test_vlans_are_part_of_the_flow_key() -> None:
    """The same 5-tuple on two VLANs is two flows, each with its tags."""
    recs = run([pkt(0, CAM, 50000, "192.0.2.1", 443, vlans=(20,)), pkt(0, CAM, 50000, "192.0.2.1", 443, vlans=(100, 20))])
    assert sorted(r.vlans for r in recs) == [(20,), (100, 20)]


def test_macs_are_ecs_formatted_and_bytes_counted_per_side() -> None:
    """MACs are upper-case and hyphenated; bytes and packets are kept per direction."""
    (rec,) = run([pkt(0, CAM, 50000, "192.0.2.1", 443, flags=0x02, length=74), pkt(1, "192.0.2.1", 443, CAM, 50000, flags=0x12, length=66)])
    assert rec.source.mac == "44-19-B6-12-34-56"
    assert (rec.source.bytes, rec.destination.bytes) == (74, 66)
    assert rec.community_id == "1:" + rec.community_id.split(":", 1)[1] and len(rec.community_id) == 30


def test_a_corrupt_frames_mac_is_kept_for_the_device_enricher_to_count() -> None:
    """A MAC that is no MAC does not stop the flow table; the device enricher counts and skips it."""
    bad = Packet(0, 100, "zz:not:a:mac", GW_MAC, (20,), CAM, "192.0.2.1", TCP, 50000, 443, 0x02)
    (rec,) = run([bad])
    assert rec.source.mac == "ZZ-NOT-A-MAC" and rec.destination.mac == "00-00-5E-00-01-14"
    device = DeviceEnricher(OuiRegistry(tables={}))
    device.enrich(rec)
    assert device.bad_macs == 1 and rec.device_mac == "ZZ-NOT-A-MAC" and rec.device_manufacturer is None
