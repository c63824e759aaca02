"""The baseline of `egress rules`: a compacted Kafka topic (`kafka.baseline_topic`) that
every member of the consumer group reads whole at start and then follows, so whichever
member owns a device's partition after a rebalance or a restart knows everything learned.

One record per key (`key␟scope␟identity␟port`), per scope clock (`scope␟name`) and per
device's volume (`volume␟device`), its value the JSON of state.py; a forgotten key is an
empty record (what compaction then keeps of it is a few bytes). As a sink, `flush()` writes what the learner changed since the last batch and
waits for Kafka to acknowledge it: the rules stage commits a batch of flows only after
that, so a SIGKILL loses nothing learned (the next owner reads the flows again). A known
key's counts (flows, bytes, first and last seen) move with nearly every flow: they are
written at most once a minute (of wall time: the topic is the live service's), and at
stop, for the keys whose flows moved since their last record, so `egress baseline show`
on the topic lags a running consumer by a minute at most. Records
from other members are merged in as they arrive: the earlier scope start, the larger
counts, `learned` over `alerted` (an analyst's approve wins)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from egress.baseline.state import BaselineState, Key, Scope, entry_doc, entry_of, volume_doc, volume_of
from egress.bus import Message, Publisher
from egress.bus.kafka import client_options, partitions_of
from egress.codec import HEADERS
from egress.config import KafkaConfig
from egress.errors import DependencyMissing
from egress.model import Verdict
from egress.runtime import spawn

__all__ = ["BaselineTopic", "record_key", "record_value"]

log = structlog.get_logger("egress.baseline")
_SEP = "\x1f"
_COUNTS_EVERY = 60.0  # seconds between two writes of the keys whose counts moved


def record_key(kind: str, name: str) -> bytes:
    return f"{kind}{_SEP}{name}".encode()


def record_value(state: BaselineState, kind: str, name: str) -> bytes | None:
    """The JSON of one changed item, or None where it is gone; a key's counts are noted as written."""
    doc: dict[str, Any] | None
    if kind == "key":
        key: Key = tuple(name.split(_SEP))  # type: ignore[assignment]
        entry = state.entries.get(key)
        doc = None
        if entry is not None:
            doc, entry.noted = entry_doc(key, entry), entry.flows
    elif kind == "scope":
        scope = state.scopes.get(name)
        doc = None if scope is None else {"group": scope.group, "start": scope.start, "until": scope.until}
    else:
        volume = state.volumes.get(name)
        doc = None if volume is None else volume_doc(volume)
    return None if doc is None else orjson.dumps(doc)


def merge(state: BaselineState, key: bytes, value: bytes | None) -> None:  # noqa: C901 - one branch per record kind
    """One record of the topic into the state (ours or another member's); ValueError if malformed."""
    kind, _, name = key.decode().partition(_SEP)
    if kind == "key":
        parts = tuple(name.split(_SEP))
        if len(parts) != 3:
            raise ValueError(f"not a baseline key: {name!r}")
        if not value:
            state.remove(parts)
            return
        k, remote = entry_of(orjson.loads(value))
        local = state.entries.get(k)
        if local is None:
            state.add(k, remote)
            return
        if remote.state == "learned" and local.state != "learned":
            state.restate(k, "learned")
        local.first_seen = min(local.first_seen, remote.first_seen)
        local.last_seen = max(local.last_seen, remote.last_seen)
        local.flows, local.bytes = max(local.flows, remote.flows), max(local.bytes, remote.bytes)
        local.noted = max(local.noted, remote.flows)  # the topic holds these counts already
    elif kind == "scope":
        if not value:
            state.scopes.pop(name, None)
            return
        doc = orjson.loads(value)
        until = None if doc.get("until") is None else float(doc["until"])
        have = state.scopes.get(name)
        if have is None:
            state.scopes[name] = Scope(str(doc["group"]), float(doc["start"]), until)
        else:
            have.start = min(have.start, float(doc["start"]))
            have.until = until if until is not None else have.until
    elif kind == "volume":
        if not value:
            state.volumes.pop(name, None)
            return
        remote_volume = volume_of(orjson.loads(value))
        have_volume = state.volumes.get(name)
        if have_volume is None:
            state.volumes[name] = remote_volume
        else:
            have_volume.learned_max = max(have_volume.learned_max, remote_volume.learned_max)
    else:
        raise ValueError(f"not a baseline record kind: {kind!r}")


