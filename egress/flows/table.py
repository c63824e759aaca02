"""Packets → bidirectional flows, exported on idle and active timeouts.

Pure: time is the packets' own timestamps, so a recorded file and a live capture
produce the same flows. Flows sit in an OrderedDict by last activity, which makes
idle expiry and the `max_flows` bound O(1) per packet: the oldest flow is always first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
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
        "first", "last", "a_bytes", "a_pkts", "b_bytes", "b_pkts", "a_is_initiator", "icmp_type", "icmp_code",
    )  # fmt: skip

    def __init__(self, pkt: Packet, a_is_initiator: bool | None) -> None:
        self.a_ip, self.a_port, self.b_ip, self.b_port = pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport
        self.a_mac, self.b_mac = pkt.src_mac, pkt.dst_mac
        self.proto, self.vlans, self.interface = pkt.proto, pkt.vlans, pkt.interface
        self.first = self.last = pkt.ts
        self.a_bytes = self.a_pkts = self.b_bytes = self.b_pkts = 0
        self.a_is_initiator = a_is_initiator
        self.icmp_type, self.icmp_code = pkt.icmp_type, pkt.icmp_code


class FlowTable:
    """`add` a packet, get back the flows it caused to be exported; `flush` at the end."""

    def __init__(self, settings: FlowSettings, local: LocalNetworks) -> None:
        self._settings = settings
        self._local = local
        self._flows: OrderedDict[tuple[object, ...], _Flow] = OrderedDict()
        self._clock = 0.0
        self._next_sweep = 0.0
        self.packets_out_of_scope = 0
        self.flows_evicted = 0  # exported early: the table held max_flows

    def __len__(self) -> int:
        return len(self._flows)

    def add(self, pkt: Packet) -> list[FlowRecord]:
        out: list[FlowRecord] = []
        if not in_scope(pkt, self._local):
            self.packets_out_of_scope += 1
            return out
        if pkt.ts > self._clock:
            self._clock = pkt.ts
        if self._clock >= self._next_sweep:
            self._expire_idle(out)
            self._next_sweep = self._clock + 1.0
        forward = (pkt.src_ip, pkt.sport) <= (pkt.dst_ip, pkt.dport)
        if pkt.proto in (ICMP, ICMPV6):
            forward = pkt.src_ip <= pkt.dst_ip
            key: tuple[object, ...] = (pkt.vlans, pkt.proto, *((pkt.src_ip, pkt.dst_ip) if forward else (pkt.dst_ip, pkt.src_ip)))
        elif forward:
            key = (pkt.vlans, pkt.proto, pkt.src_ip, pkt.sport, pkt.dst_ip, pkt.dport)
        else:
            key = (pkt.vlans, pkt.proto, pkt.dst_ip, pkt.dport, pkt.src_ip, pkt.sport)
        flow = self._flows.get(key)
        if flow is not None and pkt.ts - flow.first >= self._settings.active_timeout_seconds:
            # A long-lived flow is exported and goes on as a new record with the same initiator.
            del self._flows[key]
            out.append(self._export(flow))
            carried = flow.a_is_initiator if flow.a_ip == pkt.src_ip and flow.a_port == pkt.sport else _flip(flow.a_is_initiator)
            flow = None
        else:
            carried = None
        if flow is None:
            flow = _Flow(pkt, carried)
            self._flows[key] = flow
            if len(self._flows) > self._settings.max_flows:
                _, oldest = self._flows.popitem(last=False)
                out.append(self._export(oldest))
                self.flows_evicted += 1
        else:
            self._flows.move_to_end(key)
        self._count(flow, pkt)
        return out

    def _count(self, flow: _Flow, pkt: Packet) -> None:
        from_a = pkt.src_ip == flow.a_ip and pkt.sport == flow.a_port
        if from_a:
            flow.a_bytes += pkt.length
            flow.a_pkts += 1
        else:
            flow.b_bytes += pkt.length
            flow.b_pkts += 1
        if pkt.ts > flow.last:
            flow.last = pkt.ts
        if flow.a_is_initiator is None:
            if pkt.proto == TCP and pkt.tcp_flags & _SYN:
                sender_initiates = not pkt.tcp_flags & _ACK
                flow.a_is_initiator = sender_initiates if from_a else not sender_initiates
            elif pkt.proto in (ICMP, ICMPV6):
                if pkt.icmp_type == ECHO_REQUESTS[pkt.proto]:
                    flow.a_is_initiator = from_a
                elif pkt.icmp_type == ECHO_REPLIES[pkt.proto]:
                    flow.a_is_initiator = not from_a

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
        )


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
