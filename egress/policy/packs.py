"""Destination-set packs: named destination sets that a policy includes and its rules use.

A policy's top-level `include: [camera-clouds.yaml]` reads each pack file (relative to
the file that includes it); a rule's `destinations: [set:hik-connect]` then stands for
every entry of that set. A pack is versioned and may include other packs:

    version: "2026.12.1"
    include: [more-sets.yaml]          # optional
    sets:
      hik-connect: ["*.hik-connect.com", "*.hik-proconnect.com"]

As strict as the policy: a missing pack, an include cycle, a set defined twice, a bad
entry or a bad set name is refused at its own file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

from egress.errors import UsageError
from egress.policy.destinations import Destination, parse_destination
from egress.yamlfile import ItemError, LocatedYaml, load_located, validate

__all__ = ["Sets", "Included", "load_sets"]

_SET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class _Pack(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    include: tuple[str, ...] = ()
    sets: dict[str, tuple[Destination, ...]]

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: object) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
            raise ValueError("a pack's version is one value, like \"2026.12.1\"")
        return str(value).strip()

    @field_validator("sets", mode="before")
    @classmethod
    def _sets(cls, value: object) -> dict[str, tuple[Destination, ...]]:
        if not isinstance(value, dict) or not value:
            raise ValueError("expected a mapping of set names to lists of destinations")
        out: dict[str, tuple[Destination, ...]] = {}
        for name, entries in value.items():
            if not isinstance(name, str) or not _SET_NAME.match(name):
                raise ItemError((name,), f"set name {name!r} is not lower-case letters, digits and hyphens")
            if not isinstance(entries, list) or not entries:
                raise ItemError((name,), f"set {name} must be a non-empty list of destinations")
            parsed = []
            for i, entry in enumerate(entries):
                try:
                    parsed.append(parse_destination(str(entry)))
                except ValueError as exc:
                    raise ItemError((name, i), str(exc)) from None
            out[name] = tuple(parsed)
        return out


@dataclass(frozen=True, slots=True)
class Included:
    """One pack file read for a policy: what `egress check` reports."""

    path: Path
    version: str
    sets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Sets:
    """Every set the policy's includes define, by name, and the packs they came from."""

    sets: dict[str, tuple[Destination, ...]]
    included: tuple[Included, ...]


def load_sets(doc: LocatedYaml) -> Sets:
    """The packs that `doc` includes, and theirs, each read once (UsageError, file:line)."""
    sets: dict[str, tuple[Destination, ...]] = {}
    origin: dict[str, str] = {}
    included: list[Included] = []
    _include(doc, (doc.path.resolve(),), set(), sets, origin, included)
    return Sets(sets, tuple(included))


def _include(doc: LocatedYaml, chain: tuple[Path, ...], seen: set[Path], sets: dict[str, tuple[Destination, ...]], origin: dict[str, str],
             included: list[Included]) -> None:  # fmt: skip
    raw = doc.data.get("include") if isinstance(doc.data, dict) else None
    if raw is None:
        return
    if not isinstance(raw, list):
        raise UsageError(f"{doc.where(('include',))}: include: expected a list of pack files: write [{raw}]")
    for i, item in enumerate(raw):
        where = f"{doc.where(('include', i))}: include.{i}"
        if not isinstance(item, str) or not item.strip():
            raise UsageError(f"{where}: expected the path of a pack file, not {item!r}")
        path = (doc.path.parent / item.strip()).resolve()
        if path in chain:
            cycle = " → ".join(p.name for p in (*chain[chain.index(path) :], path))
            raise UsageError(f"{where}: {item} is already being included (a cycle: {cycle})")
        if path in seen:
            continue  # reached again by another include: its sets are in already
        if not path.is_file():
            raise UsageError(f"{where}: pack file {item} not found (looked for {path})")
        seen.add(path)
        pack_doc = load_located(path, "pack")
        pack = validate(_Pack, pack_doc)
        for name, entries in pack.sets.items():
            here = pack_doc.where(("sets", name))
            if name in origin:
                raise UsageError(f"{here}: sets.{name}: set {name} is defined twice (first at {origin[name]})")
            origin[name], sets[name] = here, entries
        included.append(Included(path, pack.version, tuple(pack.sets)))
        _include(pack_doc, (*chain, path), seen, sets, origin, included)
