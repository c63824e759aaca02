"""`egress analyze` output: alerts as NDJSON, CSV, a readable table with a summary, or a
self-contained HTML page (also beside another format, `--report F.html`).

A sink like the others: it sees every verdict, streams the alert records (json: one per
flow, as on the wire) as they come and keeps what the other views need until `finish()`.
The table, the CSV and the HTML are for people: one row per (device, destination, port,
rule), see `egress.sinks.grouped`. The HTML's charts and device table come from the
bounded tallies of `egress.sinks.overview`, kept only when an HTML page is asked for."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import IO, Literal


from egress.codec import alert_to_ecs, encode
from egress.model import DEVICE, Alert, DeviceRecord, FlowRecord, Verdict
from egress.sinks.devices import write_devices
from egress.sinks.grouped import AlertGroup, group_alerts, utc_seconds
from egress.sinks.overview import DeviceRow, Overview

__all__ = ["Report", "CSV_COLUMNS"]

Format = Literal["table", "json", "csv", "html", "devices", "devices-csv", "devices-json"]
CSV_COLUMNS = (
    "first_seen", "last_seen", "category", "rule", "severity", "group", "device_mac", "device_ip", "vendor",
    "destination_ip", "destination_port", "transport", "protocol", "domain", "country", "asn",
    "flows", "bytes_out", "bytes_in", "packets_out", "packets_in",
)  # fmt: skip


def _row(g: AlertGroup) -> tuple[str, ...]:
    a, f = g.first, g.first.flow
    return (
        utc_seconds(g.first_seen), utc_seconds(g.last_seen), a.category, a.rule_name, a.severity, a.group, f.device_mac or "",
        f.device_ip or "", f.device_manufacturer or "", f.destination.ip, str(f.destination.port or ""),
        f.transport_name, f.protocol or "", g.name, f.destination_country or "", str(f.destination_asn or ""),
        str(g.flows), str(g.bytes_out), str(g.bytes_in), str(g.packets_out), str(g.packets_in),
    )  # fmt: skip


class Report:
    """Streams alerts in the chosen format and keeps what the summary needs; `html`: where
    the HTML page goes as well, `inputs` and `names` (inventory names by MAC) are for it."""

    def __init__(self, fmt: Format, out: IO[str], *, html: IO[str] | None = None, inputs: Sequence[str] = (),
                 names: Mapping[str, str] | None = None, policy: str = "") -> None:  # fmt: skip
        self._fmt = fmt
        self._out = out
        self._html = html
        self._inputs = tuple(inputs)
        self._policy = policy
        self._overview = Overview(names) if fmt == "html" or html is not None else None
        self._alerts: list[Alert] = []
        self._devices: dict[str, str] = {}
        self._destinations: dict[str, str] = {}
        self.flows = 0
        self.egress_flows = 0

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        overview = self._overview
        for verdict in verdicts:
            if verdict.verdict != DEVICE:  # a device record of the inventory: only its alert counts here
                self.flow(verdict.flow)
                if overview is not None:
                    overview.add(verdict)
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
        if self._overview is not None:
            self._overview.alert(alert)
        if self._fmt == "json":
            self._out.write(encode(alert_to_ecs(alert)).decode("utf-8") + "\n")

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

    def finish(self, packets: int = 0, warnings: Sequence[str] = (), devices: Sequence[DeviceRecord] = ()) -> None:
        """The grouped views (the CSV's header alone where nothing alerted), and the HTML page
        (`packets` read and the inputs' `warnings` go in its summary), or the inventory's
        `devices`. Not called when no input could be read: an empty report would look like a
        clean result."""
        groups = group_alerts(self._alerts) if self._fmt != "json" or self._overview is not None else []
        page = self._page(groups, packets, warnings, devices) if self._overview is not None else ""
        if self._html is not None:
            self._html.write(page)
            self._html.flush()
        if self._fmt == "html":
            self._out.write(page)
        elif self._fmt == "csv":
            writer = csv.writer(self._out, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            writer.writerows(map(_row, groups))
        elif self._fmt == "table":
            self._table(groups)
        elif self._fmt.startswith("devices"):
            write_devices(self._fmt, self._out, devices)
        self._out.flush()

    def _table(self, groups: list[AlertGroup]) -> None:
        from rich.console import Console  # here: ~30 ms of imports that the other formats do not need
        from rich.table import Table

        # on a terminal, its width; piped, as wide as the rows need (a fixed width folded MACs and names)
        console = Console(file=self._out, width=None if self._out.isatty() else 10_000)
        table = Table(title=f"Alerts: {len(self._alerts)} flows in {len(groups)} rows of (device, destination, port, rule)", show_lines=False)
        for column in ("first seen", "last seen", "category", "rule", "sev", "group", "device", "vendor", "destination", "port",
                       "protocol", "name", "cc", "asn", "flows", "bytes out", "bytes in"):  # fmt: skip
            table.add_column(column, overflow="fold", justify="right" if column in ("flows", "bytes out", "bytes in") else "left")
        for g in groups:
            a, f = g.first, g.first.flow
            table.add_row(
                utc_seconds(g.first_seen), utc_seconds(g.last_seen), a.category, a.rule_name, a.severity, a.group,
                f.device or "", f.device_manufacturer or "", f.destination.ip, g.port, f.protocol or "", g.name,
                f.destination_country or "", str(f.destination_asn or ""), f"{g.flows:,}", f"{g.bytes_out:,}", f"{g.bytes_in:,}",
            )  # fmt: skip
        console.print(table)
        s = self.summary()
        console.print(f"[bold]Flows[/bold] {s['flows']} ({s['egress_flows']} egress)   [bold]Alerts[/bold] {s['alerts']} (alert records, one per flow)")
        for title, key in (("Devices by vendor", "devices_by_vendor"), ("Destinations by country", "destinations_by_country"), ("Alerts by rule", "alerts_by_rule")):
            counts = s[key]
            assert isinstance(counts, dict)
            text = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
            console.print(f"[bold]{title}[/bold]: {text}")

    def _page(self, groups: list[AlertGroup], packets: int, warnings: Sequence[str], devices: Sequence[DeviceRecord]) -> str:
        """The page; its device table also lists the inventory's devices that no flow has (LAN-only)."""
        from egress.sinks.html import RunInfo, render_html

        assert self._overview is not None
        rows = self._overview.devices()
        known = {row.device for row in rows}
        lan_only = [DeviceRow(d.mac, d.manufacturer or "", d.organization or "", d.ips, tuple(map(str, d.vlans)), d.group, d.name, d.covered,
                              d.first_seen, d.last_seen) for d in devices if d.mac not in known]  # fmt: skip
        run = RunInfo(self._inputs, packets, self.flows, self.egress_flows, len(self._alerts), self._policy, tuple(warnings))
        return render_html(run, self._overview.data(sorted((*rows, *lan_only), key=lambda r: (not r.covered, r.device))), groups)
