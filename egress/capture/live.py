"""Capture source for live interfaces: dumpcap → pcap stream → recycled tsharks.

dumpcap (Wireshark's capture engine, the one pyshark and tshark use) captures with
the built-in BPF filter in the kernel, so intra-site video never reaches user space,
and writes pcap to a pipe that `PacketStream` reads (headers in Python, names by tshark). Every second without a
packet yields None, a tick that lets the flow table expire idle flows on a quiet
link. If the interface vanishes, dumpcap exits: `on_restart(retry_in_seconds)` is told
(the telemetry event logs and counts it), and the capture is retried with a growing
pause, while the flow table keeps its flows; `on_resumed()` once it captures again. `frames_skipped()` is the frames tshark
printed that were not IP or could not be read, over every dumpcap and tshark so far.
Kernel drops are read every second from dumpcap's packet socket (kernelstats.py),
the rest from dumpcap's figures when it ends. Every child gets SIGKILL if the agent
dies, so none outlives it.
"""

from __future__ import annotations

import io
import os
import re
import select
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import cast

import structlog

from egress.capture.kernelstats import KernelDrops
from egress.capture.pcapfile import PCAP_HEADER_BYTES
from egress.capture.process import EXIT_SECONDS, reap, spawn
from egress.capture.stream import Dissect, PacketStream, one_at_a_time
from egress.capture.tshark import start_tshark, tshark_path
from egress.errors import DependencyMissing, EgressError, UsageError
from egress.model import Packet

__all__ = ["LiveSource", "dumpcap_path"]

log = structlog.get_logger("egress.capture")

_START_SECONDS = 10.0
_DROPS = re.compile(r"received/dropped on interface '[^']*': (\d+)/(\d+)")


def dumpcap_path() -> str:
    found = shutil.which("dumpcap") or ("/usr/bin/dumpcap" if os.path.exists("/usr/bin/dumpcap") else None)
    if not found:
        raise DependencyMissing("dumpcap not found: install Debian's 'tshark' package (it brings wireshark-common)")
    return found


