"""deploy/grafana: the dashboard's structure and the provisioning files. (Its queries run
against a real Prometheus in test_stack.py.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import yaml

from tests.deploy.conftest import DEPLOY

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
