"""The HTML report: its tallies (`egress.sinks.overview`), its page (`egress.sinks.html`),
and `analyze --format html`, `-o F` and `--report F` on the command line."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
from pathlib import Path

import pytest

from egress.model import TCP, Alert, Endpoint, FlowRecord, Verdict
from egress.sinks import charts
from egress.sinks import overview as overview_module
from egress.sinks.grouped import group_alerts
from egress.sinks.html import RunInfo, render_html
from egress.sinks.overview import MAX_BUCKETS, DeviceRow, Link, Overview, Timeline
from egress.sinks.report import Report
from tests.conftest import PCAPS, POLICY, ndjson, run_egress

T0 = 1768471200.0  # 2026-01-15T10:00:00Z
HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def _flow(i: float, dest: str = "198.51.100.10", *, mac: str = "44-19-B6-12-34-56", name: str | None = None, country: str | None = "CN",
          out: int = 100, direction: str = "outbound") -> FlowRecord:  # fmt: skip
    return FlowRecord(
        start=T0 + i, end=T0 + i + 1, transport=TCP, source=Endpoint("10.20.1.11", 40000, mac, out, 2), destination=Endpoint(dest, 443, None, 50, 1),
        vlans=(20,), community_id=f"1:{i}", direction=direction, device_mac=mac, device_ip="10.20.1.11", device_manufacturer="Hikvision",
        device_organization="Hangzhou Hikvision Digital Technology Co.,Ltd.", destination_domain=name, destination_country=country,
    )  # fmt: skip


def _verdict(flow: FlowRecord, verdict: str = "unexpected", *, covered: bool = True, alert: bool = True) -> Verdict:
    alerts = (Alert(flow, "cams", f"id{flow.start}", "unexpected", "cams/unexpected", "unexpected-destination", "p", "medium", "m"),) if alert else ()
    return Verdict(flow, "cams", verdict, alerts, covered=covered, rule="default_verdict")


def _report(verdicts: list[Verdict], fmt: str = "html", **kwargs: object) -> str:
    out = io.StringIO()
    report = Report(fmt, out, inputs=["sample.pcap"], **kwargs)  # type: ignore[arg-type]
    asyncio.run(report.write(verdicts))
    report.finish(packets=42)
    return out.getvalue()


def _figures(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="figures">(.*?)</script>', page, re.S).group(1))


def test_timeline_widens_its_buckets_exactly_and_stays_bounded() -> None:
    """Over a day of one-second samples the buckets grow from 1 s to a width of the ladder,
    never more than MAX_BUCKETS of them, and not a byte is lost on the way."""
    timeline = Timeline()
    total = 0
    for i in range(0, 86400, 7):
        timeline.add("cam", T0 + i, i % 13 + 1)
        total += i % 13 + 1
    series = timeline.series(top=5, other="others")
    assert len(series.starts) <= MAX_BUCKETS and series.width == 1800
    assert all(start % series.width == 0 for start in series.starts)
    assert series.starts == tuple(series.starts[0] + k * series.width for k in range(len(series.starts)))
    assert sum(series.lines[0][1]) == total == timeline.totals()["cam"]


def test_timeline_keeps_the_top_keys_and_adds_up_the_rest() -> None:
    timeline = Timeline()
    for key, amount in (("a", 5), ("b", 50), ("c", 1), ("d", 2)):
        timeline.add(key, T0, amount)
    series = timeline.series(top=2, other="others")
    assert series.lines == (("b", (50,)), ("a", (5,)), ("others", (3,))) and series.other == "others"
    assert timeline.series(top=4, other="others").other == ""


def test_overview_makes_device_rows_links_and_countries() -> None:
    """A device's row has its IPs, VLANs, group, inventory name, covered flag and what it sent;
    a link has the worst verdict of its flows; countries count destinations, flows, bytes, alerts."""
    overview = Overview({"44-19-B6-12-34-56": "lamp-01"})
    flows = [_verdict(_flow(0, name="a.example")), _verdict(_flow(5, name="a.example"), "denied"), _verdict(_flow(9, "203.0.113.9", country="DE"), "allowed", alert=False)]
    for verdict in flows:
        overview.add(verdict)
        for alert in verdict.alerts:
            overview.alert(alert)
    data = overview.data()
    (row,) = data.devices
    assert (row.device, row.name, row.vendor, row.ips, row.vlans, row.group, row.covered) == ("44-19-B6-12-34-56", "lamp-01", "Hikvision", ("10.20.1.11",), ("20",), "cams", True)
    assert (row.first_seen, row.last_seen, row.packets_out, row.bytes_out) == (T0, T0 + 10, 6, 300)
    assert [(link.destination, link.country, link.flows, link.bytes_out, link.verdict) for link in data.links] == [
        ("a.example", "CN", 2, 200, "denied"), ("203.0.113.9", "DE", 1, 100, "allowed")]  # fmt: skip
    assert [(c.country, c.destinations, c.flows, c.bytes_out, c.alerts) for c in data.countries] == [("CN", 1, 2, 200, 2), ("DE", 1, 1, 100, 0)]
    assert data.egress_bytes == {"44-19-B6-12-34-56": 300} and (data.first_seen, data.last_seen) == (T0, T0 + 10)


def test_overview_lumps_destinations_past_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_LINKS (device, destination, country) tallies, a device's new destinations go
    into its `other destinations`: the memory stays bounded on a device that scans the internet."""
    monkeypatch.setattr(overview_module, "MAX_LINKS", 3)
    overview = Overview()
    for i in range(10):
        overview.add(_verdict(_flow(i, f"198.51.100.{i}"), alert=False))
    links = overview.data().links
    assert len(links) == 4 and sum(link.flows for link in links) == 10
    assert [link for link in links if link.destination == "other destinations"][0].flows == 7


