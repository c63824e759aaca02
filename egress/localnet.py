"""Which addresses are local: the policy's `local_networks` plus what can never be routed out."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

__all__ = ["LocalNetworks", "DEFAULT_LOCAL_NETWORKS", "NEVER_EGRESS", "IPNetwork"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The SPEC default: private ranges, CGNAT and IPv6 unique-local addresses.
DEFAULT_LOCAL_NETWORKS: Final[tuple[str, ...]] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
)  # fmt: skip
# Loopback, link-local, multicast and broadcast never leave the site, whatever the policy says.
NEVER_EGRESS: Final[tuple[str, ...]] = (
    "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32", "0.0.0.0/32",
    "::1/128", "::/128", "fe80::/10", "ff00::/8",
)  # fmt: skip

_CACHE_MAX = 65_536


class LocalNetworks:
    """Membership test for local addresses, cached because it runs for every packet."""

    def __init__(self, networks: Iterable[IPNetwork | str]) -> None:
        nets = [ipaddress.ip_network(n) for n in networks]
        nets += [ipaddress.ip_network(n) for n in NEVER_EGRESS]
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.collapse_addresses([n for n in nets if n.version == 4])) + tuple(
            ipaddress.collapse_addresses([n for n in nets if n.version == 6])
        )
        self._v4 = [(int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4]
        self._v6 = [(int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 6]
        self._cache: dict[str, bool] = {}

    def __contains__(self, ip: str) -> bool:
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        value = int(addr)
        nets = self._v4 if addr.version == 4 else self._v6
        result = any(value & mask == net for net, mask in nets)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[ip] = result
        return result
