"""Kafka transport (aiokafka): an idempotent, acks=all, lz4-compressed, batching producer
and a consumer-group subscriber that commits explicit offsets.

Offsets are committed only when the caller says a batch is done, so a consumer
killed mid-batch gives its records to the next owner (at-least-once). Rebalances
happen in the background; a commit refused because the partitions moved on is
logged, not fatal: the new owner re-reads from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner

from egress.bus import Message, Record
from egress.bus.lz4 import use_fast_lz4
from egress.config import KafkaConfig
from egress.errors import DependencyMissing, UsageError

__all__ = ["KafkaPublisher", "KafkaSubscriber", "Topics", "ensure_topics", "partitions_of", "client_options", "replication"]

log = structlog.get_logger("egress.kafka")
use_fast_lz4()


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection and security settings shared by producer, consumer and admin client."""
    opts: dict[str, Any] = {"bootstrap_servers": list(cfg.bootstrap_servers), "security_protocol": cfg.security_protocol}
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        try:
            opts["ssl_context"] = create_ssl_context(
                cafile=str(cfg.ssl_cafile) if cfg.ssl_cafile else None,
                certfile=str(cfg.ssl_certfile) if cfg.ssl_certfile else None,
                keyfile=str(cfg.ssl_keyfile) if cfg.ssl_keyfile else None,
            )
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(str(f) for f in (cfg.ssl_cafile, cfg.ssl_certfile, cfg.ssl_keyfile) if f)
            raise UsageError(f"kafka TLS files ({files}) unusable: {getattr(exc, 'reason', None) or exc}") from None
    if cfg.security_protocol.startswith("SASL"):
        if cfg.sasl_mechanism is None or cfg.sasl_username is None:
            raise UsageError(f"kafka.security_protocol {cfg.security_protocol} needs kafka.sasl_mechanism and kafka.sasl_username")
        password = cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
        if password is None and cfg.sasl_password_file is not None:
            try:
                password = cfg.sasl_password_file.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
            except OSError as exc:
                raise UsageError(f"{cfg.sasl_password_file}: cannot read the SASL password: {exc.strerror}") from None
        if password is None:
            raise UsageError("SASL needs a password: kafka.sasl_password_file or EGRESS_KAFKA__SASL_PASSWORD")
        opts.update(sasl_mechanism=cfg.sasl_mechanism, sasl_plain_username=cfg.sasl_username, sasl_plain_password=password)
    return opts


class _ConnectErrors(logging.Handler):
    """The last error aiokafka logs while connecting: it raises only "Unable to bootstrap",
    and the reason (refused, TLS, SASL) is in its log."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.cause: str | None = None
        self._logger = logging.getLogger("aiokafka")

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        self.cause = f"{type(exc).__name__}: {exc}" if exc is not None else record.getMessage()

    def __enter__(self) -> _ConnectErrors:
        self._logger.addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        self._logger.removeHandler(self)


def _start_error(cfg: KafkaConfig, exc: BaseException, cause: str | None) -> DependencyMissing:
    """One line that says why Kafka could not be used at start (exit 3)."""
    where = ",".join(cfg.bootstrap_servers)
    reason = " ".join((cause or f"{type(exc).__name__}: {exc}").split())[:300]
    if "SaslAuthenticationFailed" in reason or "Authentication failed" in reason:
        return DependencyMissing(f"Kafka authentication failed at {where} (kafka.sasl_username, password): {reason}")
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return DependencyMissing(f"Kafka TLS: the broker's certificate is not trusted at {where} (kafka.ssl_cafile): {reason}")
    return DependencyMissing(f"Kafka unreachable at {where}: {reason}")


async def _start(client: AIOKafkaProducer | AIOKafkaConsumer, cfg: KafkaConfig) -> None:
    """Start a client, or stop it again and raise why it could not start (exit 3)."""
    with _ConnectErrors() as seen:
        try:
            await client.start()
        except KafkaConnectionError as exc:
            await client.stop()
            raise _start_error(cfg, exc, seen.cause) from None


def replication(cfg: KafkaConfig, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a new topic on a cluster of `brokers`
    live brokers: the configured ones, else 3 replicas of which 2 must acknowledge each
    write (acks=all), so that with one broker down writes go on and no acknowledged record
    is on a single disk; fewer brokers get what they can hold (one: 1 and 1)."""
    replicas = cfg.replication_factor or max(1, min(3, brokers))
    return replicas, cfg.min_insync_replicas or max(1, min(2, replicas - 1))


