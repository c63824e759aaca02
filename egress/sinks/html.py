"""`egress analyze --format html` / `--report F.html`: one self-contained HTML file.

It must open on an air-gapped analyst's machine and send nothing anywhere: plotly.js is
inlined (once), the styles and the table filters are inline, fonts are the system's, and
no chart is a map (plotly's geo charts fetch outlines from a CDN even "offline"). The page
is a jinja2 template (`templates/report.html.j2`) with autoescaping on: device names,
hostnames, SNI and HTTP Host come from the network, so from whoever controls it; the chart
data goes in as JSON through `tojson`, which escapes `<`, `>`, `&` and `'`.

`render_html` takes plain rows (the `OverviewData` of `egress.sinks.overview`, the alert
groups of `egress.sinks.grouped`) and knows nothing of flows or verdicts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import Markup

from egress import __version__
from egress.sinks import charts
from egress.sinks.grouped import AlertGroup, utc_seconds
from egress.sinks.overview import DeviceRow, OverviewData

__all__ = ["RunInfo", "render_html"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("egress.sinks", "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)  # fmt: skip
_ENV.filters["utc"] = utc_seconds


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the run was, besides what it found: the inputs, and what was counted."""

    inputs: tuple[str, ...]
    packets: int
    flows: int
    egress_flows: int
    alerts: int  # alert records: one per flow and rule
    policy: str = ""
    warnings: tuple[str, ...] = ()
    generated: float = 0.0  # when the report was made (epoch seconds); 0: now


def _human(n: float) -> str:
    """Bytes for a person: `812 B`, `4.8 MB` (SI units, as `ls -h --si` and disk makers count)."""
    units = ("B", "kB", "MB", "GB", "TB")
    step = 0
    while n >= 1000 and step < len(units) - 1:
        n, step = n / 1000, step + 1
    return f"{n:,.0f} B" if step == 0 else f"{n:,.1f} {units[step]}"


def _span(first: float | None, last: float | None) -> dict[str, str]:
    if first is None or last is None:
        return {"first": "", "last": "", "duration": ""}
    seconds = int(last - first)
    days, rest = divmod(seconds, 86400)
    duration = (f"{days} d " if days else "") + time.strftime("%H:%M:%S", time.gmtime(rest))
    return {"first": utc_seconds(first), "last": utc_seconds(last), "duration": duration}


def _alert_rows(groups: Sequence[AlertGroup], devices: dict[str, DeviceRow]) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        a, f = g.first, g.first.flow
        device = f.device or f.source.ip
        row = devices.get(device)
        rows.append({
            "first_seen": utc_seconds(g.first_seen), "last_seen": utc_seconds(g.last_seen), "category": a.category,
            "rule": a.rule_name, "severity": a.severity, "group": a.group, "device": device, "device_name": a.device_name,
            "vendor": f.device_manufacturer or "", "covered": bool(row and row.covered), "destination": f.destination.ip,
            "port": g.port, "protocol": f.protocol or "", "name": g.name, "country": f.destination_country or "", "asn": f.destination_asn or "",
            "flows": g.flows, "bytes_out": g.bytes_out, "bytes_in": g.bytes_in, "message": a.message,
        })  # fmt: skip
    return rows


def _options(rows: Sequence[dict[str, Any]], key: str) -> list[str]:
    return sorted({str(r[key]) for r in rows if r[key] != ""})


def render_html(run: RunInfo, overview: OverviewData, groups: Sequence[AlertGroup]) -> str:
    """The whole page: summary, charts, the device table and the grouped alerts with filters."""
    from plotly.offline import get_plotlyjs

    devices = {row.device: row for row in overview.devices}
    alerts = _alert_rows(groups, devices)
    per_device = Counter[str]()
    for g in groups:
        per_device[g.first.flow.device or g.first.flow.source.ip] += g.flows
    labels = {d: charts.device_label(d, devices.get(d)) for d, _ in overview.bytes_out.lines}
    figures = {
        "sankey": charts.sankey(overview.links, devices),
        "bytes-over-time": charts.stacked(overview.bytes_out, "Egress bytes out per device", "bytes", labels),
        "alerts-over-time": charts.stacked(overview.alerts, "Alert records by rule", "alerts"),
        "countries-chart": charts.countries(overview.countries),
    }  # keyed by the id of the element each is drawn in
    empty = {"sankey": not overview.links, "bytes-over-time": not overview.links, "alerts-over-time": not groups, "countries-chart": not overview.countries}
    return _ENV.get_template("report.html.j2").render(
        run=run, version=__version__, generated=utc_seconds(run.generated or time.time()), span=_span(overview.first_seen, overview.last_seen),
        devices=overview.devices, device_alerts=per_device, egress_bytes=overview.egress_bytes, covered=sum(r.covered for r in overview.devices),
        alerts=alerts, groups=len(groups), filters={k: _options(alerts, k) for k in ("category", "severity", "rule", "group", "country", "protocol")},
        countries=overview.countries, destinations=sum(c.destinations for c in overview.countries), country_label=charts.country_label,
        figures=figures, empty=empty, human=_human, plotly_js=Markup(get_plotlyjs()),
    )  # fmt: skip
