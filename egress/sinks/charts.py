"""The report's charts as plotly.js figures (plain `{"data": [...], "layout": {...}}` dicts,
drawn by the plotly.js that `egress.sinks.html` inlines).

Every text that came from the network (a hostname, and so a node's or a series' name) is
HTML-escaped here: plotly.js reads a little HTML in its labels (`<a href>` among it, which
would be a request leaving the page) and decodes the entities back for display. No chart
is a map: plotly's geo charts fetch their outlines from a CDN."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

from egress.sinks.overview import OTHER_DESTINATIONS, VERDICT_RANK, CountryRow, DeviceRow, Link, Series

__all__ = ["sankey", "stacked", "countries", "device_label", "country_label", "plot_time", "VERDICT_COLOURS"]

Figure = dict[str, Any]

VERDICT_COLOURS = {
    "denied": "rgba(192,57,43,0.6)", "new-destination": "rgba(142,68,173,0.5)", "unexpected": "rgba(230,126,34,0.55)",
    "learning": "rgba(52,152,219,0.35)", "baseline": "rgba(52,152,219,0.35)", "allowed": "rgba(39,174,96,0.35)",
}  # fmt: skip
_DEVICE, _COVERED, _DESTINATION, _COUNTRY = "#34495e", "#c0392b", "#7f8c8d", "#2c3e50"
_OTHER = "#b0b7bf"  # the line that adds up the rest
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#ad494a"]  # 12 apart: the top 12
_FONT = {"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 12}
_MARGIN = {"l": 60, "r": 20, "t": 40, "b": 50}


def device_label(device: str, row: DeviceRow | None) -> str:
    """`name (MAC)` for a device with an inventory name, else its MAC (or IP)."""
    return f"{row.name} ({device})" if row is not None and row.name else device


def country_label(code: str) -> str:
    import pycountry

    if not code:
        return "unknown"
    country = pycountry.countries.get(alpha_2=code)
    return f"{code} {country.name}" if country is not None else code


def plot_time(ts: float) -> str:
    """A UTC time as plotly's date axis reads it (no zone: it is shown as given)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _text(value: str) -> str:
    return html.escape(value, quote=False)


def _layout(title: str, **more: Any) -> dict[str, Any]:
    return {"title": {"text": _text(title), "x": 0.01}, "font": _FONT, "margin": _MARGIN, "paper_bgcolor": "white", **more}


