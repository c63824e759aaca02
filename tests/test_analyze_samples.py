"""`egress analyze` on the committed sample captures gives exactly the expected alerts."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PCAPS, POLICY, ndjson, run_egress

# (device MAC, destination ip, destination port, transport, category, rule name)
EXPECTED: dict[str, set[tuple[str, str, int, str, str, str]]] = {
    "street-cctv-vlan20.pcap": {
        ("44-19-B6-12-34-56", "10.20.0.53", 53, "udp", "covered-vendor", "covered-vendor"),
        ("3C-EF-8C-00-00-21", "192.0.2.80", 443, "tcp", "covered-vendor", "covered-vendor"),
        ("44-19-B6-12-34-56", "198.51.100.200", 443, "tcp", "deny", "vendor-p2p-cloud"),  # name asked, CNAME'd
        ("3C-EF-8C-00-00-21", "198.51.100.201", 8800, "udp", "deny", "vendor-p2p-cloud"),  # CNAME target
        ("3C-EF-8C-00-00-21", "203.0.113.201", 123, "udp", "unexpected", "unexpected-destination"),  # unresolved NTP
        ("44-19-B6-12-34-56", "198.51.100.10", 8000, "tcp", "unexpected", "unexpected-destination"),  # port
        ("3C-EF-8C-00-00-21", "192.0.2.50", 32100, "udp", "deny", "hostile-states"),  # country
        ("3C-EF-8C-00-00-21", "192.0.2.80", 443, "tcp", "deny", "hostile-states"),  # mid-stream TCP
        ("44-19-B6-12-34-56", "203.0.113.160", 80, "tcp", "unexpected", "unexpected-destination"),  # IP-literal Host
    },
    "building-cctv-ipv6.pcapng": {
        ("AC-CC-8E-00-00-31", "2001:db8:1::5", 443, "tcp", "deny", "hostile-states"),
        ("AC-CC-8E-00-00-31", "198.51.100.99", 3478, "udp", "deny", "camera-p2p"),  # STUN by its first bytes
        ("02-00-00-00-00-99", "198.51.100.10", 443, "tcp", "unexpected", "unexpected-destination"),
    },
    "trunk-qinq-mixed.pcap": {
        ("44-19-B6-00-00-77", "10.20.0.53", 53, "udp", "covered-vendor", "covered-vendor"),
        ("44-19-B6-00-00-77", "198.51.100.210", 6500, "tcp", "deny", "vendor-p2p-cloud"),
        ("48-EA-63-00-00-50", "192.0.2.99", 443, "tcp", "unexpected", "unexpected-destination"),
    },
}


def _key(a: dict) -> tuple[str, str, int, str, str, str]:
    return (a["device"]["id"], a["destination"]["ip"], a["destination"].get("port", 0), a["network"]["transport"], a["rule"]["category"], a["rule"]["name"])


def _analyze(capture: Path, geoip: dict[str, Path], *extra: str) -> list[dict]:
    proc = run_egress("analyze", capture, "--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"], "--format", "json", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return ndjson(proc.stdout)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_alerts_are_exactly_the_expected_ones(name: str, geoip: dict[str, Path]) -> None:
    """Every policy path in the samples raises exactly its alert, and nothing else does."""
    alerts = _analyze(PCAPS / name, geoip)
    assert sorted(map(_key, alerts)) == sorted(EXPECTED[name])


def test_alert_records_carry_ecs_fields(geoip: dict[str, Path]) -> None:
    """Alert records are ECS: kind alert, numeric severity, rule fields, message, MACs upper-case hyphenated."""
    alerts = _analyze(PCAPS / "street-cctv-vlan20.pcap", geoip)
    deny = next(a for a in alerts if a["rule"]["name"] == "vendor-p2p-cloud" and a["destination"]["ip"] == "198.51.100.200")
    assert deny["event"]["kind"] == "alert"
    assert deny["event"]["severity"] == 73 and deny["egress"]["severity"] == "high"
    assert deny["rule"] == {"id": "street-cctv/deny/vendor-p2p-cloud", "name": "vendor-p2p-cloud", "category": "deny", "ruleset": "egress-policy",
                            "description": "the vendor's P2P cloud, which relays the camera's video past the site firewall"}
    assert deny["labels"]["group"] == "street-cctv"
    assert deny["network"]["vlan"] == {"id": "20"}
    assert deny["network"]["direction"] == "outbound"
    assert deny["network"]["community_id"].startswith("1:")
    assert deny["device"] == {"id": "44-19-B6-12-34-56", "manufacturer": "Hikvision", "name": "vauxhall-lamp-01"}
    assert set(deny["egress"]["destination"]["domains"]) == {"dev.hik-connect.com", "hik-edge.cdn.example"}
    assert deny["destination"]["geo"]["country_iso_code"] == "US" and deny["destination"]["as"]["number"] == 16509
    assert "vauxhall-lamp-01" in deny["message"] and "\n" not in deny["message"]
    assert len({a["event"]["id"] for a in alerts}) == len(alerts)


def test_event_ids_are_deterministic(geoip: dict[str, Path]) -> None:
    """The same capture and policy give the same event.ids on every run."""
    first = {a["event"]["id"] for a in _analyze(PCAPS / "trunk-qinq-mixed.pcap", geoip)}
    second = {a["event"]["id"] for a in _analyze(PCAPS / "trunk-qinq-mixed.pcap", geoip)}
    assert first == second and len(first) == 3


def test_sni_alone_allows_and_dns_learned_name_allows(geoip: dict[str, Path], tmp_path: Path) -> None:
    """The SNI-only firmware flow and the DNS-resolved NTP flow are evaluated and allowed (no alert)."""
    flows_out = tmp_path / "flows.ndjson"
    alerts = _analyze(PCAPS / "street-cctv-vlan20.pcap", geoip, "--flows-out", str(flows_out))
    flows = ndjson(flows_out.read_text())
    fw = next(f for f in flows if f["destination"]["ip"] == "198.51.100.150")
    ntp = next(f for f in flows if f["destination"]["ip"] == "203.0.113.200")
    assert fw["destination"]["domain"] == "fw.vendor-updates.example"
    assert ntp["destination"]["domain"] == "0.pool.ntp.org"
    alerted = {(a["destination"]["ip"], a["rule"]["category"]) for a in alerts}
    assert not any(ip in ("198.51.100.150", "203.0.113.200") and cat != "covered-vendor" for ip, cat in alerted)


def test_flows_out_is_replaced_by_the_next_analysis(geoip: dict[str, Path], tmp_path: Path) -> None:
    """A second analysis writes its own flows to `--flows-out`, not the first run's again after them."""
    flows_out, fresh = tmp_path / "flows.ndjson", tmp_path / "fresh.ndjson"
    _analyze(PCAPS / "street-cctv-vlan20.pcap", geoip, "--flows-out", str(flows_out))
    assert ndjson(flows_out.read_text())
    _analyze(PCAPS / "trunk-qinq-mixed.pcap", geoip, "--flows-out", str(flows_out))
    _analyze(PCAPS / "trunk-qinq-mixed.pcap", geoip, "--flows-out", str(fresh))
    ids = [[f["network"]["community_id"] for f in ndjson(p.read_text())] for p in (flows_out, fresh)]
    assert ids[0] == ids[1] and ids[0]


