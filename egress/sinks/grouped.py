"""Alerts grouped for people: one row per (device, destination, port, rule).

On the wire an alert is one flow (SIEMs want that), but a camera that keeps a connection
open, split by the idle timeout, or that polls a cloud every minute, gives dozens of alert
records for one fact. The analyst's views (the `analyze` table and CSV) show the fact once,
with when it was first and last seen and how much it moved each way."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from egress.codec import iso
from egress.model import Alert

__all__ = ["AlertGroup", "group_alerts", "utc_seconds"]


def utc_seconds(ts: float) -> str:
    """A full UTC date-time to the second, as the grouped views show first and last seen: a
    report spans days."""
    return iso(ts)[:19] + "Z"


@dataclass(slots=True)
class AlertGroup:
    """The alerts of one (device, destination, port, rule); `first` holds the earliest one
    (its flow gives the fields that do not change: vendor, group, country, ASN)."""

    first: Alert
    first_seen: float
    last_seen: float
    flows: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    packets_in: int = 0
    name: str = ""  # the destination's latest name, where one was learned

    @property
    def port(self) -> str:
        flow = self.first.flow
        return f"{flow.transport_name}/{flow.destination.port}" if flow.destination.port else flow.transport_name

    def add(self, alert: Alert) -> None:
        flow = alert.flow
        self.flows += 1
        self.bytes_out += flow.source.bytes
        self.bytes_in += flow.destination.bytes
        self.packets_out += flow.source.packets
        self.packets_in += flow.destination.packets
        if flow.start < self.first_seen:
            self.first_seen, self.first = flow.start, alert
        if flow.end >= self.last_seen:
            self.last_seen = flow.end
            self.name = flow.destination_domain or self.name
        elif not self.name and flow.destination_domain:
            self.name = flow.destination_domain


def group_alerts(alerts: Iterable[Alert]) -> list[AlertGroup]:
    """The groups in order of their first alert (ties: rule, then device)."""
    groups: dict[tuple[str, str, int, int, str], AlertGroup] = {}
    for alert in alerts:
        key = alert.key
        group = groups.get(key)
        if group is None:
            group = groups[key] = AlertGroup(alert, alert.flow.start, alert.flow.end)
        group.add(alert)
    return sorted(groups.values(), key=lambda g: (g.first_seen, g.first.rule_id, g.first.flow.device or ""))
