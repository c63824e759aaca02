"""The learned baseline shared by a consumer group through its compacted topic: two rules
consumers on a 4-partition flows topic with a group-scoped baseline, one SIGKILLed inside
a batch and restarted; the alerts are those of one `egress run` on the same input."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.baseline.test_baseline_samples import GROUP, LEARN_ENFORCE, POLICY, SPLIT, _split, _write_policy
from tests.conftest import ndjson, run_egress, wait_for
from tests.kafka.test_streaming import Rules, rules_procs, topics_env  # noqa: F401 - the fixture

pytestmark = pytest.mark.kafka


def _gauge(rules: Rules, name: str, **labels: str) -> float | None:
    """A sample of the consumer's /metrics (None while it is not there)."""
    port = re.search(r'"address": "127\.0\.0\.1:(\d+)"', rules.log.read_text())
    if port is None:
        return None
    text = urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_two_consumers_share_the_baseline_and_survive_a_sigkill(kafka_bootstrap: str, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    """The learning part goes through the group first; once both members know what it
    learned (their egress_baseline_keys), the enforcing part follows and the member that
    raised the first new-destination alert is SIGKILLed and started again. Every alert of a
    single `egress run` over both parts arrives, no other, and no member raised one key as
    new twice."""
    policy = _write_policy(tmp_path / "policy.yaml", POLICY)
    learn, enforce = _split(LEARN_ENFORCE, SPLIT, tmp_path / "learn.pcap", tmp_path / "enforce.pcap")
    geo = ("--policy", policy, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])
    expected: set[str] = set()
    learned = 0
    for part in (learn, enforce):
        proc = run_egress("run", "--read", part, *geo, "--baseline", tmp_path / "single.json", env={"EGRESS_METRICS__LISTEN": "127.0.0.1:0"})
        assert proc.returncode == 0, proc.stderr
        expected |= {a["event"]["id"] for a in ndjson(proc.stdout)}
        if part == learn:
            learned = sum(e["state"] == "learned" for e in json.loads(tmp_path.joinpath("single.json").read_text())["keys"])
    assert learned and expected
    env = topics_env(kafka_bootstrap, EGRESS_KAFKA__PARTITIONS="4")
    env["EGRESS_KAFKA__BASELINE_TOPIC"] = env["EGRESS_KAFKA__FLOWS_TOPIC"].replace(".flows", ".baseline")
    first, second = Rules(env, tmp_path / "a.ndjson", *geo), Rules(env, tmp_path / "b.ndjson", *geo)
    rules_procs += [first, second]
    assert wait_for(lambda: first.assigned() and second.assigned() and not first.assigned() & second.assigned(), 90), (first.assigned(), second.assigned())

    agent = run_egress("agent", "--read", learn, *geo, env=env)
    assert agent.returncode == 0, agent.stderr
    both_know = wait_for(lambda: all(_gauge(r, "egress_baseline_keys", group=GROUP, state="learned") == learned for r in (first, second)), 60)
    assert both_know, [_gauge(r, "egress_baseline_keys", group=GROUP, state="learned") for r in (first, second)]

    agent = run_egress("agent", "--read", enforce, *geo, env=env)
    assert agent.returncode == 0, agent.stderr

    def raised() -> Rules | None:
        return next((r for r in (first, second) if any(a["rule"]["category"] == "new-destination" for a in r.alerts())), None)

    assert wait_for(lambda: raised() is not None, 60), (first.log.read_text()[-2000:], second.log.read_text()[-2000:])
    killed = raised()
    assert killed is not None
    killed.proc.send_signal(signal.SIGKILL)
    killed.proc.wait()
    again = Rules(env, tmp_path / "c.ndjson", *geo)
    rules_procs.append(again)
    members = [first, second, again]
    survivor = second if killed is first else first
    # the restarted member took partitions back from the survivor (which had all of them once the killed one's session expired)
    assert wait_for(lambda: again.assigned() and not again.assigned() & survivor.assigned(), 120), (again.assigned(), survivor.assigned())

    def got() -> set[str]:
        return {a["event"]["id"] for r in members for a in r.alerts()}

    wait_for(lambda: got() >= expected, 120, step=0.5)
    assert survivor.stop() == 0 and again.stop() == 0  # in-flight batches delivered first
    assert got() == expected, (sorted(expected - got()), sorted(got() - expected))
    for member in members:
        news = Counter(a["event"]["id"] for a in member.alerts() if a["rule"]["category"] == "new-destination")
        assert all(n == 1 for n in news.values()), f"{member.out.name} raised a key as new twice: {news}"
    # the baseline is a table every member reads whole: compacted, and one partition though the flows have 4
    assert asyncio.run(_topic_shape(kafka_bootstrap, env["EGRESS_KAFKA__BASELINE_TOPIC"])) == (1, "compact")


async def _topic_shape(bootstrap: str, topic: str) -> tuple[int, str | None]:
    """(partitions, cleanup.policy) of a topic, as the broker describes it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    partitions = len(described[0]["partitions"])
    policy = next((entry[1] for response in configs for resource in response.resources for entry in resource[4] if entry[0] == "cleanup.policy"), None)
    return partitions, policy