def test_inbound_and_intra_site_flows_raise_nothing(geoip: dict[str, Path], tmp_path: Path) -> None:
    """The inbound RTSP connection is recorded as inbound with the camera as device, and never alerts."""
    flows_out = tmp_path / "flows.ndjson"
    alerts = _analyze(PCAPS / "street-cctv-vlan20.pcap", geoip, "--flows-out", str(flows_out))
    inbound = [f for f in ndjson(flows_out.read_text()) if f["network"]["direction"] == "inbound"]
    assert [(f["source"]["ip"], f["destination"]["ip"], f["destination"]["port"]) for f in inbound] == [("203.0.113.150", "10.20.1.11", 554)]
    assert inbound[0]["device"]["id"] == "44-19-B6-12-34-56"
    assert not [a for a in alerts if a["network"]["direction"] == "inbound" and a["rule"]["category"] != "covered-vendor"]
    assert not [f for f in ndjson(flows_out.read_text()) if f["destination"]["ip"] == "10.20.0.5"]


def test_fail_on_alert_exits_1(geoip: dict[str, Path]) -> None:
    """--fail-on-alert turns found alerts into exit code 1."""
    proc = run_egress("analyze", PCAPS / "trunk-qinq-mixed.pcap", "--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"], "--format", "json", "--fail-on-alert")
    assert proc.returncode == 1 and len(ndjson(proc.stdout)) == 3


