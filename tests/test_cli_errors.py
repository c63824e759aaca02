"""Exit codes and one-line errors per SPEC: nothing reaches the user as a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from egress.sinks.report import CSV_COLUMNS
from tests.conftest import PCAPS, POLICY, host_env, ndjson, run_egress

SAMPLE = PCAPS / "trunk-qinq-mixed.pcap"


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [ln for ln in stderr.splitlines() if ln.startswith("egress: ")]


def test_tshark_missing_exits_3(tmp_path: Path) -> None:
    """Without tshark on PATH, analyze says so in one line and exits 3."""
    proc = run_egress("analyze", SAMPLE, env={"PATH": str(tmp_path)})
    assert proc.returncode == 3
    assert len(_errors(proc.stderr)) == 1 and "tshark not found" in proc.stderr


def test_missing_geoip_file_exits_3(geoip: dict[str, Path], tmp_path: Path) -> None:
    """A GeoIP database that was asked for and is absent is a missing dependency (3)."""
    proc = run_egress("analyze", SAMPLE, "--policy", POLICY, "--geoip-country", tmp_path / "nope.mmdb", "--geoip-asn", geoip["asn"])
    assert proc.returncode == 3
    assert str(tmp_path / "nope.mmdb") in _errors(proc.stderr)[0]


def test_policy_needing_countries_without_geoip_exits_3(tmp_path: Path) -> None:
    """A policy with country rules never runs silently without a country database."""
    proc = run_egress("analyze", SAMPLE, "--policy", POLICY)
    assert proc.returncode == 3
    assert "the policy has rules on" in _errors(proc.stderr)[0]


def test_wrong_mmdb_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    """An ASN database given as the country database, or a text file, is refused (2), naming the file."""
    proc = run_egress("analyze", SAMPLE, "--geoip-country", geoip["asn"])
    assert proc.returncode == 2 and "expected a Country or City database" in _errors(proc.stderr)[0]
    junk = tmp_path / "junk.mmdb"
    junk.write_text("hello")
    proc = run_egress("analyze", SAMPLE, "--geoip-asn", junk)
    assert proc.returncode == 2 and str(junk) in _errors(proc.stderr)[0]


def test_bad_policy_exits_2_with_file_and_line(tmp_path: Path) -> None:
    """A bad policy is refused whole; each problem is reported as file:line."""
    bad = tmp_path / "policy.yaml"
    bad.write_text("version: 1\ngroups:\n  - name: a\n    colour: red\n    allow:\n      - {name: x, ports: [tcp/70000]}\n")
    proc = run_egress("analyze", SAMPLE, "--policy", bad)
    assert proc.returncode == 2
    errors = _errors(proc.stderr)
    assert f"egress: {bad}:4: groups.0.colour: unknown key" in errors
    assert any(e.startswith(f"egress: {bad}:6: groups.0.allow.0.ports") for e in errors)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    """Broken YAML is reported with its line."""
    bad = tmp_path / "policy.yaml"
    bad.write_text("version: 1\ngroups: [\n  - name: a\n")
    proc = run_egress("check", "--policy", bad)
    assert proc.returncode == 2
    assert _errors(proc.stderr)[0].startswith(f"egress: {bad}:")


def test_not_a_capture_and_empty_file_exit_2(tmp_path: Path) -> None:
    """A file that is not a capture at all exits 2 and is named."""
    text = tmp_path / "notes.pcap"
    text.write_text("this is not a capture\n" * 10)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    for path, reason in ((text, "not a capture file"), (empty, "empty file")):
        for fmt in ("table", "csv", "json"):  # and no empty report before the error, which would read as a clean result
            proc = run_egress("analyze", path, "--format", fmt)
            assert proc.returncode == 2
            assert _errors(proc.stderr) == [f"egress: {path}: {reason}" + (" (pcap or pcapng)" if reason == "not a capture file" else ", not a capture")]
            assert proc.stdout == "", fmt


def test_a_readable_file_beside_a_bad_one_is_reported_and_exits_2(tmp_path: Path) -> None:
    """The report covers what could be read; the unreadable file is named and the exit is 2."""
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    proc = run_egress("analyze", empty, PCAPS / "street-cctv-vlan20.pcap", "--format", "csv")
    assert proc.returncode == 2
    assert proc.stdout.startswith(",".join(CSV_COLUMNS)) and len(proc.stdout.splitlines()) > 1


def test_missing_capture_exits_2(tmp_path: Path) -> None:
    """A capture path that does not exist is bad input (2)."""
    proc = run_egress("analyze", tmp_path / "gone.pcap")
    assert proc.returncode == 2 and "no such file" in _errors(proc.stderr)[0]


def test_capture_cut_short_is_analysed_up_to_the_cut(geoip: dict[str, Path], tmp_path: Path) -> None:
    """A recording killed mid-packet: warning, exit 0, and the alerts of the part before the cut."""
    data = (PCAPS / "street-cctv-vlan20.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) * 2 // 3 + 7])
    common = ("--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"], "--format", "json")
    whole = {a["event"]["id"] for a in ndjson(run_egress("analyze", PCAPS / "street-cctv-vlan20.pcap", *common).stdout)}
    proc = run_egress("analyze", cut, *common)
    assert proc.returncode == 0
    assert "cut short" in proc.stderr and "Traceback" not in proc.stderr
    part = {a["event"]["id"] for a in ndjson(proc.stdout)}
    assert part and len(part) < len(whole)
    assert part <= whole  # a flow cut in half keeps its start, its community ID and so its event.id


def test_empty_pcapng_gives_no_alerts_and_exit_0(tmp_path: Path) -> None:
    """A valid capture with zero packets is fine: no alerts, exit 0."""
    import struct

    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idb = struct.pack("<IIHHII", 1, 20, 1, 0, 262144, 20)
    path = tmp_path / "empty.pcapng"
    path.write_bytes(shb + idb)
    proc = run_egress("analyze", path, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    proc = run_egress("analyze", path, "--format", "csv")  # read, so reported: the header alone
    assert proc.returncode == 0 and proc.stdout.splitlines() == [",".join(CSV_COLUMNS)]


def test_check_accepts_the_example_and_reports_config_errors(tmp_path: Path) -> None:
    """`egress check` passes the shipped policy and names the line of an unknown config key."""
    ok = run_egress("check", "--policy", POLICY)
    assert ok.returncode == 0 and "policy OK" in ok.stdout and "2 groups" in ok.stdout
    cfg = tmp_path / "egress.yaml"
    cfg.write_text("site: x\nflows:\n  idle_timeout: soon\n  max_flow: 3\n")
    bad = run_egress("check", "--config", cfg, "--policy", POLICY)
    assert bad.returncode == 2
    errors = _errors(bad.stderr)
    assert f"egress: {cfg}:3: flows.idle_timeout: 'soon' is not a duration like 60s, 5m or 1h" in errors
    assert f"egress: {cfg}:4: flows.max_flow: unknown key" in errors


def test_environment_overrides_file_and_errors_name_the_variable(geoip: dict[str, Path], tmp_path: Path) -> None:
    """EGRESS_* variables override the file; a bad one is named in the error."""
    cfg = tmp_path / "egress.yaml"
    cfg.write_text(f"policy_file: {tmp_path / 'absent.yaml'}\n")
    proc = run_egress("check", "--config", cfg, env={**host_env(geoip, tmp_path), "EGRESS_POLICY_FILE": str(POLICY)})
    assert proc.returncode == 0, proc.stderr
    proc = run_egress("check", "--config", cfg, "--policy", POLICY, env={"EGRESS_FLOWS__MAX_FLOWS": "many"})
    assert proc.returncode == 2
    assert _errors(proc.stderr)[0].startswith("egress: environment EGRESS_FLOWS__MAX_FLOWS: flows.max_flows:")


def test_version() -> None:
    """--version prints the version."""
    proc = run_egress("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("egress ")


BAD_YAML = {
    "sequence-key.yaml": ("version: 1\n? [a, b]\n: 1\n", 2, "(top level): a key must be a single value, not a sequence"),
    "python-tag.yaml": ("version: 1\nx: !!python/name:os.system\n", 2, "x: unsupported tag !!python/name:os.system"),
    "recursive-alias.yaml": ("version: 1\na: &a [*a]\n", 2, "invalid YAML: recursive alias: *a stands inside its own anchor &a"),
    "bad-merge.yaml": ("version: 1\n<<: [1]\n", 2, "<<: a merge takes a mapping or a list of mappings, not a scalar"),
    "duplicate-key.yaml": ("version: 1\ndefault_verdict: alert\ndefault_verdict: allow\n", 3, "default_verdict: duplicate key (first at line 2)"),
}


def test_yaml_the_loader_cannot_build_exits_2_in_one_located_line(tmp_path: Path) -> None:
    """A list as a key, a python tag, a recursive alias, a merge of a scalar, a duplicate key:
    `egress check --policy F` exits 2 with exactly one `egress: F:LINE: ...` line, no traceback."""
    for name, (text, line, message) in BAD_YAML.items():
        bad = tmp_path / name
        bad.write_text(text)
        proc = run_egress("check", "--policy", bad)
        assert proc.returncode == 2, proc.stderr
        assert _errors(proc.stderr) == [f"egress: {bad}:{line}: {message}"]


def test_duplicate_config_key_exits_2(tmp_path: Path) -> None:
    """The strict config refuses a key given twice, naming the first line, instead of keeping the last."""
    cfg = tmp_path / "egress.yaml"
    cfg.write_text("site: x\ncapture:\n  snaplen: 512\n  snaplen: 96\n")
    proc = run_egress("check", "--config", cfg, "--policy", POLICY)
    assert proc.returncode == 2
    assert _errors(proc.stderr) == [f"egress: {cfg}:4: capture.snaplen: duplicate key (first at line 3)"]


def test_policy_groups_can_share_keys_through_a_merge_key(tmp_path: Path) -> None:
    """`<<: *street` (YAML merge) gives a group the keys of another, its own keys winning."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\ngroups:\n  - &street\n    name: street\n    allow: [{name: ntp, ports: [udp/123]}]\n"
        "  - <<: *street\n    name: depot\n"
    )
    proc = run_egress("check", "--policy", policy)
    assert proc.returncode == 0, proc.stderr
    assert f"policy OK: {policy} (2 groups, 2 rules" in proc.stdout


