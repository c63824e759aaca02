"""The learned baseline (SPEC: Learned baseline) on the committed captures of
pcaps/generate_baseline.py: learning, then new-destination alerts; a camera uploading
far more than it learned (volume); the `egress baseline` commands round the file.

Times are minutes after 2026-01-15T10:00:00Z. baseline-learn-enforce.pcap, group
street-cctv (VLAN 20), policy `learn_for: 15m`, H = Hikvision 10.20.1.11, D = Dahua 10.20.1.12:

| min | flow (client port) | key | outcome |
|---|---|---|---|
| 0–12 | H → eu1.vms.eyecloud.co.uk 198.51.100.40 tcp/443 ×5 (50101–50105) | eyecloud.co.uk:tcp/443 | learned |
| 0.5 | H:40500 → 203.0.113.140 udp/51000 | as3320/DE:udp/ephemeral | learned |
| 1, 38 | H → 0.pool.ntp.org udp/123 | — | allowed (ntp): not learned |
| 2 | D → eu.hik-connect.com 198.51.100.90 tcp/443 (50201) | — | deny vendor-p2p-cloud, while learning |
| 20 | H → eu2.vms.eyecloud.co.uk 198.51.100.41 (50106) | eyecloud.co.uk:tcp/443 | known |
| 21 | H:40500 → 203.0.113.140 udp/52000 | as3320/DE:udp/ephemeral | known |
| 22, 25 | H → uploads.example.net 198.51.100.60 (50110, 50111) | example.net:tcp/443 | new (50110), then held |
| 27 | H → 198.51.100.170 tcp/8443 (50112), no name | as16509/US:tcp/8443 | new |
| 30 | D → b.s3.amazonaws.com 198.51.100.180 (50202) | b.s3.amazonaws.com:tcp/443 | new |
| 33 | D → eu1.vms.eyecloud.co.uk (50203) | eyecloud.co.uk:tcp/443 | known (scope group); new with scope device |
| 35 | H → eu1.vms.eyecloud.co.uk (50113) | eyecloud.co.uk:tcp/443 | known |
"""

from __future__ import annotations

import json
import struct
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import PCAPS, ndjson, run_egress

LEARN_ENFORCE = PCAPS / "baseline-learn-enforce.pcap"
UPLOAD = PCAPS / "baseline-upload.pcap"
T0 = 1768471200  # 2026-01-15T10:00:00Z, the first frame of both captures
H, D = "44-19-B6-12-34-56", "3C-EF-8C-00-00-21"
GROUP = "street-cctv"

POLICY: dict[str, Any] = {
    "version": 1,
    "local_networks": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
    "covered_vendors": [],
    "devices": [{"mac": "44:19:b6:12:34:56", "name": "vauxhall-lamp-01"}],
    "groups": [{
        "name": GROUP,
        "match": {"vlans": [20]},
        "allow": [{"name": "ntp", "destinations": ["pool.ntp.org", "*.pool.ntp.org"], "ports": ["udp/123"]}],
        "deny": [{"name": "vendor-p2p-cloud", "destinations": ["*.hik-connect.com"], "severity": "high"}],
    }],
    "baseline": {"learn_for": "15m"},
    "default_verdict": "alert",
}  # fmt: skip
UPLOAD_POLICY: dict[str, Any] = {
    "version": 1,
    "covered_vendors": [],
    "groups": [{"name": GROUP, "match": {"vlans": [20]}}],
    "baseline": {"learn_for": "10m", "volume": {"window": "1m", "factor": 3, "min_bytes": "100KB"}},
    "default_verdict": "alert",
}

