"""Faults on the three-broker cluster (dev/kafka/cluster): the leader of the flows partitions
SIGKILLed, a rolling restart, two of three brokers down for 60 s. Each runs the same story:
two rules consumers with a learned baseline (group scope) on a 4-partition flows topic; an
agent publishes the learning part of baseline-learn-enforce.pcap, then reads the enforcing
part, with LOAD more flows (half to a learned key, silent while the baseline holds, half to
a new key each, one new-destination alert each), from a FIFO fed in pieces around the fault,
so it has records to publish before, during and after it. In every case:

- the set of alert event.ids equals one undisturbed `egress run` over both parts (duplicates
  allowed, nothing lost), and no consumer raised one key as new twice;
- no learned key is lost: each consumer still counts every key the undisturbed run learned;
- no flow record was written twice by one producer session (the agent's idempotence), read
  from a replica's log segments;
- the seconds from the last broker back until every alert is in are recorded."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from egress.bus.kafka import ensure_topics
from egress.config import KafkaConfig

from tests.baseline.test_baseline_samples import GROUP, LEARN_ENFORCE, POLICY, SPLIT, _split, _write_policy
from tests.conftest import ndjson, record_result, run_egress, wait_for
from tests.faults.cluster import Cluster, duplicates, run_cluster
from tests.faults.feed import LOAD, Feed, agent_metric, loaded
from tests.kafka.test_baseline_group import _gauge
from tests.kafka.test_streaming import Rules, topics_env

pytestmark = [pytest.mark.kafka, pytest.mark.cluster]
def _scenario(kafka_cluster: Cluster, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules], name: str,
              fault: Callable[[Feed, str], float], description: str, notes: dict[str, object] | None = None) -> dict[str, object]:  # fmt: skip
    """Run the story with `fault(feed, the flows topic)`, which returns the
    monotonic time its last broker answered again (and may add to `notes`); check and record
    the outcome."""
    policy = _write_policy(tmp_path / "policy.yaml", POLICY)
    learn, enforce = _split(LEARN_ENFORCE, SPLIT, tmp_path / "learn.pcap", tmp_path / "enforce.pcap")
    enforce.write_bytes(loaded(enforce, LOAD))
    geo = ("--policy", policy, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])
    quick = {"EGRESS_FLOWS__MAX_FLOWS": "4"}  # flows leave the table while the FIFO is read, not only at its end
    expected: set[str] = set()
    learned = 0
    for part in (learn, enforce):
        proc = run_egress("run", "--read", part, *geo, "--baseline", tmp_path / "single.json", env=quick | {"EGRESS_METRICS__LISTEN": "127.0.0.1:0"})
        assert proc.returncode == 0, proc.stderr
        expected |= {a["event"]["id"] for a in ndjson(proc.stdout)}
        if part == learn:
            learned = sum(e["state"] == "learned" for e in json.loads((tmp_path / "single.json").read_text())["keys"])
    assert learned and len(expected) > LOAD // 2

    kafka_cluster.all_up()
    env = topics_env(kafka_cluster.bootstrap, EGRESS_KAFKA__PARTITIONS="4", **quick)
    env["EGRESS_KAFKA__BASELINE_TOPIC"] = env["EGRESS_KAFKA__FLOWS_TOPIC"].replace(".flows", ".baseline")
    flows = env["EGRESS_KAFKA__FLOWS_TOPIC"]
    members = [Rules(env, tmp_path / "a.ndjson", *geo), Rules(env, tmp_path / "b.ndjson", *geo)]
    rules_procs += members
    assert wait_for(lambda: all(m.assigned() for m in members) and not members[0].assigned() & members[1].assigned(), 120)
    assert kafka_cluster.replicas(flows) == {p: (3, 3) for p in range(4)}, "replication factor 3 on the cluster"
    agent = run_egress("agent", "--read", learn, *geo, env=env)
    assert agent.returncode == 0, agent.stderr

    def knows(m: Rules) -> bool:
        return _gauge(m, "egress_baseline_keys", group=GROUP, state="learned") == learned

    assert wait_for(lambda: all(map(knows, members)), 90), [_gauge(m, "egress_baseline_keys", group=GROUP, state="learned") for m in members]

    fifo = tmp_path / "enforce.fifo"
    os.mkfifo(fifo)
    log = tmp_path / "agent.log"
    full = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")} | env
    streaming = subprocess.Popen([sys.executable, "-m", "egress", "agent", "--read", str(fifo), *map(str, geo), "--log-format", "json"],
                                 env=full, stdout=subprocess.DEVNULL, stderr=log.open("w"), stdin=subprocess.DEVNULL)  # fmt: skip
    feed = Feed(fifo, enforce.read_bytes(), log)
    feed.next()
    back = fault(feed, flows)
    feed.close()

    def got() -> set[str]:
        return {a["event"]["id"] for m in members for a in m.alerts()}

    def flowing() -> bool:  # the agent's spool empty (or the agent done) and every alert evaluated
        return (streaming.poll() is not None or agent_metric(log, "egress_spool_records") == 0) and got() >= expected

    wait_for(flowing, 240, step=0.2)
    recovery = time.monotonic() - back
    wait_for(lambda: kafka_cluster.replicas(flows) == {p: (3, 3) for p in range(4)}, 120, step=0.2)
    in_sync = time.monotonic() - back
    assert streaming.wait(timeout=240) == 0, log.read_text()[-3000:]
    assert all(m.proc.poll() is None for m in members), "both consumers survived"
    assert got() == expected, (sorted(expected - got()), sorted(got() - expected))
    assert wait_for(lambda: all(map(knows, members)), 60), "no learned key lost"
    for m in members:
        news = Counter(a["event"]["id"] for a in m.alerts() if a["rule"]["category"] == "new-destination")
        assert all(n == 1 for n in news.values()), f"{m.out.name} raised a key as new twice: {news}"
    assert all(m.stop() == 0 for m in members)
    assert kafka_cluster.replicas(flows) == {p: (3, 3) for p in range(4)}, "every replica caught up"
    written = kafka_cluster.written(flows)
    assert len({r for _, r in written}) >= LOAD, f"{len(written)} flow records in the topic"
    within, across = duplicates(written)
    assert within == 0, f"{within} flow records written twice by one producer session"
    alerts = sum(len(m.alerts()) for m in members)
    figures = {"fault": description, "expected": len(expected), "received": len(got()), "duplicates": alerts - len(got()),
               "lost": len(expected - got()), "crashes": 0, "recovery_seconds": round(recovery, 1), "replicas_in_sync_seconds": round(in_sync, 1), "learned_keys": learned,
               "flow_records": len(written), "flow_copies_within_a_producer_session": within, "flow_copies_across_sessions": across, **(notes or {})}  # fmt: skip
    record_result(name, **figures)
    return figures


def test_leader_of_the_flows_partitions_sigkilled_and_back(kafka_cluster: Cluster, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    """SIGKILL of the node leading most flows partitions while the agent streams; later it returns."""

    notes: dict[str, object] = {}

    def fault(feed: Feed, flows: str) -> float:
        leaders = kafka_cluster.leaders(flows)
        assert len(leaders) == 4, leaders
        victim, led = Counter(leaders.values()).most_common(1)[0]
        killed = kafka_cluster.kill(victim)
        feed.next()
        assert wait_for(lambda: (now := kafka_cluster.leaders(flows)) and all(n not in (victim, -1) for n in now.values()), 60, step=0.1)
        notes.update(killed_node=victim, partitions_it_led=led, new_leaders_seconds=round(time.monotonic() - killed, 1))
        feed.next()
        time.sleep(10)  # the agent goes on publishing to the new leaders
        feed.next()
        return kafka_cluster.start(victim)

    figures = _scenario(kafka_cluster, geoip, tmp_path, rules_procs, "cluster_leader_sigkill", fault,
                        "cluster: SIGKILL of the flows partitions' leader mid-stream, back", notes)  # fmt: skip
    assert int(figures["partitions_it_led"]) >= 1  # type: ignore[call-overload]


def test_rolling_restart_of_all_three_brokers(kafka_cluster: Cluster, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    """Each node stopped and started in turn, a piece of the capture fed between each step."""

    def fault(feed: Feed, _flows: str) -> float:
        back = 0.0
        for node in (1, 2, 3):
            kafka_cluster.stop(node)
            feed.next()
            back = kafka_cluster.start(node)
        return back

    _scenario(kafka_cluster, geoip, tmp_path, rules_procs, "cluster_rolling_restart", fault, "cluster: rolling restart of the 3 brokers under load")


@pytest.mark.slow
def test_two_of_three_brokers_down_for_60s(kafka_cluster: Cluster, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    """Nodes 2 and 3 stopped for 60 s: no write can reach min.insync.replicas 2, the agent
    spools what it reads meanwhile and the consumers wait; then both return."""
    notes: dict[str, object] = {}

    def fault(feed: Feed, _flows: str) -> float:
        kafka_cluster.stop(3)
        down = kafka_cluster.stop(2)
        feed.next()
        feed.next()
        spooled = 0.0
        while time.monotonic() - down < 60:
            spooled = max(spooled, agent_metric(feed.log, "egress_spool_records") or 0)
            time.sleep(0.5)
        notes["spooled_during_outage"] = int(spooled)
        kafka_cluster.start(2)
        back = kafka_cluster.start(3)
        notes["outage_seconds"] = round(back - down, 1)
        return back

    figures = _scenario(kafka_cluster, geoip, tmp_path, rules_procs, "cluster_two_down_60s", fault, "cluster: 2 of 3 brokers down for 60 s", notes)
    assert float(notes["outage_seconds"]) >= 60  # type: ignore[arg-type]
    assert int(figures["spooled_during_outage"]) > 0, "with one broker of three the agent could not publish: it spooled"  # type: ignore[call-overload]


async def _replication(bootstrap: str, topics: list[str]) -> dict[str, tuple[set[int], str | None]]:
    """topic → ({replicas of each partition}, min.insync.replicas), as the brokers describe them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await admin.close()
    isr = {resource[3]: next((e[1] for e in resource[4] if e[0] == "min.insync.replicas"), None) for r in configs for resource in r.resources}
    return {d["topic"]: ({len(p["replicas"]) for p in d["partitions"]}, isr.get(d["topic"])) for d in described}