def test_capture_bpf_that_would_mean_something_else_per_vlan_depth_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    """`capture.bpf` with `vlan` or an unbalanced `)` is refused in one located line;
    pcap-filter's escaped keyword (`ip proto \\tcp`) is accepted."""
    cfg = tmp_path / "egress.yaml"
    for bpf, message in (("vlan 20", "cannot use `vlan`"), ("tcp) or (udp", "unbalanced parentheses")):
        cfg.write_text(f"site: x\ncapture:\n  bpf: {bpf}\n")
        proc = run_egress("check", "--config", cfg, "--policy", POLICY)
        assert proc.returncode == 2
        errors = _errors(proc.stderr)
        assert len(errors) == 1 and errors[0].startswith(f"egress: {cfg}:3: capture.bpf: ") and message in errors[0]
    cfg.write_text("site: x\ncapture:\n  bpf: ip proto \\tcp\n")
    assert run_egress("check", "--config", cfg, "--policy", POLICY, env=host_env(geoip, tmp_path)).returncode == 0


@pytest.mark.parametrize("option", ["--flows-out", "--alerts-out"])
@pytest.mark.parametrize("where", ["missing/dir/out.ndjson", "."])
def test_an_output_that_cannot_be_written_is_one_line_exit_2(option: str, where: str, geoip: dict[str, Path], tmp_path: Path) -> None:
    """--flows-out (analyze) and --alerts-out (run) into a missing directory or onto a directory: one line naming it, exit 2."""
    target = tmp_path / where
    command = ("analyze", SAMPLE) if option == "--flows-out" else ("run", "--read", SAMPLE)
    proc = run_egress(*command, option, target, "--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"],
                      env={"EGRESS_METRICS__LISTEN": "127.0.0.1:0"})  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert _errors(proc.stderr) == [f"egress: {target}: cannot write the {'flow' if option == '--flows-out' else 'alert'} records: "
                                    + ("No such file or directory" if where != "." else "Is a directory")]  # fmt: skip
    assert "Traceback" not in proc.stderr