def test_inbound_and_lan_flows_count_for_the_device_but_not_as_egress() -> None:
    overview = Overview()
    overview.add(_verdict(_flow(0, "10.20.0.53", direction="internal"), "not-egress", alert=False))
    data = overview.data()
    assert data.devices[0].bytes_out == 100 and not data.links and not data.countries and data.bytes_out.lines == ()


def test_sankey_bands_merged_past_the_top_destinations_keep_the_worst_verdict() -> None:
    """Destinations past the top ones are one node; the band to it is coloured by the worst
    verdict of what it merges, and carries both flows and bytes (the buttons switch)."""
    links = [Link("cam", "a.example", "GB", 900, 3, "allowed"), Link("cam", "b.example", "CN", 10, 1, "denied"), Link("cam", "c.example", "DE", 5, 2, "unexpected")]
    trace = charts.sankey(links, {"cam": DeviceRow("cam", covered=True)}, top_destinations=1)["data"][0]
    assert trace["node"]["label"] == ["cam", "a.example", "GB United Kingdom", "other destinations", "CN China", "DE Germany"]
    assert trace["node"]["color"][0] == "#c0392b"  # covered vendor
    band = next(i for i, (s, t) in enumerate(zip(trace["link"]["source"], trace["link"]["target"])) if (s, t) == (0, 3))
    assert trace["link"]["color"][band] == charts.VERDICT_COLOURS["denied"] and trace["link"]["value"][band] == 3
    bytes_view = charts.sankey(links, {}, top_destinations=1)["layout"]["updatemenus"][0]["buttons"][1]["args"][0]
    assert bytes_view["link.value"][0][band] == 15


def test_page_is_self_contained() -> None:
    """Every script and style is inline: no src=, no <link>, no @import or url(), no address
    outside plotly.js itself; the page forbids any load by its Content-Security-Policy."""
    page = _report([_verdict(_flow(0, name="cloud.example"))])
    own = re.sub(r"<script>.*?</script>", "<script></script>", page, count=1, flags=re.S)  # plotly.js is the first plain script
    assert "Plotly.newPlot" in page and len(page) > 4_000_000
    assert not re.search(r"<(script|img|iframe|link)[^>]*\s(src|href)=", own, re.I)
    assert "@import" not in own and "url(" not in own and not re.search(r"https?://", own)
    assert "default-src 'none'" in own
    assert page.count("<script") == page.count("</script>") == 3


def test_hostile_names_are_escaped_in_the_tables_and_the_chart_data() -> None:
    """A hostname that came from the network (SNI, HTTP Host, DNS) is text everywhere: escaped
    by the template, `\\u003c`-escaped in the JSON, and entity-escaped for plotly's labels."""
    page = _report([_verdict(_flow(0, name=HOSTILE))])
    assert HOSTILE not in page and "<img src=x" not in page and "window.pwned=1</script>" not in page
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=&#34;window.pwned=2&#34;&gt;" in page
    labels = _figures(page)["sankey"]["data"][0]["node"]["label"]
    assert '&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror="window.pwned=2"&gt;' in labels


def test_page_shows_summary_devices_and_grouped_alerts() -> None:
    """The summary counts and inputs, a row per device with covered vendors marked, one alerts
    row per (device, destination, port, rule), and the charts' data."""
    other = "3C-EF-8C-00-00-21"
    verdicts = [_verdict(_flow(i, name="cloud.example")) for i in range(3)] + [_verdict(_flow(60, "192.0.2.5", mac=other, country="CN"), covered=False)]
    page = _report(verdicts, names={other: "lamp-02"}, policy="deploy/policy.example.yaml")
    assert "sample.pcap" in page and "42 packets read" in page and "deploy/policy.example.yaml" in page
    assert re.search(r"<b>4</b><span>flows \(4 egress\)", page) and re.search(r"<b>4</b><span>alert records in 2 rows", page)
    assert re.search(r'<tr class="covered" data-device="44-19-B6-12-34-56">', page) and re.search(rf'<tr class="" data-device="{other}">', page)
    assert page.count('data-rule="unexpected-destination"') == 2
    assert "2026-01-15T10:00:00Z" in page and "2026-01-15T10:01:01Z" in page
    figures = _figures(page)
    assert {"sankey", "bytes-over-time", "alerts-over-time", "countries-chart"} <= set(figures)
    assert "lamp-02 (3C-EF-8C-00-00-21)" in figures["sankey"]["data"][0]["node"]["label"]
    assert sum(sum(t["y"]) for t in figures["bytes-over-time"]["data"]) == 400
    assert sum(sum(t["y"]) for t in figures["alerts-over-time"]["data"]) == 4


