"""deploy/prometheus: the scrape config and alert rules pass promtool, every alert has
unit tests that fire and that stay quiet, and egress's own /metrics pass
`promtool check metrics` and hold every metric the rules and the dashboard use."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from tests.conftest import PCAPS, POLICY
from tests.deploy.conftest import DEPLOY, EGRESS, Processes, egress_env, free_port, promtool_check_metrics, scrape, tool, wait_for

PROM = DEPLOY / "prometheus"
RULES = PROM / "egress-alerts.yml"
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "egress.json"
# What SPEC's Metrics section promises, per half.
AGENT_METRICS = {"egress_packets_captured_total", "egress_packets_dropped_total", "egress_flows_exported_total",
                 "egress_publish_errors_total", "egress_spool_records", "egress_build_info"}  # fmt: skip
RULES_METRICS = {"egress_flows_evaluated_total", "egress_alerts_total", "egress_devices", "egress_deadletter_total",
                 "egress_policy_reload_failures_total", "egress_build_info"}  # fmt: skip


def promtool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool", "prometheus"), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_scrape_config_is_valid() -> None:
    """promtool check config accepts prometheus.yml and the rule file it loads."""
    proc = promtool("check", "config", PROM / "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_scrape_config_has_the_agent_and_rules_jobs() -> None:
    """Agents are scraped on 9108 as job egress-agent, rules consumers on 9109 as egress-rules."""
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]] for j in config["scrape_configs"]}
    assert jobs == {"egress-agent": ["localhost:9108"], "egress-rules": ["localhost:9109"]}
    assert config["rule_files"] == ["egress-alerts.yml"]


def test_alert_rules_are_valid() -> None:
    """promtool check rules (with its linter) accepts egress-alerts.yml."""
    proc = promtool("check", "rules", RULES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout  # none skipped


def test_alert_rule_unit_tests_pass() -> None:
    """promtool test rules passes every unit test in deploy/prometheus/tests."""
    assert RULE_TESTS
    proc = promtool("test", "rules", *RULE_TESTS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """Each alert of SPEC's list has at least one unit test where it fires and one where it must not."""
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names >= {"EgressDeniedDestination", "EgressUnexpectedDestination", "EgressCoveredVendorDevice", "EgressAgentDown",
                     "EgressCaptureDropping", "EgressPublishBacklog", "EgressConsumerLag"}  # fmt: skip
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def test_every_alert_has_a_severity_and_annotations() -> None:
    """Every alert routes by `severity` (from the metric or set by the rule) and carries summary, description and runbook_url."""
    for rule in alert_rules():
        by_metric = re.search(r"by \([^)]*\bseverity\b", rule["expr"]) is not None
        assert by_metric or rule.get("labels", {}).get("severity") in {"low", "medium", "high", "critical"}, rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
        assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())


def test_policy_alerts_name_group_rule_vendor_and_country() -> None:
    """The denied/unexpected alerts keep group, rule, vendor and country as labels and say them in their annotations."""
    for rule in alert_rules():
        if rule["alert"] not in ("EgressDeniedDestination", "EgressUnexpectedDestination"):
            continue
        assert "by (site, group, rule, country, vendor, severity)" in rule["expr"]
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        for label in ("group", "rule", "vendor", "country"):
            assert "{{ $labels.%s }}" % label in text, (rule["alert"], label)


def test_baseline_alerts_per_site_and_group_with_the_metrics_severity() -> None:
    """EgressNewDestination and EgressVolumeAnomaly count the new-destination and volume events per (site, group), take
    severity from the metric (medium, high), name group and site, and point at `egress baseline show|approve|forget`."""
    by_name = {r["alert"]: r for r in alert_rules()}
    for name, category in (("EgressNewDestination", "new-destination"), ("EgressVolumeAnomaly", "volume")):
        rule = by_name[name]
        assert "sum by (site, group, rule, severity)" in rule["expr"], name
        assert set(re.findall(r'category="([^"]+)"', rule["expr"])) == {category}, name
        assert "severity" not in rule.get("labels", {}), name
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        for label in ("group", "site"):
            assert "{{ $labels.%s }}" % label in text, (name, label)
        for word in ("egress baseline show", "approve", "forget"):
            assert word in rule["annotations"]["description"], (name, word)


