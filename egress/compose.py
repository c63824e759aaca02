"""The composition root: every command's parts, built in one place from the frozen config.

`cli.py` parses arguments and maps errors to exit codes; everything that decides which
policy, which GeoIP files, which sources, sinks and transports a command gets is here.
Constructors are inert: what owns a resource (GeoIP readers, the spool, NDJSON files,
Kafka clients, live captures) is opened by its `start()` when `runtime.Lifecycle`
starts the parts, in the order they are listed, and closed in reverse.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from egress.bus.memory import MemoryBus
from egress.bus.spool import Spool
from egress.baseline.state import BaselineState
from egress.baseline.store import BaselineFile
from egress.capture.file import FileSource
from egress.capture.live import LiveSource
from egress.capture.prefilter import build_filter
from egress.capture.tshark import tshark_path
from egress.config import CaptureConfig, Config, GeoipConfig
from egress.enrich import Enrichers
from egress.enrich.brands import manufacturer
from egress.enrich.oui import ManufNotFoundError, OuiRegistry, default_registry
from egress.errors import DependencyMissing, InputError, UsageError
from egress.flows.meter import FlowMeter
from egress.health import POLL_STALE_SECONDS, Health
from egress.inputs import check_inputs, choose_policy
from egress.inventory import Inventory
from egress.localnet import LocalNetworks
from egress.model import Packet
from egress.policy.evaluate import Evaluator
from egress.policy.repeats import RepeatFilter
from egress.policy.schema import Policy
from egress.services.agent import Capture, Captures, Devices, SpoolDrainer
from egress.services.rules import RulesStage
from egress.services.serve import AgentParts, InProcessParts
from egress.sinks import Sink
from egress.sinks.kafka import KafkaAlerts
from egress.sinks.metrics import BaselineMetrics, MetricsSink
from egress.sinks.ndjson import AlertLines, FlowLines
from egress.sinks.report import Report
from egress.telemetry import AgentMetrics, RulesMetrics
from egress.webconfig import load_web_config

if TYPE_CHECKING:
    from egress.listener import MetricsEndpoint

__all__ = ["Analysis", "geoip_skipped", "agent", "rules", "run", "analyze"]

log = structlog.get_logger("egress.compose")


def geoip_skipped(config: Config, policy: Policy, kind: str) -> bool:
    """Whether the `kind` ("country" or "asn") database is skipped, its fields left empty: it
    was not asked for (it is at its default place) and is not there. Unless the policy needs
    it (DependencyMissing): a rule on countries or ASNs must never fail silent."""
    path, default = (config.geoip.country_db, GeoipConfig().country_db) if kind == "country" else (config.geoip.asn_db, GeoipConfig().asn_db)
    needed = any(r.countries if kind == "country" else r.asns for g in policy.groups for r in (*g.allow, *g.deny))
    rules_on = "countries" if kind == "country" else "ASNs"
    if path is None and needed:  # turned off on purpose, but then those rules could never match
        raise UsageError(f"geoip.{kind}_db: null, and the policy has rules on {rules_on}: they would never match (name the database)")
    if path is None or path != default or path.exists():
        return False
    if needed:
        raise DependencyMissing(f"{path}: GeoIP {kind} database not found, and the policy has rules on {rules_on} (give --geoip-{kind} or run geoipupdate)")
    return True


def _geoip_paths(config: Config, policy: Policy) -> tuple[Path | None, Path | None]:
    paths: list[Path | None] = []
    for kind, path in (("country", config.geoip.country_db), ("asn", config.geoip.asn_db)):
        if geoip_skipped(config, policy, kind):
            log.warning("geoip_missing", database=kind, path=str(path), effect=f"{kind} fields stay empty")
            path = None
        paths.append(path)
    return paths[0], paths[1]


def _oui_registry() -> OuiRegistry:
    """The IEEE registry, parsed once per process: every source and every file shares it."""
    try:
        return default_registry()
    except ManufNotFoundError as exc:
        raise DependencyMissing(str(exc.strerror)) from None


def _enrichers(config: Config, policy: Policy, metrics: AgentMetrics) -> Enrichers:
    country, asn = _geoip_paths(config, policy)
    return Enrichers(LocalNetworks(policy.local_networks), country, asn, _oui_registry(), on_error=metrics.enrich_error)


def _meter(config: Config, local: LocalNetworks, enrichers: Enrichers, devices: Devices) -> FlowMeter:
    return FlowMeter.from_config(config, local, enrichers.chain(), devices.inventory)


def _devices(config: Config, policy: Policy, local: LocalNetworks, metrics: AgentMetrics) -> Devices:
    """The device inventory every capture of the command feeds, judged by the policy (group,
    covered, name) as the rules stage judges flows; its records go to kafka.devices_topic."""
    registry = _oui_registry()
    hostname = socket.gethostname()
    inventory = Inventory(
        local, lambda mac: manufacturer(mac, registry), Evaluator(policy).describe, site=config.site,
        observer=(config.observer_name or hostname, hostname), grace_seconds=config.flows.idle_timeout,
        on_error=functools.partial(metrics.enrich_error, "inventory"),
    )  # fmt: skip
    return Devices(inventory, config.kafka.devices_topic)


def _file_capture(
    config: Config, local: LocalNetworks, enrichers: Enrichers, devices: Devices, path: Path, *,
    analysis: Analysis | None = None, progress: Callable[[int], None] | None = None,
) -> Capture:  # fmt: skip
    """One capture file through its own flow table. For `analyze` (`analysis` given) a file
    that cannot be read is kept in its input_errors and the next file goes on, and what was
    read is added up; for `--read` the error ends the command (exit 2)."""
    source = FileSource.for_networks(
        path, list(local.networks), config.capture.bpf, chunk_packets=config.capture.chunk_packets, dissect=config.capture.dissect, progress=progress,
        on_arp=devices.inventory.arp,
    )  # fmt: skip
    meter = _meter(config, local, enrichers, devices)

    def batches() -> Iterator[list[Packet] | None]:
        try:
            yield from source.batches()
        except InputError as exc:
            if analysis is None:
                raise
            analysis.input_errors.append(str(exc))
            log.error("capture_unreadable", file=str(path), reason=str(exc))
            return
        finally:
            if analysis is not None:
                analysis.packets += source.report.packets
        for warning in source.report.warnings:
            if analysis is not None:
                analysis.warnings.append(warning)
            log.warning("capture_warning", file=str(path), message=warning)
        if analysis is not None:
            log.info("capture_done", file=str(path), packets=source.report.packets, flows=meter.flows_exported, prefiltered=source.report.prefiltered)

    return Capture("pcap" if analysis is None else str(path), batches, meter, skipped=lambda: source.report.frames_skipped, devices=devices)


def _interfaces(config: Config, read: Path | None, interfaces: Sequence[str] | None) -> tuple[str, ...]:
    """The interfaces to capture on, checked; none for `--read`."""
    if read is not None:
        check_inputs([read])
        return ()
    tshark_path()
    chosen = tuple(interfaces or config.capture.interfaces)
    if not chosen:
        raise UsageError("nothing to capture: give --interface IF or --read PCAP, or set capture.interfaces")
    try:
        CaptureConfig(interfaces=chosen)  # the same name check as the config file's
    except ValidationError as exc:
        raise UsageError(f"--interface: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    return chosen


def _captures(
    config: Config, local: LocalNetworks, enrichers: Enrichers, devices: Devices, metrics: AgentMetrics, read: Path | None, interfaces: tuple[str, ...],
) -> Captures:  # fmt: skip
    """`--read` one file, or one live capture per interface, each with its flow table, all
    feeding one device inventory."""
    if read is not None:
        return Captures([_file_capture(config, local, enrichers, devices, read)], metrics)
    bpf = build_filter(local.networks, config.capture.bpf)
    captures = []
    for interface in interfaces:
        source = LiveSource(
            interface, bpf, snaplen=config.capture.snaplen, chunk_packets=config.capture.chunk_packets, dissect=config.capture.dissect,
            on_drops=functools.partial(metrics.capture_dropped, interface), on_restart=functools.partial(metrics.capture_interrupted, interface),
            on_resumed=functools.partial(metrics.capture_resumed, interface), on_arp=devices.inventory.arp,
        )  # fmt: skip
        meter = _meter(config, local, enrichers, devices)
        captures.append(Capture(interface, source.batches, meter, open=source.start, close=source.stop, skipped=source.frames_skipped, devices=devices))
    return Captures(captures, metrics)


def _endpoint(config: Config, health: Health) -> MetricsEndpoint:
    """The metrics listener; its web config is read (and its certificate loaded) now, before anything starts."""
    from egress.listener import MetricsEndpoint  # the services': `analyze` serves nothing

    web = config.metrics.web_config
    return MetricsEndpoint(config.metrics.listen, health, load_web_config(web) if web is not None else None)


def _agent_metrics(config: Config, health: Health) -> AgentMetrics:
    metrics = AgentMetrics(health=health)
    metrics.agent_info.info({"site": config.site, "observer": config.observer_name or socket.gethostname()})
    return metrics


def agent(config: Config, explicit_policy: bool, read: Path | None, interfaces: Sequence[str] | None) -> AgentParts:
    from egress.bus.kafka import KafkaPublisher, Topics

    chosen = _interfaces(config, read, interfaces)
    policy, _ = choose_policy(config, explicit_policy)
    local = LocalNetworks(policy.local_networks)
    health = Health()
    metrics = _agent_metrics(config, health)
    enrichers = _enrichers(config, policy, metrics)
    captures = _captures(config, local, enrichers, _devices(config, policy, local, metrics), metrics, read, chosen)
    kafka, topic = config.kafka, config.kafka.flows_topic
    endpoint = _endpoint(config, health)

    def topics() -> Topics:
        return Topics(kafka, [topic, kafka.devices_topic], compacted=[kafka.devices_topic])

    if config.spool.path is None:  # no spool: Kafka must be there at start (exit 3 otherwise)
        publisher = KafkaPublisher(kafka, on_error=metrics.flow_publish_failed)
        components = [enrichers, endpoint, topics(), publisher]
        return AgentParts(components, captures, metrics, topic, enrichers.reopen, health.check("kafka", starting="connecting"), publisher=publisher)

    async def connect() -> KafkaPublisher:  # its errors are the drainer's (kafka_unavailable_spooling)
        await topics().start()
        publisher = KafkaPublisher(kafka)
        await publisher.start()
        return publisher

    spool = Spool(config.spool.path, config.spool.max_bytes, on_drop=metrics.spool_full_dropped_oldest,
                  on_overflow=metrics.spool_disk_full, on_space_back=metrics.spool_disk_space_back)  # fmt: skip
    drainer = SpoolDrainer(spool, connect, topic, metrics)
    accepting = health.check("spool", starting="opening")  # Kafka away is the drainer's to retry: the spool keeps accepting
    return AgentParts([enrichers, endpoint, spool], captures, metrics, topic, enrichers.reopen, accepting, spool=spool, drainer=drainer)


def rules(config: Config, explicit_policy: bool, alerts_out: Path | None) -> tuple[list[object], RulesStage, Callable[[], None]]:
    """The parts to start, the stage, and what stops it (SIGTERM)."""
    from egress.bus.kafka import KafkaPublisher, KafkaSubscriber, Topics

    from egress.baseline.topic import BaselineTopic

    kafka = config.kafka
    policy, policy_path = choose_policy(config, explicit_policy)
    metrics = RulesMetrics()
    health = Health()
    polling = health.check("kafka consumer", stale_after=POLL_STALE_SECONDS, starting="not polling yet", missing="no poll")
    publisher = KafkaPublisher(kafka, on_error=metrics.alert_publish_failed)  # alerts, dead letters, the baseline
    subscriber = KafkaSubscriber(kafka, [kafka.flows_topic, kafka.devices_topic], on_lag=metrics.lag, on_commit_refused=metrics.commit_refused, on_poll=polling.beat)
    state = BaselineState()
    gauges = BaselineMetrics(metrics, lambda: stage.evaluator)  # a reload replaces the evaluator
    baseline = BaselineTopic(kafka, state, publisher, on_change=gauges.refresh)
    sinks: list[Sink] = [MetricsSink(metrics), gauges, baseline, KafkaAlerts(publisher, kafka.alerts_topic)]
    topics = Topics(kafka, [kafka.flows_topic, kafka.alerts_topic, kafka.dead_letter_topic, kafka.baseline_topic, kafka.devices_topic],
                    compacted=[kafka.baseline_topic, kafka.devices_topic])  # fmt: skip
    components: list[object] = [_endpoint(config, health), topics, publisher, baseline]
    if alerts_out is not None:
        lines = AlertLines(alerts_out)
        sinks.append(lines)
        components.append(lines)
    components.append(subscriber)
    stage = RulesStage(Evaluator(policy, state), subscriber, sinks, metrics, dead_letters=publisher, dead_letter_topic=kafka.dead_letter_topic,
                       policy_path=policy_path, repeats=_repeats(config), devices_topic=kafka.devices_topic)  # fmt: skip
    return components, stage, subscriber.request_stop


def _repeats(config: Config) -> RepeatFilter | None:
    """The services' `alerts.repeat_after` (0: every alert is emitted)."""
    return RepeatFilter(config.alerts.repeat_after) if config.alerts.repeat_after > 0 else None


