"""The policy file (SPEC: Policy file): strict models, parsed values, located errors."""

from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pycountry
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from egress.baseline.settings import BaselineSection
from egress.capture.payload import PROTOCOLS
from egress.localnet import DEFAULT_LOCAL_NETWORKS, IPNetwork
from egress.mac import normalise as normalise_mac
from egress.policy.destinations import Destination, parse_destination
from egress.policy.packs import Included, load_sets
from egress.policy.vendors import vendor_problem
from egress.yamlfile import ItemError, LocatedYaml, load_located, validate

__all__ = ["Policy", "Group", "Match", "RuleEntry", "PortRange", "Destination", "load_policy", "default_policy", "COVERED_VENDORS"]

COVERED_VENDORS = ("Hikvision", "Dahua", "Hytera", "Huawei", "ZTE")
Severity = Literal["low", "medium", "high", "critical"]

_PORT = re.compile(r"^(tcp|udp|any)/(\d{1,5})(?:-(\d{1,5}))?$")
_MAX_ASN = 2**32 - 1
# ISO 3166-1 alpha-2 as pycountry carries it, and XK (Kosovo: user-assigned, but what GeoIP
# databases answer). "UK" is the commonest slip: ISO's code is GB.
_COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries) | {"XK"}
_COUNTRY_HINTS = {"UK": "GB", "EL": "GR"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class PortRange:
    transport: str  # tcp | udp | any
    low: int
    high: int

    def matches(self, transport: str, port: int) -> bool:
        return (self.transport == "any" or self.transport == transport) and self.low <= port <= self.high


def parse_port(text: str) -> PortRange:
    m = _PORT.match(str(text).strip().lower())
    if not m:
        raise ValueError(f"port {text!r} is not like tcp/443, udp/123, tcp/8000-8010 or any/53")
    low = int(m.group(2))
    high = int(m.group(3) or low)
    if not 0 <= low <= high <= 65535:
        raise ValueError(f"port range {text!r} is outside 0-65535 or reversed")
    return PortRange(m.group(1), low, high)


class RuleEntry(_Strict):
    """One allow or deny entry: every key given must hold."""

    name: str = Field(min_length=1)
    destinations: tuple[Destination, ...] = ()
    countries: tuple[str, ...] = ()
    asns: tuple[int, ...] = ()
    ports: tuple[PortRange, ...] = ()
    protocols: tuple[str, ...] = ()
    severity: Severity | None = None
    description: str = ""

    @field_validator("destinations", mode="before")
    @classmethod
    def _destinations(cls, value: object, info: ValidationInfo) -> tuple[Destination, ...]:
        """Entries, and `set:NAME` for a destination set of an included pack (`policy.packs`)."""
        sets = info.context.get("sets") if isinstance(info.context, dict) else None
        out: list[Destination] = []
        for i, v in enumerate(_as_list(value)):
            text = str(v).strip()
            if text.startswith("set:"):
                out += _resolve_set(text.removeprefix("set:"), sets, (i,))
            else:
                try:
                    out.append(parse_destination(text))
                except ValueError as exc:
                    raise ItemError((i,), str(exc)) from None
        return tuple(out)

    @field_validator("protocols", mode="before")
    @classmethod
    def _protocols(cls, value: object) -> tuple[str, ...]:
        out = []
        for i, v in enumerate(_as_list(value)):
            name = str(v).strip().lower()
            if name not in PROTOCOLS:
                hint = " (ThroughTek Kalay has no detector: its first bytes are scrambled)" if name == "kalay" else ""
                raise ItemError((i,), f"protocol {v!r} is not one egress detects ({', '.join(PROTOCOLS)}){hint}")
            out.append(name)
        return tuple(out)

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: object) -> tuple[PortRange, ...]:
        return tuple(parse_port(str(v)) for v in _as_list(value))

    @field_validator("countries", mode="before")
    @classmethod
    def _countries(cls, value: object) -> tuple[str, ...]:
        out = []
        for v in _as_list(value):
            code = str(v).strip().upper()
            if code not in _COUNTRIES:
                hint = f" (did you mean {_COUNTRY_HINTS[code]}?)" if code in _COUNTRY_HINTS else ""
                raise ValueError(f"country {v!r} is not an ISO 3166-1 alpha-2 code{hint}")
            out.append(code)
        return tuple(out)

    @field_validator("asns")
    @classmethod
    def _asns(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for asn in value:
            if not 0 <= asn <= _MAX_ASN:
                raise ValueError(f"ASN {asn} is outside 0-{_MAX_ASN}")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> RuleEntry:
        if not (self.destinations or self.countries or self.asns or self.ports or self.protocols):
            raise ValueError(f"rule {self.name!r} has no destinations, countries, asns, ports or protocols: it would match everything")
        return self


class Match(_Strict):
    vlans: tuple[int, ...] = ()
    vendors: tuple[str, ...] = ()
    subnets: tuple[IPNetwork, ...] = ()
    macs: tuple[str, ...] = ()

    @field_validator("vlans")
    @classmethod
    def _vlans(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for v in value:
            if not 1 <= v <= 4094:
                raise ValueError(f"VLAN {v} is outside 1-4094 (VLAN 0 is a priority tag, not a VLAN)")
        return value

    @field_validator("vendors")
    @classmethod
    def _vendors(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _known(value, info)

    @field_validator("subnets", mode="before")
    @classmethod
    def _subnets(cls, value: object) -> tuple[IPNetwork, ...]:
        return tuple(_network(v) for v in _as_list(value))

    @field_validator("macs", mode="before")
    @classmethod
    def _macs(cls, value: object) -> tuple[str, ...]:
        return tuple(normalise_mac(str(v)) for v in _as_list(value))


class Group(_Strict):
    name: str = Field(min_length=1)
    match: Match | None = None
    allow: tuple[RuleEntry, ...] = ()
    deny: tuple[RuleEntry, ...] = ()
    baseline: BaselineSection | None = None  # overrides of the top-level section, or `off`

    @model_validator(mode="after")
    def _unique_rules(self) -> Group:
        """A rule's name is its identity in alerts and metrics (`group/category/name`)."""
        rules = (*self.deny, *self.allow)
        at = [("deny", i) for i in range(len(self.deny))] + [("allow", i) for i in range(len(self.allow))]
        if dup := _duplicate([r.name for r in rules]):
            first, second = dup
            where = ".".join(map(str, at[first]))
            raise ItemError(at[second], f"rule name {rules[second].name!r} is used twice in group {self.name!r} (first at {where})")
        return self


class Device(_Strict):
    mac: str
    name: str = Field(min_length=1)

    @field_validator("mac", mode="before")
    @classmethod
    def _mac(cls, value: object) -> str:
        return normalise_mac(str(value))


class Policy(_Strict):
    version: Literal[1]
    local_networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in DEFAULT_LOCAL_NETWORKS)
    covered_vendors: tuple[str, ...] = COVERED_VENDORS
    devices: tuple[Device, ...] = ()
    groups: tuple[Group, ...] = ()
    default_verdict: Literal["alert", "allow"] = "alert"
    baseline: BaselineSection | None = None  # absent: no learning
    name: str = "egress-policy"  # rule.ruleset in alert records
    include: tuple[str, ...] = ()  # destination-set packs (`policy.packs`), read by `load_policy`
    _warnings: tuple[str, ...] = PrivateAttr(default=())
    _included: tuple[Included, ...] = PrivateAttr(default=())

    @property
    def included(self) -> tuple[Included, ...]:
        """The packs read for `include`, theirs too, in the order they were read."""
        return self._included

    @property
    def warnings(self) -> tuple[str, ...]:
        """What is allowed but likely a mistake, `file:line: key: message` (from `load_policy`)."""
        return self._warnings

    @field_validator("covered_vendors")
    @classmethod
    def _covered(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return _known(value, info)

    @field_validator("local_networks", mode="before")
    @classmethod
    def _local(cls, value: object) -> tuple[IPNetwork, ...]:
        return tuple(_network(v) for v in _as_list(value))

    @field_validator("groups")
    @classmethod
    def _unique_groups(cls, value: tuple[Group, ...]) -> tuple[Group, ...]:
        if dup := _duplicate([g.name for g in value]):
            first, second = dup
            raise ItemError((second,), f"group name {value[second].name!r} is used twice (first at groups.{first})")
        return value

    @field_validator("devices")
    @classmethod
    def _unique_devices(cls, value: tuple[Device, ...]) -> tuple[Device, ...]:
        if dup := _duplicate([d.mac for d in value]):
            first, second = dup
            raise ItemError((second,), f"MAC {value[second].mac} is listed twice (first at devices.{first})")
        return value


def _resolve_set(name: str, sets: dict[str, tuple[Destination, ...]] | None, at: tuple[int, ...]) -> tuple[Destination, ...]:
    """A `set:NAME` entry's destinations, from the sets the loader read (`context["sets"]`)."""
    if sets and name in sets:
        return sets[name]
    if not sets:
        raise ItemError(at, f"unknown destination set {name!r}: no pack is included (add `include: [PACK.yaml]` at the top level)")
    close = difflib.get_close_matches(name, sets, n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ItemError(at, f"unknown destination set {name!r} ({hint}the included packs have {', '.join(sorted(sets))})")


def _duplicate(keys: list[str]) -> tuple[int, int] | None:
    """The indexes of the first repeated key: where it was first, and where again."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in first:
            return first[key], i
        first[key] = i
    return None


def _known(names: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    """Vendor names are checked when the loader asks for it (`context["vendors"]`)."""
    if isinstance(info.context, dict) and info.context.get("vendors"):
        for i, name in enumerate(names):
            if problem := vendor_problem(name):
                raise ItemError((i,), problem)
    return names


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _network(value: object) -> IPNetwork:
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network like 10.0.0.0/8") from None


def load_policy(path: Path) -> Policy:
    """Load and validate; a bad policy is refused as a whole (UsageError, file:line lines)."""
    doc = load_located(path, "policy")
    sets = load_sets(doc)
    policy = validate(Policy, doc, context={"vendors": True, "sets": sets.sets})
    policy._warnings = tuple(_warnings(policy, doc))
    policy._included = sets.included
    return policy


def _warnings(policy: Policy, doc: LocatedYaml) -> list[str]:
    """An allow rule for every address (0.0.0.0/0 or ::/0) with no ports, countries or ASNs
    to narrow it silences the group's egress whole: valid, and nearly always a mistake."""
    out = []
    for g, group in enumerate(policy.groups):
        for r, rule in enumerate(group.allow):
            if not (rule.ports or rule.countries or rule.asns) and any(d.network is not None and d.network.prefixlen == 0 for d in rule.destinations):
                out.append(f"{doc.where(('groups', g, 'allow', r))}: groups.{g}.allow.{r}: rule {rule.name} allows every address on every port, "
                           f"so nothing group {group.name} sends is checked (add ports, or narrow destinations)")  # fmt: skip
    return out


def default_policy() -> Policy:
    """What egress uses with no policy file: every egress is unexpected."""
    return Policy(version=1, name="built-in-default")
