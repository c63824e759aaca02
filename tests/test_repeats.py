"""`alerts.repeat_after`: the services emit an alert once per (device, destination, port, rule)
within the window and count the repeats; `analyze` keeps every alert record."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry

from egress.bus.memory import MemoryBus
from egress.codec import flow_message
from egress.model import Alert
from egress.policy.evaluate import Evaluator
from egress.policy.repeats import RepeatFilter
from egress.policy.schema import load_policy
from egress.services.rules import RulesStage
from egress.sinks.metrics import MetricsSink
from egress.telemetry import RulesMetrics
from tests.conftest import PCAPS, ndjson, run_egress
from tests.test_telemetry import _feed, _flow, _value

CAPTURE = PCAPS / "baseline-learn-enforce.pcap"  # cameras that come back to the same clouds


def _alert(i: float, dest: str = "198.51.100.10", rule: str = "cams/unexpected/unexpected-destination") -> Alert:
    flow = replace(_flow(0, dest), start=1768471200.0 + i, end=1768471201.0 + i)
    return Alert(flow, "cams", f"id{i}", "unexpected", rule, "unexpected-destination", "p", "medium", "m")


def test_a_repeat_within_the_window_is_held_and_the_next_window_emits() -> None:
    repeats = RepeatFilter(3600)
    assert repeats.admit(_alert(0))
    assert not repeats.admit(_alert(10))
    assert not repeats.admit(_alert(-10))  # out of order, still the same hour
    assert repeats.admit(_alert(0, dest="203.0.113.7"))  # another destination
    assert repeats.admit(_alert(5, rule="cams/deny/p2p"))  # another rule
    assert not repeats.admit(_alert(3599))
    assert repeats.admit(_alert(3600))  # a window after the one emitted
    assert not repeats.admit(_alert(7199))


def test_the_table_forgets_keys_a_window_old() -> None:
    repeats = RepeatFilter(60)
    repeats._prune_at = 10
    for i in range(10):
        assert repeats.admit(_alert(i, dest=f"198.51.100.{i}"))
    assert len(repeats._emitted) == 10  # pruned at 10, but all within the window of the latest
    assert repeats.admit(_alert(1000, dest="198.51.100.200"))
    assert len(repeats._emitted) == 11
    repeats._prune_at = 11
    assert repeats.admit(_alert(1001, dest="198.51.100.201"))
    assert set(repeats._emitted) == {k for k in repeats._emitted if k[1] in ("198.51.100.200", "198.51.100.201")}


def test_the_rules_stage_counts_what_it_holds_back(tmp_path: Path) -> None:
    """Three flows to one destination within the hour: one alert emitted, two counted in
    egress_alerts_suppressed_total."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nname: p\ngroups:\n  - name: cams\n")
    metrics = RulesMetrics(CollectorRegistry())
    bus = MemoryBus("flows")
    stage = RulesStage(Evaluator(load_policy(policy)), bus, [MetricsSink(metrics)], metrics, dead_letters=bus, dead_letter_topic="dlq", repeats=RepeatFilter(3600))
    asyncio.run(_feed(stage, bus, [flow_message(_flow(i, "198.51.100.10")) for i in range(3)]))
    labels = {"site": "hq", "group": "cams"}
    assert _value(metrics, "egress_alerts_suppressed_total", **labels, category="unexpected") == 2
    assert _value(metrics, "egress_alerts_total", **labels, category="unexpected", rule="unexpected-destination", severity="medium", vendor="Hikvision", country="unknown") == 1


def test_run_emits_one_alert_per_group_of_the_analyze_report(tmp_path: Path) -> None:
    """`egress run` (repeat_after 1h by default) emits one alert per row of `analyze`'s grouped
    CSV, the first of each; with repeat_after 0 every alert record, as `analyze` gives them."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ncovered_vendors: []\n")
    env = {"EGRESS_METRICS__LISTEN": "127.0.0.1:0"}
    every = ndjson(run_egress("analyze", CAPTURE, "--policy", policy, "--format", "json").stdout)
    rows = list(csv.DictReader(io.StringIO(run_egress("analyze", CAPTURE, "--policy", policy, "--format", "csv").stdout)))
    once = ndjson(run_egress("run", "--read", CAPTURE, "--policy", policy, env=env).stdout)
    assert len(every) > len(rows) == len(once)
    first: dict[tuple[str, str, str, int, str], dict] = {}
    for a in sorted(every, key=lambda a: a["event"]["start"]):
        first.setdefault((a["device"]["id"], a["destination"]["ip"], a["network"]["transport"], a["destination"].get("port", 0), a["rule"]["id"]), a)
    assert {a["event"]["id"] for a in once} == {a["event"]["id"] for a in first.values()}
    all_of_them = ndjson(run_egress("run", "--read", CAPTURE, "--policy", policy, env=env | {"EGRESS_ALERTS__REPEAT_AFTER": "0"}).stdout)
    assert sorted(a["event"]["id"] for a in all_of_them) == sorted(a["event"]["id"] for a in every)
