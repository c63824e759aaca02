"""The HTML report in a real browser: Debian's headless Chromium, with the network taken
away (a network namespace of its own where the system allows, and the page told it is
offline), opens the report of the sample captures, logs no error, requests nothing but the
file, draws the diagram (a screenshot is kept in the test's tmp dir) and shows every alerted
device. `scripts/install-system-deps --test` installs chromium; without it these skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cdp import Browser, chromium
from tests.conftest import PCAPS, POLICY, ndjson, run_egress

pytestmark = pytest.mark.skipif(chromium() is None, reason="chromium is not installed (scripts/install-system-deps --test installs it)")

SAMPLES = sorted(PCAPS.glob("*.pcap")) + sorted(PCAPS.glob("*.pcapng"))


def _draw(browser: Browser, page: Path) -> None:
    """Open the page and wait until plotly has drawn the Sankey's nodes."""
    browser.open(page.as_uri())
    for _ in range(50):
        if browser.evaluate("document.querySelectorAll('#sankey .sankey-node').length") > 0:
            return
        browser.call("Runtime.evaluate", expression="new Promise(r => setTimeout(r, 100))", awaitPromise=True)


def test_the_browser_harness_sees_requests_and_errors(tmp_path: Path) -> None:
    """The checks below can fail: a page that loads a CDN script and logs an error is caught
    (the request is seen even though it cannot leave)."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><script src="https://cdn.plot.ly/plotly-3.0.0.min.js"></script><script>console.error("boom")</script></body></html>')
    with Browser(tmp_path) as browser:
        browser.open(page.as_uri())
        assert "https://cdn.plot.ly/plotly-3.0.0.min.js" in browser.requests()
        assert any("boom" in p for p in browser.problems())


def test_report_of_the_samples_renders_offline_with_every_alerted_device(geoip: dict[str, Path], tmp_path: Path) -> None:
    """The report (written with `--report` beside the JSON alerts) opens with no console error
    and no request but its own file; the Sankey has a node for every device that alerted on
    egress, the page shows every alerted device's MAC, the charts have their bars, and the
    alerts filter shows just the rows asked for."""
    page = tmp_path / "report.html"
    proc = run_egress("analyze", *SAMPLES, "--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"],
                      "--format", "json", "--report", page)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    alerts = ndjson(proc.stdout)
    alerted = {a["device"]["id"] for a in alerts}
    on_egress = {a["device"]["id"] for a in alerts if a["network"]["direction"] == "outbound"}
    assert len(alerted) == 10 and on_egress  # camera-clouds.pcap adds its camera, lan-only-cameras.pcap 3 covered cameras with no egress
    with Browser(tmp_path) as browser:
        _draw(browser, page)
        shot = browser.screenshot(tmp_path / "who-talks-to-whom.png", "#who")
        browser.screenshot(tmp_path / "report.png")
        assert browser.problems() == []
        assert browser.requests() == [page.as_uri()]
        buttons = set(browser.evaluate("Array.from(document.querySelectorAll('.modebar-btn')).map(b => b.getAttribute('data-title'))"))
        assert "Download plot as a PNG" in buttons and not [b for b in buttons if "Share" in b or "Cloud" in b or "Studio" in b], buttons
        text = browser.evaluate("document.body.innerText")
        assert {mac for mac in alerted if mac not in text} == set()
        labels = browser.evaluate("Array.from(document.querySelectorAll('#sankey .sankey-node .node-label')).map(n => n.textContent)")
        assert all(any(mac in label for label in labels) for mac in on_egress), labels
        assert "CN China" in labels and "dev.hik-connect.com" in labels
        assert browser.evaluate("document.querySelectorAll('#sankey .sankey-link').length") >= len(on_egress)
        for chart in ("bytes-over-time", "alerts-over-time", "countries-chart"):
            assert browser.evaluate(f"document.querySelectorAll('#{chart} .trace.bars .point').length") > 0, chart
        deny = sum(1 for a in {(a["device"]["id"], a["destination"]["ip"], a["destination"].get("port"), a["rule"]["id"]) for a in alerts if a["rule"]["category"] == "deny"})
        shown = browser.evaluate("""(() => { const s = document.querySelector('select[data-filter=category]'); s.value = 'deny';
            s.dispatchEvent(new Event('input')); return [document.querySelectorAll('#alert-table tbody tr:not([hidden])').length,
            document.getElementById('alert-count').textContent]; })()""")  # fmt: skip
        assert shown == [deny, f"{deny} of {len(alerts)} rows shown"]
    assert shot.stat().st_size > 20_000  # a drawn diagram, not a blank box


def _hostile_capture(path: Path, host: str) -> None:
    """A Hikvision camera's HTTP request to an outside address, with `host` as its Host header."""
    from scapy.all import IP, TCP, Ether, wrpcap

    cam, cloud = ("44:19:b6:12:34:56", "10.20.1.11"), ("00:00:5e:00:01:14", "203.0.113.80")
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cam\r\n\r\n".encode()
    frames = [
        Ether(src=cam[0], dst=cloud[0]) / IP(src=cam[1], dst=cloud[1]) / TCP(sport=40000, dport=80, flags="S", seq=1000),
        Ether(src=cloud[0], dst=cam[0]) / IP(src=cloud[1], dst=cam[1]) / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001),
        Ether(src=cam[0], dst=cloud[0]) / IP(src=cam[1], dst=cloud[1]) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001),
        Ether(src=cam[0], dst=cloud[0]) / IP(src=cam[1], dst=cloud[1]) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001) / request,
    ]
    for i, frame in enumerate(frames):
        frame.time = 1768471200 + i / 10
    wrpcap(str(path), frames)


def test_a_hostile_http_host_is_shown_as_text_and_runs_nothing(tmp_path: Path) -> None:
    """A Host header that is HTML (so a destination name, in the tables and the Sankey) is
    shown as the text it is: no element of it is made, none of its script runs."""
    host = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    capture, page, policy = tmp_path / "hostile.pcap", tmp_path / "report.html", tmp_path / "policy.yaml"
    _hostile_capture(capture, host)
    policy.write_text("version: 1\n")
    proc = run_egress("analyze", capture, "--policy", policy, "--format", "html", "-o", page)
    assert proc.returncode == 0, proc.stderr
    with Browser(tmp_path) as browser:
        _draw(browser, page)
        assert browser.evaluate("window.pwned === undefined && document.querySelectorAll('img').length === 0")
        assert browser.evaluate("document.querySelectorAll('script').length") == 3
        assert host in browser.evaluate("document.getElementById('alert-table').innerText")
        labels = browser.evaluate("Array.from(document.querySelectorAll('#sankey .node-label')).map(n => n.textContent)")
        assert host in labels
        assert browser.problems() == [] and browser.requests() == [page.as_uri()]
