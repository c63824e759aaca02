"""The first bytes of capture files: pcap's magic numbers and pcapng's section header.

One table for every reader in egress: the file source checks what it was given and reads
a pcap header's link type, the tshark rotation splits a pcap stream into records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = ["PcapMagic", "PCAP_MAGICS", "PCAPNG_MAGIC", "PCAPNG_BYTE_ORDERS", "PCAP_HEADER_BYTES", "PCAPNG_HEADER_BYTES", "pcap_magic"]


@dataclass(frozen=True, slots=True)
class PcapMagic:
    """What a pcap file's first four bytes say about the rest of it."""

    byte_order: str  # "<" or ">", as struct writes it
    nanoseconds: bool  # timestamps' second field counts ns, not µs
    modified: bool  # Kuznetzov's patched libpcap: 24-byte record headers, not 16


PCAP_MAGICS: Final[Mapping[bytes, PcapMagic]] = MappingProxyType({
    b"\xd4\xc3\xb2\xa1": PcapMagic("<", nanoseconds=False, modified=False),
    b"\xa1\xb2\xc3\xd4": PcapMagic(">", nanoseconds=False, modified=False),
    b"\x4d\x3c\xb2\xa1": PcapMagic("<", nanoseconds=True, modified=False),
    b"\xa1\xb2\x3c\x4d": PcapMagic(">", nanoseconds=True, modified=False),
    b"\x34\xcd\xb2\xa1": PcapMagic("<", nanoseconds=False, modified=True),
    b"\xa1\xb2\xcd\x34": PcapMagic(">", nanoseconds=False, modified=True),
})  # fmt: skip
"""A pcap file's magic (its first four bytes, as they stand in the file) → its format."""

PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
"""The block type of pcapng's section header block, the first four bytes of every pcapng file."""

PCAPNG_BYTE_ORDERS: Final[Mapping[bytes, str]] = MappingProxyType({b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"})
"""The section header's byte-order magic (bytes 8-12) → the byte order of its section."""

PCAP_HEADER_BYTES: Final = 24  # the pcap file header
PCAPNG_HEADER_BYTES: Final = 28  # the smallest section header block


def pcap_magic(head: bytes) -> PcapMagic | None:
    """The pcap format that ``head`` starts with, or None (pcapng, another format, too short)."""
    return PCAP_MAGICS.get(bytes(head[:4]))