DENY = (D, 50201, "198.51.100.90", 443, "deny", "vendor-p2p-cloud")
NEW = {  # (device, source port, destination ip, port, category, rule name) in scope group
    (H, 50110, "198.51.100.60", 443, "new-destination", "new-destination"),  # example.net:tcp/443
    (H, 50112, "198.51.100.170", 8443, "new-destination", "new-destination"),  # as16509/US:tcp/8443
    (D, 50202, "198.51.100.180", 443, "new-destination", "new-destination"),  # b.s3.amazonaws.com:tcp/443
}
D_EYECLOUD = (D, 50203, "198.51.100.40", 443, "new-destination", "new-destination")
#: (scope, identity, port) → (state, flows) after the whole capture in scope group
KEYS = {
    (GROUP, "eyecloud.co.uk", "tcp/443"): ("learned", 8),  # eu1.vms…, eu2.vms… (and the CNAME target)
    (GROUP, "as3320/DE", "udp/ephemeral"): ("learned", 2),  # ports 51000 and 52000
    (GROUP, "example.net", "tcp/443"): ("alerted", 2),
    (GROUP, "as16509/US", "tcp/8443"): ("alerted", 1),
    (GROUP, "b.s3.amazonaws.com", "tcp/443"): ("alerted", 1),  # s3.amazonaws.com is a private suffix
}
SPLIT = 15 * 60  # the learning part is before minute 15, the enforcing part after


def _key(a: dict) -> tuple[str, int, str, int, str, str]:
    return (a["device"]["id"], a["source"]["port"], a["destination"]["ip"], a["destination"].get("port", 0), a["rule"]["category"], a["rule"]["name"])


def _write_policy(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _geo(geoip: dict[str, Path]) -> tuple[str | Path, ...]:
    return ("--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])


def _analyze(captures: Path | list[Path], policy: Path, baseline: Path, geoip: dict[str, Path], *extra: str | Path) -> list[dict]:
    files = captures if isinstance(captures, list) else [captures]
    proc = run_egress("analyze", *files, "--policy", policy, *_geo(geoip), "--baseline", baseline, "--format", "json", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return ndjson(proc.stdout)


def _baseline(verb: str, baseline: Path, *args: str | Path) -> str:
    proc = run_egress("baseline", verb, *args, "--baseline", baseline)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _keys(baseline: Path) -> dict[tuple[str, str, str], tuple[str, int]]:
    return {(e["scope"], e["identity"], e["port"]): (e["state"], e["flows"]) for e in json.loads(_baseline("show", baseline, "--format", "json"))}


def _split(capture: Path, at_s: float, before: Path, after: Path) -> tuple[Path, Path]:
    """A classic pcap cut in two at T0 + at_s (frames before it, and from it on)."""
    data = capture.read_bytes()
    header, parts = data[:24], [bytearray(), bytearray()]
    offset = 24
    while offset < len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, offset)
        end = offset + 16 + caplen
        parts[sec + usec / 1e6 >= T0 + at_s] += data[offset:end]
        offset = end
    before.write_bytes(header + parts[0])
    after.write_bytes(header + parts[1])
    return before, after


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return _write_policy(tmp_path / "policy.yaml", POLICY)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Path, Path]:
    """baseline-learn-enforce.pcap as its learning part (before minute 15) and its enforcing part."""
    return _split(LEARN_ENFORCE, SPLIT, tmp_path / "learn.pcap", tmp_path / "enforce.pcap")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, geoip: dict[str, Path]) -> dict[str, Any]:
    """The whole learn-enforce capture once, scope group, with a fresh baseline."""
    tmp = tmp_path_factory.mktemp("first-run")
    policy = _write_policy(tmp / "policy.yaml", POLICY)
    baseline, flows_out = tmp / "baseline.json", tmp / "flows.ndjson"
    alerts = _analyze(LEARN_ENFORCE, policy, baseline, geoip, "--flows-out", flows_out)
    return {"alerts": alerts, "flows": ndjson(flows_out.read_text()), "keys": _keys(baseline), "baseline": baseline, "policy": policy}


def test_learning_is_silent_and_each_new_key_alerts_once(first_run: dict[str, Any]) -> None:
    """Flows that deny and allow leave alone are learned silently for the first 15 minutes;
    after that each unknown key raises exactly one medium new-destination alert (the second
    flow to uploads.example.net is held, not alerted again); only the deny rule alerts besides."""
    alerts = first_run["alerts"]
    assert sorted(map(_key, alerts)) == sorted({DENY, *NEW})
    learning_end = T0 + SPLIT
    for a in alerts:
        if a["rule"]["category"] == "new-destination":
            assert _ts(a["event"]["start"]) >= learning_end
            assert a["rule"]["id"] == f"{GROUP}/new-destination/new-destination"
            assert a["egress"]["severity"] == "medium" and a["labels"]["group"] == GROUP
    by_port = {a["source"]["port"]: a["message"] for a in alerts}
    assert "example.net tcp/443" in by_port[50110] and "vauxhall-lamp-01" in by_port[50110]
    assert "as16509/US tcp/8443" in by_port[50112]
    assert "b.s3.amazonaws.com tcp/443" in by_port[50202]


