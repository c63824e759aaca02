"""Process plumbing for the services: signals, named tasks, orderly stop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

__all__ = ["on_signals", "spawn"]

log = structlog.get_logger("egress.runtime")
_TASKS: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """create_task that keeps a reference (an unreferenced task can be collected mid-flight)."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


def on_signals(stop: Callable[[], None], reload: Callable[[], None] | None = None) -> None:
    """SIGTERM/SIGINT call `stop` (a second one is ignored: the stop is under way);
    SIGHUP calls `reload`."""
    loop = asyncio.get_running_loop()
    fired = False

    def _stop(signame: str) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        log.info("stopping", signal=signame)
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, sig.name)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
