"""Typed telemetry events: the burst sampler, and every declared metric driven through the
component that moves it, with its log event seen (structlog.testing.capture_logs)."""

from __future__ import annotations

import ast
import asyncio
import io
import struct
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from egress import compose
from egress.bus import Message
from egress.bus.kafka import KafkaPublisher
from egress.bus.memory import MemoryBus
from egress.bus.spool import Spool
from egress.codec import flow_message
from egress.config import Config, KafkaConfig
from egress.enrich import EnricherChain, Enrichers
from egress.enrich.oui import OuiRegistry
from egress.errors import DependencyMissing
from egress.localnet import LocalNetworks
from egress.model import TCP, Endpoint, FlowRecord
from egress.policy.evaluate import Evaluator
from egress.policy.schema import default_policy, load_policy
from egress.flows.meter import FlowMeter
from egress.services.agent import Capture, Captures, SpoolDrainer, publish_loop
from egress.services.rules import RulesStage
from egress.services.serve import in_process_main
from egress.sinks.metrics import MetricsSink
from egress.sinks.report import Report
from egress.telemetry import AgentMetrics, BurstSampler, RulesMetrics

POLICY = """version: 1
groups:
  - name: cams
    allow:
      - {name: vms, destinations: [198.51.100.0/24], ports: [tcp/443]}
"""


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _value(metrics: AgentMetrics | RulesMetrics, name: str, **labels: str) -> float:
    """A sample of the metrics' own registry (0 when the series does not exist)."""
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _events(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


# ---- the sampler ----------------------------------------------------------------------------


def test_sampler_logs_a_burst_then_counts_and_reports_the_suppressed() -> None:
    """The first `burst` lines of a period pass; the rest are suppressed, and the first line
    of the next period carries `suppressed` with how many were held back."""
    clock = _Clock()
    sampler = BurstSampler(burst=3, period_seconds=10.0, clock=clock)
    assert [sampler.admit("dead_letter") for _ in range(5)] == [0, 0, 0, None, None]
    clock.now += 9.9
    assert sampler.admit("dead_letter") is None
    clock.now += 0.1  # the period has passed: a new burst, and the tally of the last one
    assert sampler.admit("dead_letter") == 3
    assert sampler.admit("dead_letter") == 0


def test_sampler_counts_each_event_name_apart() -> None:
    """A flood of one event does not silence another."""
    sampler = BurstSampler(burst=1, period_seconds=60.0, clock=_Clock())
    assert sampler.admit("capture_skipped") == 0
    assert sampler.admit("capture_skipped") is None
    assert sampler.admit("dead_letter") == 0


def test_sampler_log_adds_the_suppressed_field_only_when_lines_were_held_back() -> None:
    """`log()` writes the structlog event with its fields, plus `suppressed=K` after a gap."""
    clock = _Clock()
    sampler = BurstSampler(burst=1, period_seconds=1.0, clock=clock)
    with capture_logs() as logs:
        for _ in range(4):
            sampler.log("warning", "dead_letter", reason="x")
        clock.now += 1.0
        sampler.log("warning", "dead_letter", reason="y")
    assert logs == [
        {"event": "dead_letter", "reason": "x", "log_level": "warning"},
        {"event": "dead_letter", "reason": "y", "suppressed": 3, "log_level": "warning"},
    ]


def test_sampler_is_thread_safe() -> None:
    """Capture threads share it: of many concurrent lines exactly `burst` pass in one period."""
    sampler = BurstSampler(burst=50, period_seconds=3600.0)
    passed: list[int | None] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(1000):
            result = sampler.admit("capture_dropped")
            with lock:
                passed.append(result)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in passed if r is not None) == 50 and len(passed) == 8000


def test_events_count_every_occurrence_while_the_log_is_sampled() -> None:
    """A flood of bad input is counted in full and logged `burst` times."""
    metrics = RulesMetrics(CollectorRegistry(), BurstSampler(burst=2, clock=_Clock()))
    with capture_logs() as logs:
        for i in range(100):
            metrics.dead_letter("not json", 0, i)
    assert _value(metrics, "egress_deadletter_total") == 100
    assert len(_events(logs, "dead_letter")) == 2


