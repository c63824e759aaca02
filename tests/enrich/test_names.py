"""NameEvidence: destination hostnames learned per device from DNS answers, SNI and HTTP Host."""

from __future__ import annotations

import pytest

from egress.enrich.names import NameEvidence
from egress.model import TCP, UDP, DnsAnswer, Endpoint, FlowRecord, Packet

CAM, OTHER_CAM, RESOLVER = "10.20.1.11", "10.20.1.21", "10.20.0.53"
CLOUD, CDN, P2P = "198.51.100.7", "198.51.100.8", "192.0.2.10"

# The limits the module documents: a DNS name is at most 255 characters, a pair keeps 8 names.
MAX_NAME, MAX_NAMES = 255, 8


def answer(device: str, names: list[str], addresses: list[str]) -> Packet:
    """A DNS response from the site resolver to `device`."""
    return Packet(0.0, 120, None, None, (), RESOLVER, device, UDP, 53, 40000, dns=DnsAnswer(tuple(names), tuple(addresses)))


def named(device: str, destination: str, server_name: str) -> Packet:
    """A packet in which `device` names its destination (TLS SNI or HTTP Host)."""
    return Packet(0.0, 300, None, None, (), device, destination, TCP, 40001, 443, server_name=server_name)


def flow(src: str, dst: str, direction: str = "outbound", device_ip: str | None = None) -> FlowRecord:
    return FlowRecord(0.0, 1.0, TCP, Endpoint(src, 40001), Endpoint(dst, 443), (), "", direction, device_ip=device_ip)


def domains(ev: NameEvidence, device: str, remote: str) -> tuple[str, ...]:
    """The names an outbound flow from `device` to `remote` is given."""
    rec = flow(device, remote)
    ev.enrich(rec)
    assert rec.destination_domain == (rec.destination_domains[0] if rec.destination_domains else None)
    return rec.destination_domains


def learned(*packets: Packet, max_pairs: int = 200_000) -> NameEvidence:
    ev = NameEvidence(max_pairs)
    for pkt in packets:
        ev.observe(pkt)
    return ev


def test_dns_answer_names_every_address_with_the_whole_chain_in_order() -> None:
    """Each answer address gets the asked name first, then each CNAME target, in chain order."""
    chain = ["vms.example.com", "vms.edge.cdn.example.net"]
    ev = learned(answer(CAM, chain, [CLOUD, CDN]))
    assert domains(ev, CAM, CLOUD) == tuple(chain)
    assert domains(ev, CAM, CDN) == tuple(chain)


def test_dns_evidence_belongs_to_the_device_that_received_the_answer() -> None:
    """Another device, and the resolver that sent the answer, learn nothing from it."""
    ev = learned(answer(CAM, ["vms.example.com"], [CLOUD]))
    assert domains(ev, OTHER_CAM, CLOUD) == ()
    assert domains(ev, RESOLVER, CLOUD) == ()


def test_server_name_names_only_that_connection_destination() -> None:
    """An SNI/Host names the destination of the packet that carried it, for its sender only."""
    ev = learned(named(CAM, P2P, "p2p.example.org"))
    assert domains(ev, CAM, P2P) == ("p2p.example.org",)
    assert domains(ev, CAM, CLOUD) == ()
    assert domains(ev, OTHER_CAM, P2P) == ()


def test_server_name_takes_first_place_before_dns_names() -> None:
    """A name the device sent itself outranks the DNS chain, whichever came first."""
    ev = learned(answer(CAM, ["alias.example.com", "real.example.net"], [CLOUD]), named(CAM, CLOUD, "sni.example.org"))
    assert domains(ev, CAM, CLOUD) == ("sni.example.org", "alias.example.com", "real.example.net")


def test_server_name_already_known_moves_to_the_front_once() -> None:
    """An SNI equal to a later DNS name is moved first, not stored twice."""
    ev = learned(answer(CAM, ["alias.example.com", "real.example.net"], [CLOUD]), named(CAM, CLOUD, "real.example.net"))
    assert domains(ev, CAM, CLOUD) == ("real.example.net", "alias.example.com")


def test_a_name_seen_again_is_not_repeated() -> None:
    """The same DNS answer twice leaves one copy of each name."""
    ev = learned(answer(CAM, ["vms.example.com"], [CLOUD]), answer(CAM, ["vms.example.com"], [CLOUD]))
    assert domains(ev, CAM, CLOUD) == ("vms.example.com",)


