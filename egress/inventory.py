"""The device inventory: every device that sent a frame, whether or not it ever leaves the LAN.

A stage of the agent's half, beside the flow meter and fed on the same thread, per batch:
- the ARP frames the capture read (`capture.headers`: sender MAC and IP),
- the packets the flow table left out (LAN-only: the prefilter passes DHCP, mDNS, SSDP,
  TCP SYNs and a sample of other LAN frames for this stage alone, `capture.prefilter`),
- the first packet of each new flow (its local initiator has a flow of its own),
- the exported, enriched flow records (egress counts: flows, packets and bytes out).

Nothing here changes a packet, a flow or a record. Per device (by MAC): brand and IEEE
registry name, IPs, VLANs, first and last seen, egress counts. Time is flow time (the
frames' own timestamps), so a file and a live capture give the same inventory.

A device's covered-vendor alert comes from its first flow, as it always did, unless it
has no flow of its own within `grace_seconds` (flow time) of its first frame, or by the
end of the input: then it is `lan_only` and its record raises it (`Evaluator.judge_device`).
A record is handed on (`due()`) once that is decided, then whenever its IPs, VLANs or
brand change, and at most every `publish_seconds` while only its counters move; `flush()`
hands on every change. Bounded: at most `max_devices` devices (further MACs are counted in
`devices_dropped`), 8 IPs and 8 VLAN IDs each, twice as many MACs remembered as having a flow.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from egress.localnet import LocalNetworks
from egress.mac import record_form
from egress.model import DeviceRecord, FlowRecord, Packet

__all__ = ["Inventory"]

_MAX_IPS = 8
_MAX_VLANS = 8
_UNSPECIFIED = frozenset({"0.0.0.0", "::"})
_ODD = frozenset("13579bdfBDF")  # the second hex digit of a group (multicast, broadcast) address

Brand = Callable[[str], tuple[str | None, str | None]]  # MAC → (brand, registry organisation); ValueError if unreadable
Describe = Callable[[DeviceRecord], tuple[str, bool, str]]  # record → (group, covered, inventory name)


@dataclass(slots=True)
class _Device:
    mac: str
    brand: str | None
    organization: str | None
    first_seen: float
    last_seen: float
    ips: list[str] = field(default_factory=list)
    vlans: list[int] = field(default_factory=list)
    flows_out: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    seen_by: set[str] = field(default_factory=set)
    lan_only: bool | None = None  # None: not decided yet
    changed: bool = True  # since it was last handed on


class Inventory:
    """`arp()`, `observe()` feed it; `due()`, `flush()` hand on records; `records()` reads them all."""

    def __init__(
        self, local: LocalNetworks, brand: Brand, describe: Describe, *, site: str = "", observer: tuple[str, str] = ("", ""),
        grace_seconds: float = 60.0, publish_seconds: float = 60.0, max_devices: int = 65_536, on_error: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        """`on_error(reason)`: a MAC the registry cannot read, a device left out of a full
        inventory (telemetry counts them: egress_enrich_errors_total{enricher="inventory"})."""
        self._local = local
        self._brand = brand
        self._describe = describe
        self._site = site
        self._observer = observer
        self._grace = grace_seconds
        self._publish = publish_seconds
        self._max = max_devices
        self._on_error = on_error
        self._devices: dict[str, _Device] = {}
        self._with_flows: set[str] = set()  # MACs (ECS form) that initiated a flow
        self._pending: dict[str, float] = {}  # undecided MAC → first seen
        self._ready: set[str] = set()  # decided, changed, not handed on within publish_seconds (or its IPs or VLANs grew)
        self._cooling: deque[tuple[float, str]] = deque()  # (handed on at, MAC), in time order
        self._is_cooling: set[str] = set()
        self._clock = float("-inf")
        self._next_check = float("-inf")
        self._lock = threading.Lock()  # the captures of `run --interface A --interface B` share one
        self.devices_dropped = 0
        self.bad_macs = 0

    def __len__(self) -> int:
        return len(self._devices)

    # -- feeding ---------------------------------------------------------------------
    def arp(self, packets: Sequence[Packet]) -> None:
        """ARP frames (protocol 0: the sender's MAC and IP as source)."""
        with self._lock:
            for pkt in packets:
                self._frame(pkt, "arp")

    def observe(self, left_out: Sequence[Packet], opened: Sequence[Packet], records: Sequence[FlowRecord], now: float | None = None) -> None:
        """One batch of the flow meter: LAN-only packets, first packets of new flows, exported
        records; `now`: the flow time it reached (the last packet's, or a tick's clock)."""
        with self._lock:
            for pkt in left_out:
                self._frame(pkt, "lan")
            local = self._local
            for pkt in opened:  # the side that becomes the flow's device: the local sender, else the local receiver
                mac = pkt.src_mac if pkt.src_ip in local else pkt.dst_mac if pkt.dst_ip in local else None
                form = record_form(mac) if mac else None
                if form is not None and len(self._with_flows) < 2 * self._max:
                    self._with_flows.add(form)
            for rec in records:
                self._record(rec)
            if now is not None and now > self._clock:
                self._clock = now

    def _frame(self, pkt: Packet, how: str) -> None:
        mac = pkt.src_mac
        if not mac or mac[1:2] in _ODD or mac == "00:00:00:00:00:00":
            return  # no MAC, a group address, or none at all: no device sent it
        device = self._device(record_form(mac), pkt.ts)
        if device is None:
            return
        if pkt.ts > device.last_seen:
            device.last_seen = pkt.ts
        self._changed(device)
        device.seen_by.add(how)
        if pkt.src_ip not in _UNSPECIFIED:
            self._add_ip(device, pkt.src_ip)
        self._add_vlans(device, pkt.vlans)
        if pkt.ts > self._clock:
            self._clock = pkt.ts

    def _record(self, rec: FlowRecord) -> None:
        if not rec.device_mac:
            return
        device = self._device(rec.device_mac, rec.start)
        if device is None:
            return
        self._with_flows.add(device.mac)
        device.first_seen = min(device.first_seen, rec.start)
        device.last_seen = max(device.last_seen, rec.end)
        device.seen_by.add("flow")
        self._changed(device)
        if rec.device_ip:
            self._add_ip(device, rec.device_ip)
        self._add_vlans(device, rec.vlans)
        if rec.is_egress:
            device.flows_out += 1
            device.packets_out += rec.source.packets
            device.bytes_out += rec.source.bytes

    def _device(self, mac: str | None, ts: float) -> _Device | None:
        if mac is None:
            return None
        device = self._devices.get(mac)
        if device is not None:
            return device
        if len(self._devices) >= self._max:
            self.devices_dropped += 1
            if self._on_error is not None:
                self._on_error(f"inventory full ({self._max} devices): {mac} left out")
            return None
        try:
            brand, organization = self._brand(mac)
        except ValueError as exc:  # a corrupt frame's MAC is not a device's
            self.bad_macs += 1
            if self._on_error is not None:
                self._on_error(f"bad MAC: {exc}")
            return None
        device = self._devices[mac] = _Device(mac, brand or organization, organization, ts, ts)
        self._pending[mac] = ts
        return device

    def _changed(self, device: _Device) -> None:
        device.changed = True
        if device.lan_only is not None and device.mac not in self._is_cooling:
            self._ready.add(device.mac)

    def _grew(self, device: _Device) -> None:
        """A new IP or VLAN: handed on at the next `due()`, cooling or not (at most 16 times)."""
        device.changed = True
        if device.lan_only is not None:
            self._ready.add(device.mac)

    def _add_ip(self, device: _Device, ip: str) -> None:
        if ip not in device.ips and len(device.ips) < _MAX_IPS:
            device.ips.append(ip)
            self._grew(device)

    def _add_vlans(self, device: _Device, vlans: Iterable[int]) -> None:
        for vlan in vlans:
            if vlan not in device.vlans and len(device.vlans) < _MAX_VLANS:
                device.vlans.append(vlan)
                self._grew(device)

    # -- handing on ------------------------------------------------------------------
    def due(self) -> list[DeviceRecord]:
        """Records to hand on now (the module docstring says when). Called per batch: the
        undecided and the cooling devices are looked at once a second of flow time."""
        with self._lock:
            clock = self._clock
            if clock >= self._next_check:
                self._next_check = clock + 1.0
                self._decide(clock - self._grace)
                cooling, devices = self._cooling, self._devices
                while cooling and cooling[0][0] + self._publish <= clock:
                    _, mac = cooling.popleft()
                    self._is_cooling.discard(mac)
                    if devices[mac].changed:
                        self._ready.add(mac)
            if not self._ready:
                return []
            ready, self._ready = self._ready, set()
            out = []
            for mac in sorted(ready):
                out.append(self._hand_on(self._devices[mac]))
                if mac not in self._is_cooling:
                    self._is_cooling.add(mac)
                    self._cooling.append((clock, mac))
            return out

    def flush(self) -> list[DeviceRecord]:
        """The end of the input: every device decided, every change handed on."""
        with self._lock:
            self._decide(float("inf"))
            self._ready.clear()
            return [self._hand_on(d) for d in self._devices.values() if d.changed]

    def _decide(self, horizon: float) -> None:
        for mac, first in list(self._pending.items()):
            if mac in self._with_flows or first <= horizon:
                del self._pending[mac]
                self._devices[mac].lan_only = mac not in self._with_flows
                self._ready.add(mac)

    def _hand_on(self, device: _Device) -> DeviceRecord:
        device.changed = False
        return self._record_of(device)

    def _record_of(self, d: _Device) -> DeviceRecord:
        rec = DeviceRecord(
            d.mac, d.brand, d.organization, tuple(d.ips), tuple(d.vlans), d.first_seen, d.last_seen, d.flows_out, d.packets_out, d.bytes_out,
            bool(d.lan_only), tuple(sorted(d.seen_by)), site=self._site, observer_name=self._observer[0], observer_hostname=self._observer[1],
        )  # fmt: skip
        group, covered, name = self._describe(rec)
        return replace(rec, group=group, covered=covered, name=name)

    def records(self) -> list[DeviceRecord]:
        """Every device now, by first seen (the `analyze --format devices` views)."""
        with self._lock:
            return sorted((self._record_of(d) for d in self._devices.values()), key=lambda r: (r.first_seen, r.mac))