async def ensure_topics(cfg: KafkaConfig, topics: list[str], compacted: Sequence[str] = ()) -> None:
    """Create missing topics with the configured partitions and `replication`; `compacted` ones (tables that
    every reader reads whole: the latest record of each key is kept) with cleanup.policy=compact
    and one partition, since nobody reads them in parallel and a single partition needs no key
    hashing to place a record. Existing topics are left as they are."""
    admin = AIOKafkaAdminClient(**client_options(cfg), request_timeout_ms=10_000)
    with _ConnectErrors() as seen:
        try:
            await admin.start()
        except KafkaError as exc:
            raise _start_error(cfg, exc, seen.cause) from None
    try:
        replicas, insync = replication(cfg, len((await admin.describe_cluster())["brokers"]))
        new = [
            NewTopic(t, num_partitions=1 if t in compacted else cfg.partitions, replication_factor=replicas,
                     topic_configs={"min.insync.replicas": str(insync)} | ({"cleanup.policy": "compact"} if t in compacted else {}))
            for t in topics
        ]  # fmt: skip
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass
        except KafkaError as exc:
            for topic in new:  # one at a time, so an existing topic does not hide a new one
                try:
                    await admin.create_topics([topic])
                except TopicAlreadyExistsError:
                    pass
                except KafkaError:
                    log.warning("topic_create_failed", topic=topic.name, reason=str(exc))
    finally:
        await admin.close()


async def partitions_of(cfg: KafkaConfig, topic: str, wait: float = 0.0) -> list[int]:
    """The partition numbers of a topic (none if it does not exist), asking again for up to
    `wait` seconds while it does not: on a cluster, a topic another member has just created
    reaches each broker's metadata a moment later."""
    admin = AIOKafkaAdminClient(**client_options(cfg), request_timeout_ms=10_000)
    await admin.start()
    deadline = asyncio.get_running_loop().time() + wait
    try:
        while True:
            described = await admin.describe_topics([topic])
            found = sorted(p["partition"] for d in described if d.get("error_code") == 0 for p in d.get("partitions", ()))
            if found or asyncio.get_running_loop().time() >= deadline:
                return found
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


class Topics:
    """The topics a command needs, created at start where missing (`ensure_topics`)."""

    def __init__(self, cfg: KafkaConfig, names: list[str], compacted: Sequence[str] = ()) -> None:
        self._cfg = cfg
        self._names = names
        self._compacted = compacted

    async def start(self) -> None:
        await ensure_topics(self._cfg, self._names, self._compacted)


_DEFAULT = DefaultPartitioner()


