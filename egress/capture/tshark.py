"""The tshark fast path: reduced dissection, custom columns, one line per packet.

pyshark's default path asks tshark for the whole protocol tree as XML and builds a
Python object per field (~500 packets/s). Here tshark dissects only the protocols
egress reads and prints only the fields it needs as tab-separated custom columns,
which is about twice as fast as `-T fields` (see ../shared/PERF-NOTES.md) and leaves
Python with one `str.split` per packet. tshark is the one on PATH (else where pyshark
finds one), the binary pyshark runs too, so the test that holds this path to pyshark's
full dissection (tests/test_capture.py) runs the same binary. Its lines become packets in
`egress.capture.lines`; this module is the command alone, light enough for the `egress`
command to start one before anything else loads.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from egress.capture.process import reap, spawn
from egress.errors import DependencyMissing

__all__ = ["COLUMNS", "PROTOCOLS", "tshark_path", "tshark_argv", "start_early", "prime_early", "start_tshark"]

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

# Everything else (~2,900 dissectors) stays off: it costs time and memory and egress reads nothing from it.
PROTOCOLS: tuple[str, ...] = (
    "frame", "eth", "ethertype", "vlan", "ieee8021ad", "sll", "null", "raw", "pppoes", "ppp",
    "ip", "ipv6", "tcp", "udp", "icmp", "icmpv6", "dns", "tls", "http", "quic",
)  # fmt: skip


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


_early: list[tuple[subprocess.Popen[bytes], bytes | None]] = []  # the waiting tshark, and the pcap header given it


def start_early() -> None:
    """Start one stream-reading tshark now, for the first capture that asks for one: its
    start-up (~0.2 s of loading dissectors) then overlaps egress's own instead of following
    it. Without tshark, nothing: the capture says so when it starts. One waits at most."""
    if _early:
        return
    try:
        _early.append((spawn(tshark_argv(tshark_path()), tie_to_thread=False), None))
    except (DependencyMissing, OSError):
        return


def prime_early(head: bytes) -> None:
    """Give the waiting early tshark the pcap header its stream will most likely start with.
    Once tshark has read a header it spends another ~30-50 ms setting up before it reads
    a packet; given the header now, that too overlaps egress's start. A stream that starts
    otherwise gets a fresh tshark (`start_tshark`)."""
    if not _early or _early[0][1] is not None:
        return
    proc = _early[0][0]
    assert proc.stdin is not None
    try:
        proc.stdin.write(head)
        proc.stdin.flush()
    except OSError:  # it died: start_tshark finds out, and the capture says why
        return
    _early[0] = (proc, head)


def start_tshark(head: bytes) -> subprocess.Popen[bytes]:
    """A tshark reading pcap on its stdin that has been given `head`, its stream's pcap
    header: the early one if it waits and was given no other header. It ends with its
    stdin, so it never outlives egress."""
    if _early:
        proc, primed = _early.pop()
        if primed == head:
            return proc
        if primed is None:
            return _given(proc, head)
        reap(proc)  # primed for another stream: of no use to this one
    return _given(spawn(tshark_argv(tshark_path()), tie_to_thread=False), head)


def _given(proc: subprocess.Popen[bytes], head: bytes) -> subprocess.Popen[bytes]:
    assert proc.stdin is not None
    try:
        proc.stdin.write(head)
    except BrokenPipeError:
        pass  # it died at once: the stream reaps it, and its stderr says why
    return proc