def test_flows_out_dash_is_stdout(geoip: dict[str, Path], tmp_path: Path) -> None:
    """`--flows-out -` writes the flow records to standard output, not to a file named `-`."""
    proc = subprocess.run([sys.executable, "-m", "egress", "analyze", str(SAMPLE), "--flows-out", "-", "--format", "csv", "--policy", str(POLICY),
                           "--geoip-country", str(geoip["country"]), "--geoip-asn", str(geoip["asn"])],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    flows = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert flows and all(json.loads(line)["event"]["kind"] == "event" for line in flows)
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(
    ("var", "line"),
    [
        ("EGRESS_FLOWZ__IDLE_TIMEOUT", "egress: environment EGRESS_FLOWZ__IDLE_TIMEOUT: unknown config key flowz (did you mean EGRESS_FLOWS__IDLE_TIMEOUT?)"),
        ("EGRESS_POLICY_FIEL", "egress: environment EGRESS_POLICY_FIEL: unknown config key policy_fiel (did you mean EGRESS_POLICY_FILE?)"),
        ("EGRESS_NOPE__X", "egress: environment EGRESS_NOPE__X: unknown config key nope (keys: site, observer_name, capture, flows, geoip, kafka, spool, metrics, alerts, policy_file, baseline_file)"),
    ],
)
def test_unknown_egress_variable_exits_2_naming_it(var: str, line: str) -> None:
    """A typo in a variable is refused, not ignored; variables of other tools (no `__`, not
    near a config key, like the development broker's EGRESS_KAFKA_HOME) are left alone."""
    proc = run_egress("check", "--policy", POLICY, env={var: "30"})
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [line]
    assert run_egress("check", "--policy", POLICY, env={"EGRESS_KAFKA_HOME": "/nowhere"}).returncode == 0


def test_a_scalar_where_a_list_belongs_says_what_to_write(tmp_path: Path) -> None:
    cfg = tmp_path / "egress.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: localhost:9092\n")
    proc = run_egress("check", "--config", cfg, "--policy", POLICY)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"egress: {cfg}:2: kafka.bootstrap_servers: expected a list: write ['localhost:9092']"]
    proc = run_egress("check", "--policy", POLICY, env={"EGRESS_CAPTURE__INTERFACES": "eth1"})
    assert proc.stderr.splitlines() == ["egress: environment EGRESS_CAPTURE__INTERFACES: capture.interfaces: expected a list: write [eth1]"]


