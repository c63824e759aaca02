"""`egress check --config F`: what the config names is there on this host (issue #13: nothing
typed wrong goes unnoticed), one located line per problem; `--show-config` tells each
value's origin."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from prometheus_client import CollectorRegistry, start_http_server

from egress.config import DEFAULT_CONFIG_PATH, Config, GeoipConfig, load_config
from egress.health import Health
from egress.listener import serve_metrics
from egress.telemetry import AgentMetrics
from egress.webconfig import load_web_config
from tests.certs import TestCA
from tests.conftest import POLICY, run_egress

USER = pwd.getpwuid(os.geteuid()).pw_name


def _config(tmp_path: Path, dbs: dict[str, Path], **changes: dict[str, Any]) -> Path:
    """A config good on this host (`lo`, test GeoIP files, a spool to be made, any port),
    with `changes` merged into its sections."""
    data: dict[str, dict[str, Any]] = {
        "capture": {"interfaces": ["lo"]},
        "geoip": {"country_db": str(dbs["country"]), "asn_db": str(dbs["asn"])},
        "spool": {"path": str(tmp_path / "state" / "spool")},
        "metrics": {"listen": "127.0.0.1:0"},
    }
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "egress.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _line(path: Path, start: str) -> int:
    """The number of the file's line that starts with `start`."""
    return next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(start))


