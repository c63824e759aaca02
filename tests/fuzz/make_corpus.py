"""A deterministic corpus of broken captures for the fuzz tests.

    python tests/fuzz/make_corpus.py OUTDIR [--count N]

Seeds are the committed samples (pcaps/*.pcap*) and, when the shared directory is
there, the real captures in ../shared/pcaps-real. Each output is one seed with one
kind of damage (see KINDS); kinds are dealt round-robin so every kind gets the same
share, and every random choice comes from a generator seeded by the file's index, so
two runs give byte-identical files. A file's name says its index, kind and seed:
`0042-bitflip-street-cctv-vlan20.pcap`.

Seeds are cut to their first ~48 KB (at a record or block boundary) before damage, so
every file stays well under 200 KB and the whole corpus under 60 MB.
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KINDS", "build", "kind_of", "seeds"]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "pcaps"
REAL = ROOT.parent / "shared" / "pcaps-real"

SEED_BUDGET = 48 * 1024  # bytes of each seed kept before damage
MAX_FILE = 200 * 1024

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\x4d\x3c\xb2\xa1": ("<", True),
    b"\xa1\xb2\x3c\x4d": (">", True),
}
PCAPNG_SHB = 0x0A0D0D0A
BYTE_ORDER_MAGIC = 0x1A2B3C4D


# -- seeds -----------------------------------------------------------------------------
@dataclass
class Record:
    ts_sec: int
    ts_frac: int
    origlen: int
    data: bytes
    interface: int = 0


@dataclass
class Seed:
    """One seed capture, cut to SEED_BUDGET: its raw bytes and its records."""

    name: str
    fmt: str  # "pcap" or "pcapng"
    raw: bytes
    linktype: int = 1
    records: list[Record] = field(default_factory=list)
    endian: str = "<"
    nanos: bool = False
    blocks: list[tuple[int, int]] = field(default_factory=list)  # pcapng: (offset, length) of each block in raw


def _parse_pcap(name: str, data: bytes) -> Seed | None:
    if len(data) < 24 or data[:4] not in PCAP_MAGICS:
        return None
    endian, nanos = PCAP_MAGICS[data[:4]]
    snaplen, linktype = struct.unpack_from(endian + "II", data, 16)
    seed = Seed(name, "pcap", b"", linktype & 0x0FFFFFFF, endian=endian, nanos=nanos)
    pos = 24
    while pos + 16 <= len(data) and pos < SEED_BUDGET:
        sec, frac, incl, orig = struct.unpack_from(endian + "IIII", data, pos)
        if incl > 262144 or pos + 16 + incl > len(data):
            break
        seed.records.append(Record(sec, frac, orig, data[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    seed.raw = data[:pos]
    return seed


def _pcapng_blocks(data: bytes) -> tuple[list[tuple[int, int, int, str]], int]:
    """(offset, length, type, endian) of each well-formed block; and where they end."""
    out: list[tuple[int, int, int, str]] = []
    pos, endian = 0, "<"
    while pos + 12 <= len(data):
        btype = struct.unpack_from("<I", data, pos)[0]
        if btype == PCAPNG_SHB:
            bom = data[pos + 8 : pos + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
            if not endian:
                break
        else:
            btype = struct.unpack_from(endian + "I", data, pos)[0]
        blen = struct.unpack_from(endian + "I", data, pos + 4)[0]
        if blen < 12 or blen % 4 or pos + blen > len(data):
            break
        out.append((pos, blen, btype, endian))
        pos += blen
    return out, pos


def _parse_pcapng(name: str, data: bytes) -> Seed | None:
    if len(data) < 28 or struct.unpack_from("<I", data, 0)[0] != PCAPNG_SHB:
        return None
    blocks, _ = _pcapng_blocks(data)
    if not blocks:
        return None
    seed = Seed(name, "pcapng", b"", endian=blocks[0][3])
    linktypes: list[int] = []
    end = 0
    for off, blen, btype, endian in blocks:
        if off >= SEED_BUDGET and seed.records:
            break
        body = data[off + 8 : off + blen - 4]
        if btype == 1 and len(body) >= 8:  # IDB
            linktypes.append(struct.unpack_from(endian + "H", body, 0)[0])
        elif btype == 6 and len(body) >= 20:  # EPB
            iface, hi, lo, incl, orig = struct.unpack_from(endian + "IIIII", body, 0)
            micros = (hi << 32) | lo
            seed.records.append(Record(micros // 1_000_000, micros % 1_000_000, orig, body[20 : 20 + incl], iface))
        elif btype == 3 and len(body) >= 4:  # SPB
            orig = struct.unpack_from(endian + "I", body, 0)[0]
            seed.records.append(Record(0, 0, orig, body[4:]))
        seed.blocks.append((off, blen))
        end = off + blen
    seed.raw = data[:end]
    seed.linktype = linktypes[0] if linktypes else 1
    return seed


def seeds() -> list[Seed]:
    """The seeds, in a fixed order: samples first, then the real captures when present."""
    paths = sorted(SAMPLES.glob("*.pcap*"))
    if REAL.is_dir():
        paths += sorted(REAL.glob("*.pcap*"))
    out: list[Seed] = []
    for path in paths:
        data = path.read_bytes()
        seed = _parse_pcap(path.stem, data) or _parse_pcapng(path.stem, data)
        if seed is not None and seed.raw:
            out.append(seed)
    if not out:
        raise SystemExit(f"no seed captures under {SAMPLES}")
    return out


# -- writers ---------------------------------------------------------------------------
def pcap_header(endian: str = "<", snaplen: int = 65535, linktype: int = 1, nanos: bool = False) -> bytes:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    return struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(rec: Record, endian: str = "<", caplen: int | None = None) -> bytes:
    incl = len(rec.data) if caplen is None else caplen
    return struct.pack(endian + "IIII", rec.ts_sec & 0xFFFFFFFF, rec.ts_frac & 0xFFFFFFFF, incl, rec.origlen & 0xFFFFFFFF) + rec.data


def write_pcap(seed: Seed, records: list[Record] | None = None, **hdr: object) -> bytes:
    endian = str(hdr.pop("endian", seed.endian))
    head = pcap_header(endian, linktype=int(hdr.pop("linktype", seed.linktype)), nanos=bool(hdr.pop("nanos", seed.nanos)), **hdr)  # type: ignore[arg-type]
    return head + b"".join(pcap_record(r, endian) for r in (seed.records if records is None else records))


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(btype: int, body: bytes, endian: str = "<", *, length: int | None = None, trailer: int | None = None) -> bytes:
    """A pcapng block; `length`/`trailer` override the two length fields (to lie in them)."""
    total = 12 + len(body)
    return struct.pack(endian + "II", btype, total if length is None else length) + body + struct.pack(endian + "I", total if trailer is None else trailer)


def shb(endian: str = "<") -> bytes:
    return block(PCAPNG_SHB, struct.pack(endian + "IHHq", BYTE_ORDER_MAGIC, 1, 0, -1), endian)


def idb(linktype: int = 1, endian: str = "<", snaplen: int = 0) -> bytes:
    return block(1, struct.pack(endian + "HHI", linktype, 0, snaplen), endian)


def epb(rec: Record, endian: str = "<", interface: int = 0) -> bytes:
    micros = (rec.ts_sec & 0xFFFFFFFF) * 1_000_000 + rec.ts_frac % 1_000_000
    head = struct.pack(endian + "IIIII", interface, (micros >> 32) & 0xFFFFFFFF, micros & 0xFFFFFFFF, len(rec.data), rec.origlen & 0xFFFFFFFF)
    return block(6, _pad4(head + rec.data), endian)


def pcapng_blocks(seed: Seed, endian: str = "<", linktype: int | None = None) -> list[bytes]:
    """The seed's packets as pcapng blocks: SHB, one IDB, one EPB per record."""
    lt = seed.linktype if linktype is None else linktype
    return [shb(endian), idb(lt, endian), *(epb(r, endian) for r in seed.records)]


