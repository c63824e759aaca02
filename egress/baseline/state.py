"""What the baseline has learned: keys with their state and counts, each scope's learning
clock, each device's volume windows. Plain data with a JSON form, shared by the file of
`run`/`analyze` and (one record per key) the compacted topic of `egress rules`.

Nothing here knows the policy or the clock: the learner decides, this remembers. Every
change is also noted in `changed`, so a store can write what moved since it last looked."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Key", "Entry", "Scope", "Volume", "BaselineState", "StateError", "FORMAT", "parse_key", "key_text"]

FORMAT = "egress-baseline"
VERSION = 1
Key = tuple[str, str, str]  # scope, identity, transport/port


class StateError(ValueError):
    """A baseline document that is not one (or of another version)."""


def key_text(key: Key) -> str:
    """`scope:identity:port`, as `show` prints it and `approve`/`forget` take it."""
    return ":".join(key)


def parse_key(text: str) -> Key:
    """The scope is up to the first colon, the port after the last: an IPv6 identity keeps its own."""
    scope, sep, rest = text.partition(":")
    identity, sep2, port = rest.rpartition(":")
    if not (sep and sep2 and scope and identity and port):
        raise ValueError(f"{text!r} is not a baseline key like street-cctv:hik-connect.com:tcp/443")
    return scope, identity, port


@dataclass(slots=True)
class Entry:
    group: str
    state: str  # learned | alerted
    first_seen: float
    last_seen: float
    flows: int = 0
    bytes: int = 0
    noted: int = 0  # the flows count last written to the baseline topic (not saved; loaded: `flows`)


@dataclass(slots=True)
class Scope:
    group: str
    start: float  # the scope's first egress flow (flow time)
    until: float | None = None  # learning ends here when set (`baseline learn`), else start + learn_for


@dataclass(slots=True)
class Volume:
    group: str
    learned_max: int = 0  # the largest window while the scope learned
    windows: dict[float, list[int]] = field(default_factory=dict)  # window start → [bytes, alerted]
    noted: int = 0  # the learned maximum last marked for writing (not saved: a loaded state starts from learned_max)
    # the window the device's last flow fell in, [low, high) and its slot of `windows` (not
    # saved): nearly every flow falls in it, and two float comparisons cost less than the
    # window's start computed and looked up per flow
    low: float = math.inf
    high: float = -math.inf
    slot: list[int] = field(default_factory=list)


class BaselineState:
    def __init__(self) -> None:
        self.entries: dict[Key, Entry] = {}  # changed through add/restate/remove, which keep the tally
        self.scopes: dict[str, Scope] = {}
        self.volumes: dict[str, Volume] = {}
        self.changed: set[tuple[str, str]] = set()  # ("key"|"scope"|"volume", name) since the last drain
        self._tally: Counter[tuple[str, str]] = Counter()

    def add(self, key: Key, entry: Entry) -> None:
        old = self.entries.get(key)
        if old is not None:
            self._tally[old.group, old.state] -= 1
        self.entries[key] = entry
        self._tally[entry.group, entry.state] += 1

    def restate(self, key: Key, state: str) -> None:
        entry = self.entries[key]
        self._tally[entry.group, entry.state] -= 1
        entry.state = state
        self._tally[entry.group, state] += 1

    def remove(self, key: Key) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self._tally[entry.group, entry.state] -= 1

    def replace_with(self, other: BaselineState) -> None:
        """Take another state's contents (a loaded file) into this one, which others hold."""
        self.entries, self.scopes, self.volumes, self._tally = other.entries, other.scopes, other.volumes, other._tally
        self.changed = set()

    def counts(self) -> Counter[tuple[str, str]]:
        """Keys by (group, state), for egress_baseline_keys: kept as entries come and go, not
        counted; a state that emptied stays with 0, so its gauge goes to 0."""
        return Counter(self._tally)

    # -- JSON -------------------------------------------------------------------
    def to_doc(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "scopes": {name: {"group": s.group, "start": s.start, "until": s.until} for name, s in sorted(self.scopes.items())},
            "keys": [entry_doc(k, e) for k, e in sorted(self.entries.items())],
            "volume": {d: volume_doc(v) for d, v in sorted(self.volumes.items())},
        }

    @classmethod
    def from_doc(cls, doc: object) -> BaselineState:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise StateError("not an egress baseline (no \"format\": \"egress-baseline\")")
        if doc.get("version") != VERSION:
            raise StateError(f"baseline version {doc.get('version')!r}, this egress reads version {VERSION}")
        state = cls()
        try:
            for name, s in doc["scopes"].items():
                state.scopes[str(name)] = Scope(str(s["group"]), float(s["start"]), None if s.get("until") is None else float(s["until"]))
            for item in doc["keys"]:
                state.add(*entry_of(item))
            for device, v in doc["volume"].items():
                state.volumes[str(device)] = volume_of(v)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"malformed baseline: {type(exc).__name__}: {exc}") from None
        return state


def entry_doc(key: Key, e: Entry) -> dict[str, Any]:
    return {"scope": key[0], "identity": key[1], "port": key[2], "group": e.group, "state": e.state,
            "first_seen": e.first_seen, "last_seen": e.last_seen, "flows": e.flows, "bytes": e.bytes}  # fmt: skip


def entry_of(item: dict[str, Any]) -> tuple[Key, Entry]:
    if item["state"] not in ("learned", "alerted"):
        raise ValueError(f"state {item['state']!r}")
    key = (str(item["scope"]), str(item["identity"]), str(item["port"]))
    flows = int(item["flows"])
    return key, Entry(str(item["group"]), item["state"], float(item["first_seen"]), float(item["last_seen"]), flows, int(item["bytes"]), flows)


def volume_doc(v: Volume) -> dict[str, Any]:
    return {"group": v.group, "learned_max": v.learned_max, "windows": [[start, b, a] for start, (b, a) in sorted(v.windows.items())]}


def volume_of(item: dict[str, Any]) -> Volume:
    learned = int(item["learned_max"])
    return Volume(str(item["group"]), learned, {float(s): [int(b), int(a)] for s, b, a in item["windows"]}, learned)
