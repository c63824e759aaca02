"""The spool: ordered, durable across a crash, bounded with counted drops, torn frames survived."""

from __future__ import annotations

from pathlib import Path

from egress.bus import Message
from egress.bus.spool import Spool


def _started(path: Path, max_bytes: int, **options: object) -> Spool:
    spool = Spool(path, max_bytes, **options)  # type: ignore[arg-type]
    spool.start()
    return spool


def msgs(start: int, n: int) -> list[Message]:
    return [Message(f"k{i}".encode(), f"value-{i}".encode()) for i in range(start, start + n)]


def drain(spool: Spool, limit: int = 7) -> list[bytes]:
    out = []
    while len(spool):
        batch, cursor = spool.peek(limit)
        assert batch
        out += [m.value for m in batch]
        spool.ack(len(batch), cursor)
    return out


def test_records_come_out_in_order_across_segments(tmp_path: Path) -> None:
    """Appended batches leave in order, across segment files, and delivered segments are removed."""
    spool = _started(tmp_path, 1 << 20, segment_bytes=1024)
    for i in range(0, 300, 30):
        spool.append(msgs(i, 30))
    assert len(spool) == 300 and len(list(tmp_path.glob("*.seg"))) > 3
    assert drain(spool) == [f"value-{i}".encode() for i in range(300)]
    assert len(list(tmp_path.glob("*.seg"))) == 1


def test_spooled_records_survive_a_crash(tmp_path: Path) -> None:
    """A new Spool on the same directory (the agent restarted) resumes at the cursor."""
    spool = _started(tmp_path, 1 << 20, segment_bytes=1024)
    spool.append(msgs(0, 50))
    batch, cursor = spool.peek(20)
    spool.ack(len(batch), cursor)  # 20 delivered, then the agent is killed (no close)
    again = _started(tmp_path, 1 << 20, segment_bytes=1024)
    assert len(again) == 30
    assert drain(again) == [f"value-{i}".encode() for i in range(20, 50)]


def test_a_torn_frame_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    """A crash mid-write leaves half a frame: what was whole is still delivered."""
    spool = _started(tmp_path, 1 << 20)
    spool.append(msgs(0, 5))
    seg = next(tmp_path.glob("*.seg"))
    with seg.open("ab") as fh:
        fh.write(b"\x50\x00\x00\x00garbage")
    again = _started(tmp_path, 1 << 20)
    assert len(again) == 5
    assert drain(again) == [f"value-{i}".encode() for i in range(5)]


def test_full_spool_drops_oldest_and_counts(tmp_path: Path) -> None:
    """Past max_bytes the oldest segment goes, and the loss is reported, never silent."""
    lost: list[int] = []
    spool = _started(tmp_path, 8192, segment_bytes=2048, on_drop=lambda records, _segment, _max: lost.append(records))
    for i in range(0, 1000, 10):
        spool.append(msgs(i, 10))
    assert spool.size_bytes <= 8192 + 2048
    pending = len(spool)
    assert sum(lost) > 0 and pending + sum(lost) == 1000
    remaining = drain(spool)
    assert remaining[-1] == b"value-999" and len(remaining) == pending


def test_keys_and_headers(tmp_path: Path) -> None:
    """Keys come back as written (None stays None) with the schema-version header."""
    spool = _started(tmp_path, 1 << 20)
    spool.append([Message(None, b"a"), Message(b"44-19-B6-12-34-56", b"b")])
    batch, _ = spool.peek(10)
    assert [(m.key, m.value) for m in batch] == [(None, b"a"), (b"44-19-B6-12-34-56", b"b")]
    assert batch[0].header("schema-version") == b"1"


def test_unwritable_path_is_a_usage_error(tmp_path: Path) -> None:
    """A spool path that is a file is refused with its name."""
    import pytest

    from egress.errors import UsageError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="spool.path"):
        _started(blocker, 1 << 20)
