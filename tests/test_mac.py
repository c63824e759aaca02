"""egress.mac: the one MAC parser, the ECS spelling, the record form and the U/L bit."""

from __future__ import annotations

import pytest

from egress import mac

SPELLINGS = [
    "44:19:b6:12:34:56",  # tshark, Linux
    "44:19:B6:12:34:56",
    "44-19-B6-12-34-56",  # Windows, ECS
    "44-19-b6-12-34-56",
    "4419.b612.3456",  # Cisco
    "4419.B612.3456",
    "4419b6123456",  # bare, as inventories write it
    "4419B6123456",
    " 44:19:b6:12:34:56\n",  # pasted with whitespace around
]

GARBAGE = [
    "",
    "xyz",
    "44:19:b6:12:34",  # five octets
    "44:19:b6:12:34:56:78",  # seven
    "44:19-b6:12:34:56",  # mixed separators
    "44.19.b6.12.34.56",  # dots between octets are not Cisco's groups of four
    "4419b612345g",  # not hex
    "4419b61234567",  # thirteen digits
    "441:9b6:123:456",  # three-digit groups
    "44:19:b6:12:34:5 6",
    "zz:not:a:mac",
]


@pytest.mark.parametrize("text", SPELLINGS)
def test_parse_reads_every_common_spelling_to_one_integer(text: str) -> None:
    """Colon, hyphen, Cisco dotted and bare spellings, in any case, give the same 48-bit integer."""
    assert mac.parse(text) == 0x4419B6123456


def test_parse_reads_octets_without_their_leading_zero() -> None:
    """Octets printed as one digit ("0:40:8c:1:2:3", as some BSD tools do) keep their value."""
    assert mac.parse("0:40:8c:1:2:3") == 0x00408C010203
    assert mac.parse("0-40-8C-1-2-3") == 0x00408C010203


@pytest.mark.parametrize("text", GARBAGE)
def test_parse_refuses_what_is_not_a_whole_mac_with_a_clear_message(text: str) -> None:
    """Anything else raises ValueError naming the text and the spellings that are accepted."""
    with pytest.raises(ValueError) as err:
        mac.parse(text)
    assert repr(text) in str(err.value)
    assert "44:19:b6:12:34:56" in str(err.value) and "4419.b612.3456" in str(err.value)


def test_ecs_writes_upper_case_hyphenated_octets_with_leading_zeros() -> None:
    """The ECS spelling (SPEC: Records) is six upper-case two-digit octets joined by hyphens."""
    assert mac.ecs(0x4419B6123456) == "44-19-B6-12-34-56"
    assert mac.ecs(0x00408C010203) == "00-40-8C-01-02-03"
    assert mac.ecs(0) == "00-00-00-00-00-00"


@pytest.mark.parametrize("value", [-1, 1 << 48])
def test_ecs_refuses_integers_outside_48_bits(value: int) -> None:
    """An integer that is no 48-bit address is refused rather than written wrongly."""
    with pytest.raises(ValueError):
        mac.ecs(value)


@pytest.mark.parametrize("text", SPELLINGS)
def test_normalise_gives_the_ecs_spelling_for_every_accepted_one(text: str) -> None:
    """Every accepted spelling normalises to the one string records carry."""
    assert mac.normalise(text) == "44-19-B6-12-34-56"


@pytest.mark.parametrize("text", GARBAGE)
def test_normalise_refuses_garbage(text: str) -> None:
    """normalise refuses exactly what parse refuses (the policy's located error comes from it)."""
    with pytest.raises(ValueError):
        mac.normalise(text)


def test_record_form_spells_captured_macs_as_ecs() -> None:
    """A MAC as tshark prints it becomes the ECS spelling, the same string as a normalised policy entry."""
    assert mac.record_form("44:19:b6:12:34:56") == "44-19-B6-12-34-56" == mac.normalise("4419.b612.3456")
    assert mac.record_form("00:40:8c:01:02:03") == "00-40-8C-01-02-03"


@pytest.mark.parametrize("text", [None, ""])
def test_record_form_of_no_mac_is_none(text: str | None) -> None:
    """A frame without a MAC (a link type without Ethernet) leaves the record's MAC empty."""
    assert mac.record_form(text) is None


def test_record_form_keeps_garbage_so_that_it_is_counted_downstream() -> None:
    """A corrupt frame's MAC does not raise: it is kept (upper case, ':' as '-') and stays unparsable."""
    kept = mac.record_form("zz:not:a:mac")
    assert kept == "ZZ-NOT-A-MAC"
    with pytest.raises(ValueError):
        mac.parse(kept)


@pytest.mark.parametrize(
    ("text", "local"),
    [
        ("44:19:b6:12:34:56", False),
        ("46:19:b6:12:34:56", True),  # 44 | 0x02
        ("02:00:00:00:00:01", True),
        ("da:a1:19:00:00:01", True),  # a typical randomised Wi-Fi MAC
        ("01:00:5e:00:00:01", False),  # multicast, but universally administered
        ("fd:ff:ff:ff:ff:ff", False),  # every bit but U/L
    ],
)
def test_locally_administered_is_the_ul_bit_of_the_first_octet(text: str, local: bool) -> None:
    """Bit 0x02 of the first octet, and no other, decides local administration."""
    assert mac.is_locally_administered(mac.parse(text)) is local