@pytest.mark.parametrize(
    "host",
    ["198.51.100.7", "198.51.100.7:8080", "198.51.100.7.:8080", "2001:db8::1", "[2001:db8::1]", "[2001:db8::1]:443", "", "   ", ":443"],
)
def test_ip_literal_or_empty_host_names_nothing(host: str) -> None:
    """A Host that is an address (with or without port, IPv6 in brackets) or empty is no name."""
    ev = learned(named(CAM, CLOUD, host), answer(CAM, [host], [CDN]))
    assert domains(ev, CAM, CLOUD) == ()
    assert domains(ev, CAM, CDN) == ()


@pytest.mark.parametrize(
    "host",
    [
        "cloud.example.com",
        "Cloud.Example.COM",
        "cloud.example.com.",
        "cloud.example.com:8443",
        "  CLOUD.example.com  ",
        "cloud.example.com.:8443",
    ],
)
def test_names_are_normalised(host: str) -> None:
    """Case, surrounding blanks, a trailing root dot and a `:port` do not change the name."""
    ev = learned(named(CAM, CLOUD, host), answer(CAM, [host], [CDN]))
    assert domains(ev, CAM, CLOUD) == ("cloud.example.com",)
    assert domains(ev, CAM, CDN) == ("cloud.example.com",)


def test_a_name_is_cut_at_255_characters() -> None:
    """A name longer than DNS allows is stored cut to its first 255 characters, never whole."""
    short, long = "a" * MAX_NAME, "b" * (MAX_NAME + 45)
    ev = learned(named(CAM, CLOUD, long), named(CAM, CDN, short))
    assert domains(ev, CAM, CLOUD) == (long[:MAX_NAME],)
    assert domains(ev, CAM, CDN) == (short,)


def test_a_pair_keeps_at_most_eight_names() -> None:
    """Past eight names a DNS name is dropped; an SNI still enters first and pushes out the last."""
    chain = [f"n{i}.example.com" for i in range(MAX_NAMES + 2)]
    ev = learned(answer(CAM, chain, [CLOUD]))
    assert domains(ev, CAM, CLOUD) == tuple(chain[:MAX_NAMES])
    ev.observe(named(CAM, CLOUD, "sni.example.org"))
    assert domains(ev, CAM, CLOUD) == ("sni.example.org", *chain[: MAX_NAMES - 1])


def test_the_least_recently_learned_pair_is_forgotten_first() -> None:
    """With room for two pairs, a third forgets the pair not refreshed since, and keeps the other."""
    ev = learned(named(CAM, CLOUD, "cloud.example.com"), named(CAM, CDN, "cdn.example.com"), max_pairs=2)
    ev.observe(named(CAM, CLOUD, "cloud.example.com"))  # refreshes (CAM, CLOUD)
    ev.observe(named(CAM, P2P, "p2p.example.org"))
    assert domains(ev, CAM, CDN) == ()
    assert domains(ev, CAM, CLOUD) == ("cloud.example.com",)
    assert domains(ev, CAM, P2P) == ("p2p.example.org",)


def test_inbound_flow_takes_the_names_its_local_device_learned_for_the_remote() -> None:
    """For an inbound flow the device is the destination; the names are those of the remote source."""
    ev = learned(answer(CAM, ["p2p.example.org"], [P2P]))
    rec = flow(P2P, CAM, direction="inbound")
    ev.enrich(rec)
    assert (rec.destination_domain, rec.destination_domains) == ("p2p.example.org", ("p2p.example.org",))
    elsewhere = flow(P2P, OTHER_CAM, direction="inbound")
    ev.enrich(elsewhere)
    assert elsewhere.destination_domain is None


def test_device_ip_set_by_the_device_enricher_chooses_the_device() -> None:
    """A record's `device_ip` decides whose evidence is read, before the direction does."""
    ev = learned(answer(CAM, ["p2p.example.org"], [P2P]))
    by_direction, by_device = flow(P2P, CAM, direction="outbound"), flow(P2P, CAM, direction="outbound", device_ip=CAM)
    ev.enrich(by_direction)
    ev.enrich(by_device)
    assert (by_direction.destination_domain, by_device.destination_domain) == (None, "p2p.example.org")


def test_flow_without_evidence_is_left_alone() -> None:
    """No evidence for the pair: the record keeps no domain at all."""
    ev = learned(answer(CAM, ["vms.example.com"], [CLOUD]))
    rec = flow(CAM, P2P)
    ev.enrich(rec)
    assert (rec.destination_domain, rec.destination_domains) == (None, ())
