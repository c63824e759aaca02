"""Flow, alert and device records ⇄ ECS JSON and bus messages: the one wire format, versioned.

Everything that leaves a process (Kafka messages, NDJSON files, stdout) goes through
here, and `read_flow` (a bus record) or `decode_flow` (bytes) is the only way back in,
so the agent, the rules consumer and `analyze` see records exactly alike. The envelope
of a bus message is here too: the key (the device MAC, so a device stays on one
partition) and the `schema-version` header.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, Final

import orjson

from egress.bus import Message, Record
from egress.model import TRANSPORT_NAMES, Alert, DeviceRecord, Endpoint, FlowRecord, Verdict

__all__ = [
    "SCHEMA_VERSION", "SCHEMA_HEADER", "HEADERS", "DecodeError", "iso", "flow_to_ecs", "alert_to_ecs", "encode",
    "decode_flow", "SEVERITY_SCORES", "flow_message", "alert_message", "read_flow", "verdict_to_ecs",
    "device_to_ecs", "device_message", "read_device",
]  # fmt: skip

SCHEMA_VERSION: Final = 1
SCHEMA_HEADER: Final = "schema-version"
#: the headers of every message egress sends
HEADERS: Final[tuple[tuple[str, bytes], ...]] = ((SCHEMA_HEADER, str(SCHEMA_VERSION).encode()),)
_VERSION: Final = HEADERS[0][1]
_TRANSPORT_NUMBERS: Final = {name: num for num, name in TRANSPORT_NAMES.items()}
# ECS event.severity is numeric; these are the scores Elastic's detection rules use.
SEVERITY_SCORES: Final = {"low": 21, "medium": 47, "high": 73, "critical": 99}


class DecodeError(ValueError):
    """A message that is not a flow record of a schema version this code reads."""


_SECONDS: dict[int, str] = {}


def iso(ts: float) -> str:
    """ECS timestamps: UTC, microseconds, `Z`. The date-and-second part is cached: flow
    records arrive in time order, so most share theirs with a recent one."""
    micros = round(ts * 1_000_000)
    sec, frac = divmod(micros, 1_000_000)
    head = _SECONDS.get(sec)
    if head is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        head = _SECONDS[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{head}.{frac:06d}Z"


def _parse_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _put(obj: dict[str, Any], key: str, value: Any) -> None:
    """Absent means unknown: empty values are left out, so records stay small."""
    if value is not None and value != "":
        obj[key] = value


def _section(doc: dict[str, Any], key: str, fields: dict[str, Any]) -> None:
    """doc[key]: the fields that are not empty, where any is."""
    section: dict[str, Any] = {}
    for name, value in fields.items():
        _put(section, name, value)
    if section:
        doc[key] = section


def _endpoint(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"ip": ep.ip} if ep.ip else {}  # no IP: an ARP-only device's alert
    if ep.port:
        out["port"] = ep.port
    _put(out, "mac", ep.mac)
    out["bytes"] = ep.bytes
    out["packets"] = ep.packets
    return out


def flow_to_ecs(rec: FlowRecord, group: str | None = None) -> dict[str, Any]:
    """The ECS document of a flow; `group` (`labels.group`) once the policy has placed its device."""
    src = _endpoint(rec.source)
    if rec.source_country:
        src["geo"] = {"country_iso_code": rec.source_country}
    dst = _endpoint(rec.destination)
    _put(dst, "domain", rec.destination_domain)
    if rec.destination_country:
        dst["geo"] = {"country_iso_code": rec.destination_country}
    if rec.destination_asn is not None:
        asn: dict[str, Any] = {"number": rec.destination_asn}
        if rec.destination_as_org:
            asn["organization"] = {"name": rec.destination_as_org}
        dst["as"] = asn
    network: dict[str, Any] = {
        "transport": rec.transport_name,
        "iana_number": str(rec.transport),
        "type": rec.ip_version,
    }
    if rec.vlans:
        network["vlan"] = {"id": str(rec.vlans[0])}
        if len(rec.vlans) > 1:
            network["inner"] = {"vlan": {"id": str(rec.vlans[-1])}}
    _put(network, "community_id", rec.community_id)
    _put(network, "protocol", rec.protocol)
    network["direction"] = rec.direction
    network["bytes"] = rec.source.bytes + rec.destination.bytes
    network["packets"] = rec.source.packets + rec.destination.packets
    start, end = iso(rec.start), iso(rec.end)
    doc: dict[str, Any] = {
        "@timestamp": end,
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection"],
            "start": start,
            "end": end,
            "duration": (round(rec.end * 1e6) - round(rec.start * 1e6)) * 1000,
        },
        "source": src,
        "destination": dst,
        "network": network,
    }
    if not rec.destination.ip:  # a device record's alert (DeviceRecord.as_flow): no destination
        del doc["destination"]
    device: dict[str, Any] = {}
    _put(device, "id", rec.device_mac)
    _put(device, "manufacturer", rec.device_manufacturer)
    if device:
        doc["device"] = device
    observer: dict[str, Any] = {}
    _put(observer, "name", rec.observer_name)
    _put(observer, "hostname", rec.observer_hostname)
    if rec.interface:
        observer["ingress"] = {"interface": {"name": rec.interface}}
    if observer:
        doc["observer"] = observer
    _section(doc, "labels", {"site": rec.site, "group": group})
    ext: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    ext_device: dict[str, Any] = {}
    _put(ext_device, "ip", rec.device_ip)
    _put(ext_device, "organization", rec.device_organization)
    if ext_device:
        ext["device"] = ext_device
    if rec.destination_domains:
        ext["destination"] = {"domains": list(rec.destination_domains)}
    if rec.icmp_type >= 0:
        ext["icmp"] = {"type": rec.icmp_type, "code": rec.icmp_code}
    if rec.vlans:
        ext["vlans"] = list(rec.vlans)
    doc["egress"] = ext
    return doc


def alert_to_ecs(alert: Alert) -> dict[str, Any]:
    doc = flow_to_ecs(alert.flow, alert.group)
    doc["event"]["kind"] = "alert"
    doc["event"]["id"] = alert.event_id
    doc["event"]["severity"] = SEVERITY_SCORES[alert.severity]
    doc["rule"] = {"id": alert.rule_id, "name": alert.rule_name, "category": alert.category, "ruleset": alert.ruleset}
    _put(doc["rule"], "description", alert.description)
    if alert.device_name:
        doc.setdefault("device", {})["name"] = alert.device_name
    doc["message"] = alert.message
    doc["egress"]["severity"] = alert.severity
    return doc


def verdict_to_ecs(verdict: Verdict, ruleset: str) -> dict[str, Any]:
    """A flow record as `--flows-out` writes it: the flow with its group, what the policy said
    (`egress.verdict`) and the rule that decided (`rule.id`, `rule.name`), so allowed traffic
    can be reviewed as well as alerts."""
    doc = flow_to_ecs(verdict.flow, verdict.group)
    doc["egress"]["verdict"] = verdict.verdict
    if verdict.rule:
        doc["rule"] = {"id": verdict.rule, "name": verdict.rule.rsplit("/", 1)[-1], "ruleset": ruleset}
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError:  # a lone surrogate from a hostile name: escape it instead
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def flow_message(rec: FlowRecord) -> Message:
    """A flow record on the bus, keyed by the device MAC."""
    return _message(rec.device_mac, encode(flow_to_ecs(rec)))


def alert_message(alert: Alert) -> Message:
    """An alert record on the bus, keyed like its flow."""
    return _message(alert.flow.device_mac, encode(alert_to_ecs(alert)))


def _message(device_mac: str | None, value: bytes) -> Message:
    """The envelope of an encoded record: the device key and the schema header."""
    return Message(device_mac.encode() if device_mac else None, value, HEADERS)


def read_flow(record: Record) -> FlowRecord:
    """A consumed bus record → FlowRecord; DecodeError says why one is refused (a header of
    another schema version, or a value that is not a flow record)."""
    headers = record.headers
    if headers and headers != HEADERS:
        version = next((value for name, value in headers if name == SCHEMA_HEADER), None)
        if version is not None and version != _VERSION:
            raise DecodeError(f"unsupported schema-version header {version[:20]!r}")
    return decode_flow(record.value or b"")


def decode_flow(data: bytes) -> FlowRecord:
    """Bytes → FlowRecord; anything malformed raises DecodeError with the reason.

    This runs for every record a rules consumer reads, so it is written for speed:
    one dict lookup per field, no helper calls on the common path."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if doc.__class__ is not dict:
        raise DecodeError("not a JSON object")
    ext: dict[str, Any] = doc.get("egress") or _EMPTY
    version = ext.get("schema_version") if ext.__class__ is dict else None
    if version != SCHEMA_VERSION:
        raise DecodeError(f"unsupported schema version {version!r}")
    try:
        event, network, src, dst = doc["event"], doc["network"], doc["source"], doc["destination"]
        transport = _TRANSPORT_NUMBERS.get(network["transport"]) or int(network["iana_number"])
        icmp = ext.get("icmp") or _EMPTY
        device = doc.get("device") or _EMPTY
        ext_device = ext.get("device") or _EMPTY
        asn = dst.get("as") or _EMPTY
        observer = doc.get("observer") or _EMPTY
        labels = doc.get("labels") or _EMPTY
        number = asn.get("number")
        rec = FlowRecord(
            _parse_iso(event["start"]),
            _parse_iso(event["end"]),
            transport,
            Endpoint(src["ip"], src.get("port", 0), src.get("mac"), src.get("bytes", 0), src.get("packets", 0)),
            Endpoint(dst["ip"], dst.get("port", 0), dst.get("mac"), dst.get("bytes", 0), dst.get("packets", 0)),
            tuple(map(int, ext.get("vlans", ()))),
            network.get("community_id", ""),
            network["direction"],
            icmp.get("type", -1),
            icmp.get("code", -1),
            device.get("id"),
            ext_device.get("ip"),
            device.get("manufacturer"),
            ext_device.get("organization"),
            dst.get("domain"),
            tuple((ext.get("destination") or _EMPTY).get("domains", ())),
            (dst.get("geo") or _EMPTY).get("country_iso_code"),
            None if number is None else int(number),
            (asn.get("organization") or _EMPTY).get("name"),
            (src.get("geo") or _EMPTY).get("country_iso_code"),
            labels.get("site", ""),
            observer.get("name", ""),
            observer.get("hostname", ""),
            ((observer.get("ingress") or _EMPTY).get("interface") or _EMPTY).get("name", ""),
            network.get("protocol"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"not a flow record: {type(exc).__name__}: {exc}") from None
    _check_types(rec)
    return rec


_EMPTY: dict[str, Any] = {}
def _check_types(rec: FlowRecord) -> None:
    """JSON can carry a number where a string belongs (or the reverse). The fields that
    later code computes with are checked; a record that fails is refused whole."""
    src, dst = rec.source, rec.destination
    ok = (
        src.port.__class__ is int and dst.port.__class__ is int
        and src.bytes.__class__ is int and dst.bytes.__class__ is int
        and src.packets.__class__ is int and dst.packets.__class__ is int
        and src.ip.__class__ is str and dst.ip.__class__ is str
        and rec.icmp_type.__class__ is int and rec.icmp_code.__class__ is int
        and rec.direction.__class__ is str
        and (rec.device_manufacturer is None or rec.device_manufacturer.__class__ is str)
        and (rec.device_mac is None or rec.device_mac.__class__ is str)
        and (rec.device_ip is None or rec.device_ip.__class__ is str)
        and (rec.destination_domain is None or rec.destination_domain.__class__ is str)
    )  # fmt: skip
    for domain in rec.destination_domains:
        ok = ok and domain.__class__ is str
    if not ok:
        raise DecodeError("not a flow record: a field has the wrong type")




def device_to_ecs(dev: DeviceRecord) -> dict[str, Any]:
    """A device of the inventory (kafka.devices_topic, `analyze --format devices-json`)."""
    doc: dict[str, Any] = {
        "@timestamp": iso(dev.last_seen),
        "event": {"kind": "state", "category": ["host"], "type": ["info"], "start": iso(dev.first_seen), "end": iso(dev.last_seen)},
    }
    _section(doc, "device", {"id": dev.mac, "manufacturer": dev.manufacturer, "name": dev.name})
    doc["host"] = {"mac": [dev.mac], "ip": list(dev.ips)}
    if dev.vlans:
        doc["network"] = {"vlan": {"id": str(dev.vlans[0])}}
    _section(doc, "observer", {"name": dev.observer_name, "hostname": dev.observer_hostname})
    _section(doc, "labels", {"site": dev.site, "group": dev.group})
    ext_device: dict[str, Any] = {
        "ips": list(dev.ips), "vlans": list(dev.vlans), "covered": dev.covered, "lan_only": dev.lan_only, "seen_by": list(dev.seen_by),
        "flows_out": dev.flows_out, "packets_out": dev.packets_out, "bytes_out": dev.bytes_out,
    }  # fmt: skip
    _put(ext_device, "organization", dev.organization)
    doc["egress"] = {"schema_version": SCHEMA_VERSION, "device": ext_device}
    return doc


def device_message(dev: DeviceRecord, topic: str) -> Message:
    """A device record on the bus, keyed by its MAC (the devices topic is compacted by it)."""
    return Message(dev.mac.encode(), encode(device_to_ecs(dev)), HEADERS, topic)


def read_device(record: Record) -> DeviceRecord:
    """A consumed device record → DeviceRecord; DecodeError says why one is refused."""
    headers = record.headers
    version = next((value for name, value in headers if name == SCHEMA_HEADER), _VERSION)
    if version != _VERSION:
        raise DecodeError(f"unsupported schema-version header {version[:20]!r}")
    try:
        doc = orjson.loads(record.value or b"")
        ext = doc["egress"]
        if ext.get("schema_version") != SCHEMA_VERSION:
            raise DecodeError(f"unsupported schema version {ext.get('schema_version')!r}")
        d, event, info = doc["device"], doc["event"], ext["device"]
        labels, observer = doc.get("labels") or _EMPTY, doc.get("observer") or _EMPTY
        dev = DeviceRecord(
            str(d["id"]), d.get("manufacturer"), info.get("organization"), tuple(map(str, info["ips"])), tuple(map(int, info["vlans"])),
            _parse_iso(event["start"]), _parse_iso(event["end"]), int(info["flows_out"]), int(info["packets_out"]), int(info["bytes_out"]),
            bool(info["lan_only"]), tuple(map(str, info["seen_by"])), str(labels.get("group", "")), bool(info["covered"]), str(d.get("name", "")),
            str(labels.get("site", "")), str(observer.get("name", "")), str(observer.get("hostname", "")),
        )  # fmt: skip
    except DecodeError:
        raise
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"not a device record: {type(exc).__name__}: {exc}") from None
    if dev.manufacturer is not None and dev.manufacturer.__class__ is not str:
        raise DecodeError("not a device record: a field has the wrong type")
    return dev