class BaselineTopic:
    """Start: read the topic whole into `state`; then follow it. A sink: `flush()` writes the changes."""

    def __init__(self, cfg: KafkaConfig, state: BaselineState, publisher: Publisher, on_change: Callable[[], None] | None = None) -> None:
        """`on_change`: called after records of other members were merged in (the gauges)."""
        self._on_change = on_change
        self._cfg = cfg
        self._topic = cfg.baseline_topic
        self.state = state
        self._publisher = publisher
        self._consumer: AIOKafkaConsumer | None = None
        self._follow: asyncio.Task[None] | None = None
        self.bad_records = 0
        # what this process writes carries its own writer id, so following the topic skips
        # its own records (the state has them already) instead of decoding and merging them
        self._headers = (*HEADERS, ("writer", uuid.uuid4().hex.encode()))
        self._counts_due = time.monotonic() + _COUNTS_EVERY

    async def start(self) -> None:
        partitions = await partitions_of(self._cfg, self._topic, wait=15)
        if not partitions:
            raise DependencyMissing(f"Kafka topic {self._topic} (kafka.baseline_topic) does not exist")
        consumer = self._consumer = AIOKafkaConsumer(**client_options(self._cfg), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        tps = [TopicPartition(self._topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps) if tps else {}
        records = 0
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for record in batch:
                    self._apply(record.key, record.value)
                    records += 1
        self.state.changed.clear()  # what was read is on the topic already
        log.info("baseline_loaded", topic=self._topic, records=records, keys=len(self.state.entries), scopes=len(self.state.scopes))
        if self._on_change is not None:
            self._on_change()
        self._follow = spawn(self._following(), "egress-baseline-follow")

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        try:
            merge(self.state, key or b"", value)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            self.bad_records += 1
            log.warning("baseline_record_skipped", topic=self._topic, reason=str(exc)[:200])

    async def _following(self) -> None:
        assert self._consumer is not None
        while True:
            fetched = await self._consumer.getmany(timeout_ms=1000)
            mine = self._headers
            for batch in fetched.values():
                for record in batch:
                    if record.headers != mine:
                        self._apply(record.key, record.value)
            if fetched and self._on_change is not None:  # our own records too: the gauges' last word after the last batch
                self._on_change()

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        return None  # the learner changed the state already; flush() writes it

    async def flush(self) -> None:
        now = time.monotonic()
        if now >= self._counts_due:
            self._counts_due = now + _COUNTS_EVERY
            self._note_moved_counts()
        if await self._send_changed():
            await self._publisher.flush()

    async def _send_changed(self) -> bool:
        """Send what changed since the last call; False (and nothing sent) where nothing did."""
        changed, self.state.changed = self.state.changed, set()
        if not changed:
            return False
        state, headers = self.state, self._headers
        await self._publisher.send_many(self._topic, [Message(record_key(kind, name), record_value(state, kind, name) or b"", headers) for kind, name in sorted(changed)])
        return True

    def _note_moved_counts(self) -> None:
        """Mark for writing every key whose flows moved since its last record: a pass over
        the keys once a minute (4 ms for 100,000 keys, plus 1 µs per key that moved), where
        a mark per flow would cost every flow."""
        changed = self.state.changed
        for key, entry in self.state.entries.items():
            if entry.flows != entry.noted:
                changed.add(("key", _SEP.join(key)))

    async def stop(self) -> None:
        """The counts that moved since the last minute are sent first (the publisher, stopped
        after this, delivers them); the consumer stops either way."""
        try:
            if self._follow is not None:
                self._note_moved_counts()
                await self._send_changed()
        finally:
            if self._follow is not None:
                self._follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._follow
            if self._consumer is not None:
                await self._consumer.stop()
