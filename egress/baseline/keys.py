"""The key of a destination (SPEC: Learned baseline): (scope, identity, transport/port).

Identity: the registered domain of the flow's best name (the public-suffix list with its
private section, through the maintained `publicsuffixlist` package, which carries the list:
nothing is fetched), else `as<N>/<CC>` from the ASN and country (`as0` or `ZZ` for the half
that is unknown), else the IP. Port: the responder's, or `ephemeral` at 49152 and above."""

from __future__ import annotations

from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from egress.model import FlowRecord

__all__ = ["identity", "port_key", "EPHEMERAL"]

EPHEMERAL = 49152
@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    """The list (ICANN and private sections), parsed on first use (~0.2 s): only baselines need it."""
    return PublicSuffixList()


@lru_cache(maxsize=65_536)
def registered_domain(name: str) -> str:
    """`eu1.vms.eyecloud.co.uk` → `eyecloud.co.uk`; `b.s3.amazonaws.com` stays itself (s3.amazonaws.com
    is a private suffix); a name that is itself a suffix (or a single label) stays itself."""
    name = name.lower().rstrip(".")
    return _psl().privatesuffix(name) or name


def identity(rec: FlowRecord) -> str:
    domain = rec.destination_domain
    if domain:
        return registered_domain(domain)
    asn, country = rec.destination_asn, rec.destination_country
    if asn is not None or country:
        return _as_identity(asn, country)
    return rec.destination.ip


@lru_cache(maxsize=65_536)
def _as_identity(asn: int | None, country: str | None) -> str:
    return f"as{asn or 0}/{country or 'ZZ'}"


_PORT_KEYS: dict[int, str] = {}


def port_key(rec: FlowRecord) -> str:
    """Made once per (transport, port), keyed by one int: this runs for every flow the baseline judges."""
    port = rec.destination.port
    made = _PORT_KEYS.get(rec.transport << 16 | port)
    if made is None:
        if len(_PORT_KEYS) >= 65_536:
            _PORT_KEYS.clear()
        made = _PORT_KEYS[rec.transport << 16 | port] = f"{rec.transport_name}/{'ephemeral' if port >= EPHEMERAL else port}" if port else rec.transport_name
    return made
