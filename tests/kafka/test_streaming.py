"""`egress agent` + `egress rules` through the real broker, `egress run` in one process:
the same alerts as `egress analyze`, a consumer group that survives a SIGKILL,
dead letters, policy reloads, and exit 3 when Kafka is not there."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from egress.codec import decode_flow, encode, flow_to_ecs
from egress.model import UDP, Endpoint, FlowRecord
from egress.policy.evaluate import Evaluator
from egress.policy.schema import default_policy
from tests.conftest import PCAPS, POLICY, ndjson, run_egress, wait_for

pytestmark = pytest.mark.kafka


def topics_env(bootstrap: str, **extra: str) -> dict[str, str]:
    """Fresh topics and group per test, and a metrics port of the OS's choice."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "EGRESS_KAFKA__BOOTSTRAP_SERVERS": f"[{bootstrap}]",
        "EGRESS_KAFKA__FLOWS_TOPIC": f"t{tag}.flows",
        "EGRESS_KAFKA__ALERTS_TOPIC": f"t{tag}.alerts",
        "EGRESS_KAFKA__DEAD_LETTER_TOPIC": f"t{tag}.deadletter",
        "EGRESS_KAFKA__DEVICES_TOPIC": f"t{tag}.devices",
        "EGRESS_KAFKA__GROUP_ID": f"g{tag}",
        "EGRESS_METRICS__LISTEN": "127.0.0.1:0",
        "EGRESS_SPOOL__PATH": tempfile.mkdtemp(prefix="egress-spool-"),
    }
    env.update(extra)
    return env