def _in_process(
    config: Config, evaluator: Evaluator, policy_path: Path | None, sinks: Sequence[Sink], metrics: RulesMetrics, repeats: RepeatFilter | None = None,
) -> tuple[MemoryBus, RulesStage]:  # fmt: skip
    bus = MemoryBus(config.kafka.flows_topic, also=(config.kafka.devices_topic,))
    stage = RulesStage(evaluator, bus, sinks, metrics, dead_letters=bus, dead_letter_topic=config.kafka.dead_letter_topic, policy_path=policy_path, repeats=repeats,
                       devices_topic=config.kafka.devices_topic)  # fmt: skip
    return bus, stage


def _baseline_file(config: Config, state: BaselineState) -> list[object]:
    """The baseline file to load and keep, where `--baseline`/`baseline_file` names one."""
    return [BaselineFile(config.baseline_file, state)] if config.baseline_file is not None else []


def run(config: Config, explicit_policy: bool, read: Path | None, interfaces: Sequence[str] | None, alerts_out: Path | None, linger: bool) -> InProcessParts:
    chosen = _interfaces(config, read, interfaces)
    policy, policy_path = choose_policy(config, explicit_policy)
    local = LocalNetworks(policy.local_networks)
    health = Health()  # the captures' checks: the rules stage is in this process, alive while it is
    agent_metrics, rules_metrics = _agent_metrics(config, health), RulesMetrics()
    enrichers = _enrichers(config, policy, agent_metrics)
    lines = AlertLines(alerts_out)
    state = BaselineState()
    evaluator = Evaluator(policy, state)
    sinks: list[Sink] = [MetricsSink(rules_metrics), BaselineMetrics(rules_metrics, lambda: stage.evaluator), lines]  # a reload replaces the evaluator
    bus, stage = _in_process(config, evaluator, policy_path, sinks, rules_metrics, _repeats(config))
    captures = _captures(config, local, enrichers, _devices(config, policy, local, agent_metrics), agent_metrics, read, chosen)
    components = [enrichers, *_baseline_file(config, state), _endpoint(config, health), lines]
    return InProcessParts(components, [captures], bus, stage, agent_metrics, config.kafka.flows_topic, enrichers.reopen, linger=linger)


