"""The tshark fast path: reduced dissection, custom columns, one line per packet.

pyshark's default path asks tshark for the whole protocol tree as XML and builds a
Python object per field (~500 packets/s). Here tshark dissects only the protocols
egress reads and prints only the fields it needs as tab-separated custom columns,
which is about twice as fast as `-T fields` (see ../shared/PERF-NOTES.md) and leaves
Python with one `str.split` per packet. tshark is the one on PATH (else where pyshark
finds one), the binary pyshark runs too, so the test that holds this path to pyshark's
full dissection (tests/test_capture.py) runs the same binary.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from egress.capture.payload import identify
from egress.capture.process import spawn
from egress.errors import DependencyMissing
from egress.model import ICMP, ICMPV6, TCP, UDP, DnsAnswer, Packet

__all__ = ["COLUMNS", "PROTOCOLS", "tshark_path", "tshark_argv", "start_early", "start_tshark", "parse_line", "LineStats"]

# (title, field, occurrence): occurrence 1 = the outermost, 0 = every occurrence joined by ",".
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("ts", "frame.time_epoch", 1),
    ("len", "frame.len", 1),
    ("esrc", "eth.src", 1),
    ("edst", "eth.dst", 1),
    ("stag", "ieee8021ad.id", 0),
    ("vlan", "vlan.id", 0),
    ("s4", "ip.src", 1),
    ("d4", "ip.dst", 1),
    ("p4", "ip.proto", 1),
    ("s6", "ipv6.src", 1),
    ("d6", "ipv6.dst", 1),
    ("p6", "ipv6.nxt", -1),
    ("tsp", "tcp.srcport", 1),
    ("tdp", "tcp.dstport", 1),
    ("tfl", "tcp.flags", 1),
    ("usp", "udp.srcport", 1),
    ("udp", "udp.dstport", 1),
    ("it", "icmp.type", 1),
    ("ic", "icmp.code", 1),
    ("i6t", "icmpv6.type", 1),
    ("i6c", "icmpv6.code", 1),
    ("dr", "dns.flags.response", 1),
    ("dq", "dns.qry.name", 1),
    ("dc", "dns.cname", 0),
    ("da", "dns.a", 0),
    ("d6a", "dns.aaaa", 0),
    ("sni", "tls.handshake.extensions_server_name", 1),
    ("host", "http.host", 1),
    ("upl", "udp.payload", 1),  # tshark prints the first 36 bytes: enough for `payload.identify`
    ("ulen", "udp.length", 1),
)
_NCOLS = len(COLUMNS)

# Everything else (~2,900 dissectors) stays off: it costs time and memory and egress reads nothing from it.
PROTOCOLS: tuple[str, ...] = (
    "frame", "eth", "ethertype", "vlan", "ieee8021ad", "sll", "null", "raw", "pppoes", "ppp",
    "ip", "ipv6", "tcp", "udp", "icmp", "icmpv6", "dns", "tls", "http", "quic",
)  # fmt: skip

_ICMP_PROTOS = {ICMP, ICMPV6}
_DNS = 53


def tshark_path() -> str:
    """tshark on PATH, else where pyshark finds one (its config, its usual places); exit
    code 3 if absent. PATH first: importing pyshark (and lxml) costs every start ~50 ms."""
    found = shutil.which("tshark")
    if found:
        return found
    try:
        from pyshark.tshark.tshark import get_process_path

        path = str(get_process_path())
        if Path(path).exists():
            return path
    except Exception:  # pyshark raises its own TSharkNotFoundException
        pass
    raise DependencyMissing("tshark not found: install Debian's 'tshark' package (apt-get install tshark)")


def tshark_argv(tshark: str, source: str = "-") -> list[str]:
    """The tshark command that prints one tab-separated line of COLUMNS per packet."""
    fmt = ",".join(f'"{title}","%Cus:{fld}:{occ}:U"' for title, fld, occ in COLUMNS)
    argv = [tshark, "-n", "-l", "-r", source, "-T", "tabs", "-o", f"gui.column.format:{fmt}"]
    argv += ["-o", "tcp.analyze_sequence_numbers:FALSE", "-o", "tcp.calculate_timestamps:FALSE"]
    # A request's Host is reported with its headers, not held until its body has passed:
    # the header segments are all that `capture.stream` sends tshark of an upload.
    argv += ["-o", "http.desegment_body:FALSE"]
    argv += ["--disable-protocol", "ALL"]
    for proto in PROTOCOLS:
        argv += ["--enable-protocol", proto]
    return argv


_early: list[subprocess.Popen[bytes]] = []


def start_early() -> None:
    """Start one stream-reading tshark now, for the first capture that asks for one: its
    start-up (~0.2 s of loading dissectors) then overlaps egress's own instead of following
    it. Without tshark, nothing: the capture says so when it starts. One waits at most."""
    if _early:
        return
    try:
        _early.append(spawn(tshark_argv(tshark_path()), tie_to_thread=False))
    except (DependencyMissing, OSError):
        return


def start_tshark() -> subprocess.Popen[bytes]:
    """A tshark reading pcap on its stdin (the early one if it is waiting). It ends with its
    stdin, so it never outlives egress."""
    if _early:
        return _early.pop()
    return spawn(tshark_argv(tshark_path()), tie_to_thread=False)


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

