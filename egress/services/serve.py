"""How the long-running commands run, once `egress.compose` has built their parts:

agent   = captures → publish loop (or spool → drainer) → Kafka flows topic
rules   = Kafka flows topic → RulesStage → sinks (metrics, Kafka alerts, NDJSON)
run     = captures → publish loop → MemoryBus → RulesStage → sinks (metrics, NDJSON)
analyze = the captures of `run`, one file after another, with the report as sink

Every part that owns a resource is started in order and stopped in reverse by
`runtime.Lifecycle`; the loops here only move records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from egress.bus import Publisher
from egress.bus.memory import MemoryBus
from egress.bus.spool import Spool
from egress.health import Check
from egress.runtime import Lifecycle, SystemdNotifier, on_signals, settle_heap, spawn, trim_memory
from egress.services.agent import Captures, SpoolDrainer, publish_loop, spool_loop
from egress.services.rules import RulesStage
from egress.telemetry import AgentMetrics

__all__ = ["AgentParts", "InProcessParts", "agent_main", "rules_main", "in_process_main"]

log = structlog.get_logger("egress.serve")


def _ready() -> SystemdNotifier:
    """Tell systemd we are up and keep its watchdog fed."""
    notifier = SystemdNotifier()
    notifier.notify("READY=1")
    spawn(notifier.watchdog(), "egress-watchdog")
    spawn(trim_memory(), "egress-trim-memory")
    return notifier


@dataclass(slots=True)
class AgentParts:
    """`components`: started in order before the captures. With a spool, flows are written
    to it and a drainer moves them to Kafka; without, `publisher` sends them directly.
    `accepting`: the /healthz check of where the flows go, passing once it is open."""

    components: Sequence[object]
    captures: Captures
    metrics: AgentMetrics
    topic: str
    reopen: Callable[[], None]
    accepting: Check
    publisher: Publisher | None = None
    spool: Spool | None = None
    drainer: SpoolDrainer | None = None


async def agent_main(parts: AgentParts) -> int:
    async with Lifecycle(parts.components):
        settle_heap()
        parts.accepting.beat()  # the spool is open, or Kafka connected
        if parts.spool is None or parts.drainer is None:
            assert parts.publisher is not None
            return await _agent_direct(parts, parts.publisher)
        return await _agent_spooled(parts, parts.spool, parts.drainer)


async def _agent_spooled(parts: AgentParts, spool: Spool, drainer: SpoolDrainer) -> int:
    if len(spool):
        log.info("spool_resuming", records=len(spool), path=str(spool.path))
    captures = parts.captures
    stopping = asyncio.Event()

    def stop() -> None:
        captures.stop()
        stopping.set()

    async with Lifecycle([captures]):
        on_signals(stop, parts.reopen)
        input_done = asyncio.Event()
        draining = spawn(drainer.run(input_done), "egress-spool-drainer")
        captures.run()
        notifier = _ready()
        try:
            spooled = await spool_loop(captures.queue, spool, drainer, len(captures))
            await captures.finish()
            input_done.set()
            drainer.wake.set()
            stop_wait = spawn(stopping.wait(), "egress-stop-wait")
            await asyncio.wait([draining, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            if not draining.done():  # SIGTERM while Kafka is away: a short grace, then the spool keeps the rest
                await asyncio.wait([draining], timeout=10)
            if not draining.done():
                draining.cancel()
                log.warning("agent_stopping_with_spool", records=len(spool), path=str(spool.path))
            stop_wait.cancel()
        finally:
            notifier.notify("STOPPING=1")
            await drainer.stop()
    log.info("agent_done", flows_spooled=spooled, flows_delivered=drainer.delivered, spooled_left=len(spool))
    return 0


async def _agent_direct(parts: AgentParts, publisher: Publisher) -> int:
    captures = parts.captures
    async with Lifecycle([captures]):
        on_signals(captures.stop, parts.reopen)
        captures.run()
        notifier = _ready()
        try:
            published = await publish_loop(captures.queue, publisher, parts.topic, parts.metrics, len(captures))
            await captures.finish()
        finally:
            notifier.notify("STOPPING=1")
    log.info("agent_done", flows_published=published)
    return 0


async def rules_main(components: Sequence[object], stage: RulesStage, stop: Callable[[], None], topic: str, group: str) -> int:
    async with Lifecycle(components):
        settle_heap()
        on_signals(stop, stage.reload)
        log.info("rules_consuming", topic=topic, group=group)
        notifier = _ready()
        await stage.run()
        notifier.notify("STOPPING=1")
    log.info("rules_done", evaluated=stage.evaluated, alerts=stage.alerts)
    return 0


@dataclass(slots=True)
class InProcessParts:
    """`run` and `analyze`: the agent's captures and the rules stage joined by the in-process
    bus. `captures` run one after another (the files of `analyze`) or all at once (the
    interfaces of `run`)."""

    components: Sequence[object]
    captures: Sequence[Captures]
    bus: MemoryBus
    stage: RulesStage
    metrics: AgentMetrics
    topic: str
    reopen: Callable[[], None]
    service: bool = True  # signals, systemd, the `run_done` line; not for `analyze`
    linger: bool = False


async def in_process_main(parts: InProcessParts) -> int:
    """`linger`: once the file is done, keep serving metrics until SIGTERM (for scrapers)."""
    stopped = asyncio.Event()

    def stop() -> None:
        for captures in parts.captures:
            captures.stop()
        stopped.set()

    def reload() -> None:
        parts.reopen()
        parts.stage.reload()

    async with Lifecycle(parts.components):
        settle_heap(collect=parts.service)
        notifier = SystemdNotifier({})
        if parts.service:
            on_signals(stop, reload)
        rules = spawn(parts.stage.run(), "egress-rules")
        try:
            for captures in parts.captures:
                async with Lifecycle([captures]):
                    captures.run()
                    if parts.service:
                        notifier = _ready()
                    await publish_loop(captures.queue, parts.bus, parts.topic, parts.metrics, len(captures))
                    await captures.finish()
            await parts.bus.close()
            await rules
            if parts.service:
                log.info("run_done", evaluated=parts.stage.evaluated, alerts=parts.stage.alerts)
            if parts.linger and not stopped.is_set():
                log.info("lingering", reason="serving metrics until SIGTERM")
                await stopped.wait()
        finally:
            if not rules.done():
                rules.cancel()
            notifier.notify("STOPPING=1")
    return 0
