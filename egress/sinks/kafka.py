"""Alert records to the Kafka alerts topic, keyed like the flows (by device MAC)."""

from __future__ import annotations

from collections.abc import Sequence

from egress.bus import Publisher
from egress.codec import alert_message
from egress.model import Verdict

__all__ = ["KafkaAlerts"]


class KafkaAlerts:
    """`flush()` returns once Kafka acknowledged every alert sent, so the rules stage commits
    a batch only after its alerts are safe (at-least-once). The publisher is started and
    stopped by the runtime: the dead letters travel on it too."""

    def __init__(self, publisher: Publisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def write(self, verdicts: Sequence[Verdict]) -> None:
        for verdict in verdicts:
            for alert in verdict.alerts:
                await self._publisher.send(self._topic, alert_message(alert))

    async def flush(self) -> None:
        await self._publisher.flush()
