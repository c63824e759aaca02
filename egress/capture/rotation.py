"""Feed one pcap byte stream through a chain of short-lived tshark processes.

tshark's memory grows with every packet it dissects (about 345 bytes a packet, and
`-M` session resets do not stop it). Flow state lives in Python, so tshark can be
replaced at any record boundary without losing anything: after `chunk_packets`
records the current tshark's stdin is closed, it finishes and exits, and the next
records go to a fresh one that starts from the same pcap file header. That bounds
tshark's memory whatever the length of a file or a live capture.

A writer thread splits the stream; the caller's thread reads the tsharks' output in
order. At most four tsharks are alive: one being read, two fed (or being fed) and queued,
and one started that waits for room in the queue before it is fed.
"""

from __future__ import annotations

import os
import queue
import select
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

from egress.capture.pcapfile import PCAP_HEADER_BYTES, pcap_magic
from egress.capture.process import EXIT_SECONDS, reap
from egress.capture.tshark import LineStats, parse_line
from egress.errors import DependencyMissing, InputError
from egress.model import Packet

__all__ = ["RotatingTshark"]

_READ = 1 << 20


class RotatingTshark:
    """Packets from a pcap stream, dissected by tsharks recycled every `chunk_packets`."""

    def __init__(
        self,
        stream: IO[bytes],
        start_tshark: Callable[[], subprocess.Popen[bytes]],
        *,
        chunk_packets: int = 100_000,
        name: str = "capture",
        interface: str = "",
        tick_seconds: float | None = None,
    ) -> None:
        self._stream = stream
        self._start = start_tshark
        self._chunk = chunk_packets
        self._name = name
        self._interface = interface
        self._tick = tick_seconds
        self._procs: queue.Queue[subprocess.Popen[bytes] | None] = queue.Queue(maxsize=2)
        self._alive: list[subprocess.Popen[bytes]] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self.stats = LineStats()
        self.records = 0
        self.tshark_errors: list[str] = []
        self.rotations = 0
        self.leftover = 0
        self._last_input = time.monotonic()

    # -- writer side -------------------------------------------------------------
    def _new(self) -> subprocess.Popen[bytes]:
        proc = self._start()
        self._alive.append(proc)
        self._procs.put(proc)
        return proc

    def _write(self) -> None:
        """Split the stream at record boundaries into the tsharks' stdins.

        Reads go into one reused buffer (readinto): a fresh bytes object of a varying
        size per read fragmented the heap of a 24/7 capture until its RSS crept up."""
        try:
            head = self._stream.read(PCAP_HEADER_BYTES)
            magic = pcap_magic(head)
            if len(head) < PCAP_HEADER_BYTES or magic is None or magic.modified:  # dumpcap and tcpdump write plain pcap
                raise InputError(f"{self._name}: the capture stream does not start with a pcap header")
            rec = struct.Struct(magic.byte_order + "IIII")  # a record header: seconds, fraction, captured, original length
            header = rec.size
            readinto = getattr(self._stream, "readinto1", None) or self._stream.readinto  # type: ignore[attr-defined]
            proc = self._new()
            proc.stdin.write(head)  # type: ignore[union-attr]
            buf = bytearray(_READ)
            view = memoryview(buf)
            filled = in_chunk = 0
            while not self._stop.is_set():
                if filled == len(buf):  # one record larger than the buffer: make room once
                    view.release()
                    buf.extend(bytes(len(buf)))
                    view = memoryview(buf)
                got = readinto(view[filled:])
                if not got:
                    break
                self._last_input = time.monotonic()
                filled += got
                pos = sent = 0
                while pos + header <= filled:
                    nxt = pos + header + rec.unpack_from(buf, pos)[2]
                    if nxt > filled:
                        break
                    pos = nxt
                    in_chunk += 1
                    self.records += 1
                    if in_chunk >= self._chunk:
                        proc.stdin.write(view[sent:pos])  # type: ignore[union-attr]
                        proc.stdin.close()  # type: ignore[union-attr]
                        self.rotations += 1
                        proc = self._new()
                        proc.stdin.write(head)  # type: ignore[union-attr]
                        sent, in_chunk = pos, 0
                proc.stdin.write(view[sent:pos])  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                view[: filled - pos] = view[pos:filled]  # the record cut by this read, to the front
                filled -= pos
            # whatever is left is a record cut short: tshark never sees half a packet
            self.leftover = filled
            proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass  # a tshark died; its stderr says why
        except BaseException as exc:  # handed to the reading thread
            self._error = exc
        finally:
            self._procs.put(None)

    # -- reader side -------------------------------------------------------------
    def _lines(self, proc: subprocess.Popen[bytes]) -> Iterator[bytes | None]:
        """tshark's output lines; with ticks, None after each quiet `tick_seconds`."""
        assert proc.stdout is not None
        if self._tick is None:
            yield from proc.stdout
            return
        fd = proc.stdout.fileno()
        rest = b""
        while True:
            ready, _, _ = select.select([fd], [], [], self._tick)
            if not ready:
                # Quiet output is a tick only if the input is quiet too: a tshark that lags
                # behind (or is starting after a rotation) must not make active flows look idle.
                if time.monotonic() - self._last_input >= self._tick:
                    yield None
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            *lines, rest = (rest + chunk).split(b"\n")
            yield from lines
        if rest:
            yield rest

    def packets(self) -> Iterator[Packet | None]:
        writer = threading.Thread(target=self._write, name=f"egress-split-{self._name}", daemon=True)
        writer.start()
        try:
            while True:
                proc = self._procs.get()
                if proc is None:
                    break
                lines = 0
                for raw in self._lines(proc):
                    if raw is None:
                        yield None  # a tick: nothing arrived for a while
                        continue
                    lines += 1
                    pkt = parse_line(raw.decode("utf-8", "replace"), self.stats, self._interface)
                    if pkt is not None:
                        yield pkt
                reap(proc, wait_seconds=EXIT_SECONDS)  # its output ended: it is exiting
                errors = self._collect_stderr(proc)
                self._forget(proc)
                if proc.returncode != 0 and lines == 0:
                    # tshark never got going (missing library, sandbox, bad preference): that is
                    # not a quiet network, and it must not look like one
                    reason = errors[-1] if errors else f"exit status {proc.returncode}"
                    raise DependencyMissing(f"{self._name}: tshark failed: {reason}")
            writer.join()
            if self._error is not None:
                raise self._error
        finally:
            self.close()

    def _collect_stderr(self, proc: subprocess.Popen[bytes]) -> list[str]:
        if proc.stderr is None:
            return []
        lines = [ln.strip() for ln in proc.stderr.read().decode("utf-8", "replace").splitlines() if ln.strip() and "Running as user" not in ln]
        self.tshark_errors += lines
        return lines

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        """A tshark read to its end: its output pipes closed, and no longer tracked once
        the writer has closed its input (a live capture rotates for ever)."""
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        if proc.stdin is None or proc.stdin.closed:
            self._alive.remove(proc)

    def close(self) -> None:
        """Stop feeding and leave no tshark behind."""
        self._stop.set()
        for proc in self._alive:
            reap(proc)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass
