"""Rule destinations: an IP network, an exact hostname, or a `*.` wildcard."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from egress.localnet import IPNetwork

__all__ = ["Destination", "parse_destination"]

_HOST = re.compile(r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,62})?)(\.[a-z0-9_]([a-z0-9_-]{0,62})?)*\.?$")


@dataclass(frozen=True, slots=True)
class Destination:
    """An IP network, an exact hostname, or a `*.` wildcard (subdomains at any depth)."""

    network: IPNetwork | None = None
    hostname: str | None = None
    suffix: str | None = None  # ".example.com" for "*.example.com"


def parse_destination(text: str) -> Destination:
    value = str(text).strip()
    try:
        return Destination(network=ipaddress.ip_network(value, strict=False))
    except ValueError:
        pass
    host = value.lower().rstrip(".")
    if not _HOST.match(host):
        raise ValueError(f"destination {text!r} is neither an IP, a CIDR, a hostname nor a *.wildcard")
    if host.startswith("*."):
        return Destination(suffix=host[1:])
    return Destination(hostname=host)