# ---- the rules side, through RulesStage over the in-process bus -----------------------------


def _flow(i: int, dest: str) -> FlowRecord:
    return FlowRecord(
        start=1768471200.0 + i, end=1768471201.0 + i, transport=TCP,
        source=Endpoint("10.20.1.11", 40000 + i, "44-19-B6-12-34-56", 100, 1), destination=Endpoint(dest, 443, None, 100, 1),
        vlans=(), community_id=f"1:{i}", direction="outbound", device_mac="44-19-B6-12-34-56", device_ip="10.20.1.11",
        device_manufacturer="Hikvision", site="hq",
    )  # fmt: skip


def _stage(tmp_path: Path) -> tuple[RulesStage, MemoryBus, RulesMetrics]:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(POLICY)
    metrics = RulesMetrics(CollectorRegistry())
    bus = MemoryBus("flows")
    stage = RulesStage(Evaluator(load_policy(policy_path)), bus, [MetricsSink(metrics)], metrics, dead_letters=bus, dead_letter_topic="dlq", policy_path=policy_path)
    return stage, bus, metrics


async def _feed(stage: RulesStage, bus: MemoryBus, messages: list[Message]) -> None:
    for m in messages:
        await bus.send("flows", m)
    await bus.close()
    await stage.run()


def test_rules_stage_counts_flows_alerts_devices_and_dead_letters(tmp_path: Path) -> None:
    """Garbage on the flows topic is a dead letter (egress_deadletter_total, `dead_letter`);
    good records move the evaluated, alerts and devices series."""
    stage, bus, metrics = _stage(tmp_path)
    messages = [flow_message(_flow(0, "198.51.100.10")), flow_message(_flow(1, "203.0.113.7")), Message(None, b"not json", (("schema-version", b"1"),))]
    with capture_logs() as logs:
        asyncio.run(_feed(stage, bus, messages))
    assert _value(metrics, "egress_deadletter_total") == 1
    assert _events(logs, "dead_letter")[0]["reason"]
    assert _value(metrics, "egress_flows_evaluated_total", site="hq", group="cams", verdict="allowed") == 1
    alert = {"site": "hq", "group": "cams", "vendor": "Hikvision", "country": "unknown"}
    assert _value(metrics, "egress_alerts_total", **alert, category="unexpected", rule="unexpected-destination", severity="medium") == 1
    assert _value(metrics, "egress_devices", site="hq", group="cams", vendor="Hikvision", covered="true") == 1  # a covered vendor by default


def test_policy_reload_failure_and_success_are_counted_and_logged(tmp_path: Path) -> None:
    """A bad policy on SIGHUP keeps the old one (egress_policy_reload_failures_total,
    `policy_reload_failed`); a good one is applied (egress_policy_reloads_total, `policy_reloaded`)."""
    stage, _bus, metrics = _stage(tmp_path)
    (tmp_path / "policy.yaml").write_text("version: 1\ngroups: [{name: cams, allow: [{nme: typo}]}]\n")
    with capture_logs() as logs:
        stage.reload()
        (tmp_path / "policy.yaml").write_text(POLICY)
        stage.reload()
    assert _value(metrics, "egress_policy_reload_failures_total") == 1
    assert _value(metrics, "egress_policy_reloads_total") == 1
    assert _events(logs, "policy_reload_failed")[0]["keeping"] == "previous policy"
    assert _events(logs, "policy_reloaded")[0]["groups"] == 1


def _flush_refused(on_error: Any) -> list[MutableMapping[str, Any]]:
    """Flush a KafkaPublisher holding one delivery Kafka refused (no broker needed: the
    failure is the future aiokafka would have resolved); the log lines it wrote."""

    async def main() -> None:
        publisher = KafkaPublisher(KafkaConfig(), on_error=on_error)
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(DependencyMissing("broker refused the record"))
        publisher._pending = [failed]  # noqa: SLF001 - what send() leaves behind
        with pytest.raises(DependencyMissing):
            await publisher.flush()

    with capture_logs() as logs:
        asyncio.run(main())
    return logs