def sankey(links: Sequence[Link], devices: Mapping[str, DeviceRow], *, top_devices: int = 25, top_destinations: int = 40) -> Figure:
    """Devices → destinations → countries, by egress flows (buttons switch to bytes out: one
    upload can make every other band a hairline). Past the top devices and destinations (by
    bytes), the rest are one node each; a device of a covered vendor is red; a device →
    destination band has the colour of the worst verdict among its flows."""
    by_device: dict[str, int] = {}
    by_destination: dict[str, int] = {}
    for link in links:
        by_device[link.device] = by_device.get(link.device, 0) + link.bytes_out
        by_destination[link.destination] = by_destination.get(link.destination, 0) + link.bytes_out
    kept_devices = set(sorted(by_device, key=lambda d: -by_device[d])[:top_devices])
    kept_destinations = set(sorted(by_destination, key=lambda d: -by_destination[d])[:top_destinations]) - {OTHER_DESTINATIONS}
    nodes: dict[tuple[str, str], int] = {}
    labels: list[str] = []
    colours: list[str] = []
    hover: list[str] = []

    def node(kind: str, key: str, label: str, colour: str, detail: str) -> int:
        if (kind, key) not in nodes:
            nodes[kind, key] = len(labels)
            labels.append(_text(label))
            colours.append(colour)
            hover.append(_text(detail))
        return nodes[kind, key]

    edges: dict[tuple[int, int], list[Any]] = {}  # (source, target) -> [flows, bytes, worst verdict]
    for link in links:
        row = devices.get(link.device)
        if link.device in kept_devices:
            src = node("device", link.device, device_label(link.device, row), _COVERED if row and row.covered else _DEVICE,
                       f"{row.vendor or 'unknown vendor'}{' (covered vendor)' if row.covered else ''}" if row else "")  # fmt: skip
        else:
            src = node("device", "", "other devices", _DEVICE, f"{len(by_device) - len(kept_devices)} devices")
        dst_key = link.destination if link.destination in kept_destinations else ""
        dst = node("destination", dst_key, dst_key or OTHER_DESTINATIONS, _DESTINATION, "destination")
        cc = node("country", link.country, country_label(link.country), _COUNTRY, "country")
        for pair, verdict in (((src, dst), link.verdict), ((dst, cc), "")):
            entry = edges.setdefault(pair, [0, 0, verdict])
            entry[0] += link.flows
            entry[1] += link.bytes_out
            if verdict and VERDICT_RANK.get(verdict, 0) > VERDICT_RANK.get(entry[2], 0):
                entry[2] = verdict
    values = {unit: [e[i] for e in edges.values()] for i, unit in enumerate(("flows", "bytes out"))}

    def shown_as(unit: str) -> dict[str, Any]:
        return {"link.value": [values[unit]],
                "node.hovertemplate": f"%{{label}}<br>%{{customdata}}<br>%{{value:,d}} {unit}<extra></extra>",
                "link.hovertemplate": f"%{{source.label}} → %{{target.label}}<br>%{{value:,d}} {unit}<br>%{{customdata}}<extra></extra>"}  # fmt: skip

    default = shown_as("flows")
    trace = {
        "type": "sankey", "arrangement": "snap", "valueformat": ",d",
        "node": {"label": labels, "color": colours, "customdata": hover, "pad": 14, "thickness": 16, "hovertemplate": default["node.hovertemplate"]},
        "link": {"source": [s for s, _ in edges], "target": [t for _, t in edges], "value": values["flows"],
                 "color": [VERDICT_COLOURS.get(e[2], "rgba(127,140,141,0.3)") for e in edges.values()],
                 "customdata": [e[2] or "country" for e in edges.values()], "hovertemplate": default["link.hovertemplate"]},
    }  # fmt: skip
    buttons = [{"label": f"by {unit}", "method": "restyle", "args": [shown_as(unit)]} for unit in values]
    height = max(360, 26 * max(len(kept_devices), min(len(by_destination), top_destinations + 1)))
    layout = _layout("Who talks to whom: devices → destinations → countries (egress)", height=height, margin={**_MARGIN, "t": 80},
                     updatemenus=[{"type": "buttons", "direction": "right", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom", "buttons": buttons}])  # fmt: skip
    return {"data": [trace], "layout": layout}


def _per(width: int) -> str:
    """A bucket width in words (every width of the ladder is a whole number of its unit)."""
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60)):
        if width >= seconds:
            return f"{width // seconds} {unit}"
    return f"{width} s"


def stacked(series: Series, title: str, unit: str, labels: Mapping[str, str] | None = None) -> Figure:
    """One stacked bar per time bucket, one colour per line (device or rule)."""
    x = [plot_time(ts) for ts in series.starts]
    data = [
        {"type": "bar", "name": _text((labels or {}).get(key, key)), "x": x, "y": list(counts),
         "hovertemplate": f"%{{x}} UTC<br>%{{y:,d}} {unit}<extra>%{{fullData.name}}</extra>",
         **({"marker": {"color": _OTHER}} if series.other and key == series.other else {})}
        for key, counts in series.lines
    ]  # fmt: skip
    layout = _layout(f"{title} (per {_per(series.width)}, UTC)", barmode="stack", colorway=_PALETTE, bargap=0.1, height=380, legend={"orientation": "h", "y": -0.2},
                     xaxis={"type": "date"}, yaxis={"title": {"text": unit}, "rangemode": "tozero"})  # fmt: skip
    return {"data": data, "layout": layout}


def countries(rows: Sequence[CountryRow]) -> Figure:
    """Egress bytes out per destination country (a bar chart: a map would fetch its outlines);
    red where alerts were raised."""
    ordered = list(reversed(rows))  # plotly draws the first bar at the bottom
    trace = {
        "type": "bar", "orientation": "h", "y": [country_label(r.country) for r in ordered], "x": [r.bytes_out for r in ordered],
        "marker": {"color": [_COVERED if r.alerts else "#2980b9" for r in ordered]},
        "customdata": [[r.destinations, r.flows, r.alerts] for r in ordered],
        "hovertemplate": "%{y}<br>%{x:,d} bytes out<br>%{customdata[0]} destinations, %{customdata[1]} flows, %{customdata[2]} alerts<extra></extra>",
    }  # fmt: skip
    layout = _layout("Egress bytes out by destination country (red: alerts raised)", height=max(240, 60 + 26 * len(rows)),
                     xaxis={"title": {"text": "bytes out"}}, yaxis={"automargin": True})  # fmt: skip
    return {"data": [trace], "layout": layout}
