"""Faults against the real broker: in every case the final set of alert event.ids equals an
undisturbed run on the same input (duplicates allowed, losses not). Each test records what
it injected and what it counted in `reliability-results/`, for docs/reliability.md."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from egress.codec import decode_flow, encode, flow_to_ecs
from egress.policy.evaluate import Evaluator
from egress.policy.schema import default_policy
from tests.conftest import PCAPS, POLICY, ndjson, record_result, run_egress, wait_for
from tests.kafka.conftest import run_broker
from tests.kafka.test_streaming import Rules, _flow, _produce, topics_env

pytestmark = pytest.mark.kafka
SAMPLES = [PCAPS / "street-cctv-vlan20.pcap", PCAPS / "building-cctv-ipv6.pcapng", PCAPS / "trunk-qinq-mixed.pcap"]


def _geo(geoip: dict[str, Path]) -> list[str | Path]:
    return ["--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]]


def _offline_ids(geoip: dict[str, Path], captures: list[Path]) -> set[str]:
    ids: set[str] = set()
    for capture in captures:
        proc = run_egress("analyze", capture, *_geo(geoip), "--format", "json")
        assert proc.returncode == 0, proc.stderr
        ids |= {a["event"]["id"] for a in ndjson(proc.stdout)}
    return ids


def _agent(env: dict[str, str], capture: Path, geoip: dict[str, Path], log: Path) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")} | env
    return subprocess.Popen(
        [sys.executable, "-m", "egress", "agent", "--read", str(capture), *map(str, _geo(geoip)), "--log-format", "json"],
        env=full, stdout=subprocess.DEVNULL, stderr=log.open("w"), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_log(log: Path, event: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f'"event": "{event}"' in log.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"no {event} in {log}:\n{log.read_text()[-2000:]}")


def test_broker_down_for_60s_mid_stream(kafka_bootstrap: str, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    """The broker stops for 60 s while the agent has records and the consumer is running;
    the agent spools, both survive, and when the broker returns every alert arrives."""
    env = topics_env(kafka_bootstrap)
    expected = _offline_ids(geoip, SAMPLES[:1])
    rules = Rules(env, tmp_path / "alerts.ndjson", *_geo(geoip))
    rules_procs.append(rules)
    rules.wait_assigned()
    assert run_broker("stop").returncode == 0
    outage_start = time.monotonic()
    try:
        agent = _agent(env, SAMPLES[0], geoip, tmp_path / "agent.log")
        _wait_log(tmp_path / "agent.log", "kafka_unavailable_spooling", timeout=90)
        time.sleep(max(0.0, 60 - (time.monotonic() - outage_start)))
    finally:
        started = run_broker("start", timeout=300)
    assert started.returncode == 0, started.stderr
    outage = time.monotonic() - outage_start
    assert agent.wait(timeout=180) == 0, (tmp_path / "agent.log").read_text()[-3000:]
    got = {a["event"]["id"] for a in rules.wait_for(len(expected), timeout=180)}
    assert rules.proc.poll() is None, "the consumer survived the outage"
    assert got >= expected
    assert rules.stop() == 0
    record_result("broker_down_60s", fault="broker stopped mid-stream", outage_seconds=round(outage, 1), expected=len(expected),
           received=len(got), lost=len(expected - got), crashes=0)  # fmt: skip


def test_agent_sigkilled_mid_spool_and_restarted(kafka_bootstrap: str, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    """An agent that spooled records while Kafka was unreachable is SIGKILLed; the next agent
    on the same spool delivers them (and its own)."""
    spool = tempfile.mkdtemp(prefix="egress-spool-")
    env = topics_env(kafka_bootstrap, EGRESS_SPOOL__PATH=spool)
    expected = _offline_ids(geoip, SAMPLES)
    first = _agent(env | {"EGRESS_KAFKA__BOOTSTRAP_SERVERS": "[127.0.0.1:1]"}, SAMPLES[0], geoip, tmp_path / "a1.log")
    _wait_log(tmp_path / "a1.log", "kafka_unavailable_spooling")
    first.send_signal(signal.SIGKILL)
    first.wait()
    spooled = sum(p.stat().st_size for p in Path(spool).glob("*.seg"))
    assert spooled > 0
    for i, capture in enumerate(SAMPLES[1:]):
        proc = _agent(env, capture, geoip, tmp_path / f"a{i + 2}.log")
        assert proc.wait(timeout=120) == 0, (tmp_path / f"a{i + 2}.log").read_text()[-3000:]
    assert '"event": "spool_resuming"' in (tmp_path / "a2.log").read_text()
    rules = Rules(env, tmp_path / "alerts.ndjson", *_geo(geoip))
    rules_procs.append(rules)
    got = {a["event"]["id"] for a in rules.wait_for(len(expected))}
    assert got >= expected
    assert rules.stop() == 0
    record_result("agent_sigkill_mid_spool", fault="agent SIGKILL with records spooled, restarted", spooled_bytes=spooled,
           expected=len(expected), received=len(got), lost=len(expected - got), crashes=0)  # fmt: skip


def _expected_for(records: list) -> set[str]:  # type: ignore[type-arg]
    evaluator = Evaluator(default_policy())
    return {a.event_id for r in records for a in evaluator.evaluate(decode_flow(encode(flow_to_ecs(r)))).alerts}


def _published_flows(bootstrap: str, count: int) -> tuple[dict[str, str], set[str]]:
    """Fresh topics holding `count` alerting flow records on 4 partitions, and their alerts' ids."""
    env = topics_env(bootstrap)
    records = [_flow(i) for i in range(count)]
    asyncio.run(_produce(bootstrap, env["EGRESS_KAFKA__FLOWS_TOPIC"], 4, [(r.device_mac.encode(), encode(flow_to_ecs(r))) for r in records]))
    return env, _expected_for(records)


