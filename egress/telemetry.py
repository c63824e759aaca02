"""Every metric egress exports (SPEC: Metrics), in one place.

Label values come from bounded sets only: interface names, site, group and rule
names from the config and policy, categories, severities, catalogue brands and
country codes. IPs, MACs, ports and hostnames go in records, never in labels:
prometheus-client never forgets a series.

Every drop, error and state change is one typed event: a method of `AgentMetrics` or
`RulesMetrics` that counts it (with its bounded labels) and logs its structlog event
with its fields, so the log and the metric never disagree. Lines go through a
`BurstSampler` (Akvorado's burst sampler, Vector's `emit()`): per event name, the first
`burst` lines of each period are logged, the rest only counted, and the next logged line
of that event carries `suppressed=K`. Bad input cannot flood the log; the counter still
counts every occurrence. Components outside this module get these methods as callables
from `egress.compose`, so enrichers, the spool and the capture import no prometheus_client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from egress import __version__
from egress.enrich.brands import BRANDS
from egress.health import CAPTURE_STALE_SECONDS, INTERFACE_AWAY_SECONDS, Check, Health

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["AgentMetrics", "RulesMetrics", "BurstSampler", "vendor_label"]

log = structlog.get_logger("egress.telemetry")
_BRANDS = frozenset(BRANDS)


def vendor_label(manufacturer: str | None) -> str:
    """A catalogue brand, `other` for a registry name the catalogue lacks, or `unknown`."""
    if not manufacturer:
        return "unknown"
    return manufacturer if manufacturer in _BRANDS else "other"


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class BurstSampler:
    """Per event name: the first `burst` lines of each `period_seconds` pass, the rest are
    counted as suppressed and reported by the next line of that event that passes.
    Thread-safe (captures run on threads); time from `clock` (time.monotonic)."""

    def __init__(self, burst: int = 10, period_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = burst
        self._period = period_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}  # event names are constants: a bounded set

    def admit(self, event: str) -> int | None:
        """None: drop this line; else log it, with this many lines suppressed before it."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(event)
            if window is None:
                window = self._windows[event] = _Window(now)
            elif now - window.start >= self._period:
                window.start, window.logged = now, 0
            if window.logged >= self._burst:
                window.suppressed += 1
                return None
            window.logged += 1
            suppressed, window.suppressed = window.suppressed, 0
            return suppressed

    def log(self, level: str, event: str, **fields: Any) -> None:
        """Log `event` at `level` if the sampler lets it through."""
        suppressed = self.admit(event)
        if suppressed is None:
            return
        if suppressed:
            fields["suppressed"] = suppressed
        getattr(log, level)(event, **fields)


class _Unserved:
    """A metric of a one-off run that nothing serves (`egress analyze`): it takes every call
    and keeps nothing, so such a run does not import prometheus_client (~10 ms of its start)."""

    def __init__(self, *_: object, **__: object) -> None:
        pass

    def labels(self, *_: str) -> _Unserved:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def set_function(self, f: Callable[[], float]) -> None:
        pass

    def info(self, value: dict[str, str]) -> None:
        pass

    def remove(self, *_: str) -> None:
        pass


def _kinds(registry: CollectorRegistry | None, served: bool) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], CollectorRegistry | None]:
    """Counter, Gauge and Info makers for `registry` (None: prometheus_client's own), and the
    registry; where nothing is served, makers of _Unserved."""
    if not served:
        return _Unserved, _Unserved, _Unserved, None
    from prometheus_client import REGISTRY, Counter, Gauge, Info, disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client; the *_created series double every counter for no use in alerting
    registry = REGISTRY if registry is None else registry
    if "egress_build" not in registry._names_to_collectors:  # noqa: SLF001 - one per process
        Info("egress_build", "egress version", registry=registry).info({"version": __version__})
    return partial(Counter, registry=registry), partial(Gauge, registry=registry), partial(Info, registry=registry), registry


