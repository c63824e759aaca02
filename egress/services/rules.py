"""The rules stage: flow records → policy → sinks; then commit. The same stage runs in
`egress rules` (Kafka in, Kafka alerts + metrics out), `egress run` and `egress analyze`
(the in-process bus in, NDJSON or the report out).

Per batch: decode each record (an undecodable one goes to the dead-letter topic with
the reason in a header, and is counted), evaluate it (a record of `devices_topic`, the
agents' device inventory, is judged as a device: `Evaluator.judge_device`), hand the
verdicts to every sink;
only when every sink has flushed (the alerts are delivered) is the batch committed
(at-least-once). Evaluation runs in slices of `_SLICE` records between turns of the
event loop, so the next fetch, the last batch's deliveries and its commit proceed
while this one is evaluated. SIGHUP reloads the policy; a bad policy keeps the old
one, is logged and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import structlog

from egress.bus import Message, Publisher, Record, Subscriber
from egress.codec import DecodeError, read_device, read_flow
from egress.errors import EgressError
from egress.model import Verdict
from egress.policy.evaluate import Evaluator
from egress.policy.repeats import RepeatFilter
from egress.policy.schema import load_policy
from egress.runtime import spawn
from egress.sinks import Sink
from egress.telemetry import RulesMetrics

__all__ = ["RulesStage"]

log = structlog.get_logger("egress.rules")
#: records evaluated between two turns of the event loop: long enough to be cheap,
#: short enough (~10 ms) that fetches, alert deliveries and commits overlap evaluation
_SLICE = 200


class RulesStage:
    """`dead_letters`: where undecodable records go (the Kafka publisher; in-process, the bus,
    which swallows a topic nobody reads)."""

    def __init__(
        self,
        evaluator: Evaluator,
        subscriber: Subscriber,
        sinks: Sequence[Sink],
        metrics: RulesMetrics,
        *,
        dead_letters: Publisher,
        dead_letter_topic: str,
        policy_path: Path | None = None,
        repeats: RepeatFilter | None = None,
        devices_topic: str = "",
    ) -> None:
        """`repeats`: alerts that repeat one within `alerts.repeat_after` are counted, not
        handed on (the services; `analyze` keeps every alert record)."""
        self.evaluator = evaluator
        self._sub = subscriber
        self._sinks = tuple(sinks)
        self._metrics = metrics
        self._dead = dead_letters
        self._dlq = dead_letter_topic
        self._policy_path = policy_path
        self._repeats = repeats
        self._devices_topic = devices_topic
        self.evaluated = 0  # flow records
        self.devices = 0  # device records
        self.alerts = 0

    async def run(self) -> None:
        """Evaluate batch N+1 while batch N's alerts travel; batch N is committed only once
        every sink delivered them, and commits stay in order."""
        finishing: asyncio.Task[None] | None = None
        try:
            async for batch in self._sub.batches():
                for i in range(0, len(batch), _SLICE):
                    verdicts, dead = self._evaluate(batch[i : i + _SLICE])
                    for sink in self._sinks:
                        await sink.write(verdicts)
                    for message in dead:
                        await self._dead.send(self._dlq, message)
                    await asyncio.sleep(0)  # let the fetcher, the producer and the last commit move on
                if finishing is not None:
                    await finishing
                finishing = spawn(self._finish(batch), "egress-rules-commit")
        finally:
            if finishing is not None:
                await finishing

    async def _finish(self, batch: Sequence[Record]) -> None:
        """Every sink and the dead letters flushed at once, then the commit. At once, because
        they share one Kafka producer in `egress rules`: flushed one after the other, each later
        flush also waited for what the next batch had sent meanwhile, one more round trip per
        batch (the dead-letter flush alone waited 0.9 s per 300,000 records, measured)."""
        flushed = await asyncio.gather(*(sink.flush() for sink in self._sinks), self._dead.flush(), return_exceptions=True)
        for outcome in flushed:
            if isinstance(outcome, BaseException):
                raise outcome
        await self._sub.commit(batch)

    def _evaluate(self, batch: Sequence[Record]) -> tuple[list[Verdict], list[Message]]:
        """Decode and evaluate a slice: its verdicts, and the dead letters."""
        verdicts: list[Verdict] = []
        dead: list[Message] = []
        evaluate = self.evaluator.evaluate
        devices_topic = self._devices_topic
        alerts = devices = 0
        for msg in batch:
            try:
                if devices_topic and msg.topic == devices_topic:
                    verdict = self.evaluator.judge_device(read_device(msg))
                    devices += 1
                else:
                    verdict = evaluate(read_flow(msg))
            except DecodeError as exc:
                dead.append(self._dead_letter(msg, str(exc)))
                continue
            if verdict.alerts and self._repeats is not None:
                verdict = self._without_repeats(verdict, self._repeats)
            verdicts.append(verdict)
            alerts += len(verdict.alerts)
        self.evaluated += len(verdicts) - devices
        self.devices += devices
        self.alerts += alerts
        return verdicts, dead

    def _without_repeats(self, verdict: Verdict, repeats: RepeatFilter) -> Verdict:
        kept = []
        for alert in verdict.alerts:
            if repeats.admit(alert):
                kept.append(alert)
            else:
                self._metrics.alert_suppressed(verdict.flow.site or "default", verdict.group, alert.category)
        if len(kept) == len(verdict.alerts):
            return verdict
        return Verdict(verdict.flow, verdict.group, verdict.verdict, tuple(kept), verdict.covered, verdict.rule)

    def _dead_letter(self, msg: Record, reason: str) -> Message:
        self._metrics.dead_letter(reason, msg.partition, msg.offset)
        headers = (("reason", reason.encode("utf-8", "replace")[:1000]), ("source-topic", msg.topic.encode()),
                   ("source-partition", str(msg.partition).encode()), ("source-offset", str(msg.offset).encode()))  # fmt: skip
        return Message(msg.key, msg.value or b"", headers)

    def reload(self) -> None:
        """SIGHUP: the new policy wholly, or the old one kept."""
        if self._policy_path is None:
            log.info("policy_reload_skipped", reason="built-in policy")
            return
        try:
            policy = load_policy(self._policy_path)
        except EgressError as exc:
            self._metrics.policy_reload_failed(str(self._policy_path), str(exc).splitlines())
            return
        self.evaluator = self.evaluator.with_policy(policy)
        self._metrics.policy_reloaded(str(self._policy_path), len(policy.groups))
