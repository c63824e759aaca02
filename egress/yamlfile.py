"""YAML files that remember where each value stood, so every error names file:line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from egress.errors import UsageError

__all__ = ["LocatedYaml", "load_located", "validate", "format_errors"]

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class LocatedYaml:
    """A parsed YAML document plus the line of every mapping key and sequence item."""

    def __init__(self, path: Path, data: Any, lines: dict[Loc, int]) -> None:
        self.path = path
        self.data = data
        self._lines = lines

    def line(self, loc: Sequence[str | int]) -> int | None:
        """The line of the deepest part of `loc` that the file holds."""
        key = tuple(loc)
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key[:-1]
        return self._lines.get((), None)

    def where(self, loc: Sequence[str | int]) -> str:
        line = self.line(loc)
        return f"{self.path}:{line}" if line else str(self.path)


def _to_python(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _to_python(value_node, loc + (key,), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, loc + (i,), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


def load_located(path: Path, what: str) -> LocatedYaml:
    """Read and parse; a missing file or a YAML syntax error is a UsageError with file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read {what} file: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{where}: invalid YAML: {problem}") from None
    lines: dict[Loc, int] = {}
    data = _to_python(node, (), lines) if node is not None else {}
    return LocatedYaml(path, data, lines)


def format_errors(doc: LocatedYaml | None, exc: ValidationError, source: str = "") -> list[str]:
    """One `file:line: key.path: message` line per pydantic error."""
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        where = doc.where(loc) if doc is not None else source
        out.append(f"{where}: {dotted}: {msg}")
    return out


def validate(model: type[M], doc: LocatedYaml) -> M:
    """Validate a whole document; every error, with its line, in one UsageError."""
    if not isinstance(doc.data, dict):
        raise UsageError(f"{doc.path}:1: expected a mapping of keys at the top level")
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        raise UsageError("\n".join(format_errors(doc, exc))) from None
