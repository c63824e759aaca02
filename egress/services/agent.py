"""The agent: capture → flows → enrich → publish (Kafka for `egress agent`, memory for `run`).

Capture, the flow table and enrichment run on one named thread per source, because
reading tshark's output is blocking and CPU-bound; they hand encoded messages to the
event loop in batches through a bounded queue, so a slow transport slows the reading
of a file instead of growing memory. The event loop only publishes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import structlog

from egress.bus import SCHEMA_HEADER, Message, Publisher
from egress.codec import SCHEMA_VERSION, encode, flow_to_ecs
from egress.flows.meter import FlowMeter
from egress.model import FlowRecord, Packet
from egress.telemetry import AgentMetrics

__all__ = ["CapturePump", "publish_loop", "flow_message"]

log = structlog.get_logger("egress.agent")
_HEADERS = ((SCHEMA_HEADER, str(SCHEMA_VERSION).encode()),)
_BATCH = 256
_HANDOFF_SECONDS = 0.5


def flow_message(rec: FlowRecord) -> Message:
    """A flow record on the wire: keyed by the device MAC, so a device stays on one partition."""
    return Message(rec.device_mac.encode() if rec.device_mac else None, encode(flow_to_ecs(rec)), _HEADERS)


class CapturePump:
    """Runs `packets()` through a FlowMeter on its own thread; batches of messages come
    out of `queue`, then a final None once the source ended (or `stop()` was called).
    A None from the source is a tick: time passes without packets."""

    def __init__(
        self,
        packets: Callable[[], Iterator[Packet | None]],
        meter: FlowMeter,
        metrics: AgentMetrics,
        interface: str,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[list[Message] | None],
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self._packets = packets
        self._meter = meter
        self._metrics = metrics
        self._interface = interface
        self._loop = loop
        self._queue = queue
        self._on_stop = on_stop
        self._stop = threading.Event()
        self.name = interface
        self._thread = threading.Thread(target=self._run, name=f"egress-capture-{interface}", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._on_stop is not None:
            self._on_stop()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _hand(self, batch: list[Message] | None) -> None:
        asyncio.run_coroutine_threadsafe(self._queue.put(batch), self._loop).result()

    def _run(self) -> None:
        captured = self._metrics.packets_captured.labels(self._interface)
        self._metrics.packets_dropped.labels(self._interface)  # exported as 0 from the start
        self._metrics.frames_skipped.labels(self._interface)
        batch: list[Message] = []
        counted = 0
        last = time.monotonic()
        try:
            for pkt in self._packets():
                if pkt is None:  # a quiet second on a live link
                    records = self._meter.tick(time.time())
                else:
                    counted += 1
                    records = self._meter.add(pkt)
                for rec in records:
                    batch.append(flow_message(rec))
                if counted >= _BATCH or pkt is None:
                    captured.inc(counted)
                    counted = 0
                if batch:
                    now = time.monotonic()
                    if len(batch) >= _BATCH or now - last >= _HANDOFF_SECONDS:
                        self._hand(batch)
                        batch, last = [], now
                if self._stop.is_set():
                    break
        except BaseException as exc:  # handed to the event loop, which decides the exit code
            self.error = exc
        finally:
            captured.inc(counted)
            try:
                batch += [flow_message(rec) for rec in self._meter.flush()]
                if batch:
                    self._hand(batch)
            finally:
                self._hand(None)


async def publish_loop(queue: asyncio.Queue[list[Message] | None], publisher: Publisher, topic: str, metrics: AgentMetrics, sources: int = 1) -> int:
    """Publish every batch until each source has ended; returns the records published."""
    ended = published = 0
    while ended < sources:
        batch = await queue.get()
        if batch is None:
            ended += 1
            continue
        for message in batch:
            await publisher.send(topic, message)
        metrics.flows_exported.inc(len(batch))
        published += len(batch)
    await publisher.flush()
    return published

