"""Fixtures for tests that need the development Kafka broker (deploy/kafka/broker).

`kafka_bootstrap` starts the broker once per session (the first start fetches
Kafka with Maven, so it can take a minute or two) and stops it afterwards,
unless a broker already answered on the port before the session, in which
case it is left running. Deselect these tests with `-m "not kafka"`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BROKER = REPO / "deploy" / "kafka" / "broker"
# First start: Maven fetch (~30-60 s on a fresh machine) + format + start-up.
START_TIMEOUT_S = 900


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs the development Kafka broker started by deploy/kafka/broker")


def broker_port() -> int:
    return int(os.environ.get("EGRESS_KAFKA_PORT", "9092"))


def run_broker(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run deploy/kafka/broker from an unrelated cwd, capturing its output."""
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
            pytest.fail(
                f"deploy/kafka/broker start --port {port} exited {started.returncode}:\n{started.stderr}",
                pytrace=False,
            )
    try:
        yield f"localhost:{port}"
    finally:
        if not was_running:
            stopped = run_broker("stop", "--port", port, timeout=120)
            if stopped.returncode != 0:
                print(f"deploy/kafka/broker stop --port {port} exited {stopped.returncode}:\n{stopped.stderr}")
