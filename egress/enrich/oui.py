"""IEEE MAC-address registry lookups (MA-L /24, MA-M /28, MA-S /36), longest prefix first.

The registry is read from Wireshark's ``manuf`` file, the same data tshark uses for
``eth.src_oui_resolved``, so egress names a device's maker as Wireshark does. Debian
ships it in ``libwireshark-data`` as ``/usr/share/wireshark/manuf``: one assignment a line,
``PREFIX<TAB>short name[<TAB>long name]``, where ``PREFIX`` is three octets (an MA-L /24) or
six octets with a mask (``40:2C:76:10:00:00/28``). Small blocks are carved out of /24s owned
by the IEEE itself or by unrelated companies, so a lookup must try the longest mask first:
``40:2C:76:1x:xx:xx`` is "Shanghai Dahua Scale Factory", while the rest of ``40:2C:76`` is
not.

Lookups run once per flow, so the table is a handful of ``int``-keyed dicts (one per mask
length) and results are memoised per MAC string; the MAC itself is read by
:func:`egress.mac.parse`, every spelling it accepts. Nothing is read at import time. The
parsed tables are kept in the user's cache directory, keyed by the file's path, size and
modification time, so a start reads them back instead of parsing the file again.
"""

from __future__ import annotations

import functools
import hashlib
import marshal
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from egress.mac import is_locally_administered, parse

__all__ = [
    "DEFAULT_MANUF_PATH",
    "ManufNotFoundError",
    "OuiRegistry",
    "default_registry",
]

DEFAULT_MANUF_PATH = Path("/usr/share/wireshark/manuf")

_CACHE_VERSION = 1  # of the parsed tables' layout in the cache file; bump when _parse changes
_CACHE_LIMIT = 65_536  # memoised MAC strings; cleared wholesale when full (cheap, bounded)

_MA_L = re.compile(r"[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}")
_BLOCK = re.compile(r"((?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})/([0-9]{1,2})")


