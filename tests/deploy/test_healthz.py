"""/healthz on the metrics listener, asked of real egress processes on loopback, and the
capture metrics beside it (egress_last_packet_timestamp_seconds, egress_flow_table_flows,
egress_flows_evicted_total) as a scrape sees them."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PCAPS, POLICY
from tests.deploy.conftest import EGRESS, Processes, egress_env, free_port, http_get, wait_for
from tests.deploy.test_prometheus import _SilentKafka

CAPTURE = PCAPS / "street-cctv-vlan20.pcap"


def healthz(port: int) -> tuple[int, str]:
    """Status and body of GET /healthz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(port: int) -> dict[str, float]:
    """The /metrics samples by `name` or `name{label="value",...}`."""
    out = {}
    for family in text_string_to_metric_families(http_get(f"http://127.0.0.1:{port}/metrics")):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def logged(processes: Processes, event: str) -> bool:
    return any(f'"event": "{event}"' in log.read_text(errors="replace") for log in processes.logs if log.exists())


def _geo(geoip: dict[str, Path]) -> list[str | Path]:
    return ["--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]]


def test_run_read_linger_is_healthy_once_its_file_is_done(geoip: dict[str, Path], processes: Processes) -> None:
    """`egress run --read --linger` after its file: 200 `{"status":"ok"}` (a file read to its end
    is done, not failing); the flow table is empty (flushed), nothing was evicted, and the last
    packet was read during this run, under the `pcap` interface label of a file read."""
    port = free_port()
    started = time.time()
    run = processes.start("egress-run", [EGRESS, "run", "--read", CAPTURE, "--linger", *_geo(geoip)],
                          env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}"))  # fmt: skip
    wait_for("egress run lingering", lambda: logged(processes, "lingering"), procs=[run], logs=processes.logs)
    assert healthz(port) == (200, '{"status":"ok"}\n')
    metrics = samples(port)
    assert metrics['egress_packets_captured_total{interface="pcap"}'] > 0
    assert started <= metrics['egress_last_packet_timestamp_seconds{interface="pcap"}'] <= time.time()
    assert metrics["egress_flow_table_flows"] == 0
    assert metrics["egress_flows_evicted_total"] == 0
    assert processes.stop(run) == 0


def _open_for_writing(fifo: Path, timeout: float = 30) -> BinaryIO:
    """The FIFO's writing end, once egress has opened it to read (open blocks until then)."""
    opened: list[BinaryIO] = []
    opener = threading.Thread(target=lambda: opened.append(fifo.open("wb")), daemon=True)
    opener.start()
    opener.join(timeout)
    if not opened:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # unblock the opener thread
        pytest.fail(f"egress did not open {fifo} within {timeout:.0f} s", pytrace=False)
    return opened[0]


def test_a_stalled_read_fails_healthz_until_its_file_ends(geoip: dict[str, Path], processes: Processes, tmp_path: Path) -> None:
    """`egress run --read FIFO --linger` with flows.max_flows 2, fed two thirds of a capture and
    then nothing: the table holds exactly 2 flows and /healthz is 200; 30 s without a packet it
    is 503 naming the capture; once the rest arrives and the FIFO closes, 200 again, the table
    empty and the flows exported early counted."""
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    data = CAPTURE.read_bytes()
    port = free_port()
    run = processes.start("egress-run", [EGRESS, "run", "--read", fifo, "--linger", *_geo(geoip)],
                          env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}", EGRESS_FLOWS__MAX_FLOWS="2"))  # fmt: skip
    watch = {"procs": [run], "logs": processes.logs}
    with _open_for_writing(fifo) as writer:
        writer.write(data[: len(data) * 2 // 3])
        writer.flush()
        wait_for("2 flows held", lambda: samples(port)["egress_flow_table_flows"] == 2, timeout=20, **watch)
        assert healthz(port) == (200, '{"status":"ok"}\n')
        status, body = wait_for("/healthz failing", lambda: (answer := healthz(port))[0] == 503 and answer, timeout=60, **watch)
        reason = json.loads(body)["reason"]
        assert body.endswith("}\n") and body.count("\n") == 1
        assert re.fullmatch(r"capture pcap: no packet or tick for (3\d|[4-9]\d) s", reason), reason
        writer.write(data[len(data) * 2 // 3 :])
    # healthy once the file has ended; the table is flushed just after that, not before
    wait_for("/healthz ok and the table flushed after the end of the file",
             lambda: healthz(port) == (200, '{"status":"ok"}\n') and samples(port)["egress_flow_table_flows"] == 0, timeout=30, **watch)  # fmt: skip
    assert samples(port)["egress_flows_evicted_total"] > 0
    assert processes.stop(run) == 0


def test_agent_with_a_spool_is_healthy_while_kafka_is_away(geoip: dict[str, Path], processes: Processes, tmp_path: Path) -> None:
    """`egress agent --read` with a spool and nothing listening at the bootstrap address: the
    drainer fails (`kafka_unavailable_spooling`) and the records wait in the spool, which
    accepts them: 200 `{"status":"ok"}`."""
    port, closed = free_port(), free_port()
    agent = processes.start("egress-agent", [EGRESS, "agent", "--read", CAPTURE, *_geo(geoip)],
                            env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}", EGRESS_SPOOL__PATH=str(tmp_path / "spool"),
                                           EGRESS_KAFKA__BOOTSTRAP_SERVERS=f"[127.0.0.1:{closed}]"))  # fmt: skip
    watch = {"procs": [agent], "logs": processes.logs}
    wait_for("the spool holding the capture's flows", lambda: samples(port)["egress_spool_records"] > 0, timeout=60, **watch)
    wait_for("a failed drain", lambda: logged(processes, "kafka_unavailable_spooling"), **watch)
    assert healthz(port) == (200, '{"status":"ok"}\n')
    assert processes.stop(agent) == 0


def test_agent_without_a_spool_is_failing_while_kafka_does_not_answer(geoip: dict[str, Path], processes: Processes) -> None:
    """`egress agent --read` with `spool.path: null` and a broker that accepts connections and
    never answers: 503 naming what it waits for, then exit 3 (Kafka must be there at start)."""
    kafka = _SilentKafka()
    port = free_port()
    try:
        agent = processes.start("egress-agent", [EGRESS, "agent", "--read", CAPTURE, *_geo(geoip)],
                                env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}", EGRESS_SPOOL__PATH="null",
                                               EGRESS_KAFKA__BOOTSTRAP_SERVERS=f"[127.0.0.1:{kafka.port}]"))  # fmt: skip
        status, body = wait_for("/healthz", lambda: healthz(port), timeout=30, procs=[agent], logs=processes.logs)
        assert (status, json.loads(body)) == (503, {"status": "failing", "reason": "capture pcap: starting; kafka: connecting"})
        assert agent.wait(timeout=60) == 3
    finally:
        kafka.close()


def test_rules_is_failing_until_its_consumer_polls(geoip: dict[str, Path], processes: Processes) -> None:
    """`egress rules` against a broker that accepts connections and never answers: 503, the
    consumer not polling yet. (Nothing listening at all ends it at once: exit 3.)"""
    kafka = _SilentKafka()
    port = free_port()
    try:
        rules = processes.start("egress-rules", [EGRESS, "rules", *_geo(geoip)],
                                env=egress_env(EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}", EGRESS_KAFKA__BOOTSTRAP_SERVERS=f"[127.0.0.1:{kafka.port}]"))  # fmt: skip
        status, body = wait_for("/healthz", lambda: healthz(port), timeout=30, procs=[rules], logs=processes.logs)
        assert (status, body) == (503, '{"status":"failing","reason":"kafka consumer: not polling yet"}\n')
    finally:
        kafka.close()


@pytest.mark.kafka
def test_rules_polling_is_healthy(kafka_bootstrap: str, geoip: dict[str, Path], processes: Processes) -> None:
    """`egress rules` with the broker: once its consumer polls, 200 `{"status":"ok"}`, and it stays so
    while it polls an empty topic."""
    from tests.kafka.test_streaming import topics_env

    port = free_port()
    rules = processes.start("egress-rules", [EGRESS, "rules", *_geo(geoip)],
                            env=egress_env(**topics_env(kafka_bootstrap, EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}")))  # fmt: skip
    wait_for("/healthz ok", lambda: healthz(port) == (200, '{"status":"ok"}\n'), procs=[rules], logs=processes.logs)
    time.sleep(2)
    assert healthz(port) == (200, '{"status":"ok"}\n')
    assert processes.stop(rules) == 0
