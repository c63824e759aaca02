"""capture/process.py: `reap` ends a child in every state it can be in, and leaves no zombie."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from egress.capture.process import reap

# `exec` so that the shell's pid is the program's: no grandchild outlives the test.
IGNORES_TERM = "trap '' TERM; exec sleep 30"
ENDS_ON_TERM = "exec sleep 30"


def _child(script: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sh", "-c", script])
    time.sleep(0.2)  # let the shell set its trap and exec
    return proc


def _reaped(pid: int) -> bool:
    """No child with this pid is left to wait for (no zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_without_grace_a_running_child_is_killed_at_once() -> None:
    """With no grace a child is SIGKILLed (its output is not wanted) and reaped, without waiting."""
    proc = _child(ENDS_ON_TERM)
    started = time.monotonic()
    assert reap(proc) == -signal.SIGKILL
    assert time.monotonic() - started < 1.0 and _reaped(proc.pid)


def test_with_grace_a_child_is_asked_first() -> None:
    """With a grace period a child gets SIGTERM, and one that obeys ends by it, not by SIGKILL."""
    proc = _child(ENDS_ON_TERM)
    assert reap(proc, grace_seconds=5.0) == -signal.SIGTERM
    assert _reaped(proc.pid)


def test_a_child_ignoring_sigterm_is_killed_when_the_grace_ends() -> None:
    """A child that ignores SIGTERM is SIGKILLed after the grace period, not waited for for ever."""
    proc = _child(IGNORES_TERM)
    started = time.monotonic()
    assert reap(proc, grace_seconds=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 3.0 and _reaped(proc.pid)


def test_a_child_that_is_exiting_gets_its_wait_before_any_signal() -> None:
    """Within `wait_seconds` a child that ends by itself is not signalled: its own exit status is kept."""
    proc = subprocess.Popen(["sh", "-c", "sleep 0.3; exit 7"])
    assert reap(proc, wait_seconds=5.0) == 7
    assert _reaped(proc.pid)


def test_a_child_still_running_after_its_wait_is_ended() -> None:
    """A child that does not end within `wait_seconds` is then ended like any other."""
    proc = _child(IGNORES_TERM)
    assert reap(proc, wait_seconds=0.3, grace_seconds=0.3) == -signal.SIGKILL
    assert _reaped(proc.pid)


@pytest.mark.parametrize("waited", [False, True], ids=["exited", "already-reaped"])
def test_a_child_that_has_ended_is_reaped_without_error(waited: bool) -> None:
    """A child that already exited (a zombie, or already waited for) gives its status and no error."""
    proc = subprocess.Popen(["sh", "-c", "exit 3"])
    if waited:
        proc.wait()
    else:
        time.sleep(0.3)  # exited, not yet waited for
    assert reap(proc, grace_seconds=5.0) == 3
    assert reap(proc) == 3 and _reaped(proc.pid)
