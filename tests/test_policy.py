"""Policy evaluation (pure): groups, deny → allow → default, names, ports, covered vendors."""

from __future__ import annotations

from pathlib import Path

import pytest

from egress.enrich.device import DeviceEnricher
from egress.enrich.oui import OuiRegistry
from egress.errors import UsageError
from egress.flows.table import FlowSettings, FlowTable
from egress.localnet import DEFAULT_LOCAL_NETWORKS, LocalNetworks
from egress.model import TCP, UDP, Endpoint, FlowRecord, Packet
from egress.policy.evaluate import Evaluator
from egress.policy.schema import Policy, load_policy

POLICY_YAML = """
version: 1
covered_vendors: [Hikvision]
groups:
  - name: street
    match: {vlans: [20], vendors: [Hikvision, Dahua]}
    allow:
      - {name: ntp, destinations: ["*.pool.ntp.org"], ports: [udp/123]}
      - {name: cloud, destinations: [198.51.100.0/25], ports: [tcp/8000-8010, any/53]}
    deny:
      - {name: bad-names, destinations: ["*.hik-connect.com", evil.example]}
      - {name: hostile, countries: [CN], asns: [4134]}
  - name: everything-else
    match: {subnets: [10.30.0.0/16]}
default_verdict: alert
"""


def flow(dst: str = "198.51.100.10", port: int = 443, transport: int = TCP, names: tuple[str, ...] = (), vendor: str | None = "Hikvision",
         vlans: tuple[int, ...] = (20,), country: str | None = None, asn: int | None = None, device_ip: str = "10.20.1.11",
         mac: str = "44-19-B6-12-34-56", direction: str = "outbound") -> FlowRecord:  # fmt: skip
    return FlowRecord(
        start=1.0, end=2.0, transport=transport, source=Endpoint(device_ip, 50000, mac), destination=Endpoint(dst, port),
        vlans=vlans, community_id="1:x", direction=direction, device_mac=mac, device_ip=device_ip,
        device_manufacturer=vendor, destination_domains=names, destination_domain=names[0] if names else None,
        destination_country=country, destination_asn=asn,
    )  # fmt: skip


@pytest.fixture
def ev(tmp_path: Path) -> Evaluator:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY_YAML)
    return Evaluator(load_policy(path))


def categories(ev: Evaluator, rec: FlowRecord) -> tuple[str, list[str]]:
    v = ev.evaluate(rec)
    return v.verdict, [f"{a.category}:{a.rule_name}" for a in v.alerts if a.category != "covered-vendor"]


def test_deny_comes_before_allow(ev: Evaluator) -> None:
    """A flow that an allow rule would pass is still denied by a matching deny rule."""
    assert categories(ev, flow(port=8000, names=("dev.hik-connect.com",))) == ("denied", ["deny:bad-names"])


def test_allow_then_default(ev: Evaluator) -> None:
    """An allowed flow raises nothing; one that no rule allows is unexpected."""
    assert categories(ev, flow(port=8005)) == ("allowed", [])
    assert categories(ev, flow(port=8011)) == ("unexpected", ["unexpected:unexpected-destination"])


def test_wildcard_matches_any_depth_but_not_the_apex(ev: Evaluator) -> None:
    """*.pool.ntp.org matches a.b.pool.ntp.org but not pool.ntp.org."""
    assert categories(ev, flow("203.0.113.200", 123, UDP, names=("a.b.pool.ntp.org",)))[0] == "allowed"
    assert categories(ev, flow("203.0.113.200", 123, UDP, names=("pool.ntp.org",)))[0] == "unexpected"
    assert categories(ev, flow("203.0.113.200", 123, UDP, names=("evilpool.ntp.org",)))[0] == "unexpected"


def test_any_port_entry_matches_both_transports(ev: Evaluator) -> None:
    """any/53 matches UDP and TCP."""
    assert categories(ev, flow(port=53, transport=UDP))[0] == "allowed"
    assert categories(ev, flow(port=53, transport=TCP))[0] == "allowed"


def test_keys_of_one_entry_are_anded(ev: Evaluator) -> None:
    """countries AND asns must both hold for the hostile entry."""
    assert categories(ev, flow("192.0.2.1", country="CN", asn=4134))[1] == ["deny:hostile"]
    assert categories(ev, flow("192.0.2.1", country="CN", asn=9808))[1] == ["unexpected:unexpected-destination"]


def test_group_match_keys_are_anded_and_first_group_wins(ev: Evaluator) -> None:
    """A Hikvision device on VLAN 20 is street; the same on VLAN 30 in 10.30/16 is everything-else;
    a device matching no group gets the implicit empty group (default verdict only)."""
    assert ev.evaluate(flow()).group == "street"
    assert ev.evaluate(flow(vlans=(30,), device_ip="10.30.0.4", names=("evil.example",))).group == "everything-else"
    v = ev.evaluate(flow(vlans=(), device_ip="10.40.0.4", names=("evil.example",)))
    assert (v.group, v.verdict) == ("unassigned", "unexpected")


