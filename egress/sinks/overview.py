"""What the HTML report shows, added up as the verdicts stream by.

`analyze` runs over captures of days and thousands of devices, so nothing here keeps flow
records: each verdict is added to a few bounded tallies and dropped. Time series are
counted in buckets whose width grows with the span seen (`Timeline`: at most
`MAX_BUCKETS` a series, widths that divide each other, so growing is exact); who talks to
whom is one tally per (device, destination, country) up to `MAX_LINKS`, past which a
device's new destinations are added to its "other destinations". The result is an
`OverviewData` of plain rows: what `egress.sinks.html` draws. Its device rows are built
from the flows seen; a device inventory can hand in its own rows of the same shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from egress.model import Alert, Verdict

__all__ = ["MAX_BUCKETS", "MAX_LINKS", "DeviceRow", "Link", "CountryRow", "Series", "OverviewData", "Timeline", "Overview", "OTHER_DESTINATIONS"]

MAX_BUCKETS = 120
MAX_LINKS = 5000
_MAX_ADDRESSES = 8  # IPs and VLANs kept per device row
_WIDTHS = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 86400, 604800)  # seconds; each divides the next
OTHER_DESTINATIONS = "other destinations"
#: how much a verdict needs attention, to colour a link by the worst of its flows
VERDICT_RANK = {"allowed": 0, "baseline": 1, "learning": 2, "unexpected": 3, "new-destination": 4, "denied": 5}


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device: `device` is its MAC (its IP where no MAC was seen), `vendor` its brand,
    `organization` the IEEE registry's name, `bytes_out`/`packets_out` what it sent."""

    device: str
    vendor: str = ""
    organization: str = ""
    ips: tuple[str, ...] = ()
    vlans: tuple[str, ...] = ()  # "20", or "100.20" for QinQ (outer first)
    group: str = ""
    name: str = ""  # the inventory name (policy `devices:`)
    covered: bool = False  # its brand is one of the policy's covered vendors
    first_seen: float = 0.0
    last_seen: float = 0.0
    packets_out: int = 0
    bytes_out: int = 0


@dataclass(frozen=True, slots=True)
class Link:
    """Egress of one device to one destination (its name, else its IP) in one country."""

    device: str
    destination: str
    country: str
    bytes_out: int
    flows: int
    verdict: str  # the worst of its flows' verdicts (VERDICT_RANK)


@dataclass(frozen=True, slots=True)
class CountryRow:
    country: str  # ISO code, or "" where GeoIP had none
    destinations: int
    flows: int
    bytes_out: int
    alerts: int


@dataclass(frozen=True, slots=True)
class Series:
    """Counts per time bucket: `starts` are the buckets' starts (epoch seconds, `width` apart),
    `lines` one (key, counts) per key, the largest first."""

    width: int
    starts: tuple[float, ...]
    lines: tuple[tuple[str, tuple[int, ...]], ...]
    other: str = ""  # the key of the last line where it adds up the keys past the top ones


@dataclass(frozen=True, slots=True)
class OverviewData:
    first_seen: float | None
    last_seen: float | None
    devices: tuple[DeviceRow, ...]
    links: tuple[Link, ...]
    countries: tuple[CountryRow, ...]
    egress_bytes: Mapping[str, int]  # per device
    bytes_out: Series  # egress bytes per device
    alerts: Series  # alert records per rule


