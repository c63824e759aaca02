"""The development Kafka broker (dev/kafka/broker) and aiokafka against it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.kafka.conftest import run_broker

pytestmark = pytest.mark.kafka

MACS = [f"00:1a:2b:3c:4d:{i:02x}" for i in range(8)]


def _broker(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_broker(*args, timeout=timeout, env=env)


def _port_of(bootstrap: str) -> str:
    return bootstrap.rsplit(":", 1)[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _path_without(tmp: Path, *missing: str) -> str:
    """A PATH of symlinks to the usual system commands, minus `missing`."""
    bindir = tmp / "bin"
    bindir.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = bindir / name
            if name in missing or link.exists() or link.is_symlink():
                continue
            link.symlink_to(os.path.join(d, name))
    return str(bindir)


# ------------------------------------------------------------------ aiokafka


async def _roundtrip(bootstrap: str, topic: str, group: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # Like egress.flows: several partitions, records keyed by device MAC.
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()

    sent: dict[int, tuple[bytes, bytes, list[tuple[str, bytes]]]] = {}
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        compression_type="gzip",
    )
    await producer.start()
    try:
        futures = []
        for seq in range(100):
            key = MACS[seq % len(MACS)].encode()
            value = json.dumps({"seq": seq, "bytes_out": seq * 1500, "dst": f"198.51.100.{seq}"}).encode()
            headers = [
                ("seq", str(seq).encode()),
                ("schema", b"egress.flow/1"),
                ("binary", bytes([0, 255, seq])),
            ]
            sent[seq] = (key, value, headers)
            futures.append(await producer.send(topic, value=value, key=key, headers=headers))
        await producer.flush()
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    partition_of_key: dict[bytes, set[int]] = {}
    for seq, md in enumerate(metadata):
        partition_of_key.setdefault(sent[seq][0], set()).add(md.partition)
    assert all(len(parts) == 1 for parts in partition_of_key.values()), partition_of_key

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2, 3}
        received = []
        deadline = time.monotonic() + 60
        while len(received) < 100 and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                received.extend(records)
        await consumer.commit()
        committed = [await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(4)]
    finally:
        await consumer.stop()

    assert len(received) == 100, f"got {len(received)} of 100 records"
    assert sum(committed) == 100
    last_seq_per_key: dict[bytes, int] = {}
    for rec in received:
        headers = [(k, bytes(v)) for k, v in rec.headers]
        seq = int(dict(headers)["seq"])
        key, value, sent_headers = sent[seq]
        assert rec.key == key
        assert rec.value == value
        assert headers == sent_headers
        # Same key, same partition, so per-device order is kept.
        assert seq > last_seq_per_key.get(key, -1)
        last_seq_per_key[key] = seq
    assert sorted(int(dict(r.headers)["seq"]) for r in received) == list(range(100))


def test_keyed_roundtrip_with_headers(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex[:12]
    asyncio.run(_roundtrip(kafka_bootstrap, f"egress.test.flows.{run}", f"egress-test-{run}"))


async def _autocreate(bootstrap: str, topic: str) -> set[int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        md = await producer.send_and_wait(topic, b"hello", key=b"00:1a:2b:3c:4d:5e")
        assert md.offset == 0
        return await producer.partitions_for(topic)
    finally:
        await producer.stop()


def test_topics_are_created_on_demand(kafka_bootstrap: str) -> None:
    partitions = asyncio.run(_autocreate(kafka_bootstrap, f"egress.test.auto.{uuid.uuid4().hex[:12]}"))
    assert partitions == {0}  # num.partitions=1


# ------------------------------------------------------------------ the script


def test_status_exits_0_while_running(kafka_bootstrap: str) -> None:
    result = _broker("status", "--port", _port_of(kafka_bootstrap))
    assert result.returncode == 0, result.stderr
    assert "running" in result.stderr


def test_second_start_is_a_fast_noop(kafka_bootstrap: str) -> None:
    port = _port_of(kafka_bootstrap)
    before = _broker("status", "--port", port).stderr
    t0 = time.monotonic()
    result = _broker("start", "--port", port)
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert "starting" not in result.stderr and "fetching" not in result.stderr
    assert elapsed < 5, f"second start took {elapsed:.1f} s"
    assert _broker("status", "--port", port).stderr == before  # same pid


def test_status_exits_1_when_nothing_answers(tmp_path: Path) -> None:
    env = {**os.environ, "EGRESS_KAFKA_HOME": str(tmp_path)}
    result = _broker("status", "--port", str(_free_port()), env=env)
    assert result.returncode == 1
    assert "not running" in result.stderr


def test_stop_when_not_running_is_ok(tmp_path: Path) -> None:
    env = {**os.environ, "EGRESS_KAFKA_HOME": str(tmp_path)}
    result = _broker("stop", "--port", str(_free_port()), env=env)
    assert result.returncode == 0, result.stderr
    assert "not running" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert _broker().returncode == 2
    assert _broker("restart").returncode == 2
    assert _broker("status", "--port", "nope").returncode == 2
    assert _broker("start", "--secure", "/tmp").returncode == 2  # the TLS/SCRAM broker is the tests' own now
    assert _broker("java").returncode == 2


def test_java_runs_a_kafka_class_with_the_fetched_jars(kafka_bootstrap: str) -> None:
    """`java CLASS ARGS` runs Kafka's classes with the cached jars; its output is the class's own."""
    result = _broker("java", "kafka.tools.StorageTool", "random-uuid", timeout=60)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}\n", result.stdout), result.stdout


def test_missing_java_exits_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=_path_without(tmp_path, "java", "mvn"), EGRESS_KAFKA_HOME=str(tmp_path / "home"))
    result = _broker("start", "--port", str(_free_port()), env=env)
    assert result.returncode == 3, result.stderr
    assert "java not found" in result.stderr


def test_missing_mvn_exits_3_when_kafka_must_be_fetched(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env.update(PATH=_path_without(tmp_path, "mvn"), EGRESS_KAFKA_HOME=str(tmp_path / "home"))
    result = _broker("start", "--port", str(_free_port()), env=env)
    assert result.returncode == 3, result.stderr
    assert "mvn not found" in result.stderr
    assert not (tmp_path / "home" / "libs").exists()