class AgentMetrics:
    """Capture → flows → publish; its events below count and log (sampled)."""

    ENRICHERS = ("device", "geoip")

    def __init__(self, registry: CollectorRegistry | None = None, sampler: BurstSampler | None = None, health: Health | None = None, *, served: bool = True) -> None:
        """`registry`: prometheus_client's own where None; `served=False`: metrics nobody will
        scrape (a one-off analysis), whose events still log."""
        counter, gauge, info, self.registry = _kinds(registry, served)
        self.health = health or Health()
        self._log = (sampler or BurstSampler()).log
        self.packets_captured = counter("egress_packets_captured", "Packets that passed the capture filter", ["interface"])
        self.packets_dropped = counter("egress_packets_dropped", "Packets the kernel or capture dropped", ["interface"])
        self.flows_exported = counter("egress_flows_exported", "Flow records exported by the flow table")
        self.publish_errors = counter("egress_publish_errors", "Flow records that could not be published")
        self.spool_records = gauge("egress_spool_records", "Flow records waiting in the spool")
        self.spool_dropped = counter("egress_spool_dropped_records", "Spooled flow records dropped because the spool was full")
        self.spool_overflow = counter("egress_spool_overflow_records", "Flow records not spooled because the spool's disk was full")
        self.agent_info = info("egress_agent", "Site and observer of this agent, to join agent metrics on")
        self.capture_restarts = counter("egress_capture_restarts", "Captures restarted after the interface went away", ["interface"])
        self.frames_skipped = counter("egress_frames_skipped", "Frames that were not IP or could not be read", ["interface"])
        self.enrich_errors = counter("egress_enrich_errors", "Enricher lookups that failed on bad input", ["enricher"])
        for enricher in self.ENRICHERS:
            self.enrich_errors.labels(enricher)  # exported as 0 from the start
        self.last_packet = gauge(
            "egress_last_packet_timestamp_seconds", "Wall-clock time the capture last read a packet (set at most once a batch)", ["interface"]
        )
        self.flows_evicted = counter("egress_flows_evicted", "Flows exported early because the flow table held flows.max_flows")
        self._flow_tables: list[Callable[[], int]] = []
        flows_held = gauge("egress_flow_table_flows", "Flows held in the flow tables (read when scraped)")
        flows_held.set_function(lambda: sum(held() for held in self._flow_tables))

    def count_flows_of(self, held: Callable[[], int]) -> None:
        """Add a flow table's size to egress_flow_table_flows: read at each scrape, nothing
        on the packet path (len() of the table's dict is atomic under the GIL)."""
        self._flow_tables.append(held)

    def packets_read(self, interface: str) -> None:
        """egress_last_packet_timestamp_seconds{interface}: now (a pump calls it once per batch).
        The series is born with the first packet: an interface that never had traffic has none,
        so EgressCaptureSilent, which needs the series, ignores it."""
        self.last_packet.labels(interface).set(time.time())

    def capture_check(self, interface: str) -> Check:
        """The /healthz check of a capture: its pump beats, its interface may go away."""
        return self.health.check(f"capture {interface}", stale_after=CAPTURE_STALE_SECONDS, missing="no packet or tick")

    # -- events --------------------------------------------------------------------
    def capture_dropped(self, interface: str, packets: int) -> None:
        """Packets the kernel or dumpcap dropped on `interface` (from the drop watch's thread too)."""
        if packets:
            self.packets_dropped.labels(interface).inc(packets)
            self._log("warning", "capture_dropped", interface=interface, packets=packets)

    def capture_skipped(self, interface: str, frames: int) -> None:
        """Frames of `interface` that were not IP or could not be read."""
        if frames:
            self.frames_skipped.labels(interface).inc(frames)
            self._log("info", "capture_skipped", interface=interface, frames=frames)

    def capture_interrupted(self, interface: str, retry_in_seconds: float) -> None:
        """The interface went away (dumpcap ended): the capture is retried, and /healthz
        fails once it has been away for INTERFACE_AWAY_SECONDS."""
        self.capture_restarts.labels(interface).inc()
        self.capture_check(interface).trouble("interface away, retrying", grace=INTERFACE_AWAY_SECONDS)
        self._log("warning", "capture_interrupted", interface=interface, retry_in_seconds=retry_in_seconds)

    def capture_resumed(self, interface: str) -> None:
        """The interface is back: its capture runs again."""
        self.capture_check(interface).clear()
        self._log("info", "capture_resumed", interface=interface)

    def flow_table_full(self, interface: str, flows: int) -> None:
        """The flow table of `interface` held flows.max_flows: its `flows` oldest went out early."""
        if flows:
            self.flows_evicted.inc(flows)
            self._log("warning", "flow_table_full", interface=interface, flows_evicted=flows)

    def enrich_error(self, enricher: str, reason: str) -> None:
        """A lookup refused its input (a GeoIP address, a device MAC from a corrupt frame)."""
        self.enrich_errors.labels(enricher).inc()
        self._log("warning", "enrich_error", enricher=enricher, reason=reason[:200])

    def kafka_unavailable_spooling(self, reason: str, spooled: int, retry_in_seconds: float) -> None:
        """A spool drain attempt failed: the records stay spooled and the drain is retried."""
        self.publish_errors.inc()
        self._log("warning", "kafka_unavailable_spooling", reason=reason[:200], spooled=spooled, retry_in_seconds=retry_in_seconds)

    def flow_publish_failed(self, records: int, error: BaseException) -> None:
        """Kafka refused `records` flow records (no spool: the agent stops on it)."""
        self.publish_errors.inc(records)
        self._log("error", "flow_publish_failed", records=records, reason=str(error)[:200])

    def spool_full_dropped_oldest(self, records: int, segment: int, max_bytes: int) -> None:
        """The spool passed `max_bytes`: its oldest segment and `records` undelivered records went."""
        self.spool_dropped.inc(records)
        self._log("error", "spool_full_dropped_oldest", segment=segment, records=records, max_bytes=max_bytes)

    def spool_disk_full(self, records: int, reason: str, first: bool) -> None:
        """A batch of `records` could not be written to the spool (its disk is full): counted
        each time, logged on the `first` of an episode (`spool_disk_space_back` ends it)."""
        self.spool_overflow.inc(records)
        if first:
            self._log("error", "spool_disk_full", records=records, reason=reason[:200])

    def spool_disk_space_back(self, lost: int) -> None:
        """The spool writes again after a disk-full episode that lost `lost` records."""
        self._log("warning", "spool_disk_space_back", records_lost=lost)


