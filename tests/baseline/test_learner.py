"""The baseline's parts in-process: destination keys, settings resolution, the learner's
judgement in flow time, the state's JSON form and its file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egress.baseline.keys import identity, port_key, registered_domain
from egress.baseline.learner import Learner
from egress.baseline.settings import BaselineSection, BaselineSettings, VolumeSettings, resolve
from egress.baseline.state import BaselineState, StateError, key_text, parse_key
from egress.baseline.store import BaselineFile
from egress.errors import UsageError
from egress.model import TCP, UDP, Endpoint, FlowRecord
from egress.policy.evaluate import Evaluator
from egress.policy.schema import Policy

T0 = 1768471200.0  # 2026-01-15T10:00:00Z


def flow(t: float, dest: str = "198.51.100.20", port: int = 443, *, name: str | None = None, asn: int | None = None,
         cc: str | None = None, out: int = 100, mac: str = "44-19-B6-12-34-56", transport: int = TCP) -> FlowRecord:  # fmt: skip
    return FlowRecord(
        start=t, end=t + 1, transport=transport, source=Endpoint("10.20.1.11", 40000, mac, out, 1),
        destination=Endpoint(dest, port, None, 50, 1), vlans=(20,), community_id=f"1:{t}:{dest}:{port}", direction="outbound",
        device_mac=mac, device_ip="10.20.1.11", destination_domain=name, destination_domains=(name,) if name else (),
        destination_asn=asn, destination_country=cc, site="hq",
    )  # fmt: skip


@pytest.mark.parametrize(("name", "expected"), [
    ("eu1.vms.eyecloud.co.uk", "eyecloud.co.uk"),  # SPEC: ICANN suffix co.uk
    ("b.s3.amazonaws.com", "b.s3.amazonaws.com"),  # SPEC: private suffix s3.amazonaws.com
    ("dev.hik-connect.com", "hik-connect.com"),
    ("0.pool.ntp.org", "ntp.org"),
    ("Cloud.Example.NET.", "example.net"),
    ("co.uk", "co.uk"),  # a suffix itself stays itself
    ("nvr", "nvr"),
])  # fmt: skip
def test_registered_domain_follows_the_public_suffix_list(name: str, expected: str) -> None:
    """The identity of a named destination is its registered domain, private section included."""
    assert registered_domain(name) == expected


def test_identity_falls_back_to_network_then_address() -> None:
    """No name: as<N>/<CC> (as0 or ZZ for the unknown half); neither: the IP."""
    assert identity(flow(T0, name="eu1.vms.eyecloud.co.uk", asn=15169, cc="GB")) == "eyecloud.co.uk"
    assert identity(flow(T0, asn=16509, cc="US")) == "as16509/US"
    assert identity(flow(T0, asn=16509)) == "as16509/ZZ"
    assert identity(flow(T0, cc="DE")) == "as0/DE"
    assert identity(flow(T0, "203.0.113.5")) == "203.0.113.5"


def test_ports_at_and_above_49152_are_one_ephemeral_key() -> None:
    """The responder's port, or `ephemeral` from 49152 (IANA's dynamic range) up."""
    assert port_key(flow(T0, port=49151, transport=UDP)) == "udp/49151"
    assert port_key(flow(T0, port=49152, transport=UDP)) == "udp/ephemeral"
    assert port_key(flow(T0, port=65535)) == "tcp/ephemeral"


def test_group_settings_override_the_top_level_key_by_key() -> None:
    """A group's keys win over the top level's, `volume` merged key by key; `off` wins over all."""
    top = BaselineSection.model_validate({"learn_for": "1d", "volume": {"window": "5m", "min_bytes": "1MB"}})
    assert resolve(top, None) == BaselineSettings(86400.0, "group", VolumeSettings(300.0, 3.0, 1_000_000))
    group = BaselineSection.model_validate({"scope": "device", "volume": {"factor": 5}})
    assert resolve(top, group) == BaselineSettings(86400.0, "device", VolumeSettings(300.0, 5.0, 1_000_000))
    assert resolve(top, BaselineSection.model_validate(False)) is None
    assert resolve(None, None) is None
    assert resolve(BaselineSection.model_validate("off"), None) is None
    assert resolve(BaselineSection.model_validate("off"), BaselineSection.model_validate({"learn_for": "2h"})) == BaselineSettings(7200.0)


def test_learning_then_enforcing_in_flow_time() -> None:
    """Unknown keys are learned while the scope learns (flow start < its first flow + learn_for);
    after it a known key is silent, a new one is `new` once and then `held`."""
    settings = BaselineSettings(learn_for=600)
    learner = Learner(BaselineState())
    outcomes = []
    for t, dest, name in ((T0 + 5, "198.51.100.20", "eu1.vms.eyecloud.co.uk"), (T0, "198.51.100.20", "eu1.vms.eyecloud.co.uk"),
                          (T0 + 599, "203.0.113.9", None), (T0 + 600, "198.51.100.21", "eu2.vms.eyecloud.co.uk"),
                          (T0 + 700, "198.51.100.150", "uploads.example.net"), (T0 + 800, "198.51.100.151", "other.example.net")):  # fmt: skip
        rec = flow(t, dest, name=name)
        scope, learning, _ = learner.observe(rec, "street-cctv", settings)
        outcomes.append(learner.judge(rec, scope, "street-cctv", learning)[0])
    assert outcomes == ["learned", "learned", "learned", "known", "new", "held"]
    assert learner.state.scopes["street-cctv"].start == T0  # the earliest flow starts the clock
    assert learner.state.counts() == {("street-cctv", "learned"): 2, ("street-cctv", "alerted"): 1}


def test_device_scope_learns_per_device() -> None:
    """With `scope: device`, what one camera learned is new for another."""
    settings = BaselineSettings(learn_for=60, scope="device")
    learner = Learner(BaselineState())
    first = flow(T0, name="eu1.vms.eyecloud.co.uk")
    learner.judge(first, learner.observe(first, "g", settings)[0], "g", True)
    other = flow(T0 + 120, name="eu1.vms.eyecloud.co.uk", mac="3C-EF-8C-00-00-21")
    scope, learning, _ = learner.observe(other, "g", settings)
    assert scope == "3C-EF-8C-00-00-21" and learning
    assert learner.judge(other, scope, "g", learning) == ("learned", (scope, "eyecloud.co.uk", "tcp/443"))
    late = flow(T0 + 200, name="eu1.vms.eyecloud.co.uk", mac="3C-EF-8C-00-00-21")
    scope, learning, _ = learner.observe(late, "g", settings)
    assert not learning and learner.judge(late, scope, "g", learning)[0] == "known"


def test_one_volume_crossing_per_window_past_the_limit() -> None:
    """Outbound bytes per device and epoch-aligned window; after learning, the first flow that
    takes a window past max(min_bytes, factor x largest learned) crosses, once per window."""
    settings = BaselineSettings(learn_for=600, volume=VolumeSettings(window=60, factor=3, min_bytes=1000))
    learner = Learner(BaselineState())

    def add(t: float, size: int) -> object:
        rec = flow(t, out=size)
        return learner.observe(rec, "g", settings)[2]

    assert [add(T0 + s, 400) for s in (0, 10, 70)] == [None, None, None]  # learned max 800 (first window)
    assert add(T0 + 700, 2000) is None  # 2000 <= max(1000, 2400)
    crossing = add(T0 + 710, 500)
    assert crossing is not None and crossing.bytes == 2500 and crossing.limit == 2400 and crossing.learned_max == 800
    assert add(T0 + 715, 5000) is None  # the same window: once
    assert add(T0 + 790, 2401) is not None  # the next window crosses again


def test_a_learned_maximum_is_written_only_when_it_moves_the_limit() -> None:
    """While factor x the largest window stays under min_bytes the limit is min_bytes, so the
    maximum is not written out (the topic would get a record per device per flow); past it,
    a maximum is written each time it grows by more than 10%."""
    settings = BaselineSettings(learn_for=6000, volume=VolumeSettings(window=600, factor=3, min_bytes=3000))
    learner = Learner(BaselineState())
    written = []
    for i in range(12):
        learner.observe(flow(T0 + i, out=100), "g", settings)  # window up to 1,200 bytes: 3 x 1,200 > 3,000 only from 1,001
        written.append(("volume", "44-19-B6-12-34-56") in learner.state.changed)
        learner.state.changed.clear()
    assert learner.state.volumes["44-19-B6-12-34-56"].learned_max == 1200
    assert written == [False] * 10 + [True, False]  # 1,100 is the first past 1,000; 1,200 is under 1.1 x 1,100


def test_state_round_trips_and_refuses_what_is_not_a_baseline(tmp_path: Path) -> None:
    """The JSON form holds everything learned; another format or version is refused by name."""
    learner = Learner(BaselineState())
    settings = BaselineSettings(learn_for=10, volume=VolumeSettings(60, 3, 10))
    rec = flow(T0, "2001:db8::5", name=None)
    scope, learning, _ = learner.observe(rec, "g", settings)
    learner.judge(rec, scope, "g", learning)
    doc = json.loads(json.dumps(learner.state.to_doc()))
    again = BaselineState.from_doc(doc)
    assert again.to_doc() == learner.state.to_doc()
    key = next(iter(again.entries))
    assert parse_key(key_text(key)) == key == ("g", "2001:db8::5", "tcp/443")  # an IPv6 identity keeps its colons
    with pytest.raises(StateError, match="not an egress baseline"):
        BaselineState.from_doc({"format": "something-else"})
    with pytest.raises(StateError, match="version 2"):
        BaselineState.from_doc(doc | {"version": 2})
    with pytest.raises(StateError, match="malformed"):
        BaselineState.from_doc(doc | {"keys": [{"scope": "g"}]})


def test_the_file_is_replaced_whole_and_a_corrupt_one_refused(tmp_path: Path) -> None:
    """save() writes a new file and renames it over the old; a corrupt file stops the start."""
    path = tmp_path / "baseline.json"
    state = BaselineState()
    store = BaselineFile(path, state)
    store.load()  # missing: an empty baseline
    Learner(state).judge(flow(T0), "g", "g", True)
    store.save()
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]
    loaded = BaselineState()
    BaselineFile(path, loaded).load()
    assert list(loaded.entries) == [("g", "198.51.100.20", "tcp/443")]
    path.write_text("{not json")
    with pytest.raises(UsageError, match=r"baseline.json: not JSON"):
        BaselineFile(path, BaselineState()).load()
    assert path.read_text() == "{not json"  # never silently reset


def test_deny_alerts_and_allow_stays_unlearned_during_learning() -> None:
    """Order: deny → allow → baseline. Deny alerts while learning; allowed flows are not learned;
    new-destination ids depend on scope and key alone."""
    policy = Policy.model_validate({
        "version": 1, "covered_vendors": [], "baseline": {"learn_for": "10m"},
        "groups": [{"name": "g", "deny": [{"name": "cn", "countries": ["CN"]}], "allow": [{"name": "ntp", "ports": ["udp/123"]}]}],
    })  # fmt: skip
    evaluator = Evaluator(policy)
    assert evaluator.evaluate(flow(T0, "192.0.2.7", cc="CN")).alerts[0].category == "deny"
    assert evaluator.evaluate(flow(T0 + 1, "203.0.113.1", 123, transport=UDP)).verdict == "allowed"
    assert evaluator.evaluate(flow(T0 + 2, asn=15169, cc="GB")).verdict == "learning"
    assert evaluator.evaluate(flow(T0 + 700, "198.51.100.7", asn=15169, cc="GB")).verdict == "baseline"
    first = evaluator.evaluate(flow(T0 + 800, "203.0.113.1", 123, transport=UDP, cc="DE"))
    assert first.verdict == "allowed"  # allowed after learning too: never a new destination
    new = Evaluator(policy).evaluate(flow(T0, "203.0.113.8", 8443, asn=3320, cc="DE"))
    assert new.verdict == "learning"
    one, two = Evaluator(policy), Evaluator(policy)  # two runs, fresh baselines, other flows to the same key
    alerts = [one.evaluate(r).alerts for r in (flow(T0), flow(T0 + 900, "203.0.113.8", 8443, asn=3320, cc="DE"))]
    again = [two.evaluate(r).alerts for r in (flow(T0 + 5), flow(T0 + 901, "203.0.113.9", 8443, asn=3320, cc="DE"))]
    assert alerts[1][0].category == "new-destination" and alerts[1][0].event_id == again[1][0].event_id


def test_check_shows_each_groups_baseline(tmp_path: Path) -> None:
    """`egress check` prints the resolved baseline of every group (off, or its keys)."""
    from tests.conftest import run_egress

    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nbaseline: {learn_for: 1d, volume: {min_bytes: 1MB}}\ngroups:\n  - {name: a, baseline: off}\n"
                      "  - {name: b, baseline: {scope: device, volume: {factor: 5}}}\n")
    proc = run_egress("check", "--policy", policy)
    assert proc.returncode == 0, proc.stderr
    assert "  group a: baseline off\n" in proc.stdout
    assert "  group b: baseline learn_for 1d, scope device, volume window 10m factor 5 min_bytes 1,000,000\n" in proc.stdout
    assert "  devices in no group: baseline learn_for 1d, scope group, volume window 10m factor 3 min_bytes 1,000,000\n" in proc.stdout
