"""Packets → bidirectional flows, exported on idle and active timeouts.

Pure: time is the packets' own timestamps, so a recorded file and a live capture
produce the same flows. Flows sit in an OrderedDict by last activity, which makes
idle expiry and the `max_flows` bound O(1) per packet: the oldest flow is always first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import communityid

from egress.flows.direction import ECHO_REPLIES, ECHO_REQUESTS, responder_by_ports
from egress.localnet import LocalNetworks
from egress.mac import record_form
from egress.model import ICMP, ICMPV6, TCP, UDP, Endpoint, FlowRecord, Packet

__all__ = ["FlowTable", "FlowSettings", "in_scope"]

_SYN, _ACK = 0x02, 0x10
_DNS = 53
_CID = communityid.CommunityID()


@dataclass(frozen=True, slots=True)
class FlowSettings:
    idle_timeout_seconds: float = 60.0
    active_timeout_seconds: float = 300.0
    max_flows: int = 200_000


def in_scope(pkt: Packet, local: LocalNetworks) -> bool:
    """The prefilter's rule: at least one non-local endpoint, or DNS."""
    return pkt.src_ip not in local or pkt.dst_ip not in local or pkt.sport == _DNS or pkt.dport == _DNS


class _Flow:
    """Mutable per-flow state; side "a" is the first packet's sender."""

    __slots__ = (
        "a_ip", "a_port", "b_ip", "b_port", "a_mac", "b_mac", "proto", "vlans", "interface",
        "first", "last", "a_bytes", "a_pkts", "b_bytes", "b_pkts", "a_is_initiator", "icmp_type", "icmp_code", "protocol",
    )  # fmt: skip

    def __init__(self, pkt: Packet, a_is_initiator: bool | None, protocol: str | None) -> None:
        self.a_ip, self.a_port, self.b_ip, self.b_port = pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport
        self.a_mac, self.b_mac = pkt.src_mac, pkt.dst_mac
        self.proto, self.vlans, self.interface = pkt.proto, pkt.vlans, pkt.interface
        self.first = self.last = pkt.ts
        self.a_bytes = self.a_pkts = self.b_bytes = self.b_pkts = 0
        self.a_is_initiator = a_is_initiator
        self.icmp_type, self.icmp_code = pkt.icmp_type, pkt.icmp_code
        self.protocol = pkt.protocol or protocol


