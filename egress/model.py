"""The typed values that cross stage boundaries.

Capture yields `Packet`s; the flow table turns them into `FlowRecord`s; enrichers
fill a record's optional fields in place before it leaves the flow meter, and nothing
changes it after that; the policy gives each record a `Verdict` (group, outcome,
`Alert`s). The device inventory sums up what each device sent as `DeviceRecord`s, which
the policy judges too (a covered device that never leaves the LAN). Only `egress.codec`
knows how these look on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "TCP",
    "UDP",
    "ICMP",
    "ICMPV6",
    "TRANSPORT_NAMES",
    "Packet",
    "DnsAnswer",
    "Endpoint",
    "FlowRecord",
    "Alert",
    "Verdict",
    "DeviceRecord",
    "DEVICE",
]

TCP: Final = 6
UDP: Final = 17
ICMP: Final = 1
ICMPV6: Final = 58
TRANSPORT_NAMES: Final[dict[int, str]] = {TCP: "tcp", UDP: "udp", ICMP: "icmp", ICMPV6: "ipv6-icmp"}
DEVICE: Final = "device"  # the verdict of a device record: no flow, only the device itself


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """A DNS response: every name of the chain (asked name, CNAME targets) and the addresses."""

    names: tuple[str, ...]
    addresses: tuple[str, ...]


@dataclass(slots=True)
class Packet:
    """One IP packet as the flow table needs it (no pyshark object ever leaves capture)."""

    ts: float
    length: int
    src_mac: str | None
    dst_mac: str | None
    vlans: tuple[int, ...]  # outermost first; VLAN ID 0 (priority tag) is dropped
    src_ip: str
    dst_ip: str
    proto: int
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    dns: DnsAnswer | None = None
    server_name: str | None = None  # TLS SNI or HTTP Host the sender named
    interface: str = ""
    protocol: str | None = None  # a camera P2P or NAT-traversal protocol its payload starts (capture.payload)


@dataclass(slots=True)
class Endpoint:
    """One side of a flow, with the counters of what it sent."""

    ip: str
    port: int
    mac: str | None = None
    bytes: int = 0
    packets: int = 0


@dataclass(slots=True)
class FlowRecord:
    """One flow export: measured by the flow table, then enriched."""

    start: float
    end: float
    transport: int
    source: Endpoint  # the initiator
    destination: Endpoint
    vlans: tuple[int, ...]
    community_id: str
    direction: str  # ECS network.direction: outbound | inbound | internal | external
    icmp_type: int = -1
    icmp_code: int = -1
    # enrichment (filled by enrichers; all optional)
    device_mac: str | None = None
    device_ip: str | None = None
    device_manufacturer: str | None = None  # the brand when the catalogue knows it
    device_organization: str | None = None  # the IEEE registry's organisation name
    destination_domain: str | None = None
    destination_domains: tuple[str, ...] = ()
    destination_country: str | None = None
    destination_asn: int | None = None
    destination_as_org: str | None = None
    source_country: str | None = None
    site: str = ""
    observer_name: str = ""
    observer_hostname: str = ""
    interface: str = ""
    protocol: str | None = None  # ECS network.protocol: from the flow's first packet that tells one

    @property
    def device(self) -> str | None:
        """The device's identity: its MAC, or its IP where no MAC was seen (a routed link)."""
        return self.device_mac or self.device_ip

    @property
    def is_egress(self) -> bool:
        return self.direction == "outbound"

    @property
    def transport_name(self) -> str:
        return TRANSPORT_NAMES.get(self.transport, str(self.transport))

    @property
    def ip_version(self) -> str:
        return "ipv6" if ":" in self.source.ip else "ipv4"


@dataclass(frozen=True, slots=True)
class Alert:
    """A verdict that needs attention: the flow it is about plus the rule that fired."""

    flow: FlowRecord
    group: str
    event_id: str
    category: str  # deny | unexpected | covered-vendor
    rule_id: str
    rule_name: str
    ruleset: str
    severity: str  # low | medium | high | critical
    message: str
    description: str = ""  # rule.description: the deny entry's, or what a built-in rule means
    device_name: str = ""  # device.name: the policy's inventory name of the device, if any

    @property
    def key(self) -> tuple[str, str, int, int, str]:
        """(device, destination, transport, port, rule.id): alerts with one key say the same
        thing (grouped in the analyst's views, held back as repeats by the services)."""
        flow = self.flow
        return (flow.device or flow.source.ip, flow.destination.ip, flow.transport, flow.destination.port, self.rule_id)


@dataclass(slots=True)  # not frozen: one is made per flow, and a frozen init costs twice as much
class Verdict:
    """What the policy said about one flow; `verdict` is a bounded metric label."""

    flow: FlowRecord
    group: str
    verdict: str  # denied | allowed | unexpected | not-egress
    alerts: tuple[Alert, ...]
    covered: bool = False  # the device's brand is one of the policy's covered vendors
    rule: str = ""  # the rule.id that decided (GROUP/deny|allow/NAME, GROUP/baseline, default_verdict); "" for not-egress


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One device of the inventory (`egress.inventory`), as published on `kafka.devices_topic`.

    `*_out` count its egress: the flows it initiated to a non-local address, and the bytes
    and packets it sent in them (`source.bytes`, `source.packets`: frames on the wire).
    `lan_only`: no flow of its own was seen within the first idle timeout after its first
    frame (or by the end of the input), so its covered-vendor alert, if any, comes from
    this record rather than from a flow. `seen_by`: what revealed it (arp, lan, flow)."""

    mac: str  # ECS form
    manufacturer: str | None
    organization: str | None
    ips: tuple[str, ...]
    vlans: tuple[int, ...]
    first_seen: float
    last_seen: float
    flows_out: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    lan_only: bool = False
    seen_by: tuple[str, ...] = ()
    group: str = ""
    covered: bool = False
    name: str = ""
    site: str = ""
    observer_name: str = ""
    observer_hostname: str = ""

    def as_flow(self) -> FlowRecord:
        """The device as the policy sees a flow's device (its group, its brand), and as its
        covered-vendor alert carries it: no destination, no transport, nothing counted."""
        ip = self.ips[0] if self.ips else ""
        return FlowRecord(
            start=self.first_seen, end=self.last_seen, transport=0, source=Endpoint(ip, 0, self.mac), destination=Endpoint("", 0),
            vlans=self.vlans, community_id="", direction="internal", device_mac=self.mac, device_ip=ip or None,
            device_manufacturer=self.manufacturer, device_organization=self.organization, site=self.site,
            observer_name=self.observer_name, observer_hostname=self.observer_hostname,
        )  # fmt: skip
