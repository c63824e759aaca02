"""Kafka over TLS: SASL_SSL with SCRAM-SHA-512 and mutual TLS, against the real broker.

The session fixture `secure_broker` (tests/kafka/conftest.py) makes a CA, a broker certificate
for localhost/127.0.0.1, a client certificate and a SCRAM password with `openssl`
(tests/kafka/tls.py), and runs a broker of its own with the development broker's jars on free
ports (SASL_SSL, mutual TLS, and PLAINTEXT for its readiness check); it stops that broker at the
end, whatever happened. It never touches the default broker on localhost:9092. egress is
configured only through EGRESS_* environment variables, as in a container.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PCAPS, POLICY, ndjson, run_egress
from tests.kafka.conftest import SecureBroker, add_scram_argument, run_broker
from tests.kafka.test_streaming import Rules, topics_env

pytestmark = pytest.mark.kafka

CAPTURE = PCAPS / "trunk-qinq-mixed.pcap"


def _sasl_env(broker: SecureBroker, **extra: str) -> dict[str, str]:
    m = broker.material
    env = {
        "EGRESS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "EGRESS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "EGRESS_KAFKA__SASL_USERNAME": m.username,
        "EGRESS_KAFKA__SASL_PASSWORD": m.password,
        "EGRESS_KAFKA__SSL_CAFILE": str(m.ca),
    }
    env.update(extra)
    return topics_env(broker.sasl_ssl, **{k: v for k, v in env.items() if v})


def _mtls_env(broker: SecureBroker, **extra: str) -> dict[str, str]:
    m = broker.material
    env = {
        "EGRESS_KAFKA__SECURITY_PROTOCOL": "SSL",
        "EGRESS_KAFKA__SSL_CAFILE": str(m.ca),
        "EGRESS_KAFKA__SSL_CERTFILE": str(m.client_cert),
        "EGRESS_KAFKA__SSL_KEYFILE": str(m.client_key),
    }
    env.update(extra)
    return topics_env(broker.mtls, **{k: v for k, v in env.items() if v})


def _geo_args(geoip: dict[str, Path]) -> tuple[str | Path, ...]:
    return ("--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])


def _by_id(alerts: list[dict]) -> list[dict]:
    return sorted(alerts, key=lambda a: a["event"]["id"])


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("egress: ")]


@pytest.mark.parametrize("transport", ["SASL_SSL-SCRAM", "mutual-TLS"])
def test_agent_and_rules_over_tls_give_the_alerts_of_analyze(transport: str, secure_broker: SecureBroker, geoip: dict[str, Path], tmp_path: Path) -> None:
    """agent --read and rules, configured only by EGRESS_* variables, deliver over TLS the alerts analyze finds."""
    offline = run_egress("analyze", CAPTURE, *_geo_args(geoip), "--format", "json")
    assert offline.returncode == 0, offline.stderr
    expected = _by_id(ndjson(offline.stdout))
    assert expected, "the capture should give alerts under the example policy"
    env = _sasl_env(secure_broker) if transport == "SASL_SSL-SCRAM" else _mtls_env(secure_broker)
    agent = run_egress("agent", "--read", CAPTURE, *_geo_args(geoip), env=env, timeout=90)
    assert agent.returncode == 0, agent.stderr
    rules = Rules(env, tmp_path / "alerts.ndjson", *_geo_args(geoip))
    try:
        streamed = rules.wait_for(len(expected), timeout=60)
        assert rules.stop() == 0, rules.log.read_text()[-3000:]
    finally:
        if rules.proc.poll() is None:
            rules.proc.kill()
            rules.proc.wait(timeout=30)
    assert _by_id(streamed) == expected
    password = secure_broker.material.password
    assert password not in agent.stdout + agent.stderr + rules.log.read_text()


def test_wrong_password_exits_3_without_showing_it(secure_broker: SecureBroker) -> None:
    """A wrong SCRAM password: rules exits 3 with one line naming Kafka, and no password is printed."""
    wrong = "Wrong-" + secure_broker.material.password[::-1]
    proc = run_egress("rules", env=_sasl_env(secure_broker, EGRESS_KAFKA__SASL_PASSWORD=wrong), timeout=90)
    assert proc.returncode == 3, proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "Kafka" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert "SaslAuthenticationFailed" in proc.stderr or "invalid credentials" in proc.stderr, proc.stderr  # failed for the right reason
    assert "authentication failed" in errors[0] and "unreachable" not in errors[0], errors[0]  # and says so
    output = proc.stdout + proc.stderr
    assert wrong not in output and secure_broker.material.password not in output


@pytest.mark.parametrize("trust", ["system-trust", "another-CA"])
def test_a_client_that_does_not_trust_the_broker_ca_is_refused(trust: str, secure_broker: SecureBroker) -> None:
    """Without the broker's CA (system trust, or another CA) the TLS handshake fails: rules exits 3."""
    cafile = "" if trust == "system-trust" else str(secure_broker.material.other_ca)
    env = _sasl_env(secure_broker, EGRESS_KAFKA__SSL_CAFILE=cafile)
    assert ("EGRESS_KAFKA__SSL_CAFILE" in env) == bool(cafile)
    proc = run_egress("rules", env=env, timeout=90)
    assert proc.returncode == 3, proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "Kafka" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr, proc.stderr
    assert "certificate is not trusted" in errors[0] and "kafka.ssl_cafile" in errors[0], errors[0]
    assert secure_broker.material.password not in proc.stdout + proc.stderr


