"""The baseline's judgement (SPEC: Learned baseline, Order and Volume), in flow time.

Pure like the rest of the policy: the state comes in, the clock is the flow's own time.
`scope()` is told of every egress flow of a group that learns (a scope's clock starts at
its first one); `judge()` only of the flows that deny and allow left alone; `volume()` of
every egress flow of a device whose group watches volume."""

from __future__ import annotations

import math
from dataclasses import dataclass

from egress.baseline.keys import identity, port_key
from egress.baseline.settings import BaselineSettings
from egress.baseline.state import BaselineState, Entry, Key, Scope, Volume
from egress.model import FlowRecord

__all__ = ["Learner", "Crossing"]

_WINDOWS_KEPT = 6  # per device: flows arrive a little out of order across windows


@dataclass(frozen=True, slots=True)
class Crossing:
    """A volume window that passed its limit."""

    window_start: float
    window: float
    bytes: int
    limit: int
    learned_max: int


class Learner:
    def __init__(self, state: BaselineState, learn_everything: bool = False) -> None:
        """`learn_everything`: `egress baseline learn` (the input is the learning period)."""
        self.state = state
        self._learn_everything = learn_everything
        self.latest: dict[str, float] = {}  # scope → the latest flow end seen (for `baseline learn`)

    def scope(self, rec: FlowRecord, group: str, settings: BaselineSettings) -> tuple[str, bool]:
        """The flow's scope (its group, or its device), its clock started or moved back, and
        whether it learns at the flow's start. Runs for every egress flow: one lookup."""
        name = group if settings.scope == "group" else (rec.device_mac or rec.device_ip or rec.source.ip)
        start = rec.start
        scope = self.state.scopes.get(name)
        if scope is None:
            scope = self.state.scopes[name] = Scope(group, start)
            self.state.changed.add(("scope", name))
        elif start < scope.start and scope.until is None:
            scope.start = start  # the earliest flow starts the clock, whatever order flows arrive in
            self.state.changed.add(("scope", name))
        if self._learn_everything:
            if rec.end > self.latest.get(name, -math.inf):
                self.latest[name] = rec.end
            return name, True
        return name, start < (scope.until if scope.until is not None else scope.start + settings.learn_for)

    def judge(self, rec: FlowRecord, scope: str, group: str, learning: bool) -> tuple[str, Key]:
        """`learned` (while learning), `known`, `held` (alerted before, not approved) or `new`
        (raise one new-destination alert); the key either way."""
        key = (scope, identity(rec), port_key(rec))
        entry = self.state.entries.get(key)
        if entry is None:
            self.state.add(key, Entry(group, "learned" if learning else "alerted", rec.start, rec.end, 1, rec.source.bytes + rec.destination.bytes))
            self.state.changed.add(("key", "\x1f".join(key)))
            return ("learned" if learning else "new"), key
        entry.flows += 1
        entry.bytes += rec.source.bytes + rec.destination.bytes
        if rec.start < entry.first_seen:
            entry.first_seen = rec.start
        if rec.end > entry.last_seen:
            entry.last_seen = rec.end
        if learning:
            return "learned", key
        return ("known" if entry.state == "learned" else "held"), key

    def volume(self, rec: FlowRecord, group: str, settings: BaselineSettings, learning: bool) -> Crossing | None:
        """Add the flow's outbound bytes to its device's window; the crossing, the first time a
        window after learning passes max(min_bytes, factor x the largest learned window).

        While learning, a grown maximum is written out (`changed`) only once it passed the last
        one written by 10%: a device's maximum grows with nearly every flow at first, and the
        limit it makes is `factor` times it, so a restart after a kill errs by at most that."""
        v = settings.volume
        device = rec.device_mac or rec.device_ip
        if v is None or not device:
            return None
        volume = self.state.volumes.get(device)
        if volume is None:
            volume = self.state.volumes[device] = Volume(group)
        end = rec.end
        window = v.window
        start = end - end % window
        windows = volume.windows
        slot = windows.get(start)
        if slot is None:
            slot = windows[start] = [0, 0]
            if len(windows) > _WINDOWS_KEPT:
                del windows[min(windows)]
        size = slot[0] = slot[0] + rec.source.bytes
        if learning:
            if size > volume.learned_max:
                volume.learned_max = size
                if size > volume.noted * 1.1:
                    volume.noted = size
                    self.state.changed.add(("volume", device))
            return None
        if slot[1] or size <= v.min_bytes:
            return None
        limit = max(v.min_bytes, math.ceil(v.factor * volume.learned_max))
        if size <= limit:
            return None
        slot[1] = 1
        self.state.changed.add(("volume", device))
        return Crossing(start, window, size, limit, volume.learned_max)

    def end_learning(self) -> None:
        """`baseline learn` is done: every scope it saw stops learning at its latest flow."""
        for name, latest in self.latest.items():
            self.state.scopes[name].until = latest
            self.state.changed.add(("scope", name))
