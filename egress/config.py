"""The config file (SPEC: Config file) and its precedence.

Command-line options, then `EGRESS_*` environment variables (nested keys joined by
`__`, e.g. `EGRESS_KAFKA__GROUP_ID`), then the file, then built-in defaults. Unknown
keys are refused; every error names the file and line (or the variable).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator

from egress.capture.prefilter import validate_bpf_text
from egress.errors import UsageError
from egress.yamlfile import LocatedYaml, format_errors, load_located

__all__ = ["Config", "ResolvedConfig", "load_config", "resolve_config", "DEFAULT_CONFIG_PATH", "parse_duration", "parse_size"]

DEFAULT_CONFIG_PATH = Path("/etc/egress/egress.yaml")
DEFAULT_POLICY_PATH = Path("/etc/egress/policy.yaml")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_duration(value: object) -> float:
    """`60s`, `5m`, `1.5h`, `250ms` or a number of seconds → seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration like 60s, 5m or 1h")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: object) -> int:
    """`1GiB`, `500MB`, `4096` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size like 1GiB or 500MB")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaptureConfig(_Section):
    interfaces: tuple[str, ...] = ()
    bpf: str = ""
    snaplen: int = Field(512, ge=64, le=262144)
    chunk_packets: int = Field(100_000, ge=1000)  # tshark is replaced after this many packets
    dissect: Literal["names", "all"] = "names"  # which packets tshark dissects: those that may carry a name, or all

    @field_validator("bpf")
    @classmethod
    def _bpf(cls, value: str) -> str:
        reason = validate_bpf_text(value)
        if reason:
            raise ValueError(reason)
        return value

    @field_validator("interfaces")
    @classmethod
    def _interfaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", name) or name.startswith("-"):
                raise ValueError(f"{name!r} is not a network interface name")
        return value


class FlowsConfig(_Section):
    idle_timeout: float = 60.0
    active_timeout: float = 300.0
    max_flows: int = Field(200_000, ge=1)

    @field_validator("idle_timeout", "active_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("must be more than 0s")
        return seconds


class GeoipConfig(_Section):
    country_db: Path | None = Path("/var/lib/GeoIP/GeoLite2-Country.mmdb")
    asn_db: Path | None = Path("/var/lib/GeoIP/GeoLite2-ASN.mmdb")


class KafkaConfig(_Section):
    bootstrap_servers: tuple[str, ...] = ("localhost:9092",)
    flows_topic: str = "egress.flows"
    alerts_topic: str = "egress.alerts"
    dead_letter_topic: str = "egress.deadletter"
    baseline_topic: str = "egress.baseline"  # compacted: the learned baseline every rules consumer reads whole and follows
    devices_topic: str = "egress.devices"  # compacted, keyed by MAC: the agents' device inventory, read by the rules consumers too
    group_id: str = "egress-rules"
    partitions: int = Field(6, ge=1)  # for topics egress creates; existing topics keep theirs
    # For topics egress creates, null: decided from the brokers the admin client sees (1 on a single
    # broker; 3 and min ISR 2 on three or more: with acks=all no acknowledged record is lost with one broker down).
    replication_factor: int | None = Field(None, ge=1)
    min_insync_replicas: int | None = Field(None, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None  # best from EGRESS_KAFKA__SASL_PASSWORD; never logged
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("min_insync_replicas")
    @classmethod
    def _insync_within_replicas(cls, isr: int | None, info: ValidationInfo) -> int | None:
        rf = info.data.get("replication_factor")  # validated before: fields go in order
        if rf is not None and isr is not None and isr > rf:
            raise ValueError(f"{isr} is more than replication_factor {rf}: no write could ever succeed")
        return isr


class SpoolConfig(_Section):
    path: Path | None = Path("/var/lib/egress/spool")  # null: no spool (Kafka must be up at start)
    max_bytes: int = 2**30

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_size(value)


class MetricsConfig(_Section):
    listen: str = "127.0.0.1:9108"
    web_config: Path | None = None  # TLS and basic auth, in the exporter toolkit's format (egress/webconfig.py); null: plain HTTP

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not host:port")
        return value


class AlertsConfig(_Section):
    repeat_after: float = 3600.0  # the same (device, destination, port, rule) again within it is counted, not emitted; 0: never

    @field_validator("repeat_after", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        seconds = parse_duration(value)
        if seconds < 0:
            raise ValueError("must be 0s or more")
        return seconds


class Config(_Section):
    site: str = "default"
    observer_name: str = ""
    capture: CaptureConfig = CaptureConfig()
    flows: FlowsConfig = FlowsConfig()
    geoip: GeoipConfig = GeoipConfig()
    kafka: KafkaConfig = KafkaConfig()
    spool: SpoolConfig = SpoolConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    policy_file: Path = DEFAULT_POLICY_PATH
    baseline_file: Path | None = None  # the learned baseline of `run` and `analyze` (SPEC: Learned baseline)


def _verbatim(path: tuple[str, ...]) -> bool:
    """Whether the field at `path` holds text (taken as written, never read as YAML):
    a password like `12345678` or `x #y` must stay what it is."""
    model: Any = Config
    for key in path:
        field = getattr(model, "model_fields", {}).get(key)
        if field is None:
            return False
        model = field.annotation
        args = [a for a in get_args(model) if a is not type(None)]
        if args and get_origin(model) in (Union, UnionType):
            model = args[0]
    return model in (str, SecretStr, Path)


def _close_key(name: str) -> str | None:
    return next(iter(difflib.get_close_matches(name, list(Config.model_fields), n=1, cutoff=0.8)), None)


def _unknown_variable(var: str, path: tuple[str, ...]) -> str:
    """`environment EGRESS_FLOWZ__IDLE_TIMEOUT: unknown config key flowz (did you mean EGRESS_FLOWS__IDLE_TIMEOUT?)`."""
    near = _close_key(path[0])
    hint = f" (did you mean EGRESS_{'__'.join((near, *path[1:])).upper()}?)" if near else f" (keys: {', '.join(Config.model_fields)})"
    return f"environment {var}: unknown config key {path[0]}{hint}"


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """EGRESS_A__B=value → {"a": {"b": value}}; only for keys the config has. Text fields take
    the value verbatim; others read it as YAML, so lists (`[eth1, eth2]`) and numbers work."""
    out: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for var, raw in environ.items():
        if not var.startswith("EGRESS_"):
            continue
        path = tuple(part.lower() for part in var[len("EGRESS_") :].split("__"))
        if path[0] not in Config.model_fields:
            if len(path) > 1 or _close_key(path[0]):  # a section or a near miss: a typo, not another tool's
                raise UsageError(_unknown_variable(var, path))
            continue  # EGRESS_KAFKA_HOME and friends belong to other tools
        if _verbatim(path) and raw != "null":
            value: Any = raw
        else:
            try:
                value = yaml.safe_load(raw) if raw.strip() else raw
            except yaml.YAMLError:
                value = raw
        cur = out
        for key in path[:-1]:
            cur = cur.setdefault(key, {})
        cur[path[-1]] = value
        origin[path] = var
    return out, origin


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _holds(data: object, loc: tuple[str, ...]) -> bool:
    """Whether the nested mapping `data` sets the value at `loc` (itself or a whole list)."""
    for key in loc:
        if not isinstance(data, Mapping) or key not in data:
            return False
        data = data[key]
    return True


def _plain(value: object) -> object:
    """A config value as YAML writes it back: a secret masked, paths as text, tuples as lists."""
    if isinstance(value, SecretStr):
        return "***"
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True, slots=True)
class ResolvedConfig:
    """The effective config, and what each source set: so a value's origin is told by the
    same precedence that chose it (`egress check` names it in every line)."""

    config: Config
    file: LocatedYaml | None
    environment: Mapping[str, Any]
    variables: Mapping[tuple[str, ...], str]  # the EGRESS_* variable that set each path
    flags: Mapping[str, Any]

    def origin(self, loc: tuple[str, ...]) -> str:
        """`flag`, `env EGRESS_…`, `file PATH:LINE` or `default`: where the value at `loc` came from."""
        kind, detail = self._source(loc)
        return f"{kind} {detail}" if detail else kind

    def where(self, loc: tuple[str, ...]) -> str | None:
        """The source of the value at `loc` as an error line begins with it, as config errors
        do (`PATH:LINE`, `environment EGRESS_…`, `command line`); None for a default."""
        kind, detail = self._source(loc)
        return {"flag": "command line", "env": f"environment {detail}", "file": detail}.get(kind)

    def _source(self, loc: tuple[str, ...]) -> tuple[str, str]:
        if _holds(self.flags, loc):
            return "flag", ""
        if _holds(self.environment, loc):
            return "env", self.variables[max((p for p in self.variables if loc[: len(p)] == p), key=len)]
        if self.file is not None and _holds(self.file.data, loc):
            return "file", self.file.where(loc)
        return "default", ""

    def as_yaml(self) -> str:
        """The config as YAML, each value with its origin as an end-of-line comment and
        every secret as `'***'`: what `egress check --show-config` prints."""
        lines: list[str] = []
        self._dump(self.config, (), lines)
        return "\n".join(lines) + "\n"

    def _dump(self, model: BaseModel, loc: tuple[str, ...], lines: list[str]) -> None:
        indent = "  " * len(loc)
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                lines.append(f"{indent}{name}:")
                self._dump(value, (*loc, name), lines)
                continue
            plain = _plain(value)
            flow = None if isinstance(plain, list) else False  # a list on its key's line, `[a, b]`
            text = yaml.safe_dump({name: plain}, default_flow_style=flow, sort_keys=False, width=10**6, allow_unicode=True).rstrip("\n")
            lines.append(f"{indent}{text}  # {self.origin((*loc, name))}")


def resolve_config(path: Path | None, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> ResolvedConfig:
    """The effective config and its sources. `path=None` means the default file, if it exists;
    `overrides` are the command line's values (nested like the file)."""
    doc: LocatedYaml | None = None
    if path is not None or DEFAULT_CONFIG_PATH.exists():
        doc = load_located(path or DEFAULT_CONFIG_PATH, "config")
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise UsageError(f"{doc.path}:1: expected a mapping of keys at the top level")
    env, env_origin = _env_overrides(os.environ if environ is None else environ)
    flags = overrides or {}
    data = _merge(_merge(doc.data if doc else {}, env), flags)
    try:
        return ResolvedConfig(Config.model_validate(data), doc, env, env_origin, flags)
    except ValidationError as exc:
        lines = []
        for line, err in zip(format_errors(doc, exc, source="command line"), exc.errors(), strict=True):
            loc = tuple(str(p) for p in err["loc"])
            var = next((v for p, v in env_origin.items() if loc[: len(p)] == p), None)
            lines.append(f"environment {var}: {line.split(': ', 1)[1]}" if var else line)
        raise UsageError("\n".join(lines)) from None


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The effective config. `path=None` means the default file, if it exists."""
    return resolve_config(path, overrides, environ).config
