"""GeoIP: edition checks when opening, lookups on real test mmdb files, reopen with rollback."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import geoip2.models
import make_geoip
import pytest

from egress.enrich.geoip import GeoIpEnricher, open_reader
from egress.errors import DependencyMissing, UsageError
from egress.localnet import DEFAULT_LOCAL_NETWORKS, LocalNetworks
from egress.model import TCP, Endpoint, FlowRecord

LOCAL = LocalNetworks(DEFAULT_LOCAL_NETWORKS)
CAM = "10.20.1.11"
CN_A, CN_B, CN_C = "192.0.2.10", "192.0.2.20", "192.0.2.30"  # one network, so one expected answer
Started = Callable[..., GeoIpEnricher]


def _started(country: Path | None, asn: Path | None, local: LocalNetworks = LOCAL) -> GeoIpEnricher:
    """The enricher ready to look up: constructed, then started where it has a `start()`."""
    enricher = GeoIpEnricher(country, asn, local)
    start = getattr(enricher, "start", None)
    if start is not None:
        start()
    return enricher


def _stopped(enricher: GeoIpEnricher) -> None:
    (getattr(enricher, "stop", None) or enricher.close)()


def expected(ip: str) -> tuple[str, int, str]:
    """(country, ASN, organisation) of `ip` in the test map that pcaps/make_geoip.py documents."""
    for cidr, iso, asn, org in make_geoip.NETWORKS:
        if ipaddress.ip_address(ip) in ipaddress.ip_network(cidr):
            return iso, asn, org
    raise AssertionError(f"{ip} is not in the test map")


@pytest.fixture
def dbs(geoip: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Private copies of the test databases, free to be replaced by a test."""
    return {kind: Path(shutil.copy(path, tmp_path / path.name)) for kind, path in geoip.items()}


@pytest.fixture
def started() -> Iterator[Started]:
    """`_started`, with every enricher it made stopped at the end of the test."""
    made: list[GeoIpEnricher] = []

    def start(*args: object) -> GeoIpEnricher:
        made.append(_started(*args))  # type: ignore[arg-type]
        return made[-1]

    yield start
    for enricher in made:
        _stopped(enricher)


def replace(target: Path, write: Callable[[Path], object]) -> None:
    """Replace `target` the way geoipupdate does: write a new file beside it, rename it over."""
    fresh = target.with_name(target.name + ".new")
    write(fresh)
    os.replace(fresh, target)


def all_de_country(path: Path) -> None:
    """A Country database of the same networks, every one of them in Germany."""
    make_geoip._write(path, "GeoIP2-Country", "all DE", lambda iso, asn, org: make_geoip.country_record("DE"))


def flow(src: str, dst: str, direction: str = "outbound") -> FlowRecord:
    return FlowRecord(0.0, 1.0, TCP, Endpoint(src, 40000), Endpoint(dst, 443), (), "", direction)


# ---- open_reader ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "edition", "model"), [
    ("country", "country", geoip2.models.Country),
    ("country", "city", geoip2.models.City),
    ("asn", "asn", geoip2.models.ASN),
])  # fmt: skip
def test_open_reader_picks_the_lookup_of_the_file_edition(geoip: dict[str, Path], kind: str, edition: str, model: type) -> None:
    """Country files are read with `country()`, City files with `city()`, ASN files with `asn()`."""
    reader, lookup = open_reader(geoip[edition], kind)
    try:
        answer = lookup(CN_A)
        assert type(answer) is model
        if kind == "asn":
            assert (answer.autonomous_system_number, answer.autonomous_system_organization) == expected(CN_A)[1:]
        else:
            assert answer.country.iso_code == expected(CN_A)[0]
    finally:
        reader.close()


@pytest.mark.parametrize(("kind", "edition", "wanted"), [
    ("asn", "country", "expected an ASN database"),
    ("asn", "city", "expected an ASN database"),
    ("country", "asn", "expected a Country or City database"),
])  # fmt: skip
def test_wrong_edition_is_a_usage_error_naming_the_file(geoip: dict[str, Path], kind: str, edition: str, wanted: str) -> None:
    """A real mmdb of the wrong edition is refused (exit 2), with the file and what it is."""
    with pytest.raises(UsageError) as info:
        open_reader(geoip[edition], kind)
    assert str(info.value).startswith(f"{geoip[edition]}: ")
    assert wanted in str(info.value) and info.value.exit_code == 2


@pytest.mark.parametrize("content", [b"", b"hello, not a database\n", bytes(range(256)) * 20])
def test_a_file_that_is_not_an_mmdb_is_a_usage_error_naming_it(tmp_path: Path, content: bytes) -> None:
    """Empty, text or random bytes: a usage error (exit 2) that names the file."""
    path = tmp_path / "GeoLite2-Country.mmdb"
    path.write_bytes(content)
    with pytest.raises(UsageError, match="not a MaxMind mmdb database") as info:
        open_reader(path, "country")
    assert str(info.value).startswith(f"{path}: ")


def test_a_missing_file_is_a_missing_dependency(tmp_path: Path) -> None:
    """No file at the path: DependencyMissing (exit 3), naming the file; also from the enricher."""
    path = tmp_path / "GeoLite2-ASN.mmdb"
    with pytest.raises(DependencyMissing) as info:
        open_reader(path, "asn")
    assert str(info.value).startswith(f"{path}: ") and info.value.exit_code == 3
    with pytest.raises(DependencyMissing):
        _started(None, path)


# ---- lookups -------------------------------------------------------------------------------


