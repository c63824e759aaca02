"""Process plumbing for the services: components started in order and stopped in reverse,
signals, named tasks, systemd's notify protocol, the heap settled and trimmed."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import inspect
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import structlog

__all__ = ["Lifecycle", "on_signals", "spawn", "SystemdNotifier", "settle_heap", "trim_memory"]

log = structlog.get_logger("egress.runtime")
_TASKS: set[asyncio.Task[Any]] = set()


async def _call(component: object, verb: str) -> None:
    method = getattr(component, verb, None)
    if method is not None:
        result = method()
        if inspect.isawaitable(result):
            await result


class Lifecycle:
    """`async with Lifecycle(components)`: each component's `start()` (sync or async, where it
    has one) in order, and on the way out the `stop()` of every component that started, in
    reverse, also when starting or the body failed. A failed stop does not skip the others;
    the first one is raised unless the body already raised."""

    def __init__(self, components: Sequence[object]) -> None:
        self._components = tuple(components)
        self._started: list[object] = []

    async def __aenter__(self) -> Lifecycle:
        try:
            for component in self._components:
                await _call(component, "start")
                self._started.append(component)
        except BaseException:
            await self._stop(raising=False)
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._stop(raising=exc is None)

    async def _stop(self, raising: bool) -> None:
        first: BaseException | None = None
        while self._started:
            component = self._started.pop()
            try:
                await _call(component, "stop")
            except Exception as exc:  # noqa: BLE001 - every component gets its stop
                log.error("component_stop_failed", component=type(component).__name__, reason=str(exc)[:200])
                first = first or exc
        if raising and first is not None:
            raise first


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


class SystemdNotifier:
    """systemd's notify protocol (Type=notify): READY=1 once started, WATCHDOG=1 pings at
    half the WatchdogSec= interval, STOPPING=1 on the way out. Without $NOTIFY_SOCKET
    (not under systemd) every call does nothing."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = env.get("NOTIFY_SOCKET", "")
        if self._address.startswith("@"):  # abstract namespace
            self._address = "\0" + self._address[1:]
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_seconds = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else 0.0

    def notify(self, state: str) -> None:
        if not self._address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(state.encode(), self._address)
            except OSError as exc:
                log.warning("sd_notify_failed", reason=str(exc))

    async def watchdog(self) -> None:
        """Ping while the event loop runs: a stuck loop stops the pings and systemd restarts us."""
        if not self._address or not self.watchdog_seconds:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_seconds / 2)


#: allocations between two passes of the collector's youngest generation (CPython's default: 700)
_GC_YOUNG = 10_000


def settle_heap(collect: bool = True) -> None:
    """Once started: the start-up heap (modules, config, policy, a loaded baseline) moved out
    of the cyclic collector's sight, and its youngest generation collected ~14 times less often.

    Flow records and verdicts are freed by reference counting, not by the collector; but a
    slice of the rules stage holds a few hundred of them alive at once, so at CPython's
    default threshold the collector ran after nearly every slice and promoted the slice's
    objects into older generations it then re-scanned: measured on `egress rules` (300,000
    records, one consumer), 1,845 young and 16 full passes costing 1.0 s of 5.8 s CPU; 38
    and 2 costing 0.1 s with this. Cyclic garbage (asyncio's exception tracebacks) still
    goes, a little later. `collect=False` (a one-off analysis) freezes without the full pass
    first: it costs ~10 ms, a thirtieth of a 100,000-packet analysis, and frees ~40 objects."""
    if collect:
        gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG, middle, old)


async def trim_memory(period: float = 60.0) -> None:
    """Every `period`, hand the heap's free pages back to the kernel (glibc's malloc_trim).

    A service that runs for months frees as much as it allocates, but glibc keeps freed
    pages inside its arenas (one per thread that allocated): RSS then creeps up with
    fragmentation although nothing is held. Trimming keeps RSS close to what is in use;
    it costs a few milliseconds a minute. Without glibc (musl) there is nothing to do."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return
    while True:
        await asyncio.sleep(period)
        await asyncio.to_thread(trim, 0)