def test_mutual_tls_without_a_client_certificate_is_refused(secure_broker: SecureBroker) -> None:
    """The mutual-TLS listener refuses a client that trusts the CA but has no certificate: rules exits 3."""
    proc = run_egress("rules", env=_mtls_env(secure_broker, EGRESS_KAFKA__SSL_CERTFILE="", EGRESS_KAFKA__SSL_KEYFILE=""), timeout=90)
    assert proc.returncode == 3, proc.stderr
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "Kafka" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_password_is_on_no_command_line_and_in_no_broker_file(secure_broker: SecureBroker) -> None:
    """The SCRAM user is added at format time through an @file that is gone afterwards: the password is on no
    command line and in none of the broker's files; dev/kafka/broker status sees the broker on its PLAINTEXT port."""
    password = secure_broker.material.password.encode()
    cmdline = Path(f"/proc/{secure_broker.pid}/cmdline").read_bytes()
    assert b"kafka.Kafka" in cmdline and password not in cmdline
    files = [p for p in secure_broker.home.rglob("*") if p.is_file()]
    assert any(p.name == "meta.properties" for p in files) and not any(p.suffix == ".args" for p in files), files
    assert [p for p in files if password in p.read_bytes()] == []
    status = run_broker("status", "--port", str(secure_broker.plaintext), timeout=30)
    assert status.returncode == 0 and f"running: Kafka answers on localhost:{secure_broker.plaintext}" in status.stderr, status.stderr


@pytest.mark.parametrize(("username", "password", "why"), [
    ("egress", "bad password, with ] and spaces", "password must be"),
    ("egress", "short", "password must be"),
    ("eg,ress=x", "Good.Password-123", "user must be"),
])  # fmt: skip
def test_scram_credentials_that_add_scram_cannot_carry_are_refused(username: str, password: str, why: str) -> None:
    """--add-scram has no escapes: a user or password outside its safe characters is refused before Kafka
    is run, and the message does not show the password."""
    assert add_scram_argument("egress", "Good.Password-123") == "SCRAM-SHA-512=[name=egress,password=Good.Password-123]"
    with pytest.raises(ValueError, match=why) as refused:
        add_scram_argument(username, password)
    assert password not in str(refused.value)


# ------------------------------------------------------------ settings that once broke
# These need no broker.


@pytest.mark.parametrize("what", ["missing-cafile", "cafile-without-certificates"])
def test_an_unusable_ssl_cafile_is_one_line_and_exit_2(what: str, tmp_path: Path) -> None:
    """An ssl_cafile that is missing or holds no certificate: one line naming the file, exit 2, no traceback."""
    cafile = tmp_path / "ca.pem"
    if what == "cafile-without-certificates":
        cafile.write_text("not a certificate\n")
    env = {"EGRESS_KAFKA__BOOTSTRAP_SERVERS": "[127.0.0.1:1]", "EGRESS_KAFKA__SECURITY_PROTOCOL": "SSL",
           "EGRESS_KAFKA__SSL_CAFILE": str(cafile), "EGRESS_METRICS__LISTEN": "127.0.0.1:0", "EGRESS_SPOOL__PATH": "null"}  # fmt: skip
    proc = run_egress("rules", env=env, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 2
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and str(cafile) in errors[0]


@pytest.mark.parametrize("password", ["s3cret #1", "'quoted'", "12345678", "  padded  ", "[brackets]", "~"])
def test_the_sasl_password_from_the_environment_is_taken_verbatim(password: str, tmp_path: Path) -> None:
    """EGRESS_KAFKA__SASL_PASSWORD is a secret string: egress must not read it as YAML."""
    from egress.config import load_config

    empty = tmp_path / "egress.yaml"
    empty.write_text("{}\n")
    cfg = load_config(empty, environ={"EGRESS_KAFKA__SASL_PASSWORD": password})
    assert cfg.kafka.sasl_password is not None
    assert cfg.kafka.sasl_password.get_secret_value() == password
