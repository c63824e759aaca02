"""Flow and alert records ⇄ ECS JSON: the one wire format, versioned.

Everything that leaves a process (Kafka messages, NDJSON files, stdout) goes through
here, and `decode_flow` is the only way back in, so the agent, the rules consumer and
`analyze` see records exactly alike.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

from egress.model import TRANSPORT_NAMES, Alert, Endpoint, FlowRecord

__all__ = ["SCHEMA_VERSION", "DecodeError", "iso", "flow_to_ecs", "alert_to_ecs", "encode", "decode_flow", "SEVERITY_SCORES"]

SCHEMA_VERSION: Final = 1
_TRANSPORT_NUMBERS: Final = {name: num for num, name in TRANSPORT_NAMES.items()}
# ECS event.severity is numeric; these are the scores Elastic's detection rules use.
SEVERITY_SCORES: Final = {"low": 21, "medium": 47, "high": 73, "critical": 99}


class DecodeError(ValueError):
    """A message that is not a flow record of a schema version this code reads."""


def iso(ts: float) -> str:
    """ECS timestamps: UTC, microseconds, `Z`."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _prune(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop empty values so records stay small and absent means unknown."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            value = _prune(value)
        if value is None or value == {} or value == [] or value == "":
            continue
        out[key] = value
    return out


def _endpoint(ep: Endpoint) -> dict[str, Any]:
    return {"ip": ep.ip, "port": ep.port or None, "mac": ep.mac, "bytes": ep.bytes, "packets": ep.packets}


def flow_to_ecs(rec: FlowRecord) -> dict[str, Any]:
    src = _endpoint(rec.source)
    src["geo"] = {"country_iso_code": rec.source_country}
    dst = _endpoint(rec.destination)
    dst.update(
        domain=rec.destination_domain,
        geo={"country_iso_code": rec.destination_country},
        **{"as": {"number": rec.destination_asn, "organization": {"name": rec.destination_as_org}}},
    )
    vlan = {"id": str(rec.vlans[0])} if rec.vlans else None
    inner = {"vlan": {"id": str(rec.vlans[-1])}} if len(rec.vlans) > 1 else None
    doc = {
        "@timestamp": iso(rec.end),
        "event": {
            "kind": "event",
            "category": ["network"],
            "type": ["connection"],
            "start": iso(rec.start),
            "end": iso(rec.end),
            "duration": (round(rec.end * 1e6) - round(rec.start * 1e6)) * 1000,
        },
        "source": src,
        "destination": dst,
        "network": {
            "transport": rec.transport_name,
            "iana_number": str(rec.transport),
            "type": rec.ip_version,
            "vlan": vlan,
            "inner": inner,
            "community_id": rec.community_id,
            "direction": rec.direction,
            "bytes": rec.source.bytes + rec.destination.bytes,
            "packets": rec.source.packets + rec.destination.packets,
        },
        "device": {"id": rec.device_mac, "manufacturer": rec.device_manufacturer},
        "observer": {"name": rec.observer_name, "hostname": rec.observer_hostname, "ingress": {"interface": {"name": rec.interface}}},
        "labels": {"site": rec.site, "group": rec.group},
        "egress": {
            "schema_version": SCHEMA_VERSION,
            "device": {"ip": rec.device_ip, "organization": rec.device_organization},
            "destination": {"domains": list(rec.destination_domains)},
            "icmp": {"type": rec.icmp_type, "code": rec.icmp_code} if rec.icmp_type >= 0 else None,
            "vlans": list(rec.vlans),
        },
    }
    return _prune(doc)


def alert_to_ecs(alert: Alert) -> dict[str, Any]:
    doc = flow_to_ecs(alert.flow)
    doc["event"]["kind"] = "alert"
    doc["event"]["id"] = alert.event_id
    doc["event"]["severity"] = SEVERITY_SCORES[alert.severity]
    doc["rule"] = {"id": alert.rule_id, "name": alert.rule_name, "category": alert.category, "ruleset": alert.ruleset}
    doc["message"] = alert.message
    doc["egress"]["severity"] = alert.severity
    return doc


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")


def _get(doc: dict[str, Any], *path: str, default: Any = None) -> Any:
    cur: Any = doc
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return default
        cur = cur[key]
    return cur


def decode_flow(data: bytes) -> FlowRecord:
    """Bytes → FlowRecord; anything malformed raises DecodeError with the reason."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DecodeError("not a JSON object")
    version = _get(doc, "egress", "schema_version")
    if version != SCHEMA_VERSION:
        raise DecodeError(f"unsupported schema version {version!r}")
    try:
        transport = _TRANSPORT_NUMBERS.get(doc["network"]["transport"]) or int(doc["network"]["iana_number"])
        icmp = _get(doc, "egress", "icmp", default={}) or {}
        vlans = tuple(int(v) for v in _get(doc, "egress", "vlans", default=[]))
        rec = FlowRecord(
            start=_parse_iso(doc["event"]["start"]),
            end=_parse_iso(doc["event"]["end"]),
            transport=transport,
            source=_decode_endpoint(doc["source"]),
            destination=_decode_endpoint(doc["destination"]),
            vlans=vlans,
            community_id=str(doc["network"].get("community_id", "")),
            direction=str(doc["network"]["direction"]),
            icmp_type=int(icmp.get("type", -1)),
            icmp_code=int(icmp.get("code", -1)),
            device_mac=_opt_str(_get(doc, "device", "id")),
            device_ip=_opt_str(_get(doc, "egress", "device", "ip")),
            device_manufacturer=_opt_str(_get(doc, "device", "manufacturer")),
            device_organization=_opt_str(_get(doc, "egress", "device", "organization")),
            destination_domain=_opt_str(_get(doc, "destination", "domain")),
            destination_domains=tuple(str(d) for d in _get(doc, "egress", "destination", "domains", default=[])),
            destination_country=_opt_str(_get(doc, "destination", "geo", "country_iso_code")),
            destination_asn=_opt_int(_get(doc, "destination", "as", "number")),
            destination_as_org=_opt_str(_get(doc, "destination", "as", "organization", "name")),
            source_country=_opt_str(_get(doc, "source", "geo", "country_iso_code")),
            site=str(_get(doc, "labels", "site", default="")),
            observer_name=str(_get(doc, "observer", "name", default="")),
            observer_hostname=str(_get(doc, "observer", "hostname", default="")),
            interface=str(_get(doc, "observer", "ingress", "interface", "name", default="")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DecodeError(f"not a flow record: {type(exc).__name__}: {exc}") from None
    return rec


def _decode_endpoint(obj: Any) -> Endpoint:
    if not isinstance(obj, dict):
        raise TypeError("endpoint is not an object")
    return Endpoint(str(obj["ip"]), int(obj.get("port", 0)), _opt_str(obj.get("mac")), int(obj.get("bytes", 0)), int(obj.get("packets", 0)))


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
