"""Packets from one pcap byte stream: headers read here, names dissected by tshark.

The stream (tcpdump's filtered copy of a file, or dumpcap's live capture) is split at
record boundaries by a reader thread. Each record's headers are decoded in Python
(`headers.HeaderDecoder`); the few records that may carry a name (DNS answers, TLS
ClientHellos, HTTP request headers, QUIC Initials) or that are anything but plain go,
as pcap, to a tshark, whose line for each comes back in order and takes the record's
place. So the cost of a packet is a header count, and tshark dissects about one in a
hundred. `dissect="all"` sends every record to tshark (the reference the decoder is
tested against).

tshark's memory grows with every packet it dissects (about 345 bytes a packet, and
`-M` session resets do not stop it). Flow state lives in Python, so after
`chunk_packets` records the current tshark's stdin is closed, it finishes and exits,
and the next records go to a fresh one that starts from the same pcap file header.

Threads: the reader decodes and hands batches (in record order) to the caller's
thread, then writes the batch's records for tshark to its stdin; the caller's thread
replaces each marker by the next line of that tshark. A batch is queued before its
records are written, so a tshark blocked on a full stdout is always drained.
"""

from __future__ import annotations

import fcntl
import io
import queue
import select
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Literal

from egress.capture.headers import HeaderDecoder
from egress.capture.lines import LineStats, parse_line
from egress.capture.pcapfile import PCAP_HEADER_BYTES, pcap_magic
from egress.capture.process import EXIT_SECONDS, reap
from egress.errors import DependencyMissing, InputError
from egress.model import Packet

__all__ = ["PacketStream", "Dissect", "one_at_a_time"]

Dissect = Literal["names", "all"]
_READ = 1 << 20
_BATCH_BYTES = 1 << 19  # read on while the stream has more, up to this much
_ETHERNET = 1
_BATCHES = 64  # batches queued between the reader and the caller (each one read's records)

_Tshark = subprocess.Popen[bytes]


