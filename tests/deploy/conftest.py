"""Helpers for the deploy/ tests: the Debian tools they drive, background processes
that are always killed, free ports, and scraping /metrics.

The tools come from Debian packages that `scripts/install-system-deps --test`
installs (prometheus, prometheus-alertmanager, python3-seccomp; systemd is
there already). A test skips only when its tool is not installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka.conftest import kafka_bootstrap  # noqa: F401 - the shared broker fixture

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SANDBOX = Path(__file__).resolve().parent / "sandbox.py"
EGRESS = Path(sys.executable).with_name("egress")
WAIT_S = 90


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs the development Kafka broker started by dev/kafka/broker")


def tool(name: str, package: str) -> str:
    """The tool's path, or skip: it comes from a Debian package that is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package}: scripts/install-system-deps --test)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def egress_env(**extra: str) -> dict[str, str]:
    """The environment of a child egress: ours without EGRESS_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")}
    env.update(extra)
    return env


def http_get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read().decode()


def wait_for(what: str, probe, timeout: float = WAIT_S, procs: list[subprocess.Popen] | None = None, logs: list[Path] | None = None):  # type: ignore[no-untyped-def]
    """Call `probe` until it returns something truthy; fail after `timeout`, or as soon as one of
    `procs` has exited, with the tails of `logs`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        if any(proc.poll() is not None for proc in procs or []):
            what += " (a process exited)"
            break
        time.sleep(0.25)
    tails = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-3000:]}" for p in logs or [] if p.exists())
    pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last!r})\n{tails}", pytrace=False)


class Processes:
    """Background processes of one test, each logging to a file; all killed at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, name: str, args: list[str | Path], env: dict[str, str] | None = None, stdout: Path | None = None) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.log"
        self.logs.append(log)
        out = stdout.open("wb") if stdout else subprocess.DEVNULL
        proc = subprocess.Popen(
            [str(a) for a in args], stdin=subprocess.DEVNULL, stdout=out, stderr=log.open("wb"),
            env=env, cwd=self.directory, start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        """SIGTERM, then wait; SIGKILL (its whole session) if it does not go."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # also what it left behind (tshark, tcpdump)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def scrape(port: int, needle: str = "") -> str | None:
    """The /metrics text of 127.0.0.1:port, or None while it lacks `needle`."""
    text = http_get(f"http://127.0.0.1:{port}/metrics")
    return text if needle in text else None


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    promtool = tool("promtool", "prometheus")
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
