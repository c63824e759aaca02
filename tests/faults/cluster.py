"""The three-broker cluster of dev/kafka/cluster for the fault tests: start/stop/SIGKILL one
node, who leads a topic's partitions, and what the idempotent producers wrote (read from a
replica's log segments with Kafka's own DumpLogSegments, which prints each batch's producer id).

`kafka_cluster` starts it once per session on EGRESS_KAFKA_CLUSTER_PORT (19192-19194,
controllers +1000) unless it already answers, and then leaves it running as found."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "dev" / "kafka" / "cluster"
BROKER = REPO / "dev" / "kafka" / "broker"
HOME = Path(os.environ.get("EGRESS_KAFKA_HOME") or Path.home() / ".cache" / "egress" / "kafka")


def run_cluster(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLUSTER), *args], cwd="/", capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, env=os.environ | env)  # fmt: skip


@dataclass(frozen=True)
class Cluster:
    port: int  # node N's broker listens on port + N - 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"localhost:{self.port + n}" for n in range(3))

    def _node(self, command: str, node: int) -> float:
        done = run_cluster(command, "--node", str(node), "--port", str(self.port))
        assert done.returncode == 0, f"dev/kafka/cluster {command} --node {node}: {done.stderr}"
        return time.monotonic()

    def kill(self, node: int) -> float:
        """SIGKILL node `node`; when it was gone."""
        return self._node("kill", node)

    def stop(self, node: int) -> float:
        return self._node("stop", node)

    def start(self, node: int) -> float:
        """Start node `node` and wait until it answers; when it did."""
        return self._node("start", node)

    def _describe(self, topic: str) -> list[dict[str, Any]]:
        """The topic's partitions as the cluster describes them; none while no live node answers."""

        async def describe() -> list[dict[str, Any]]:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10000)
            await admin.start()
            try:
                return list((await admin.describe_topics([topic]))[0]["partitions"])
            finally:
                await admin.close()

        try:
            return asyncio.run(describe())
        except KafkaError:  # the node the admin client asked is the one down: ask again
            return []

    def leaders(self, topic: str) -> dict[int, int]:
        """partition → the node id leading it (-1: none)."""
        return {p["partition"]: p["leader"] for p in self._describe(topic)}

    def replicas(self, topic: str) -> dict[int, tuple[int, int]]:
        """partition → (replicas, in-sync replicas)."""
        return {p["partition"]: (len(p["replicas"]), len(p["isr"])) for p in self._describe(topic)}

    def all_up(self) -> None:
        """Start whatever node a previous test left down (a no-op when all three answer)."""
        done = run_cluster("start", "--port", str(self.port))
        assert done.returncode == 0, done.stderr

    def written(self, topic: str, node: int = 1) -> list[tuple[int, bytes]]:
        """(producer id, key + value) of every record of `topic` in node `node`'s replica of each
        partition (every node holds every partition: 3 replicas), read from its log segments."""
        logs = sorted(str(p) for p in (HOME / f"data-{self.port + node - 1}").glob(f"{topic}-*/*.log"))
        assert logs, f"no log segments of {topic} on node {node}"
        dump = subprocess.run(
            [str(BROKER), "java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "kafka.tools.DumpLogSegments",
             "--deep-iteration", "--print-data-log", "--files", ",".join(logs)],
            capture_output=True, text=True, timeout=180, check=False, stdin=subprocess.DEVNULL,
            env=os.environ | {"EGRESS_KAFKA_PORT": str(self.port + node - 1)},
        )  # fmt: skip
        assert dump.returncode == 0, dump.stderr[-2000:]
        records: list[tuple[int, bytes]] = []
        producer = -1
        for line in dump.stdout.splitlines():
            if line.startswith("baseOffset:"):
                producer = int(re.search(r"producerId: (-?\d+)", line).group(1))  # type: ignore[union-attr]
            elif line.startswith("| offset:"):
                key = re.search(r" key: (.*?) payload: ", line)
                records.append((producer, ((key.group(1) if key else "") + line.split(" payload: ", 1)[1]).encode()))
        return records


def duplicates(records: list[tuple[int, bytes]]) -> tuple[int, int]:
    """(copies of a record within one producer session — what idempotence forbids, copies
    across sessions — a drainer that reconnected sending a batch again, allowed)."""
    within = sum(n - 1 for n in Counter(records).values())
    across = sum(n - 1 for n in Counter(r for _, r in set(records)).values())
    return within, across


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[Cluster]:
    cluster = Cluster(int(os.environ.get("EGRESS_KAFKA_CLUSTER_PORT", "19192")))
    was_running = run_cluster("status", "--port", str(cluster.port)).returncode == 0
    if not was_running:
        started = run_cluster("start", "--port", str(cluster.port), timeout=900)
        if started.returncode != 0:
            pytest.fail(f"dev/kafka/cluster start exited {started.returncode}:\n{started.stderr}", pytrace=False)
    try:
        yield cluster
    finally:
        if not was_running:
            run_cluster("stop", "--port", str(cluster.port), timeout=180, EGRESS_KAFKA_STOP_TIMEOUT="10")  # test data: no need to wait
