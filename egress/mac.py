"""MAC addresses: the one parser, the ECS spelling, and the bits that say who assigned one.

People and tools write one address many ways: tshark ``44:19:b6:12:34:56``, Windows
``44-19-B6-12-34-56``, Cisco ``4419.b612.3456``, inventories ``4419B6123456``, and some
BSD tools drop leading zeros (``0:40:8c:1:2:3``). :func:`parse` reads them all, in any
case, to one 48-bit integer; :func:`ecs` writes that integer as records carry it (SPEC:
Records, "upper case, hyphen-separated"). The policy's ``macs:`` and ``devices:`` entries
and the flow table's device MACs both go through here, so they compare equal exactly when
they name the same address.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["parse", "ecs", "normalise", "record_form", "is_locally_administered"]

_SEPARATED = re.compile(r"[0-9A-Fa-f]{1,2}([:-])[0-9A-Fa-f]{1,2}(?:\1[0-9A-Fa-f]{1,2}){4}")  # one separator throughout
_BARE_OR_DOTTED = re.compile(r"[0-9A-Fa-f]{12}|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}")
_CANONICAL_LENGTH = 17  # six two-digit octets and five separators: what tshark prints
_LOCAL_BIT = 0x02 << 40  # the U/L bit of the first octet, as a bit of the 48-bit integer
_RECORD_FORMS = 65_536  # memoised flow-table spellings: devices repeat, garbage is bounded


def parse(text: str) -> int:
    """A MAC address as a 48-bit integer; ``ValueError`` naming the accepted forms otherwise.

    Accepts six octets separated by ``:`` or ``-`` (the same one throughout; an octet may
    be one digit), twelve bare hex digits, and Cisco's three dotted groups of four, in any
    case, with surrounding whitespace.
    """
    value = text.strip()
    separated = _SEPARATED.fullmatch(value)
    if separated is not None:
        if len(value) == _CANONICAL_LENGTH:  # the common case: no octet lost its leading zero
            return int(value.replace(separated[1], ""), 16)
        return int.from_bytes(bytes(int(octet, 16) for octet in value.split(separated[1])), "big")
    if _BARE_OR_DOTTED.fullmatch(value):
        return int(value.replace(".", ""), 16)
    raise ValueError(f"MAC address {text!r} is not like 44:19:b6:12:34:56, 44-19-B6-12-34-56, 4419.b612.3456 or 4419b6123456")


def ecs(value: int) -> str:
    """The ECS spelling of a 48-bit address: ``44-19-B6-12-34-56``."""
    if not 0 <= value < 1 << 48:
        raise ValueError(f"{value:#x} is not a 48-bit MAC address")
    digits = f"{value:012X}"
    return "-".join(digits[i : i + 2] for i in range(0, 12, 2))


def normalise(text: str) -> str:
    """Any accepted spelling → the ECS one; ``ValueError`` for text that is not a MAC."""
    return ecs(parse(text))


@lru_cache(maxsize=_RECORD_FORMS)
def record_form(text: str | None) -> str | None:
    """A MAC as capture reported it, spelled for a record: the ECS form (None for none).

    Never raises: text that is no MAC (a corrupt frame's) keeps its characters, upper case
    with ``:`` as ``-``, so that the device enricher finds it unreadable, counts it and
    skips it, as for any bad MAC.
    """
    if not text:
        return None
    try:
        return normalise(text)
    except ValueError:
        return text.upper().replace(":", "-")


def is_locally_administered(value: int) -> bool:
    """True when the U/L bit (0x02 of the first octet) is set.

    Such addresses (randomised Wi-Fi MACs, virtual interfaces, some cameras' bridges) are
    not assigned by the IEEE, so their first three octets name nobody.
    """
    return bool(value & _LOCAL_BIT)