class PacketStream:
    """Packets of a pcap stream in record order; None after each quiet `tick_seconds`."""

    def __init__(
        self,
        stream: IO[bytes],
        start_tshark: Callable[[bytes], _Tshark],
        *,
        chunk_packets: int = 100_000,
        name: str = "capture",
        interface: str = "",
        tick_seconds: float | None = None,
        dissect: Dissect = "names",
        on_arp: Callable[[list[Packet]], None] | None = None,
    ) -> None:
        """`start_tshark(head)`: a tshark that has been given the stream's pcap header `head`.
        `on_arp`: given the ARP frames read by their headers (the device inventory), on the
        caller's thread just before the batch they came in."""
        self._stream = stream
        self._on_arp = on_arp
        self._start = start_tshark
        self._chunk = chunk_packets
        self._name = name
        self._interface = interface
        self._tick = tick_seconds
        self._dissect_all = dissect == "all"
        self._batches: queue.Queue[tuple[list[Packet | None], list[tuple[int, _Tshark]], list[Packet]] | None] = queue.Queue(maxsize=_BATCHES)
        self._alive: list[_Tshark] = []
        self._tshark: _Tshark | None = None  # the one being fed
        self._in_tshark = 0  # records it was fed
        self._head = b""
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._decoded = LineStats()  # counted by the reader thread
        self._dissected = LineStats()  # counted by the caller's thread
        self.to_tshark = 0  # records dissected
        self.tshark_errors: list[str] = []
        self.rotations = 0
        self.leftover = 0
        self._last_input = time.monotonic()

    @property
    def stats(self) -> LineStats:
        """Packets made, non-IP frames and unreadable lines so far (both threads' counts)."""
        a, b = self._decoded, self._dissected
        return LineStats(a.packets + b.packets, a.non_ip + b.non_ip, a.bad + b.bad)

    # -- reader thread -------------------------------------------------------------
    def _read(self) -> None:
        """Split the stream into records, decode them, queue them, feed tshark its share.

        Reads go into one reused buffer (readinto): a fresh bytes object of a varying
        size per read fragmented the heap of a 24/7 capture until its RSS crept up."""
        try:
            readinto = getattr(self._stream, "readinto1", None) or self._stream.readinto  # type: ignore[attr-defined]
            read1 = getattr(self._stream, "read1", None) or self._stream.read
            buf = bytearray(_READ)
            view = memoryview(buf)
            filled = 0
            while filled < PCAP_HEADER_BYTES:  # the header, and whatever came with it: see below
                chunk = read1(len(buf) - filled)
                if not chunk:
                    break
                view[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
            head = bytes(buf[:PCAP_HEADER_BYTES])
            magic = pcap_magic(head)
            if filled < PCAP_HEADER_BYTES or magic is None or magic.modified:  # dumpcap and tcpdump write plain pcap
                raise InputError(f"{self._name}: the capture stream does not start with a pcap header")
            linktype = struct.unpack_from(magic.byte_order + "I", head, 20)[0] & 0x0FFFFFFF
            decoder = HeaderDecoder(self._interface, nanoseconds=magic.nanoseconds, byte_order=magic.byte_order)
            split = _whole_records(magic.byte_order) if self._dissect_all or linktype != _ETHERNET else decoder.split
            self._head = head
            self._rotate()  # at once: a tshark that cannot start is found now
            view[: filled - PCAP_HEADER_BYTES] = view[PCAP_HEADER_BYTES:filled]
            filled -= PCAP_HEADER_BYTES
            # What came with the header is handed on before the next read. A BufferedReader
            # (a pipe's, which the live source has peeked the header into) gives what it holds
            # through read1 without a read of the pipe; a readinto1 into the 1 MiB view copied
            # it and then waited on the pipe for more before it returned, so that on a quiet
            # link the first packets waited for the next ones. What is held is taken whole
            # here, so every later readinto1 reads the pipe directly.
            carried = filled > 0
            stats = self._decoded
            while not self._stop.is_set():
                if filled == len(buf):  # one record larger than the buffer: make room once
                    view.release()
                    buf.extend(bytes(len(buf)))
                    view = memoryview(buf)
                if not carried:
                    got = readinto(view[filled:])
                    if not got:
                        break
                    filled += got
                carried = False
                while filled < _BATCH_BYTES and self._more_waiting():  # fewer, larger batches: each costs two thread switches
                    got = readinto(view[filled:])
                    if not got:
                        break
                    filled += got
                self._last_input = time.monotonic()
                batch: list[Packet | None] = []
                pos, dissect, non_ip = split(buf, 0, filled, batch)
                stats.packets += len(batch) - len(dissect)
                stats.non_ip += non_ip
                arp = decoder.arp
                if arp:
                    decoder.arp = []
                self._hand_on(batch, dissect, view, arp)
                view[: filled - pos] = view[pos:filled]  # the record cut by this read, to the front
                filled -= pos
            self.leftover = filled  # a record cut short: tshark never sees half a packet
        except BrokenPipeError:
            pass  # a tshark died; its stderr says why
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc
        finally:
            if self._tshark is not None and self._tshark.stdin is not None:
                try:
                    self._tshark.stdin.close()
                except BrokenPipeError:
                    pass
            self._batches.put(None)

    def _more_waiting(self) -> bool:
        """Whether the stream can be read now without waiting (a live link may be quiet)."""
        try:
            return bool(select.select([self._stream], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _rotate(self, close: bool = True) -> None:
        """A fresh tshark; the current one gets its end of input (now, or once it is fed)."""
        if self._tshark is not None:
            assert self._tshark.stdin is not None
            if close:
                self._tshark.stdin.close()
            self.rotations += 1
        proc = self._tshark = self._start(self._head)
        self._alive.append(proc)
        self._in_tshark = 0

    def _hand_on(self, batch: list[Packet | None], dissect: list[tuple[int, int, int]], view: memoryview, arp: list[Packet]) -> None:
        """Queue the batch with the tshark that dissects each of its records for tshark, then
        write those records. In that order, the caller can always read the lines of a tshark
        blocked on a full stdout. At `chunk_packets` a fresh tshark takes over."""
        marks: list[tuple[int, _Tshark]] = []
        feeds: list[tuple[_Tshark, list[bytes]]] = []
        for index, start, end in dissect:
            if self._in_tshark >= self._chunk or not feeds:
                if self._in_tshark >= self._chunk:
                    # the full one's input ends now if none of its records is in this batch,
                    # else below, once they are written
                    self._rotate(close=not feeds)
                assert self._tshark is not None
                feeds.append((self._tshark, []))
            marks.append((index, feeds[-1][0]))
            feeds[-1][1].append(bytes(view[start:end]))
            self._in_tshark += 1
        if batch or arp:
            self._batches.put((batch, marks, arp))
        for n, (proc, records) in enumerate(feeds):
            assert proc.stdin is not None
            proc.stdin.write(b"".join(records))
            if n < len(feeds) - 1:
                proc.stdin.close()  # replaced: it finishes what it has and exits
            else:
                proc.stdin.flush()
            self.to_tshark += len(records)

    # -- caller's thread -------------------------------------------------------------
    def _next_batch(self) -> tuple[list[Packet | None], list[tuple[int, _Tshark]], list[Packet]] | None | Literal[False]:
        """The next batch; None at the end; False for a tick (nothing arrived for a while)."""
        if self._tick is None:
            return self._batches.get()
        while True:
            try:
                return self._batches.get(timeout=self._tick)
            except queue.Empty:
                # A quiet queue is a tick only if the input is quiet too: a tshark that lags
                # behind must not make active flows look idle.
                if time.monotonic() - self._last_input >= self._tick:
                    return False

    def _widen_pipe(self) -> None:
        """A 1 MiB pipe, not 64 KiB: 16 times fewer reads (and waits for the GIL) per MiB."""
        try:
            fcntl.fcntl(self._stream.fileno(), fcntl.F_SETPIPE_SZ, _READ)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass  # not a pipe (a test's BytesIO), or above the system's pipe-max-size

    def packets(self) -> Iterator[Packet | None]:
        """One packet at a time (None for a tick)."""
        return one_at_a_time(self.batches())

    def batches(self) -> Iterator[list[Packet] | None]:
        """Packets in record order, a read's worth at a time; None after each quiet `tick_seconds`."""
        self._widen_pipe()
        reader = threading.Thread(target=self._read, name=f"egress-split-{self._name}", daemon=True)
        reader.start()
        current: _Tshark | None = None
        lines = missing = 0  # of the current tshark: records answered, and not
        stats = self._dissected
        try:
            while True:
                got = self._next_batch()
                if got is None:
                    break
                if got is False:
                    yield None
                    continue
                batch, marks, arp = got
                if arp and self._on_arp is not None:
                    self._on_arp(arp)
                for index, proc in marks:
                    if proc is not current:
                        if current is not None:
                            self._finish(current, lines)
                        current, lines, missing = proc, 0, 0
                    assert proc.stdout is not None
                    raw = proc.stdout.readline()
                    if not raw:
                        if lines == 0:
                            self._finish(proc, 0)  # one that never got going raises
                        stats.bad += 1  # tshark ended before this record: its stderr says why
                        missing += 1
                        continue
                    lines += 1
                    batch[index] = parse_line(raw.decode("utf-8", "replace"), stats, self._interface)
                yield [p for p in batch if p is not None] if marks else batch  # type: ignore[misc]
            if current is not None and current in self._alive:
                self._finish(current, lines, answered=not missing)
            reader.join()
            for proc in list(self._alive):  # started, never needed: still, one that failed is an error
                self._finish(proc, 0)
            if self._error is not None:
                raise self._error
        finally:
            self.close()

    def _finish(self, proc: _Tshark, lines: int, *, answered: bool = False) -> None:
        """A tshark whose records are all read: reaped, its errors kept, forgotten.

        `answered` (the last one, at the end of the stream): it gave a line for every record it
        was fed and its input has ended, so nothing is left to hear from it but its exit, ~15 ms
        of freeing its dissectors at the end of every analysis: it is killed instead (what it
        wrote to stderr is still read). One that answered nothing is waited for: its exit
        status tells a tshark that never got going from a quiet network."""
        assert proc.stdout is not None
        if answered and lines:
            proc.kill()
        proc.stdout.read()  # anything past its records (nothing, normally) lets it exit
        reap(proc, wait_seconds=EXIT_SECONDS)
        errors = self._collect_stderr(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        if proc in self._alive:
            self._alive.remove(proc)
        if proc.returncode != 0 and lines == 0:
            # tshark never got going (missing library, sandbox, bad preference): that is
            # not a quiet network, and it must not look like one
            reason = errors[-1] if errors else f"exit status {proc.returncode}"
            raise DependencyMissing(f"{self._name}: tshark failed: {reason}")

    def _collect_stderr(self, proc: _Tshark) -> list[str]:
        if proc.stderr is None:
            return []
        lines = [ln.strip() for ln in proc.stderr.read().decode("utf-8", "replace").splitlines() if ln.strip() and "Running as user" not in ln]
        self.tshark_errors += lines
        return lines

    def close(self) -> None:
        """Stop reading and leave no tshark behind."""
        self._stop.set()
        while True:  # a reader blocked on a full queue sees the stop
            try:
                self._batches.get_nowait()
            except queue.Empty:
                break
        for proc in self._alive:
            reap(proc)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    try:
                        pipe.close()
                    except OSError:
                        pass
        self._alive.clear()


def _whole_records(byte_order: str) -> Callable[[bytearray, int, int, list[Packet | None]], tuple[int, list[tuple[int, int, int]], int]]:
    """A `split` that leaves every record to tshark (`dissect="all"`, link types other than Ethernet)."""
    record = struct.Struct(byte_order + "IIII").unpack_from

    def split(buf: bytearray, pos: int, filled: int, items: list[Packet | None]) -> tuple[int, list[tuple[int, int, int]], int]:
        dissect: list[tuple[int, int, int]] = []
        while pos + 16 <= filled:
            end = pos + 16 + record(buf, pos)[2]
            if end > filled:
                break
            dissect.append((len(items), pos, end))
            items.append(None)
            pos = end
        return pos, dissect, 0

    return split


def one_at_a_time(batches: Iterator[list[Packet] | None]) -> Iterator[Packet | None]:
    """Batches of packets as single packets, ticks (None) kept: for tests and tools."""
    for batch in batches:
        if batch is None:
            yield None
        else:
            yield from batch
