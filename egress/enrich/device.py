"""The device: the local endpoint of a flow, and its brand from the IEEE OUI registry."""

from __future__ import annotations

from egress.enrich.brands import manufacturer
from egress.enrich.oui import OuiRegistry
from egress.model import FlowRecord

__all__ = ["DeviceEnricher"]


class DeviceEnricher:
    """Sets device MAC/IP (the initiator of outbound and internal flows, the responder of
    inbound ones) and its manufacturer: the catalogue's brand, else the registry's name."""

    name = "device"

    def __init__(self, registry: OuiRegistry) -> None:
        self._registry = registry

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
            brand, organization = manufacturer(local.mac, self._registry)
            rec.device_organization = organization
            rec.device_manufacturer = brand or organization