class StallingSink:
    """A FIFO as a rules consumer's `--alerts-out`, read by a thread that stops reading after
    `stall_after` lines: the consumer's next writes fill the pipe and block it inside a batch,
    holding records it read from Kafka and cannot commit (as a full pipe or a hung disk would).
    The stall is a known point, not a moment: no timing decides where the consumer is."""

    def __init__(self, path: Path, stall_after: int) -> None:
        os.mkfifo(path)
        self.path = path
        self.lines: list[bytes] = []
        self._stall_after = stall_after
        self._reading = threading.Event()
        self._reading.set()
        self._thread = threading.Thread(target=self._read, name="stalling-sink", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self.path.open("rb") as fifo:  # opens once the consumer opens its end
            for line in fifo:
                self.lines.append(line)
                if len(self.lines) == self._stall_after:
                    self._reading.clear()
                self._reading.wait()

    @property
    def stalled(self) -> bool:
        return not self._reading.is_set()

    def resume(self) -> None:
        self._reading.set()

    def ids(self) -> set[str]:
        return {a["event"]["id"] for a in ndjson(b"".join(self.lines).decode())}

    def join(self) -> None:
        self._thread.join(timeout=30)


def test_rules_sigkilled_and_restarted(kafka_bootstrap: str, tmp_path: Path, rules_procs: list[Rules]) -> None:
    """The only consumer is SIGKILLed inside a batch (its alert sink stalled there) and started
    again: it resumes from its committed offset and no alert is missing."""
    env, expected = _published_flows(kafka_bootstrap, 30_000)
    sink = StallingSink(tmp_path / "a.fifo", stall_after=1)
    first = Rules(env, sink.path)
    rules_procs.append(first)
    assert wait_for(lambda: sink.stalled, 60), first.log.read_text()[-3000:]
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    sink.join()
    before = sink.ids()
    assert before and before < expected, "killed mid-stream"
    second = Rules(env, tmp_path / "b.ndjson")
    rules_procs.append(second)
    second.wait_for(len(expected - before), timeout=120)
    got = before | {a["event"]["id"] for a in second.alerts()}
    assert got >= expected
    duplicates = len(sink.lines) + len(second.alerts()) - len(got)
    assert second.stop() == 0
    record_result("rules_sigkill_restart", fault="rules consumer SIGKILL mid-batch, restarted", expected=len(expected),
           received=len(got), duplicates=duplicates, lost=len(expected - got), crashes=0)  # fmt: skip


def _flows(partitions: set[str]) -> set[str]:
    """The flows topic's partitions of an assignment (the group also reads the devices topic)."""
    return {p for p in partitions if ".flows/" in p}


def test_rebalance_while_a_batch_is_in_flight(kafka_bootstrap: str, tmp_path: Path, rules_procs: list[Rules]) -> None:
    """The first consumer stalls inside a batch (its alert sink stopped draining), holding
    records read and not committed; a second consumer joins, and the group can only settle
    by moving the stalled member's partitions to it. When the sink drains, the first member
    finds its partitions gone, reports what it had not committed, and rejoins; the partitions
    end up shared, the newcomer evaluated what moved, and no alert is lost."""
    env, expected = _published_flows(kafka_bootstrap, 30_000)
    sink = StallingSink(tmp_path / "a.fifo", stall_after=1)
    first = Rules(env, sink.path)
    rules_procs.append(first)
    assert wait_for(lambda: sink.stalled, 60), first.log.read_text()[-3000:]
    everything = _flows(first.assigned())  # the devices topic's partition is the group's too; these are the flows'
    assert len(everything) == 4, everything
    second = Rules(env, tmp_path / "b.ndjson")  # joins: the group rebalances under the stalled member's feet
    rules_procs.append(second)
    taken = second.wait_assigned(timeout=120)
    sink.resume()
    assert wait_for(lambda: first.events("partitions_revoked"), 60), first.log.read_text()[-3000:]
    revoked = first.events("partitions_revoked")[0]
    assert revoked["uncommitted_records"] > 0, revoked
    assert set(revoked["partitions"]) & taken, "a partition moved to the newcomer while the first held it uncommitted"

    def shared() -> bool:
        mine, theirs = _flows(first.assigned()), _flows(second.assigned())
        return len(first.events("partitions_assigned")) > 1 and bool(mine) and bool(theirs) and not mine & theirs and mine | theirs == everything

    assert wait_for(shared, 90), (first.assigned(), second.assigned())
    got: set[str] = set()

    def complete() -> bool:
        nonlocal got
        got = sink.ids() | {a["event"]["id"] for a in second.alerts()}
        return got >= expected

    wait_for(complete, 180, step=0.5)
    assert got >= expected, f"{len(expected - got)} lost"
    assert second.alerts(), "the newcomer evaluated the records that moved"
    assert first.stop() == 0 and second.stop() == 0
    sink.join()
    duplicates = len(sink.lines) + len(second.alerts()) - len(got)
    record_result("rebalance_in_flight", fault="consumer stalled mid-batch while another joins (rebalance)", expected=len(expected),
           received=len(got), uncommitted_at_revoke=revoked["uncommitted_records"], duplicates=duplicates, lost=len(expected - got), crashes=0)  # fmt: skip


def test_spool_drain_throughput(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Records spooled during an outage drain at a measured rate once Kafka is back."""
    from egress.bus.kafka import KafkaPublisher, ensure_topics
    from egress.bus.spool import Spool
    from egress.config import KafkaConfig
    from egress.codec import flow_message
    from egress.services.agent import SpoolDrainer
    from egress.telemetry import AgentMetrics

    from prometheus_client import CollectorRegistry

    topic = f"drain-{os.getpid()}-{int(time.time())}.flows"
    spool = Spool(tmp_path / "spool", 1 << 30)
    spool.start()
    records = [_flow(i) for i in range(50_000)]
    spool.append([flow_message(r) for r in records])
    cfg = KafkaConfig(bootstrap_servers=(kafka_bootstrap,), flows_topic=topic, partitions=4)

    async def connect() -> KafkaPublisher:
        await ensure_topics(cfg, [topic])
        publisher = KafkaPublisher(cfg)
        await publisher.start()
        return publisher

    async def drain() -> float:
        drainer = SpoolDrainer(spool, connect, topic, AgentMetrics(CollectorRegistry()))
        done = asyncio.Event()
        done.set()
        start = time.perf_counter()
        await drainer.run(done)
        elapsed = time.perf_counter() - start
        await drainer.stop()
        assert drainer.delivered == len(records)
        return elapsed

    elapsed = asyncio.run(drain())
    assert len(spool) == 0
    record_result("spool_drain", fault="none (drain after outage)", records=len(records), seconds=round(elapsed, 2),
           records_per_second=round(len(records) / elapsed), lost=0, crashes=0)  # fmt: skip


def test_a_thousand_garbage_messages_are_dead_lettered_and_counted(kafka_bootstrap: str, tmp_path: Path, rules_procs: list[Rules]) -> None:
    """≥ 1,000 garbage messages (random bytes, wrong JSON, wrong schema version, wrong types,
    huge values) are each dead-lettered and counted; the good records among them are evaluated."""
    import random
    import re
    import urllib.request

    rng = random.Random(11)
    good = [_flow(i) for i in range(50)]
    template = flow_to_ecs(good[0])
    garbage: list[bytes] = []
    for i in range(1000):
        kind = i % 5
        if kind == 0:
            garbage.append(rng.randbytes(rng.randint(0, 300)))
        elif kind == 1:
            garbage.append(b'{"egress": {"schema_version": 1}, "network": ' + rng.randbytes(20))
        elif kind == 2:
            garbage.append(json.dumps(template | {"egress": {"schema_version": rng.choice([0, 2, "1", None])}}).encode())
        elif kind == 3:
            doc = json.loads(json.dumps(template))
            doc["destination"]["port"] = rng.choice(["443", None, [1], {"x": 1}])
            garbage.append(json.dumps(doc).encode())
        else:
            garbage.append(b'{"x": "' + b"A" * 400_000 + b'"}')
    messages = [(b"g", g) for g in garbage]
    for i, r in enumerate(good):  # interleaved: the consumer must go on after each bad one
        messages.insert(i * 20, (r.device_mac.encode(), encode(flow_to_ecs(r))))
    env = topics_env(kafka_bootstrap, EGRESS_METRICS__LISTEN="127.0.0.1:0")
    asyncio.run(_produce(kafka_bootstrap, env["EGRESS_KAFKA__FLOWS_TOPIC"], 2, messages))
    rules = Rules(env, tmp_path / "alerts.ndjson")
    rules_procs.append(rules)
    expected = _expected_for(good)
    got = {a["event"]["id"] for a in rules.wait_for(len(expected), timeout=120)}
    assert got >= expected
    port = re.search(r'"address": "127\.0\.0\.1:(\d+)"', rules.log.read_text())
    assert port, rules.log.read_text()[-2000:]
    deadline = time.monotonic() + 60
    count = 0.0
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5).read().decode()
        count = float(re.search(r"^egress_deadletter_total ([0-9.e+]+)$", text, re.M).group(1))  # type: ignore[union-attr]
        if count >= len(garbage):
            break
        time.sleep(0.5)
    assert count == len(garbage)
    from tests.kafka.test_streaming import _read_topic

    dead = asyncio.run(_read_topic(kafka_bootstrap, env["EGRESS_KAFKA__DEAD_LETTER_TOPIC"], len(garbage), timeout=60))
    assert len(dead) == len(garbage) and all("reason" in h for _, _, h in dead)
    assert rules.proc.poll() is None and rules.stop() == 0
    record_result("garbage_messages", fault="1,000 undecodable Kafka messages among 50 good ones", expected=len(expected),
           received=len(got), dead_lettered=len(dead), counted=int(count), lost=len(expected - got), crashes=0)  # fmt: skip
