"""Destination hostnames, learned per device from what the capture showed.

A DNS answer the device received names each answer address with every name of the
chain (the name asked and each CNAME target); a TLS SNI or HTTP Host the device sent
names that connection's destination address. An IP-literal Host names nothing.
Evidence is keyed by (device IP, destination IP) and bounded: the least recently
used pairs are forgotten first.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from egress.model import FlowRecord, Packet

__all__ = ["NameEvidence"]

_MAX_NAME = 255  # longer is not a DNS name; a hostile one is cut, never stored whole
_MAX_NAMES_PER_PAIR = 8


def _clean(name: str) -> str | None:
    name = name.strip().lower()
    if name.startswith("["):  # [2001:db8::1]:443
        return None
    host, sep, port = name.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        name = host
    name = name.rstrip(".")  # after the port: `example.com.:8443` is example.com
    if not name:
        return None
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    return name[:_MAX_NAME]


class NameEvidence:
    """`observe` packets carrying names; `enrich` sets a flow's destination domains."""

    name = "names"

    def __init__(self, max_pairs: int = 200_000) -> None:
        self._max = max_pairs
        self._names: OrderedDict[tuple[str, str], list[str]] = OrderedDict()

    def _learn(self, device: str, address: str, name: str, first: bool) -> None:
        key = (device, address)
        names = self._names.get(key)
        if names is None:
            names = self._names[key] = []
            if len(self._names) > self._max:
                self._names.popitem(last=False)
        else:
            self._names.move_to_end(key)
        if name in names:
            if first and names[0] != name:
                names.remove(name)
                names.insert(0, name)
            return
        if first:
            names.insert(0, name)
        else:
            names.append(name)
        del names[_MAX_NAMES_PER_PAIR:]

    def observe(self, pkt: Packet) -> None:
        if pkt.dns is not None:
            names = [n for n in (_clean(x) for x in pkt.dns.names) if n]
            for address in pkt.dns.addresses:
                for name in names:
                    self._learn(pkt.dst_ip, address, name, first=False)
        if pkt.server_name:
            named = _clean(pkt.server_name)
            if named:
                self._learn(pkt.src_ip, pkt.dst_ip, named, first=True)

    def enrich(self, rec: FlowRecord) -> None:
        device = rec.device_ip or (rec.source.ip if rec.direction in ("outbound", "internal") else rec.destination.ip)
        remote = rec.destination.ip if device == rec.source.ip else rec.source.ip
        names = self._names.get((device, remote))
        if names:
            rec.destination_domains = tuple(names)
            rec.destination_domain = names[0]
