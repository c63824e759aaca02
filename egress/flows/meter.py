"""The agent's half of the pipeline: packets → flows → enriched flow records (and, where
an inventory is given, what it needs of each batch: `egress.inventory`)."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from egress.config import Config
from egress.enrich import EnricherChain
from egress.flows.table import FlowSettings, FlowTable, in_scope
from egress.inventory import Inventory
from egress.localnet import LocalNetworks
from egress.model import FlowRecord, Packet

__all__ = ["FlowMeter"]


class FlowMeter:
    """Feeds packets to the flow table and the name-learning enrichers; every exported
    flow leaves enriched and stamped with the site and observer."""

    def __init__(
        self, table: FlowTable, chain: EnricherChain, site: str, observer_name: str, observer_hostname: str, local: LocalNetworks,
        inventory: Inventory | None = None,
    ) -> None:  # fmt: skip
        self._table = table
        self._chain = chain
        self._local = local
        self._inventory = inventory
        self._stamp = (site, observer_name, observer_hostname)
        self.flows_exported = 0

    @classmethod
    def from_config(cls, config: Config, local: LocalNetworks, chain: EnricherChain, inventory: Inventory | None = None) -> FlowMeter:
        """The one way every command builds it, so records are stamped alike everywhere."""
        flows = config.flows
        table = FlowTable(FlowSettings(flows.idle_timeout, flows.active_timeout, flows.max_flows), local)
        hostname = socket.gethostname()
        return cls(table, chain, config.site, config.observer_name or hostname, hostname, local, inventory)

    def add_many(self, packets: Sequence[Packet]) -> list[FlowRecord]:
        """Packets in capture order. A packet that names a destination is observed just
        before it is counted, so a flow exported before it never gets its name; a LAN-only
        one (it reaches the meter for the inventory) names nothing."""
        out: list[FlowRecord] = []
        add, observe, local = self._table.add_many, self._chain.observe, self._local
        start = 0
        for index, pkt in enumerate(packets):
            if (pkt.dns is not None or pkt.server_name is not None) and in_scope(pkt, local):
                if index > start:
                    out += add(packets[start:index])
                observe(pkt)
                start = index
        out += add(packets[start:] if start else packets)
        for rec in out:
            self._finish(rec)
        self._hand_to_inventory(out, packets[-1].ts if packets else None)
        return out

    def tick(self, now: float) -> list[FlowRecord]:
        out = self._table.tick(now)
        for rec in out:
            self._finish(rec)
        self._hand_to_inventory(out, now)
        return out

    def flush(self) -> list[FlowRecord]:
        out = list(self._table.flush())
        for rec in out:
            self._finish(rec)
        self._hand_to_inventory(out, None)
        return out

    def _hand_to_inventory(self, records: list[FlowRecord], now: float | None) -> None:
        """What the table left out and opened in this batch, and its records, to the inventory."""
        table = self._table
        if self._inventory is not None:
            self._inventory.observe(table.out_of_scope, table.opened, records, now)
        table.out_of_scope.clear()
        table.opened.clear()

    def _finish(self, rec: FlowRecord) -> None:
        rec.site, rec.observer_name, rec.observer_hostname = self._stamp
        self._chain.enrich(rec)
        self.flows_exported += 1

    def open_flows(self) -> int:
        """Flows the table holds now (egress_flow_table_flows reads it from the scrape's thread)."""
        return len(self._table)

    @property
    def flows_evicted(self) -> int:
        """Flows exported early so far because the table held flows.max_flows."""
        return self._table.flows_evicted
