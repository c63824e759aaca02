"""tshark's lines → Packets: one tab-separated line of `tshark.COLUMNS` per packet."""

from __future__ import annotations

from dataclasses import dataclass

from egress.capture.payload import identify
from egress.capture.tshark import COLUMNS
from egress.model import ICMP, ICMPV6, TCP, UDP, DnsAnswer, Packet

__all__ = ["parse_line", "LineStats"]

_NCOLS = len(COLUMNS)
_ICMP_PROTOS = {ICMP, ICMPV6}
_DNS = 53


@dataclass(slots=True)
class LineStats:
    """What the parser saw: packets it made, lines it skipped as non-IP or unreadable."""

    packets: int = 0
    non_ip: int = 0
    bad: int = 0


def _int(text: str, default: int = 0) -> int:
    if not text:
        return default
    head = text.split(",", 1)[0]
    try:
        return int(head, 0) if head.startswith("0x") else int(head)
    except ValueError:
        return default


def _vlans(stag: str, ctag: str) -> tuple[int, ...]:
    ids: list[int] = []
    for text in (stag, ctag):
        if text:
            for part in text.split(","):
                if part.isdigit() and part != "0":
                    ids.append(int(part))
    return tuple(ids)


def _dns(cols: list[str]) -> DnsAnswer | None:
    if cols[21] not in ("1", "True") or not (cols[24] or cols[25]):
        return None
    names = [cols[22]] if cols[22] else []
    if cols[23]:
        names += cols[23].split(",")
    addrs = (cols[24].split(",") if cols[24] else []) + (cols[25].split(",") if cols[25] else [])
    if not names:
        return None
    return DnsAnswer(tuple(n.lower().rstrip(".") for n in names), tuple(addrs))


def _protocol(payload_hex: str, udp_length: str) -> str | None:
    """What the header reader's `decode` would name from the same datagram."""
    try:
        head = bytes.fromhex(payload_hex[:16])
    except ValueError:
        return None
    return identify(head, 0, len(head), _int(udp_length) - 8)


def parse_line(line: str, stats: LineStats, interface: str = "") -> Packet | None:
    """One tshark line → a Packet, or None for a frame egress has no use for (counted)."""
    cols = line.rstrip("\n").split("\t")
    if len(cols) != _NCOLS:
        stats.bad += 1
        return None
    if cols[6]:
        src, dst, proto = cols[6], cols[7], _int(cols[8], -1)
    elif cols[9]:
        src, dst, proto = cols[9], cols[10], _int(cols[11].rsplit(",", 1)[-1], -1)
    else:
        stats.non_ip += 1
        return None
    try:
        ts = float(cols[0])
        length = int(cols[1])
    except ValueError:
        stats.bad += 1
        return None
    pkt = Packet(ts, length, cols[2] or None, cols[3] or None, _vlans(cols[4], cols[5]), src, dst, proto, interface=interface)
    if cols[17] or cols[19]:
        pkt.proto = ICMP if cols[17] else ICMPV6
        pkt.icmp_type = _int(cols[17] or cols[19], -1)
        pkt.icmp_code = _int(cols[18] or cols[20], -1)
    elif cols[12]:
        pkt.proto = TCP
        pkt.sport, pkt.dport, pkt.tcp_flags = _int(cols[12]), _int(cols[13]), _int(cols[14])
    elif cols[15]:
        pkt.proto = UDP
        pkt.sport, pkt.dport = _int(cols[15]), _int(cols[16])
        if cols[28] and pkt.sport != _DNS and pkt.dport != _DNS:
            pkt.protocol = _protocol(cols[28], cols[29])
    if pkt.proto not in _ICMP_PROTOS:
        if cols[21]:
            pkt.dns = _dns(cols)
        name = cols[26] or cols[27]
        if name:
            pkt.server_name = name.split(",", 1)[0].lower().rstrip(".")
    stats.packets += 1
    return pkt

