"""Every metric egress exports (SPEC: Metrics), in one place.

Label values come from bounded sets only: interface names, site, group and rule
names from the config and policy, categories, severities, catalogue brands and
country codes. IPs, MACs, ports and hostnames go in records, never in labels:
prometheus-client never forgets a series.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Info, disable_created_metrics, start_http_server

import structlog

from egress import __version__
from egress.enrich.brands import BRANDS
from egress.errors import EgressError

__all__ = ["AgentMetrics", "RulesMetrics", "MetricsEndpoint", "serve_metrics", "vendor_label"]

log = structlog.get_logger("egress.telemetry")
_BRANDS = frozenset(BRANDS)
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client; the *_created series double every counter for no use in alerting


def vendor_label(manufacturer: str | None) -> str:
    """A catalogue brand, `other` for a registry name the catalogue lacks, or `unknown`."""
    if not manufacturer:
        return "unknown"
    return manufacturer if manufacturer in _BRANDS else "other"


def _build_info(registry: CollectorRegistry) -> None:
    if "egress_build" not in registry._names_to_collectors:  # noqa: SLF001 - one per process
        Info("egress_build", "egress version", registry=registry).info({"version": __version__})


class AgentMetrics:
    """Capture → flows → publish."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        _build_info(registry)
        self.packets_captured = Counter("egress_packets_captured", "Packets that passed the capture filter", ["interface"], registry=registry)
        self.packets_dropped = Counter("egress_packets_dropped", "Packets the kernel or capture dropped", ["interface"], registry=registry)
        self.flows_exported = Counter("egress_flows_exported", "Flow records exported by the flow table", registry=registry)
        self.publish_errors = Counter("egress_publish_errors", "Flow records that could not be published", registry=registry)
        self.spool_records = Gauge("egress_spool_records", "Flow records waiting in the spool", registry=registry)
        self.spool_dropped = Counter("egress_spool_dropped_records", "Spooled flow records dropped because the spool was full", registry=registry)
        self.agent_info = Info("egress_agent", "Site and observer of this agent, to join agent metrics on", registry=registry)
        self.capture_restarts = Counter("egress_capture_restarts", "Captures restarted after the interface went away", ["interface"], registry=registry)
        self.frames_skipped = Counter("egress_frames_skipped", "Frames that were not IP or could not be read", ["interface"], registry=registry)


class RulesMetrics:
    """Flow records → policy → alerts."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        _build_info(registry)
        self.flows_evaluated = Counter("egress_flows_evaluated", "Flow records evaluated", ["site", "group", "verdict"], registry=registry)
        self.alerts = Counter(
            "egress_alerts", "Alerts raised", ["site", "group", "category", "rule", "severity", "vendor", "country"], registry=registry
        )
        self.devices = Gauge("egress_devices", "Devices seen", ["site", "group", "vendor", "covered"], registry=registry)
        self.deadletter = Counter("egress_deadletter", "Messages sent to the dead-letter topic", registry=registry)
        self.policy_reload_failures = Counter("egress_policy_reload_failures", "Policy reloads refused", registry=registry)
        self.policy_reloads = Counter("egress_policy_reloads", "Policy reloads applied", registry=registry)
        self.consumer_lag = Gauge("egress_consumer_lag_records", "Records in the partition not yet read by this consumer", ["topic", "partition"], registry=registry)
        self._device_labels: dict[str, tuple[str, str, str, str]] = {}
        self._evaluated: dict[tuple[str, str, str], Any] = {}

    def evaluated(self, site: str, group: str, verdict: str, n: int = 1) -> None:
        """flows_evaluated with its children cached: `labels()` costs more than `inc()`."""
        key = (site, group, verdict)
        child = self._evaluated.get(key)
        if child is None:
            child = self._evaluated[key] = self.flows_evaluated.labels(*key)
        child.inc(n)

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


class MetricsEndpoint:
    """/metrics on `metrics.listen`, from `start()` to the end of the process."""

    def __init__(self, listen: str) -> None:
        self._listen = listen

    def start(self) -> None:
        try:
            address = serve_metrics(self._listen)
        except OSError as exc:
            raise EgressError(f"metrics.listen {self._listen}: cannot listen: {exc.strerror}") from None
        log.info("metrics_listening", address=address)


def serve_metrics(listen: str) -> str:
    """Serve /metrics on `host:port` in a background thread; returns the bound address."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    server, _thread = start_http_server(int(port), addr=host)
    bound_host, bound_port = server.server_address[:2]
    return f"{bound_host!s}:{bound_port}"