def test_alert_publish_failure_is_counted_and_logged() -> None:
    """Alerts (and dead letters) Kafka refused move egress_alert_publish_errors_total and log
    `alert_publish_failed`, through the publisher's flush, as `egress rules` wires it."""
    metrics = RulesMetrics(CollectorRegistry())
    logs = _flush_refused(metrics.alert_publish_failed)
    assert _value(metrics, "egress_alert_publish_errors_total") == 1
    assert _events(logs, "alert_publish_failed")[0]["records"] == 1


def test_commit_refused_and_consumer_lag_events() -> None:
    """Driven directly: a refused commit needs a consumer-group rebalance and the lag a
    broker (tests/kafka/test_lag.py drives the lag for real). The commit event moves
    egress_consumer_commit_failures_total and logs `commit_refused`."""
    metrics = RulesMetrics(CollectorRegistry())
    with capture_logs() as logs:
        metrics.commit_refused("CommitFailedError: rebalanced", 3)
    metrics.lag("flows", 0, 42)
    assert _value(metrics, "egress_consumer_commit_failures_total") == 1
    assert _events(logs, "commit_refused")[0]["partitions"] == 3
    assert _value(metrics, "egress_consumer_lag_records", topic="flows", partition="0") == 42


# ---- the agent side ----------------------------------------------------------------------------


