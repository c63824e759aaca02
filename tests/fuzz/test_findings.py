"""Bugs the fuzz corpus found, each reduced to one small input: failing until fixed, regression tests after.

SPEC (Exit codes): "a file that is not a capture at all exits 2"; "a capture cut short is
analysed up to the cut with a warning"; Guarantees: "bad input ... counted, logged".
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from tests.conftest import PCAPS, run_egress
from tests.fuzz import make_corpus
from tests.fuzz.test_fuzz import analyze_one

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415478da636060000000040001f61738550000000049454e44ae426082"
)
JPEG_MIN = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("three-bytes.pcap", b"hi\n"),  # tshark opens files under 5 bytes as "MP4 media"
        ("four-random-bytes.pcap", b"\x17\x93\x5c\x02"),
        ("image.pcap", PNG_1PX),  # tshark opens images as "MIME File Format"
        ("photo.pcap", JPEG_MIN),
    ],
    ids=["three-bytes", "four-random-bytes", "png", "jpeg"],
)
def test_file_that_is_not_a_capture_is_refused(tmp_path: Path, name: str, data: bytes) -> None:
    """A tiny or foreign file (3 bytes of text, a PNG, a JPEG) is refused with exit 2 naming it, not analysed as an empty capture."""
    path = tmp_path / name
    path.write_bytes(data)
    out = analyze_one(path)
    assert not out.failure, out.failure
    assert out.exit == 2 and "not a capture file" in out.errors[0], f"exit {out.exit}, warnings {out.warnings}: accepted as a capture with {out.packets} packets"


@pytest.mark.parametrize(
    ("name", "sample", "cut"),
    [
        ("pcap-cut-in-magic.pcap", "trunk-qinq-mixed.pcap", 2),
        ("pcapng-cut-in-section-header.pcapng", "building-cctv-ipv6.pcapng", 40),
    ],
    ids=["pcap-magic", "pcapng-shb"],
)
def test_capture_cut_inside_its_file_header_is_reported(tmp_path: Path, name: str, sample: str, cut: int) -> None:
    """A pcap cut inside its magic, or a pcapng cut inside its section header, gives a warning or exit 2, never a silent exit 0."""
    path = tmp_path / name
    path.write_bytes((PCAPS / sample).read_bytes()[:cut])
    out = analyze_one(path)
    assert not out.failure, out.failure
    assert out.exit == 2 or out.warnings, f"{cut} bytes of {sample}: exit 0 with no warning"


def _records(sample: str) -> make_corpus.Seed:
    data = (PCAPS / sample).read_bytes()
    seed = make_corpus._parse_pcap(sample, data) or make_corpus._parse_pcapng(sample, data)
    assert seed is not None and len(seed.records) > 20
    return seed


def corrupt_mid_file(kind: str, path: Path) -> Path:
    """A good capture whose 11th record is damaged in its framing; everything else is intact."""
    if kind == "pcap-huge-caplen":
        seed = _records("street-cctv-vlan20.pcap")
        body = b"".join(make_corpus.pcap_record(r, "<", 0xFFFFFFF0 if i == 10 else None) for i, r in enumerate(seed.records))
        path.write_bytes(make_corpus.pcap_header("<", snaplen=384, linktype=seed.linktype) + body)
        return path
    seed = _records("building-cctv-ipv6.pcapng")
    blocks = make_corpus.pcapng_blocks(seed)
    bad = bytearray(blocks[12])  # SHB, IDB, then EPBs: the 11th record
    if kind == "pcapng-trailer-mismatch":
        struct.pack_into("<I", bad, len(bad) - 4, len(bad) + 4)
    else:  # pcapng-unaligned-length: both length fields say 2 bytes less
        struct.pack_into("<I", bad, 4, len(bad) - 2)
        struct.pack_into("<I", bad, len(bad) - 6, len(bad) - 2)
        bad = bad[:-2]
    blocks[12] = bytes(bad)
    path.write_bytes(b"".join(blocks))
    return path


@pytest.mark.parametrize("kind", ["pcap-huge-caplen", "pcapng-trailer-mismatch", "pcapng-unaligned-length"])
def test_corrupt_record_mid_file_is_not_dropped_silently(tmp_path: Path, kind: str) -> None:
    """A record with corrupt framing mid-file stops the reading; that is reported (warning or exit 2), not a clean exit 0 over the first records."""
    path = corrupt_mid_file(kind, tmp_path / f"{kind}.{'pcap' if kind.startswith('pcap-') else 'pcapng'}")
    out = analyze_one(path)
    assert not out.failure, out.failure
    assert out.exit == 2 or out.warnings, f"exit 0, no warning, {out.packets} packets analysed: the records after the damaged one were dropped silently"


def test_outcome_does_not_depend_on_tcpdump_being_installed(tmp_path: Path) -> None:
    """The same damaged capture gives the same exit code whether the tcpdump prefilter route or the tshark-only route reads it."""
    path = corrupt_mid_file("pcap-huge-caplen", tmp_path / "huge-caplen.pcap")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    from egress.capture.tshark import tshark_path

    os.symlink(tshark_path(), bin_dir / "tshark")  # a PATH with tshark and no tcpdump
    with_tcpdump = run_egress("analyze", path, "--format", "json")
    without = run_egress("analyze", path, "--format", "json", env={"PATH": str(bin_dir)})
    assert "Traceback" not in with_tcpdump.stderr + without.stderr
    assert with_tcpdump.returncode == without.returncode, (
        f"exit {with_tcpdump.returncode} with tcpdump, {without.returncode} without: {without.stderr.splitlines()[-1]}"
    )


@pytest.mark.parametrize("linktype", [0xFFFF, 2], ids=["linktype-65535", "linktype-2"])
def test_capture_of_undecodable_link_type_is_not_silent(tmp_path: Path, linktype: int) -> None:
    """A pcapng whose interface has a link type neither libpcap nor tshark decodes (tshark: "UNKNOWN WTAP_ENCAP") gives a warning or exit 2, as link type 285 does, not a silent exit 0."""
    seed = _records("street-cctv-vlan20.pcap")
    path = tmp_path / f"linktype-{linktype}.pcapng"
    path.write_bytes(b"".join(make_corpus.pcapng_blocks(seed, linktype=linktype)))
    out = analyze_one(path)
    assert not out.failure, out.failure
    assert out.exit == 2 or out.warnings, f"exit 0, no warning: {len(seed.records)} frames skipped, {out.packets} packets analysed"