class ManufNotFoundError(FileNotFoundError):
    """The registry file is missing; the message names the path and how to get it."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            2,  # ENOENT
            f"OUI registry not found: {path} (install Debian's libwireshark-data, "
            "or point the setting at a Wireshark-format 'manuf' file)",
            str(path),
        )


def _parse_prefix(text: str) -> tuple[int, int] | None:
    """``"40:2C:76:10:00:00/28"`` → (prefix value, mask bits); None if malformed.

    Octets may be separated by ``:``, ``-`` or ``.``; without ``/mask`` the mask is the
    number of octets written times eight (``00:40:8C`` is a /24).
    """
    addr, _, mask_text = text.partition("/")
    octets = re.split(r"[:.-]", addr)
    if not 1 <= len(octets) <= 6 or not all(_is_octet(o) for o in octets):
        return None
    value = int.from_bytes(bytes(int(o, 16) for o in octets), "big")
    written_bits = 8 * len(octets)
    if mask_text:
        if not mask_text.isdigit():
            return None
        mask = int(mask_text)
        if not 1 <= mask <= written_bits:
            return None
    else:
        mask = written_bits
    return value >> (written_bits - mask), mask


def _is_octet(text: str) -> bool:
    return 1 <= len(text) <= 2 and all(c in "0123456789abcdefABCDEF" for c in text)


@dataclass(slots=True)
class OuiRegistry:
    """Organisation names by MAC prefix, with longest-prefix lookup.

    Build one with :meth:`load` (or directly from ``tables`` in tests) and share it: it is
    read-only apart from its lookup memo.
    """

    tables: dict[int, dict[int, str]]
    """Mask length (bits) → {prefix value (the top ``mask`` bits of the MAC) → organisation}."""

    source: Path | None = None
    skipped_lines: int = 0
    """Non-comment lines that could not be parsed (counted, not fatal)."""

    _order: tuple[tuple[int, dict[int, str]], ...] = field(init=False, repr=False, compare=False)
    _cache: dict[str, str | None] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        # (shift, table) pairs, longest mask first: /36 before /28 before /24.
        self._order = tuple(
            (48 - mask, self.tables[mask]) for mask in sorted(self.tables, reverse=True)
        )

    @classmethod
    def load(cls, path: Path | None = None) -> OuiRegistry:
        """Read a Wireshark ``manuf`` file (default :data:`DEFAULT_MANUF_PATH`).

        Where a line has no long name the short name stands in, since it is all the file
        says. A prefix listed twice keeps its first name. Raises
        :class:`ManufNotFoundError` if the file does not exist.
        """
        source = DEFAULT_MANUF_PATH if path is None else Path(path)
        try:
            stat = source.stat()
            cached = _read_cache(source, stat)
            if cached is not None:
                return cls(tables=cached[0], source=source, skipped_lines=cached[1])
            text = source.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise ManufNotFoundError(source) from None
        tables, skipped = cls._parse(text)
        _write_cache(source, stat, tables, skipped)
        return cls(tables=tables, source=source, skipped_lines=skipped)

    @staticmethod
    def _parse(text: str) -> tuple[dict[int, dict[int, str]], int]:
        ma_l: dict[int, str] = {}
        tables: dict[int, dict[int, str]] = {24: ma_l}
        skipped = 0
        for raw in text.splitlines():
            # As in Wireshark's own parser, '#' starts a comment anywhere on a line
            # (99 entries carry notes such as "# Token-ring adapters" after the name).
            line = raw.partition("#")[0].strip()
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) == 3:
                # Fast paths for the shapes Wireshark writes: 36k "XX:XX:XX" (MA-L) and
                # 16k "XX:XX:XX:XX:XX:XX/NN" (MA-M, MA-S) lines, each with both names.
                name = fields[2].strip() or fields[1].strip()
                if name and _MA_L.fullmatch(fields[0]):
                    ma_l.setdefault(int(fields[0].replace(":", ""), 16), name)
                    continue
                block = _BLOCK.fullmatch(fields[0])
                if name and block and 1 <= (mask := int(block[2])) <= 48:
                    value = parse(block[1]) >> (48 - mask)
                    tables.setdefault(mask, {}).setdefault(value, name)
                    continue
            if len(fields) == 1:  # hand-edited files may use spaces
                fields = line.split(None, 2)
            parsed = _parse_prefix(fields[0].strip())
            org = _name_of(fields[1:])
            if parsed is None or org is None:
                skipped += 1
                continue
            value, mask = parsed
            tables.setdefault(mask, {}).setdefault(value, org)
        return {mask: table for mask, table in tables.items() if table}, skipped

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def organizations(self) -> frozenset[str]:
        """Every organisation name the registry holds."""
        return frozenset(name for table in self.tables.values() for name in table.values())

    def lookup(self, mac: str) -> str | None:
        """The organisation owning ``mac``'s longest registered prefix, or None.

        None for locally administered MACs (their prefix is not an assignment) and for
        prefixes nobody registered. Raises ``ValueError`` for text that is not a MAC.
        """
        try:
            return self._cache[mac]
        except KeyError:
            pass
        value = parse(mac)
        name = None if is_locally_administered(value) else self._find(value)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[mac] = name
        return name

    def _find(self, value: int) -> str | None:
        for shift, table in self._order:
            name = table.get(value >> shift)
            if name is not None:
                return name
        return None


def _cache_path(source: Path) -> Path:
    """Where the parsed tables of `source` are kept: the user's cache directory
    ($XDG_CACHE_HOME, else ~/.cache; a service's CacheDirectory= via $CACHE_DIRECTORY)."""
    base = os.environ.get("CACHE_DIRECTORY") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return Path(base) / "egress" / f"manuf-{digest}.marshal"


def _read_cache(source: Path, stat: os.stat_result) -> tuple[dict[int, dict[int, str]], int] | None:
    """The tables parsed from this very file (same size and modification time), or None.
    Parsing the 52,000 lines costs every start ~70 ms; reading them back ~5 ms."""
    try:
        size, mtime, version, tables, skipped = marshal.loads(_cache_path(source).read_bytes())
    except (OSError, EOFError, ValueError, TypeError, RuntimeError):
        return None
    if (size, mtime, version) != (stat.st_size, stat.st_mtime_ns, _CACHE_VERSION) or not isinstance(tables, dict):
        return None
    return tables, skipped


def _write_cache(source: Path, stat: os.stat_result, tables: dict[int, dict[int, str]], skipped: int) -> None:
    """Keep the parsed tables for the next start, replaced atomically; a cache that cannot
    be written (read-only home, a sandboxed service) only means parsing again next time."""
    path = _cache_path(source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manuf-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(marshal.dumps((stat.st_size, stat.st_mtime_ns, _CACHE_VERSION, tables, skipped)))
        os.replace(tmp, path)
    except OSError:
        return


def _name_of(fields: list[str]) -> str | None:
    """The long name if present, else the short one (all some lines give)."""
    parts = [p for p in (f.strip() for f in fields) if p]
    if not parts:
        return None
    return " ".join(parts[1:]) or parts[0]


@functools.cache
def default_registry() -> OuiRegistry:
    """The host's registry (:data:`DEFAULT_MANUF_PATH`), parsed once per process (~0.3 s):
    the policy's vendor check and every enricher share it."""
    return OuiRegistry.load()
