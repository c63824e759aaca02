"""`alerts.repeat_after`: an alert that says again what one said within the window is counted,
not re-emitted (SPEC: Kafka; issue "one alert per flow drowns the analyst").

"The same" is the same (device, destination, transport/port, rule.id); the window is in flow
time (the alert's flow start), so `run` and `agent`+`rules` emit the same alerts for the
same input. Kept per process: in a consumer group a device's records stay on one partition,
so on one member; after a rebalance the new owner may emit a repeat once. Memory: one entry
per key that alerted within the window (older ones are dropped as the table grows)."""

from __future__ import annotations

from egress.model import Alert

__all__ = ["RepeatFilter"]

_PRUNE_AT = 100_000  # entries before the old ones are looked for


class RepeatFilter:
    def __init__(self, window: float) -> None:
        self._window = window
        self._emitted: dict[tuple[str, str, int, int, str], float] = {}  # key → flow start of the alert last emitted
        self._latest = 0.0
        self._prune_at = _PRUNE_AT

    def admit(self, alert: Alert) -> bool:
        """True: emit it (and remember when); False: a repeat within the window."""
        key = alert.key
        start = alert.flow.start
        last = self._emitted.get(key)
        if last is not None and abs(start - last) < self._window:
            return False
        self._emitted[key] = start
        if start > self._latest:
            self._latest = start
        if len(self._emitted) >= self._prune_at:
            self._prune()
        return True

    def _prune(self) -> None:
        """Forget keys whose last alert is a window behind the latest; if that frees too
        little (that many keys alert at once), let the table grow before looking again."""
        horizon = self._latest - self._window
        self._emitted = {k: t for k, t in self._emitted.items() if t > horizon}
        self._prune_at = max(_PRUNE_AT, 2 * len(self._emitted))
