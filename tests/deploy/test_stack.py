"""End to end: egress → Prometheus (the shipped rules) → Alertmanager (the shipped routing)
→ webhooks, and every query of the Grafana dashboard against that Prometheus.

Debian's prometheus and prometheus-alertmanager run as real processes on
loopback, on free ports, with temporary data directories. Their configs are the
shipped ones with only ports, targets, intervals and webhook URLs rewritten; the
rule file is loaded as shipped. `egress run --read --linger` analyses a camera
VLAN capture with denied destinations and keeps serving its metrics.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import PCAPS, POLICY, ndjson, run_egress
from tests.deploy.conftest import DEPLOY, EGRESS, Processes, egress_env, free_port, http_get, scrape, tool, wait_for

RULES = DEPLOY / "prometheus" / "egress-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "egress.json"
CAPTURE = PCAPS / "street-cctv-vlan20.pcap"
# What Grafana would put in place of its variables.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$site": ".*", "$group": ".*"}
POLICY_ALERTS = {"EgressDeniedDestination", "EgressUnexpectedDestination", "EgressCoveredVendorDevice"}


class Webhooks:
    """The pager and the SOC: an HTTP server on loopback that keeps every notification by path."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, path: str) -> list[dict]:
        return [a for p, body in list(self.received) if p == path for a in body["alerts"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prometheus_config(directory: Path, egress_port: int, alertmanager_port: int) -> Path:
    """The shipped prometheus.yml: targets and ports for this test, 1 s intervals, the shipped rule file."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{alertmanager_port}"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # `egress run` serves the agent's and the rules' metrics on one port: README says list it as an agent.
    jobs["egress-agent"]["static_configs"][0]["targets"] = [f"127.0.0.1:{egress_port}"]
    jobs["egress-rules"]["static_configs"][0]["targets"] = []
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def alertmanager_config(directory: Path, webhooks: Webhooks) -> Path:
    """The shipped alertmanager.yml: webhooks on loopback, 1 s group waits."""
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = f"http://127.0.0.1:{webhooks.port}/{receiver['name']}"
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"] = "1s"
    config["route"]["group_interval"] = "1s"
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def query(prometheus: str, expr: str) -> dict:
    return json.loads(http_get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr with Grafana's variables substituted) for every target."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(name, value).replace("${" + name[1:] + "}", value)
            assert "$" not in expr, expr
            out.append((panel["title"], target["refId"], expr))
    return out


def variable_values(prometheus: str) -> dict[str, list[str]]:
    """The values Grafana would offer for each `label_values(selector, label)` variable."""
    out = {}
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
        assert found, variable["query"]
        selector = found.group(1).replace("$site", ".*")
        url = f"{prometheus}/api/v1/label/{found.group(2)}/values?" + urllib.parse.urlencode({"match[]": selector})
        out[variable["name"]] = json.loads(http_get(url))["data"]
    return out


@pytest.fixture
def webhooks() -> Iterator[Webhooks]:
    hooks = Webhooks()
    yield hooks
    hooks.close()


def test_denied_egress_reaches_alertmanager_and_every_dashboard_query_works(
    geoip: dict[str, Path], processes: Processes, webhooks: Webhooks, tmp_path: Path
) -> None:
    """egress run's deny alerts fire in Prometheus, reach Alertmanager with group, rule, country and severity and are
    routed critical → pager, others → SOC; every dashboard query succeeds there and the alert panels have data."""
    prometheus_bin = tool("prometheus", "prometheus")
    alertmanager_bin = tool("prometheus-alertmanager", "prometheus-alertmanager")
    geo = ["--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]]
    offline = run_egress("analyze", CAPTURE, *geo, "--format", "json")
    assert offline.returncode == 0, offline.stderr
    denied = {(a["labels"]["group"], a["rule"]["name"], a["destination"]["geo"]["country_iso_code"], a["egress"]["severity"])
              for a in ndjson(offline.stdout) if a["rule"]["category"] == "deny"}  # fmt: skip
    assert {s for *_, s in denied} == {"critical", "high"}

    egress_port, prometheus_port, alertmanager_port = free_port(), free_port(), free_port()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    alertmanager = f"http://127.0.0.1:{alertmanager_port}"
    run = processes.start("egress-run", [EGRESS, "run", "--read", CAPTURE, "--linger", *geo], stdout=tmp_path / "alerts.ndjson",
                          env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{egress_port}"))  # fmt: skip
    wait_for("egress run's alerts in /metrics", lambda: scrape(egress_port, 'category="deny"'), procs=[run], logs=processes.logs)
    procs = [
        run,
        processes.start("alertmanager", [alertmanager_bin, f"--config.file={alertmanager_config(tmp_path, webhooks)}",
                                         f"--storage.path={tmp_path / 'alertmanager-data'}",
                                         f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address="]),
        processes.start("prometheus", [prometheus_bin, f"--config.file={prometheus_config(tmp_path, egress_port, alertmanager_port)}",
                                       f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                                       f"--web.listen-address=127.0.0.1:{prometheus_port}"]),
    ]  # fmt: skip
    watch = {"procs": procs, "logs": processes.logs}
    wait_for("Prometheus scraping egress", lambda: query(prometheus, 'up{job="egress-agent"} == 1')["data"]["result"], **watch)

    def denied_in_alertmanager() -> list[dict] | None:
        alerts = [a for a in json.loads(http_get(f"{alertmanager}/api/v2/alerts")) if a["labels"]["alertname"] == "EgressDeniedDestination"]
        got = {(a["labels"]["group"], a["labels"]["rule"], a["labels"]["country"], a["labels"]["severity"]) for a in alerts}
        return alerts if got == denied else None

    alerts = wait_for("EgressDeniedDestination in Alertmanager", denied_in_alertmanager, **watch)
    for alert in alerts:
        assert alert["status"]["state"] == "active"
        assert {"site", "group", "rule", "country", "vendor", "severity"} <= set(alert["labels"])
        assert alert["annotations"]["runbook_url"].endswith("#egressdenieddestination")
        assert alert["labels"]["vendor"] in alert["annotations"]["description"]
        expected = "pager" if alert["labels"]["severity"] == "critical" else "soc-webhook"
        assert [r["name"] for r in alert["receivers"]] == [expected]

    def notified() -> bool:
        pager = {(a["labels"]["alertname"], a["labels"]["severity"]) for a in webhooks.alerts("/pager")}
        soc = {(a["labels"]["alertname"], a["labels"]["severity"]) for a in webhooks.alerts("/soc-webhook")}
        return ("EgressDeniedDestination", "critical") in pager and ("EgressDeniedDestination", "high") in soc

    wait_for("the pager and SOC webhooks notified", notified, **watch)
    assert {a["labels"]["severity"] for a in webhooks.alerts("/pager")} == {"critical"}
    assert "critical" not in {a["labels"]["severity"] for a in webhooks.alerts("/soc-webhook")}
    assert {(a["labels"]["site"], a["labels"]["group"]) for a in webhooks.alerts("/pager")} == {("default", "street-cctv")}

    active = json.loads(http_get(f"{prometheus}/api/v1/alerts"))["data"]["alerts"]
    firing = {a["labels"]["alertname"] for a in active if a["state"] == "firing"}
    assert firing == POLICY_ALERTS, "operational alerts must stay quiet on a healthy run"

    results = {}
    for title, ref, expr in dashboard_queries():
        answer = query(prometheus, expr)
        assert answer["status"] == "success", (title, expr, answer)
        results[(title, ref)] = answer["data"]["result"]
    for title in ("Alerts by rule", "Alerts by destination country", "Denied and unexpected destinations by group",
                  "Alerts in range by group, rule, country and vendor", "Devices by vendor (covered vendors in red)"):  # fmt: skip
        assert results[(title, "A")], f"{title}: no data"
    assert {r["metric"]["rule"] for r in results[("Alerts by rule", "A")]} >= {rule for _, rule, _, _ in denied}
    assert {r["metric"]["country"] for r in results[("Alerts by destination country", "A")]} >= {c for _, _, c, _ in denied}
    covered = {r["metric"]["vendor"] for r in results[("Devices by vendor (covered vendors in red)", "A")]}
    assert covered == {"Hikvision", "Dahua"}
    for name, values in variable_values(prometheus).items():
        assert values, f"dashboard variable {name} has no values"

    for proc in procs:
        assert processes.stop(proc) == 0, proc.args[0]
