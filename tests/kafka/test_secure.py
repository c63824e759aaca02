"""Kafka over TLS: SASL_SSL with SCRAM-SHA-512 and mutual TLS, against the real broker.

The module fixture makes a CA, a broker certificate for localhost/127.0.0.1, a client
certificate and a SCRAM password with `openssl` (tests/kafka/tls.py), and starts
`deploy/kafka/broker start --port P --secure DIR` on a free port (PLAINTEXT on P,
SASL_SSL on P+2, mutual TLS on P+3); it stops that broker at the end, whatever happened.
It never touches the default broker on localhost:9092. egress is configured only
through EGRESS_* environment variables, as in a container.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PCAPS, POLICY, ndjson, run_egress
from tests.kafka.test_streaming import Rules, topics_env
from tests.kafka.tls import Material, make_material, openssl_missing

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
BROKER = REPO / "deploy" / "kafka" / "broker"
CAPTURE = PCAPS / "trunk-qinq-mixed.pcap"
FIRST_PORT = 9192  # then 9202, 9212, ...: never the default broker's 9092
# The first start may have to fetch Kafka with Maven; later ones take 10-20 s.
START_TIMEOUT_S = 900


@dataclass(frozen=True)
class SecureBroker:
    port: int  # PLAINTEXT
    material: Material

    @property
    def sasl_ssl(self) -> str:
        return f"localhost:{self.port + 2}"

    @property
    def mtls(self) -> str:
        return f"localhost:{self.port + 3}"


def _broker(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BROKER), *args], cwd="/", capture_output=True, text=True, timeout=timeout, check=False,
        stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def _free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (TIME_WAIT leftovers are fine: Kafka binds with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_set() -> int:
    """A port P with P, P+2, P+3 and the controller's P+1000 all free on 127.0.0.1."""
    for port in range(FIRST_PORT, FIRST_PORT + 500, 10):
        if all(_free(p) for p in (port, port + 2, port + 3, port + 1000)):
            return port
    pytest.fail(f"no free port set in {FIRST_PORT}-{FIRST_PORT + 500}", pytrace=False)


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if openssl_missing():
        pytest.skip("openssl is not installed")
    material = make_material(tmp_path_factory.mktemp("kafka-tls"))
    port = _free_port_set()
    ours = True
    try:
        started = _broker("start", "--port", str(port), "--secure", str(material.dir), timeout=START_TIMEOUT_S)
        if started.returncode != 0:
            ours = "already runs" not in started.stderr  # someone else's broker: leave it alone
            pytest.fail(f"deploy/kafka/broker start --port {port} --secure exited {started.returncode}:\n{started.stderr}", pytrace=False)
        yield SecureBroker(port, material)
    finally:
        if ours:
            stopped = _broker("stop", "--port", str(port), timeout=120)
            if stopped.returncode != 0:
                print(f"deploy/kafka/broker stop --port {port} exited {stopped.returncode}:\n{stopped.stderr}")


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


def test_secure_start_again_is_a_noop_and_other_material_is_refused(secure_broker: SecureBroker, tmp_path: Path) -> None:
    """start --secure with the same DIR says already running; with other material it exits 1 and leaves the broker up."""
    port = str(secure_broker.port)
    again = _broker("start", "--port", port, "--secure", str(secure_broker.material.dir), timeout=30)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr and f"SASL_SSL (SCRAM-SHA-512) on {secure_broker.sasl_ssl}" in again.stderr
    other = make_material(tmp_path / "other")
    refused = _broker("start", "--port", port, "--secure", str(other.dir), timeout=30)
    assert refused.returncode == 1, refused.stderr
    assert "not with the material" in refused.stderr
    status = _broker("status", "--port", port, timeout=30)
    assert status.returncode == 0 and f"mutual TLS on {secure_broker.mtls}" in status.stderr, status.stderr
    for out in (again, refused, status):
        assert secure_broker.material.password not in out.stderr and other.password not in out.stderr


def test_secure_start_checks_its_directory_first(tmp_path: Path) -> None:
    """Bad --secure use exits 2 before Java or Kafka are touched, and never shows the password."""
    env = {**os.environ, "EGRESS_KAFKA_HOME": str(tmp_path / "home")}
    port = str(_free_port_set())
    assert _broker("status", "--port", port, "--secure", str(tmp_path), env=env).returncode == 2
    assert _broker("start", "--port", port, "--secure", str(tmp_path / "absent"), env=env).returncode == 2
    missing = _broker("start", "--port", port, "--secure", str(tmp_path), env=env)
    assert missing.returncode == 2 and "ca.pem is missing" in missing.stderr, missing.stderr
    d = tmp_path / "m"
    d.mkdir()
    (d / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    (d / "broker.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----\n" + (d / "ca.pem").read_text())
    (d / "scram-username").write_text("egress\n")
    (d / "scram-password").write_text("bad password, with ] and spaces\n")
    pkcs1 = _broker("start", "--port", port, "--secure", str(d), env=env)
    assert pkcs1.returncode == 2 and "PKCS#8" in pkcs1.stderr, pkcs1.stderr
    (d / "broker.pem").write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n" + (d / "ca.pem").read_text())
    bad = _broker("start", "--port", port, "--secure", str(d), env=env)
    assert bad.returncode == 2 and "scram-password must be" in bad.stderr, bad.stderr
    assert "spaces" not in bad.stderr
    assert not (tmp_path / "home" / "libs").exists()


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
