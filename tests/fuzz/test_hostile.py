"""Hostile names (control characters, quotes, NULs, invalid UTF-8, 10 kB long) in DNS,
TLS SNI and HTTP Host: every output line stays one valid JSON document, logs stay JSON,
and no name reaches a metric label."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_egress
from tests.fuzz import hostile


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hostile.build(tmp_path_factory.mktemp("hostile") / "hostile.pcap")


def _json_lines(text: str, what: str) -> list[dict]:
    """Each "\\n"-separated line is one JSON object (NDJSON readers split on "\\n" only)."""
    docs = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"{what} line {n} is not JSON ({exc}): {line[:300]!r}") from None
        assert isinstance(doc, dict), f"{what} line {n} is not a JSON object: {line[:300]!r}"
        assert "\r" not in line and "\u2028" not in line and "\u2029" not in line and "\x85" not in line, f"{what} line {n} holds a raw line break: {line[:300]!r}"
        docs.append(doc)
    return docs


def _domains(doc: dict) -> list[str]:
    dst = doc.get("destination", {})
    return [dst.get("domain", ""), *doc.get("egress", {}).get("destination", {}).get("domains", [])]


def test_analyze_keeps_hostile_names_inside_json(capture: Path, tmp_path: Path) -> None:
    """`analyze --format json --flows-out --log-format json` exits 0 and every stdout, flows-out and stderr line is one JSON object."""
    flows = tmp_path / "flows.ndjson"
    proc = run_egress("analyze", capture, "--format", "json", "--flows-out", flows, "--log-format", "json", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    alerts = _json_lines(proc.stdout, "stdout")
    records = _json_lines(flows.read_text(encoding="utf-8"), "flows-out")
    _json_lines(proc.stderr, "stderr")
    assert alerts and records
    # The hostile names did travel: they are the point of the test.
    named = {r["destination"]["ip"]: _domains(r) for r in records if hostile.MARKER in " ".join(_domains(r))}
    assert set(hostile.SERVERS.values()) <= set(named), f"hostile names were not learned for every server: {sorted(named)}"
    assert any(hostile.MARKER in " ".join(_domains(a)) for a in alerts)
    for names in named.values():
        assert all(len(n) <= 255 for n in names), "a name longer than a DNS name was kept whole"


def _wait_for(log: Path, event: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == event:
                return doc
        if proc.poll() is not None:
            raise AssertionError(f"egress run exited {proc.returncode} before {event!r}: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {event!r} within {timeout} s: {log.read_text()[-2000:]}")


def test_run_metrics_carry_no_hostile_label(capture: Path, tmp_path: Path) -> None:
    """`run --read --linger` serves /metrics that parse, with no hostile name in any label; alerts-out stays NDJSON; SIGTERM exits 0."""
    alerts_out, log = tmp_path / "alerts.ndjson", tmp_path / "run.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")}
    env["EGRESS_METRICS__LISTEN"] = "127.0.0.1:0"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "egress", "run", "--read", str(capture), "--alerts-out", str(alerts_out), "--linger", "--log-format", "json"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            address = _wait_for(log, "metrics_listening", proc)["address"]
            _wait_for(log, "lingering", proc)
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:  # loopback only
                text = resp.read().decode("utf-8")
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    families = list(text_string_to_metric_families(text))
    egress_families = [f for f in families if f.name.startswith("egress_")]
    assert any(f.name.startswith("egress_alerts") and f.samples for f in egress_families), "no alert metric: the capture raised nothing"
    for family in egress_families:
        for sample in family.samples:
            for label, value in sample.labels.items():
                assert len(value) <= 128, f"{sample.name}{{{label}}} is {len(value)} characters long"
                for bad in hostile.BAD_FRAGMENTS:
                    assert bad not in value.lower(), f"{sample.name}{{{label}={value[:100]!r}}} carries {bad!r}"
                assert not any(ch in value for ch in hostile.SERVERS.values()), f"{sample.name}{{{label}}} carries an IP"
    assert code == 0, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()
    _json_lines(log.read_text(encoding="utf-8"), "stderr")
    alerts = _json_lines(alerts_out.read_text(encoding="utf-8"), "alerts-out")
    assert any(hostile.MARKER in " ".join(_domains(a)) for a in alerts)
