"""The /healthz registry (egress/health.py) on a clock of the test's own, and the capture
events that drive it. The endpoint itself, on real processes: tests/deploy/test_healthz.py."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from egress.health import CAPTURE_STALE_SECONDS, INTERFACE_AWAY_SECONDS, Health
from egress.telemetry import AgentMetrics


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_check_fails_until_its_first_beat_then_when_the_beats_stop() -> None:
    """"starting" (or what it waits for) before the first beat; ok while beats come within
    `stale_after`; the `missing` reason with the seconds since the last beat after that."""
    clock = _Clock()
    health = Health(clock)
    check = health.check("kafka consumer", stale_after=30.0, starting="not polling yet", missing="no poll")
    assert health.failing() == ["kafka consumer: not polling yet"]
    check.beat()
    clock.now += 30.0
    assert health.failing() == []
    clock.now += 12.0
    assert health.failing() == ["kafka consumer: no poll for 42 s"]
    check.beat()
    assert health.failing() == []


def test_a_check_without_stale_after_passes_for_good_after_one_beat() -> None:
    """The spool: open once is accepting; no traffic for a day is not a failure."""
    clock = _Clock()
    health = Health(clock)
    spool = health.check("spool", starting="opening")
    assert health.failing() == ["spool: opening"]
    spool.beat()
    clock.now += 86_400
    assert health.failing() == []


def test_trouble_fails_after_its_grace_whatever_the_beats_say_until_cleared() -> None:
    """An interface away: the pump keeps beating (ticks), the check stays ok for the grace,
    then fails naming how long; `clear()` (the interface is back) ends it."""
    clock = _Clock()
    health = Health(clock)
    check = health.check("capture eth1", stale_after=30.0)
    check.beat()
    check.trouble("interface away, retrying", grace=300.0)
    for _ in range(10):
        clock.now += 29.0
        check.beat()
        assert health.failing() == []
    clock.now += 20.0
    check.beat()
    check.trouble("interface away, retrying", grace=300.0)  # reported again: the outage still counts from its start
    assert health.failing() == ["capture eth1: interface away, retrying for 310 s"]
    check.clear()
    assert health.failing() == []


def test_trouble_without_grace_fails_at_once_and_finish_ends_a_check() -> None:
    """A capture that failed is failing now; one that finished its file passes although it
    never beats again."""
    clock = _Clock()
    health = Health(clock)
    broken = health.check("capture a.pcap", stale_after=30.0)
    done = health.check("capture b.pcap", stale_after=30.0)
    broken.beat()
    done.beat()
    broken.trouble("tshark: cannot read")
    done.finish()
    clock.now += 3600
    assert health.failing() == ["capture a.pcap: tshark: cannot read"]


def test_answer_is_200_ok_or_503_with_every_reason_on_one_line() -> None:
    """The body of /healthz: `{"status":"ok"}` only when nothing fails; otherwise one JSON line
    with the reasons joined by "; " in the order the checks were made, newlines folded."""
    health = Health(_Clock())
    assert health.answer() == (200, b'{"status":"ok"}\n')
    health.check("capture eth1")
    health.check("kafka", starting="connecting\nto localhost:9092")
    status, body = health.answer()
    assert status == 503 and body.count(b"\n") == 1 and body.endswith(b"\n")
    assert json.loads(body) == {"status": "failing", "reason": "capture eth1: starting; kafka: connecting to localhost:9092"}


def test_capture_events_drive_the_capture_check() -> None:
    """As compose wires a live source: `capture_interrupted` keeps /healthz ok for
    INTERFACE_AWAY_SECONDS then fails it; `capture_resumed` (logged) makes it pass again;
    the pump's heartbeat goes stale after CAPTURE_STALE_SECONDS."""
    clock = _Clock()
    metrics = AgentMetrics(CollectorRegistry(), health=Health(clock))
    check = metrics.capture_check("eth1")
    check.beat()
    with capture_logs() as logs:
        metrics.capture_interrupted("eth1", 1.0)
        clock.now += INTERFACE_AWAY_SECONDS - 1
        check.beat()
        assert metrics.health.failing() == []
        clock.now += 1
        check.beat()
        assert metrics.health.failing() == [f"capture eth1: interface away, retrying for {INTERFACE_AWAY_SECONDS:.0f} s"]
        metrics.capture_resumed("eth1")
    assert metrics.health.failing() == []
    assert [e["event"] for e in logs] == ["capture_interrupted", "capture_resumed"]
    clock.now += CAPTURE_STALE_SECONDS + 1
    assert metrics.health.failing() == [f"capture eth1: no packet or tick for {CAPTURE_STALE_SECONDS + 1:.0f} s"]
