"""egress_consumer_lag_records follows the partitions a rules consumer holds."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import pytest
from aiokafka.errors import TopicAlreadyExistsError

from egress.codec import encode, flow_to_ecs
from tests.conftest import wait_for
from tests.kafka.test_streaming import Rules, _flow, _produce, rules_procs, topics_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.kafka


def _lag(rules: Rules) -> dict[int, float]:
    """partition → egress_consumer_lag_records on this consumer's /metrics."""
    address = next(json.loads(line)["address"] for line in rules.log.read_text().splitlines() if '"metrics_listening"' in line)
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()  # noqa: S310 - loopback
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r'^egress_consumer_lag_records\{partition="(\d+)",topic="[^"]+"\} (\S+)$', text, re.M)}


def _send(bootstrap: str, topic: str, first: int, count: int) -> None:
    messages = [(r.device_mac.encode() if r.device_mac else None, encode(flow_to_ecs(r))) for r in map(_flow, range(first, first + count))]
    try:
        asyncio.run(_produce(bootstrap, topic, 4, messages))
    except TopicAlreadyExistsError:
        pass


def test_lag_gauges_leave_with_the_partitions(kafka_bootstrap: str, tmp_path: Path, rules_procs: list[Rules]) -> None:
    """A consumer alone reports the lag of all 4 partitions; when a second joins, the first stops reporting the
    partitions it gave away, and between them every partition is reported once."""
    env = topics_env(kafka_bootstrap)
    topic = env["EGRESS_KAFKA__FLOWS_TOPIC"]
    _send(kafka_bootstrap, topic, 0, 400)
    a = Rules(env, tmp_path / "a.ndjson")
    rules_procs.append(a)
    a.wait_for(400)
    assert wait_for(lambda: set(_lag(a)) == {0, 1, 2, 3}, 30), _lag(a)
    assert set(_lag(a).values()) == {0.0}  # caught up

    b = Rules(env, tmp_path / "b.ndjson")
    rules_procs.append(b)
    assert wait_for(lambda: 0 < len(_lag(a)) < 4, 60), f"a still reports {_lag(a)}\n{a.log.read_text()[-2000:]}"
    _send(kafka_bootstrap, topic, 400, 400)  # records on every partition: b reports the ones it holds

    def split() -> bool:
        la, lb = set(_lag(a)), set(_lag(b))
        return la.isdisjoint(lb) and la | lb == {0, 1, 2, 3}

    assert wait_for(split, 60), f"a {_lag(a)}, b {_lag(b)}"
    assert a.stop() == 0 and b.stop() == 0
