"""egress.inventory, unit by unit: what makes a device, when it is decided `lan_only`, when its
record is handed on; the evaluator's one covered-vendor alert per device, from a record or a
flow; the device record's wire format; the ARP frames the header decoder keeps."""

from __future__ import annotations

import struct

import pytest

from egress.bus import Message
from egress.capture.headers import NON_IP, HeaderDecoder
from egress.codec import DecodeError, device_message, read_device
from egress.localnet import DEFAULT_LOCAL_NETWORKS, LocalNetworks
from egress.model import DEVICE, TCP, UDP, DeviceRecord, Endpoint, FlowRecord, Packet
from egress.policy.evaluate import Evaluator
from egress.inventory import Inventory
from egress.policy.schema import Policy

LOCAL = LocalNetworks(DEFAULT_LOCAL_NETWORKS)
HIK = "44:19:b6:00:00:31"
HIK_ECS = "44-19-B6-00-00-31"
T0 = 1_768_471_200.0
POLICY = Policy.model_validate({"version": 1, "covered_vendors": ["Hikvision"], "groups": [{"name": "street", "match": {"vlans": [20]}}]})


def _brand(mac: str) -> tuple[str | None, str | None]:
    return ("Hikvision", "Hangzhou Hikvision Digital Technology Co.,Ltd.") if mac.startswith("44-19-B6") else (None, "Other Org")


def _inventory(**kw: float) -> Inventory:
    return Inventory(LOCAL, _brand, Evaluator(POLICY).describe, site="test", grace_seconds=60.0, publish_seconds=60.0, **kw)  # type: ignore[arg-type]


def _arp(ts: float, mac: str = HIK, ip: str = "10.20.1.31") -> Packet:
    return Packet(ts, 60, mac, "00:00:00:00:00:00", (20,), ip, "10.20.0.1", 0)


def _lan(ts: float, src_mac: str = HIK, proto: int = UDP) -> Packet:
    return Packet(ts, 200, src_mac, "00:40:8c:00:00:05", (20,), "10.20.1.31", "10.20.0.5", proto, 5004, 5004)


def _egress(start: float, mac: str = HIK_ECS, sent: int = 1000) -> FlowRecord:
    return FlowRecord(start, start + 1, TCP, Endpoint("10.20.1.31", 40000, mac, sent, 5), Endpoint("198.51.100.40", 443, None, 300, 4), (20,),
                      "1:x", "outbound", device_mac=mac, device_ip="10.20.1.31", device_manufacturer="Hikvision")  # fmt: skip


def test_an_arp_only_device_is_lan_only_once_the_grace_has_passed() -> None:
    """Undecided (nothing handed on) until an idle timeout of flow time after its first frame;
    then one record: lan_only, covered, its group, IP and VLAN."""
    inv = _inventory()
    inv.arp([_arp(T0)])
    inv.observe([], [], [], T0 + 59)
    assert inv.due() == []
    inv.observe([], [], [], T0 + 61)
    (rec,) = inv.due()
    assert (rec.mac, rec.lan_only, rec.covered, rec.group, rec.ips, rec.vlans, rec.seen_by) == (HIK_ECS, True, True, "street", ("10.20.1.31",), (20,), ("arp",))
    assert inv.due() == []


def test_a_device_that_opens_a_flow_within_the_grace_is_not_lan_only() -> None:
    """ARP first, then a flow opened (not yet exported): its covered alert will come from the
    flow, so its record is decided at once, lan_only false; the exported flow counts as egress."""
    inv = _inventory()
    inv.arp([_arp(T0)])
    first = Packet(T0 + 5, 74, HIK, "00:00:5e:00:01:14", (20,), "10.20.1.31", "198.51.100.40", TCP, 40000, 443, 0x02)
    inv.observe([], [first], [], T0 + 5)
    inv.observe([], [], [], T0 + 6.5)
    (rec,) = inv.due()
    assert not rec.lan_only and rec.flows_out == 0
    inv.observe([], [], [_egress(T0 + 5)], T0 + 200)
    (later,) = inv.due()
    assert (later.flows_out, later.packets_out, later.bytes_out, later.seen_by) == (1, 5, 1000, ("arp", "flow"))


def test_records_are_handed_on_at_most_every_publish_seconds_unless_they_grow() -> None:
    """Counters alone: once per publish_seconds of flow time; a new IP: at once; flush: every change."""
    inv = _inventory()
    inv.observe([_lan(T0)], [], [], T0)
    assert inv.flush()[0].lan_only
    inv.observe([_lan(T0 + 1)], [], [], T0 + 1)
    assert len(inv.due()) == 1  # not handed on by due() before: it is not cooling
    inv.observe([_lan(T0 + 10)], [], [], T0 + 10)
    assert inv.due() == []  # cooling
    inv.arp([_arp(T0 + 20, ip="10.20.1.99")])
    assert [r.ips for r in inv.due()] == [("10.20.1.31", "10.20.1.99")]
    inv.observe([_lan(T0 + 30)], [], [], T0 + 30)
    inv.observe([], [], [], T0 + 50)
    assert inv.due() == []
    inv.observe([], [], [], T0 + 81)
    assert [r.last_seen for r in inv.due()] == [T0 + 30]
    assert inv.flush() == []


