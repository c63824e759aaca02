"""Enrichers: each fills fields of a FlowRecord; a chain runs them in order.

A new enricher is one module with a class that has `name` and `enrich(record)` (and
`observe(packet)` if it learns from packets; `start()`/`stop()` if it holds files,
`reopen()` if SIGHUP should re-read them), added to `Enrichers` below. Enrichers that
hold no per-link state are built once per process and shared by every capture source;
the name evidence is per source (each source's packets teach its own table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import structlog

from egress.enrich.device import DeviceEnricher
from egress.enrich.geoip import GeoIpEnricher
from egress.enrich.names import NameEvidence
from egress.enrich.oui import OuiRegistry
from egress.errors import EgressError
from egress.localnet import LocalNetworks
from egress.model import FlowRecord, Packet

__all__ = ["Enricher", "PacketObserver", "EnricherChain", "Enrichers"]

log = structlog.get_logger("egress.enrich")


class Enricher(Protocol):
    name: str

    def enrich(self, rec: FlowRecord) -> None: ...


@runtime_checkable
class PacketObserver(Protocol):
    def observe(self, pkt: Packet) -> None: ...


class EnricherChain:
    """Runs enrichers in order; the ones that learn from packets see names-bearing packets."""

    def __init__(self, enrichers: Sequence[Enricher]) -> None:
        self.enrichers = tuple(enrichers)
        self._observers = tuple(e for e in enrichers if isinstance(e, PacketObserver))

    def observe(self, pkt: Packet) -> None:
        if pkt.dns is not None or pkt.server_name is not None:
            for observer in self._observers:
                observer.observe(pkt)

    def enrich(self, rec: FlowRecord) -> None:
        for enricher in self.enrichers:
            enricher.enrich(rec)


def _named(on_error: Callable[[str, str], None] | None, enricher: str) -> Callable[[str], None] | None:
    if on_error is None:
        return None
    return lambda reason: on_error(enricher, reason)


class Enrichers:
    """The enrichers of one process, in order (device first: names key on the device's IP).
    The OUI registry is parsed once; the GeoIP files are opened by `start()`; `chain()` gives
    each capture source its chain. `on_error(enricher, reason)`: a lookup that refused its
    input (the telemetry event)."""

    def __init__(
        self, local: LocalNetworks, country_db: Path | None, asn_db: Path | None, registry: OuiRegistry,
        on_error: Callable[[str, str], None] | None = None,
    ) -> None:  # fmt: skip
        self.device = DeviceEnricher(registry, _named(on_error, DeviceEnricher.name))
        self.geoip = GeoIpEnricher(country_db, asn_db, local, _named(on_error, GeoIpEnricher.name))

    def start(self) -> None:
        self.geoip.start()

    def stop(self) -> None:
        self.geoip.stop()

    def chain(self) -> EnricherChain:
        return EnricherChain([self.device, NameEvidence(), self.geoip])

    def reopen(self) -> None:
        """SIGHUP: the GeoIP files again, or the previous ones kept."""
        try:
            self.geoip.reopen()
            log.info("enricher_reopened", enricher=self.geoip.name)
        except EgressError as exc:
            log.error("enricher_reopen_failed", enricher=self.geoip.name, reason=str(exc), keeping="previous files")