@dataclass(slots=True)
class Analysis:
    """What an `analyze` run came to; `input_errors` are files that could not be read (exit 2)."""

    parts: InProcessParts
    report: Report
    inventory: Inventory
    packets: int = 0
    warnings: list[str] = field(default_factory=list)
    input_errors: list[str] = field(default_factory=list)

    @property
    def flows(self) -> int:
        return self.parts.stage.evaluated

    @property
    def alerts(self) -> int:
        return self.parts.stage.alerts


def analyze(
    config: Config, policy: Policy, files: Sequence[Path], report: Report, *,
    flows_out: Path | None = None, progress: Callable[[int], None] | None = None, learn_everything: bool = False, metrics: AgentMetrics | None = None,
) -> Analysis:  # fmt: skip
    """Each file through its own flow table, one after another, into the rules stage of
    `run` with the report (and the flows file) as sinks. A file that cannot be read is
    logged and kept in `input_errors`; the others are analysed. `learn_everything`: the
    files are the baseline's learning period (`egress baseline learn`). `metrics`: where the
    capture's counts go; by default nowhere (nothing serves an analysis's metrics)."""
    local = LocalNetworks(policy.local_networks)
    metrics = metrics if metrics is not None else AgentMetrics(served=False)
    enrichers = _enrichers(config, policy, metrics)
    sinks: list[Sink] = [report]
    state = BaselineState()
    evaluator = Evaluator(policy, state, learn_everything=learn_everything)
    components: list[object] = [enrichers, *_baseline_file(config, state)]
    if flows_out is not None:
        flows = FlowLines(flows_out, policy.name)
        sinks.append(flows)
        components.append(flows)
    bus, stage = _in_process(config, evaluator, None, sinks, RulesMetrics(served=False))
    parts = InProcessParts(components, [], bus, stage, metrics, config.kafka.flows_topic, enrichers.reopen, service=False)
    devices = _devices(config, policy, local, metrics)
    analysis = Analysis(parts, report, devices.inventory)
    parts.captures = [Captures([_file_capture(config, local, enrichers, devices, path, analysis=analysis, progress=progress)], metrics) for path in files]
    return analysis