class LiveSource:
    """Packets (and None ticks) from one interface until `stop()`."""

    def __init__(
        self,
        interface: str,
        bpf: str,
        *,
        snaplen: int = 512,
        buffer_mib: int = 64,
        chunk_packets: int = 100_000,
        dissect: Dissect = "names",
        on_drops: Callable[[int], None] | None = None,
        on_restart: Callable[[float], None] | None = None,
        on_resumed: Callable[[], None] | None = None,
        on_arp: Callable[[list[Packet]], None] | None = None,
    ) -> None:
        """`on_arp`: the ARP frames of each batch, for the device inventory (see PacketStream)."""
        self.interface = interface
        self._on_arp = on_arp
        self._bpf = bpf
        self._snaplen = snaplen
        self._buffer = buffer_mib
        self._chunk = chunk_packets
        self._dissect: Dissect = dissect
        self._on_drops = on_drops
        self._on_restart = on_restart
        self._on_resumed = on_resumed
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch: _DropWatch | None = None
        self._rot: PacketStream | None = None
        self._skipped_before = 0  # by the tsharks of earlier dumpcaps

    def argv(self) -> list[str]:
        return [dumpcap_path(), "-i", self.interface, "-f", self._bpf, "-s", str(self._snaplen), "-B", str(self._buffer), "-P", "-w", "-", "-q"]

    def start(self) -> None:
        """Open the capture now, so a bad interface or filter fails the start (not later)."""
        self._proc = self._open()

    def _open(self) -> subprocess.Popen[bytes]:
        proc = spawn(self.argv(), stdin=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], _START_SECONDS)
        if not ready or cast(io.BufferedReader, proc.stdout).peek(PCAP_HEADER_BYTES)[:PCAP_HEADER_BYTES] == b"" or proc.poll() is not None:
            reap(proc)
            raise _start_error(self.interface, proc.stderr.read().decode("utf-8", "replace"))
        self._watch = _DropWatch(proc.pid, self.interface, self._count)
        return proc

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # dumpcap writes its statistics and ends the stream

    def frames_skipped(self) -> int:
        """Read on the thread that iterates `packets()`, where the counts grow."""
        rot = self._rot
        return self._skipped_before + (rot.stats.non_ip + rot.stats.bad if rot is not None else 0)

    def packets(self) -> Iterator[Packet | None]:
        """One packet at a time (None for a tick); the pipeline reads `batches()`."""
        return one_at_a_time(self.batches())

    def batches(self) -> Iterator[list[Packet] | None]:
        """The interface's packets as they come, a read's worth at a time; None once a
        quiet second has passed (a tick)."""
        pause = 1.0
        tshark_path()  # exit 3 at once where there is none
        while not self._stop.is_set():
            proc = self._proc or self._open()
            self._proc = proc
            assert proc.stdout is not None and proc.stderr is not None
            rot = self._rot = PacketStream(
                proc.stdout, start_tshark, chunk_packets=self._chunk, dissect=self._dissect,
                name=self.interface, interface=self.interface, tick_seconds=1.0, on_arp=self._on_arp,
            )  # fmt: skip
            try:
                yield from rot.batches()
            finally:
                self._skipped_before, self._rot = self.frames_skipped(), None
                reap(proc, grace_seconds=EXIT_SECONDS)  # SIGTERM: dumpcap prints its drop figures
                if self._watch is not None:
                    self._watch.stop()
                    self._watch = None
                self._count_drops(proc.stderr.read().decode("utf-8", "replace"))
                proc.stdout.close()
                proc.stderr.close()
                self._proc = None
            if self._stop.is_set():
                return
            if self._on_restart is not None:
                self._on_restart(pause)  # logged and counted as capture_interrupted
            while not self._stop.is_set():
                waited = 0.0
                while waited < pause and not self._stop.wait(1.0):
                    waited += 1.0
                    yield None  # the flow table keeps expiring flows while the interface is away
                if self._stop.is_set():
                    return
                try:
                    self._proc = self._open()
                    if self._on_resumed is not None:
                        self._on_resumed()
                    break
                except EgressError as exc:
                    pause = min(pause * 2, 30.0)
                    log.warning("capture_retry_failed", interface=self.interface, reason=str(exc), retry_in_seconds=pause)
            pause = 1.0

    def _count_drops(self, stderr: str) -> None:
        """What dumpcap reports at its end: the drops since the last read of its socket."""
        m = _DROPS.search(stderr)
        if m:
            self._count(int(m.group(2)))

    def _count(self, dropped: int) -> None:
        """From the drop watch's thread too: the metric's counter is thread-safe."""
        if dropped and self._on_drops is not None:
            self._on_drops(dropped)


class _DropWatch:
    """Reads a running dumpcap's kernel drops every second (nothing where the system refuses)."""

    def __init__(self, pid: int, interface: str, count: Callable[[int], None]) -> None:
        self._drops = KernelDrops.attach(pid, interface)
        self._count = count
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if self._drops is not None:
            self._thread = threading.Thread(target=self._run, name=f"drops-{interface}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._drops is not None
        while not self._done.wait(1.0):
            self._count(self._drops.take())

    def stop(self) -> None:
        """After dumpcap has ended: no last read, its own end figures hold the remainder."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._drops is not None:
            self._drops.close()


def _start_error(interface: str, stderr: str) -> EgressError:
    text = " ".join(line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith(("Capturing on", "File:")))
    lowered = text.lower()
    if "no device named" in lowered or "no such device" in lowered:
        return UsageError(f"interface {interface}: no such interface")
    if "invalid capture filter" in lowered:
        return UsageError(f"interface {interface}: capture filter refused: {text}")
    if "permission" in lowered or "not permitted" in lowered:
        return DependencyMissing(f"interface {interface}: permission denied (the agent needs CAP_NET_RAW and CAP_NET_ADMIN)")
    if "network is down" in lowered:
        return DependencyMissing(f"interface {interface}: is down")
    return DependencyMissing(f"interface {interface}: capture could not start: {text or 'dumpcap gave no reason'}")
