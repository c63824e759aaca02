"""What `/healthz` answers: a registry of named checks, each fed by the part it watches.

A check starts failing ("starting", or what it waits for) and passes from its first
`beat()`. A check made with `stale_after` fails again when no beat came for that long:
the capture pumps beat at least once a second (a packet batch, or a live link's quiet
tick) and the rules consumer at each poll, so a stuck thread or event loop shows. A
`trouble(reason, grace)` fails the check once it has lasted `grace` seconds, whatever
the beats say, until `clear()`: a live interface that went away is retried and stays
healthy for `INTERFACE_AWAY_SECONDS`. `finish()` ends a check that did its work: a
capture file read to its end is done, not failing, so `egress run --read --linger`
stays healthy while it serves its last metrics. A part that fails for good ends the
command (the probe then gets no answer at all), so no check waits for that.

Checks are written from the capture threads and read by the HTTP server's thread:
each field is one attribute assignment, atomic under the GIL, and a reading that is a
beat late only moves a deadline by that beat.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

__all__ = ["Health", "Check", "CAPTURE_STALE_SECONDS", "INTERFACE_AWAY_SECONDS", "POLL_STALE_SECONDS"]

#: a capture pump beats at least every second while it runs (packets, or ticks on a quiet
#: live link); 30 s without one is a stuck tshark, a blocked pipe or a stalled pipeline
CAPTURE_STALE_SECONDS = 30.0
#: a live interface that went away is retried (1 s, doubling to 30 s); healthy this long
INTERFACE_AWAY_SECONDS = 300.0
#: the rules consumer polls every 0.5 s between batches; 30 s without a poll is stuck
POLL_STALE_SECONDS = 30.0


class Check:
    """One named liveness signal; see the module docstring for its states."""

    def __init__(self, name: str, stale_after: float | None, starting: str, missing: str, clock: Callable[[], float]) -> None:
        self.name = name
        self._stale_after = stale_after
        self._starting = starting
        self._missing = missing
        self._clock = clock
        self._last: float | None = None
        self._finished = False
        self._trouble: tuple[str, float, float] | None = None  # reason, since, grace

    def beat(self) -> None:
        """The part did its work just now."""
        self._last = self._clock()

    def finish(self) -> None:
        """The part ended its work normally (a file read to its end): passes from now on."""
        self._finished = True

    def trouble(self, reason: str, grace: float = 0.0) -> None:
        """Fail once `reason` has lasted `grace` seconds (counted from its first report)."""
        current = self._trouble
        if current is None or current[0] != reason:
            self._trouble = (reason, self._clock(), grace)

    def clear(self) -> None:
        self._trouble = None

    def failing(self) -> str | None:
        """Why the check fails now, or None."""
        now = self._clock()
        trouble = self._trouble
        if trouble is not None and now - trouble[1] >= trouble[2]:
            reason, since, grace = trouble
            return f"{self.name}: {reason}" + (f" for {now - since:.0f} s" if grace else "")
        if self._finished:
            return None
        if self._last is None:
            return f"{self.name}: {self._starting}"
        if self._stale_after is not None and now - self._last > self._stale_after:
            return f"{self.name}: {self._missing} for {now - self._last:.0f} s"
        return None


class Health:
    """The checks of one process, by name; `answer()` is the /healthz response."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._checks: dict[str, Check] = {}

    def check(self, name: str, *, stale_after: float | None = None, starting: str = "starting", missing: str = "no heartbeat") -> Check:
        """The check called `name`, made on first use (the same one for every caller after).
        Its reasons: `starting` before the first beat, `missing` once beats stop for `stale_after`."""
        found = self._checks.get(name)
        if found is None:
            found = self._checks[name] = Check(name, stale_after, starting, missing, self._clock)
        return found

    def failing(self) -> list[str]:
        """The reasons of every failing check, in the order the checks were made."""
        return [reason for check in list(self._checks.values()) if (reason := check.failing()) is not None]

    def answer(self) -> tuple[int, bytes]:
        """200 `{"status":"ok"}`, or 503 with every failing reason on one JSON line."""
        reasons = self.failing()
        if not reasons:
            return 200, b'{"status":"ok"}\n'
        reason = " ".join("; ".join(reasons).split())  # one line whatever a reason holds
        return 503, json.dumps({"status": "failing", "reason": reason}, separators=(",", ":")).encode() + b"\n"
