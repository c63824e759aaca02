"""LZ4 at its fast level for what egress produces to Kafka.

aiokafka compresses every record batch with LZ4's high-compression mode (level 9, fixed:
it has no setting for it). On flow records that costs 3.8 µs a record, against 0.4 µs
at level 1, for 22% smaller batches (measured on bench/streaming.py's records: ratio
13.1 against 10.7). An agent publishes every flow, so level 1 it is: `use_fast_lz4()`
hands aiokafka's batch builders (the compiled one and its pure-Python twin, which look
the codec up by name at each batch) a level-1 encoder. Brokers and consumers read either
level alike: it is one frame format. tests/test_lz4.py holds a built batch to level 1,
so an aiokafka that stops looking the codec up this way is noticed."""

from __future__ import annotations

import importlib

from aiokafka.codec import lz4_encode

__all__ = ["LEVEL", "use_fast_lz4"]

LEVEL = 1
_BUILDERS = ("aiokafka.record.default_records", "aiokafka.record._crecords.default_records")


def _fast(payload: bytes | bytearray | memoryview, level: int = LEVEL) -> bytes:
    return bytes(lz4_encode(payload, level))


def use_fast_lz4() -> None:
    for name in _BUILDERS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # aiokafka built without its extensions
            continue
        if hasattr(module, "lz4_encode"):
            setattr(module, "lz4_encode", _fast)  # noqa: B010 - a name aiokafka's builders look up
