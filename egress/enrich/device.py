"""The device: the local endpoint of a flow, and its brand from the IEEE OUI registry."""

from __future__ import annotations

from collections.abc import Callable

from egress.enrich.brands import manufacturer
from egress.enrich.oui import OuiRegistry
from egress.model import FlowRecord

__all__ = ["DeviceEnricher"]


class DeviceEnricher:
    """Sets device MAC/IP (the initiator of outbound and internal flows, the responder of
    inbound ones) and its manufacturer: the catalogue's brand, else the registry's name.
    A MAC the registry cannot read is reported to `on_error(reason)` (telemetry counts it)."""

    name = "device"

    def __init__(self, registry: OuiRegistry, on_error: Callable[[str], None] | None = None) -> None:
        self._registry = registry
        self._on_error = on_error
        self.bad_macs = 0

    def enrich(self, rec: FlowRecord) -> None:
        if rec.direction in ("outbound", "internal"):
            local = rec.source
        elif rec.direction == "inbound":
            local = rec.destination
        else:
            return
        rec.device_ip = local.ip
        rec.device_mac = local.mac
        if local.mac:
            try:
                brand, organization = manufacturer(local.mac, self._registry)
            except ValueError as exc:  # a garbage MAC from a corrupt frame is not a device's
                self.bad_macs += 1
                if self._on_error is not None:
                    self._on_error(f"bad MAC: {exc}")
                return
            rec.device_organization = organization
            rec.device_manufacturer = brand or organization