def test_table_and_csv_formats(geoip: dict[str, Path]) -> None:
    """The table shows alerts and a summary; CSV has a header and one row per alert."""
    common = ("--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])
    table = run_egress("analyze", PCAPS / "trunk-qinq-mixed.pcap", *common)
    assert table.returncode == 0
    assert "Devices by vendor: Hikvision 1, Uniview 1" in table.stdout
    assert "Destinations by country:" in table.stdout and "CN 1" in table.stdout
    assert "vendor-p2p-cloud" in table.stdout
    csv_out = run_egress("analyze", PCAPS / "trunk-qinq-mixed.pcap", *common, "--format", "csv")
    rows = csv_out.stdout.splitlines()
    assert rows[0].startswith("first_seen,last_seen,category,rule") and len(rows) == 4


def test_city_database_works_as_country_database(geoip: dict[str, Path]) -> None:
    """A City mmdb given as --geoip-country gives the same verdicts as a Country mmdb."""
    proc = run_egress("analyze", PCAPS / "building-cctv-ipv6.pcapng", "--policy", POLICY, "--geoip-country", geoip["city"], "--geoip-asn", geoip["asn"], "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert sorted(map(_key, ndjson(proc.stdout))) == sorted(EXPECTED["building-cctv-ipv6.pcapng"])


def test_messages_name_an_address_once_and_piped_tables_keep_macs_whole(geoip: dict[str, Path]) -> None:
    """An alert without a name gives its address once (not `198.51.100.10 [198.51.100.10]`); a
    table written to a pipe is as wide as its rows, so no MAC is folded over two lines."""
    alerts = _analyze(PCAPS / "street-cctv-vlan20.pcap", geoip)
    unnamed = next(a for a in alerts if a["destination"]["ip"] == "198.51.100.10")
    assert "→ 198.51.100.10 tcp/8000" in unnamed["message"] and "[198.51.100.10]" not in unnamed["message"]
    named = next(a for a in alerts if a["destination"]["ip"] == "198.51.100.200" and a["rule"]["category"] == "deny")
    assert "→ dev.hik-connect.com [198.51.100.200] tcp/443" in named["message"]
    proc = run_egress("analyze", PCAPS / "street-cctv-vlan20.pcap", "--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if "street-cctv" in line]
    assert rows and all(re.search(r"[0-9A-F]{2}(-[0-9A-F]{2}){5}", row) for row in rows)


REAL = Path(__file__).resolve().parents[1].parent / "shared" / "pcaps-real"


def _grouped(capture: Path, *args: str | Path) -> tuple[list[dict[str, str]], list[dict]]:
    """The CSV rows and the per-flow alert records of one capture."""
    rows = list(csv.DictReader(io.StringIO(run_egress("analyze", capture, *args, "--format", "csv").stdout)))
    return rows, ndjson(run_egress("analyze", capture, *args, "--format", "json").stdout)


def test_csv_and_table_group_alerts_by_device_destination_port_rule(tmp_path: Path) -> None:
    """One CSV row per (device, destination, port, rule) of the per-flow alert records, with
    their flows, bytes and packets each way added up and first/last seen as full UTC times;
    the table says how many flows it groups into how many rows. (A policy that alerts every
    egress, on the sample whose cameras come back to the same clouds.)"""
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ncovered_vendors: []\n")
    common = ("--policy", policy)
    rows, alerts = _grouped(PCAPS / "baseline-learn-enforce.pcap", *common)
    keys: dict[tuple[str, str, str, str], list[dict]] = {}
    for a in alerts:
        port = f"{a['network']['transport']}/{a['destination'].get('port', '')}"
        keys.setdefault((a["device"]["id"], a["destination"]["ip"], port, a["rule"]["name"]), []).append(a)
    assert len(rows) == len(keys) < len(alerts)  # the sample has repeated flows to group
    for row in rows:
        group = keys[(row["device_mac"], row["destination_ip"], f"{row['transport']}/{row['destination_port']}", row["rule"])]
        assert int(row["flows"]) == len(group)
        assert int(row["bytes_out"]) == sum(a["source"]["bytes"] for a in group)
        assert int(row["packets_in"]) == sum(a["destination"]["packets"] for a in group)
        assert row["first_seen"] == min(a["event"]["start"] for a in group)[:19] + "Z"
        assert row["last_seen"] == max(a["event"]["end"] for a in group)[:19] + "Z"
    table = run_egress("analyze", PCAPS / "baseline-learn-enforce.pcap", *common).stdout
    assert f"Alerts: {len(alerts)} flows in {len(rows)} rows of (device, destination, port, rule)" in table


def test_real_camera_capture_groups_to_its_conversations_with_tsharks_totals(tmp_path: Path) -> None:
    """The Xiaobai camera's idle half hour (118 alert records under a policy that alerts all
    egress) is one row per destination, each with the frames and bytes tshark counts for that
    conversation (`-z conv,ip` counts frame lengths; summed here exactly from the same fields)."""
    capture = REAL / "xiaobai-y2-camera-idle-cn-p2p-keepalive.pcap"
    if not capture.exists():
        pytest.skip(f"{REAL} is not here")
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ncovered_vendors: []\n")
    rows, alerts = _grouped(capture, "--policy", policy)
    assert len(alerts) == 118
    fields = subprocess.run(["tshark", "-n", "-r", str(capture), "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "frame.len", "ip"],
                            capture_output=True, text=True, check=True).stdout.split("\n")  # fmt: skip
    conv: dict[tuple[str, str], list[int]] = {}
    for line in filter(None, fields):
        src, dst, length = line.split("\t")
        total = conv.setdefault((src, dst), [0, 0])
        total[0] += 1
        total[1] += int(length)
    assert len({(r["device_mac"], r["destination_ip"], r["transport"], r["destination_port"], r["rule"]) for r in rows}) == len(rows) == 6
    assert {(r["destination_port"], r["protocol"]) for r in rows} == {("32100", "cs2-p2p"), ("443", ""), ("", "")}  # CS2 keepalives, TLS, ICMP
    table = run_egress("analyze", capture, "--policy", policy).stdout
    assert "protocol" in table and "cs2-p2p" in table
    for row in rows:
        device, remote = row["device_ip"], row["destination_ip"]
        assert [int(row["packets_out"]), int(row["bytes_out"])] == conv.get((device, remote), [0, 0]), remote
        assert [int(row["packets_in"]), int(row["bytes_in"])] == conv.get((remote, device), [0, 0]), remote


def test_flow_records_say_what_decided_and_alerts_carry_description_and_device_name(geoip: dict[str, Path], tmp_path: Path) -> None:
    """`--flows-out` records carry the verdict, the group and the rule that decided (an allowed
    flow too); alert records carry rule.description (the deny entry's, or the built-in rule's
    meaning) and the device's inventory name from the policy (device.name)."""
    flows_out = tmp_path / "flows.ndjson"
    alerts = _analyze(PCAPS / "street-cctv-vlan20.pcap", geoip, "--flows-out", str(flows_out))
    flows = ndjson(flows_out.read_text())
    fw = next(f for f in flows if f["destination"]["ip"] == "198.51.100.150")
    assert (fw["egress"]["verdict"], fw["labels"]["group"], fw["rule"]["id"], fw["rule"]["name"]) == ("allowed", "street-cctv", "street-cctv/allow/firmware", "firmware")
    denied = next(f for f in flows if f["egress"]["verdict"] == "denied")
    assert denied["rule"]["id"] == "street-cctv/deny/vendor-p2p-cloud"
    assert {f["egress"]["verdict"] for f in flows if f["network"]["direction"] != "outbound"} == {"not-egress"}
    assert all("rule" not in f for f in flows if f["egress"]["verdict"] == "not-egress")
    p2p = next(a for a in alerts if a["rule"]["name"] == "vendor-p2p-cloud")
    assert p2p["rule"]["description"] == "the vendor's P2P cloud, which relays the camera's video past the site firewall"
    assert p2p["device"]["name"] == "vauxhall-lamp-01" and p2p["device"]["id"] == "44-19-B6-12-34-56"
    unexpected = next(a for a in alerts if a["rule"]["category"] == "unexpected")
    assert unexpected["rule"]["description"].startswith("egress that no deny or allow rule of the group matched")
