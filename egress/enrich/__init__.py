"""Enrichers: each fills fields of a FlowRecord; the chain runs them in order.

A new enricher is one module with a class that has `name` and `enrich(record)`
(and `observe(packet)` if it learns from packets, `reopen()` if it holds files),
added to the list in `build_chain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from egress.localnet import LocalNetworks
from egress.model import FlowRecord, Packet

__all__ = ["Enricher", "PacketObserver", "EnricherChain", "build_chain"]


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

    def reopen(self) -> None:
        for enricher in self.enrichers:
            reopen = getattr(enricher, "reopen", None)
            if reopen is not None:
                reopen()


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