def test_deny_alerts_while_the_group_learns(first_run: dict[str, Any]) -> None:
    """A deny rule alerts during learning as always, and the denied destination is not learned."""
    deny = next(a for a in first_run["alerts"] if a["rule"]["category"] == "deny")
    assert _key(deny) == DENY
    assert _ts(deny["event"]["end"]) < T0 + SPLIT
    assert not [k for k in first_run["keys"] if "hik-connect" in k[1]]


def test_known_keys_stay_silent(first_run: dict[str, Any]) -> None:
    """After learning, the same registered domain under another name (eu2.vms.eyecloud.co.uk),
    the same unnamed address on another ephemeral port, a learned name again, and D → the
    group's learned eyecloud all raise nothing; allowed NTP raises nothing and is not learned."""
    flows = {(f["source"]["ip"], f["source"]["port"], f["destination"]["ip"], f["destination"]["port"]): f for f in first_run["flows"]}
    silent = [("10.20.1.11", 50106, "198.51.100.41", 443), ("10.20.1.11", 40500, "203.0.113.140", 52000),
              ("10.20.1.11", 50113, "198.51.100.40", 443), ("10.20.1.12", 50203, "198.51.100.40", 443),
              ("10.20.1.11", 123, "203.0.113.200", 123)]  # fmt: skip
    assert all(s in flows for s in silent)
    assert flows[silent[0]]["destination"]["domain"] == "eu2.vms.eyecloud.co.uk"
    assert all(_ts(flows[s]["event"]["start"]) > T0 + SPLIT for s in silent)
    alerted = {(a["source"]["ip"], a["source"]["port"], a["destination"]["ip"], a["destination"]["port"]) for a in first_run["alerts"]}
    assert not alerted & set(silent)
    assert not [k for k in first_run["keys"] if k[2] == "udp/123"]


def test_keys_are_registered_domains_as_numbers_and_collapsed_ports(first_run: dict[str, Any]) -> None:
    """`baseline show --format json` lists exactly the keys: eu1/eu2.vms.eyecloud.co.uk → eyecloud.co.uk,
    b.s3.amazonaws.com stays itself (private public suffix), unnamed addresses by as<N>/<CC>,
    ports ≥ 49152 as `ephemeral`; learned during the window, alerted after it; flows counted."""
    assert first_run["keys"] == KEYS


def test_scope_device_learns_per_camera(tmp_path: Path, geoip: dict[str, Path]) -> None:
    """With `scope: device`, D never talked to eyecloud while learning, so D → eu1.vms.eyecloud.co.uk
    is new for D (with scope group it is known); keys are scoped by the device MAC."""
    doc = {**POLICY, "baseline": {"learn_for": "15m", "scope": "device"}}
    policy, baseline = _write_policy(tmp_path / "policy.yaml", doc), tmp_path / "baseline.json"
    alerts = _analyze(LEARN_ENFORCE, policy, baseline, geoip)
    assert sorted(map(_key, alerts)) == sorted({DENY, *NEW, D_EYECLOUD})
    d_eyecloud = next(a for a in alerts if a["source"]["port"] == 50203)
    assert f"device {D} (group {GROUP})" in d_eyecloud["message"]
    assert _keys(baseline) == {
        (H, "eyecloud.co.uk", "tcp/443"): ("learned", 7),
        (H, "as3320/DE", "udp/ephemeral"): ("learned", 2),
        (H, "example.net", "tcp/443"): ("alerted", 2),
        (H, "as16509/US", "tcp/8443"): ("alerted", 1),
        (D, "b.s3.amazonaws.com", "tcp/443"): ("alerted", 1),
        (D, "eyecloud.co.uk", "tcp/443"): ("alerted", 1),
    }


