"""The ECS wire format: round trips, determinism, hostile strings, rejection of garbage."""

from __future__ import annotations

import json

import pytest

from egress.codec import DecodeError, alert_to_ecs, decode_flow, encode, flow_to_ecs
from egress.flows.table import _community_id
from egress.model import TCP, UDP, Alert, Endpoint, FlowRecord


def record(**kw: object) -> FlowRecord:
    rec = FlowRecord(
        start=1768471200.123456, end=1768471260.5, transport=UDP, source=Endpoint("10.20.1.11", 40000, "44-19-B6-12-34-56", 100, 2),
        destination=Endpoint("192.0.2.50", 32100, None, 50, 1), vlans=(100, 20), community_id="1:abc", direction="outbound",
        device_mac="44-19-B6-12-34-56", device_ip="10.20.1.11", device_manufacturer="Hikvision", destination_domains=("a.example", "b.example"),
        destination_domain="a.example", destination_country="CN", destination_asn=4134, destination_as_org="CHINANET", site="london", protocol="cs2-p2p",
    )  # fmt: skip
    for key, value in kw.items():
        setattr(rec, key, value)
    return rec


def test_community_id_matches_the_spec_vector() -> None:
    """Community ID v1 of the specification's TCP example."""
    assert _community_id(TCP, Endpoint("128.232.110.120", 34855), Endpoint("66.35.250.204", 80), -1, -1) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def test_round_trip_keeps_every_field() -> None:
    """decode(encode(record)) gives the same record."""
    rec = record()
    back = decode_flow(encode(flow_to_ecs(rec)))
    assert back == rec


def test_ecs_shape() -> None:
    """Outer VLAN in network.vlan, inner in network.inner.vlan; totals; duration in ns."""
    doc = flow_to_ecs(record())
    assert doc["network"]["vlan"] == {"id": "100"} and doc["network"]["inner"] == {"vlan": {"id": "20"}}
    assert doc["network"]["bytes"] == 150 and doc["network"]["packets"] == 3
    assert doc["event"]["duration"] == 60_376_544_000
    assert doc["@timestamp"] == "2026-01-15T10:01:00.500000Z"
    assert "mac" not in doc["destination"]
    assert doc["network"]["protocol"] == "cs2-p2p" and "protocol" not in flow_to_ecs(record(protocol=None))["network"]


@pytest.mark.parametrize("name", ["evil\x00\x07name\n.example", "x" * 10_000, "caf\udce9.example".encode("utf-8", "surrogateescape").decode("utf-8", "replace"), '"}{"', "\u202etxt.exe"])
def test_hostile_names_never_break_a_record(name: str) -> None:
    """Control characters, huge names and odd Unicode stay inside one valid JSON line."""
    rec = record(destination_domain=name, destination_domains=(name,))
    data = encode(alert_to_ecs(Alert(rec, "g", "id", "deny", "g/deny/x", "x", "p", "high", f"to {name}")))
    assert b"\n" not in data
    doc = json.loads(data)
    assert doc["destination"]["domain"] == name
    assert decode_flow(encode(flow_to_ecs(rec))).destination_domain == name


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe", b"[]", b"{}", b'{"egress": {"schema_version": 2}}', b'{"egress": {"schema_version": 1}, "network": {}}', b"null", b'{"egress":{"schema_version":1},"event":{"start":"yesterday"}}'],
)
def test_garbage_is_a_decode_error(data: bytes) -> None:
    """Anything but a flow record of schema version 1 raises DecodeError (never another exception)."""
    with pytest.raises(DecodeError):
        decode_flow(data)


@pytest.mark.parametrize(("path", "value"), [(("destination", "port"), "443"), (("device", "manufacturer"), 7), (("source", "bytes"), "1"), (("egress", "destination", "domains"), [1])])
def test_fields_of_the_wrong_type_are_a_decode_error(path: tuple[str, ...], value: object) -> None:
    """A record whose fields have the wrong JSON types is refused whole, not half-evaluated."""
    doc = flow_to_ecs(record())
    cur = doc
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    with pytest.raises(DecodeError):
        decode_flow(json.dumps(doc).encode())


def test_timestamps_survive_the_wire_to_the_microsecond() -> None:
    """iso() agrees with datetime, and parse → iso gives back the same text (event.ids depend on it)."""
    import random
    from datetime import UTC, datetime

    from egress.codec import _parse_iso, iso

    rng = random.Random(7)
    for _ in range(20_000):
        ts = rng.uniform(0, 4e9)
        text = iso(ts)
        assert text == datetime.fromtimestamp(round(ts * 1e6) / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert iso(_parse_iso(text)) == text