@pytest.mark.parametrize("remote", [CN_A, "198.51.100.200", "203.0.113.5", "2001:db8:2::9"])
def test_outbound_flow_gets_the_remote_country_and_network(dbs: dict[str, Path], started: Started, remote: str) -> None:
    """IPv4 and IPv6 destinations get country, AS number and organisation; the local source none."""
    rec = flow(CAM, remote)
    started(dbs["country"], dbs["asn"]).enrich(rec)
    assert (rec.destination_country, rec.destination_asn, rec.destination_as_org) == expected(remote)
    assert rec.source_country is None


def test_inbound_flow_gets_the_source_country_and_no_lookup_of_the_local_side(dbs: dict[str, Path], started: Started) -> None:
    """An inbound flow's remote source gets its country; the local destination is not looked up."""
    rec = flow("203.0.113.200", CAM, direction="inbound")
    started(dbs["country"], dbs["asn"]).enrich(rec)
    assert rec.source_country == expected("203.0.113.200")[0]
    assert (rec.destination_country, rec.destination_asn, rec.destination_as_org) == (None, None, None)


def test_local_networks_are_the_enricher_own_not_the_database(dbs: dict[str, Path], started: Started) -> None:
    """An address made local by the policy is not looked up, on either side, though the database knows it."""
    enricher = started(dbs["country"], dbs["asn"], LocalNetworks(["192.0.2.0/24"]))
    to_local, from_local = flow(CAM, CN_A), flow(CN_B, "198.51.100.7")
    enricher.enrich(to_local)
    enricher.enrich(from_local)
    assert (to_local.destination_country, to_local.destination_asn) == (None, None)
    assert (from_local.source_country, from_local.destination_country) == (None, expected("198.51.100.7")[0])


def test_a_city_database_serves_where_a_country_database_is_expected(dbs: dict[str, Path], started: Started) -> None:
    """SPEC: `--geoip-country` takes a Country or City mmdb; both give the same country."""
    rec = flow(CAM, CN_A)
    started(dbs["city"], None).enrich(rec)
    assert (rec.destination_country, rec.destination_asn) == (expected(CN_A)[0], None)


def test_only_an_asn_database_fills_only_the_network(dbs: dict[str, Path], started: Started) -> None:
    """Without a country file the country stays empty and the ASN is still filled."""
    assert started(None, dbs["asn"]).lookup(CN_A) == (None, *expected(CN_A)[1:])


def test_unknown_and_malformed_addresses_give_nothing_and_only_malformed_is_counted(dbs: dict[str, Path], started: Started) -> None:
    """A miss is normal (not counted); a malformed address is a counted lookup error, never raised."""
    enricher = started(dbs["country"], dbs["asn"])
    assert enricher.lookup("8.8.8.8") == (None, None, None)
    assert enricher.lookup_errors == 0
    assert enricher.lookup("not-an-address") == (None, None, None)
    assert enricher.lookup_errors == 2  # once per database


def test_answers_are_cached_per_address(dbs: dict[str, Path], started: Started) -> None:
    """An address looked up again is answered from the cache: the databases are not asked twice."""
    enricher = started(dbs["country"], dbs["asn"])
    assert enricher.lookup("not-an-address") == enricher.lookup("not-an-address") == (None, None, None)
    assert enricher.lookup_errors == 2  # from the first lookup alone
    assert enricher.lookup(CN_A) == enricher.lookup(CN_A) == expected(CN_A)


# ---- reopen (SIGHUP after geoipupdate) -----------------------------------------------------


def test_reopen_picks_up_a_file_replaced_by_rename(dbs: dict[str, Path], started: Started) -> None:
    """The old file stays in use until `reopen()`; after it the new data answers, cached or not."""
    enricher = started(dbs["country"], dbs["asn"])
    assert enricher.lookup(CN_A)[0] == expected(CN_A)[0]
    replace(dbs["country"], all_de_country)
    assert enricher.lookup(CN_B)[0] == expected(CN_B)[0]  # geoip2 does not notice by itself
    enricher.reopen()
    assert enricher.lookup(CN_A) == ("DE", *expected(CN_A)[1:])
    assert enricher.lookup(CN_C)[0] == "DE"


def _garbage(path: Path) -> None:
    path.write_bytes(b"interrupted download\n")


@pytest.mark.parametrize("broken", ["garbage", "asn-edition"])
def test_a_broken_replacement_raises_and_the_old_files_keep_answering(dbs: dict[str, Path], started: Started, broken: str) -> None:
    """Garbage or a wrong edition renamed over the file: reopen raises naming it; old readers still work."""
    enricher = started(dbs["country"], dbs["asn"])
    assert enricher.lookup(CN_A) == expected(CN_A)
    replace(dbs["country"], _garbage if broken == "garbage" else lambda path: shutil.copy(dbs["asn"], path))
    with pytest.raises(UsageError, match=re.escape(str(dbs["country"]))):
        enricher.reopen()
    assert enricher.lookup(CN_B) == expected(CN_B)  # not cached: read from the old, still open files


def test_a_vanished_file_on_reopen_is_a_missing_dependency_and_nothing_changes(dbs: dict[str, Path], started: Started) -> None:
    """A file deleted before reopen: DependencyMissing; lookups go on with the files opened before."""
    enricher = started(dbs["country"], dbs["asn"])
    dbs["asn"].unlink()
    with pytest.raises(DependencyMissing):
        enricher.reopen()
    assert enricher.lookup(CN_B) == expected(CN_B)


def test_rollback_is_all_or_nothing(dbs: dict[str, Path], started: Started) -> None:
    """A good new country file is not adopted when the ASN file beside it is broken."""
    enricher = started(dbs["country"], dbs["asn"])
    replace(dbs["country"], all_de_country)
    replace(dbs["asn"], _garbage)
    with pytest.raises(UsageError, match=re.escape(str(dbs["asn"]))):
        enricher.reopen()
    assert enricher.lookup(CN_B) == expected(CN_B)
