"""The baseline's judgement (SPEC: Learned baseline, Order and Volume), in flow time.

Pure like the rest of the policy: the state comes in, the clock is the flow's own time.
`observe()` is told of every egress flow of a group that learns (a scope's clock starts at
its first one; a device's volume windows, where its group watches volume); `judge()` only
of the flows that deny and allow left alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

from egress.baseline.keys import identity, port_key
from egress.baseline.settings import BaselineSettings, VolumeSettings
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

    def observe(self, rec: FlowRecord, group: str, settings: BaselineSettings) -> tuple[str, bool, Crossing | None]:
        """Every egress flow of a group that learns: its scope (the group, or the device), that
        scope's clock started or moved back, whether it learns at the flow's start, and its
        device's volume window's crossing if this flow made one. One call per flow, written
        out in one body: it runs for every egress flow a rules consumer reads."""
        device = rec.device
        name = group if settings.scope == "group" else (device or rec.source.ip)
        start = rec.start
        state = self.state
        scope = state.scopes.get(name)
        if scope is None:
            scope = state.scopes[name] = Scope(group, start)
            state.changed.add(("scope", name))
        elif start < scope.start and scope.until is None:
            scope.start = start  # the earliest flow starts the clock, whatever order flows arrive in
            state.changed.add(("scope", name))
        if self._learn_everything:
            if rec.end > self.latest.get(name, -math.inf):
                self.latest[name] = rec.end
            learning = True
        else:
            learning = start < (scope.until if scope.until is not None else scope.start + settings.learn_for)
        v = settings.volume
        if v is None or not device:
            return name, learning, None
        volume = state.volumes.get(device)
        if volume is None:
            volume = state.volumes[device] = Volume(group)
        end = rec.end
        slot = volume.slot if volume.low <= end < volume.high else self._window(volume, end, v.window)
        size = slot[0] = slot[0] + rec.source.bytes
        if learning:
            # A grown maximum is written out (`changed`) only once it passed the last one
            # written by 10%: a device's maximum grows with nearly every flow at first, and the
            # limit it makes is `factor` times it, so a restart after a kill errs by at most
            # that. Nor while `factor` times it stays under `min_bytes`: the limit is
            # `min_bytes` then, whatever the maximum (most cameras' windows never come near it).
            if size > volume.learned_max:
                volume.learned_max = size
                if size > volume.noted * 1.1 and v.factor * size > v.min_bytes:
                    volume.noted = size
                    state.changed.add(("volume", device))
            return name, learning, None
        if slot[1] or size <= v.min_bytes:
            return name, learning, None
        return name, learning, self._crossing(volume, device, v, size)

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

    def _window(self, volume: Volume, end: float, window: float) -> list[int]:
        """The slot of the window that holds `end`, made where new (the oldest beyond
        _WINDOWS_KEPT goes), and made the device's current window."""
        start = end - end % window
        windows = volume.windows
        slot = windows.get(start)
        if slot is None:
            slot = windows[start] = [0, 0]
            if len(windows) > _WINDOWS_KEPT:
                del windows[min(windows)]
        volume.low, volume.high, volume.slot = start, start + window, slot
        return slot

    def _crossing(self, volume: Volume, device: str, v: VolumeSettings, size: int) -> Crossing | None:
        """After learning, a window past min_bytes: the crossing, the first time it passes
        max(min_bytes, factor x the largest learned window)."""
        limit = max(v.min_bytes, math.ceil(v.factor * volume.learned_max))
        if size <= limit:
            return None
        volume.slot[1] = 1
        self.state.changed.add(("volume", device))
        return Crossing(volume.low, v.window, size, limit, volume.learned_max)

    def end_learning(self) -> None:
        """`baseline learn` is done: every scope it saw stops learning at its latest flow."""
        for name, latest in self.latest.items():
            self.state.scopes[name].until = latest
            self.state.changed.add(("scope", name))