def test_second_run_holds_alerted_keys(tmp_path: Path, policy: Path, geoip: dict[str, Path]) -> None:
    """Analysing the same capture again with the same --baseline file raises no new-destination
    alert: the keys alerted the first time are held as alerted; the deny alerts again."""
    baseline = tmp_path / "baseline.json"
    assert sorted(map(_key, _analyze(LEARN_ENFORCE, policy, baseline, geoip))) == sorted({DENY, *NEW})
    assert sorted(map(_key, _analyze(LEARN_ENFORCE, policy, baseline, geoip))) == [DENY]
    assert _keys(baseline) == {k: (state, 2 * flows) for k, (state, flows) in KEYS.items()}


def test_baseline_learn_then_analyze_the_rest(tmp_path: Path, policy: Path, parts: tuple[Path, Path], geoip: dict[str, Path]) -> None:
    """`egress baseline learn` on the learning part learns its keys and ends learning; `analyze
    --baseline` on the enforcing part then alerts exactly the new keys."""
    learn, enforce = parts
    baseline = tmp_path / "baseline.json"
    proc = run_egress("baseline", "learn", learn, "--baseline", baseline, "--policy", policy, *_geo(geoip))
    assert proc.returncode == 0, proc.stderr
    assert "learned 2 keys of 1 scopes" in proc.stdout
    assert _keys(baseline) == {(GROUP, "eyecloud.co.uk", "tcp/443"): ("learned", 5), (GROUP, "as3320/DE", "udp/ephemeral"): ("learned", 1)}
    assert sorted(map(_key, _analyze(enforce, policy, baseline, geoip))) == sorted(NEW)


def test_export_pastes_into_allow(tmp_path: Path, policy: Path, parts: tuple[Path, Path], geoip: dict[str, Path]) -> None:
    """`egress baseline export` prints the learned keys as allow entries; pasted under the group's
    allow: of a copy of the policy, `egress check` accepts it, the learning part then raises no
    new-destination alert and learns nothing (every flow is allowed), and without a baseline
    section the exported allowlist leaves exactly the flows of the new keys unexpected."""
    learn, enforce = parts
    baseline = tmp_path / "baseline.json"
    assert run_egress("baseline", "learn", learn, "--baseline", baseline, "--policy", policy, *_geo(geoip)).returncode == 0
    exported = _baseline("export", baseline)
    entries = yaml.safe_load(exported)
    assert entries == [
        {"name": "learned-as3320-DE-udp-ephemeral", "asns": [3320], "countries": ["DE"], "ports": ["udp/49152-65535"]},
        {"name": "learned-eyecloud.co.uk-tcp-443", "destinations": ["eyecloud.co.uk", "*.eyecloud.co.uk"], "ports": ["tcp/443"]},
    ]
    group = {**POLICY["groups"][0], "allow": [*POLICY["groups"][0]["allow"], *entries]}
    pasted = _write_policy(tmp_path / "pasted.yaml", {**POLICY, "groups": [group]})
    check = run_egress("check", "--policy", pasted)
    assert check.returncode == 0, check.stdout + check.stderr

    fresh = tmp_path / "fresh.json"
    assert sorted(map(_key, _analyze(learn, pasted, fresh, geoip))) == [DENY]
    assert _keys(fresh) == {}

    allowlist = _write_policy(tmp_path / "allowlist.yaml", {k: v for k, v in POLICY.items() if k != "baseline"} | {"groups": [group]})
    alerts = _analyze([learn, enforce], allowlist, tmp_path / "unused.json", geoip)
    unexpected = {(H, 50110, "198.51.100.60", 443), (H, 50111, "198.51.100.60", 443), (H, 50112, "198.51.100.170", 8443), (D, 50202, "198.51.100.180", 443)}
    assert sorted(map(_key, alerts)) == sorted({DENY, *((*k, "unexpected", "unexpected-destination") for k in unexpected)})