def test_untagged_frames_match_no_vlan_list(ev: Evaluator) -> None:
    """An untagged (or VLAN 0) device never matches a vlans list."""
    assert ev.evaluate(flow(vlans=())).group != "street"


def test_covered_vendor_alerts_once_per_device_with_a_stable_id(ev: Evaluator) -> None:
    """The first flow of a covered-vendor device raises one covered-vendor alert, later ones none."""
    first = [a for a in ev.evaluate(flow(port=8005)).alerts if a.category == "covered-vendor"]
    again = [a for a in ev.evaluate(flow(port=8006)).alerts if a.category == "covered-vendor"]
    other = [a for a in ev.evaluate(flow(port=8005, mac="44-19-B6-00-00-01")).alerts if a.category == "covered-vendor"]
    assert len(first) == 1 and again == [] and len(other) == 1
    assert first[0].event_id != other[0].event_id
    fresh = [a for a in Evaluator(ev.policy).evaluate(flow(port=9999)).alerts if a.category == "covered-vendor"]
    assert fresh[0].event_id == first[0].event_id


def test_not_egress_raises_no_policy_alert(ev: Evaluator) -> None:
    """Inbound flows are not evaluated against allow/deny."""
    v = ev.evaluate(flow(names=("evil.example",), direction="inbound", vendor="Axis"))
    assert (v.verdict, v.alerts) == ("not-egress", ())


def test_default_verdict_allow(tmp_path: Path) -> None:
    """default_verdict: allow lets unmatched egress pass silently."""
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ndefault_verdict: allow\ncovered_vendors: []\n")
    assert Evaluator(load_policy(path)).evaluate(flow()).alerts == ()


def test_policy_errors_are_located_and_refused_whole(tmp_path: Path) -> None:
    """Every error carries file:line; duplicate group names and version mismatches are refused."""
    path = tmp_path / "p.yaml"
    path.write_text("version: 2\ngroups:\n  - name: a\n  - name: a\n    match: {macs: [nonsense]}\n")
    with pytest.raises(UsageError) as err:
        load_policy(path)
    text = str(err.value)
    assert f"{path}:1: version:" in text
    assert f"{path}:5: groups.1.match.macs:" in text


def _captured(src_mac: str) -> FlowRecord:
    """One outbound flow as capture makes it: tshark's MAC spelling, the flow table, the device enricher."""
    table = FlowTable(FlowSettings(), LocalNetworks(DEFAULT_LOCAL_NETWORKS))
    table.add(Packet(0.0, 74, src_mac, "00:00:5e:00:01:14", (), "10.20.1.11", "198.51.100.10", TCP, 50000, 443, 0x02))
    (rec,) = table.flush()
    DeviceEnricher(OuiRegistry(tables={})).enrich(rec)
    return rec


def test_policy_macs_in_any_spelling_match_the_captured_device(tmp_path: Path) -> None:
    """`macs:` and `devices:` entries written Cisco-dotted, bare or hyphenated match the device MAC
    the flow table wrote from tshark's colon spelling; another MAC matches neither."""
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\n"
        "devices:\n  - {mac: 4419.B612.3456, name: lamp-01}\n"
        "groups:\n  - name: by-mac\n    match: {macs: ['4419b6123456', '00-00-5E-00-00-01']}\n"
    )
    ev = Evaluator(load_policy(path))
    verdict = ev.evaluate(_captured("44:19:b6:12:34:56"))
    assert verdict.group == "by-mac"
    assert "lamp-01" in verdict.alerts[0].message
    other = ev.evaluate(_captured("44:19:b6:12:34:57"))
    assert other.group != "by-mac" and "lamp-01" not in other.alerts[0].message


@pytest.mark.parametrize("bad", ["44:19:b6:12:34", "44:19-b6:12:34:56", "4419b612345g"])
def test_a_policy_mac_that_is_no_mac_is_a_located_error(tmp_path: Path, bad: str) -> None:
    """A `devices:` MAC that is no MAC is refused with its location and the spellings accepted."""
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\ndevices:\n  - {{mac: '{bad}', name: x}}\n")
    with pytest.raises(UsageError) as err:
        load_policy(path)
    assert f"{path}:3: devices.0.mac:" in str(err.value) and "4419.b612.3456" in str(err.value)


def test_example_policy_is_valid() -> None:
    """The shipped example policy loads."""
    policy = load_policy(Path(__file__).parents[1] / "deploy" / "policy.example.yaml")
    assert isinstance(policy, Policy) and [g.name for g in policy.groups] == ["street-cctv", "building-cctv"]