class Timeline:
    """Amounts per key per time bucket, at most `max_buckets` buckets from the first to the
    last; when a time falls outside, the width steps up to the next of `_WIDTHS` (then
    doubles) and the buckets are merged, exactly, as each width divides the next."""

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self._max = max_buckets
        self.width = _WIDTHS[0]
        self._series: dict[str, dict[int, int]] = {}
        self._lo: int | None = None
        self._hi = 0

    def add(self, key: str, ts: float, amount: int = 1) -> None:
        index = int(ts // self.width)
        if self._lo is None:
            self._lo = self._hi = index
        elif not self._lo <= index <= self._hi:
            self._lo, self._hi = min(self._lo, index), max(self._hi, index)
            while self._hi - self._lo >= self._max:
                self._coarsen()
            index = int(ts // self.width)
        buckets = self._series.get(key)
        if buckets is None:
            buckets = self._series[key] = {}
        buckets[index] = buckets.get(index, 0) + amount

    def _coarsen(self) -> None:
        wider = next((w for w in _WIDTHS if w > self.width), self.width * 2)
        factor = wider // self.width
        for key, buckets in self._series.items():
            merged: dict[int, int] = {}
            for index, amount in buckets.items():
                merged[index // factor] = merged.get(index // factor, 0) + amount
            self._series[key] = merged
        assert self._lo is not None
        self._lo, self._hi, self.width = self._lo // factor, self._hi // factor, wider

    def totals(self) -> dict[str, int]:
        return {key: sum(buckets.values()) for key, buckets in self._series.items()}

    def series(self, top: int, other: str) -> Series:
        """The `top` keys with the largest totals, the rest added up as `other`."""
        if self._lo is None:
            return Series(self.width, (), ())
        span = range(self._lo, self._hi + 1)
        ranked = sorted(self._series.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        lines = [(key, tuple(buckets.get(i, 0) for i in span)) for key, buckets in ranked[:top]]
        if rest := ranked[top:]:
            lines.append((other, tuple(sum(b.get(i, 0) for _, b in rest) for i in span)))
        return Series(self.width, tuple(float(i * self.width) for i in span), tuple(lines), other if rest else "")


@dataclass(slots=True)
class _Device:
    vendor: str
    organization: str
    first_seen: float
    last_seen: float
    ips: set[str] = field(default_factory=set)
    vlans: set[str] = field(default_factory=set)
    group: str = ""
    covered: bool = False
    packets_out: int = 0
    bytes_out: int = 0


@dataclass(slots=True)
class _Country:
    destinations: set[str] = field(default_factory=set)
    flows: int = 0
    bytes_out: int = 0
    alerts: int = 0


class Overview:
    """Adds up verdicts and alerts into the report's tallies; `data()` reads them out.
    `names`: the inventory names by MAC (the policy's `devices:`)."""

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self._names = dict(names or {})
        self._devices: dict[str, _Device] = {}
        self._links: dict[tuple[str, str, str], list[int]] = {}  # -> [bytes, flows, worst verdict rank]
        self._countries: dict[str, _Country] = {}
        self._bytes = Timeline()
        self._alerts = Timeline()
        self._first: float | None = None
        self._last = 0.0

    def add(self, verdict: Verdict) -> None:
        rec = verdict.flow
        self._first = rec.start if self._first is None else min(self._first, rec.start)
        self._last = max(self._last, rec.end)
        device = rec.device
        if device is None:
            return
        seen = self._devices.get(device)
        if seen is None:
            seen = self._devices[device] = _Device(rec.device_manufacturer or "", rec.device_organization or "", rec.start, rec.end)
        seen.first_seen, seen.last_seen = min(seen.first_seen, rec.start), max(seen.last_seen, rec.end)
        seen.group, seen.covered = verdict.group, seen.covered or verdict.covered
        sent = rec.source if rec.device_ip in (None, rec.source.ip) else rec.destination
        seen.packets_out += sent.packets
        seen.bytes_out += sent.bytes
        if rec.device_ip and len(seen.ips) < _MAX_ADDRESSES:
            seen.ips.add(rec.device_ip)
        if rec.vlans and len(seen.vlans) < _MAX_ADDRESSES:
            seen.vlans.add(".".join(map(str, rec.vlans)))
        if not rec.is_egress:
            return
        country = rec.destination_country or ""
        tally = self._countries.get(country)
        if tally is None:
            tally = self._countries[country] = _Country()
        tally.destinations.add(rec.destination.ip)
        tally.flows += 1
        tally.bytes_out += rec.source.bytes
        self._bytes.add(device, rec.start, rec.source.bytes)
        key = (device, rec.destination_domain or rec.destination.ip, country)
        link = self._links.get(key)
        if link is None:
            if len(self._links) >= MAX_LINKS:
                key = (device, OTHER_DESTINATIONS, "")
            link = self._links.setdefault(key, [0, 0, 0])
        link[0] += rec.source.bytes
        link[1] += 1
        link[2] = max(link[2], VERDICT_RANK.get(verdict.verdict, 0))

    def alert(self, alert: Alert) -> None:
        self._alerts.add(f"{alert.category}:{alert.rule_name}", alert.flow.start)
        if alert.flow.is_egress:
            self._countries.setdefault(alert.flow.destination_country or "", _Country()).alerts += 1

    def devices(self) -> list[DeviceRow]:
        """The devices seen, covered vendors first, then by MAC."""
        rows = [
            DeviceRow(device, d.vendor, d.organization, tuple(sorted(d.ips)), tuple(sorted(d.vlans)), d.group,
                      self._names.get(device, ""), d.covered, d.first_seen, d.last_seen, d.packets_out, d.bytes_out)  # fmt: skip
            for device, d in self._devices.items()
        ]
        return sorted(rows, key=lambda r: (not r.covered, r.device))

    def data(self, devices: Sequence[DeviceRow] | None = None, *, top_devices: int = 12, top_rules: int = 12) -> OverviewData:
        """The tallies as rows; `devices` replaces the device rows built from the flows."""
        ranks = {rank: name for name, rank in VERDICT_RANK.items()}
        links = sorted(
            (Link(dev, dst, cc, b, n, ranks[r]) for (dev, dst, cc), (b, n, r) in self._links.items()),
            key=lambda link: (-link.bytes_out, link.device, link.destination),
        )  # fmt: skip
        countries = sorted(
            (CountryRow(cc, len(c.destinations), c.flows, c.bytes_out, c.alerts) for cc, c in self._countries.items()),
            key=lambda row: (-row.bytes_out, -row.alerts, row.country),
        )  # fmt: skip
        return OverviewData(
            self._first, self._last if self._first is not None else None, tuple(self.devices() if devices is None else devices),
            tuple(links), tuple(countries), self._bytes.totals(),
            self._bytes.series(top_devices, "other devices"), self._alerts.series(top_rules, "other rules"),
        )  # fmt: skip
