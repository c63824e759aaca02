"""Wiring of the long-running commands: `egress agent`, `egress rules`, `egress run`.

agent = capture pump(s) → publish loop → Kafka flows topic
rules = Kafka flows topic → RulesStage → Kafka alerts topic (+ NDJSON)
run   = capture pump(s) → publish loop → MemoryBus → RulesStage → NDJSON
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from egress.bus.memory import MemoryBus
from egress.capture.file import FileSource
from egress.capture.live import LiveSource
from egress.capture.prefilter import build_filter
from egress.config import Config
from egress.enrich import EnricherChain
from egress.errors import EgressError
from egress.flows.meter import FlowMeter
from egress.localnet import LocalNetworks
from egress.model import Packet
from egress.policy.evaluate import Evaluator
from egress.runtime import SystemdNotifier, on_signals, spawn, trim_memory
from egress.bus import Publisher
from egress.bus.spool import Spool
from egress.services.agent import CapturePump, SpoolDrainer, publish_loop, spool_loop
from egress.services.rules import RulesStage
from egress.sinks.ndjson import NdjsonSink
from egress.telemetry import AgentMetrics, RulesMetrics, serve_metrics

__all__ = ["AgentPlan", "agent_main", "rules_main", "run_main"]

log = structlog.get_logger("egress.serve")


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """What the agent half needs: config, local networks, enrichers, and either a file to
    read or interfaces to capture on (one pump, flow table and enricher chain each)."""

    config: Config
    local: LocalNetworks
    chain_factory: Callable[[], EnricherChain]
    read: Path | None
    interfaces: tuple[str, ...] = ()


def _file_packets(plan: AgentPlan, path: Path) -> Callable[[], Iterator[Packet | None]]:
    source = FileSource.for_networks(path, list(plan.local.networks), plan.config.capture.bpf, chunk_packets=plan.config.capture.chunk_packets)

    def packets() -> Iterator[Packet | None]:
        yield from source.packets()
        for warning in source.report.warnings:
            log.warning("capture_warning", file=str(path), message=warning)

    return packets


class _Pumps:
    """One capture pump per source, and the enricher chains to reopen on SIGHUP."""

    def __init__(self, plan: AgentPlan, metrics: AgentMetrics, queue: asyncio.Queue[list | None]) -> None:  # type: ignore[type-arg]
        cfg, loop = plan.config, asyncio.get_running_loop()
        self.chains: list[EnricherChain] = []
        self.pumps: list[CapturePump] = []
        if plan.read is not None:
            chain = plan.chain_factory()
            meter = FlowMeter.from_config(cfg, plan.local, chain)
            self.chains.append(chain)
            self.pumps.append(CapturePump(_file_packets(plan, plan.read), meter, metrics, "pcap", loop, queue))
        bpf = build_filter(plan.local.networks, cfg.capture.bpf)
        for interface in plan.interfaces:
            source = LiveSource(
                interface, bpf, snaplen=cfg.capture.snaplen, chunk_packets=cfg.capture.chunk_packets,
                on_drops=metrics.packets_dropped.labels(interface).inc, on_restart=metrics.capture_restarts.labels(interface).inc,
            )  # fmt: skip
            source.start()  # a bad interface or filter fails here, before anything runs
            chain = plan.chain_factory()
            self.chains.append(chain)
            meter = FlowMeter.from_config(cfg, plan.local, chain)
            self.pumps.append(CapturePump(source.packets, meter, metrics, interface, loop, queue, on_stop=source.stop))

    def start(self) -> None:
        for pump in self.pumps:
            pump.start()
            log.info("capture_started", source=pump.name)

    def stop(self) -> None:
        for pump in self.pumps:
            pump.stop()

    def reopen(self) -> None:
        for chain in self.chains:
            chain.request_reopen()

    async def finish(self) -> None:
        for pump in self.pumps:
            await asyncio.to_thread(pump.join)
        errors = [p.error for p in self.pumps if p.error is not None]
        if errors:
            raise errors[0]


def _metrics_endpoint(config: Config) -> None:
    try:
        address = serve_metrics(config.metrics.listen)
    except OSError as exc:
        raise EgressError(f"metrics.listen {config.metrics.listen}: cannot listen: {exc.strerror}") from None
    log.info("metrics_listening", address=address)


def _ready() -> SystemdNotifier:
    """Tell systemd we are up and keep its watchdog fed."""
    notifier = SystemdNotifier()
    notifier.notify("READY=1")
    spawn(notifier.watchdog(), "egress-watchdog")
    spawn(trim_memory(), "egress-trim-memory")
    return notifier


def _agent_metrics(cfg: Config) -> AgentMetrics:
    metrics = AgentMetrics()
    metrics.agent_info.info({"site": cfg.site, "observer": cfg.observer_name or socket.gethostname()})
    return metrics


async def agent_main(plan: AgentPlan) -> int:
    from egress.bus.kafka import KafkaPublisher, ensure_topics

    cfg = plan.config
    metrics = _agent_metrics(cfg)
    _metrics_endpoint(cfg)

    async def connect() -> KafkaPublisher:
        await ensure_topics(cfg.kafka, [cfg.kafka.flows_topic])
        publisher = KafkaPublisher(cfg.kafka)
        await publisher.start()
        return publisher

    if cfg.spool.path is None:
        publisher = await connect()  # no spool: Kafka must be there now (exit 3 otherwise)
        return await _agent_direct(plan, metrics, publisher)
    spool = Spool(cfg.spool.path, cfg.spool.max_bytes, on_drop=metrics.spool_dropped.inc)
    if len(spool):
        log.info("spool_resuming", records=len(spool), path=str(cfg.spool.path))
    drainer = SpoolDrainer(spool, connect, cfg.kafka.flows_topic, metrics)
    queue: asyncio.Queue[list | None] = asyncio.Queue(maxsize=64)  # type: ignore[type-arg]
    pumps = _Pumps(plan, metrics, queue)
    stopping = asyncio.Event()

    def stop() -> None:
        pumps.stop()
        stopping.set()

    on_signals(stop, pumps.reopen)
    input_done = asyncio.Event()
    draining = spawn(drainer.run(input_done), "egress-spool-drainer")
    pumps.start()
    notifier = _ready()
    try:
        spooled = await spool_loop(queue, spool, drainer, len(pumps.pumps))
        await pumps.finish()
        input_done.set()
        drainer.wake.set()
        stop_wait = spawn(stopping.wait(), "egress-stop-wait")
        await asyncio.wait([draining, stop_wait], return_when=asyncio.FIRST_COMPLETED)
        if not draining.done():  # SIGTERM while Kafka is away: a short grace, then the spool keeps the rest
            await asyncio.wait([draining], timeout=10)
        if not draining.done():
            draining.cancel()
            log.warning("agent_stopping_with_spool", records=len(spool), path=str(cfg.spool.path))
        stop_wait.cancel()
    finally:
        notifier.notify("STOPPING=1")
        await drainer.stop()
        metrics.spool_records.set(len(spool))
        spool.close()
    log.info("agent_done", flows_spooled=spooled, flows_delivered=drainer.delivered, spooled_left=len(spool))
    return 0


async def _agent_direct(plan: AgentPlan, metrics: AgentMetrics, publisher: Publisher) -> int:
    cfg = plan.config
    queue: asyncio.Queue[list | None] = asyncio.Queue(maxsize=64)  # type: ignore[type-arg]
    pumps = _Pumps(plan, metrics, queue)
    on_signals(pumps.stop, pumps.reopen)
    pumps.start()
    notifier = _ready()
    try:
        published = await publish_loop(queue, publisher, cfg.kafka.flows_topic, metrics, len(pumps.pumps))
        await pumps.finish()
    finally:
        notifier.notify("STOPPING=1")
        await publisher.stop()
    log.info("agent_done", flows_published=published)
    return 0


async def rules_main(config: Config, evaluator: Evaluator, policy_path: Path | None, alerts_out: Path | None) -> int:
    from egress.bus.kafka import KafkaPublisher, KafkaSubscriber, ensure_topics

    kafka = config.kafka
    metrics = RulesMetrics()
    _metrics_endpoint(config)
    await ensure_topics(kafka, [kafka.flows_topic, kafka.alerts_topic, kafka.dead_letter_topic])
    publisher = KafkaPublisher(kafka)
    subscriber = KafkaSubscriber(kafka, kafka.flows_topic, on_lag=metrics.lag)
    await publisher.start()
    sinks = [NdjsonSink(alerts_out)] if alerts_out is not None else []
    try:
        await subscriber.start()
        stage = RulesStage(
            evaluator, subscriber, metrics, sinks, publisher=publisher,
            alerts_topic=kafka.alerts_topic, dead_letter_topic=kafka.dead_letter_topic, policy_path=policy_path,
        )  # fmt: skip
        on_signals(subscriber.request_stop, stage.reload)
        log.info("rules_consuming", topic=kafka.flows_topic, group=kafka.group_id)
        notifier = _ready()
        await stage.run()
        notifier.notify("STOPPING=1")
    finally:
        await subscriber.stop()
        await publisher.stop()
        for sink in sinks:
            sink.close()
    log.info("rules_done", evaluated=stage.evaluated, alerts=stage.alerts)
    return 0


async def run_main(plan: AgentPlan, evaluator: Evaluator, policy_path: Path | None, alerts_out: Path | None, linger: bool = False) -> int:
    """`linger`: once the file is done, keep serving metrics until SIGTERM (for scrapers)."""
    cfg = plan.config
    agent_metrics, rules_metrics = _agent_metrics(cfg), RulesMetrics()
    _metrics_endpoint(cfg)
    bus = MemoryBus(cfg.kafka.flows_topic)
    sink = NdjsonSink(alerts_out)
    stage = RulesStage(evaluator, bus, rules_metrics, [sink], policy_path=policy_path)
    queue: asyncio.Queue[list | None] = asyncio.Queue(maxsize=64)  # type: ignore[type-arg]
    pumps = _Pumps(plan, agent_metrics, queue)
    stopped = asyncio.Event()

    def stop() -> None:
        pumps.stop()
        stopped.set()

    def reload() -> None:
        pumps.reopen()
        stage.reload()

    on_signals(stop, reload)
    rules = spawn(stage.run(), "egress-rules")
    pumps.start()
    notifier = _ready()
    try:
        await publish_loop(queue, bus, cfg.kafka.flows_topic, agent_metrics, len(pumps.pumps))
        await bus.close()
        await rules
        await pumps.finish()
        log.info("run_done", evaluated=stage.evaluated, alerts=stage.alerts)
        sink.flush()
        if linger and not stopped.is_set():
            log.info("lingering", reason="serving metrics until SIGTERM")
            await stopped.wait()
    finally:
        notifier.notify("STOPPING=1")
        sink.close()
    return 0
