"""The rules side's Prometheus series: flows evaluated by verdict, alerts by rule, devices by
vendor. Counters are added up per slice, and a device's gauge is touched only when its labels
change: this runs for every record a rules consumer reads."""

from __future__ import annotations

from collections.abc import Sequence

from egress.model import Verdict
from egress.telemetry import RulesMetrics, vendor_label

__all__ = ["MetricsSink"]


class MetricsSink:
    def __init__(self, metrics: RulesMetrics) -> None:
        self._metrics = metrics
        self._devices: dict[str, tuple[str, str, str | None, bool]] = {}  # device → labels last counted

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        metrics = self._metrics
        counts: dict[tuple[str, str, str], int] = {}
        seen = self._devices
        for verdict in verdicts:
            rec = verdict.flow
            site = rec.site or "default"
            key = (site, verdict.group, verdict.verdict)
            counts[key] = counts.get(key, 0) + 1
            device = rec.device
            if device:
                state = (site, verdict.group, rec.device_manufacturer, verdict.covered)
                if seen.get(device) != state:
                    seen[device] = state
                    metrics.device_seen(device, (site, verdict.group, vendor_label(rec.device_manufacturer), str(verdict.covered).lower()))
            for alert in verdict.alerts:
                metrics.alerts.labels(site, verdict.group, alert.category, alert.rule_name, alert.severity,
                                      vendor_label(rec.device_manufacturer), rec.destination_country or "unknown").inc()  # fmt: skip
        for key, n in counts.items():
            metrics.evaluated(*key, n=n)

    async def flush(self) -> None:
        return None
