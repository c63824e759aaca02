"""egress_baseline_keys and egress_baseline_learning follow the learned state through the rules stage."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from egress.bus.memory import MemoryBus
from egress.codec import flow_message
from egress.policy.evaluate import Evaluator
from egress.policy.schema import Policy
from egress.services.rules import RulesStage
from egress.sinks.metrics import BaselineMetrics
from egress.telemetry import RulesMetrics
from tests.baseline.test_learner import T0, flow


def test_baseline_gauges_count_keys_by_state_and_show_learning() -> None:
    """While the group learns: its keys counted as learned, learning 1; once a flow after the
    window brings a new key: one alerted key, learning 0."""
    policy = Policy.model_validate({"version": 1, "covered_vendors": [], "baseline": {"learn_for": "10m"}, "groups": [{"name": "cams"}]})
    registry = CollectorRegistry()
    metrics = RulesMetrics(registry)
    evaluator = Evaluator(policy)
    sink = BaselineMetrics(metrics, lambda: evaluator, period=0)

    async def feed(*records: object) -> None:
        bus = MemoryBus("flows")
        stage = RulesStage(evaluator, bus, [sink], metrics, dead_letters=bus, dead_letter_topic="dlq")
        for rec in records:
            await bus.send("flows", flow_message(rec))  # type: ignore[arg-type]
        await bus.close()
        await stage.run()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"site": "hq", "group": "cams", **labels})

    asyncio.run(feed(flow(T0, name="eu1.vms.eyecloud.co.uk"), flow(T0 + 60, "203.0.113.9", 50000)))
    assert value("egress_baseline_keys", state="learned") == 2
    assert value("egress_baseline_learning") == 1
    asyncio.run(feed(flow(T0 + 900, "198.51.100.150", name="uploads.example.net")))
    assert value("egress_baseline_keys", state="alerted") == 1
    assert value("egress_baseline_learning") == 0
