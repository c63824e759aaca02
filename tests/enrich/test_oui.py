"""OuiRegistry: parsing Wireshark's manuf file and longest-prefix MAC lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from egress.enrich.oui import DEFAULT_MANUF_PATH, ManufNotFoundError, OuiRegistry

HIKVISION = "Hangzhou Hikvision Digital Technology Co.,Ltd."
DAHUA_SCALE = "Shanghai Dahua Scale Factory"

SYNTHETIC = """\
# a comment line
   # an indented comment

00:40:8C\tAxisComm\tAxis Communications AB
44:19:B6\tHangzhou\tHangzhou Hikvision Digital Technology Co.,Ltd.
00:00:6C\tPrivate
00:00:18\tWebsterC\tWebster Computer Corporation\t# Appletalk/Ethernet Gateway
40:2C:76\tIEEERegi\tIEEE Registration Authority
40:2C:76:10:00:00/28\tShanghai\tShanghai Dahua Scale Factory
70:B3:D5:1D:20:00/36\tXacti\tXacti Corporation
01-80-C2-00-00-00/44\tSpanning\tSpanning tree group
00:1A:2B Spaced Spaced Out Ltd
44:19:B6\tDup\tA duplicate, ignored
not-a-prefix\tJunk\tJunk line
00:11:22/99\tBadMask\tBad mask
"""


@pytest.fixture(scope="module")
def registry() -> OuiRegistry:
    """The real registry, or a skip where Wireshark's data is not installed."""
    if not DEFAULT_MANUF_PATH.exists():
        pytest.skip(f"{DEFAULT_MANUF_PATH} not installed (Debian: libwireshark-data)")
    return OuiRegistry.load()


@pytest.fixture()
def synthetic(tmp_path: Path) -> OuiRegistry:
    """A registry loaded from a small hand-written manuf file."""
    path = tmp_path / "manuf"
    path.write_text(SYNTHETIC, encoding="utf-8")
    return OuiRegistry.load(path)


# ---- the real file -------------------------------------------------------------------------


def test_real_file_has_all_three_block_sizes(registry: OuiRegistry) -> None:
    """The real file loads MA-L, MA-M and MA-S blocks and skips no line."""
    assert {24, 28, 36} <= set(registry.tables)
    assert len(registry.tables[24]) > 30_000
    assert registry.skipped_lines == 0


def test_default_path_is_used(registry: OuiRegistry) -> None:
    """load() without a path reads /usr/share/wireshark/manuf."""
    assert registry.source == Path("/usr/share/wireshark/manuf")


def test_dahua_scale_block_wins_over_its_24(registry: OuiRegistry) -> None:
    """40:2C:76:1x:xx:xx is the /28 Shanghai Dahua Scale Factory, not the /24 holder."""
    assert registry.lookup("40:2C:76:10:12:34") == DAHUA_SCALE
    assert registry.lookup("40:2c:76:1f:ff:ff") == DAHUA_SCALE


def test_neighbouring_28_belongs_to_someone_else(registry: OuiRegistry) -> None:
    """40:2C:76:0x:xx:xx falls in the neighbouring /28 (Lista AG), not the Dahua Scale one."""
    assert registry.lookup("40:2C:76:00:12:34") == "Lista AG"


def test_unassigned_28_falls_back_to_the_24(registry: OuiRegistry) -> None:
    """40:2C:76:Fx:xx:xx has no /28, so the /24 owner (the IEEE itself) answers."""
    assert registry.lookup("40:2C:76:F0:00:01") == "IEEE Registration Authority"


def test_36_block_wins_over_its_24(registry: OuiRegistry) -> None:
    """An MA-S /36 (8C:1F:64:B2:B) beats the /24 and its /36 neighbours."""
    assert registry.lookup("8C:1F:64:B2:B1:23") == "Rhombus Europe"
    assert registry.lookup("8C:1F:64:B2:C1:23") != "Rhombus Europe"


@pytest.mark.parametrize(
    "mac",
    ["44:19:b6:12:34:56", "44-19-B6-12-34-56", "4419b6123456", "4419B6123456", "4419.b612.3456"],
)
def test_mac_format_variants_agree(registry: OuiRegistry, mac: str) -> None:
    """Colon, hyphen, bare and dotted spellings of one MAC give the same organisation."""
    assert registry.lookup(mac) == HIKVISION


def test_locally_administered_mac_has_no_organisation(registry: OuiRegistry) -> None:
    """A MAC with the U/L bit set (46:19:B6 = 44:19:B6 | 0x02) resolves to None."""
    assert registry.lookup("46:19:b6:12:34:56") is None
    assert registry.lookup("46-19-B6-12-34-56") is None


def test_unknown_oui_gives_none(registry: OuiRegistry) -> None:
    """A universally administered prefix nobody registered resolves to None."""

    # Pick an unregistered prefix from the tables themselves, so that a newer registry
    # cannot break this test.
    def registered(value: int) -> bool:
        return any((value >> (48 - m)) in t for m, t in registry.tables.items())

    unknown = next(
        v
        for v in (p << 24 | 0x123456 for p in range(0xFC_FF_FF, 0, -1))
        if not v & (0x02 << 40) and not registered(v)
    )
    mac = f"{unknown:012X}"
    assert registry.lookup(mac) is None


