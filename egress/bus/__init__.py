"""Transports between the agent and rules stages: Kafka, or an in-process bus.

Both have the same shape: a Publisher sends keyed messages to a topic and `flush()`
returns once every message sent so far is delivered; a Subscriber yields batches
and `commit(batch)` records that a batch is done (a no-op in memory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Message", "Publisher", "Subscriber", "SCHEMA_HEADER"]

SCHEMA_HEADER = "schema-version"


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
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Publisher(Protocol):
    async def start(self) -> None: ...
    async def send(self, topic: str, message: Message) -> None: ...
    async def flush(self) -> None: ...
    async def stop(self) -> None: ...


class Subscriber(Protocol):
    async def start(self) -> None: ...
    def batches(self) -> AsyncIterator[list[Message]]: ...
    async def commit(self, batch: list[Message]) -> None: ...
    async def stop(self) -> None: ...
