"""Flow record + policy → verdict and alerts (SPEC: Policy file). Pure: no I/O, no clock.

Order: the device's group (first match) → deny (first match alerts) → allow (first
match is silent) → `default_verdict`. A device whose brand is covered raises one
covered-vendor alert, the first time it is seen. The only state is that set of
devices already reported; its alert's `event.id` depends on the device alone, so a
consumer that restarts and reports a device again writes a recognisable duplicate.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from egress.codec import iso
from egress.model import Alert, FlowRecord
from egress.policy.schema import Destination, Group, Policy, RuleEntry

__all__ = ["Evaluator", "Verdict", "UNASSIGNED"]

UNASSIGNED = "unassigned"  # the implicit empty group of devices that match no group
_IMPLICIT = Group(name=UNASSIGNED)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy said about one flow; `verdict` is a bounded metric label."""

    group: str
    verdict: str  # denied | allowed | unexpected | not-egress
    alerts: tuple[Alert, ...]


def _event_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _destination_matches(dest: Destination, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, names: tuple[str, ...]) -> bool:
    if dest.network is not None:
        return ip is not None and ip.version == dest.network.version and ip in dest.network
    if dest.hostname is not None:
        return dest.hostname in names
    assert dest.suffix is not None
    return any(name.endswith(dest.suffix) for name in names)


def _rule_matches(rule: RuleEntry, rec: FlowRecord, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    if rule.countries and rec.destination_country not in rule.countries:
        return False
    if rule.asns and rec.destination_asn not in rule.asns:
        return False
    if rule.ports:
        transport = rec.transport_name
        if not any(p.matches(transport, rec.destination.port) for p in rule.ports):
            return False
    if rule.destinations:
        names = rec.destination_domains or ((rec.destination_domain,) if rec.destination_domain else ())
        if not any(_destination_matches(d, ip, names) for d in rule.destinations):
            return False
    return True


class Evaluator:
    """`evaluate(record)` → Verdict. One per policy; replace it to reload."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._covered = {v.casefold() for v in policy.covered_vendors}
        self._vendor_sets = [{v.casefold() for v in (g.match.vendors if g.match else ())} for g in policy.groups]
        self._names = {d.mac: d.name for d in policy.devices}
        self._reported: set[str] = set()

    def with_policy(self, policy: Policy) -> Evaluator:
        """A new evaluator for a reloaded policy that remembers the devices already reported."""
        new = Evaluator(policy)
        new._reported = self._reported
        return new

    def is_covered(self, brand: str | None) -> bool:
        return bool(brand) and brand.casefold() in self._covered  # type: ignore[union-attr]

    def group_of(self, rec: FlowRecord) -> Group:
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
        group = self.group_of(rec)
        rec.group = group.name
        alerts: list[Alert] = []
        covered = self._covered_vendor(rec, group)
        if covered is not None:
            alerts.append(covered)
        if not rec.is_egress:
            return Verdict(group.name, "not-egress", tuple(alerts))
        ip = _ip(rec.destination.ip)
        for rule in group.deny:
            if _rule_matches(rule, rec, ip):
                alerts.append(self._alert(rec, group, "deny", rule.name, rule.severity or "high"))
                return Verdict(group.name, "denied", tuple(alerts))
        for rule in group.allow:
            if _rule_matches(rule, rec, ip):
                return Verdict(group.name, "allowed", tuple(alerts))
        if self.policy.default_verdict == "allow":
            return Verdict(group.name, "allowed", tuple(alerts))
        alerts.append(self._alert(rec, group, "unexpected", "unexpected-destination", "medium"))
        return Verdict(group.name, "unexpected", tuple(alerts))

    def _device_label(self, rec: FlowRecord) -> str:
        name = self._names.get(rec.device_mac or "")
        ident = rec.device_mac or rec.device_ip or rec.source.ip
        return f"{name} ({ident})" if name else ident

    def _alert(self, rec: FlowRecord, group: Group, category: str, rule_name: str, severity: str) -> Alert:
        rule_id = f"{group.name}/{category}/{rule_name}"
        dest = rec.destination_domain or rec.destination.ip
        where = ", ".join(x for x in (rec.destination_country, f"AS{rec.destination_asn}" if rec.destination_asn else "") if x)
        port = f"{rec.transport_name}/{rec.destination.port}" if rec.destination.port else rec.transport_name
        verb = "denied egress" if category == "deny" else "unexpected egress"
        message = f"{verb}: {self._device_label(rec)} → {dest} [{rec.destination.ip}] {port}" + (f" ({where})" if where else "")
        message += f" by rule {rule_name} of group {group.name}"
        event_id = _event_id(rec.community_id, iso(rec.start), rec.device_mac or rec.device_ip or "", rule_id)
        return Alert(rec, event_id, category, rule_id, rule_name, self.policy.name, severity, message)

    def _covered_vendor(self, rec: FlowRecord, group: Group) -> Alert | None:
        brand = rec.device_manufacturer
        device = rec.device_mac or rec.device_ip
        if not brand or not device or brand.casefold() not in self._covered or device in self._reported:
            return None
        self._reported.add(device)
        rule_id = f"covered-vendor/{brand}"
        message = f"covered-vendor device present: {self._device_label(rec)} is {brand} (group {group.name})"
        return Alert(rec, _event_id("covered-vendor", device, brand), "covered-vendor", rule_id, "covered-vendor", self.policy.name, "high", message)

    @property
    def devices_reported(self) -> frozenset[str]:
        return frozenset(self._reported)


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