def test_approve_and_forget(tmp_path: Path, policy: Path, first_run: dict[str, Any], geoip: dict[str, Path]) -> None:
    """`approve KEY` makes an alerted key learned (silent, exported); `forget KEY` removes it, so the
    next run alerts it again, with the same event.id."""
    baseline = tmp_path / "baseline.json"
    alerts = _analyze(LEARN_ENFORCE, policy, baseline, geoip)
    first_ids = {a["source"]["port"]: a["event"]["id"] for a in alerts}
    assert "approved 1 key" in _baseline("approve", baseline, f"{GROUP}:example.net:tcp/443")
    _baseline("forget", baseline, f"{GROUP}:b.s3.amazonaws.com:tcp/443")
    keys = _keys(baseline)
    assert keys[(GROUP, "example.net", "tcp/443")][0] == "learned"
    assert (GROUP, "b.s3.amazonaws.com", "tcp/443") not in keys
    assert "learned-example.net-tcp-443" in _baseline("export", baseline)

    again = _analyze(LEARN_ENFORCE, policy, baseline, geoip)
    assert sorted(map(_key, again)) == sorted({DENY, (D, 50202, "198.51.100.180", 443, "new-destination", "new-destination")})
    assert next(a["event"]["id"] for a in again if a["source"]["port"] == 50202) == first_ids[50202]
    keys = _keys(baseline)
    assert keys[(GROUP, "example.net", "tcp/443")] == ("learned", 4)
    assert keys[(GROUP, "b.s3.amazonaws.com", "tcp/443")] == ("alerted", 1)


def test_new_destination_event_id_depends_on_scope_and_key(tmp_path: Path, policy: Path, first_run: dict[str, Any], geoip: dict[str, Path]) -> None:
    """The event.id of a new-destination alert is the same across runs with fresh baselines, the same
    when another flow of the key raises it, and differs with the scope."""
    ids = {a["source"]["port"]: a["event"]["id"] for a in first_run["alerts"] if a["rule"]["category"] == "new-destination"}
    again = {a["source"]["port"]: a["event"]["id"] for a in _analyze(LEARN_ENFORCE, policy, tmp_path / "fresh.json", geoip) if a["rule"]["category"] == "new-destination"}
    assert again == ids and len(set(ids.values())) == 3

    # forget example.net, then show only the capture from minute 24 on: the flow of minute 25 raises it
    baseline = tmp_path / "forgot.json"
    _analyze(LEARN_ENFORCE, policy, baseline, geoip)
    _baseline("forget", baseline, f"{GROUP}:example.net:tcp/443")
    _, tail = _split(LEARN_ENFORCE, 24 * 60, tmp_path / "head.pcap", tmp_path / "tail.pcap")
    alerts = _analyze(tail, policy, baseline, geoip)
    assert [(a["source"]["port"], a["event"]["id"]) for a in alerts] == [(50111, ids[50110])]

    device = _write_policy(tmp_path / "device.yaml", {**POLICY, "baseline": {"learn_for": "15m", "scope": "device"}})
    by_device = {a["source"]["port"]: a["event"]["id"] for a in _analyze(LEARN_ENFORCE, device, tmp_path / "device.json", geoip) if a["rule"]["category"] == "new-destination"}
    assert set(by_device) == {*ids, 50203} and not set(by_device.values()) & set(ids.values())


@pytest.mark.parametrize("content", [
    "this is not JSON\n",
    '{"format": "some-other-tool", "version": 1, "keys": []}\n',
    '{"format": "egress-baseline", "version": 2, "scopes": {}, "keys": [], "volume": {}}\n',
], ids=["not-json", "other-format", "version-2"])  # fmt: skip
@pytest.mark.parametrize("command", ["analyze", "show", "learn"])
def test_corrupt_baseline_is_refused_untouched(tmp_path: Path, policy: Path, geoip: dict[str, Path], content: str, command: str) -> None:
    """A baseline file that is not one (not JSON, another format, version 2) is refused: exit 2,
    one `egress: F: ...` line, no traceback, and the file is left as it was."""
    baseline = tmp_path / "baseline.json"
    baseline.write_text(content)
    args: dict[str, tuple[str | Path, ...]] = {
        "analyze": ("analyze", LEARN_ENFORCE, "--policy", policy, *_geo(geoip), "--format", "json"),
        "show": ("baseline", "show"),
        "learn": ("baseline", "learn", LEARN_ENFORCE, "--policy", policy, *_geo(geoip)),
    }
    proc = run_egress(*args[command], "--baseline", baseline)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("egress:")]
    assert len(lines) == 1 and lines[0].startswith(f"egress: {baseline}: "), proc.stderr
    assert baseline.read_text() == content


