"""Capture source for recorded pcap/pcapng files.

The fast route: Python streams the file into `tcpdump -r -`, whose libpcap applies
the built-in BPF filter (see `prefilter`) and writes the surviving packets as pcap;
`PacketStream` reads them (headers in Python, names by tshark). Bytes handed to tcpdump give the progress bar.
Files libpcap cannot read or filter (link types without VLAN support, formats only
Wireshark knows) go to tshark whole, slower but with the same results, because the
flow table applies the filter's rule again. A pipe can be read only once: it gets the
filter chosen by its pcap link type, or a one-line refusal where libpcap cannot filter it.
What a capture file starts with is checked against the table in `pcapfile`.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from egress.capture.early import discard_early, prefilter_argv, take_early
from egress.capture.lines import LineStats, parse_line
from egress.capture.pcapfile import PCAP_HEADER_BYTES, PCAP_MAGICS, PCAPNG_BYTE_ORDERS, PCAPNG_HEADER_BYTES, PCAPNG_MAGIC, pcap_magic
from egress.capture.prefilter import build_filter
from egress.capture.process import EXIT_SECONDS, reap, spawn
from egress.capture.stream import Dissect, PacketStream
from egress.capture.tshark import start_tshark, tshark_argv, tshark_path
from egress.errors import InputError
from egress.localnet import IPNetwork
from egress.model import Packet

__all__ = ["FileSource", "FileReport"]

log = structlog.get_logger("egress.capture")

_CAPTURE_MAGICS = (*PCAP_MAGICS, PCAPNG_MAGIC)
_HEADER_MIN = max(PCAP_HEADER_BYTES, PCAPNG_HEADER_BYTES)  # read to check a file's header
_ETHERNET = 1
_DAMAGED = ("damaged or corrupt", "bogus", "invalid packet", "bigger than snaplen", "block length", "not a multiple")
_NOT_CAPTURE = ("isn't a capture file", "unknown file format", "not a capture file", "bad dump file format")
_WHOLE_BATCH = 1024  # packets handed on at a time from tshark reading a whole file
_CUT_SHORT = ("cut short", "truncated dump file", "truncated")


@dataclass(slots=True)
class FileReport:
    """What reading one file came to; `warnings` are one-line and name the file."""

    path: Path
    packets: int = 0
    dissected: int = 0  # packets tshark dissected (the rest were read by their headers)
    frames_skipped: int = 0
    prefiltered: bool = False
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)


class FileSource:
    """Packets of one capture file, in order. `report` is complete once iteration ends."""

    def __init__(
        self,
        path: Path,
        bpf: str,
        bpf_untagged: str,
        *,
        chunk_packets: int = 100_000,
        dissect: Dissect = "names",
        progress: Callable[[int], None] | None = None,
        prefilter: bool = True,
        on_arp: Callable[[list[Packet]], None] | None = None,
    ) -> None:
        """`on_arp`: the ARP frames the prefiltered route reads, for the device inventory (see PacketStream)."""
        self.path = path
        self._on_arp = on_arp
        self._use_prefilter = prefilter
        self._bpf = bpf
        self._bpf_untagged = bpf_untagged
        self._chunk = chunk_packets
        self._dissect: Dissect = dissect
        self._progress = progress
        self.report = FileReport(path)
        self._pipe = False
        self._stream: io.BufferedReader | None = None  # a pipe, open from the check to the end
        self._head = b""
        self._prefilter_error = ""
        self._read_done = threading.Event()  # the prefiltered read is over: the progress watcher stops

    @classmethod
    def for_networks(cls, path: Path, local_networks: Iterable[IPNetwork], extra_bpf: str = "", **kw: object) -> FileSource:
        local_networks = list(local_networks)
        return cls(path, build_filter(local_networks, extra_bpf), build_filter(local_networks, extra_bpf, vlan=False), **kw)  # type: ignore[arg-type]

    def _open(self) -> bytes:
        """Open the file and read its first bytes. A pipe (`<(…)`, /dev/stdin, a FIFO) is
        opened once and read once: its head is kept, to be fed first."""
        try:
            fh = self.path.open("rb")
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a directory, not a capture file") from None
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read: {exc.strerror}") from None
        try:
            self._pipe = not stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
            head = fh.read(_HEADER_MIN)
        except OSError as exc:
            fh.close()
            raise InputError(f"{self.path}: cannot read: {exc.strerror}") from None
        if self._pipe:
            self._stream = fh
        else:
            fh.close()
        return head

    def _check_readable(self, head: bytes) -> bool:
        """Refuse what is not a capture (exit 2); False for a capture cut inside its header
        (nothing to read, a warning). tshark alone would open a PNG as "MIME" and 3 bytes
        as "MP4" and report an empty capture."""
        if not head:
            raise InputError(f"{self.path}: empty file, not a capture")
        magic = head[:4]
        if len(head) < 4:
            if any(m.startswith(head) for m in _CAPTURE_MAGICS):
                self._cut_short()
                return False
            raise InputError(f"{self.path}: not a capture file (pcap or pcapng)")
        if magic in _CAPTURE_MAGICS:
            if len(head) < (PCAP_HEADER_BYTES if magic in PCAP_MAGICS else PCAPNG_HEADER_BYTES) or not self._whole_section_header(head):
                self._cut_short()
                return False
            return True
        if magic[:2] == b"\x1f\x8b" or magic == b"\x28\xb5\x2f\xfd":
            return True  # gzip or zstd: tshark reads compressed captures
        raise InputError(f"{self.path}: not a capture file (pcap or pcapng)")

    def _whole_section_header(self, head: bytes) -> bool:
        """A pcapng file must hold at least its section header block, as long as it says."""
        if head[:4] != PCAPNG_MAGIC or self._pipe:
            return True  # a pipe's length is known only at its end
        order = PCAPNG_BYTE_ORDERS.get(head[8:12], ">")
        declared: int = struct.unpack(order + "I", head[4:8])[0]
        return self.path.stat().st_size >= declared

    def packets(self) -> Iterator[Packet]:
        """One packet at a time (tests, tools); the pipeline reads `batches()`."""
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Packet]]:
        """The file's packets in order, some thousands at a time."""
        self._head = self._open()
        try:
            if not self._check_readable(self._head):
                return
            yield from self._read()
        finally:
            if self._stream is not None:
                self._stream.close()
            discard_early()  # one started for this file with another filter, or for a file refused
        if self.report.packets == 0 and self.report.frames_skipped:
            self.report.warnings.append(
                f"{self.path}: no IP packet in {self.report.frames_skipped} frames (a link type or protocol egress does not decode)"
            )

    def _read(self) -> Iterator[list[Packet]]:
        tcpdump = shutil.which("tcpdump") if self._use_prefilter else None
        if self._pipe:
            yield from self._pipe_once(tcpdump)
            return
        if tcpdump:
            for bpf in (self._bpf, self._bpf_untagged):
                stream = self._try_prefilter(tcpdump, bpf)
                if stream is not None:
                    yield from stream
                    return
        yield from self._whole_file()

    def _pipe_once(self, tcpdump: str | None) -> Iterator[list[Packet]]:
        """One pass only: libpcap's filter (chosen by the link type), or a one-line refusal;
        no second attempt could read the pipe again."""
        stream = None
        if tcpdump is not None:
            bpf = self._bpf_untagged if _pcap_linktype(self._head) not in (None, _ETHERNET) else self._bpf
            stream = self._try_prefilter(tcpdump, bpf)
        if stream is None:
            reason = self._prefilter_error if tcpdump else "tcpdump is not installed" if self._use_prefilter else "the prefilter is off"
            raise InputError(f"{self.path}: a pipe is read once, and libpcap could not filter it ({reason}): save it to a file")
        yield from stream

    # -- prefiltered route ---------------------------------------------------------
    def _try_prefilter(self, tcpdump: str, bpf: str) -> Iterator[list[Packet]] | None:
        """tcpdump reads a file itself (its read position is the progress) and a pipe from
        a thread here; None where it refused the file or the filter."""
        if self._pipe:
            proc = spawn([tcpdump, "-r", "-", "-w", "-", "--", bpf])  # stdio's own buffers: a pipe may pause
            feeder = threading.Thread(target=self._feed, args=(proc,), name="egress-read-file", daemon=True)
        else:
            argv = prefilter_argv(tcpdump, self.path, bpf)
            proc = take_early(argv) or spawn(argv, stdin=subprocess.DEVNULL)
            self._read_done.clear()
            feeder = threading.Thread(target=self._watch_progress, args=(proc,), name="egress-file-progress", daemon=True)
        feeder.start()
        assert proc.stdout is not None and proc.stderr is not None
        head = proc.stdout.peek(PCAP_HEADER_BYTES)[:PCAP_HEADER_BYTES] if hasattr(proc.stdout, "peek") else b""
        if len(head) < PCAP_HEADER_BYTES:
            reap(proc, wait_seconds=EXIT_SECONDS)  # its output ended: tcpdump refused the file or the filter
            self._read_done.set()
            feeder.join()
            err = proc.stderr.read().decode("utf-8", "replace")
            self._prefilter_error = _last_line(err)
            log.debug("prefilter_unavailable", file=str(self.path), reason=self._prefilter_error)
            return None
        self.report.prefiltered = True
        return self._prefiltered(proc, feeder)

    def _chunks(self) -> Iterator[bytes]:
        """A pipe: what was read to check it, then the rest."""
        assert self._stream is not None
        yield self._head
        while chunk := self._stream.read1(1 << 20):
            yield chunk

    def _watch_progress(self, proc: subprocess.Popen[bytes]) -> None:
        """Report how far tcpdump has read the file, from its file descriptor's position
        (/proc/PID/fdinfo), every 0.2 s until the read is done; the rest at the end. The
        wait is on `_read_done`, not a sleep: the end of the file would wait for the next
        tick (0.1 s on average, a fifth of a 100,000-packet analysis)."""
        done = 0
        fdinfo = _fdinfo_of(proc.pid, self.path) if self._progress is not None else None
        while not self._read_done.wait(0.2) and proc.poll() is None:
            if fdinfo is not None and self._progress is not None:
                try:
                    pos = int(fdinfo.read_text().split()[1])  # "pos:\t<offset>"
                except (OSError, ValueError, IndexError):
                    fdinfo = None
                    continue
                if pos > done:
                    self._progress(pos - done)
                    done = pos
        if self._progress is not None:
            size = self.path.stat().st_size
            if size > done:
                self._progress(size - done)

    def _feed(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        try:
            for chunk in self._chunks():
                proc.stdin.write(chunk)
                if self._progress is not None:
                    self._progress(len(chunk))
        except (BrokenPipeError, ValueError):
            pass  # tcpdump stopped reading: it says why on stderr
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass

    def _prefiltered(self, proc: subprocess.Popen[bytes], feeder: threading.Thread) -> Iterator[list[Packet]]:
        assert proc.stdout is not None and proc.stderr is not None
        rot = PacketStream(proc.stdout, start_tshark, chunk_packets=self._chunk, name=str(self.path), dissect=self._dissect, on_arp=self._on_arp)
        finished = False
        try:
            for batch in rot.batches():
                if batch is not None:  # a file's stream never pauses: no ticks
                    yield batch
            finished = True
        finally:
            reap(proc, wait_seconds=EXIT_SECONDS if finished else 0.0)  # stopped early: leave no tcpdump behind
            self._read_done.set()
            feeder.join()
            err = proc.stderr.read().decode("utf-8", "replace")
            proc.stdout.close()
            proc.stderr.close()
        self.report.packets += rot.stats.packets
        self.report.dissected += rot.to_tshark
        self.report.frames_skipped += rot.stats.non_ip + rot.stats.bad
        # tcpdump's own errors start "tcpdump:"; other lines ("reading from file", "Warning:
        # setgid/setuid failed" when it cannot drop privileges it does not have) are not damage
        problems = [ln.strip() for ln in err.splitlines() if ln.startswith("tcpdump: ")]
        if rot.leftover or any(marker in err for marker in _CUT_SHORT):
            self._cut_short()
        elif problems:
            self._damaged(problems[-1].removeprefix("tcpdump: "))
        for line in rot.tshark_errors:
            self.report.warnings.append(f"{self.path}: tshark: {line}")

    # -- whole-file route ------------------------------------------------------------
    def _whole_file(self) -> Iterator[list[Packet]]:
        stats = LineStats()
        proc = spawn(tshark_argv(tshark_path(), str(self.path)), stdin=subprocess.DEVNULL)
        assert proc.stdout is not None and proc.stderr is not None
        finished = False
        try:
            batch: list[Packet] = []
            for raw in proc.stdout:
                pkt = parse_line(raw.decode("utf-8", "replace"), stats)
                if pkt is not None:
                    batch.append(pkt)
                    if len(batch) >= _WHOLE_BATCH:
                        yield batch
                        batch = []
            if batch:
                yield batch
            finished = True
        finally:
            reap(proc, wait_seconds=EXIT_SECONDS if finished else 0.0)  # stopped early: leave no tshark behind
            err = proc.stderr.read().decode("utf-8", "replace")
            proc.stdout.close()
            proc.stderr.close()
        if self._progress is not None:
            self._progress(self.path.stat().st_size)
        self.report.packets += stats.packets
        self.report.dissected += stats.packets + stats.non_ip + stats.bad
        self.report.frames_skipped += stats.non_ip + stats.bad
        if proc.returncode != 0:
            reason = _last_line(err)
            if any(marker in err for marker in _CUT_SHORT):
                self._cut_short()
            elif any(marker in err for marker in _DAMAGED):
                self._damaged(reason.removeprefix("tshark: "))
            elif any(marker in err for marker in _NOT_CAPTURE):
                raise InputError(f"{self.path}: not a capture file (pcap or pcapng)")
            elif "doesn't support" in err or "unknown" in err.lower():
                raise InputError(f"{self.path}: capture with a link-layer type tshark cannot read")
            else:
                raise InputError(f"{self.path}: tshark could not read it: {reason}")

    def _damaged(self, reason: str) -> None:
        self.report.truncated = True
        self.report.warnings.append(f"{self.path}: capture damaged ({reason}); analysed up to the damage")

    def _cut_short(self) -> None:
        if not self.report.truncated:
            self.report.truncated = True
            self.report.warnings.append(f"{self.path}: capture cut short; analysed up to the cut")


def _fdinfo_of(pid: int, path: Path) -> Path | None:
    """/proc/PID/fdinfo/N of the descriptor on which process `pid` has `path` open (it may
    take a moment to open it), or None where /proc does not tell."""
    target = os.path.realpath(path)
    for _ in range(25):
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                if os.path.realpath(fd) == target:
                    return Path(f"/proc/{pid}/fdinfo/{fd.name}")
        except OSError:
            return None
        time.sleep(0.02)
    return None


def _pcap_linktype(head: bytes) -> int | None:
    """The link type of a pcap file header (None for pcapng and others: it is per interface there)."""
    magic = pcap_magic(head)
    if len(head) < PCAP_HEADER_BYTES or magic is None:
        return None
    return int(struct.unpack(magic.byte_order + "I", head[20:24])[0] & 0x0FFFFFFF)  # the top bits hold FCS flags


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Running as user" not in ln]
    return lines[-1] if lines else "no reason given"
