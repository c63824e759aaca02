"""Wiring of the long-running commands: `egress agent`, `egress rules`, `egress run`.

agent = capture pump(s) → publish loop → Kafka flows topic
rules = Kafka flows topic → RulesStage → Kafka alerts topic (+ NDJSON)
run   = capture pump(s) → publish loop → MemoryBus → RulesStage → NDJSON
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from egress.bus.memory import MemoryBus
from egress.capture.file import FileSource
from egress.config import Config
from egress.enrich import EnricherChain
from egress.errors import EgressError
from egress.flows.meter import FlowMeter
from egress.localnet import LocalNetworks
from egress.model import Packet
from egress.policy.evaluate import Evaluator
from egress.runtime import SystemdNotifier, on_signals, spawn
from egress.services.agent import CapturePump, publish_loop
from egress.services.rules import RulesStage
from egress.sinks.ndjson import NdjsonSink
from egress.telemetry import AgentMetrics, RulesMetrics, serve_metrics

__all__ = ["AgentPlan", "agent_main", "rules_main", "run_main"]

log = structlog.get_logger("egress.serve")


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """What the agent half needs: config, local networks, enrichers, what to read."""

    config: Config
    local: LocalNetworks
    chain: EnricherChain
    read: Path


def _packets(plan: AgentPlan) -> Callable[[], Iterator[Packet]]:
    source = FileSource.for_networks(plan.read, list(plan.local.networks), plan.config.capture.bpf, chunk_packets=plan.config.capture.chunk_packets)

    def packets() -> Iterator[Packet]:
        yield from source.packets()
        for warning in source.report.warnings:
            log.warning("capture_warning", file=str(plan.read), message=warning)

    return packets


def _pump(plan: AgentPlan, metrics: AgentMetrics, queue: asyncio.Queue[list | None]) -> CapturePump:  # type: ignore[type-arg]
    meter = FlowMeter.from_config(plan.config, plan.local, plan.chain)
    return CapturePump(_packets(plan), meter, metrics, "pcap", asyncio.get_running_loop(), queue)


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
    return notifier


async def _finish_pump(pump: CapturePump) -> None:
    await asyncio.to_thread(pump.join)
    if pump.error is not None:
        raise pump.error


async def agent_main(plan: AgentPlan) -> int:
    from egress.bus.kafka import KafkaPublisher, ensure_topics

    cfg = plan.config
    metrics = AgentMetrics()
    _metrics_endpoint(cfg)
    await ensure_topics(cfg.kafka, [cfg.kafka.flows_topic])
    publisher = KafkaPublisher(cfg.kafka, on_error=metrics.publish_errors.inc)
    await publisher.start()
    queue: asyncio.Queue[list | None] = asyncio.Queue(maxsize=64)  # type: ignore[type-arg]
    pump = _pump(plan, metrics, queue)
    on_signals(pump.stop, plan.chain.request_reopen)
    pump.start()
    notifier = _ready()
    try:
        published = await publish_loop(queue, publisher, cfg.kafka.flows_topic, metrics)
        await _finish_pump(pump)
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
    subscriber = KafkaSubscriber(kafka, kafka.flows_topic)
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
    agent_metrics, rules_metrics = AgentMetrics(), RulesMetrics()
    _metrics_endpoint(cfg)
    bus = MemoryBus(cfg.kafka.flows_topic)
    sink = NdjsonSink(alerts_out)
    stage = RulesStage(evaluator, bus, rules_metrics, [sink], policy_path=policy_path)
    queue: asyncio.Queue[list | None] = asyncio.Queue(maxsize=64)  # type: ignore[type-arg]
    pump = _pump(plan, agent_metrics, queue)

    stopped = asyncio.Event()

    def stop() -> None:
        pump.stop()
        stopped.set()

    def reload() -> None:
        plan.chain.request_reopen()
        stage.reload()

    on_signals(stop, reload)
    rules = spawn(stage.run(), "egress-rules")
    pump.start()
    notifier = _ready()
    try:
        await publish_loop(queue, bus, cfg.kafka.flows_topic, agent_metrics)
        await bus.close()
        await rules
        await _finish_pump(pump)
        log.info("run_done", evaluated=stage.evaluated, alerts=stage.alerts)
        sink.flush()
        if linger and not stopped.is_set():
            log.info("lingering", reason="serving metrics until SIGTERM")
            await stopped.wait()
    finally:
        notifier.notify("STOPPING=1")
        sink.close()
    return 0
