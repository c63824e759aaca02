"""Destination-set packs (egress.policy.packs): deploy/policies/camera-clouds.yaml, each of its
sets on a capture that shows it, and a policy's `include:` and `set:NAME` as strict and
located as the rest of the policy (one file:line error, exit 2)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import yaml

from egress.errors import UsageError
from egress.policy.schema import load_policy
from tests.conftest import PCAPS, POLICY, REAL, ROOT, ndjson, run_egress

PACK = ROOT / "deploy" / "policies" / "camera-clouds.yaml"
sys.path.insert(0, str(PCAPS))
from generate_clouds import CLOUDS  # noqa: E402

GENERATED = PCAPS / "camera-clouds.pcap"
#: set → (capture, the destinations its deny rule must catch there, and only those)
SHOWN_BY: dict[str, tuple[Path, set[str]]] = {
    **{label: (GENERATED, {address}) for label, _, address, _, _ in CLOUDS},
    # what the xiaobai Y2 resolved (SOURCES.md): business.smartcamera.api.io.mi.com (SNI too), xiaomi8.p2psy2/p2psy3.io.mi.com
    "xiaomi-imilab": (REAL / "xiaobai-y2-camera-setup-cn-cloud.pcap", {"110.43.87.34", "110.43.39.65", "42.157.163.171"}),
    # signal.mydlink.com (TLS without SNI to AWS) and ntp1.dlink.com
    "dlink-mydlink": (REAL / "dlink-dcs935l-camera-setup-mydlink.pcap", {"52.8.178.58", "54.194.162.61", "54.229.64.81", "54.86.11.193"}),
    "axis-o3c": (PCAPS / "building-cctv-ipv6.pcapng", {"2001:db8:2::443"}),  # prod.adm.connect.axis.com over IPv6
}
SETS = list(yaml.safe_load(PACK.read_text())["sets"])


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@functools.cache
def _denied_by_set(capture: Path, policy_dir: Path) -> dict[str, set[str]]:
    """rule (one deny rule per set, in the pack's order) → the destinations it caught."""
    rules = "".join(f"      - {{name: {name}, destinations: [set:{name}]}}\n" for name in SETS)
    policy = _write(policy_dir / "sets.yaml", f"version: 1\ninclude: [{PACK}]\ngroups:\n  - name: all\n    deny:\n{rules}default_verdict: allow\n")
    proc = run_egress("analyze", capture, "--policy", policy, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out: dict[str, set[str]] = {}
    for alert in ndjson(proc.stdout):
        out.setdefault(alert["rule"]["name"], set()).add(alert["destination"]["ip"])
    return out


def test_every_set_of_the_pack_has_a_capture() -> None:
    assert sorted(SHOWN_BY) == sorted(SETS)


@pytest.mark.parametrize("name", SETS)
def test_each_set_catches_what_its_capture_shows(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    capture, expected = SHOWN_BY[name]
    if not capture.exists():
        pytest.skip(f"{capture} is not here (../shared absent)")
    denied = _denied_by_set(capture, tmp_path_factory.getbasetemp())
    assert denied.get(name) == expected
    if capture == GENERATED:  # one set a destination: no set catches another's
        assert denied == {label: {address} for label, _, address, _, _ in CLOUDS}


def test_the_example_policy_uses_the_pack_and_check_says_what_it_included() -> None:
    policy = load_policy(POLICY)
    [pack] = policy.included
    assert pack.path == PACK and pack.version == yaml.safe_load(PACK.read_text())["version"] and pack.sets == tuple(SETS)
    street = next(g for g in policy.groups if g.name == "street-cctv")
    cloud = next(r for r in street.deny if r.name == "vendor-p2p-cloud")
    assert {d.suffix for d in cloud.destinations} >= {".hik-connect.com", ".ezvizlife.com", ".easy4ipcloud.com", ".imoulife.com"}
    assert next(r for r in street.deny if r.name == "camera-p2p").protocols == ("cs2-p2p", "dahua-p2p", "stun")
    proc = run_egress("check", "--policy", POLICY)
    assert proc.returncode == 0, proc.stderr
    assert f"  included {PACK} (version {pack.version}): {len(SETS)} sets: {', '.join(SETS)}" in proc.stdout.splitlines()


def test_a_pack_reached_twice_is_read_once(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", 'version: "1"\nsets:\n  lab: ["*.lab.example"]\n')
    _write(tmp_path / "a.yaml", 'version: "1"\ninclude: [base.yaml]\nsets:\n  a: [a.example]\n')
    policy = load_policy(_write(tmp_path / "policy.yaml", "version: 1\ninclude: [a.yaml, base.yaml]\n"))
    assert [(p.path.name, p.sets) for p in policy.included] == [("a.yaml", ("a",)), ("base.yaml", ("lab",))]


RULE = "groups:\n  - name: cams\n    deny:\n      - {name: cloud, destinations: [198.51.100.1, set:hik-conect]}\n"
# (files written into tmp_path besides policy.yaml, policy.yaml's body after `version: 1`, the error's file and its text after the line)
REFUSALS = [
    pytest.param({}, f"include: [{PACK}]\n{RULE}", "policy.yaml:6",
                 "groups.0.deny.0.destinations.1: unknown destination set 'hik-conect' (did you mean hik-connect? the included packs have "
                 + ", ".join(sorted(SETS)) + ")", id="unknown-set"),
    pytest.param({}, RULE, "policy.yaml:5",
                 "groups.0.deny.0.destinations.1: unknown destination set 'hik-conect': no pack is included (add `include: [PACK.yaml]` at the top level)",
                 id="set-without-include"),
    pytest.param({}, "include:\n  - packs/nope.yaml\n", "policy.yaml:3", "include.0: pack file packs/nope.yaml not found (looked for {tmp}/packs/nope.yaml)",
                 id="missing-include"),
    pytest.param({"a.yaml": 'version: "1"\ninclude: [b.yaml]\nsets:\n  a: [a.example]\n', "b.yaml": 'version: "1"\nsets:\n  b: [b.example]\ninclude:\n  - a.yaml\n'},
                 "include: [a.yaml]\n", "b.yaml:5", "include.0: a.yaml is already being included (a cycle: a.yaml → b.yaml → a.yaml)", id="cycle"),
    pytest.param({"a.yaml": 'version: "1"\ninclude: [policy.yaml]\nsets:\n  a: [a.example]\n'}, "include: [a.yaml]\n", "a.yaml:2",
                 "include.0: policy.yaml is already being included (a cycle: policy.yaml → a.yaml → policy.yaml)", id="cycle-to-the-policy"),
    pytest.param({"p.yaml": 'version: "1"\nsets:\n  hik:\n    - "*.hik-connect.com"\n    - "not a host"\n'}, "include: [p.yaml]\n", "p.yaml:5",
                 "sets.hik.1: destination 'not a host' is neither an IP, a CIDR, a hostname nor a *.wildcard", id="bad-entry-in-pack"),
    pytest.param({"p.yaml": 'version: "1"\nsets:\n  Hik_Connect: ["*.hik-connect.com"]\n'}, "include: [p.yaml]\n", "p.yaml:3",
                 "sets.Hik_Connect: set name 'Hik_Connect' is not lower-case letters, digits and hyphens", id="bad-set-name"),
    pytest.param({"p.yaml": "sets:\n  hik: ['*.hik-connect.com']\n"}, "include: [p.yaml]\n", "p.yaml:1", "version: Field required", id="pack-without-version"),
    pytest.param({"p.yaml": 'version: "1"\nsets:\n  hik: ["*.hik-connect.com"]\n', "q.yaml": 'version: "1"\nsets:\n  ntp: [pool.ntp.org]\n  hik: [hik.example]\n'},
                 "include: [p.yaml, q.yaml]\n", "q.yaml:4", "sets.hik: set hik is defined twice (first at {tmp}/p.yaml:3)", id="set-twice"),
    pytest.param({}, "groups:\n  - name: cams\n    deny:\n      - name: p2p\n        protocols: [cs2-p2p, kalay]\n", "policy.yaml:6",
                 "groups.0.deny.0.protocols.1: protocol 'kalay' is not one egress detects (cs2-p2p, dahua-p2p, stun) "
                 "(ThroughTek Kalay has no detector: its first bytes are scrambled)", id="unknown-protocol"),
]


@pytest.mark.parametrize(("files", "body", "where", "message"), REFUSALS)
def test_a_bad_include_set_or_protocol_is_one_located_error(files: dict[str, str], body: str, where: str, message: str, tmp_path: Path) -> None:
    tmp = tmp_path.resolve()
    for name, text in files.items():
        _write(tmp / name, text)
    policy = _write(tmp / "policy.yaml", "version: 1\n" + body)
    with pytest.raises(UsageError) as err:
        load_policy(policy)
    assert str(err.value) == f"{tmp}/{where}: {message.format(tmp=tmp)}"
    proc = run_egress("check", "--policy", policy)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("egress: ")] == [f"egress: {tmp}/{where}: {message.format(tmp=tmp)}"]
