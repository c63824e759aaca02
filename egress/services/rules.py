"""The rules consumer: flow records → policy → alerts, metrics; then commit.

Per batch: decode each record (an undecodable one goes to the dead-letter topic with
the reason in a header, and is counted), evaluate it with the same Evaluator as
`analyze`, publish its alerts and update the metrics; only when the alerts are
delivered is the batch committed (at-least-once). Evaluation runs in slices of
`_SLICE` records between turns of the event loop, so the next fetch, the last
batch's deliveries and its commit proceed while this one is evaluated. SIGHUP reloads the policy; a bad
policy keeps the old one, is logged and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import structlog

from egress.bus import SCHEMA_HEADER, Message, Publisher, Record, Subscriber, header
from egress.codec import SCHEMA_VERSION, DecodeError, alert_to_ecs, decode_flow, encode
from egress.errors import EgressError
from egress.policy.evaluate import Evaluator
from egress.policy.schema import load_policy
from egress.runtime import spawn
from egress.telemetry import RulesMetrics, vendor_label

__all__ = ["RulesStage", "AlertSink"]

log = structlog.get_logger("egress.rules")
_VERSION = str(SCHEMA_VERSION).encode()
_HEADERS = ((SCHEMA_HEADER, _VERSION),)  # what an agent sends
#: records evaluated between two turns of the event loop: long enough to be cheap,
#: short enough (~10 ms) that fetches, alert deliveries and commits overlap evaluation
_SLICE = 200


class AlertSink(Protocol):
    def write(self, data: bytes) -> None: ...
    def flush(self) -> None: ...


class RulesStage:
    def __init__(
        self,
        evaluator: Evaluator,
        subscriber: Subscriber,
        metrics: RulesMetrics,
        sinks: Sequence[AlertSink],
        *,
        publisher: Publisher | None = None,
        alerts_topic: str = "",
        dead_letter_topic: str = "",
        policy_path: Path | None = None,
    ) -> None:
        self.evaluator = evaluator
        self._sub = subscriber
        self._metrics = metrics
        self._sinks = sinks
        self._pub = publisher
        self._alerts_topic = alerts_topic
        self._dlq = dead_letter_topic
        self._policy_path = policy_path
        self.evaluated = 0
        self.alerts = 0
        self._devices: dict[str, tuple[str, str, str | None]] = {}  # device → (site, group, brand) last counted

    async def run(self) -> None:
        """Evaluate batch N+1 while batch N's alerts travel to Kafka; batch N is committed
        only once they are acknowledged, and commits stay in order."""
        finishing: asyncio.Task[None] | None = None
        try:
            async for batch in self._sub.batches():
                for i in range(0, len(batch), _SLICE):
                    for topic, message in self._evaluate(batch[i : i + _SLICE]):
                        if self._pub is not None:
                            await self._pub.send(topic, message)
                    await asyncio.sleep(0)  # let the fetcher, the producer and the last commit move on
                if finishing is not None:
                    await finishing
                finishing = spawn(self._finish(batch), "egress-rules-commit")
        finally:
            if finishing is not None:
                await finishing

    async def _finish(self, batch: Sequence[Record]) -> None:
        await self.deliver()
        await self._sub.commit(batch)

    async def deliver(self) -> None:
        """Alerts acknowledged by Kafka and NDJSON sinks flushed."""
        if self._pub is not None:
            await self._pub.flush()
        for sink in self._sinks:
            sink.flush()

    def _evaluate(self, batch: Sequence[Record]) -> list[tuple[str, Message]]:
        """Decode and evaluate a batch; what must go to Kafka (alerts, dead letters), in order.

        Synchronous and per batch, as this is the consumer's hot path: counters are
        added up per batch, and a device's gauge is touched only when its labels change."""
        out: list[tuple[str, Message]] = []
        counts: dict[tuple[str, str, str], int] = {}
        seen = self._devices
        evaluate = self.evaluator.evaluate
        for msg in batch:
            headers = msg.headers
            version = None if not headers or headers == _HEADERS else header(msg, SCHEMA_HEADER)
            if version is not None and version != _VERSION:
                out.append(self._dead_letter(msg, f"unsupported schema-version header {version[:20]!r}"))
                continue
            try:
                rec = decode_flow(msg.value or b"")
            except DecodeError as exc:
                out.append(self._dead_letter(msg, str(exc)))
                continue
            verdict = evaluate(rec)
            site = rec.site or "default"
            key = (site, verdict.group, verdict.verdict)
            counts[key] = counts.get(key, 0) + 1
            device = rec.device_mac or rec.device_ip
            if device:
                state = (site, verdict.group, rec.device_manufacturer)
                if seen.get(device) != state:
                    seen[device] = state
                    covered = str(self.evaluator.is_covered(rec.device_manufacturer)).lower()
                    self._metrics.device_seen(device, (site, verdict.group, vendor_label(rec.device_manufacturer), covered))
            for alert in verdict.alerts:
                data = encode(alert_to_ecs(alert))
                out.append((self._alerts_topic, Message(msg.key, data, _HEADERS)))
                for sink in self._sinks:
                    sink.write(data)
                self.alerts += 1
                self._metrics.alerts.labels(site, verdict.group, alert.category, alert.rule_name, alert.severity,
                                            vendor_label(rec.device_manufacturer), rec.destination_country or "unknown").inc()  # fmt: skip
        for key, n in counts.items():
            self.evaluated += n
            self._metrics.evaluated(*key, n=n)
        return out

    def _dead_letter(self, msg: Record, reason: str) -> tuple[str, Message]:
        self._metrics.deadletter.inc()
        log.warning("dead_letter", reason=reason[:200], partition=msg.partition, offset=msg.offset)
        headers = (("reason", reason.encode("utf-8", "replace")[:1000]), ("source-topic", msg.topic.encode()),
                   ("source-partition", str(msg.partition).encode()), ("source-offset", str(msg.offset).encode()))  # fmt: skip
        return self._dlq, Message(msg.key, msg.value or b"", headers)

    def reload(self) -> None:
        """SIGHUP: the new policy wholly, or the old one kept."""
        if self._policy_path is None:
            log.info("policy_reload_skipped", reason="built-in policy")
            return
        try:
            policy = load_policy(self._policy_path)
        except EgressError as exc:
            self._metrics.policy_reload_failures.inc()
            log.error("policy_reload_failed", file=str(self._policy_path), errors=str(exc).splitlines()[:20], keeping="previous policy")
            return
        self.evaluator = self.evaluator.with_policy(policy)
        self._devices.clear()  # covered vendors may have changed: labels are looked at again
        self._metrics.policy_reloads.inc()
        log.info("policy_reloaded", file=str(self._policy_path), groups=len(policy.groups))
