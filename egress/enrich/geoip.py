"""Country and network (ASN) of the remote endpoint, from MaxMind mmdb files via geoip2.

The country database may be a Country or a City edition: geoip2's `Reader.country()`
refuses a City file, so the method follows the file's own `database_type`. Answers
are cached per address. `start()` opens the files, `stop()` closes them; `reopen()`
(SIGHUP) re-reads them so a `geoipupdate` takes effect without a restart (geoip2 never
notices a replaced file by itself). One enricher serves every capture thread: a reopen
swaps in the new readers at once and leaves the old ones to be freed when no lookup holds
them any more, so no lookup ever runs on a closed reader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb

from egress.errors import DependencyMissing, UsageError
from egress.localnet import LocalNetworks
from egress.model import FlowRecord

__all__ = ["GeoIpEnricher", "open_reader"]

_CACHE_MAX = 100_000


def open_reader(path: Path, kind: str) -> tuple[geoip2.database.Reader, Callable[[str], Any]]:
    """Open an mmdb and pick the lookup its edition supports; errors name the file."""
    try:
        reader = geoip2.database.Reader(str(path))
    except FileNotFoundError:
        raise DependencyMissing(f"{path}: GeoIP {kind} database not found (MaxMind GeoLite2 via geoipupdate)") from None
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as exc:
        raise UsageError(f"{path}: not a MaxMind mmdb database: {exc}") from None
    dbtype = reader.metadata().database_type
    if kind == "asn":
        if "ASN" not in dbtype:
            reader.close()
            raise UsageError(f"{path}: is a {dbtype} database, expected an ASN database (GeoLite2-ASN)")
        return reader, reader.asn
    if "City" in dbtype or "Enterprise" in dbtype:
        return reader, reader.city
    if "Country" in dbtype:
        return reader, reader.country
    reader.close()
    raise UsageError(f"{path}: is a {dbtype} database, expected a Country or City database")


class GeoIpEnricher:
    """Fills destination country/ASN (and source country of inbound flows). A lookup that
    refuses its address is reported to `on_error(reason)` (counted and logged by telemetry)."""

    name = "geoip"

    def __init__(self, country_db: Path | None, asn_db: Path | None, local: LocalNetworks, on_error: Callable[[str], None] | None = None) -> None:
        self._paths = (country_db, asn_db)
        self._local = local
        self._country: Callable[[str], Any] | None = None
        self._asn: Callable[[str], Any] | None = None
        self._readers: list[geoip2.database.Reader] = []
        self._cache: dict[str, tuple[str | None, int | None, str | None]] = {}
        self.lookup_errors = 0
        self._on_error = on_error

    def start(self) -> None:
        self.reopen()

    def reopen(self) -> None:
        """Open (again) both files; on error the old readers stay in use."""
        country_db, asn_db = self._paths
        opened = []
        country = asn = None
        try:
            if country_db is not None:
                reader, country = open_reader(country_db, "country")
                opened.append(reader)
            if asn_db is not None:
                reader, asn = open_reader(asn_db, "asn")
                opened.append(reader)
        except BaseException:
            for reader in opened:
                reader.close()
            raise
        self._readers, self._country, self._asn = opened, country, asn
        self._cache = {}

    def stop(self) -> None:
        for reader in self._readers:
            reader.close()
        self._readers = []

    def lookup(self, ip: str) -> tuple[str | None, int | None, str | None]:
        """(country ISO code, AS number, AS organisation) of a non-local address."""
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        country = asn_org = None
        asn = None
        if self._country is not None:
            try:
                country = self._country(ip).country.iso_code
            except geoip2.errors.AddressNotFoundError:
                pass
            except ValueError as exc:
                self._lookup_error(exc)
        if self._asn is not None:
            try:
                answer = self._asn(ip)
                asn, asn_org = answer.autonomous_system_number, answer.autonomous_system_organization
            except geoip2.errors.AddressNotFoundError:
                pass
            except ValueError as exc:
                self._lookup_error(exc)
        result = (country, asn, asn_org)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[ip] = result
        return result

    def _lookup_error(self, exc: ValueError) -> None:
        self.lookup_errors += 1
        if self._on_error is not None:
            self._on_error(str(exc))

    def enrich(self, rec: FlowRecord) -> None:
        if rec.destination.ip not in self._local:
            rec.destination_country, rec.destination_asn, rec.destination_as_org = self.lookup(rec.destination.ip)
        if rec.source.ip not in self._local:
            rec.source_country = self.lookup(rec.source.ip)[0]