def _check(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    proc = run_egress("check", "--policy", POLICY, *args, env=env)
    assert "Traceback" not in proc.stderr
    return proc.returncode, [ln for ln in proc.stderr.splitlines() if ln.startswith("egress: ")]


@pytest.mark.parametrize("edition", ["country", "city"])
def test_a_config_good_on_this_host_passes(edition: str, geoip: dict[str, Path], tmp_path: Path) -> None:
    """A Country or a City database, `lo`, a spool directory to be made, port 0: exit 0,
    and the check made nothing (the spool is the agent's to create)."""
    cfg = _config(tmp_path, geoip, geoip={"country_db": str(geoip[edition])})
    proc = run_egress("check", "--config", cfg, "--policy", POLICY)
    assert proc.returncode == 0, proc.stderr
    assert "egress: " not in proc.stderr
    assert proc.stdout.splitlines()[-1] == "host OK: GeoIP databases, capture interfaces, spool directory, metrics address"
    assert not (tmp_path / "state").exists()


def test_a_missing_geoip_file_exits_3(geoip: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(tmp_path, geoip, geoip={"asn_db": str(tmp_path / "nope.mmdb")})
    code, errors = _check("--config", cfg)
    assert code == 3
    assert errors == [f"egress: {cfg}:{_line(cfg, '  asn_db:')}: geoip.asn_db: {tmp_path / 'nope.mmdb'}: GeoIP asn database not found (MaxMind GeoLite2 via geoipupdate)"]


def test_an_asn_database_as_country_db_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(tmp_path, geoip, geoip={"country_db": str(geoip["asn"])})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  country_db:')}: geoip.country_db: {geoip['asn']}: is a GeoLite2-ASN database, expected a Country or City database"]


def test_a_country_database_as_asn_db_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(tmp_path, geoip, geoip={"asn_db": str(geoip["country"])})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  asn_db:')}: geoip.asn_db: {geoip['country']}: is a GeoIP2-Country database, expected an ASN database (GeoLite2-ASN)"]


def test_a_file_that_is_no_mmdb_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.mmdb"
    junk.write_text("hello\n")
    cfg = _config(tmp_path, geoip, geoip={"country_db": str(junk)})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  country_db:')}: geoip.country_db: {junk}: not a MaxMind mmdb database: Error opening database file ({junk}). Is this a valid MaxMind DB file?"]


@pytest.mark.skipif(any(p and p.exists() for p in (GeoipConfig().country_db, GeoipConfig().asn_db)), reason="this host has GeoIP files at the default places")
def test_absent_default_geoip_files_are_missing_where_the_policy_needs_them(geoip: dict[str, Path], tmp_path: Path) -> None:
    """As the services decide: absent at their default places they exit 3 under a policy with
    rules on countries and ASNs, and are a warning (exit 0) under one without."""
    cfg = tmp_path / "egress.yaml"
    cfg.write_text(f"capture:\n  interfaces: [lo]\nspool:\n  path: {tmp_path / 'spool'}\nmetrics:\n  listen: 127.0.0.1:0\n")
    code, errors = _check("--config", cfg)
    assert code == 3
    assert errors == [
        "egress: geoip.country_db: /var/lib/GeoIP/GeoLite2-Country.mmdb: GeoIP country database not found, and the policy has rules on countries (give --geoip-country or run geoipupdate)",
        "egress: geoip.asn_db: /var/lib/GeoIP/GeoLite2-ASN.mmdb: GeoIP asn database not found, and the policy has rules on ASNs (give --geoip-asn or run geoipupdate)",
    ]
    bare = tmp_path / "policy.yaml"
    bare.write_text("version: 1\ngroups: []\n")
    proc = run_egress("check", "--config", cfg, "--policy", bare)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "egress: warning: geoip.country_db: /var/lib/GeoIP/GeoLite2-Country.mmdb: GeoIP country database not found: the country fields stay empty",
        "egress: warning: geoip.asn_db: /var/lib/GeoIP/GeoLite2-ASN.mmdb: GeoIP asn database not found: the asn fields stay empty",
    ]


def test_an_interface_this_host_lacks_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    assert not Path("/sys/class/net/nosuchif0").exists()
    cfg = _config(tmp_path, geoip, capture={"interfaces": ["lo", "nosuchif0"]})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  interfaces:')}: capture.interfaces: nosuchif0: no such network interface on this host"]


def test_a_spool_directory_that_cannot_be_written_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    """/sys refuses a new file even to root, as a read-only mount would."""
    cfg = _config(tmp_path, geoip, spool={"path": "/sys"})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  path:')}: spool.path: /sys: is not writable by user {USER}: Permission denied"]


def test_a_spool_directory_that_cannot_be_created_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cfg = _config(tmp_path, geoip, spool={"path": str(tmp_path / "file" / "spool")})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  path:')}: spool.path: {tmp_path / 'file' / 'spool'}: cannot be created: {tmp_path / 'file'} is not a directory"]


def test_a_spool_set_to_null_is_not_checked(geoip: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(tmp_path, geoip, spool={"path": None})
    code, errors = _check("--config", cfg)
    assert (code, errors) == (0, [])


def test_a_metrics_address_in_use_exits_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        listen = f"127.0.0.1:{holder.getsockname()[1]}"
        cfg = _config(tmp_path, geoip, metrics={"listen": listen})
        code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  listen:')}: metrics.listen: {listen}: cannot be bound: Address already in use"]


def test_a_metrics_address_held_by_egress_is_a_warning(geoip: dict[str, Path], tmp_path: Path) -> None:
    """`check` before a restart finds the running service's /metrics there: no problem."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=AgentMetrics(CollectorRegistry()).registry)
    try:
        listen = f"127.0.0.1:{server.server_address[1]}"
        cfg = _config(tmp_path, geoip, metrics={"listen": listen})
        code, errors = _check("--config", cfg)
    finally:
        server.shutdown()
        thread.join()
    assert code == 0
    assert errors == [f"egress: warning: {cfg}:{_line(cfg, '  listen:')}: metrics.listen: {listen}: in use by a running egress (free once it stops: fine before a restart)"]


def test_every_problem_is_told_and_a_wrong_value_outweighs_a_missing_file(geoip: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(tmp_path, geoip, geoip={"asn_db": str(tmp_path / "nope.mmdb")}, capture={"interfaces": ["nosuchif0"]}, spool={"path": "/sys"})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert [line.split(": ", 3)[2] for line in errors] == ["geoip.asn_db", "capture.interfaces", "spool.path"]


@pytest.mark.skipif(DEFAULT_CONFIG_PATH.exists(), reason=f"{DEFAULT_CONFIG_PATH} is read when there is no --config")
def test_without_a_config_file_only_values_given_are_checked(tmp_path: Path) -> None:
    """The defaults (spool, port 9108, /var/lib/GeoIP) are not this host's to have; what a
    flag or a variable gives is, named by where it came from."""
    proc = run_egress("check", "--policy", POLICY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "host: only values from flags and EGRESS_* variables checked (no config file)"
    code, errors = _check("--geoip-country", tmp_path / "nope.mmdb", env={"EGRESS_CAPTURE__INTERFACES": "[nosuchif0]"})
    assert code == 2
    assert errors == [
        f"egress: command line: geoip.country_db: {tmp_path / 'nope.mmdb'}: GeoIP country database not found (MaxMind GeoLite2 via geoipupdate)",
        "egress: environment EGRESS_CAPTURE__INTERFACES: capture.interfaces: nosuchif0: no such network interface on this host",
    ]


def test_show_config_tells_each_value_s_origin_and_masks_the_password(geoip: dict[str, Path], tmp_path: Path) -> None:
    cfg = tmp_path / "egress.yaml"
    cfg.write_text("site: lab\nflows:\n  idle_timeout: 30s\n")
    env = {"EGRESS_KAFKA__GROUP_ID": "rules-lab", "EGRESS_KAFKA__SASL_PASSWORD": "hunter2"}
    proc = run_egress("check", "--config", cfg, "--geoip-asn", geoip["asn"], "--show-config", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for expected in (
        f"site: lab  # file {cfg}:1",
        f"  idle_timeout: 30.0  # file {cfg}:3",
        "  max_flows: 200000  # default",
        "  group_id: rules-lab  # env EGRESS_KAFKA__GROUP_ID",
        "  sasl_password: '***'  # env EGRESS_KAFKA__SASL_PASSWORD",
        f"  asn_db: {geoip['asn']}  # flag",
        "  interfaces: []  # default",
        "  bootstrap_servers: ['localhost:9092']  # default",
    ):
        assert expected in lines
    assert "hunter2" not in proc.stdout
    shown = yaml.safe_load(proc.stdout)  # the comments aside, it is the config itself
    shown["kafka"]["sasl_password"] = "hunter2"
    assert Config.model_validate(shown) == load_config(cfg, {"geoip": {"asn_db": geoip["asn"]}}, environ=env)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCA(directory)
    cert, key = ca.issue("server")
    soon, soon_key = ca.issue("soon", days=10)
    expired, expired_key = ca.issue("expired", days=-1, not_before_days=-30)
    _, other_key = TestCA(directory, "other").issue("stranger")
    return {"dir": directory, "ca": ca.cert_file, "cert": cert, "key": key, "soon": soon, "soon_key": soon_key,
            "expired": expired, "expired_key": expired_key, "other_key": other_key}  # fmt: skip


def _web(tmp_path: Path, cert: Path, key: Path, extra: str = "", name: str = "web.yml") -> Path:
    path = tmp_path / name
    path.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n{extra}")
    return path


def test_a_good_web_config_passes(geoip: dict[str, Path], pki: dict[str, Path], tmp_path: Path) -> None:
    """A certificate valid for 90 days and its key: nothing to say, and the last line names the web config."""
    cfg = _config(tmp_path, geoip, metrics={"web_config": str(_web(tmp_path, pki["cert"], pki["key"]))})
    proc = run_egress("check", "--config", cfg, "--policy", POLICY)
    assert proc.returncode == 0, proc.stderr
    assert "egress: " not in proc.stderr
    assert proc.stdout.splitlines()[-1] == "host OK: GeoIP databases, capture interfaces, spool directory, metrics address and its web config"


def test_an_absent_web_config_is_told_at_the_key_naming_it(geoip: dict[str, Path], tmp_path: Path) -> None:
    """The config's line that names the file, as for the GeoIP files."""
    cfg = _config(tmp_path, geoip, metrics={"web_config": str(tmp_path / "web.yml")})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  web_config:')}: metrics.web_config: {tmp_path / 'web.yml'}: not found"]


def test_a_key_that_does_not_match_the_certificate_exits_2(geoip: dict[str, Path], pki: dict[str, Path], tmp_path: Path) -> None:
    """The line is the web config's own, as at start."""
    web = _web(tmp_path, pki["cert"], pki["other_key"])
    code, errors = _check("--config", _config(tmp_path, geoip, metrics={"web_config": str(web)}))
    assert code == 2
    assert errors == [f"egress: {web}:3: tls_server_config.key_file: {pki['other_key']}: does not match the certificate in {pki['cert']}"]


def test_an_expired_certificate_exits_2_and_one_expiring_soon_is_a_warning(geoip: dict[str, Path], pki: dict[str, Path], tmp_path: Path) -> None:
    """An expired certificate loads (OpenSSL does not look at dates) but fails every scrape: check says so."""
    web = _web(tmp_path, pki["expired"], pki["expired_key"])
    code, errors = _check("--config", _config(tmp_path, geoip, metrics={"web_config": str(web)}))
    expired = x509.load_pem_x509_certificate(pki["expired"].read_bytes()).not_valid_after_utc
    assert code == 2
    assert errors == [f"egress: {web}:2: tls_server_config.cert_file: {pki['expired']}: expired on {expired:%Y-%m-%d %H:%M} UTC: every scrape fails"]
    web = _web(tmp_path, pki["soon"], pki["soon_key"])
    code, errors = _check("--config", _config(tmp_path, geoip, metrics={"web_config": str(web)}))
    soon = x509.load_pem_x509_certificate(pki["soon"].read_bytes()).not_valid_after_utc
    assert code == 0
    assert errors == [f"egress: warning: {web}:2: tls_server_config.cert_file: {pki['soon']}: expires on {soon:%Y-%m-%d} (in 9 days)"]


def test_a_metrics_address_held_by_egress_over_tls_is_a_warning(geoip: dict[str, Path], pki: dict[str, Path], tmp_path: Path) -> None:
    """Known by the certificate it presents, even when it asks for a client certificate `check` lacks;
    a TLS server with another certificate there is another program."""
    mtls = _web(tmp_path, pki["cert"], pki["key"], f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki['ca']}\n")
    listen = serve_metrics("127.0.0.1:0", Health(), load_web_config(mtls))
    cfg = _config(tmp_path, geoip, metrics={"listen": listen, "web_config": str(mtls)})
    code, errors = _check("--config", cfg)
    assert code == 0
    assert errors == [f"egress: warning: {cfg}:{_line(cfg, '  listen:')}: metrics.listen: {listen}: in use by a running egress (free once it stops: fine before a restart)"]
    other = TestCA(tmp_path, "another")
    listen = serve_metrics("127.0.0.1:0", Health(), load_web_config(_web(tmp_path, *other.issue("impostor"), name="impostor.yml")))
    cfg = _config(tmp_path, geoip, metrics={"listen": listen, "web_config": str(mtls)})
    code, errors = _check("--config", cfg)
    assert code == 2
    assert errors == [f"egress: {cfg}:{_line(cfg, '  listen:')}: metrics.listen: {listen}: cannot be bound: Address already in use"]
