"""RulesStage over the in-process bus: counting per batch, dead letters, the device gauge across a reload."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from egress.bus import Message
from egress.bus.memory import MemoryBus
from egress.model import TCP, Endpoint, FlowRecord
from egress.policy.evaluate import Evaluator
from egress.policy.schema import load_policy
from egress.codec import flow_message
from egress.model import Verdict
from egress.services.rules import RulesStage
from egress.sinks.metrics import MetricsSink
from egress.telemetry import RulesMetrics

POLICY = """version: 1
covered_vendors: [{vendor}]
groups:
  - name: cams
    allow:
      - {{name: vms, destinations: [198.51.100.0/24], ports: [tcp/443]}}
"""


def _flow(i: int, mac: str, brand: str, dest: str) -> FlowRecord:
    return FlowRecord(
        start=1768471200.0 + i, end=1768471201.0 + i, transport=TCP,
        source=Endpoint("10.20.1.11", 40000 + i, mac, 100, 1), destination=Endpoint(dest, 443, None, 100, 1),
        vlans=(), community_id=f"1:{i}", direction="outbound", device_mac=mac, device_ip="10.20.1.11",
        device_manufacturer=brand, site="hq",
    )  # fmt: skip


class _Sink:
    """Keeps the alerts it is handed, and how many flushes preceded each commit."""

    def __init__(self) -> None:
        self.alerts: list[str] = []

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        self.alerts += [a.event_id for v in verdicts for a in v.alerts]

    async def flush(self) -> None:
        return None


async def _run(stage: RulesStage, bus: MemoryBus, messages: list[Message]) -> None:
    for m in messages:
        await bus.send("flows", m)
    await bus.close()
    await stage.run()


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_counts_dead_letters_and_device_labels_follow_a_reload(tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(POLICY.format(vendor="Hikvision"))
    registry = CollectorRegistry()
    metrics = RulesMetrics(registry)
    sink = _Sink()
    mac = "44-19-B6-12-34-56"
    first = [flow_message(_flow(i, mac, "Hikvision", "198.51.100.10" if i % 2 else "203.0.113.7")) for i in range(1000)]
    first.insert(500, Message(None, b"not json", (("schema-version", b"1"),)))
    first.insert(700, Message(None, first[0].value, (("schema-version", b"9"),)))
    bus = MemoryBus("flows", batch=300)
    stage = RulesStage(Evaluator(load_policy(policy_path)), bus, [MetricsSink(metrics), sink], metrics, dead_letters=bus, dead_letter_topic="dlq", policy_path=policy_path)
    asyncio.run(_run(stage, bus, first))

    assert stage.evaluated == 1000
    assert _sample(registry, "egress_flows_evaluated_total", site="hq", group="cams", verdict="allowed") == 500
    assert _sample(registry, "egress_flows_evaluated_total", site="hq", group="cams", verdict="unexpected") == 500
    assert _sample(registry, "egress_deadletter_total") == 2
    assert len(sink.alerts) == stage.alerts == 501  # 500 unexpected + one covered-vendor
    covered = {"site": "hq", "group": "cams", "vendor": "Hikvision"}
    assert _sample(registry, "egress_devices", **covered, covered="true") == 1

    policy_path.write_text(POLICY.format(vendor="Dahua"))
    stage.reload()
    bus = MemoryBus("flows")
    stage._sub = bus  # the same stage, fed again after its policy changed
    asyncio.run(_run(stage, bus, [flow_message(_flow(2000, mac, "Hikvision", "198.51.100.10"))]))
    assert _sample(registry, "egress_devices", **covered, covered="true") == 0
    assert _sample(registry, "egress_devices", **covered, covered="false") == 1