class _CachedPartitioner:
    """Kafka's default partitioner (murmur2, so Java clients place keys alike), computed
    once per key: device MACs repeat, and murmur2 in pure Python costs more than a send."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if len(all_partitions) == 1:  # a table topic: every key is new, and there is one place
            return all_partitions[0]
        if key is None:
            return int(_DEFAULT(key, all_partitions, available))
        slot = (key, len(all_partitions))
        hit = self._cache.get(slot)
        if hit is None:
            if len(self._cache) >= 100_000:
                self._cache.clear()
            hit = self._cache[slot] = int(_DEFAULT(key, all_partitions, available))
        return hit


def _append(batch: Any, message: Message) -> bool:
    """Into an aiokafka BatchBuilder; False when it is full (an empty one takes any message)."""
    return batch.append(key=message.key, value=message.value, timestamp=None, headers=list(message.headers)) is not None


class KafkaPublisher:
    """`send` queues a message; `flush` waits until all are acknowledged and raises the
    first delivery error, after `on_error(failed messages, first error)` (the telemetry
    event that counts and logs them)."""

    def __init__(self, cfg: KafkaConfig, on_error: Callable[[int, BaseException], None] | None = None) -> None:
        self._cfg = cfg
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[Any]] = []
        self._on_error = on_error
        self._partitioner = _CachedPartitioner()

    async def start(self) -> None:
        """aiokafka clients belong to the running event loop: made here, not before."""
        self._producer = AIOKafkaProducer(
            **client_options(self._cfg),
            enable_idempotence=True,
            acks="all",
            compression_type="lz4",  # fast both ways; gzip cost more CPU than the rest of a send
            partitioner=self._partitioner,
            linger_ms=20,
            max_batch_size=512 * 1024,
            request_timeout_ms=30_000,
        )
        await _start(self._producer, self._cfg)

    async def send(self, topic: str, message: Message) -> None:
        assert self._producer is not None, "send before start"
        fut = await self._producer.send(topic, message.value, key=message.key, headers=list(message.headers))
        self._pending.append(fut)
        if len(self._pending) >= 10_000:
            self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]

    async def send_many(self, topic: str, messages: Sequence[Message]) -> None:
        """Many at once (a baseline's changed keys): appended to aiokafka record batches, one
        partition's run at a time, instead of one `send` each (~8 µs of partitioning,
        futures and accumulator per message). Placed by the same partitioner as `send`."""
        producer = self._producer
        assert producer is not None, "send before start"
        if not messages:
            return
        partitions = sorted(await producer.partitions_for(topic))
        place = self._partitioner
        runs: dict[int, list[Message]] = {}
        for message in messages:
            runs.setdefault(place(message.key, partitions, partitions), []).append(message)
        for partition, run in runs.items():
            batch = producer.create_batch()
            for message in run:
                if not _append(batch, message):  # full: send it, and the message opens the next one
                    self._pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    _append(batch, message)
            self._pending.append(await producer.send_batch(batch, topic, partition=partition))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            if self._on_error is not None:
                self._on_error(len(errors), errors[0])
            raise errors[0]

    async def stop(self) -> None:
        if self._producer is None:
            return
        try:
            await self.flush()
        finally:
            await self._producer.stop()


class _Progress(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no types
    """What this member read and committed per partition, and the group's moves as log events:
    `partitions_assigned`, and `partitions_revoked` with the records read but not yet
    committed (the next owner reads them again: at-least-once)."""

    def __init__(self) -> None:
        self.read: dict[TopicPartition, tuple[int, int]] = {}  # first offset read since assigned, next to read
        self.committed: dict[TopicPartition, int] = {}

    def uncommitted(self, tp: TopicPartition) -> int:
        if tp not in self.read:
            return 0
        first, after = self.read[tp]
        return max(0, after - max(first, self.committed.get(tp, first)))

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:
            return
        log.info("partitions_revoked", partitions=_names(revoked), uncommitted_records=sum(map(self.uncommitted, revoked)))
        for tp in revoked:
            self.read.pop(tp, None)
            self.committed.pop(tp, None)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions_assigned", partitions=_names(assigned))


def _names(partitions: set[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in partitions)


class KafkaSubscriber:
    """Batches of the flows topic (and the devices topic) for one member of the consumer group."""

    def __init__(
        self, cfg: KafkaConfig, topics: Sequence[str], max_records: int = 2000, on_lag: Any = None,
        on_commit_refused: Callable[[str, int], None] | None = None, on_poll: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """`on_lag(topic, partition, records)` after each fetch, `records` None once the
        partition has moved to another member of the group; `on_commit_refused(reason,
        partitions)` when the group refuses a commit (the telemetry event counts and logs it);
        `on_poll()` after each fetch, records or none (the /healthz heartbeat)."""
        self._cfg = cfg
        self._topics = list(topics)
        self._on_lag = on_lag
        self._on_commit_refused = on_commit_refused
        self._on_poll = on_poll
        self._lag_reported: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._progress = _Progress()
        self._max = max_records
        self._stopping = False

    async def start(self) -> None:
        """aiokafka clients belong to the running event loop: made here, not before."""
        self._consumer = AIOKafkaConsumer(
            **client_options(self._cfg),
            group_id=self._cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._max,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
        )
        self._consumer.subscribe(self._topics, listener=self._progress)
        await _start(self._consumer, self._cfg)

    def request_stop(self) -> None:
        self._stopping = True

    async def batches(self) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        assert self._consumer is not None, "batches before start"
        while not self._stopping:
            data = await self._consumer.getmany(timeout_ms=500, max_records=self._max)
            if self._on_poll is not None:
                self._on_poll()
            if self._on_lag is not None:
                self._report_lag(data)
            read = self._progress.read
            for tp, records in data.items():
                if records:
                    read[tp] = (read.get(tp, (records[0].offset, 0))[0], records[-1].offset + 1)
            batch = [r for records in data.values() for r in records]
            if batch:
                yield batch

    def _report_lag(self, data: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        assert self._consumer is not None
        for tp, records in data.items():
            high = self._consumer.highwater(tp)
            if high is not None and records:
                self._on_lag(tp.topic, tp.partition, max(0, high - records[-1].offset - 1))
                self._lag_reported.add(tp)
        gone = self._lag_reported - self._consumer.assignment()
        for tp in gone:  # another member reads it now: its lag is no longer ours to report
            self._on_lag(tp.topic, tp.partition, None)
        self._lag_reported -= gone

    async def commit(self, batch: Sequence[Record]) -> None:
        """Commit the batch's offsets of the partitions this member still owns: a partition
        that moved during the batch is the new owner's to commit (it reads those records again)."""
        last: dict[tuple[str, int], int] = {}
        for r in batch:
            last[r.topic, r.partition] = r.offset  # in order within a partition
        assert self._consumer is not None
        owned = self._consumer.assignment()
        offsets = {tp: offset + 1 for (topic, partition), offset in last.items() if (tp := TopicPartition(topic, partition)) in owned}
        if len(offsets) < len(last):
            log.info("commit_skipped_moved_partitions", partitions=len(last) - len(offsets))
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            if self._on_commit_refused is not None:
                self._on_commit_refused(str(exc), len(offsets))
            return
        self._progress.committed.update(offsets)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
