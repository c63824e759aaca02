"""The device inventory through the real broker: `egress agent --read` publishes a record per
device on the devices topic (created compacted, keyed by MAC), and an `egress rules` member,
reading it beside the flows topic, raises the covered-vendor alerts of `egress analyze` on
pcaps/lan-only-cameras.pcap, one per camera, and counts every device in egress_devices."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import POLICY, ndjson, run_egress, wait_for
from tests.kafka.test_baseline_group import _gauge, _topic_shape
from tests.kafka.test_streaming import Rules, _read_topic, rules_procs, topics_env  # noqa: F401 - the fixture
from tests.test_inventory_samples import CAPTURE, H, L1, L2, L3

pytestmark = pytest.mark.kafka


def test_agent_publishes_the_inventory_and_rules_raises_its_alerts(kafka_bootstrap: str, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    geo = ("--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])
    analyzed = {a["event"]["id"] for a in ndjson(run_egress("analyze", CAPTURE, *geo, "--format", "json").stdout)}
    assert len(analyzed) == 4
    env = topics_env(kafka_bootstrap)
    member = Rules(env, tmp_path / "alerts.ndjson", *geo)
    rules_procs.append(member)
    member.wait_assigned()
    agent = run_egress("agent", "--read", CAPTURE, *geo, env=env)
    assert agent.returncode == 0, agent.stderr
    topic = env["EGRESS_KAFKA__DEVICES_TOPIC"]
    assert asyncio.run(_topic_shape(kafka_bootstrap, topic))[1] == "compact"
    records = asyncio.run(_read_topic(kafka_bootstrap, topic, 4))
    latest = {key.decode(): (value, headers) for key, value, headers in records if key is not None}
    assert set(latest) == {L1, L2, L3, H}
    assert all(value["device"]["id"] == mac and headers["schema-version"] == b"1" for mac, (value, headers) in latest.items())
    assert {mac: value["egress"]["device"]["lan_only"] for mac, (value, _) in latest.items()} == {L1: True, L2: True, L3: True, H: False}
    assert latest[L2][0]["host"]["ip"] == ["10.20.1.32"] and latest[L2][0]["labels"]["group"] == "street-cctv"
    member.wait_for(4)
    assert wait_for(lambda: _gauge(member, "egress_devices", group="street-cctv", vendor="Hikvision", covered="true") == 3, 30)
    assert _gauge(member, "egress_devices", group="street-cctv", vendor="Dahua", covered="true") == 1
    assert member.stop() == 0
    alerts = member.alerts()
    assert {a["event"]["id"] for a in alerts} == analyzed
    assert sorted(a["device"]["id"] for a in alerts) == sorted([L1, L2, L3, H])
