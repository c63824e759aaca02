"""A running rules consumer writes its known keys' counts to the baseline topic once a
minute (the minute shortened here), only for the keys whose flows moved: what `egress
baseline show` on the topic reads."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from egress.baseline import topic as baseline_topic
from egress.baseline.state import BaselineState, Entry
from egress.bus import Message
from egress.bus.kafka import KafkaPublisher, ensure_topics
from egress.config import KafkaConfig

pytestmark = pytest.mark.kafka

KEY = ("street-cctv", "hik-connect.com", "tcp/443")
OTHER = ("street-cctv", "ezvizlife.com", "tcp/6500")


async def _read(cfg: KafkaConfig) -> BaselineState:
    state = BaselineState()
    reader = baseline_topic.BaselineTopic(cfg, state, KafkaPublisher(cfg))
    await reader.start()
    await reader.stop()
    return state


async def _counts_written(cfg: KafkaConfig, monkeypatch: pytest.MonkeyPatch) -> tuple[BaselineState, BaselineState, list[bytes]]:
    await ensure_topics(cfg, [cfg.baseline_topic], compacted=[cfg.baseline_topic])
    publisher = KafkaPublisher(cfg)
    await publisher.start()
    sent: list[bytes] = []
    send_many = publisher.send_many

    async def counting(topic: str, messages: Sequence[Message]) -> None:
        sent.extend(m.key for m in messages)
        await send_many(topic, messages)

    monkeypatch.setattr(publisher, "send_many", counting)
    state = BaselineState()
    topic = baseline_topic.BaselineTopic(cfg, state, publisher)
    await topic.start()
    try:
        for key in (KEY, OTHER):  # what the learner does with a key's first flow
            state.add(key, Entry("street-cctv", "learned", 100.0, 101.0, 1, 500))
            state.changed.add(("key", "\x1f".join(key)))
        await topic.flush()
        entry = state.entries[KEY]  # nine more flows: counts move, nothing is marked changed
        entry.flows, entry.bytes, entry.last_seen = 10, 5000, 900.0
        await topic.flush()
        before = await _read(cfg)  # not a minute yet
        monkeypatch.setattr(topic, "_counts_due", 0.0)  # the minute is up
        sent.clear()
        await topic.flush()
        await topic.flush()  # nothing moved since
    finally:
        await topic.stop()
        await publisher.stop()
    return before, await _read(cfg), sent


def test_moved_counts_are_written_once_a_minute(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = KafkaConfig(bootstrap_servers=(kafka_bootstrap,), baseline_topic=f"test-{uuid.uuid4().hex[:8]}.baseline")
    before, after, sent = asyncio.run(_counts_written(cfg, monkeypatch))
    assert (before.entries[KEY].flows, before.entries[KEY].bytes) == (1, 500)
    assert (after.entries[KEY].flows, after.entries[KEY].bytes, after.entries[KEY].last_seen) == (10, 5000, 900.0)
    assert after.entries[OTHER].flows == 1
    assert sent == [b"key\x1f" + "\x1f".join(KEY).encode()]  # the key whose flows moved, once; not the other
