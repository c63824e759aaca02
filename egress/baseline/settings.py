"""The policy's `baseline:` section, a group's override of it, and the settings they resolve to.

Both sections are partial in the file (a group may override any key, `volume` key by key);
`resolve` fills in what neither gives from the defaults of SPEC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from egress.config import parse_duration, parse_size

__all__ = ["BaselineSection", "VolumeSection", "BaselineSettings", "VolumeSettings", "resolve", "describe"]

_LEARN_FOR = 7 * 86400.0
_WINDOW, _FACTOR, _MIN_BYTES = 600.0, 3.0, 50_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _seconds(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be more than 0s")
    return seconds


class VolumeSection(_Strict):
    window: float | None = None
    factor: float | None = None
    min_bytes: int | None = None

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: object) -> float | None:
        return None if value is None else _seconds(value)

    @field_validator("min_bytes", mode="before")
    @classmethod
    def _size(cls, value: object) -> int | None:
        return None if value is None else parse_size(value)

    @field_validator("factor")
    @classmethod
    def _factor(cls, value: float | None) -> float | None:
        if value is not None and value <= 1:
            raise ValueError("must be more than 1 (a window past factor x the largest learned one alerts)")
        return value


class BaselineSection(_Strict):
    learn_for: float | None = None
    scope: Literal["group", "device"] | None = None
    volume: VolumeSection | None = None
    off: bool = False  # what `baseline: off` reads as

    @model_validator(mode="before")
    @classmethod
    def _off(cls, value: object) -> object:
        """`baseline: off` (YAML reads a bare off as false)."""
        if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
            return {"off": True}
        return value

    @field_validator("learn_for", mode="before")
    @classmethod
    def _learn_for(cls, value: object) -> float | None:
        return None if value is None else _seconds(value)




@dataclass(frozen=True, slots=True)
class VolumeSettings:
    window: float = _WINDOW  # seconds; windows are aligned to the epoch
    factor: float = _FACTOR
    min_bytes: int = _MIN_BYTES


@dataclass(frozen=True, slots=True)
class BaselineSettings:
    learn_for: float = _LEARN_FOR  # seconds of flow time from the scope's first egress flow
    scope: Literal["group", "device"] = "group"
    volume: VolumeSettings | None = None


def resolve(top: BaselineSection | None, group: BaselineSection | None) -> BaselineSettings | None:
    """A group's settings: its keys over the top-level section's over the defaults. None where
    the group says `off`, or says nothing and the top level has no section (or says `off`)."""
    if (group is not None and group.off) or (group is None and (top is None or top.off)):
        return None
    learn_for: float = _LEARN_FOR
    scope: Literal["group", "device"] = "group"
    volume: VolumeSettings | None = None
    for section in (s for s in (top, group) if s is not None and not s.off):
        learn_for = section.learn_for if section.learn_for is not None else learn_for
        scope = section.scope or scope
        if section.volume is not None:
            base = volume or VolumeSettings()
            v = section.volume
            volume = VolumeSettings(v.window or base.window, v.factor or base.factor, v.min_bytes if v.min_bytes is not None else base.min_bytes)
    return BaselineSettings(learn_for, scope, volume)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def describe(settings: BaselineSettings | None) -> str:
    """One line for `egress check`: `off`, or the resolved keys."""
    if settings is None:
        return "off"
    text = f"learn_for {_duration(settings.learn_for)}, scope {settings.scope}"
    if settings.volume is not None:
        v = settings.volume
        text += f", volume window {_duration(v.window)} factor {v.factor:g} min_bytes {v.min_bytes:,}"
    return text