def test_group_addresses_and_unreadable_macs_are_no_device() -> None:
    """A multicast or broadcast source, the zero MAC, a MAC the registry refuses: not counted."""

    def brand(mac: str) -> tuple[str | None, str | None]:
        if mac.startswith("02"):
            raise ValueError("unreadable")
        return _brand(mac)

    errors: list[str] = []
    inv = Inventory(LOCAL, brand, Evaluator(POLICY).describe, on_error=errors.append)
    inv.arp([_arp(T0, "01:00:5e:00:00:fb"), _arp(T0, "ff:ff:ff:ff:ff:ff"), _arp(T0, "00:00:00:00:00:00"), _arp(T0, "02:00:00:00:00:01")])
    assert len(inv) == 0 and inv.bad_macs == 1 and errors == ["bad MAC: unreadable"]


def test_the_inventory_is_bounded() -> None:
    """Past max_devices a new MAC is left out, counted and reported (telemetry counts the reports)."""
    errors: list[str] = []
    inv = Inventory(LOCAL, _brand, Evaluator(POLICY).describe, max_devices=2, on_error=errors.append)
    inv.arp([_arp(T0, f"44:19:b6:00:00:{i:02x}") for i in range(5)])
    assert len(inv) == 2 and inv.devices_dropped == 3
    assert errors[0] == "inventory full (2 devices): 44-19-B6-00-00-02 left out" and len(errors) == 3


def _device(lan_only: bool = True) -> DeviceRecord:
    return DeviceRecord(HIK_ECS, "Hikvision", "Hangzhou Hikvision", ("10.20.1.31",), (20,), T0, T0 + 5, lan_only=lan_only, seen_by=("arp",), site="test")


def test_one_covered_vendor_alert_per_device_from_its_record_or_its_flow() -> None:
    """A lan_only record raises the alert; the device's later flow does not raise it again; the
    event.id is the one its flow would have given."""
    from_flow = Evaluator(POLICY).evaluate(_egress(T0)).alerts
    evaluator = Evaluator(POLICY)
    verdict = evaluator.judge_device(_device())
    assert verdict.verdict == DEVICE and verdict.group == "street" and verdict.covered
    assert [a.event_id for a in verdict.alerts] == [a.event_id for a in from_flow if a.category == "covered-vendor"]
    assert not [a for a in evaluator.evaluate(_egress(T0 + 100)).alerts if a.category == "covered-vendor"]
    assert evaluator.judge_device(_device()).alerts == ()


def test_a_record_that_is_not_lan_only_leaves_the_alert_to_the_flow() -> None:
    evaluator = Evaluator(POLICY)
    assert evaluator.judge_device(_device(lan_only=False)).alerts == ()
    assert [a.category for a in evaluator.evaluate(_egress(T0)).alerts].count("covered-vendor") == 1


def test_device_records_round_trip_and_bad_ones_are_refused() -> None:
    dev = DeviceRecord(HIK_ECS, "Hikvision", "Hangzhou", ("10.20.1.31", "fd00::31"), (100, 20), T0, T0 + 5, 2, 30, 4000, False,
                       ("arp", "flow"), "street", True, "cam-1", "test", "obs", "host")  # fmt: skip
    message = device_message(dev, "egress.devices")
    assert message.key == HIK_ECS.encode() and message.topic == "egress.devices"
    assert read_device(message) == dev
    for value in (b"{", b"[]", b'{"egress": {"schema_version": 9}}', message.value.replace(b'"flows_out":2', b'"flows_out":"x"')):
        with pytest.raises(DecodeError):
            read_device(Message(message.key, value, message.headers))


def _arp_frame(sender_mac: str, sender_ip: str, vlan: int | None = None) -> bytes:
    eth = bytes.fromhex("ffffffffffff") + bytes.fromhex(sender_mac.replace(":", ""))
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, bytes.fromhex(sender_mac.replace(":", "")), bytes([10, 20, 1, 32]),
                      bytes(6), bytes([10, 20, 0, 1]))  # fmt: skip
    assert sender_ip == "10.20.1.32"
    return eth + tag + struct.pack("!H", 0x0806) + arp


@pytest.mark.parametrize("vlan", [None, 20])
def test_the_header_decoder_keeps_arp_frames_for_the_inventory(vlan: int | None) -> None:
    """An ARP frame is still NON_IP (counted as tshark would), and kept in `arp` with its sender."""
    decoder = HeaderDecoder("eth1")
    frame = _arp_frame("bc:ad:28:00:00:32", "10.20.1.32", vlan)
    assert decoder.decode(frame, 0, len(frame), 1_768_471_200, 500_000, 60) is NON_IP
    (pkt,) = decoder.arp
    assert (pkt.ts, pkt.src_mac, pkt.src_ip, pkt.dst_ip, pkt.vlans, pkt.proto, pkt.interface) == (T0 + 0.5, "bc:ad:28:00:00:32", "10.20.1.32", "10.20.0.1",
                                                                                                   (20,) if vlan else (), 0, "eth1")  # fmt: skip