class RulesMetrics:
    """Flow records → policy → alerts; its events below count and log (sampled)."""

    def __init__(self, registry: CollectorRegistry | None = None, sampler: BurstSampler | None = None, *, served: bool = True) -> None:
        """As AgentMetrics."""
        counter, gauge, _, self.registry = _kinds(registry, served)
        self._log = (sampler or BurstSampler()).log
        self.flows_evaluated = counter("egress_flows_evaluated", "Flow records evaluated", ["site", "group", "verdict"])
        self.alerts = counter(
            "egress_alerts", "Alerts raised", ["site", "group", "category", "rule", "severity", "vendor", "country"]
        )
        self.devices = gauge("egress_devices", "Devices seen", ["site", "group", "vendor", "covered"])
        self.deadletter = counter("egress_deadletter", "Messages sent to the dead-letter topic")
        self.policy_reload_failures = counter("egress_policy_reload_failures", "Policy reloads refused")
        self.policy_reloads = counter("egress_policy_reloads", "Policy reloads applied")
        self.consumer_lag = gauge("egress_consumer_lag_records", "Records in the partition not yet read by this consumer", ["topic", "partition"])
        self.alert_publish_errors = counter("egress_alert_publish_errors", "Alert and dead-letter records Kafka did not accept")
        self.commit_failures = counter("egress_consumer_commit_failures", "Offset commits refused (the partitions moved on)")
        self.alerts_suppressed = counter("egress_alerts_suppressed", "Alerts not emitted: the same (device, destination, port, rule) alerted within alerts.repeat_after",
                                         ["site", "group", "category"])  # fmt: skip
        self._suppressed: dict[tuple[str, str, str], Any] = {}
        self._device_labels: dict[str, tuple[str, str, str, str]] = {}
        self._evaluated: dict[tuple[str, str, str], Any] = {}
        self.baseline_keys = gauge("egress_baseline_keys", "Destination keys of the learned baseline", ["site", "group", "state"])
        self.baseline_learning = gauge("egress_baseline_learning", "1 while the group's baseline learns", ["site", "group"])

    # -- events --------------------------------------------------------------------
    def dead_letter(self, reason: str, partition: int, offset: int) -> None:
        """An undecodable flow record, sent to the dead-letter topic."""
        self.deadletter.inc()
        self._log("warning", "dead_letter", reason=reason[:200], partition=partition, offset=offset)

    def policy_reloaded(self, file: str, groups: int) -> None:
        self.policy_reloads.inc()
        self._log("info", "policy_reloaded", file=file, groups=groups)

    def policy_reload_failed(self, file: str, errors: list[str]) -> None:
        """A reload refused: the previous policy stays in force."""
        self.policy_reload_failures.inc()
        self._log("error", "policy_reload_failed", file=file, errors=errors[:20], keeping="previous policy")

    def alert_publish_failed(self, records: int, error: BaseException) -> None:
        """Kafka refused `records` alerts or dead letters (the batch is not committed)."""
        self.alert_publish_errors.inc(records)
        self._log("error", "alert_publish_failed", records=records, reason=str(error)[:200])

    def commit_refused(self, reason: str, partitions: int) -> None:
        """A commit the group refused: the new owners read those records again."""
        self.commit_failures.inc()
        self._log("warning", "commit_refused", reason=reason[:200], partitions=partitions)

    def evaluated(self, site: str, group: str, verdict: str, n: int = 1) -> None:
        _child(self.flows_evaluated, self._evaluated, (site, group, verdict)).inc(n)

    def alert_suppressed(self, site: str, group: str, category: str) -> None:
        """One repeat within alerts.repeat_after (no log line: repeats are the normal case)."""
        _child(self.alerts_suppressed, self._suppressed, (site, group, category)).inc()

    def lag(self, topic: str, partition: int, records: int | None) -> None:
        """egress_consumer_lag_records of one partition; None removes it (reassigned)."""
        if records is None:
            try:
                self.consumer_lag.remove(topic, str(partition))
            except KeyError:
                pass
        else:
            self.consumer_lag.labels(topic, str(partition)).set(records)

    def device_seen(self, device: str, labels: tuple[str, str, str, str]) -> None:
        """Count each device once, under its latest labels."""
        old = self._device_labels.get(device)
        if old == labels:
            return
        if old is not None:
            self.devices.labels(*old).dec()
        self.devices.labels(*labels).inc()
        self._device_labels[device] = labels


def _child(counter: Any, cache: dict[tuple[str, str, str], Any], labels: tuple[str, str, str]) -> Any:
    """A counter's child for these labels, cached: `labels()` costs more than `inc()`, and
    these run per batch of a rules consumer."""
    child = cache.get(labels)
    if child is None:
        child = cache[labels] = counter.labels(*labels)
    return child
