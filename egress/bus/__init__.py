"""Transports between the agent and rules stages: Kafka, or an in-process bus.

Both have the same shape: a Publisher sends keyed messages to a topic and `flush()`
returns once every message sent so far is delivered; a Subscriber yields batches of
records and `commit(batch)` records that a batch is done (a no-op in memory). A
consumed record is anything with a Message's attributes: the Kafka subscriber hands
on aiokafka's own records, as building one object per record costs the rules
consumer throughput.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Message", "Publisher", "Record", "Subscriber", "header"]


@dataclass(slots=True)
class Message:
    """One record on a bus (not frozen: building one per consumed record must be cheap)."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    topic: str = ""
    partition: int = 0
    offset: int = 0

    def header(self, name: str) -> bytes | None:
        return header(self, name)


class Record(Protocol):
    """A consumed record, read-only (a Message, or aiokafka's ConsumerRecord)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def header(record: Record, name: str) -> bytes | None:
    """The first header called `name`, or None."""
    for key, value in record.headers:
        if key == name:
            return value
    return None


class Publisher(Protocol):
    async def start(self) -> None: ...
    async def send(self, topic: str, message: Message) -> None: ...
    async def send_many(self, topic: str, messages: Sequence[Message]) -> None:
        """Like `send` for each, in order; Kafka packs them into record batches itself."""
        ...

    async def flush(self) -> None: ...
    async def stop(self) -> None: ...


class Subscriber(Protocol):
    async def start(self) -> None: ...
    def batches(self) -> AsyncIterator[Sequence[Record]]: ...
    async def commit(self, batch: Sequence[Record]) -> None: ...
    async def stop(self) -> None: ...