class FlowTable:
    """`add` a packet, get back the flows it caused to be exported; `flush` at the end."""

    def __init__(self, settings: FlowSettings, local: LocalNetworks) -> None:
        self._settings = settings
        self._local = local
        self._flows: OrderedDict[tuple[object, ...], _Flow] = OrderedDict()
        self._clock = 0.0
        self._next_sweep = 0.0
        self.flows_evicted = 0  # exported early: the table held max_flows
        # for the device inventory, taken by the meter after each batch: the packets left out
        # (LAN-only), and the first packet of each new flow (whose local ends have a flow)
        self.out_of_scope: list[Packet] = []
        self.opened: list[Packet] = []

    def __len__(self) -> int:
        return len(self._flows)

    def add(self, pkt: Packet) -> list[FlowRecord]:
        return self.add_many((pkt,))

    def add_many(self, packets: Iterable[Packet]) -> list[FlowRecord]:
        """Count packets in order; the flows they caused to be exported, in export order.

        One loop for a batch, with what `add` would call per packet written out in it: this
        is the cost of every packet the capture reads by its headers."""
        out: list[FlowRecord] = []
        local = self._local
        flows = self._flows
        get, touch = flows.get, flows.move_to_end
        active = self._settings.active_timeout_seconds
        clock, next_sweep = self._clock, self._next_sweep
        left_out = self.out_of_scope.append
        for pkt in packets:
            src, dst, sport, dport, proto = pkt.src_ip, pkt.dst_ip, pkt.sport, pkt.dport, pkt.proto
            if src in local and dst in local and sport != _DNS and dport != _DNS:
                left_out(pkt)
                continue
            ts = pkt.ts
            if ts > clock:
                clock = ts
            if clock >= next_sweep:
                self._clock = clock
                self._expire_idle(out)
                next_sweep = clock + 1.0
            if proto == ICMP or proto == ICMPV6:
                key: tuple[object, ...] = (pkt.vlans, proto, src, dst) if src <= dst else (pkt.vlans, proto, dst, src)
            elif (src, sport) <= (dst, dport):
                key = (pkt.vlans, proto, src, sport, dst, dport)
            else:
                key = (pkt.vlans, proto, dst, dport, src, sport)
            flow = get(key)
            if flow is None or ts - flow.first >= active:
                flow = self._begin(key, pkt, flow, out)
            else:
                touch(key)
            if src == flow.a_ip and sport == flow.a_port:
                flow.a_bytes += pkt.length
                flow.a_pkts += 1
                from_a = True
            else:
                flow.b_bytes += pkt.length
                flow.b_pkts += 1
                from_a = False
            if ts > flow.last:
                flow.last = ts
            if pkt.protocol is not None and flow.protocol is None:  # the first packet that tells
                flow.protocol = pkt.protocol
            if flow.a_is_initiator is None:
                _initiator(flow, pkt, from_a)
        self._clock, self._next_sweep = clock, next_sweep
        return out

    def _begin(self, key: tuple[object, ...], pkt: Packet, flow: _Flow | None, out: list[FlowRecord]) -> _Flow:
        """A new flow for this packet's key. `flow`: the one that reached the active timeout,
        exported here and carried on as a new record with the same initiator and protocol."""
        carried, protocol = None, None
        if flow is not None:
            del self._flows[key]
            out.append(self._export(flow))
            carried = flow.a_is_initiator if flow.a_ip == pkt.src_ip and flow.a_port == pkt.sport else _flip(flow.a_is_initiator)
            protocol = flow.protocol
        flow = _Flow(pkt, carried, protocol)
        self._flows[key] = flow
        self.opened.append(pkt)
        if len(self._flows) > self._settings.max_flows:
            _, oldest = self._flows.popitem(last=False)
            out.append(self._export(oldest))
            self.flows_evicted += 1
        return flow

    def tick(self, now: float) -> list[FlowRecord]:
        """Live capture on a quiet link: let wall-clock time expire idle flows."""
        out: list[FlowRecord] = []
        if now > self._clock:
            self._clock = now
            self._expire_idle(out)
        return out

    def _expire_idle(self, out: list[FlowRecord]) -> None:
        horizon = self._clock - self._settings.idle_timeout_seconds
        while self._flows:
            key, flow = next(iter(self._flows.items()))
            if flow.last > horizon:
                break
            del self._flows[key]
            out.append(self._export(flow))

    def flush(self) -> Iterator[FlowRecord]:
        """Export every open flow (end of file, shutdown)."""
        while self._flows:
            _, flow = self._flows.popitem(last=False)
            yield self._export(flow)

    def _export(self, flow: _Flow) -> FlowRecord:
        a_init = flow.a_is_initiator
        if a_init is None:
            by_ports = responder_by_ports(flow.proto, flow.a_port, flow.b_port) if flow.proto in (TCP, UDP) else None
            a_init = True if by_ports is None else not by_ports
        a = Endpoint(flow.a_ip, flow.a_port, record_form(flow.a_mac), flow.a_bytes, flow.a_pkts)
        b = Endpoint(flow.b_ip, flow.b_port, record_form(flow.b_mac), flow.b_bytes, flow.b_pkts)
        src, dst = (a, b) if a_init else (b, a)
        src_local, dst_local = src.ip in self._local, dst.ip in self._local
        direction = ("internal" if dst_local else "outbound") if src_local else ("inbound" if dst_local else "external")
        icmp_type, icmp_code = (flow.icmp_type, flow.icmp_code) if flow.proto in (ICMP, ICMPV6) else (-1, -1)
        if flow.proto in (ICMP, ICMPV6):
            src.port = dst.port = 0
        return FlowRecord(
            start=flow.first,
            end=flow.last,
            transport=flow.proto,
            source=src,
            destination=dst,
            vlans=flow.vlans,
            community_id=_community_id(flow.proto, src, dst, icmp_type, icmp_code),
            direction=direction,
            icmp_type=icmp_type,
            icmp_code=icmp_code,
            interface=flow.interface,
            protocol=flow.protocol,
        )


def _initiator(flow: _Flow, pkt: Packet, from_a: bool) -> None:
    """Who opened the flow, where this packet tells: a SYN without ACK, an echo request or reply."""
    if pkt.proto == TCP and pkt.tcp_flags & _SYN:
        sender_initiates = not pkt.tcp_flags & _ACK
        flow.a_is_initiator = sender_initiates if from_a else not sender_initiates
    elif pkt.proto in (ICMP, ICMPV6):
        if pkt.icmp_type == ECHO_REQUESTS[pkt.proto]:
            flow.a_is_initiator = from_a
        elif pkt.icmp_type == ECHO_REPLIES[pkt.proto]:
            flow.a_is_initiator = not from_a


def _flip(value: bool | None) -> bool | None:
    return None if value is None else not value


def _community_id(proto: int, src: Endpoint, dst: Endpoint, icmp_type: int, icmp_code: int) -> str:
    try:
        if proto in (ICMP, ICMPV6) and icmp_type >= 0:
            tpl = communityid.FlowTuple(proto, src.ip, dst.ip, icmp_type, max(icmp_code, 0))
        elif proto in (TCP, UDP):
            tpl = communityid.FlowTuple(proto, src.ip, dst.ip, src.port, dst.port)
        else:
            tpl = communityid.FlowTuple(proto, src.ip, dst.ip)
        return str(_CID.calc(tpl))
    except communityid.Error:
        return ""
