"""Camera peer-to-peer and NAT-traversal protocols, told from a UDP payload's first bytes.

Peer-to-peer camera SDKs hole-punch to addresses and ports that no DNS answer names,
so a flow's names cannot reveal them; their first bytes can. Each test reads at most
the first 8 bytes and the datagram's length (the UDP header's), so a packet cut by the
snap length is still told, and tshark's line (its `udp.payload` column keeps the first
36 bytes) gives the same answer as the header reader. Each format, from its public
description:

- `cs2-p2p`: CS2 Network "PPPP" (iLnkP2P and its relabels, e.g. YI and Xiaomi cameras):
  magic 0xF1, a message type, a big-endian payload length, so 4 + length is the
  datagram's size. Message types as Paul Marrapese's dissector lists them
  (github.com/pmarrapese/iot, `p2p/dissector/pppp.fdesc`), and 0xE5 and 0xF9, which
  the YI and xiaobai cameras of ../shared/pcaps-real send with lengths that add up.
- `dahua-p2p`: Dahua's P2P (gDMSS, DMSS, Imou, Easy4IP), as github.com/khoanguyen-3fc/dh-p2p
  describes it (`dh-p2p.lua`, `ptcp.lua`): HTTP requests over UDP with a `DH` prefix
  (`DHGET /…`, `DHPOST /…`); STUN with every byte inverted (255 - b, so the magic cookie
  reads DE ED 5B BD; libprotoident's `lpi_dahua.cc` matches its 44-byte form, `ff fe ff e7`);
  and PTCP ("phony TCP"), a 24-byte header after the magic `PTCP`.
- `stun`: STUN (RFC 5389 §6): the two top bits zero, a length that is a multiple of 4
  and 20 bytes short of the datagram, then the magic cookie 0x2112A442.

ThroughTek Kalay is not here: its datagrams are scrambled and no public description
of their first bytes could be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

__all__ = ["PROTOCOLS", "identify", "CANDIDATE_FIRST_BYTES"]

PROTOCOLS: Final = ("cs2-p2p", "dahua-p2p", "stun")

_CS2_TYPES: Final = frozenset(
    (0x00, 0x01, 0x02, 0x03, 0x08, 0x09, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x18, 0x19, 0x20, 0x21, 0x30, 0x31, 0x32,
     0x40, 0x41, 0x42, 0x43, 0x60, 0x61, 0x62, 0x63, 0x67, 0x68, 0x69, 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x78,
     0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x87, 0x90, 0x91, 0x92, 0x94, 0xA0, 0xA1, 0xA2, 0xD0, 0xD1, 0xD8, 0xE0, 0xE1,
     0xF0, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
     0xE5, 0xF9)  # observed, not in pppp.fdesc
)  # fmt: skip
_COOKIE: Final = b"\x21\x12\xa4\x42"
_INVERTED_COOKIE: Final = bytes(255 - b for b in _COOKIE)

_Test = Callable[[bytes | bytearray, int, int, int], str | None]


def _cs2(buf: bytes | bytearray, at: int, end: int, size: int) -> str | None:
    if at + 4 <= end and buf[at + 1] in _CS2_TYPES and 4 + ((buf[at + 2] << 8) | buf[at + 3]) == size:
        return "cs2-p2p"
    return None


def _stun(buf: bytes | bytearray, at: int, end: int, size: int) -> str | None:
    if at + 8 <= end and buf[at + 4 : at + 8] == _COOKIE:
        length = (buf[at + 2] << 8) | buf[at + 3]
        if not length & 3 and 20 + length == size:
            return "stun"
    return None


def _inverted_stun(buf: bytes | bytearray, at: int, end: int, size: int) -> str | None:
    if at + 8 <= end and buf[at + 4 : at + 8] == _INVERTED_COOKIE:
        length = 0xFFFF - ((buf[at + 2] << 8) | buf[at + 3])
        if not length & 3 and 20 + length == size:
            return "dahua-p2p"
    return None


def _dahua_http(buf: bytes | bytearray, at: int, end: int, size: int) -> str | None:
    head = bytes(buf[at : min(end, at + 8)])
    return "dahua-p2p" if head.startswith((b"DHGET /", b"DHPOST /")) else None


def _ptcp(buf: bytes | bytearray, at: int, end: int, size: int) -> str | None:
    return "dahua-p2p" if size >= 24 and buf[at : at + 4] == b"PTCP" else None


_BY_FIRST: Final[dict[int, _Test]] = {0x00: _stun, 0x01: _stun, 0xF1: _cs2, 0xFE: _inverted_stun, 0xFF: _inverted_stun, 0x44: _dahua_http, 0x50: _ptcp}
#: the header reader's fast path leaves datagrams starting with these to `identify`
CANDIDATE_FIRST_BYTES: Final = frozenset(_BY_FIRST)


def identify(buf: bytes | bytearray, at: int, end: int, size: int) -> str | None:
    """The protocol of the UDP payload at buf[at:end] (captured bytes) of `size` bytes
    (the UDP header's length less 8), or None."""
    if at >= end:
        return None
    test = _BY_FIRST.get(buf[at])
    return None if test is None else test(buf, at, end, size)