def test_topics_egress_creates_get_3_replicas_and_min_insync_2_on_a_cluster_and_1_on_one_broker(kafka_cluster: Cluster, kafka_bootstrap: str) -> None:
    """Decided from the brokers the admin client sees, for the flows-like and the compacted topics
    alike; an explicit kafka.replication_factor / min_insync_replicas wins."""
    for bootstrap, want, extra in ((kafka_cluster.bootstrap, ({3}, "2"), {}), (kafka_bootstrap, ({1}, "1"), {}),
                                   (kafka_cluster.bootstrap, ({2}, "1"), {"replication_factor": 2, "min_insync_replicas": 1})):  # fmt: skip
        tag = uuid.uuid4().hex[:8]
        cfg = KafkaConfig(bootstrap_servers=tuple(bootstrap.split(",")), partitions=2, **extra)  # type: ignore[arg-type]
        topics = [f"r{tag}.flows", f"r{tag}.baseline"]
        asyncio.run(ensure_topics(cfg, topics, compacted=topics[1:]))
        described = lambda: asyncio.run(_replication(bootstrap, topics))  # noqa: E731 - the brokers learn of new topics a moment later
        assert wait_for(lambda: described() == {t: want for t in topics}, 20), (bootstrap, extra, described())


@pytest.mark.parametrize(("args", "message"), [
    (["kill"], "kill needs --node N"),
    (["start", "--node", "4"], "invalid node: 4 (1-3)"),
    (["status", "--port", "20191"], "broker ports 20191+ and controller ports 20192+ overlap"),
    (["start", "--port", "65534"], "invalid port: 65534"),
])  # fmt: skip
def test_cluster_usage_errors_exit_2_in_one_line(args: list[str], message: str) -> None:
    done = run_cluster(*args)
    assert (done.returncode, done.stderr) == (2, f"cluster: error: {message}\n")
