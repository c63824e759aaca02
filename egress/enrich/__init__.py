"""Enrichers: each fills fields of a FlowRecord; the chain runs them in order.

A new enricher is one module with a class that has `name` and `enrich(record)`
(and `observe(packet)` if it learns from packets, `reopen()` if it holds files),
added to the list in `build_chain`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import structlog

from egress.errors import EgressError
from egress.localnet import LocalNetworks
from egress.model import FlowRecord, Packet

__all__ = ["Enricher", "PacketObserver", "EnricherChain", "build_chain"]

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
        self._reopen = threading.Event()

    def observe(self, pkt: Packet) -> None:
        if pkt.dns is not None or pkt.server_name is not None:
            for observer in self._observers:
                observer.observe(pkt)

    def enrich(self, rec: FlowRecord) -> None:
        if self._reopen.is_set():
            self._reopen.clear()
            self.reopen()
        for enricher in self.enrichers:
            enricher.enrich(rec)

    def request_reopen(self) -> None:
        """From any thread (SIGHUP): files are reopened before the next enrichment, on the
        enriching thread, so no lookup runs on a closing reader."""
        self._reopen.set()

    def reopen(self) -> None:
        for enricher in self.enrichers:
            reopen = getattr(enricher, "reopen", None)
            if reopen is None:
                continue
            try:
                reopen()
                log.info("enricher_reopened", enricher=enricher.name)
            except EgressError as exc:
                log.error("enricher_reopen_failed", enricher=enricher.name, reason=str(exc), keeping="previous files")


def build_chain(local: LocalNetworks, country_db: Path | None, asn_db: Path | None, manuf: Path | None = None) -> EnricherChain:
    """The agent's enrichers, in order: device first (names key on the device's IP)."""
    from egress.enrich.device import DeviceEnricher
    from egress.enrich.geoip import GeoIpEnricher
    from egress.enrich.names import NameEvidence
    from egress.enrich.oui import OuiRegistry

    return EnricherChain([
        DeviceEnricher(OuiRegistry.load(manuf)),
        NameEvidence(),
        GeoIpEnricher(country_db, asn_db, local),
    ])  # fmt: skip
