"""Fixtures for the tests that need Kafka. Deselect them with `-m "not kafka"`.

`kafka_bootstrap`: the development broker (dev/kafka/broker), started once per session
(the first start fetches Kafka with Maven, so it can take a minute or two) and stopped
afterwards, unless a broker already answered on the port before the session, in which
case it is left running.

`secure_broker`: a broker of the session's own for the TLS tests, run with the same jars
(`dev/kafka/broker java`) from a temporary directory on free loopback ports: SASL_SSL
with SCRAM-SHA-512 and SSL with required client certificates (mutual TLS), besides
PLAINTEXT for the readiness check. The certificates and the SCRAM password come from
tests/kafka/tls.py. It is stopped at the end of the session, whatever happened.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from tests.kafka.tls import Material, make_material, openssl_missing

REPO = Path(__file__).resolve().parents[2]
BROKER = REPO / "dev" / "kafka" / "broker"
# First start: Maven fetch (~30-60 s on a fresh machine) + format + start-up.
START_TIMEOUT_S = 900
READY_TIMEOUT_S = 90


def broker_port() -> int:
    return int(os.environ.get("EGRESS_KAFKA_PORT", "9092"))


def run_broker(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run dev/kafka/broker from an unrelated cwd, capturing its output."""
    return subprocess.run(
        [str(BROKER), *args],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    port = str(broker_port())
    was_running = run_broker("status", "--port", port).returncode == 0
    if not was_running:
        started = run_broker("start", "--port", port, timeout=START_TIMEOUT_S)
        if started.returncode != 0:
            pytest.fail(f"dev/kafka/broker start --port {port} exited {started.returncode}:\n{started.stderr}", pytrace=False)
    try:
        yield f"localhost:{port}"
    finally:
        if not was_running:
            stopped = run_broker("stop", "--port", port, timeout=120)
            if stopped.returncode != 0:
                print(f"dev/kafka/broker stop --port {port} exited {stopped.returncode}:\n{stopped.stderr}")


# ------------------------------------------------------------------ the TLS/SCRAM broker


@dataclass(frozen=True)
class SecureBroker:
    plaintext: int
    sasl_port: int
    mtls_port: int
    material: Material
    home: Path  # server.properties, data/, logs/, broker.out
    pid: int

    @property
    def sasl_ssl(self) -> str:
        return f"localhost:{self.sasl_port}"

    @property
    def mtls(self) -> str:
        return f"localhost:{self.mtls_port}"


def add_scram_argument(username: str, password: str) -> str:
    """StorageTool's --add-scram value. Its syntax has no escapes, so only safe characters pass."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", username):
        raise ValueError("the SCRAM user must be 1-64 letters, digits, '.', '_' or '-'")
    if not re.fullmatch(r"[A-Za-z0-9._~+/-]{8,256}", password):
        raise ValueError("the SCRAM password must be 8-256 letters, digits or ._~+/- (its content is not shown)")
    return f"SCRAM-SHA-512=[name={username},password={password}]"


def _free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (TIME_WAIT leftovers are fine: Kafka binds with SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports() -> range:
    """Four free ports P..P+3, P = 9192, 9202, ...: below the ephemeral range, so that no client connection
    takes one before the broker binds it, and never the development broker's 9092 or 10092."""
    for port in range(9192, 9692, 10):
        if all(map(_free, range(port, port + 4))):
            return range(port, port + 4)
    pytest.fail("no four free ports in 9192-9695", pytrace=False)


def _server_properties(plaintext: int, sasl: int, mtls: int, controller: int, material: Material, data: Path) -> str:
    """One KRaft node. SASL_SSL: TLS with broker.pem, then SCRAM-SHA-512 (the user is added at format
    time). SSL: TLS with a client certificate that must chain to ca.pem. No authorizer; the controller
    and the readiness check use PLAINTEXT."""
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{plaintext},SASL_SSL://127.0.0.1:{sasl},SSL://127.0.0.1:{mtls},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://localhost:{plaintext},SASL_SSL://localhost:{sasl},SSL://localhost:{mtls}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0

sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={material.broker}
ssl.truststore.type=PEM
ssl.truststore.location={material.ca}
ssl.client.auth=none
listener.name.ssl.ssl.client.auth=required
ssl.enabled.protocols=TLSv1.3,TLSv1.2
"""


def _format(config: Path, material: Material, home: Path) -> None:
    """kafka-storage format with the SCRAM user; the arguments go through an @file (0600, removed at once)
    so that the password is on no command line."""
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    args = home / "format.args"
    fd = os.open(args, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    scram = add_scram_argument(material.username, material.password)
    with os.fdopen(fd, "w") as f:
        f.write(f"format\n--config\n{config}\n--cluster-id={cluster_id}\n--add-scram\n{scram}\n")
    try:
        done = run_broker("java", "-Xmx256m", "-XX:TieredStopAtLevel=1", f"-Dkafka.logs.dir={home / 'logs'}",
                          "kafka.tools.StorageTool", f"@{args}", timeout=START_TIMEOUT_S)  # fmt: skip
    finally:
        args.unlink()
    if done.returncode != 0:
        output = (done.stdout + done.stderr).replace(material.password, "***")
        pytest.fail(f"formatting {home / 'data'} exited {done.returncode}:\n{output}", pytrace=False)


def _die_with_pytest() -> None:
    """In the child, before exec: get SIGTERM when this process ends, even if it is killed."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


async def _list_topics(bootstrap: str, **security: Any) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **security)
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        await admin.close()


