"""Direction (SPEC "Direction"): the SYN decides; without one, service ports; for UDP, the first sender."""

from __future__ import annotations

import pytest

from egress.flows.direction import SERVICE_PORTS, is_service_port, responder_by_ports
from egress.flows.table import FlowSettings, FlowTable
from egress.localnet import DEFAULT_LOCAL_NETWORKS, LocalNetworks
from egress.model import ICMPV6, TCP, UDP, Packet

SYN, SYN_ACK, ACK = 0x02, 0x12, 0x10
CAM, REMOTE = "10.20.1.11", "192.0.2.10"
EPHEMERAL = 40000  # an unregistered port in every OS's ephemeral range
CAMERA_CLOUD_PORTS = [554, 3478, 8000, 8443, 19302, 32100, 34567, 37777]  # RTSP, STUN, Hikvision, Dahua...


@pytest.mark.parametrize(("port", "service"), [(0, False), (1, True), (53, True), (1023, True), (1024, False), (EPHEMERAL, False), (65535, False)])
def test_well_known_ports_are_service_ports_and_zero_is_not(port: int, service: bool) -> None:
    """Every port from 1 to 1023 is a server's; port 0 and an unregistered high port are not."""
    assert is_service_port(port) is service


def test_registered_camera_ports_are_service_ports() -> None:
    """The registered ports camera clouds listen on count as servers' ports, above 1023 too."""
    assert all(is_service_port(p) for p in CAMERA_CLOUD_PORTS)
    assert all(is_service_port(p) for p in SERVICE_PORTS)
    assert all(1024 <= p <= 49151 for p in SERVICE_PORTS)  # IANA's registered range, none well-known or dynamic


@pytest.mark.parametrize("proto", [TCP, UDP])
@pytest.mark.parametrize("service", [53, 123, 443, *CAMERA_CLOUD_PORTS])
def test_the_side_on_a_service_port_is_the_responder(proto: int, service: int) -> None:
    """When one port only is a service port, its side is the responder, whichever side sent first."""
    assert responder_by_ports(proto, service, EPHEMERAL) is True
    assert responder_by_ports(proto, EPHEMERAL, service) is False


@pytest.mark.parametrize(("sport", "dport"), [(EPHEMERAL, 41000), (5001, 6001), (5001, EPHEMERAL), (123, 123), (123, 53), (5353, 5353)])
def test_udp_ports_that_do_not_say_leave_it_to_the_first_sender(sport: int, dport: int) -> None:
    """For UDP, two unregistered ports or two service ports say nothing: the first sender initiates."""
    assert responder_by_ports(UDP, sport, dport) is None


@pytest.mark.parametrize(("server", "client"), [(443, 8000), (554, 37777), (80, 8080)])
def test_tcp_between_two_service_ports_the_lower_is_the_responder(server: int, client: int) -> None:
    """A TCP flow between two different service ports: the lower (better known) port is the server's."""
    assert responder_by_ports(TCP, server, client) is True
    assert responder_by_ports(TCP, client, server) is False


def test_tcp_between_unregistered_ports_an_ephemeral_port_is_the_client() -> None:
    """With neither a service port, a TCP port in the ephemeral range (>= 32768) is the client's."""
    assert responder_by_ports(TCP, 5001, EPHEMERAL) is True
    assert responder_by_ports(TCP, EPHEMERAL, 5001) is False


@pytest.mark.parametrize(("sport", "dport"), [(EPHEMERAL, 41000), (5001, 6001), (443, 443), (0, 0)])
def test_tcp_ports_that_do_not_say(sport: int, dport: int) -> None:
    """Two ephemeral, two unregistered low, or two equal ports say nothing."""
    assert responder_by_ports(TCP, sport, dport) is None


# ---- through the flow table: the SYN outranks the ports ------------------------------------


def initiator(*packets: Packet) -> tuple[str, int]:
    """(ip, port) of the exported flow's source, the side named initiator."""
    table = FlowTable(FlowSettings(), LocalNetworks(DEFAULT_LOCAL_NETWORKS))
    for p in packets:
        assert table.add(p) == []
    (rec,) = table.flush()
    return rec.source.ip, rec.source.port


def tcp(src: str, sport: int, dst: str, dport: int, flags: int, ts: float = 0.0) -> Packet:
    return Packet(ts, 60, None, None, (), src, dst, TCP, sport, dport, flags)


def test_the_syn_sender_initiates_even_from_a_service_port_to_an_ephemeral_one() -> None:
    """A camera opening from port 8000 to a peer's port 40000 is the initiator: the ports would say not."""
    assert responder_by_ports(TCP, 8000, EPHEMERAL) is True
    assert initiator(tcp(CAM, 8000, REMOTE, EPHEMERAL, SYN), tcp(REMOTE, EPHEMERAL, CAM, 8000, SYN_ACK, 0.1)) == (CAM, 8000)


def test_a_syn_ack_makes_its_receiver_the_initiator_against_the_ports() -> None:
    """Only the SYN/ACK captured, sent from an ephemeral port to port 443: the receiver still initiated."""
    assert initiator(tcp(REMOTE, EPHEMERAL, CAM, 443, SYN_ACK), tcp(CAM, 443, REMOTE, EPHEMERAL, ACK, 0.1)) == (CAM, 443)


def test_a_late_syn_still_decides() -> None:
    """Mid-stream packets first, then a SYN from the service-port side: the SYN is what counts."""
    assert initiator(tcp(REMOTE, EPHEMERAL, CAM, 554, ACK), tcp(CAM, 554, REMOTE, EPHEMERAL, SYN, 0.1)) == (CAM, 554)


def test_without_a_syn_the_ports_decide_in_the_table() -> None:
    """No SYN captured: the first sender on a service port becomes the destination."""
    assert initiator(tcp(REMOTE, 37777, CAM, EPHEMERAL, ACK), tcp(CAM, EPHEMERAL, REMOTE, 37777, ACK, 0.1)) == (CAM, EPHEMERAL)


@pytest.mark.parametrize(("icmp_type", "first_sender_initiates"), [(128, True), (129, False)])
def test_icmpv6_echo_request_sender_or_reply_receiver_initiates(icmp_type: int, first_sender_initiates: bool) -> None:
    """ICMPv6 echo: the request's sender (type 128) or the reply's receiver (type 129) is the initiator."""
    pkt = Packet(0.0, 64, None, None, (), "fd00::11", "2001:db8:1::1", ICMPV6, icmp_type=icmp_type, icmp_code=0)
    assert initiator(pkt)[0] == ("fd00::11" if first_sender_initiates else "2001:db8:1::1")