def test_min_insync_replicas_above_the_replication_factor_exits_2(tmp_path: Path) -> None:
    """No write could ever reach more in-sync replicas than there are replicas: refused at the key's line."""
    cfg = tmp_path / "egress.yaml"
    cfg.write_text("kafka:\n  replication_factor: 2\n  min_insync_replicas: 3\n")
    proc = run_egress("check", "--config", cfg, "--policy", POLICY)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"egress: {cfg}:3: kafka.min_insync_replicas: 3 is more than replication_factor 2: no write could ever succeed"]
    cfg.write_text("kafka:\n  replication_factor: 3\n  min_insync_replicas: 2\n")
    assert "kafka" not in run_egress("check", "--config", cfg, "--policy", POLICY).stderr


def test_a_geoip_database_turned_off_under_rules_that_need_it_exits_2(tmp_path: Path) -> None:
    """`geoip.country_db: null` with a policy that has rules on countries would make them
    never match: refused at start and by `check`, at the config's line; without such rules, fine."""
    cfg = tmp_path / "egress.yaml"
    cfg.write_text("geoip:\n  country_db: null\n  asn_db: null\n")
    start = run_egress("analyze", SAMPLE, "--config", cfg, "--policy", POLICY)
    assert start.returncode == 2
    assert _errors(start.stderr) == ["egress: geoip.country_db: null, and the policy has rules on countries: they would never match (name the database)"]
    check = run_egress("check", "--config", cfg, "--policy", POLICY, env={"EGRESS_METRICS__LISTEN": "127.0.0.1:0", "EGRESS_SPOOL__PATH": "null"})
    assert check.returncode == 2
    assert f"egress: {cfg}:2: geoip.country_db: null, and the policy has rules on countries: they would never match (name the database)" in check.stderr.splitlines()
    plain = tmp_path / "plain.yaml"
    plain.write_text("version: 1\n")
    assert run_egress("analyze", SAMPLE, "--config", cfg, "--policy", plain).returncode == 0


def test_capture_bpf_libpcap_cannot_compile_exits_2_at_its_line(tmp_path: Path) -> None:
    """A filter libpcap refuses (a misspelt keyword, an unknown protocol name) is refused when
    the config is read, at its line; before, a file was then read without it, silently."""
    for bpf, said in (("tcp portt 80", "can't parse filter expression: syntax error"), ("ether proto \\foo", "unknown ether proto 'foo'")):
        cfg = tmp_path / "egress.yaml"
        cfg.write_text(f"capture:\n  bpf: '{bpf}'\n")
        proc = run_egress("analyze", SAMPLE, "--config", cfg, "--policy", POLICY)
        assert proc.returncode == 2
        assert _errors(proc.stderr) == [f"egress: {cfg}:2: capture.bpf: libpcap cannot compile it: {said}"]
    cfg.write_text("capture:\n  bpf: 'not port 9999'\n")
    plain = tmp_path / "plain.yaml"
    plain.write_text("version: 1\n")
    assert run_egress("analyze", SAMPLE, "--config", cfg, "--policy", plain).returncode == 0