def _log_tail(home: Path) -> str:
    return "".join(
        f"--- {p} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:]) + "\n"
        for p in (home / "broker.out", home / "logs" / "server.log")
        if p.exists()
    )


def _wait_ready(proc: subprocess.Popen[bytes], broker: SecureBroker) -> None:
    """PLAINTEXT answers, then topics are listed over SASL_SSL with the SCRAM user and over mutual TLS,
    trusting only ca.pem: that proves the certificate, both listeners and the credential."""
    m = broker.material
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the TLS/SCRAM broker exited {proc.returncode} during start-up:\n{_log_tail(broker.home)}", pytrace=False)
        try:
            asyncio.run(_list_topics(f"localhost:{broker.plaintext}"))
            break
        except (KafkaError, OSError) as e:
            if time.monotonic() > deadline:
                pytest.fail(f"the TLS/SCRAM broker did not answer within {READY_TIMEOUT_S} s ({e!r}):\n{_log_tail(broker.home)}", pytrace=False)
        time.sleep(0.5)
    sasl = dict(sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=m.username, sasl_plain_password=m.password)
    checks = {
        broker.sasl_ssl: dict(security_protocol="SASL_SSL", ssl_context=create_ssl_context(cafile=str(m.ca)), **sasl),
        broker.mtls: dict(security_protocol="SSL", ssl_context=create_ssl_context(cafile=str(m.ca), certfile=str(m.client_cert),
                                                                                   keyfile=str(m.client_key))),
    }  # fmt: skip
    for bootstrap, security in checks.items():
        try:
            asyncio.run(_list_topics(bootstrap, **security))
        except (KafkaError, OSError) as e:
            pytest.fail(f"the TLS/SCRAM broker answers on PLAINTEXT, but listing topics at {bootstrap} failed: {e!r}\n"
                        f"{_log_tail(broker.home)}", pytrace=False)  # fmt: skip


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    if openssl_missing():
        pytest.skip("openssl is not installed")
    material = make_material(tmp_path_factory.mktemp("kafka-tls"))
    home = tmp_path_factory.mktemp("kafka-secure")
    plaintext, sasl, mtls, controller = _free_ports()
    config = home / "server.properties"
    config.write_text(_server_properties(plaintext, sasl, mtls, controller, material, home / "data"))
    _format(config, material, home)
    with (home / "broker.out").open("wb") as out:
        proc = subprocess.Popen(
            [str(BROKER), "java", "-Xmx512m", f"-Dkafka.logs.dir={home / 'logs'}", "-Degress.kafka.log=server", "kafka.Kafka", str(config)],
            cwd=home, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_pytest,
        )  # fmt: skip
    try:
        broker = SecureBroker(plaintext, sasl, mtls, material, home, proc.pid)
        _wait_ready(proc, broker)
        yield broker
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