# -- damage ----------------------------------------------------------------------------
Mutation = Callable[[Seed, random.Random], tuple[bytes, str]]


def _header_len(seed: Seed) -> int:
    return 24 if seed.fmt == "pcap" else (seed.blocks[0][1] if seed.blocks else 28)


def truncate_header(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Cut inside the file header (pcap) or the first blocks (pcapng)."""
    limit = _header_len(seed) if seed.fmt == "pcap" else min(len(seed.raw), (seed.blocks[1][0] + seed.blocks[1][1]) if len(seed.blocks) > 1 else 28)
    cut = rng.randrange(1, max(2, limit))
    return seed.raw[:cut], seed.fmt


def truncate_record(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Cut inside a record: in its header or mid-data, anywhere after the file header."""
    start = _header_len(seed)
    if len(seed.raw) <= start + 1:
        return seed.raw[: max(1, len(seed.raw) - 1)], seed.fmt
    return seed.raw[: rng.randrange(start + 1, len(seed.raw))], seed.fmt


def bitflip(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    data = bytearray(seed.raw)
    for _ in range(rng.randint(1, 50)):
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data), seed.fmt


def overwrite_runs(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """1-5 runs of random bytes written over the file (the header included, sometimes)."""
    data = bytearray(seed.raw)
    for _ in range(rng.randint(1, 5)):
        n = rng.randint(1, 256)
        at = rng.randrange(0, max(1, len(data) - n))
        data[at : at + n] = rng.randbytes(min(n, len(data) - at))
    return bytes(data), seed.fmt


def random_bytes(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Noise only: no capture header at all."""
    data = bytearray(rng.randbytes(rng.choice((1, 3, 4, 23, 24, 100, 4096, rng.randint(5, 60000)))))
    if bytes(data[:4]) in PCAP_MAGICS or data[:4] == b"\x0a\x0d\x0d\x0a":
        data[0] ^= 0xFF
    return bytes(data), "pcap"


def empty(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    return b"", rng.choice(("pcap", "pcapng"))


def huge_snaplen(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """A header snaplen of 0xFFFFFFF0 (or 0x7FFFFFFF, 0) over good records."""
    snap = rng.choice((0xFFFFFFF0, 0xFFFFFFFF, 0x7FFFFFFF, 0, 1))
    if rng.random() < 0.3:
        return b"".join([shb(), idb(seed.linktype, snaplen=snap), *(epb(r) for r in seed.records)]), "pcapng"
    return write_pcap(seed, snaplen=snap), "pcap"


def huge_caplen(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """One record claims 0xFFFFFFF0 (or another absurd) captured bytes."""
    records = seed.records or [Record(1, 0, 60, b"\0" * 60)]
    victim = rng.randrange(len(records))
    caplen = rng.choice((0xFFFFFFF0, 0xFFFFFFFF, 0x80000000, 262145, 10_000_000))
    body = b"".join(pcap_record(r, seed.endian, caplen if i == victim else None) for i, r in enumerate(records))
    return pcap_header(seed.endian, linktype=seed.linktype, nanos=seed.nanos) + body, "pcap"


def caplen_gt_origlen(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Records whose original length is smaller than what was captured (0 at times)."""
    records = [Record(r.ts_sec, r.ts_frac, r.origlen, r.data) for r in seed.records] or [Record(1, 0, 60, b"\0" * 60)]
    for r in records:
        if rng.random() < 0.6:
            r.origlen = rng.choice((0, 1, max(0, len(r.data) - rng.randint(1, 40))))
    return write_pcap(seed, records), "pcap"


def odd_timestamps(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Negative-looking seconds (top bit set), fractions past one second, time going backwards."""
    records = [Record(r.ts_sec, r.ts_frac, r.origlen, r.data) for r in seed.records] or [Record(1, 0, 60, b"\0" * 60)]
    for r in records:
        roll = rng.random()
        if roll < 0.3:
            r.ts_sec = rng.choice((0x80000000, 0xFFFFFFFF, 0xFFFFFFF0, 0x80000001))
        elif roll < 0.5:
            r.ts_frac = rng.choice((1_000_000, 999_999_999, 0xFFFFFFFF))
        elif roll < 0.7:
            r.ts_sec = rng.randrange(0, 0xFFFFFFFF)
        elif roll < 0.8:
            r.ts_sec = 0
    return write_pcap(seed, records), "pcap"


def _ng(seed: Seed) -> list[bytes]:
    """The seed as a list of pcapng blocks: its own when it is pcapng, else converted."""
    if seed.fmt == "pcapng":
        return [seed.raw[o : o + n] for o, n in seed.blocks]
    return pcapng_blocks(seed)


def _endian_of(blocks: list[bytes]) -> str:
    return ">" if blocks and blocks[0][8:12] == b"\x1a\x2b\x3c\x4d" else "<"


def pcapng_unknown_block(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Blocks of unknown or reserved types (custom, vendor, 0x0BAD...) between real ones."""
    blocks = _ng(seed)
    endian = _endian_of(blocks)
    for _ in range(rng.randint(1, 4)):
        btype = rng.choice((0x00000000, 0x00000007, 0x0000000B, 0x00000BAD, 0x40000BAD, 0x80000001, 0xFFFFFFFF, rng.randrange(0x10, 0x7FFFFFFF)))
        body = rng.randbytes(rng.choice((0, 4, 8, 64, 1000)))
        blocks.insert(rng.randint(1, len(blocks)), block(btype, body, endian))
    return b"".join(blocks), "pcapng"


def pcapng_unaligned_length(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """A block whose total length is not a multiple of 4 (in both length fields)."""
    blocks = _ng(seed)
    endian = _endian_of(blocks)
    i = rng.randrange(len(blocks))
    raw = blocks[i]
    body = raw[8:-4]
    body = body[: max(0, len(body) - rng.randint(1, 3))] if rng.random() < 0.5 and body else body + rng.randbytes(rng.randint(1, 3))
    btype = struct.unpack_from(endian + "I", raw, 0)[0] if i else PCAPNG_SHB
    blocks[i] = block(btype, body, endian)
    return b"".join(blocks), "pcapng"


def pcapng_trailer_mismatch(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """A block whose trailing length differs from its leading one."""
    blocks = _ng(seed)
    endian = _endian_of(blocks)
    i = rng.randrange(len(blocks))
    raw = bytearray(blocks[i])
    lead = struct.unpack_from(endian + "I", raw, 4)[0]
    struct.pack_into(endian + "I", raw, len(raw) - 4, rng.choice((lead + 4, lead - 4, 0, 0xFFFFFFFF, rng.randrange(0, 1 << 32))) & 0xFFFFFFFF)
    blocks[i] = bytes(raw)
    return b"".join(blocks), "pcapng"


def pcapng_weird_linktype(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """The interface says a link type that is unknown, reserved or plainly different."""
    lt = rng.choice((0, 2, 101, 105, 113, 127, 147, 228, 252, 276, 285, 0x7FFF, 0xFFFF, rng.randrange(0, 0x10000)))
    return b"".join(pcapng_blocks(seed, linktype=lt)), "pcapng"


def pcapng_other_byte_order(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Big-endian sections: the whole file, a second section in the other order, or a lying SHB."""
    variant = rng.randrange(3)
    if variant == 0:  # all big-endian: valid
        return b"".join(pcapng_blocks(seed, ">")), "pcapng"
    if variant == 1:  # a little-endian section, then a big-endian one
        half = len(seed.records) // 2
        first = Seed(seed.name, "pcap", b"", seed.linktype, seed.records[:half])
        second = Seed(seed.name, "pcap", b"", seed.linktype, seed.records[half:])
        return b"".join(pcapng_blocks(first, "<") + pcapng_blocks(second, ">")), "pcapng"
    blocks = pcapng_blocks(seed, "<")  # SHB says big-endian, the rest stays little-endian
    blocks[0] = shb(">")
    return b"".join(blocks), "pcapng"


def reorder_duplicate(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """Records duplicated, shuffled, or played backwards (pcap or pcapng alike)."""
    records = list(seed.records) or [Record(1, 0, 60, b"\0" * 60)]
    variant = rng.randrange(3)
    if variant == 0:
        records = [r for r in records for _ in range(rng.choice((1, 2, 3)))]
    elif variant == 1:
        rng.shuffle(records)
    else:
        records = records[::-1] + records[: len(records) // 2]
    if rng.random() < 0.3:
        return b"".join(pcapng_blocks(Seed(seed.name, "pcap", b"", seed.linktype, records))), "pcapng"
    return write_pcap(seed, records), "pcap"


def header_then_garbage(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    """A good pcap header (or pcapng SHB+IDB), maybe a few records, then noise."""
    keep = seed.records[: rng.randint(0, min(3, len(seed.records)))]
    noise = rng.randbytes(rng.choice((1, 15, 16, 17, 100, 5000, rng.randint(1, 40000))))
    if rng.random() < 0.3:
        return b"".join([shb(), idb(seed.linktype), *(epb(r) for r in keep)]) + noise, "pcapng"
    return write_pcap(seed, keep) + noise, "pcap"


KINDS: dict[str, Mutation] = {
    "truncate-header": truncate_header,
    "truncate-record": truncate_record,
    "bitflip": bitflip,
    "overwrite": overwrite_runs,
    "random-bytes": random_bytes,
    "empty": empty,
    "huge-snaplen": huge_snaplen,
    "huge-caplen": huge_caplen,
    "caplen-gt-origlen": caplen_gt_origlen,
    "odd-timestamps": odd_timestamps,
    "ng-unknown-block": pcapng_unknown_block,
    "ng-unaligned-length": pcapng_unaligned_length,
    "ng-trailer-mismatch": pcapng_trailer_mismatch,
    "ng-weird-linktype": pcapng_weird_linktype,
    "ng-byte-order": pcapng_other_byte_order,
    "reorder-duplicate": reorder_duplicate,
    "header-garbage": header_then_garbage,
}


def kind_of(path: Path) -> str:
    """The mutation kind a corpus file was made with, from its name."""
    rest = path.name.split("-", 1)[1]
    return next(k for k in sorted(KINDS, key=len, reverse=True) if rest.startswith(k + "-"))


def build(outdir: Path | str, count: int = 1000) -> list[Path]:
    """Write `count` damaged captures to `outdir`; the same files every time."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    pool = seeds()
    names = list(KINDS)
    paths: list[Path] = []
    for i in range(count):
        kind = names[i % len(names)]
        rng = random.Random(f"egress-fuzz-{i}")
        seed = pool[rng.randrange(len(pool))]
        data, ext = KINDS[kind](seed, rng)
        data = data[:MAX_FILE - 1]
        path = outdir / f"{i:04d}-{kind}-{seed.name}.{ext}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)
    paths = build(args.outdir, args.count)
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} files, {total / 1e6:.1f} MB, in {args.outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
