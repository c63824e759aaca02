"""`alerts.repeat_after` through Kafka: `agent` + `rules` emit exactly the alerts of one
`egress run` on the same input (one per device, destination, port and rule within the
hour) and count the rest."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import ndjson, run_egress
from tests.kafka.test_baseline_group import _gauge
from tests.kafka.test_streaming import Rules, rules_procs, topics_env  # noqa: F401 - the fixture
from tests.test_repeats import CAPTURE

pytestmark = pytest.mark.kafka


def test_agent_and_rules_hold_back_the_repeats_run_holds_back(kafka_bootstrap: str, tmp_path: Path, rules_procs: list[Rules]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ncovered_vendors: []\n")
    every = ndjson(run_egress("analyze", CAPTURE, "--policy", policy, "--format", "json").stdout)
    once = {a["event"]["id"] for a in ndjson(run_egress("run", "--read", CAPTURE, "--policy", policy, env={"EGRESS_METRICS__LISTEN": "127.0.0.1:0"}).stdout)}
    assert len(every) > len(once)
    env = topics_env(kafka_bootstrap)
    member = Rules(env, tmp_path / "alerts.ndjson", "--policy", policy)
    rules_procs.append(member)
    member.wait_assigned()
    agent = run_egress("agent", "--read", CAPTURE, "--policy", policy, env=env)
    assert agent.returncode == 0, agent.stderr
    member.wait_for(len(once))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _gauge(member, "egress_alerts_suppressed_total", category="unexpected") != len(every) - len(once):
        time.sleep(0.3)
    assert _gauge(member, "egress_alerts_suppressed_total", category="unexpected") == len(every) - len(once)
    assert member.stop() == 0
    assert [a["event"]["id"] for a in member.alerts()] and {a["event"]["id"] for a in member.alerts()} == once
    assert len(member.alerts()) == len(once)
