"""Child processes of the capture path: argument lists only (no shell), and none outlives egress.

`spawn` starts dumpcap, tcpdump and the tsharks; `reap` is how each of them ends, whether
its output ran out, its reader stopped early, or dumpcap is asked for its statistics.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

__all__ = ["spawn", "die_with_parent", "reap", "EXIT_SECONDS"]

_PR_SET_PDEATHSIG = 1

EXIT_SECONDS = 5.0
"""How long a child whose output has ended (it is exiting), or that was asked to end, may take."""


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGKILL to this child when egress dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv: list[str], stdin: int = subprocess.PIPE, *, tie_to_thread: bool = True) -> subprocess.Popen[bytes]:
    """Start a child with pipes. The kernel's parent-death signal follows the *thread* that
    spawned the child, so a child started by a short-lived thread (the tsharks of
    `PacketStream`) passes `tie_to_thread=False`: it ends when its stdin pipe closes,
    which happens when egress dies."""
    env = dict(os.environ)
    env.setdefault("HOME", "/tmp")  # tshark reads preference files under $HOME; a service user may have none
    return subprocess.Popen(
        argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        preexec_fn=die_with_parent if tie_to_thread else None,  # noqa: PLW1509 - prctl only
    )  # fmt: skip


def reap(proc: subprocess.Popen[bytes], *, wait_seconds: float = 0.0, grace_seconds: float = 0.0) -> int:
    """End a child if it has not ended, and collect its exit status: never a zombie left.

    It gets `wait_seconds` to exit by itself (one whose output has ended is finishing and may
    still be writing to stderr), then, with `grace_seconds`, SIGTERM and that long (dumpcap
    then writes its statistics), then SIGKILL. With neither, it is killed at once: a child
    whose output nobody will read. Safe when the child has already ended or been reaped.
    """
    if wait_seconds > 0:
        try:
            return proc.wait(timeout=wait_seconds)
        except subprocess.TimeoutExpired:
            pass
    if grace_seconds > 0 and proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
    proc.kill()  # a no-op for a child already reaped; Popen ignores one that is gone
    return proc.wait()