def _windows(flows: list[dict], window: float) -> dict[float, list[dict]]:
    by_window: dict[float, list[dict]] = defaultdict(list)
    for f in sorted(flows, key=lambda f: f["event"]["end"]):
        by_window[_ts(f["event"]["end"]) // window * window].append(f)
    return by_window


def test_upload_far_past_the_learned_maximum_raises_one_volume_alert_per_window(tmp_path: Path, geoip: dict[str, Path]) -> None:
    """The camera's largest learned minute is 41,074 bytes out, so the limit is max(100 KB, 3 × it) =
    123,222: minute 11 (93,812) stays under it; minute 12 crosses at its third flow (one high volume
    alert there, none at the flows before, none again at the fourth); minute 16 crosses again, once.
    Uploads go to the learned cloud, so nothing else alerts."""
    policy, baseline, flows_out = _write_policy(tmp_path / "policy.yaml", UPLOAD_POLICY), tmp_path / "baseline.json", tmp_path / "flows.ndjson"
    alerts = _analyze(UPLOAD, policy, baseline, geoip, "--flows-out", flows_out)
    egress = [f for f in ndjson(flows_out.read_text()) if f["network"]["direction"] == "outbound"]

    # the expectation, from the flows: the learned maximum, the limit, the crossing flow of each window
    start = min(_ts(f["event"]["start"]) for f in egress)
    windows = _windows(egress, 60)
    learned = max(sum(f["source"]["bytes"] for f in w) for w in windows.values() if all(_ts(f["event"]["start"]) < start + 600 for f in w))
    limit = max(100_000, 3 * learned)
    assert (learned, limit) == (41_074, 123_222)
    crossings = []
    for t, flows in sorted(windows.items()):
        total = 0
        for f in flows:
            before, total = total, total + f["source"]["bytes"]
            if _ts(f["event"]["start"]) >= start + 600 and before <= limit < total:
                crossings.append((t, f, total))
    assert [(f["source"]["port"], total) for _, f, total in crossings] == [(50362, 140_718), (50372, 140_718)]

    assert sorted(map(_key, alerts)) == [(H, 50362, "198.51.100.40", 443, "volume", "volume"), (H, 50372, "198.51.100.40", 443, "volume", "volume")]
    for alert, (t, flow, total) in zip(sorted(alerts, key=lambda a: a["event"]["end"]), crossings, strict=True):
        assert alert["event"]["end"] == flow["event"]["end"] and alert["event"]["start"] == flow["event"]["start"]
        assert alert["network"]["community_id"] == flow["network"]["community_id"]
        assert alert["rule"] == {"id": f"{GROUP}/volume/volume", "name": "volume", "category": "volume", "ruleset": alert["rule"]["ruleset"],
                                 "description": alert["rule"]["description"]}
        assert alert["rule"]["description"].startswith("a device's outbound bytes in one window past factor x")
        assert alert["egress"]["severity"] == "high"
        assert f"{total:,} bytes" in alert["message"] and f"limit of {limit:,} bytes" in alert["message"]
        assert datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S") in alert["message"]
    assert alerts[0]["event"]["id"] != alerts[1]["event"]["id"]
    assert _keys(baseline) == {(GROUP, "eyecloud.co.uk", "tcp/443"): ("learned", len(egress))}


def test_run_read_gives_the_same_alerts_and_baseline(tmp_path: Path, policy: Path, first_run: dict[str, Any], geoip: dict[str, Path]) -> None:
    """`egress run --read F --baseline B` raises the same alerts as `analyze` and learns the same keys."""
    config = tmp_path / "egress.yaml"
    config.write_text("metrics:\n  listen: 127.0.0.1:0\n")
    baseline = tmp_path / "baseline.json"
    proc = run_egress("run", "--config", config, "--read", LEARN_ENFORCE, "--policy", policy, *_geo(geoip), "--baseline", baseline)
    assert proc.returncode == 0, proc.stderr
    alerts = ndjson(proc.stdout)
    assert sorted(map(_key, alerts)) == sorted(map(_key, first_run["alerts"]))
    assert {a["event"]["id"] for a in alerts} == {a["event"]["id"] for a in first_run["alerts"]}
    assert _keys(baseline) == KEYS