class Rules:
    """An `egress rules` process in the background, writing alerts as NDJSON."""

    def __init__(self, env: dict[str, str], out: Path, *args: str | Path) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")} | env
        self.out = out
        self.log = out.with_suffix(".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "egress", "rules", "--alerts-out", str(out), "--log-format", "json", *map(str, args)],
            env=full, stdout=subprocess.DEVNULL, stderr=self.log.open("w"), stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def alerts(self) -> list[dict]:
        """The complete lines written so far (the last one may still be half-written)."""
        if not self.out.exists():
            return []
        text = self.out.read_text()
        return ndjson(text[: text.rfind("\n") + 1])

    def wait_for(self, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.alerts()
            if len({a["event"]["id"] for a in got}) >= count:
                return got
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.3)
        raise AssertionError(f"{len(self.alerts())} alerts after {timeout}s, wanted {count}\n{self.log.read_text()[-3000:]}")

    def events(self, name: str) -> list[dict]:
        """The log events called `name` so far, in order (the JSON log on stderr)."""
        found = []
        for line in self.log.read_text().splitlines():
            if f'"{name}"' not in line:
                continue
            try:
                event = json.loads(line)
            except ValueError:  # the line being written
                continue
            if event.get("event") == name:
                found.append(event)
        return found

    def assigned(self) -> set[str]:
        """The partitions of this member's latest assignment (its `partitions_assigned` events)."""
        events = self.events("partitions_assigned")
        return set(events[-1]["partitions"]) if events else set()

    def wait_assigned(self, timeout: float = 90) -> set[str]:
        """Until the member owns at least one partition."""
        assert wait_for(lambda: self.assigned() or self.proc.poll() is not None, timeout), self.log.read_text()[-3000:]
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self.assigned()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def rules_procs() -> Iterator[list[Rules]]:
    procs: list[Rules] = []
    yield procs
    for r in procs:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def _geo_args(geoip: dict[str, Path]) -> tuple[str | Path, ...]:
    return ("--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])


@pytest.mark.parametrize("name", ["street-cctv-vlan20.pcap", "building-cctv-ipv6.pcapng", "trunk-qinq-mixed.pcap"])
def test_agent_and_rules_give_the_alerts_of_analyze_and_run(name: str, kafka_bootstrap: str, geoip: dict[str, Path], tmp_path: Path, rules_procs: list[Rules]) -> None:
    """Same capture, same policy: analyze, agent+rules over Kafka and run give identical alert records."""
    capture = PCAPS / name
    offline = run_egress("analyze", capture, *_geo_args(geoip), "--format", "json")
    assert offline.returncode == 0, offline.stderr
    expected = sorted(ndjson(offline.stdout), key=lambda a: a["event"]["id"])
    env = topics_env(kafka_bootstrap)
    in_process = run_egress("run", "--read", capture, *_geo_args(geoip), env=env)
    assert in_process.returncode == 0, in_process.stderr
    assert sorted(ndjson(in_process.stdout), key=lambda a: a["event"]["id"]) == expected
    agent = run_egress("agent", "--read", capture, *_geo_args(geoip), env=env)
    assert agent.returncode == 0, agent.stderr
    rules = Rules(env, tmp_path / "alerts.ndjson", *_geo_args(geoip))
    rules_procs.append(rules)
    streamed = rules.wait_for(len(expected))
    assert rules.stop() == 0
    assert sorted(streamed, key=lambda a: a["event"]["id"]) == expected
    published = asyncio.run(_read_topic(kafka_bootstrap, env["EGRESS_KAFKA__ALERTS_TOPIC"], len(expected)))
    assert sorted(v["event"]["id"] for _, v, _ in published) == [a["event"]["id"] for a in expected]
    assert all(h.get("schema-version") == b"1" for _, _, h in published)


async def _read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[tuple[bytes | None, dict, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[tuple[bytes | None, dict, dict[str, bytes]]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    try:
                        value = json.loads(r.value)
                    except ValueError:
                        value = {"raw": r.value}
                    out.append((r.key, value, dict(r.headers)))
    finally:
        await consumer.stop()
    return out


def _flow(i: int) -> FlowRecord:
    mac = f"02-00-00-00-{i // 256 % 256:02X}-{i % 256:02X}"
    return FlowRecord(
        start=1768471200.0 + i, end=1768471201.0 + i, transport=UDP, source=Endpoint(f"10.0.{i // 250 % 250}.{i % 250 + 1}", 40000 + i % 1000, mac, 100, 1),
        destination=Endpoint("192.0.2.7", 32100, None, 80, 1), vlans=(), community_id=f"1:test{i}", direction="outbound",
        device_mac=mac, device_ip=f"10.0.{i // 250 % 250}.{i % 250 + 1}", site="test",
    )  # fmt: skip


async def _produce(bootstrap: str, topic: str, partitions: int, messages: list[tuple[bytes | None, bytes]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key, headers=[("schema-version", b"1")])
        await producer.flush()
    finally:
        await producer.stop()


def test_two_consumers_share_partitions_and_survive_a_sigkill(kafka_bootstrap: str, tmp_path: Path, rules_procs: list[Rules]) -> None:
    """Two rules consumers in one group on a 4-partition topic; one is SIGKILLed mid-stream;
    at the end every expected alert is there (duplicates allowed, by event.id)."""
    env = topics_env(kafka_bootstrap)
    records = [_flow(i) for i in range(20_000)]
    evaluator = Evaluator(default_policy())
    expected = {a.event_id for r in records for a in evaluator.evaluate(decode_flow(encode(flow_to_ecs(r)))).alerts}
    assert len(expected) == len(records)
    a = Rules(env, tmp_path / "a.ndjson")
    b = Rules(env, tmp_path / "b.ndjson")
    rules_procs += [a, b]
    # both own partitions before the records arrive: the group has settled on sharing them
    shared = wait_for(lambda: a.assigned() and b.assigned() and not a.assigned() & b.assigned(), 90)
    assert shared, (a.assigned(), b.assigned(), a.log.read_text()[-2000:])
    asyncio.run(_produce(kafka_bootstrap, env["EGRESS_KAFKA__FLOWS_TOPIC"], 4, [(r.device_mac.encode(), encode(flow_to_ecs(r))) for r in records if r.device_mac]))
    deadline = time.monotonic() + 60
    while not (a.alerts() and b.alerts()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.alerts() and b.alerts(), "both consumers got partitions"
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    seen_b = {x["event"]["id"] for x in b.alerts()}
    a.wait_for(len(expected) - len(seen_b), timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen = {x["event"]["id"] for x in a.alerts()} | {x["event"]["id"] for x in b.alerts()}
        if seen >= expected:
            break
        time.sleep(0.5)
    assert seen >= expected, f"{len(expected - seen)} alerts lost"
    assert a.stop() == 0


def test_garbage_goes_to_the_dead_letter_topic_and_the_consumer_goes_on(kafka_bootstrap: str, tmp_path: Path, rules_procs: list[Rules]) -> None:
    """Undecodable messages are dead-lettered with a reason header; the records after them are evaluated."""
    env = topics_env(kafka_bootstrap)
    good = [_flow(i) for i in range(3)]
    messages = [(b"k", b"\xff\x00garbage"), (None, b'{"egress": {"schema_version": 9}}')] + [(r.device_mac.encode(), encode(flow_to_ecs(r))) for r in good if r.device_mac]
    asyncio.run(_produce(kafka_bootstrap, env["EGRESS_KAFKA__FLOWS_TOPIC"], 1, messages))
    rules = Rules(env, tmp_path / "alerts.ndjson")
    rules_procs.append(rules)
    assert len(rules.wait_for(3)) == 3
    dead = asyncio.run(_read_topic(kafka_bootstrap, env["EGRESS_KAFKA__DEAD_LETTER_TOPIC"], 2))
    # two keys, so maybe two partitions of the dead-letter topic: no order between them
    reasons = {repr(v.get("raw", v)): h["reason"].decode() for _, v, h in dead}
    assert set(reasons) == {repr(b"\xff\x00garbage"), repr({"egress": {"schema_version": 9}})}
    assert reasons[repr(b"\xff\x00garbage")].startswith("not JSON")
    assert "unsupported schema version 9" in reasons[repr({"egress": {"schema_version": 9}})]
    assert rules.stop() == 0
    assert '"event": "dead_letter"' in rules.log.read_text()


def test_sighup_with_a_broken_policy_keeps_the_old_verdicts(kafka_bootstrap: str, tmp_path: Path, rules_procs: list[Rules]) -> None:
    """A policy broken on disk and a SIGHUP: the consumer says so, counts it and keeps evaluating with the old policy."""
    env = topics_env(kafka_bootstrap)
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ncovered_vendors: []\ngroups:\n  - name: cams\n    deny:\n      - {name: no-p2p, ports: [udp/32100]}\n")
    rules = Rules(env, tmp_path / "alerts.ndjson", "--policy", policy)
    rules_procs.append(rules)
    asyncio.run(_produce(kafka_bootstrap, env["EGRESS_KAFKA__FLOWS_TOPIC"], 1, [(b"a", encode(flow_to_ecs(_flow(1))))]))
    assert rules.wait_for(1)[0]["rule"]["name"] == "no-p2p"
    policy.write_text("version: 1\ngroups: [\n")
    rules.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "policy_reload_failed" not in rules.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "policy_reload_failed" in rules.log.read_text()
    asyncio.run(_produce(kafka_bootstrap, env["EGRESS_KAFKA__FLOWS_TOPIC"], 1, [(b"b", encode(flow_to_ecs(_flow(2))))]))
    alerts = rules.wait_for(2)
    assert [a["rule"]["name"] for a in alerts] == ["no-p2p", "no-p2p"]
    assert rules.proc.poll() is None
    assert rules.stop() == 0


@pytest.mark.parametrize("command", ["agent", "rules"])
def test_kafka_unreachable_at_start_exits_3(command: str, tmp_path: Path) -> None:
    """No broker at the configured address (and, for the agent, no spool): one clear line, exit 3."""
    env = {"EGRESS_KAFKA__BOOTSTRAP_SERVERS": "[127.0.0.1:1]", "EGRESS_METRICS__LISTEN": "127.0.0.1:0", "EGRESS_SPOOL__PATH": "null"}
    args = ["--read", str(PCAPS / "trunk-qinq-mixed.pcap")] if command == "agent" else []
    proc = run_egress(command, *args, env=env, timeout=90)
    assert proc.returncode == 3, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("egress: ")]
    assert len(errors) == 1 and "Kafka unreachable at 127.0.0.1:1" in errors[0]
    assert "Traceback" not in proc.stderr

