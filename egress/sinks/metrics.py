"""The rules side's Prometheus series: flows evaluated by verdict, alerts by rule, devices by
vendor. Flow counts are added up per batch, and a device's gauge is touched only when its
labels change: this runs for every record a rules consumer reads."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from egress.model import DEVICE, Verdict
from egress.policy.evaluate import Evaluator
from egress.telemetry import RulesMetrics, vendor_label

__all__ = ["MetricsSink", "BaselineMetrics"]


class MetricsSink:
    def __init__(self, metrics: RulesMetrics) -> None:
        self._metrics = metrics
        self._devices: dict[str, tuple[str, str, str | None, bool]] = {}  # device → labels last counted
        self._counts: dict[tuple[str, str, str], int] = {}  # (site, group, verdict) → flows since the last flush

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        counts = self._counts
        get = counts.get
        seen = self._devices
        for verdict in verdicts:
            rec = verdict.flow
            key = (rec.site, verdict.group, verdict.verdict)
            if verdict.verdict != DEVICE:  # a device record (the inventory) is not a flow
                counts[key] = get(key, 0) + 1
            device = rec.device_mac or rec.device_ip
            if device:
                state = (rec.site, verdict.group, rec.device_manufacturer, verdict.covered)
                if seen.get(device) != state:
                    seen[device] = state
                    self._device_changed(device, state)
            if verdict.alerts:
                self._alerts(verdict)

    def _device_changed(self, device: str, state: tuple[str, str, str | None, bool]) -> None:
        site, group, brand, covered = state
        self._metrics.device_seen(device, (site or "default", group, vendor_label(brand), str(covered).lower()))

    def _alerts(self, verdict: Verdict) -> None:
        rec = verdict.flow
        site = rec.site or "default"
        for alert in verdict.alerts:
            self._metrics.alerts.labels(site, verdict.group, alert.category, alert.rule_name, alert.severity,
                                        vendor_label(rec.device_manufacturer), rec.destination_country or "unknown").inc()  # fmt: skip

    async def flush(self) -> None:
        """The batch's flow counts, added once per batch: a slice spreads over every group and
        verdict, so adding them per slice cost nearly one counter update per flow."""
        counts, self._counts = self._counts, {}
        evaluated = self._metrics.evaluated
        for (site, group, outcome), n in counts.items():
            evaluated(site or "default", group, outcome, n=n)


class BaselineMetrics:
    """egress_baseline_keys{site,group,state} and egress_baseline_learning{site,group}, read
    off the baseline's state at most once a second (counting keys is linear in them)."""

    def __init__(self, metrics: RulesMetrics, evaluator: Callable[[], Evaluator], period: float = 1.0) -> None:
        self._metrics = metrics
        self._evaluator = evaluator  # the current one: a reload replaces it
        self._period = period
        self._next = 0.0
        self._site = "default"
        self._latest = 0.0  # flow time: learning is judged on it

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        if verdicts:
            last = verdicts[-1].flow
            self._site = last.site or "default"
            self._latest = max(self._latest, last.end)

    async def flush(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._period
            self.refresh()

    def refresh(self) -> None:
        """Set the gauges from the state now (also when another member's records arrive)."""
        evaluator = self._evaluator()
        state = evaluator.learner.state
        for (group, kind), n in state.counts().items():
            self._metrics.baseline_keys.labels(self._site, group, kind).set(n)
        learning: dict[str, int] = {}
        for scope in state.scopes.values():
            settings = evaluator.baseline_of(scope.group)
            until = scope.until if scope.until is not None else scope.start + (settings.learn_for if settings else 0.0)
            learning[scope.group] = max(learning.get(scope.group, 0), int(self._latest < until))
        for group, value in learning.items():
            self._metrics.baseline_learning.labels(self._site, group).set(value)
