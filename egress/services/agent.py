"""The agent: capture → flows → enrich → publish (Kafka for `egress agent`, memory for `run`);
beside the flows, the device inventory's records (`Capture.devices`, on their own topic).

Capture, the flow table and enrichment run on one named thread per source, because
reading tshark's output is blocking and CPU-bound; they hand encoded messages to the
event loop in batches through a bounded queue, so a slow transport slows the reading
of a file instead of growing memory. The event loop only publishes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import structlog


from egress.bus import Message, Publisher
from egress.bus.spool import Spool
from egress.codec import device_message, flow_message
from egress.errors import EgressError
from egress.flows.meter import FlowMeter
from egress.inventory import Inventory
from egress.model import DeviceRecord, Packet
from egress.telemetry import AgentMetrics

__all__ = ["CapturePump", "Capture", "Captures", "Devices", "publish_loop", "SpoolDrainer", "spool_loop"]

log = structlog.get_logger("egress.agent")
_BATCH = 256
_HANDOFF_SECONDS = 0.5


class CapturePump:
    """Runs `batches()` of packets through a FlowMeter on its own thread; batches of messages
    come out of `queue`, then a final None once the source ended (or `stop()` was called).
    A None from the source is a tick: time passes without packets. `skipped()`: the
    frames the source has skipped so far (not IP, unreadable), counted as they grow.
    Once per batch of packets or tick, not per packet: the capture's /healthz check
    beats, egress_last_packet_timestamp_seconds moves, and the table's evictions count."""

    def __init__(
        self,
        batches: Callable[[], Iterator[list[Packet] | None]],
        meter: FlowMeter,
        metrics: AgentMetrics,
        interface: str,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[list[Message] | None],
        on_stop: Callable[[], None] | None = None,
        skipped: Callable[[], int] | None = None,
        devices: Devices | None = None,
    ) -> None:
        self._batches = batches
        self._devices = devices
        self._skipped = skipped
        self._skipped_counted = 0
        self._evicted_counted = 0
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
        check = self._metrics.capture_check(self._interface)
        check.beat()
        batch: list[Message] = []
        counted = 0
        last = last_count = time.monotonic()
        try:
            for packets in self._batches():
                if packets is None:  # a quiet second on a live link
                    records = self._meter.tick(time.time())
                else:
                    counted += len(packets)
                    records = self._meter.add_many(packets)
                for rec in records:
                    batch.append(flow_message(rec))
                if self._devices is not None:
                    batch += self._devices.messages(self._devices.inventory.due())
                if counted >= _BATCH or packets is None or time.monotonic() - last_count >= 1.0:
                    if counted:
                        captured.inc(counted)  # at least once a second on a slow link, not only every _BATCH packets
                        self._metrics.packets_read(self._interface)
                    counted, last_count = 0, time.monotonic()
                    check.beat()
                    self._count_progress()
                if batch:
                    now = time.monotonic()
                    if len(batch) >= _BATCH or now - last >= _HANDOFF_SECONDS:
                        self._hand(batch)
                        batch, last = [], now
                if self._stop.is_set():
                    break
        except BaseException as exc:  # handed to the event loop, which decides the exit code
            self.error = exc
            check.trouble(" ".join(str(exc).split())[:200] or type(exc).__name__)
        finally:
            if counted:
                captured.inc(counted)
                self._metrics.packets_read(self._interface)
            self._count_progress()
            try:
                batch += [flow_message(rec) for rec in self._meter.flush()]
                if self._devices is not None:
                    batch += self._devices.messages(self._devices.inventory.flush())
                if batch:
                    self._hand(batch)
            finally:
                self._hand(None)
            if self.error is None:  # done once the flows it held are handed on, not before
                check.finish()

    def _count_progress(self) -> None:
        """The frames skipped and the flows evicted since the last call, as events."""
        if self._skipped is not None:
            total = self._skipped()
            self._metrics.capture_skipped(self._interface, total - self._skipped_counted)
            self._skipped_counted = total
        evicted = self._meter.flows_evicted
        self._metrics.flow_table_full(self._interface, evicted - self._evicted_counted)
        self._evicted_counted = evicted


@dataclass(frozen=True, slots=True)
class Devices:
    """The inventory the captures of a command share, and the topic its records go to."""

    inventory: Inventory
    topic: str

    def messages(self, records: Sequence[DeviceRecord]) -> list[Message]:
        return [device_message(dev, self.topic) for dev in records]


@dataclass(frozen=True, slots=True)
class Capture:
    """One source of packets and the flow meter its packets go through. `open` and `close`
    (a live interface's dumpcap) where the source holds a process; `skipped`, the frames
    the source skipped so far (egress_frames_skipped_total)."""

    name: str
    batches: Callable[[], Iterator[list[Packet] | None]]
    meter: FlowMeter
    open: Callable[[], None] | None = None
    close: Callable[[], None] | None = None
    skipped: Callable[[], int] | None = None
    devices: Devices | None = None


