"""The in-process bus of `egress run`: one bounded queue for the topics its subscriber reads.

A full queue makes the sender wait (backpressure), it never drops. A topic nobody
subscribes to (alerts, dead letters in `run`) swallows what is sent to it. The flows
topic and `also` (the devices topic) share the queue, so the subscriber reads them in
the order they were sent, as one agent's Kafka partition keeps them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from egress.bus import Message, Record

__all__ = ["MemoryBus"]

_END = Message(None, b"")


class MemoryBus:
    """One object plays both roles; `close()` ends the subscriber after what is queued."""

    def __init__(self, topic: str, maxsize: int = 10_000, batch: int = 500, *, also: tuple[str, ...] = ()) -> None:
        self._topic = topic
        self._also = also
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize)
        self._batch = batch
        self._offset = 0

    async def start(self) -> None:
        return None

    async def send(self, topic: str, message: Message) -> None:
        if topic == self._topic or topic in self._also:
            self._offset += 1
            await self._queue.put(message)

    async def send_many(self, topic: str, messages: Sequence[Message]) -> None:
        for message in messages:
            await self.send(topic, message)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        await self._queue.put(_END)

    async def batches(self) -> AsyncIterator[list[Message]]:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            ended = any(m is _END for m in batch)
            batch = [m for m in batch if m is not _END]
            if batch:
                yield batch
            if ended:
                return

    async def commit(self, batch: Sequence[Record]) -> None:
        return None

    async def stop(self) -> None:
        return None
