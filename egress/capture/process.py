"""Child processes of the capture path: argument lists only (no shell), and none outlives egress."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess

__all__ = ["spawn", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGKILL to this child when egress dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv: list[str], stdin: int = subprocess.PIPE, *, tie_to_thread: bool = True) -> subprocess.Popen[bytes]:
    """Start a child with pipes. The kernel's parent-death signal follows the *thread* that
    spawned the child, so a child started by a short-lived thread (the tsharks of
    `RotatingTshark`) passes `tie_to_thread=False`: it ends when its stdin pipe closes,
    which happens when egress dies."""
    env = dict(os.environ)
    env.setdefault("HOME", "/tmp")  # tshark reads preference files under $HOME; a service user may have none
    return subprocess.Popen(
        argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        preexec_fn=die_with_parent if tie_to_thread else None,  # noqa: PLW1509 - prctl only
    )  # fmt: skip
