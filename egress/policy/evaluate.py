"""Flow record + policy → verdict and alerts (SPEC: Policy file). Pure: no I/O, no clock.

Order: the device's group (first match) → deny (first match alerts) → allow (first
match is silent) → the learned baseline, where the group has one (`egress.baseline`:
learned silently while its scope learns, then a new key raises one new-destination
alert) → `default_verdict`. Where the group watches volume, every egress flow also
adds to its device's window (one volume alert per window past the limit). A device
whose brand is covered raises one covered-vendor alert, the first time it is seen: in
its first flow, or in its inventory record where it has no flow of its own
(`judge_device`; the same `event.id` either way).
State: the devices already reported, and the baseline's; every alert's `event.id`
is deterministic (flow and rule; device; scope and key; device and window), so a
consumer that restarts and raises one again writes a recognisable duplicate.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from egress.baseline.learner import Crossing, Learner
from egress.baseline.settings import BaselineSettings, resolve
from egress.baseline.state import BaselineState, Key
from egress.codec import iso
from egress.model import DEVICE, Alert, DeviceRecord, FlowRecord, Verdict
from egress.policy.schema import Group, Policy, RuleEntry

__all__ = ["Evaluator", "Verdict", "UNASSIGNED"]

UNASSIGNED = "unassigned"  # the implicit empty group of devices that match no group
_IMPLICIT = Group(name=UNASSIGNED)
#: the learner's outcome → the verdict label (egress_flows_evaluated_total{verdict})
_BASELINE_VERDICTS = {"learned": "learning", "known": "baseline", "held": "new-destination", "new": "new-destination"}


#: rule.description of the built-in rules
_MEANING = {
    "unexpected": "egress that no deny or allow rule of the group matched, under default_verdict: alert",
    "new-destination": "a destination (registered domain, AS and country, or address, and port) not in the learned baseline of its scope",
    "volume": "a device's outbound bytes in one window past factor x the largest window it sent while learning (and past min_bytes)",
    "covered-vendor": "a device of a vendor in covered_vendors is on the network",
}


def _event_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


class _Rule:
    """A rule entry compiled for speed: sets, integer networks, a suffix tuple."""

    __slots__ = ("name", "id", "description", "severity", "countries", "asns", "ports", "protocols", "nets", "hosts", "suffixes", "has_destinations")

    def __init__(self, rule: RuleEntry, rule_id: str) -> None:
        self.name = rule.name
        self.id = rule_id  # GROUP/deny|allow/NAME, made once
        self.description = rule.description
        self.severity = rule.severity
        self.countries = frozenset(rule.countries) or None
        self.asns = frozenset(rule.asns) or None
        self.ports = tuple((p.transport, p.low, p.high) for p in rule.ports) or None
        self.protocols = frozenset(rule.protocols) or None
        self.nets = tuple((d.network.version, int(d.network.network_address), int(d.network.netmask)) for d in rule.destinations if d.network is not None)
        self.hosts = frozenset(d.hostname for d in rule.destinations if d.hostname is not None)
        self.suffixes = tuple(d.suffix for d in rule.destinations if d.suffix is not None)
        self.has_destinations = bool(rule.destinations)

    def matches(self, rec: FlowRecord, ip: tuple[int, int] | None) -> bool:
        if self.protocols is not None and rec.protocol not in self.protocols:
            return False
        if self.countries is not None and rec.destination_country not in self.countries:
            return False
        if self.asns is not None and rec.destination_asn not in self.asns:
            return False
        if self.ports is not None:
            transport, port = rec.transport_name, rec.destination.port
            for proto, low, high in self.ports:
                if (proto == "any" or proto == transport) and low <= port <= high:
                    break
            else:
                return False
        if self.has_destinations:
            return self._destination(rec, ip)
        return True

    def _destination(self, rec: FlowRecord, ip: tuple[int, int] | None) -> bool:
        if ip is not None:
            version, value = ip
            for net_version, net, mask in self.nets:
                if version == net_version and value & mask == net:
                    return True
        names = rec.destination_domains or ((rec.destination_domain,) if rec.destination_domain else ())
        for name in names:
            if name in self.hosts or (self.suffixes and name.endswith(self.suffixes)):
                return True
        return False


@dataclass(frozen=True, slots=True)
class _CompiledGroup:
    group: Group
    deny: tuple[_Rule, ...]
    allow: tuple[_Rule, ...]
    baseline: BaselineSettings | None
    baseline_rule: str  # the rule.id of what the baseline decided


class Evaluator:
    """`evaluate(record)` → Verdict. One per policy; replace it to reload."""

    def __init__(self, policy: Policy, baseline: BaselineState | None = None, *, learn_everything: bool = False) -> None:
        """`baseline`: the learned state to judge with and learn into (a fresh one if None);
        `learn_everything`: every flow is learned (`egress baseline learn`)."""
        self.policy = policy
        self.learner = Learner(baseline if baseline is not None else BaselineState(), learn_everything)
        self._covered = {v.casefold() for v in policy.covered_vendors}
        self._covered_brands: dict[str | None, bool] = {}
        self._vendor_sets = [{v.casefold() for v in (g.match.vendors if g.match else ())} for g in policy.groups]
        self._names = {d.mac: d.name for d in policy.devices}
        self._reported: set[str] = set()
        self._groups: dict[tuple[object, ...], _CompiledGroup] = {}
        self._compiled = {
            g.name: _CompiledGroup(g, tuple(_Rule(r, f"{g.name}/deny/{r.name}") for r in g.deny), tuple(_Rule(r, f"{g.name}/allow/{r.name}") for r in g.allow),
                                   resolve(policy.baseline, g.baseline), f"{g.name}/baseline")  # fmt: skip
            for g in (*policy.groups, _IMPLICIT)
        }

    def with_policy(self, policy: Policy) -> Evaluator:
        """A new evaluator for a reloaded policy that remembers the devices already reported
        and what the baseline learned."""
        new = Evaluator(policy, self.learner.state)
        new._reported = self._reported
        return new

    def baseline_of(self, group: str) -> BaselineSettings | None:
        compiled = self._compiled.get(group)
        return compiled.baseline if compiled is not None else None

    def is_covered(self, brand: str | None) -> bool:
        hit = self._covered_brands.get(brand)
        if hit is None:
            if len(self._covered_brands) >= 4096:  # brands and registry names: a bounded set in practice
                self._covered_brands.clear()
            hit = self._covered_brands[brand] = bool(brand and brand.casefold() in self._covered)
        return hit

    def group_of(self, rec: FlowRecord) -> Group:
        """The first group whose match holds."""
        return self._group(rec).group

    def _group(self, rec: FlowRecord) -> _CompiledGroup:
        key = (rec.device_ip, rec.device_mac, rec.device_manufacturer, rec.vlans)
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= 65_536:  # remembered per device identity, bounded
                self._groups.clear()
            group = self._groups[key] = self._compiled[self._find_group(rec).name]
        return group

    def _find_group(self, rec: FlowRecord) -> Group:
        device_ip = _ip(rec.device_ip)
        for group, vendors in zip(self.policy.groups, self._vendor_sets, strict=True):
            m = group.match
            if m is None:
                return group
            if m.vlans and not any(v in m.vlans for v in rec.vlans):
                continue
            if vendors and (rec.device_manufacturer or "").casefold() not in vendors:
                continue
            if m.subnets and not (device_ip is not None and any(device_ip.version == n.version and device_ip in n for n in m.subnets)):
                continue
            if m.macs and rec.device_mac not in m.macs:
                continue
            return group
        return _IMPLICIT

    def evaluate(self, rec: FlowRecord) -> Verdict:
        compiled = self._group(rec)
        group = compiled.group
        alerts: list[Alert] = []
        covered = self._covered_brands.get(rec.device_manufacturer)  # is_covered's cache, looked up here: this runs per flow
        if covered is None:
            covered = self.is_covered(rec.device_manufacturer)
        if covered:
            alert = self._covered_vendor(rec, group)
            if alert is not None:
                alerts.append(alert)
        if rec.direction != "outbound":
            return Verdict(rec, group.name, "not-egress", tuple(alerts), covered)
        settings = compiled.baseline
        scope, learning = "", False
        if settings is not None:
            scope, learning, crossing = self.learner.observe(rec, group.name, settings)
            if crossing is not None:
                alerts.append(self._volume_alert(rec, group, crossing))
        ip = _ip_int(rec.destination.ip)
        for rule in compiled.deny:
            if rule.matches(rec, ip):
                alerts.append(self._alert(rec, group, "deny", rule.name, rule.severity or "high", rule.description))
                return Verdict(rec, group.name, "denied", tuple(alerts), covered, rule.id)
        for rule in compiled.allow:
            if rule.matches(rec, ip):
                return Verdict(rec, group.name, "allowed", tuple(alerts), covered, rule.id)
        if settings is not None:
            outcome, key = self.learner.judge(rec, scope, group.name, learning)
            if outcome == "new":
                alerts.append(self._new_destination(rec, group, key, settings))
            return Verdict(rec, group.name, _BASELINE_VERDICTS[outcome], tuple(alerts), covered, compiled.baseline_rule)
        if self.policy.default_verdict == "allow":
            return Verdict(rec, group.name, "allowed", tuple(alerts), covered, "default_verdict")
        alerts.append(self._alert(rec, group, "unexpected", "unexpected-destination", "medium", _MEANING["unexpected"]))
        return Verdict(rec, group.name, "unexpected", tuple(alerts), covered, "default_verdict")

    def describe(self, device: DeviceRecord) -> tuple[str, bool, str]:
        """(group, covered, inventory name) of an inventory record, as its flows would be judged."""
        return self._group(device.as_flow()).group.name, self.is_covered(device.manufacturer), self._names.get(device.mac, "")

    def judge_device(self, device: DeviceRecord) -> Verdict:
        """An inventory record: its group and coverage, and the covered-vendor alert of a
        `lan_only` device not yet reported (a device with flows gets it from its first flow)."""
        rec = device.as_flow()
        group = self._group(rec).group
        covered = self.is_covered(device.manufacturer)
        alert = self._covered_vendor(rec, group) if covered and device.lan_only else None
        return Verdict(rec, group.name, DEVICE, (alert,) if alert is not None else (), covered)

    def _name(self, rec: FlowRecord) -> str:
        return self._names.get(rec.device_mac or "", "")

    def _device_label(self, rec: FlowRecord) -> str:
        name = self._names.get(rec.device_mac or "")
        ident = rec.device or rec.source.ip
        return f"{name} ({ident})" if name else ident

    def _alert(self, rec: FlowRecord, group: Group, category: str, rule_name: str, severity: str, description: str) -> Alert:
        rule_id = f"{group.name}/{category}/{rule_name}"
        where = ", ".join(x for x in (rec.destination_country, f"AS{rec.destination_asn}" if rec.destination_asn else "") if x)
        port = f"{rec.transport_name}/{rec.destination.port}" if rec.destination.port else rec.transport_name
        if rec.protocol:
            port += f" {rec.protocol}"
        verb = "denied egress" if category == "deny" else "unexpected egress"
        message = f"{verb}: {self._device_label(rec)} → {_destination(rec.destination_domain, rec.destination.ip)} {port}" + (f" ({where})" if where else "")
        message += f" by rule {rule_name} of group {group.name}"
        event_id = _event_id(rec.community_id, iso(rec.start), rec.device or "", rule_id)
        return Alert(rec, group.name, event_id, category, rule_id, rule_name, self.policy.name, severity, message, description, self._name(rec))

    def _new_destination(self, rec: FlowRecord, group: Group, key: Key, settings: BaselineSettings) -> Alert:
        scope, identity, port = key
        whose = f"group {group.name}" if settings.scope == "group" else f"device {scope} (group {group.name})"
        where = ", ".join(x for x in (rec.destination_country, f"AS{rec.destination_asn}" if rec.destination_asn else "") if x)
        address = f" [{rec.destination.ip}]" if identity != rec.destination.ip else ""
        message = (f"new destination: {self._device_label(rec)} → {identity} {port}{address}" + (f" ({where})" if where else "")
                   + f", not in the learned baseline of {whose}")  # fmt: skip
        rule_id = f"{group.name}/new-destination/new-destination"
        event_id = _event_id("new-destination", scope, identity, port)
        return Alert(rec, group.name, event_id, "new-destination", rule_id, "new-destination", self.policy.name, "medium", message, _MEANING["new-destination"], self._name(rec))

    def _volume_alert(self, rec: FlowRecord, group: Group, crossing: Crossing) -> Alert:
        device = rec.device or ""
        message = (f"volume: {self._device_label(rec)} sent {crossing.bytes:,} bytes out in the {crossing.window:g} s window from "
                   f"{iso(crossing.window_start)}, past its limit of {crossing.limit:,} bytes "
                   f"(largest learned window {crossing.learned_max:,} bytes; group {group.name})")  # fmt: skip
        event_id = _event_id("volume", device, iso(crossing.window_start))
        return Alert(rec, group.name, event_id, "volume", f"{group.name}/volume/volume", "volume", self.policy.name, "high", message, _MEANING["volume"], self._name(rec))

    def _covered_vendor(self, rec: FlowRecord, group: Group) -> Alert | None:
        brand = rec.device_manufacturer
        device = rec.device
        if not brand or not device or device in self._reported:
            return None
        self._reported.add(device)
        rule_id = f"covered-vendor/{brand}"
        message = f"covered-vendor device present: {self._device_label(rec)} is {brand} (group {group.name})"
        return Alert(rec, group.name, _event_id("covered-vendor", device, brand), "covered-vendor", rule_id, "covered-vendor", self.policy.name, "high", message,
                     _MEANING["covered-vendor"], self._name(rec))  # fmt: skip

    @property
    def devices_reported(self) -> frozenset[str]:
        return frozenset(self._reported)


def _destination(name: str | None, ip: str) -> str:
    """`name [ip]`, or the IP alone where there is no name (or the name is the IP)."""
    return f"{name} [{ip}]" if name and name != ip else ip


@lru_cache(maxsize=65_536)
def _ip_int(text: str) -> tuple[int, int] | None:
    ip = _ip(text)
    return None if ip is None else (ip.version, int(ip))


@lru_cache(maxsize=65_536)
def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parsed once per address: parsing costs more than the whole rest of an evaluation."""
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