def _pcap_with_a_skipped_frame(path: Path) -> Path:
    """Two IPv4/UDP packets around a PPPoE LCP frame (passes the prefilter, carries no IP)."""
    def eth(etype: int, payload: bytes) -> bytes:
        return bytes.fromhex("001122334455" "4419b6123456") + struct.pack("!H", etype) + payload

    udp = struct.pack("!HHHH", 40000, 443, 16, 0) + b"x" * 8
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes([10, 20, 1, 11]), bytes([198, 51, 100, 7])) + udp
    lcp = struct.pack("!BBHHH", 0x11, 0, 1, 6, 0xC021) + bytes.fromhex("01010004")
    frames = [eth(0x0800, ip), eth(0x8864, lcp), eth(0x0800, ip)]
    data = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for i, frame in enumerate(frames):
        data += struct.pack("<IIII", 1768471200 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(data)
    return path


def test_analyze_counts_captured_packets_exported_flows_and_skipped_frames(tmp_path: Path) -> None:
    """A capture with a frame that is not IP, through `analyze`: the frame moves
    egress_frames_skipped_total{interface} and logs `capture_skipped`; the packets and the
    flow move egress_packets_captured_total and egress_flows_exported_total."""
    pcap = _pcap_with_a_skipped_frame(tmp_path / "skip.pcap")
    analysis = compose.analyze(Config(), default_policy(), [pcap], Report("json", io.StringIO()), metrics=AgentMetrics(CollectorRegistry()))
    with capture_logs() as logs:
        asyncio.run(in_process_main(analysis.parts))
    metrics = analysis.parts.metrics
    assert _value(metrics, "egress_frames_skipped_total", interface=str(pcap)) == 1
    assert _events(logs, "capture_skipped") == [{"event": "capture_skipped", "interface": str(pcap), "frames": 1, "log_level": "info"}]
    assert _value(metrics, "egress_packets_captured_total", interface=str(pcap)) == 2
    assert _value(metrics, "egress_flows_exported_total") == 1
    assert _value(metrics, "egress_build_info", version=__import__("egress").__version__) == 1


def test_a_full_flow_table_counts_its_evictions_and_the_held_flows_are_read_at_scrape(tmp_path: Path) -> None:
    """`analyze` of a capture with 14 flows and flows.max_flows 2: egress_flows_evicted_total
    counts the flows exported early and `flow_table_full` logs them; egress_flow_table_flows
    is 0 once the file is done (its table flushed) and egress_last_packet_timestamp_seconds
    carries the wall-clock time of the read, under the capture's interface label."""
    from tests.conftest import PCAPS

    capture = PCAPS / "street-cctv-vlan20.pcap"
    config = Config.model_validate({"flows": {"max_flows": 2}})
    analysis = compose.analyze(config, default_policy(), [capture], Report("json", io.StringIO()), metrics=AgentMetrics(CollectorRegistry()))
    before = time.time()
    with capture_logs() as logs:
        asyncio.run(in_process_main(analysis.parts))
    metrics = analysis.parts.metrics
    evicted = _value(metrics, "egress_flows_evicted_total")
    assert 12 <= evicted <= analysis.flows - 2  # of 14 flows all but 2 went early (a flow evicted mid-way comes back as another); 2 were flushed at the end
    assert sum(e["flows_evicted"] for e in _events(logs, "flow_table_full")) == evicted
    assert _events(logs, "flow_table_full")[0]["interface"] == str(capture)
    assert _value(metrics, "egress_flow_table_flows") == 0
    assert before <= _value(metrics, "egress_last_packet_timestamp_seconds", interface=str(capture)) <= time.time()


def test_frames_skipped_by_a_long_running_source_are_counted_as_they_grow() -> None:
    """A live source's skipped frames are counted at each tick, not only when it ends:
    egress_frames_skipped_total{interface} follows `skipped()` and `capture_skipped` is logged.
    (A live tshark needs an interface; tests/live runs the real one.)"""
    metrics = AgentMetrics(CollectorRegistry())
    skipped = 0
    seen: list[float] = []

    def packets() -> Iterator[None]:
        nonlocal skipped
        for _ in range(3):
            skipped += 2
            yield None  # a tick: the pump counts what was skipped so far
            seen.append(_value(metrics, "egress_frames_skipped_total", interface="eth1"))

    async def main() -> None:
        meter = FlowMeter.from_config(Config(), LocalNetworks([]), EnricherChain([]))
        captures = Captures([Capture("eth1", packets, meter, skipped=lambda: skipped)], metrics)
        captures.start()
        captures.run()
        await publish_loop(captures.queue, MemoryBus("flows"), "flows", metrics)
        await captures.finish()

    with capture_logs() as logs:
        asyncio.run(main())
    assert seen == [2, 4, 6]
    assert [e["frames"] for e in _events(logs, "capture_skipped")] == [2, 2, 2]


def test_enrich_errors_count_bad_geoip_addresses_and_bad_macs(geoip: dict[str, Path]) -> None:
    """A GeoIP lookup refusing its address and a device MAC the registry cannot read move
    egress_enrich_errors_total{enricher} and log `enrich_error`, as compose wires the enrichers."""
    metrics = AgentMetrics(CollectorRegistry())
    try:
        registry = OuiRegistry.load()
    except Exception as exc:  # the IEEE registry ships with Wireshark
        pytest.skip(f"no OUI registry: {exc}")
    enrichers = Enrichers(LocalNetworks(["10.0.0.0/8"]), geoip["country"], None, registry, on_error=metrics.enrich_error)
    enrichers.start()
    try:
        with capture_logs() as logs:
            enrichers.geoip.lookup("not-an-address")
            rec = _flow(0, "198.51.100.10")
            rec.source = Endpoint("10.20.1.11", 40000, "zz:not:a:mac", 100, 1)
            enrichers.device.enrich(rec)
    finally:
        enrichers.stop()
    assert _value(metrics, "egress_enrich_errors_total", enricher="geoip") == 1
    assert _value(metrics, "egress_enrich_errors_total", enricher="device") == 1
    assert {e["enricher"] for e in _events(logs, "enrich_error")} == {"geoip", "device"}


def test_spool_full_drops_are_counted_and_logged(tmp_path: Path) -> None:
    """A spool past max_bytes drops its oldest segment: egress_spool_dropped_records_total
    and `spool_full_dropped_oldest` (the spool reports it through `on_drop`, as compose wires it)."""
    metrics = AgentMetrics(CollectorRegistry())
    spool = Spool(tmp_path, 8192, segment_bytes=2048, on_drop=metrics.spool_full_dropped_oldest)
    spool.start()
    with capture_logs() as logs:
        for i in range(100):
            spool.append([Message(b"k", f"value-{i}-{j}".encode()) for j in range(10)])
    spool.stop()
    dropped = _events(logs, "spool_full_dropped_oldest")
    assert dropped and dropped[0]["max_bytes"] == 8192
    assert _value(metrics, "egress_spool_dropped_records_total") == 1000 - len(spool) > 0


def test_a_spool_on_a_full_disk_counts_the_overflow_logs_once_and_keeps_what_it_had(small_disk: Callable[[str], Path]) -> None:
    """The spool's filesystem fills before max_bytes: each batch that does not fit is counted
    in egress_spool_overflow_records_total and nothing raises; `spool_disk_full` is logged once
    for the episode, `spool_disk_space_back` when a batch fits again; every record spooled
    before, and after, comes out whole and in order (no torn frame is left behind)."""
    metrics = AgentMetrics(CollectorRegistry())
    spool = Spool(small_disk("64k") / "spool", 1 << 30, on_drop=metrics.spool_full_dropped_oldest,
                  on_overflow=metrics.spool_disk_full, on_space_back=metrics.spool_disk_space_back)  # fmt: skip
    spool.start()
    batch = [Message(b"k", b"x" * 1000) for _ in range(4)]
    with capture_logs() as logs:
        kept = []
        for i in range(40):  # 160 KB into 64 KiB
            before = len(spool)
            spool.append([Message(b"k", f"{i}-{j}".encode() + m.value) for j, m in enumerate(batch)])
            if len(spool) > before:
                kept.append(i)
        assert 0 < len(kept) < 40
        overflow = _value(metrics, "egress_spool_overflow_records_total")
        assert overflow == 4 * (40 - len(kept))
        assert len(_events(logs, "spool_disk_full")) == 1, "one line per episode"
        assert _events(logs, "spool_disk_full")[0]["reason"] == "No space left on device"
        out = []
        while len(spool):  # Kafka is back: delivered segments are deleted, which frees the disk
            records, cursor = spool.peek(7)
            out += records
            spool.ack(len(records), cursor)
        assert len(_events(logs, "spool_cursor_not_saved")) <= 1, "a cursor the full disk refused: once per episode too"
        spool.append([Message(b"k", b"after")])
        assert [e["records_lost"] for e in _events(logs, "spool_disk_space_back")] == [overflow]
        records, _ = spool.peek(10)
    assert [m.value for m in out] == [f"{i}-{j}".encode() + b"x" * 1000 for i in kept for j in range(4)]
    assert [m.value for m in records] == [b"after"]
    spool.stop()


def test_spool_drainer_counts_kafka_unavailable_then_delivers(tmp_path: Path) -> None:
    """Kafka away: each failed drain moves egress_publish_errors_total and logs
    `kafka_unavailable_spooling`; once it is back, the records leave (egress_flows_exported_total)
    and egress_spool_records falls to 0."""
    metrics = AgentMetrics(CollectorRegistry())
    spool = Spool(tmp_path, 1 << 20)
    spool.start()
    spool.append([Message(b"k", b"v%d" % i) for i in range(5)])
    attempts = 0

    async def connect() -> MemoryBus:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise DependencyMissing("Kafka unreachable at localhost:1")
        return MemoryBus("other")

    async def main() -> None:
        drainer = SpoolDrainer(spool, connect, "flows", metrics)
        done = asyncio.Event()
        done.set()
        await drainer.run(done)

    with capture_logs() as logs:
        asyncio.run(main())
    spool.stop()
    assert _value(metrics, "egress_publish_errors_total") == 1
    assert _events(logs, "kafka_unavailable_spooling")[0]["spooled"] == 5
    assert _value(metrics, "egress_flows_exported_total") == 5
    assert _value(metrics, "egress_spool_records") == 0


class _Session:
    """A producer session that keeps what it was sent; `fail` makes its first flush raise
    after the sends went out (a timeout reported while the broker got them anyway)."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.sent: list[bytes] = []
        self.stopped = False

    async def start(self) -> None:
        return None

    async def send(self, topic: str, message: Message) -> None:
        self.sent.append(message.value)

    async def send_many(self, topic: str, messages: list[Message]) -> None:
        self.sent += [m.value for m in messages]

    async def flush(self) -> None:
        if self.fail:
            self.fail = False
            raise OSError("request timed out")

    async def stop(self) -> None:
        self.stopped = True


def test_spool_drainer_sends_a_failed_batch_again_in_a_new_producer_session(tmp_path: Path) -> None:
    """A flush that failed may still have delivered: the batch goes again, but never through
    the same idempotent session (two copies within one are what idempotence rules out). The
    failed session is stopped; the spool is acknowledged only after the new one's flush."""
    metrics = AgentMetrics(CollectorRegistry())
    spool = Spool(tmp_path, 1 << 20)
    spool.start()
    spool.append([Message(b"k", b"v%d" % i) for i in range(5)])
    sessions: list[_Session] = []

    async def connect() -> _Session:
        sessions.append(_Session(fail=not sessions))
        return sessions[-1]

    async def main() -> None:
        drainer = SpoolDrainer(spool, connect, "flows", metrics)  # type: ignore[arg-type]
        done = asyncio.Event()
        done.set()
        await drainer.run(done)
        await drainer.stop()

    asyncio.run(main())
    spool.stop()
    assert len(sessions) == 2
    assert all(len(s.sent) == len(set(s.sent)) == 5 for s in sessions), [s.sent for s in sessions]
    assert sessions[0].stopped and sessions[1].stopped
    assert _value(metrics, "egress_flows_exported_total") == 5


def test_flow_publish_failure_without_a_spool_is_counted_and_logged() -> None:
    """No spool: flow records Kafka refused move egress_publish_errors_total by their number
    and log `flow_publish_failed`, through the publisher's flush as `egress agent` wires it."""
    metrics = AgentMetrics(CollectorRegistry())
    logs = _flush_refused(metrics.flow_publish_failed)
    assert _value(metrics, "egress_publish_errors_total") == 1
    assert _events(logs, "flow_publish_failed")[0]["records"] == 1


def test_live_capture_drops_restarts_and_agent_info() -> None:
    """Driven directly: kernel drops and a vanished interface need a live capture with
    privileges (tests/live drives them for real). The events move
    egress_packets_dropped_total{interface} / egress_capture_restarts_total{interface} and log
    `capture_dropped` / `capture_interrupted`; egress_agent_info carries site and observer."""
    metrics = AgentMetrics(CollectorRegistry())
    with capture_logs() as logs:
        metrics.capture_dropped("eth1", 7)
        metrics.capture_dropped("eth1", 0)  # nothing dropped: neither counted nor logged
        metrics.capture_interrupted("eth1", 1.0)
    metrics.agent_info.info({"site": "hq", "observer": "probe-1"})
    assert _value(metrics, "egress_packets_dropped_total", interface="eth1") == 7
    assert _value(metrics, "egress_capture_restarts_total", interface="eth1") == 1
    assert [e["event"] for e in logs] == ["capture_dropped", "capture_interrupted"]
    assert _value(metrics, "egress_agent_info", site="hq", observer="probe-1") == 1


# ---- every declared metric is driven above ----------------------------------------------------


def _constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_every_declared_metric_is_driven_by_some_test() -> None:
    """Each metric family AgentMetrics and RulesMetrics register is named by its sample name
    (`name`, `name_total`, `name_info`) in some test under tests/ (here, through `_value`):
    a new metric nobody tests fails here."""
    registry = CollectorRegistry()
    AgentMetrics(registry)
    RulesMetrics(registry)
    named: set[str] = set()
    for path in Path(__file__).parent.rglob("test_*.py"):
        named |= _constants(path)
    untested = {m.name for m in registry.collect() if not {m.name, f"{m.name}_total", f"{m.name}_info"} & named}
    assert untested == set()
