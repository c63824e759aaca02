"""YAML files that remember where each value stood, so every error names file:line.

The values are those of PyYAML's safe loader, with merge keys (`<<: *base`) applied, but
stricter: a duplicate key (which PyYAML lets the last one win silently), a list as a key,
an unknown tag, a recursive alias or aliases that expand past a million values are
refused with their line, never a traceback.
"""

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


_MAP, _SEQ, _MERGE = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:merge"
_MAX_NODES = 1_000_000  # after aliases are expanded: a few nested aliases can ask for billions


class _Refused(Exception):
    """A value the document cannot give, at a node: becomes `file:line: key.path: message`."""

    def __init__(self, node: yaml.Node, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.line, self.loc, self.message = node.start_mark.line + 1, loc, message


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing an alias inside the node of its own anchor (`a: &a [*a]`),
    whose value would be infinite."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: set[str] = set()  # anchors of the nodes being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:  # PyYAML's own signature
        event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise yaml.composer.ComposerError(None, None, f"recursive alias: *{event.anchor} stands inside its own anchor &{event.anchor}", event.start_mark)  # type: ignore[arg-type]  # the C loader's Mark is the same shape
            return super().compose_node(parent, index)
        if event.anchor is None:
            return super().compose_node(parent, index)
        self._open.add(event.anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._open.discard(event.anchor)


class _Builder:
    """Node graph → Python values as `yaml.safe_load` gives them, recording the line of
    every key and item; duplicate keys are refused, merge keys (`<<`) applied."""

    def __init__(self) -> None:
        self.lines: dict[Loc, int] = {}
        self._nodes = 0
        self._loader = yaml.SafeLoader("")  # its constructors build scalars and tagged collections

    def _visit(self, node: yaml.Node, loc: Loc) -> None:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _Refused(node, loc, f"more than {_MAX_NODES:,} values once aliases are expanded")

    def value(self, node: yaml.Node, loc: Loc) -> Any:
        self._visit(node, loc)
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
            out: dict[Any, Any] = {}
            for key, (key_node, value_node) in self._pairs(node, loc).items():
                self.lines[loc + (key,)] = key_node.start_mark.line + 1
                out[key] = self.value(value_node, loc + (key,))
            return out
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            return [self.value(item, loc + (i,)) for i, item in enumerate(node.value)]
        return self._construct(node, loc)  # a scalar, or a collection with its own tag (!!set, !!omap)

    def _pairs(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        """The mapping's (key node, value node) by key: its own keys, each once, over the
        merged ones; of several mappings merged, the earlier wins (YAML 1.1 merge keys)."""
        own: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        merged: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        merge_line = 0
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                if merge_line:
                    raise _Refused(key_node, loc + ("<<",), f"duplicate key (first at line {merge_line}; merge several with `<<: [*a, *b]`)")
                merge_line = key_node.start_mark.line + 1
                for source in reversed(_merge_sources(value_node, loc)):
                    self._visit(source, loc)
                    merged.update(self._pairs(source, loc))
                continue
            key = self._key(key_node, loc)
            if key in own:
                raise _Refused(key_node, loc + (key,), f"duplicate key (first at line {own[key][0].start_mark.line + 1})")
            own[key] = (key_node, value_node)
        return {**merged, **own}

    def _key(self, node: yaml.Node, loc: Loc) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise _Refused(node, loc, f"a key must be a single value, not a {_kind(node)}")
        return self._construct(node, loc)

    def _construct(self, node: yaml.Node, loc: Loc) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            if "could not determine a constructor" in str(exc.problem):
                raise _Refused(node, loc, f"unsupported tag {_short(node.tag)}") from None
            raise _Refused(node, loc, str(exc.problem)) from None
        except Exception as exc:  # the safe constructors raise ValueError, KeyError… for text their tag cannot hold
            raise _Refused(node, loc, f"not a valid {_short(node.tag).removeprefix('!!')}: {exc}") from None


def _kind(node: yaml.Node) -> str:
    return {yaml.ScalarNode: "scalar", yaml.SequenceNode: "sequence", yaml.MappingNode: "mapping"}.get(type(node), "node")


def _merge_sources(node: yaml.Node, loc: Loc) -> list[yaml.MappingNode]:
    sources: list[yaml.Node] = node.value if isinstance(node, yaml.SequenceNode) else [node]
    mappings: list[yaml.MappingNode] = []
    for source in sources:
        if not isinstance(source, yaml.MappingNode):
            raise _Refused(source, loc + ("<<",), f"a merge takes a mapping or a list of mappings, not a {_kind(source)}")
        mappings.append(source)
    return mappings


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def load_located(path: Path, what: str) -> LocatedYaml:
    """Read and parse; a missing file, a YAML syntax error or a value YAML cannot give
    (a duplicate key, a list as a key, an unknown tag) is a UsageError with file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read {what} file: {exc}") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{where}: invalid YAML: {problem}") from None
    builder = _Builder()
    try:
        data = builder.value(node, ()) if node is not None else {}
    except _Refused as exc:
        raise UsageError(f"{path}:{exc.line}: {'.'.join(str(p) for p in exc.loc) or '(top level)'}: {exc.message}") from None
    return LocatedYaml(path, data, builder.lines)


class ItemError(ValueError):
    """A validator's error about one item below it (a duplicate, say): located at that
    item's line (`path` below the validated value), not at the value's key."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


_LIST_TYPES = frozenset({"tuple_type", "list_type", "set_type", "frozen_set_type"})


def _as_list(value: object) -> str:
    """A scalar as a one-item YAML flow list: `localhost:9092` → `[localhost:9092]`."""
    return yaml.safe_dump([value], default_flow_style=True, width=10_000).strip()


def format_errors(doc: LocatedYaml | None, exc: ValidationError, source: str = "") -> list[str]:
    """One `file:line: key.path: message` line per pydantic error."""
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, ItemError):
            loc = (*loc, *cause.path)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] in _LIST_TYPES and not isinstance(err.get("input"), (list, tuple, dict)):
            msg = f"expected a list: write {_as_list(err.get('input'))}"
        where = doc.where(loc) if doc is not None else source
        out.append(f"{where}: {dotted}: {msg}")
    return out


def validate(model: type[M], doc: LocatedYaml, context: dict[str, object] | None = None) -> M:
    """Validate a whole document; every error, with its line, in one UsageError. `context`
    reaches the model's validators (what they check against)."""
    if not isinstance(doc.data, dict):
        raise UsageError(f"{doc.path}:1: expected a mapping of keys at the top level")
    try:
        return model.model_validate(doc.data, context=context)
    except ValidationError as exc:
        raise UsageError("\n".join(format_errors(doc, exc))) from None