def test_lookup_is_memoised_and_stable(registry: OuiRegistry) -> None:
    """Repeated lookups of one MAC return the same answer (from the memo)."""
    first = registry.lookup("00:40:8c:01:02:03")
    assert first == "Axis Communications AB"
    assert registry.lookup("00:40:8c:01:02:03") == first


# ---- parsing rules (synthetic file) --------------------------------------------------------


def test_line_without_long_name_uses_short_name(synthetic: OuiRegistry) -> None:
    """A line with only a short name resolves to that short name."""
    assert synthetic.lookup("00:00:6c:00:00:01") == "Private"


def test_trailing_comment_is_not_the_name(synthetic: OuiRegistry) -> None:
    """A '# note' after the long name is a comment, as in Wireshark's parser."""
    assert synthetic.lookup("00:00:18:00:00:01") == "Webster Computer Corporation"


def test_other_masks_and_separators_are_supported(synthetic: OuiRegistry) -> None:
    """A hyphenated /44 entry is honoured and covers exactly its 16 addresses."""
    assert synthetic.lookup("01:80:C2:00:00:0E") == "Spanning tree group"
    assert synthetic.lookup("01:80:C2:00:00:10") is None


def test_space_separated_line_is_read(synthetic: OuiRegistry) -> None:
    """A hand-edited line separated by spaces still loads, long name intact."""
    assert synthetic.lookup("00:1a:2b:00:00:01") == "Spaced Out Ltd"


def test_first_of_duplicate_prefixes_wins(synthetic: OuiRegistry) -> None:
    """A prefix listed twice keeps its first name."""
    assert synthetic.lookup("44:19:b6:00:00:01") == HIKVISION


def test_malformed_lines_are_counted_not_fatal(synthetic: OuiRegistry) -> None:
    """Bad prefixes and masks are skipped and counted."""
    assert synthetic.skipped_lines == 2
    assert synthetic.lookup("00:11:22:00:00:00") is None


def test_synthetic_longest_prefix(synthetic: OuiRegistry) -> None:
    """/36 beats /24, /28 beats /24, and the /24 answers outside its blocks."""
    assert synthetic.lookup("70:B3:D5:1D:2F:FF") == "Xacti Corporation"
    assert synthetic.lookup("40:2C:76:10:00:00") == DAHUA_SCALE
    assert synthetic.lookup("40:2C:76:20:00:00") == "IEEE Registration Authority"


def test_missing_file_raises_a_file_not_found_naming_it(tmp_path: Path) -> None:
    """A missing registry raises ManufNotFoundError (a FileNotFoundError) naming the path."""
    missing = tmp_path / "nope" / "manuf"
    with pytest.raises(FileNotFoundError) as info:
        OuiRegistry.load(missing)
    assert isinstance(info.value, ManufNotFoundError)
    assert str(missing) in str(info.value)
    assert info.value.filename == str(missing)


# ---- MAC parsing (egress.mac, tested in tests/test_mac.py) ----------------------------------


def test_lookup_accepts_single_digit_octets(synthetic: OuiRegistry) -> None:
    """A MAC printed without leading zeros ("0:40:8c:1:2:3") finds its organisation."""
    assert synthetic.lookup("0:40:8c:1:2:3") == "Axis Communications AB"


@pytest.mark.parametrize(
    "bad",
    ["", "44:19:b6:12:34", "44:19:b6:12:34:56:78", "44:19-b6:12:34:56", "4419b612345g", "xyz"],
)
def test_lookup_rejects_garbage(bad: str) -> None:
    """Text that is not a whole MAC raises ValueError (the device enricher counts it)."""
    with pytest.raises(ValueError):
        OuiRegistry(tables={}).lookup(bad)


def test_the_parsed_registry_is_kept_for_the_next_start_and_never_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second load reads the cache (written beside nothing else); a changed file or a
    damaged cache is parsed again, so the cache never answers for another file."""
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    manuf = tmp_path / "manuf"
    manuf.write_text("44:19:B6\tHikvisio\tHangzhou Hikvision Digital Technology Co.,Ltd.\n")
    first = OuiRegistry.load(manuf)
    cached = list((tmp_path / "cache" / "egress").glob("manuf-*.marshal"))
    assert len(cached) == 1 and first.lookup("44:19:b6:00:00:01") == "Hangzhou Hikvision Digital Technology Co.,Ltd."
    assert OuiRegistry.load(manuf).tables == first.tables
    manuf.write_text(manuf.read_text() + "3C:EF:8C\tZhejiang\tZhejiang Dahua Technology Co., Ltd.\n")
    assert OuiRegistry.load(manuf).lookup("3c:ef:8c:00:00:21") == "Zhejiang Dahua Technology Co., Ltd."
    cached[0].write_bytes(b"not marshal")
    assert OuiRegistry.load(manuf).lookup("3c:ef:8c:00:00:21") == "Zhejiang Dahua Technology Co., Ltd."


def test_a_cache_that_cannot_be_written_only_means_parsing_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("CACHE_DIRECTORY", str(blocker))  # a file where the directory should be
    manuf = tmp_path / "manuf"
    manuf.write_text("44:19:B6\tHikvisio\tHangzhou Hikvision Digital Technology Co.,Ltd.\n")
    assert OuiRegistry.load(manuf).lookup("44:19:b6:00:00:01") == "Hangzhou Hikvision Digital Technology Co.,Ltd."
