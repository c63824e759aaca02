"""The agent's on-disk spool: a write-ahead log between the flow table and Kafka.

Every batch of flow records is appended here (and fsynced) before anything is sent;
a drainer sends the oldest records to Kafka and moves the read cursor only once Kafka
has acknowledged them. So a Kafka outage, a full agent crash (`kill -9`) or a restart
loses nothing that reached the spool, and records leave in the order they came.

Format (`spool.path/`): segment files `NNNNNNNNNNNN.seg` of frames
`[u32 length][u32 crc32][u16 key length][key][value]` (little-endian; crc over
key-length..value), and `cursor` holding `segment offset` of the next record to send,
replaced atomically. A frame torn by a crash fails its length or CRC check and ends
its segment. When the spool would pass `max_bytes`, the oldest segment is dropped and
reported to `on_drop(records, segment, max_bytes)`, the telemetry event that counts
and logs it (a long outage keeps the recent past, which matters more to a SOC than
the distant one). A disk that fills first (ENOSPC, or any write error) loses only the
batch being written: its bytes are cut off again so that no torn frame hides what
follows, the batch goes to `on_overflow(records, reason, first)` (`first` once per
episode, so it is logged once) and capture goes on; the next batch that fits ends the
episode (`on_space_back(records lost in it)`). What was spooled before stays, and is
delivered once Kafka is back.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from egress.bus import Message
from egress.codec import HEADERS
from egress.errors import UsageError

__all__ = ["Spool"]

log = structlog.get_logger("egress.spool")
_FRAME = struct.Struct("<IIH")
_SEGMENT_BYTES = 8 << 20


class Spool:
    """Append batches, read the oldest, acknowledge what was delivered. Single-threaded.
    `start()` opens the directory (and finds what a previous run left), `stop()` closes it."""

    def __init__(
        self, path: Path, max_bytes: int, *, segment_bytes: int = _SEGMENT_BYTES, on_drop: Callable[[int, int, int], None] | None = None,
        on_overflow: Callable[[int, str, bool], None] | None = None, on_space_back: Callable[[int], None] | None = None,
    ) -> None:  # fmt: skip
        self.path = path
        self._max = max_bytes
        self._segment_bytes = max(1024, min(segment_bytes, max_bytes // 4 or 1024))
        self._on_drop = on_drop
        self._on_overflow = on_overflow
        self._on_space_back = on_space_back
        self._overflowed: int | None = None  # records lost in the current disk-full episode
        self._cursor_unsaved = False
        self._segments: list[int] = []
        self._cursor = (0, 0)
        self._pending = 0
        self._bytes = 0

    def start(self) -> None:
        path = self.path
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UsageError(f"spool.path {path}: not a writable directory: {exc.strerror}") from None
        self._segments = sorted(int(p.stem) for p in path.glob("*.seg") if p.stem.isdigit())
        self._cursor = self._read_cursor()
        self._pending = 0
        self._bytes = 0
        for seg in self._segments:
            self._bytes += (path / f"{seg:012d}.seg").stat().st_size
            self._pending += self._count(seg, self._cursor[1] if seg == self._cursor[0] else 0) if seg >= self._cursor[0] else 0
        if not self._segments:
            self._segments = [self._cursor[0]]
        self._out = (path / f"{self._segments[-1]:012d}.seg").open("ab", buffering=0)

    # -- bookkeeping -------------------------------------------------------------
    def _read_cursor(self) -> tuple[int, int]:
        try:
            seg, off = (self.path / "cursor").read_text().split()
            return int(seg), int(off)
        except (OSError, ValueError):
            return (self._segments[0] if self._segments else 0), 0

    def _write_cursor(self) -> None:
        """Persist the cursor; on a full disk it stays in memory (a crash before the next
        write that succeeds sends those records again: duplicates, never losses)."""
        tmp = self.path / "cursor.tmp"
        try:
            with tmp.open("w") as fh:
                fh.write(f"{self._cursor[0]} {self._cursor[1]}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path / "cursor")
        except OSError as exc:
            if not self._cursor_unsaved:  # once per episode, as the overflow
                log.warning("spool_cursor_not_saved", reason=exc.strerror or str(exc))
            self._cursor_unsaved = True
            return
        self._cursor_unsaved = False

    def _seg_path(self, seg: int) -> Path:
        return self.path / f"{seg:012d}.seg"

    def _count(self, seg: int, offset: int) -> int:
        return sum(1 for _ in self._frames(seg, offset))

    def _frames(self, seg: int, offset: int) -> Iterator[tuple[int, bytes, bytes]]:
        """(end offset, key, value) of each whole frame from `offset`."""
        try:
            data = self._seg_path(seg).read_bytes()
        except FileNotFoundError:
            return
        pos = offset
        while pos + _FRAME.size <= len(data):
            length, crc, keylen = _FRAME.unpack_from(data, pos)
            end = pos + 8 + length
            body = data[pos + 8 : end]
            if length < 2 or end > len(data) or zlib.crc32(body) != crc or keylen > length - 2:
                log.warning("spool_torn_frame", segment=seg, offset=pos)  # a crash mid-write: the rest of this segment is gone
                return
            yield end, body[2 : 2 + keylen], body[2 + keylen :]
            pos = end

    def __len__(self) -> int:
        return self._pending

    @property
    def size_bytes(self) -> int:
        return self._bytes

    # -- writing -----------------------------------------------------------------
    def append(self, messages: list[Message]) -> None:
        """Write and fsync a batch (the unit that survives a crash)."""
        if not messages:
            return
        frames = []
        for m in messages:
            key = m.key or b""
            body = struct.pack("<H", len(key)) + key + m.value  # the u16 that _FRAME reads third
            frames.append(struct.pack("<II", len(body), zlib.crc32(body)) + body)
        blob = b"".join(frames)
        try:
            self._write(blob)
        except OSError as exc:
            first = self._overflowed is None
            self._overflowed = (self._overflowed or 0) + len(messages)
            if self._on_overflow is not None:
                self._on_overflow(len(messages), exc.strerror or str(exc), first)
            return
        if self._overflowed is not None:
            if self._on_space_back is not None:
                self._on_space_back(self._overflowed)
            self._overflowed = None
        self._pending += len(messages)
        self._bytes += len(blob)
        while self._bytes > self._max and len(self._segments) > 1:
            self._drop_oldest()

    def _write(self, blob: bytes) -> None:
        """Append and fsync `blob` whole, or cut the segment back to where it was and raise."""
        if self._out.tell() + len(blob) > self._segment_bytes and self._out.tell() > 0:
            self._roll()
        out = self._out.fileno()
        start = os.lseek(out, 0, os.SEEK_END)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(out, view) :]
            os.fsync(out)
        except OSError:
            os.ftruncate(out, start)  # frees what was written: the next frame starts where this one did
            os.lseek(out, start, os.SEEK_SET)
            raise

    def _roll(self) -> None:
        seg = self._segments[-1] + 1
        out = self._seg_path(seg).open("ab", buffering=0)  # may fail on a full disk: then the current one stays
        self._out.close()
        self._segments.append(seg)
        self._out = out

    def _drop_oldest(self) -> None:
        seg = self._segments.pop(0)
        lost = self._count(seg, self._cursor[1] if seg == self._cursor[0] else 0) if seg >= self._cursor[0] else 0
        path = self._seg_path(seg)
        self._bytes -= path.stat().st_size
        path.unlink()
        if self._cursor[0] <= seg:
            self._cursor = (self._segments[0], 0)
            self._write_cursor()
        self._pending -= lost
        if self._on_drop is not None:
            self._on_drop(lost, seg, self._max)

    # -- reading -----------------------------------------------------------------
    def peek(self, limit: int) -> tuple[list[Message], tuple[int, int]]:
        """Up to `limit` oldest undelivered records, and the cursor just after them."""
        out: list[Message] = []
        seg, off = self._cursor
        for candidate in [s for s in self._segments if s >= seg]:
            start = off if candidate == seg else 0
            end = start
            for end, key, value in self._frames(candidate, start):
                out.append(Message(key or None, value, HEADERS))  # the envelope is the codec's: frames keep key and value
                if len(out) >= limit:
                    return out, (candidate, end)
            seg, off = candidate, end
            if candidate != self._segments[-1]:
                seg, off = candidate + 1, 0
        return out, (seg, off)

    def ack(self, count: int, cursor: tuple[int, int]) -> None:
        """The records before `cursor` are delivered: persist it and drop finished segments."""
        self._cursor = cursor
        self._pending = max(0, self._pending - count)
        while len(self._segments) > 1 and self._segments[0] < cursor[0]:
            seg = self._segments.pop(0)
            path = self._seg_path(seg)
            self._bytes -= path.stat().st_size
            path.unlink()
        self._write_cursor()

    def stop(self) -> None:
        self._out.close()