class Captures:
    """The captures of one pipeline, run at once: one pump thread each, their batches in one
    bounded queue. `start()` opens every source (a bad interface fails here, before anything
    runs), `run()` starts the pumps, `finish()` waits for them and raises the first error."""

    def __init__(self, captures: Sequence[Capture], metrics: AgentMetrics) -> None:
        self._captures = tuple(captures)
        self._metrics = metrics
        for capture in captures:
            metrics.capture_check(capture.name)  # "starting" on /healthz from now, not from when its pump runs
        self._opened: list[Capture] = []
        self._pumps: list[CapturePump] = []
        self.queue: asyncio.Queue[list[Message] | None] = asyncio.Queue(maxsize=64)

    def __len__(self) -> int:
        return len(self._captures)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for capture in self._captures:
            if capture.open is not None:
                capture.open()
            self._opened.append(capture)
            self._pumps.append(
                CapturePump(capture.batches, capture.meter, self._metrics, capture.name, loop, self.queue, on_stop=capture.close, skipped=capture.skipped,
                            devices=capture.devices)  # fmt: skip
            )
            self._metrics.count_flows_of(capture.meter.open_flows)

    def run(self) -> None:
        for pump in self._pumps:
            pump.start()
            log.info("capture_started", source=pump.name)

    def stop(self) -> None:
        if self._pumps:
            for pump in self._pumps:
                pump.stop()
            return
        for capture in self._opened:  # opened, never run
            if capture.close is not None:
                capture.close()

    async def finish(self) -> None:
        for pump in self._pumps:
            await asyncio.to_thread(pump.join)
        errors = [p.error for p in self._pumps if p.error is not None]
        if errors:
            raise errors[0]


def _kafka_error() -> type[Exception]:
    """aiokafka's base error, imported when a spool drains: `analyze` and `run` never load aiokafka (~0.3 s)."""
    from aiokafka.errors import KafkaError

    return KafkaError  # type: ignore[no-any-return]


async def _batches(queue: asyncio.Queue[list[Message] | None], sources: int) -> AsyncIterator[list[Message]]:
    """The pumps' batches, until each of `sources` has sent its final None."""
    ended = 0
    while ended < sources:
        batch = await queue.get()
        if batch is None:
            ended += 1
        else:
            yield batch


async def publish_loop(queue: asyncio.Queue[list[Message] | None], publisher: Publisher, topic: str, metrics: AgentMetrics, sources: int = 1) -> int:
    """Publish every batch until each source has ended; returns the flow records published.
    A message with a topic of its own (a device record) goes there."""
    published = 0
    async for batch in _batches(queue, sources):
        flows = 0
        for message in batch:
            if message.topic:
                await publisher.send(message.topic, message)
            else:
                await publisher.send(topic, message)
                flows += 1
        metrics.flows_exported.inc(flows)
        published += flows
    await publisher.flush()
    return published



class SpoolDrainer:
    """Moves spooled records to Kafka in order; the spool cursor advances only after Kafka
    acknowledged a batch. Kafka down at start or later: retry with a growing pause.
    Device records are not spooled: `devices` keeps the latest of each device (its topic is
    compacted, so the latest is all that counts), sent once the flows before it are."""

    def __init__(self, spool: Spool, connect: Callable[[], Awaitable[Publisher]], topic: str, metrics: AgentMetrics, batch: int = 2000) -> None:
        self._spool = spool
        self._connect_to = connect
        self._topic = topic
        self._metrics = metrics
        metrics.spool_records.set_function(spool.__len__)  # read at scrape: a drain waiting out its retry pause says nothing
        self._batch = batch
        self._publisher: Publisher | None = None
        self.wake = asyncio.Event()
        self.delivered = 0
        self.devices: dict[tuple[str, bytes | None], Message] = {}

    async def _connect(self) -> Publisher:
        publisher = await self._connect_to()
        log.info("kafka_connected", spooled=len(self._spool))
        return publisher

    async def run(self, input_done: asyncio.Event) -> None:
        """Until the input has ended and the spool is empty (or cancelled)."""
        pause = 1.0
        while True:
            if not len(self._spool) and not self.devices:
                if input_done.is_set():
                    return
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.5)
                except TimeoutError:
                    pass
                continue
            try:
                if self._publisher is None:
                    self._publisher = await self._connect()
                batch, cursor = self._spool.peek(self._batch) if len(self._spool) else ([], None)
                for message in batch:
                    await self._publisher.send(self._topic, message)
                devices = list(self.devices.items())
                for (topic, _), message in devices:
                    await self._publisher.send(topic, message)
                await self._publisher.flush()
            except (EgressError, _kafka_error(), OSError, asyncio.TimeoutError) as exc:
                self._metrics.kafka_unavailable_spooling(str(exc), len(self._spool), pause)
                await self._drop_publisher()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
                continue
            pause = 1.0
            for key, message in devices:
                if self.devices.get(key) is message:  # not replaced by a newer one meanwhile
                    del self.devices[key]
            if cursor is None:
                continue
            self._spool.ack(len(batch), cursor)
            self.delivered += len(batch)
            self._metrics.flows_exported.inc(len(batch))

    async def _drop_publisher(self) -> None:
        """After a failed batch the next try is a new producer session: the old one's own
        retries may still have delivered part of the batch, and re-sent in the same session
        those would be duplicates the idempotent producer promised not to write. Across
        sessions a re-sent record is the at-least-once copy SPEC allows."""
        publisher, self._publisher = self._publisher, None
        if publisher is None:
            return
        try:
            await publisher.stop()
        except (EgressError, _kafka_error(), OSError, asyncio.TimeoutError) as exc:
            log.warning("kafka_stop_failed", reason=str(exc)[:200])

    async def stop(self) -> None:
        await self._drop_publisher()


async def spool_loop(queue: asyncio.Queue[list[Message] | None], spool: Spool, drainer: SpoolDrainer, sources: int = 1) -> int:
    """Append every batch's flows to the spool (fsynced), its device records to the drainer's
    latest, and wake the drainer; returns the flow records spooled."""
    spooled = 0
    async for batch in _batches(queue, sources):
        flows = [m for m in batch if not m.topic]
        for message in batch:
            if message.topic:
                drainer.devices[message.topic, message.key] = message
        if flows:
            await asyncio.to_thread(spool.append, flows)
            spooled += len(flows)
        drainer.wake.set()
    return spooled
