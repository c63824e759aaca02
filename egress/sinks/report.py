"""`egress analyze` output: alerts as NDJSON, CSV or a readable table with a summary.

A sink like the others: it sees every verdict, streams the alerts (json, csv) as they come
and keeps what the table and the summary need until `finish()`."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from typing import IO, Literal

from rich.console import Console
from rich.table import Table

from egress.codec import alert_to_ecs, encode, iso
from egress.model import Alert, FlowRecord, Verdict

__all__ = ["Report", "CSV_COLUMNS"]

Format = Literal["table", "json", "csv"]
CSV_COLUMNS = (
    "timestamp", "category", "rule", "severity", "group", "device_mac", "device_ip", "vendor",
    "destination_ip", "destination_port", "transport", "domain", "country", "asn", "event_id",
)  # fmt: skip


def _row(alert: Alert) -> tuple[str, ...]:
    f = alert.flow
    return (
        iso(f.start), alert.category, alert.rule_name, alert.severity, alert.group, f.device_mac or "",
        f.device_ip or "", f.device_manufacturer or "", f.destination.ip, str(f.destination.port or ""),
        f.transport_name, f.destination_domain or "", f.destination_country or "",
        str(f.destination_asn or ""), alert.event_id,
    )  # fmt: skip


class Report:
    """Streams alerts in the chosen format and keeps what the summary needs."""

    def __init__(self, fmt: Format, out: IO[str]) -> None:
        self._fmt = fmt
        self._out = out
        self._alerts: list[Alert] = []
        self._devices: dict[str, str] = {}
        self._destinations: dict[str, str] = {}
        self.flows = 0
        self.egress_flows = 0
        self._csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        self._header_due = self._csv is not None  # written with the first row, or by finish()

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        for verdict in verdicts:
            self.flow(verdict.flow)
            for alert in verdict.alerts:
                self.alert(alert)

    async def flush(self) -> None:
        self._out.flush()

    def flow(self, rec: FlowRecord) -> None:
        self.flows += 1
        device = rec.device
        if device:
            self._devices[device] = rec.device_manufacturer or "unknown"
        if rec.is_egress:
            self.egress_flows += 1
            self._destinations[rec.destination.ip] = rec.destination_country or "unknown"

    def alert(self, alert: Alert) -> None:
        self._alerts.append(alert)
        if self._fmt == "json":
            self._out.write(encode(alert_to_ecs(alert)).decode("utf-8") + "\n")
        elif self._csv is not None:
            self._header()
            self._csv.writerow(_row(alert))

    def _header(self) -> None:
        if self._header_due and self._csv is not None:
            self._csv.writerow(CSV_COLUMNS)
            self._header_due = False

    @property
    def alerts(self) -> list[Alert]:
        return self._alerts

    def summary(self) -> dict[str, object]:
        return {
            "flows": self.flows,
            "egress_flows": self.egress_flows,
            "alerts": len(self._alerts),
            "devices_by_vendor": dict(Counter(self._devices.values()).most_common()),
            "destinations_by_country": dict(Counter(self._destinations.values()).most_common()),
            "alerts_by_rule": dict(Counter(f"{a.category}:{a.rule_name}" for a in self._alerts).most_common()),
        }

    def finish(self) -> None:
        """The table (or the CSV header of a report with no rows). Not called when no input
        could be read: an empty report would look like a clean result."""
        self._header()
        if self._fmt != "table":
            self._out.flush()
            return
        # on a terminal, its width; piped, as wide as the rows need (a fixed width folded MACs and names)
        console = Console(file=self._out, width=None if self._out.isatty() else 10_000)
        table = Table(title=f"Alerts ({len(self._alerts)})", show_lines=False)
        for column in ("time", "category", "rule", "sev", "group", "device", "vendor", "destination", "port", "name", "cc", "asn"):
            table.add_column(column, overflow="fold")
        for a in sorted(self._alerts, key=lambda a: (a.flow.start, a.event_id)):
            f = a.flow
            port = f"{f.transport_name}/{f.destination.port}" if f.destination.port else f.transport_name
            table.add_row(
                iso(f.start)[11:19], a.category, a.rule_name, a.severity, a.group,
                f.device or "", f.device_manufacturer or "", f.destination.ip, port,
                f.destination_domain or "", f.destination_country or "", str(f.destination_asn or ""),
            )  # fmt: skip
        console.print(table)
        s = self.summary()
        console.print(f"[bold]Flows[/bold] {s['flows']} ({s['egress_flows']} egress)   [bold]Alerts[/bold] {s['alerts']}")
        for title, key in (("Devices by vendor", "devices_by_vendor"), ("Destinations by country", "destinations_by_country"), ("Alerts by rule", "alerts_by_rule")):
            counts = s[key]
            assert isinstance(counts, dict)
            text = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
            console.print(f"[bold]{title}[/bold]: {text}")
