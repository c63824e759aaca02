"""Sinks: where the rules stage's verdicts go (Prometheus metrics, NDJSON files, the Kafka
alerts topic, the `analyze` report).

Every sink has the same shape: `write(verdicts)` takes one slice of verdicts (each sink takes
what it needs from them, the alerts or the flows too, and encodes it once) and `flush()`
returns once everything written so far is delivered (on disk, acknowledged by Kafka); the
rules stage commits a batch only after every sink flushed it. A sink that owns a file or a
connection has `start()`/`stop()`, called by the runtime. A new sink is one module here,
built in `egress/compose.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from egress.model import Verdict

__all__ = ["Sink"]


class Sink(Protocol):
    async def write(self, verdicts: Sequence[Verdict]) -> None: ...
    async def flush(self) -> None: ...
