"""deploy/grafana: the dashboard's structure and the provisioning files. (Its queries run
against a real Prometheus in test_stack.py, and its learned-baseline panels here, fed by a
run with a `baseline:` policy.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from pathlib import Path

import yaml

from tests.conftest import PCAPS
from tests.deploy.conftest import DEPLOY, EGRESS, Processes, egress_env, free_port, http_get, scrape, tool, wait_for

GRAFANA = DEPLOY / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "egress.json").read_text())


def panels() -> Iterator[dict]:
    """Every panel that shows data (rows only arrange them)."""
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def test_dashboard_is_a_current_grafana_dashboard() -> None:
    """schemaVersion ~39, a stable uid and title, and unique panel ids."""
    assert 36 <= DASHBOARD["schemaVersion"] <= 41
    assert DASHBOARD["uid"] == "egress-overview" and DASHBOARD["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


def test_the_datasource_is_a_template_variable() -> None:
    """A `datasource` variable of type prometheus, and every panel and target uses it (no hard-wired datasource uid)."""
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("site", "group"):
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_every_panel_has_targets_with_an_expression() -> None:
    """Every data panel has at least one target, each with a non-empty expr and a unique refId."""
    found = list(panels())
    assert len(found) >= 15
    for panel in found:
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def test_panels_cover_what_the_soc_asked_for() -> None:
    """Alerts over time by rule and by country, denied/unexpected by group, devices by vendor, agent and consumer health."""
    by_title = {p["title"]: p for p in panels()}
    exprs = {title: " ".join(t["expr"] for t in p["targets"]) for title, p in by_title.items()}
    assert "sum by (rule)" in exprs["Alerts by rule"] and "egress_alerts_total" in exprs["Alerts by rule"]
    assert "sum by (country)" in exprs["Alerts by destination country"]
    assert 'category=~"deny|unexpected"' in exprs["Denied and unexpected destinations by group"]
    assert "sum by (group, category)" in exprs["Denied and unexpected destinations by group"]
    everything = " ".join(exprs.values())
    for metric in ("egress_packets_captured_total", "egress_packets_dropped_total", "egress_spool_records", "egress_publish_errors_total",
                   "egress_flows_evaluated_total", "egress_deadletter_total", "egress_policy_reload_failures_total", "egress_devices"):  # fmt: skip
        assert metric in everything, metric
    assert "sum by (verdict)" in exprs["Flows evaluated by verdict"]


def test_covered_vendors_are_highlighted() -> None:
    """Devices by vendor: the covered="true" query is its own target, and an override paints that target red."""
    panel = next(p for p in panels() if p["title"].startswith("Devices by vendor"))
    covered = [t for t in panel["targets"] if 'covered="true"' in t["expr"]]
    assert len(covered) == 1 and "sum by (vendor)" in covered[0]["expr"]
    overrides = panel["fieldConfig"]["overrides"]
    assert {"matcher": {"id": "byFrameRefID", "options": covered[0]["refId"]},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]} in overrides  # fmt: skip


def test_grid_positions_do_not_overlap() -> None:
    """Panels are laid out on the 24-column grid without overlapping."""
    cells: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine


def test_only_known_variables_are_used() -> None:
    """Queries use only the dashboard's variables and Grafana's built-in $__ ones."""
    known = {v["name"] for v in DASHBOARD["templating"]["list"]} | {"__rate_interval", "__interval", "__range"}
    for panel in panels():
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert used <= known, (panel["title"], used - known)


def test_provisioning_files() -> None:
    """A file provider for the dashboards folder and a Prometheus datasource, both apiVersion 1."""
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "egress.yaml").read_text())
    assert provider["apiVersion"] == 1
    (p,) = provider["providers"]
    assert p["type"] == "file" and p["options"]["path"]
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "egress-prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"].startswith("http")


def test_learned_baseline_panels() -> None:
    """A "Learned baseline" row: new destinations over time by group, volume alerts, and the learning status
    (egress_baseline_learning by group, egress_baseline_keys by group and state)."""
    titles = [p["title"] for p in DASHBOARD["panels"]]
    assert "Learned baseline" in titles
    by_title = {p["title"]: p for p in panels()}
    exprs = {title: [t["expr"] for t in p["targets"]] for title, p in by_title.items()}
    (new,) = exprs["New destinations over time by group"]
    assert new.startswith("sum by (group) (") and 'category="new-destination"' in new and "increase(egress_alerts_total{" in new
    (volume,) = exprs["Volume alerts"]
    assert 'category="volume"' in volume and "increase(egress_alerts_total{" in volume and "sum by (site, group)" in volume
    learning, keys = exprs["Baseline learning status"]
    assert "by (group) (egress_baseline_learning{" in learning
    assert "sum by (group, state) (egress_baseline_keys{" in keys
    for title in ("New destinations over time by group", "Volume alerts", "Baseline learning status"):
        for expr in exprs[title]:
            assert 'site=~"$site", group=~"$group"' in expr, title


def test_learned_baseline_panels_have_data_in_prometheus(geoip: dict[str, Path], processes: Processes, tmp_path: Path) -> None:
    """`egress run --linger` of the learn-then-enforce capture with a `baseline:` policy, scraped by the shipped
    Prometheus config and rules: every dashboard query succeeds, the new-destination and learning-status panels
    have data (3 new destinations, keys learned and alerted, learning over), and EgressNewDestination fires."""
    from tests.deploy.test_stack import dashboard_queries, prometheus_config, query

    prometheus_bin = tool("prometheus", "prometheus")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "version": 1, "covered_vendors": [],
        "groups": [{"name": "street-cctv", "match": {"vlans": [20]},
                    "allow": [{"name": "ntp", "destinations": ["pool.ntp.org", "*.pool.ntp.org"], "ports": ["udp/123"]}],
                    "deny": [{"name": "vendor-p2p-cloud", "destinations": ["*.hik-connect.com"], "severity": "high"}]}],
        "baseline": {"learn_for": "15m"}, "default_verdict": "alert",
    }))  # fmt: skip
    egress_port, prometheus_port = free_port(), free_port()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    run = processes.start("egress-run", [EGRESS, "run", "--read", PCAPS / "baseline-learn-enforce.pcap", "--linger", "--policy", policy,
                                          "--baseline", tmp_path / "baseline.json", "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]],
                          stdout=tmp_path / "alerts.ndjson", env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{egress_port}"))  # fmt: skip
    wait_for("egress run's baseline keys in /metrics", lambda: scrape(egress_port, 'state="alerted"'), procs=[run], logs=processes.logs)
    config = prometheus_config(tmp_path, egress_port, free_port())  # no Alertmanager: the alerts are read off Prometheus
    procs = [run, processes.start("prometheus", [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                                                 f"--web.listen-address=127.0.0.1:{prometheus_port}"])]  # fmt: skip
    watch = {"procs": procs, "logs": processes.logs}
    wait_for("Prometheus scraping egress", lambda: query(prometheus, "egress_baseline_keys")["data"]["result"], **watch)

    def firing() -> list[dict]:
        alerts = json.loads(http_get(f"{prometheus}/api/v1/alerts"))["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "EgressNewDestination" and a["state"] == "firing"]

    (alert,) = wait_for("EgressNewDestination firing", firing, **watch)
    assert {k: alert["labels"][k] for k in ("site", "group", "rule", "severity")} == {
        "site": "default", "group": "street-cctv", "rule": "new-destination", "severity": "medium"}  # fmt: skip
    assert alert["annotations"]["runbook_url"].endswith("#egressnewdestination")
    assert "egress baseline show --group street-cctv" in alert["annotations"]["description"]

    results = {}
    for title, ref, expr in dashboard_queries():
        answer = query(prometheus, expr)
        assert answer["status"] == "success", (title, expr, answer)
        results[(title, ref)] = answer["data"]["result"]
    (new,) = results[("New destinations over time by group", "A")]
    assert new["metric"] == {"group": "street-cctv"} and float(new["value"][1]) == 3
    assert results[("Volume alerts", "A")] == []  # no volume: section in this policy
    (learning,) = results[("Baseline learning status", "A")]
    assert learning["metric"] == {"group": "street-cctv"} and float(learning["value"][1]) == 0
    keys = {r["metric"]["state"]: float(r["value"][1]) for r in results[("Baseline learning status", "B")]}
    assert keys == {"learned": 2, "alerted": 3}
    for proc in procs:
        assert processes.stop(proc) == 0, proc.args[0]


def test_device_inventory_panel() -> None:
    """A table of the inventory (egress_devices by site, group, vendor and covered, as a table at the
    range's end) in the Devices row, whose covered column is painted red where it is true."""
    panel = next(p for p in panels() if p["title"].startswith("Device inventory"))
    assert panel["type"] == "table"
    (target,) = panel["targets"]
    assert target["expr"].startswith("sum by (site, group, vendor, covered) (egress_devices{") and 'site=~"$site", group=~"$group"' in target["expr"]
    assert target["instant"] is True and target["format"] == "table"
    covered = next(o for o in panel["fieldConfig"]["overrides"] if o["matcher"] == {"id": "byName", "options": "covered"})
    properties = {p["id"]: p["value"] for p in covered["properties"]}
    assert properties["mappings"][0]["options"]["true"]["color"] == "red"
    assert properties["custom.cellOptions"] == {"type": "color-background"}
    titles = [p["title"] for p in DASHBOARD["panels"]]
    assert titles.index("Devices") < titles.index(panel["title"]) < titles.index("Agent health")
