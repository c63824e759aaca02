#!/usr/bin/env python3
"""Build small MaxMind test databases for the sample captures.

    python pcaps/make_geoip.py OUTDIR

writes ``OUTDIR/Test-Country.mmdb`` (database_type ``GeoIP2-Country``),
``OUTDIR/Test-City.mmdb`` (``GeoIP2-City``: the same countries plus a city, so a
City database can be tested where a Country database is expected) and
``OUTDIR/Test-ASN.mmdb`` (``GeoLite2-ASN``).

The test "internet" uses documentation ranges only (RFC 5737, RFC 3849):

    192.0.2.0/24       CN  AS4134   CHINANET-BACKBONE
    198.51.100.0/25    GB  AS15169  GOOGLE
    198.51.100.128/25  US  AS16509  AMAZON-02
    203.0.113.0/25     RU  AS12389  ROSTELECOM-AS
    203.0.113.128/25   DE  AS3320   Deutsche Telekom AG
    2001:db8:1::/48    CN  AS4134   CHINANET-BACKBONE
    2001:db8:2::/48    GB  AS15169  GOOGLE

Every database is an IPv6 tree. IPv4 networks are stored in the IPv4-compatible
subtree (::a.b.c.d/96+n, where the maxminddb readers look IPv4 addresses up) and
again under the IPv4-mapped prefix (::ffff:a.b.c.d), so a lookup of either
family, or of an IPv4-mapped IPv6 address, finds the record. Everything else
(private, loopback, ULA...) is absent: the readers raise AddressNotFoundError.

The output is deterministic (fixed build_epoch), so it can be rebuilt in a test
fixture or committed. Importable: ``build(outdir) -> {"country": Path, ...}``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPNetwork, IPSet

#: fixed build time (2026-01-15T10:00:00Z) so rebuilding gives identical files
BUILD_EPOCH = 1768471200

CONTINENTS: dict[str, tuple[str, int, str]] = {
    # code: (code, geoname_id, English name)
    "AS": ("AS", 6255147, "Asia"),
    "EU": ("EU", 6255148, "Europe"),
    "NA": ("NA", 6255149, "North America"),
}

# iso_code: (continent, country geoname_id, country name, city geoname_id, city name)
COUNTRIES: dict[str, tuple[str, int, str, int, str]] = {
    "CN": ("AS", 1814991, "China", 1816670, "Beijing"),
    "GB": ("EU", 2635167, "United Kingdom", 2643743, "London"),
    "US": ("NA", 6252001, "United States", 5809844, "Seattle"),
    "RU": ("EU", 2017370, "Russia", 524901, "Moscow"),
    "DE": ("EU", 2921044, "Germany", 2925533, "Frankfurt am Main"),
}

# network, country, ASN, AS organisation
NETWORKS: list[tuple[str, str, int, str]] = [
    ("192.0.2.0/24", "CN", 4134, "CHINANET-BACKBONE"),
    ("198.51.100.0/25", "GB", 15169, "GOOGLE"),
    ("198.51.100.128/25", "US", 16509, "AMAZON-02"),
    ("203.0.113.0/25", "RU", 12389, "ROSTELECOM-AS"),
    ("203.0.113.128/25", "DE", 3320, "Deutsche Telekom AG"),
    ("2001:db8:1::/48", "CN", 4134, "CHINANET-BACKBONE"),
    ("2001:db8:2::/48", "GB", 15169, "GOOGLE"),
]

FILES = {
    "country": "Test-Country.mmdb",
    "city": "Test-City.mmdb",
    "asn": "Test-ASN.mmdb",
}


class _Writer(MMDBWriter):
    """MMDBWriter with a fixed build_epoch (the library stamps time.time())."""

    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        meta["build_epoch"] = BUILD_EPOCH
        return meta


def _names(name: str) -> dict[str, str]:
    return {"en": name}


def country_record(iso: str, *, city: bool = False) -> dict[str, Any]:
    cont, geoname_id, name, city_id, city_name = COUNTRIES[iso]
    ccode, cont_id, cont_name = CONTINENTS[cont]
    country = {
        "geoname_id": MmdbU32(geoname_id),
        "iso_code": iso,
        "names": _names(name),
    }
    rec: dict[str, Any] = {
        "continent": {
            "code": ccode,
            "geoname_id": MmdbU32(cont_id),
            "names": _names(cont_name),
        },
        "country": country,
        "registered_country": dict(country),
    }
    if iso in ("DE",):
        rec["country"] = dict(country, is_in_european_union=True)
        rec["registered_country"] = dict(country, is_in_european_union=True)
    if city:
        rec["city"] = {"geoname_id": MmdbU32(city_id), "names": _names(city_name)}
    return rec


def asn_record(asn: int, org: str) -> dict[str, Any]:
    return {
        "autonomous_system_number": MmdbU32(asn),
        "autonomous_system_organization": org,
    }


def _networks(cidr: str) -> list[IPSet]:
    """The IPSets to insert for one network (IPv4 also under ::ffff:0:0/96)."""
    net = IPNetwork(cidr)
    if net.version == 4:
        mapped = IPNetwork(f"::ffff:{net.network}/{96 + net.prefixlen}")
        return [IPSet([net]), IPSet([mapped])]
    return [IPSet([net])]


def _write(path: Path, database_type: str, description: str, record_for) -> Path:
    w = _Writer(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description=description,
    )
    for cidr, iso, asn, org in NETWORKS:
        for ipset in _networks(cidr):
            w.insert_network(ipset, record_for(iso, asn, org))
    path.parent.mkdir(parents=True, exist_ok=True)
    w.to_db_file(str(path))
    return path


def build(outdir: Path) -> dict[str, Path]:
    """Write the three databases into outdir; return {"country"|"city"|"asn": path}."""
    outdir = Path(outdir)
    return {
        "country": _write(
            outdir / FILES["country"],
            "GeoIP2-Country",
            "egress test Country database (documentation ranges only)",
            lambda iso, asn, org: country_record(iso),
        ),
        "city": _write(
            outdir / FILES["city"],
            "GeoIP2-City",
            "egress test City database (documentation ranges only)",
            lambda iso, asn, org: country_record(iso, city=True),
        ),
        "asn": _write(
            outdir / FILES["asn"],
            "GeoLite2-ASN",
            "egress test ASN database (documentation ranges only)",
            lambda iso, asn, org: asn_record(asn, org),
        ),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(f"usage: {Path(argv[0]).name} OUTDIR", file=sys.stderr)
        return 2
    for kind, path in build(Path(argv[1])).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
