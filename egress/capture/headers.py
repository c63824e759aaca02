"""Packets from pcap records by their headers alone, and which records tshark must see.

Almost every packet egress meters carries nothing but counts: video, RTP, TLS
application data. For those, reading the Ethernet, VLAN, IP and TCP/UDP/ICMP headers
in Python gives the same `Packet` that tshark's line would (the same strings, the same
float timestamp) at a fraction of the cost. A record goes to tshark instead when it
may carry a name or when its headers are anything but plain:

- DNS answers (UDP port 53 with the response bit) and DNS over TCP;
- TCP segments that start a TLS handshake record or an HTTP request, and the segments
  that continue that record or those request headers (tshark reassembles them);
- UDP datagrams that look like a QUIC long-header packet of a version tshark decrypts
  (the Initial's ClientHello names the server);
- fragments, IP options tshark might object to, IPv6 extension headers, tunnels, other
  IP protocols, PPPoE, odd VLAN stacks, anything cut short or malformed.

Sending tshark more than it needs never changes a result; sending it less could lose a
name. So every test here errs towards tshark, and the packet-level equivalence with
tshark's whole-file dissection is tested on every sample and real capture
(tests/test_capture.py). Non-IP frames (ARP, LLDP, 802.3) are counted, as tshark's
lines would be; an ARP frame is also kept in `arp` (as a Packet of protocol 0 whose
addresses are the sender's and the target's), for the device inventory alone.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict
from typing import Final

from egress.capture.payload import CANDIDATE_FIRST_BYTES, identify
from egress.model import ICMP, ICMPV6, TCP, UDP, Packet

__all__ = ["HeaderDecoder", "DISSECT", "NON_IP", "ETHERNET"]

ETHERNET: Final = 1  # the pcap link type this decoder reads; every other one goes to tshark whole


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DISSECT: Final = _Marker("DISSECT")  # this record goes to tshark
NON_IP: Final = _Marker("NON_IP")  # not IP: counted, as tshark's line would be

_ETH = struct.Struct("!12sH")  # destination + source MAC, ethertype
_TAG = struct.Struct("!HH")  # TCI, next ethertype
_IPV4 = struct.Struct("!BxHxxHxB2xII")  # version+IHL, total length, flags+fragment offset, protocol, src, dst
_IPV6 = struct.Struct("!I H B x 16s 16s")  # version+class+label, payload length, next header, src, dst
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!HH8xH")  # ports, data offset + flags
_U32 = struct.Struct("!I")
_RECORD = {order: struct.Struct(order + "IIII") for order in "<>"}  # a pcap record header: seconds, fraction, captured, original length
_TAGGED_IP4 = struct.Struct("!12sHHH" + _IPV4.format[1:])  # Ethernet, one 802.1Q tag, IPv4
_PLAIN_IP4 = struct.Struct("!12sH" + _IPV4.format[1:])  # Ethernet, IPv4

_VLAN_8021Q, _VLAN_8021AD, _VLAN_9100 = 0x8100, 0x88A8, 0x9100
_IP4, _IP6, _PPPOE_SESSION, _ARP = 0x0800, 0x86DD, 0x8864, 0x0806
_ARP_IP4 = struct.Struct("!HHBBH6s4s6s4s")  # Ethernet/IPv4 ARP: hardware, protocol, sizes, opcode, sender, target
_DNS = 53
_STUN_COOKIE = b"\x21\x12\xa4\x42"  # RFC 5389; Dahua's inverted STUN starts 0xFE/0xFF, on the slow path already
_TLS_HANDSHAKE = 0x16
_FOLLOW_MAX = 4096  # TCP directions whose next segments go to tshark (a request's headers, a long ClientHello)
_FOLLOW_SEGMENTS = 64  # at most this many segments followed per request: an endless header block is not a name
_CACHE_MAX = 65_536

# The first four bytes of every request method tshark's HTTP dissector knows (and then some).
_HTTP_METHODS: Final = frozenset(
    m.encode()[:4]
    for m in (
        "GET ", "PUT ", "ACL ", "POST", "HEAD", "COPY", "LOCK", "MOVE", "POLL", "LINK", "BIND", "CONNECT", "DELETE",
        "OPTIONS", "PATCH", "TRACE", "PROPFIND", "PROPPATCH", "MKCOL", "MKCALENDAR", "MKACTIVITY", "MKWORKSPACE",
        "MKREDIRECTREF", "UNLOCK", "UNLINK", "UNBIND", "REBIND", "REPORT", "SEARCH", "NOTIFY", "SUBSCRIBE",
        "UNSUBSCRIBE", "M-SEARCH", "UPDATE", "VERSION-CONTROL", "CHECKIN", "CHECKOUT", "UNCHECKOUT", "LABEL",
        "MERGE", "BASELINE-CONTROL", "ORDERPATCH", "BCOPY", "BDELETE", "BMOVE", "BPROPFIND", "BPROPPATCH",
        "RPC_IN_DATA", "RPC_OUT_DATA", "SSTP_DUPLEX_POST", "PRI ",
    )
)  # fmt: skip


def _quic_version(version: int) -> bool:
    """Versions whose Initial packets tshark can decrypt (v1, v2, IETF drafts, mvfst, Google's Q0xx/T0xx)."""
    return version in (1, 0x6B3343CF) or version >> 8 == 0xFF0000 or version >> 4 == 0xFACEB00 or version >> 16 in (0x5130, 0x5430)


_Transport = tuple[str, str, int, int, int, int, int, int, str | None]  # src, dst, proto, ports, TCP flags, ICMP type and code, P2P protocol


class HeaderDecoder:
    """Decodes Ethernet pcap records; `decode` returns a Packet, DISSECT or NON_IP.

    One per stream: it remembers which TCP directions are in the middle of a request's
    headers or of a TLS handshake record, so their next segments reach tshark too."""

    def __init__(self, interface: str = "", *, nanoseconds: bool = False, byte_order: str = "<") -> None:
        self._interface = interface
        self._order = byte_order
        self._units = 1_000_000_000 if nanoseconds else 1_000_000
        self._mac_pairs: dict[bytes, tuple[str, str]] = {}  # destination + source, as a frame starts
        self._ip4: dict[int, str] = {}
        self._ip6: dict[bytes, str] = {}
        self._vlan1: list[tuple[int, ...]] = [()] + [(vid,) for vid in range(1, 4096)]
        self._follow: OrderedDict[tuple[object, ...], int] = OrderedDict()  # direction → segments left
        self.arp: list[Packet] = []  # ARP frames since the owner last took them (the device inventory's)

    def split(self, buf: bytes | bytearray, pos: int, filled: int, items: list[Packet | None]) -> tuple[int, list[tuple[int, int, int]], int]:
        """Decode the whole pcap records in buf[pos:filled]: a Packet for each one read by
        its headers, None for each one tshark must dissect. Returns where the records end,
        (index in items, start, end) of each record for tshark, and how many frames were
        not IP.

        The loop reads the common frame (Ethernet, at most one 802.1Q tag, IPv4 without
        options, not a fragment, UDP or TCP) with one struct call; `decode` reads the rest."""
        record, tagged, plain = _RECORD[self._order].unpack_from, _TAGGED_IP4.unpack_from, _PLAIN_IP4.unpack_from
        units, interface, vlan1 = self._units, self._interface, self._vlan1
        macs, ip4, mac_pair, ip4_text = self._mac_pairs, self._ip4, self._mac_pair, self._ip4_text
        ports, tcp, may_name, decode = _PORTS.unpack_from, _TCP.unpack_from, self._may_name, self.decode
        append = items.append
        dissect: list[tuple[int, int, int]] = []
        non_ip = 0
        while pos + 16 <= filled:
            sec, frac, caplen, length = record(buf, pos)
            p = pos + 16
            end = p + caplen
            if end > filled:
                break
            start, pos = pos, end
            pkt: Packet | None = None
            if buf[p + 12] == 0x81 and buf[p + 13] == 0 and p + 38 <= end:
                pair, _, tci, etype, vihl, total, frag, proto, src_n, dst_n = tagged(buf, p)
                l3, vlans = p + 18, vlan1[tci & 0x0FFF]
            elif buf[p + 12] == 8 and buf[p + 13] == 0 and p + 34 <= end:
                pair, etype, vihl, total, frag, proto, src_n, dst_n = plain(buf, p)
                l3, vlans = p + 14, ()
            else:
                etype = 0
            if etype == _IP4 and vihl == 0x45 and not frag & 0x3FFF and 20 <= total <= length - (l3 - p):
                l4, l4_end = l3 + 20, l3 + total
                ts = (sec * units + frac) / units  # exact: the float that tshark's decimal time parses to
                dst_mac, src_mac = macs.get(pair) or mac_pair(pair)
                src, dst = ip4.get(src_n) or ip4_text(src_n), ip4.get(dst_n) or ip4_text(dst_n)
                if proto == UDP and l4 + 8 <= end:
                    sport, dport = ports(buf, l4)
                    at = l4 + 8
                    # A-Z (HTTP, Dahua), 0xC0 and up (QUIC, CS2) and STUN's cookie after 0 or 1: `decode` looks closer
                    if sport != _DNS and dport != _DNS and (
                        at >= end or 1 < (first := buf[at]) < 0x41 or 0x5A < first < 0xC0 or (first < 2 and buf[at + 4 : at + 8] != _STUN_COOKIE)
                    ):
                        pkt = Packet(ts, length, src_mac, dst_mac, vlans, src, dst, UDP, sport, dport, 0, -1, -1, None, None, interface)
                elif proto == TCP and l4 + 14 <= end:
                    sport, dport, word = tcp(buf, l4)
                    at = l4 + (word >> 12) * 4
                    if at - l4 >= 20 and at <= l4_end:
                        if at < l4_end and may_name(buf, at, min(end, l4_end), l4_end - at, (src_n, dst_n, sport, dport), sport, dport):
                            dissect.append((len(items), start, end))
                            append(None)
                            continue
                        pkt = Packet(ts, length, src_mac, dst_mac, vlans, src, dst, TCP, sport, dport, word & 0x0FFF, -1, -1, None, None, interface)
                if pkt is not None:
                    append(pkt)
                    continue
            got = decode(buf, p, end, sec, frac, length)
            if got is NON_IP:
                non_ip += 1
            elif got is DISSECT:
                dissect.append((len(items), start, end))
                append(None)
            else:
                append(got)  # type: ignore[arg-type]
        return pos, dissect, non_ip

    def decode(self, buf: bytes | bytearray, p: int, end: int, sec: int, frac: int, length: int) -> Packet | _Marker:
        """The frame in buf[p:end] (captured bytes), of `length` bytes on the wire."""
        if end - p < 14:
            return DISSECT
        pair, etype = _ETH.unpack_from(buf, p)
        off = p + 14
        vlans: tuple[int, ...] = ()
        if etype == _VLAN_8021Q or etype == _VLAN_8021AD:
            vlans, off, etype = self._tags(buf, off, end, etype)
            if off < 0:
                return DISSECT
        if etype == _IP4:
            ip = self._ipv4(buf, off, end, length - (off - p))
        elif etype == _IP6:
            ip = self._ipv6(buf, off, end, length - (off - p))
        elif etype == _PPPOE_SESSION or etype == _VLAN_9100:
            return DISSECT
        else:
            if etype == _ARP and off + 28 <= end:
                self._arp(buf, off, sec, frac, length, vlans)
            return NON_IP
        if ip is None:
            return DISSECT
        src, dst, proto, sport, dport, flags, icmp_type, icmp_code, protocol = ip
        dst_mac, src_mac = self._mac_pairs.get(pair) or self._mac_pair(pair)
        ts = (sec * self._units + frac) / self._units  # exact: the float that tshark's decimal time parses to
        return Packet(ts, length, src_mac, dst_mac, vlans, src, dst, proto, sport, dport, flags, icmp_type, icmp_code, None, None, self._interface, protocol)

    def _arp(self, buf: bytes | bytearray, off: int, sec: int, frac: int, length: int, vlans: tuple[int, ...]) -> None:
        hardware, protocol, hlen, plen, _, sender, sender_ip, target, target_ip = _ARP_IP4.unpack_from(buf, off)
        if hardware == 1 and protocol == _IP4 and hlen == 6 and plen == 4:
            ts = (sec * self._units + frac) / self._units
            src, dst = socket.inet_ntoa(sender_ip), socket.inet_ntoa(target_ip)
            self.arp.append(Packet(ts, length, sender.hex(":"), target.hex(":"), vlans, src, dst, 0, interface=self._interface))

    def _mac_pair(self, raw: bytes) -> tuple[str, str]:
        if len(self._mac_pairs) >= _CACHE_MAX:
            self._mac_pairs.clear()
        pair = self._mac_pairs[raw] = (raw[:6].hex(":"), raw[6:].hex(":"))
        return pair

    def _tags(self, buf: bytes | bytearray, off: int, end: int, etype: int) -> tuple[tuple[int, ...], int, int]:
        """The VLAN IDs as tshark lists them (802.1ad S-tags, then 802.1Q tags, ID 0 dropped);
        offset -1 for a stack tshark reads some other way (a Q-tag outside an S-tag, 0x9100)."""
        if etype == _VLAN_8021Q and off + 4 <= end:  # the common case: one 802.1Q tag
            tci, inner = _TAG.unpack_from(buf, off)
            if inner != _VLAN_8021Q and inner != _VLAN_8021AD and inner != _VLAN_9100:
                return self._vlan1[tci & 0x0FFF], off + 4, inner
        stags: list[int] = []
        ctags: list[int] = []
        while etype == _VLAN_8021AD and off + 4 <= end:
            tci, etype = _TAG.unpack_from(buf, off)
            stags.append(tci & 0x0FFF)
            off += 4
        while etype == _VLAN_8021Q and off + 4 <= end:
            tci, etype = _TAG.unpack_from(buf, off)
            ctags.append(tci & 0x0FFF)
            off += 4
        if etype in (_VLAN_8021Q, _VLAN_8021AD, _VLAN_9100):
            return (), -1, etype
        return tuple(v for v in stags + ctags if v), off, etype

    def _ipv4(self, buf: bytes | bytearray, off: int, end: int, wire: int) -> _Transport | None:
        if off + 20 > end:
            return None
        vihl, total, frag, proto, src_n, dst_n = _IPV4.unpack_from(buf, off)
        if vihl != 0x45 and (vihl >> 4 != 4 or vihl & 0x0F < 5):
            return None
        ihl = (vihl & 0x0F) * 4
        if frag & 0x3FFF or total < ihl or total > wire or off + ihl > end:
            return None  # fragments, a length tshark calls bogus (or TSO's 0), options cut off
        src = self._ip4.get(src_n) or self._ip4_text(src_n)
        dst = self._ip4.get(dst_n) or self._ip4_text(dst_n)
        return self._transport(buf, off + ihl, end, off + total, proto, src, dst, src_n, dst_n)

    def _ip4_text(self, number: int) -> str:
        if len(self._ip4) >= _CACHE_MAX:
            self._ip4.clear()
        text = self._ip4[number] = socket.inet_ntoa(_U32.pack(number))
        return text

    def _ipv6(self, buf: bytes | bytearray, off: int, end: int, wire: int) -> _Transport | None:
        if off + 40 > end:
            return None
        first, plen, nxt, src_raw, dst_raw = _IPV6.unpack_from(buf, off)
        if first >> 28 != 6 or plen == 0 or 40 + plen > wire or nxt not in (TCP, UDP, ICMPV6):
            return None  # extension headers, tunnels, jumbograms, lengths past the frame
        src = self._ip6.get(src_raw) or self._ip6_text(src_raw)
        dst = self._ip6.get(dst_raw) or self._ip6_text(dst_raw)
        return self._transport(buf, off + 40, end, off + 40 + plen, nxt, src, dst, src_raw, dst_raw)

    def _ip6_text(self, raw: bytes) -> str:
        if len(self._ip6) >= _CACHE_MAX:
            self._ip6.clear()
        text = self._ip6[raw] = socket.inet_ntop(socket.AF_INET6, raw)
        return text

    def _transport(
        self, buf: bytes | bytearray, l4: int, end: int, l4_end: int, proto: int, src: str, dst: str, src_id: object, dst_id: object
    ) -> _Transport | None:
        """`end`: the captured bytes end there; `l4_end`: the IP payload does. None: to tshark."""
        if proto == UDP:
            if l4 + 8 > end:
                return None
            sport, dport = _PORTS.unpack_from(buf, l4)
            at = l4 + 8
            protocol = None
            if sport == _DNS or dport == _DNS:
                if at + 3 > end or buf[at + 2] & 0x80:
                    return None  # a DNS answer (or one too short to tell)
            elif at < end:
                first = buf[at]
                if first & 0xC0 == 0xC0 and (at + 5 > end or _quic_version(_U32.unpack_from(buf, at + 1)[0])):
                    return None  # a QUIC long header: an Initial names the server
                if 0x41 <= first <= 0x5A and bytes(buf[at : at + 4]) in _HTTP_METHODS:
                    return None  # SSDP and other HTTP over UDP: tshark reads a Host
                if first in CANDIDATE_FIRST_BYTES:
                    protocol = identify(buf, at, end, ((buf[l4 + 4] << 8) | buf[l4 + 5]) - 8)
            return (src, dst, UDP, sport, dport, 0, -1, -1, protocol)
        if proto == TCP:
            if l4 + 14 > end:
                return None
            sport, dport, word = _TCP.unpack_from(buf, l4)
            doff = (word >> 12) * 4
            at = l4 + doff
            if doff < 20 or at > l4_end:
                return None
            if at < l4_end and self._may_name(buf, at, min(end, l4_end), l4_end - at, (src_id, dst_id, sport, dport), sport, dport):
                return None
            return (src, dst, TCP, sport, dport, word & 0x0FFF, -1, -1, None)
        if proto == ICMP or proto == ICMPV6:
            if l4 + 2 > end:
                return None
            return (src, dst, proto, 0, 0, 0, buf[l4], buf[l4 + 1], None)
        return None

    def _may_name(self, buf: bytes | bytearray, at: int, cap_end: int, size: int, way: tuple[object, ...], sport: int, dport: int) -> bool:
        """Whether this TCP payload (`size` bytes, captured up to cap_end) may carry or
        continue a name: DNS over TCP, a TLS handshake record, an HTTP request's headers."""
        follow = self._follow
        if follow:
            left = follow.pop(way, None)
            if left is not None:
                if left < 0:  # segments of an HTTP header block
                    if left < -1 and not _headers_end(buf, at, cap_end, size):
                        self._remember(way, left + 1)
                elif left < size:  # the TLS record ends in this segment: others may start
                    self._remember(way, _tls_left(buf, at + left, cap_end, at + size))
                elif left > size:
                    self._remember(way, left - size)
                return True
        if sport == _DNS or dport == _DNS:
            return True
        first = buf[at]
        if first == _TLS_HANDSHAKE:
            if at + 1 < cap_end and buf[at + 1] != 3:
                return False
            self._remember(way, _tls_left(buf, at, cap_end, at + size))
            return True
        if 0x41 <= first <= 0x5A and bytes(buf[at : at + 4]) in _HTTP_METHODS:
            if not _headers_end(buf, at, cap_end, size):
                self._remember(way, -_FOLLOW_SEGMENTS)
            return True
        return False

    def _remember(self, way: tuple[object, ...], left: int) -> None:
        """Follow this direction: `left` > 0 bytes of a TLS record, < 0 segments of HTTP headers."""
        if left:
            follow = self._follow
            follow[way] = left
            if len(follow) > _FOLLOW_MAX:
                follow.popitem(last=False)


def _headers_end(buf: bytes | bytearray, at: int, cap_end: int, size: int) -> bool:
    """Whether this segment ends an HTTP header block. One cut by the snap length cannot
    be told: tshark cannot reassemble it either, so nothing more is followed."""
    return cap_end - at < size or buf.find(b"\r\n\r\n", at, cap_end) >= 0 or buf.find(b"\n\n", at, cap_end) >= 0


def _tls_left(buf: bytes | bytearray, pos: int, cap_end: int, stop: int) -> int:
    """Bytes of the last TLS record starting in buf[pos:stop] that the next segments carry;
    -1 where a record header is cut by the segment's end (follow one segment more), 0 where
    the records end with the segment or it was cut by the snap length."""
    if cap_end < stop:
        return 0
    while pos + 5 <= stop:
        pos += 5 + ((buf[pos + 3] << 8) | buf[pos + 4])
    if pos > stop:
        return pos - stop
    return -1 if pos < stop else 0