def _metric_names(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")} | {
        line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def _used_metrics() -> set[str]:
    exprs = [r["expr"] for r in alert_rules()]
    exprs += [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    return set(re.findall(r"\begress_[a-z_]+\b", "\n".join(exprs)))


def test_egress_run_metrics_pass_promtool_and_hold_what_rules_and_dashboard_use(geoip: dict[str, Path], processes: Processes) -> None:
    """The live /metrics of `egress run --linger` pass promtool check metrics and export every egress_* name the alerts and the dashboard query."""
    port = free_port()
    run = processes.start("egress-run", [EGRESS, "run", "--read", PCAPS / "street-cctv-vlan20.pcap", "--linger", "--policy", POLICY,
                                          "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]],
                          env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}"))  # fmt: skip
    text = wait_for("egress run's alerts in /metrics", lambda: scrape(port, "egress_alerts_total{"),
                    procs=[run], logs=processes.logs)  # fmt: skip
    checked = promtool_check_metrics(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    exported = _metric_names(text)
    assert exported >= AGENT_METRICS | RULES_METRICS
    assert _used_metrics() - exported == set(), "the rules or the dashboard query metrics egress does not export"
    assert processes.stop(run) == 0


class _SilentKafka:
    """A TCP port that accepts and never answers: the agent serves /metrics while it waits for Kafka."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_egress_agent_metrics_pass_promtool(processes: Processes, tmp_path: Path) -> None:
    """The /metrics of `egress agent` (while it waits for Kafka) pass promtool check metrics and hold SPEC's agent metrics."""
    kafka = _SilentKafka()
    port = free_port()
    try:
        agent = processes.start("egress-agent", [EGRESS, "agent", "--read", PCAPS / "street-cctv-vlan20.pcap"],
                                env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}", EGRESS_SPOOL__PATH=str(tmp_path / "spool"),
                                               EGRESS_KAFKA__BOOTSTRAP_SERVERS=f"[127.0.0.1:{kafka.port}]"))  # fmt: skip
        text = wait_for("egress agent's /metrics", lambda: scrape(port), timeout=30, procs=[agent], logs=processes.logs)
        checked = promtool_check_metrics(text)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert _metric_names(text) >= AGENT_METRICS - {"egress_packets_captured_total", "egress_packets_dropped_total"}
        agent.send_signal(signal.SIGKILL)
    finally:
        kafka.close()


@pytest.mark.kafka
def test_egress_rules_metrics_pass_promtool(kafka_bootstrap: str, geoip: dict[str, Path], processes: Processes, tmp_path: Path) -> None:
    """After evaluating a capture from Kafka, the live /metrics of `egress rules` pass promtool check metrics and hold SPEC's rules metrics."""
    from tests.kafka.test_streaming import topics_env

    port = free_port()
    env = egress_env(**topics_env(kafka_bootstrap, EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}"))
    geo = ["--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]]
    agent_env = env | {"EGRESS_METRICS__LISTEN": "127.0.0.1:0", "EGRESS_SPOOL__PATH": str(tmp_path / "spool")}
    agent = subprocess.run([str(EGRESS), "agent", "--read", str(PCAPS / "street-cctv-vlan20.pcap"), *map(str, geo)],
                           env=agent_env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert agent.returncode == 0, agent.stderr
    rules = processes.start("egress-rules", [EGRESS, "rules", *geo], env=env)
    text = wait_for("egress rules' alerts in /metrics", lambda: scrape(port, 'category="deny"'),
                    procs=[rules], logs=processes.logs)  # fmt: skip
    checked = promtool_check_metrics(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _metric_names(text) >= RULES_METRICS
    assert processes.stop(rules) == 0