def test_device_rows_from_elsewhere_replace_those_of_the_flows() -> None:
    """A device inventory can hand in its rows: a covered camera that never sent egress is on the page."""
    run = RunInfo(("x.pcap",), 1, 0, 0, 0)
    overview = Overview().data(devices=[DeviceRow("44-19-B6-00-00-01", vendor="Hikvision", covered=True, ips=("10.20.1.50",))])
    page = render_html(run, overview, group_alerts([]))
    assert '<tr class="covered" data-device="44-19-B6-00-00-01">' in page and "No egress flow." in page and "No alert." in page


def test_an_empty_run_still_renders() -> None:
    page = _report([])
    assert "No device seen." in page and "No egress flow." in page and "no flow" in page


def test_json_report_streams_as_before_with_the_html_beside_it() -> None:
    """`--report F` beside json: the NDJSON lines as before on the chosen output, the page to F."""
    out, html = io.StringIO(), io.StringIO()
    report = Report("json", out, html=html)
    asyncio.run(report.write([_verdict(_flow(0))]))
    report.finish()
    assert [r["event"]["kind"] for r in ndjson(out.getvalue())] == ["alert"]
    assert html.getvalue().startswith("<!DOCTYPE html>")


COMMON = ("--policy", POLICY)
SAMPLE = PCAPS / "trunk-qinq-mixed.pcap"


def _geo(geoip: dict[str, Path]) -> tuple[str, ...]:
    return (*map(str, COMMON), "--geoip-country", str(geoip["country"]), "--geoip-asn", str(geoip["asn"]))


def test_format_html_to_a_file_and_report_beside_the_table(geoip: dict[str, Path], tmp_path: Path) -> None:
    """`--format html -o F` writes the page to F and nothing to stdout; `--report F` writes it
    beside the table on stdout; `-o F` takes any format (CSV here), `-o -` is stdout."""
    page = tmp_path / "report.html"
    proc = run_egress("analyze", SAMPLE, *_geo(geoip), "--format", "html", "-o", page)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and page.read_text().startswith("<!DOCTYPE html>") and "44-19-B6-00-00-77" in page.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    umask = os.umask(0o022)
    os.umask(umask)
    assert page.stat().st_mode & 0o777 == 0o666 & ~umask  # as `> report.html` would make it
    beside = tmp_path / "beside.html"
    proc = run_egress("analyze", SAMPLE, *_geo(geoip), "--report", beside)
    assert proc.returncode == 0 and "Devices by vendor: Hikvision 1, Uniview 1" in proc.stdout
    assert "48-EA-63-00-00-50" in beside.read_text()
    rows = tmp_path / "alerts.csv"
    assert run_egress("analyze", SAMPLE, *_geo(geoip), "--format", "csv", "-o", rows).stdout == ""
    assert rows.read_text().startswith("first_seen,last_seen") and len(rows.read_text().splitlines()) == 4
    dash = run_egress("analyze", SAMPLE, *_geo(geoip), "--format", "csv", "-o", "-")
    assert dash.stdout == rows.read_text()


@pytest.mark.parametrize("option", ["-o", "--report"])
@pytest.mark.parametrize("where", ["missing/dir/report.html", "."])
def test_a_report_that_cannot_be_written_is_one_line_exit_2(option: str, where: str, geoip: dict[str, Path], tmp_path: Path) -> None:
    """`-o`/`--report` into a missing directory or onto a directory: one line naming it, exit 2, before any analysis."""
    target = tmp_path / where
    proc = run_egress("analyze", SAMPLE, *_geo(geoip), "--format", "html", option, target)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("egress: ")]
    what = "html report" if option == "-o" else "HTML report"
    assert errors == [f"egress: {target}: cannot write the {what}: " + ("No such file or directory" if where != "." else "Is a directory")]
    assert "Traceback" not in proc.stderr and "capture_started" not in proc.stderr


def test_report_dash_beside_stdout_is_refused_and_no_input_leaves_no_file(geoip: dict[str, Path], tmp_path: Path) -> None:
    """`--report -` when the chosen format has stdout too would mix them: exit 2. A run that
    read no input writes no report (not an empty one) and keeps an earlier one."""
    proc = run_egress("analyze", SAMPLE, *_geo(geoip), "--report", "-")
    assert proc.returncode == 2 and "--report -: the table report goes to standard output already" in proc.stderr
    junk = tmp_path / "junk.pcap"
    junk.write_text("not a capture\n")
    page = tmp_path / "report.html"
    page.write_text("earlier")
    proc = run_egress("analyze", junk, *_geo(geoip), "--format", "html", "-o", page)
    assert proc.returncode == 2 and page.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["junk.pcap", "report.html"]
