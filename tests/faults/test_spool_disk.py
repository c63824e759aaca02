"""The agent's spool on a full disk (a small tmpfs) while Kafka is away: capture goes on, the
records that do not fit are counted and the episode is logged once, nothing crashes, and what
was spooled is delivered once space and Kafka return."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.baseline.test_baseline_samples import LEARN_ENFORCE, SPLIT, _split
from tests.conftest import POLICY, record_result, wait_for
from tests.faults.feed import LOAD, Feed, agent_metric, loaded
from tests.kafka.conftest import run_broker
from tests.kafka.test_streaming import _read_topic, topics_env

pytestmark = pytest.mark.kafka


def _events(log: Path, name: str) -> int:
    return log.read_text().count(f'"event": "{name}"')


def test_spool_on_a_full_disk_while_kafka_is_away(kafka_bootstrap: str, geoip: dict[str, Path], small_disk: Callable[[str], Path], tmp_path: Path) -> None:
    """Kafka stopped; the agent reads a capture of LOAD flows from a FIFO into a spool on a
    256 KiB tmpfs (max_bytes 1 GiB, so the disk fills first). The overflow is counted, logged
    once; the capture is read to its end. The disk grows (remount), the last piece is spooled
    again (`spool_disk_space_back`), Kafka returns, and every spooled record reaches the topic."""
    _, enforce = _split(LEARN_ENFORCE, SPLIT, tmp_path / "learn.pcap", tmp_path / "enforce.pcap")
    data = loaded(enforce, LOAD)
    disk = small_disk("256k")
    env = topics_env(kafka_bootstrap, EGRESS_SPOOL__PATH=str(disk / "spool"), EGRESS_SPOOL__MAX_BYTES="1GiB", EGRESS_FLOWS__MAX_FLOWS="4")
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    log = tmp_path / "agent.log"
    assert run_broker("stop").returncode == 0
    try:
        agent = subprocess.Popen(
            [sys.executable, "-m", "egress", "agent", "--read", str(fifo), "--policy", str(POLICY), "--geoip-country", str(geoip["country"]),
             "--geoip-asn", str(geoip["asn"]), "--log-format", "json"],
            env={k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")} | env,
            stdout=subprocess.DEVNULL, stderr=log.open("w"), stdin=subprocess.DEVNULL,
        )  # fmt: skip
        feed = Feed(fifo, data, log)
        for _ in range(5):
            feed.next()
        assert wait_for(lambda: (agent_metric(log, "egress_spool_overflow_records_total") or 0) > 0, 60), log.read_text()[-3000:]
        captured = agent_metric(log, "egress_packets_captured_total")
        assert agent.poll() is None, "a full disk crashes nothing"
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        feed.close()
        assert wait_for(lambda: _events(log, "spool_disk_space_back") == 1, 60), log.read_text()[-3000:]
        assert wait_for(lambda: (agent_metric(log, "egress_packets_captured_total") or 0) > (captured or 0), 30), "capture went on to the end"
        time.sleep(2)  # the last batches reach the spool
        spooled = int(agent_metric(log, "egress_spool_records") or 0)
        overflow = int(agent_metric(log, "egress_spool_overflow_records_total") or 0)
    finally:
        started = run_broker("start", timeout=300)
    assert started.returncode == 0, started.stderr
    assert agent.wait(timeout=180) == 0, log.read_text()[-3000:]
    assert _events(log, "spool_disk_full") == 1, "logged once for the episode"
    assert "Traceback" not in log.read_text()
    assert 0 < spooled and 0 < overflow and spooled + overflow >= LOAD
    delivered = asyncio.run(_read_topic(kafka_bootstrap, env["EGRESS_KAFKA__FLOWS_TOPIC"], spooled + 1, timeout=30))
    assert len(delivered) == spooled, f"{len(delivered)} flow records in the topic, {spooled} were spooled"
    record_result("spool_full_disk", fault="spool on a full 256 KiB disk while Kafka is away, then space and Kafka back", expected=spooled,
                  received=len(delivered), lost=spooled - len(delivered), crashes=0, overflow_counted=overflow, disk_full_log_lines=1)  # fmt: skip
