"""Located YAML: the data PyYAML's safe loader gives, plus the line of every key and item,
so that config and policy errors name file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from egress.errors import UsageError
from egress.yamlfile import LocatedYaml, format_errors, load_located, validate

DOC = """\
# a comment first
site: london-hq
capture:
  interfaces:
    - eth1
    - eth2
  snaplen: 512
groups: [street, depot]
devices:
  - mac: "44:19:b6:12:34:56"
    name: &lamp vauxhall-lamp-01
  - {mac: "3c:ef:8c:00:00:21", name: *lamp}
20: a number key
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """The 1-based line of the `nth` line of `text` that holds `needle`."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth - 1]


def write(tmp_path: Path, text: str | bytes, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.fixture
def doc(tmp_path: Path) -> LocatedYaml:
    return load_located(write(tmp_path, DOC), "policy")


def test_data_is_what_the_safe_loader_gives(doc: LocatedYaml) -> None:
    """Values, types, non-string keys, anchors and aliases come out as `yaml.safe_load` has them."""
    assert doc.data == yaml.safe_load(DOC)


@pytest.mark.parametrize(("loc", "needle", "nth"), [
    (("site",), "site:", 1),
    (("capture",), "capture:", 1),
    (("capture", "interfaces", 0), "- eth1", 1),
    (("capture", "interfaces", 1), "- eth2", 1),
    (("capture", "snaplen"), "snaplen", 1),
    (("groups", 1), "groups:", 1),
    (("devices", 0, "name"), "name:", 1),
    (("devices", 1), "3c:ef:8c", 1),
    (("devices", 1, "mac"), "3c:ef:8c", 1),
    ((20,), "20: a number key", 1),
])  # fmt: skip
def test_every_key_and_item_has_its_line(doc: LocatedYaml, loc: tuple[str | int, ...], needle: str, nth: int) -> None:
    """Mapping keys, block and flow sequence items, inline mappings: each knows the line it stands on."""
    assert doc.line(loc) == line_of(DOC, needle, nth)


def test_a_path_the_file_does_not_hold_falls_back_to_its_deepest_known_part(doc: LocatedYaml) -> None:
    """A default or missing key is placed at its nearest parent, and at the document's start last."""
    assert doc.line(("capture", "snaplen", "extra")) == line_of(DOC, "snaplen")
    assert doc.line(("capture", "bpf")) == line_of(DOC, "capture:")
    assert doc.line(("kafka", "group_id")) == line_of(DOC, "site:")  # the document's first node
    assert doc.where(("capture", "bpf")) == f"{doc.path}:{line_of(DOC, 'capture:')}"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_an_empty_document_is_an_empty_mapping_located_nowhere(tmp_path: Path, text: str) -> None:
    """No content: the data is `{}` and a location is the file alone, without a line."""
    doc = load_located(write(tmp_path, text), "config")
    assert doc.data == {}
    assert doc.line(("site",)) is None and doc.where(("site",)) == str(doc.path)


def test_a_missing_file_is_a_usage_error_naming_it_and_its_role(tmp_path: Path) -> None:
    """A file that is not there: `PATH: policy file not found` (exit 2)."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(UsageError) as info:
        load_located(path, "policy")
    assert str(info.value) == f"{path}: policy file not found" and info.value.exit_code == 2


@pytest.mark.parametrize("make", [lambda tmp: write(tmp, b"site: \xff\xfe\n"), lambda tmp: tmp])
def test_an_unreadable_file_is_a_usage_error_naming_it(tmp_path: Path, make) -> None:
    """Bytes that are not UTF-8, or a directory, give `PATH: cannot read config file: ...`."""
    path = make(tmp_path)
    with pytest.raises(UsageError, match="cannot read config file") as info:
        load_located(path, "config")
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(("text", "bad_line"), [
    ("site: a\ncapture:\n\tsnaplen: 1\n", 3),
    ("site: a\ngroups: [a, b\nother: 1\n", 3),
    ("site: a\n  indented: b\n", 2),
    ('site: "unterminated\n', 2),
])  # fmt: skip
def test_a_yaml_syntax_error_names_file_and_line(tmp_path: Path, text: str, bad_line: int) -> None:
    """PyYAML's problem mark becomes `PATH:LINE: invalid YAML: problem` (the line where PyYAML found it)."""
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_located(path, "policy")
    assert str(info.value).startswith(f"{path}:{bad_line}: invalid YAML: ")


def refusal(tmp_path: Path, text: str) -> str:
    """The one-line UsageError that loading `text` gives, after its `PATH:`."""
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        load_located(path, "policy")
    return str(info.value).removeprefix(f"{path}:")


@pytest.mark.parametrize(("text", "error"), [
    ("? [a, b]\n: 1\n", "1: (top level): a key must be a single value, not a sequence"),
    ("site: a\nnested:\n  ? {a: 1}\n  : 1\n", "3: nested: a key must be a single value, not a mapping"),
    ("site: a\nx: !!python/name:os.system\n", "2: x: unsupported tag !!python/name:os.system"),
    ("x: !local 1\n", "1: x: unsupported tag !local"),
    ("a: &a [*a]\n", "1: invalid YAML: recursive alias: *a stands inside its own anchor &a"),
    ("a: &a\n  b:\n    - 1\n    - *a\n", "4: invalid YAML: recursive alias: *a stands inside its own anchor &a"),
    ("ports:\n  - 1\n  - !!int many\n", "3: ports.1: not a valid int: invalid literal for int() with base 10: 'many'"),
    ("since: 2024-02-30\n", "1: since: not a valid timestamp: day is out of range for month"),
    ("x: !!str [a]\n", "1: x: expected a scalar node, but found sequence"),
])  # fmt: skip
def test_yaml_the_loader_cannot_build_is_a_usage_error(tmp_path: Path, text: str, error: str) -> None:
    """A list or mapping as a key, an unknown tag, a recursive alias or text its tag cannot hold:
    one `PATH:LINE: key.path: message` line, no traceback."""
    assert refusal(tmp_path, text) == error


@pytest.mark.parametrize(("text", "error"), [
    ("default_verdict: alert\ndefault_verdict: allow\n", "2: default_verdict: duplicate key (first at line 1)"),
    ("groups:\n  - name: a\n    allow: []\n    name: b\n", "4: groups.0.name: duplicate key (first at line 2)"),
    ("capture: {snaplen: 1, snaplen: 2}\n", "1: capture.snaplen: duplicate key (first at line 1)"),
    ("1: a\n0x1: b\n", "2: 1: duplicate key (first at line 1)"),
])  # fmt: skip
def test_a_duplicate_key_is_refused_naming_both_lines(tmp_path: Path, text: str, error: str) -> None:
    """The same key twice in one mapping (as values: `1` and `0x1` are one key) is an error at
    the second, naming the first, instead of the last silently winning."""
    assert refusal(tmp_path, text) == error


MERGE = """\
groups:
  - &street
    name: street
    allow: [{name: ntp, ports: [udp/123]}]
    severity: low
  - <<: *street
    name: depot
  - <<: [{severity: high, name: x}, *street]
    extra: 1
"""


def test_merge_keys_are_applied_and_own_keys_win(tmp_path: Path) -> None:
    """`<<: *base` copies the keys of the mapping merged; the mapping's own keys override them,
    and of a list of mappings the earlier wins, as YAML 1.1 has it."""
    doc = load_located(write(tmp_path, MERGE), "policy")
    street = {"name": "street", "allow": [{"name": "ntp", "ports": ["udp/123"]}], "severity": "low"}
    assert doc.data["groups"] == [street, {**street, "name": "depot"}, {**street, "severity": "high", "name": "x", "extra": 1}]
    assert doc.data["groups"][:2] == yaml.safe_load(MERGE)["groups"][:2]


def test_a_merged_key_is_located_where_its_value_stands(tmp_path: Path) -> None:
    """A merged key has the line of the mapping it came from; a key the mapping overrides, its own."""
    doc = load_located(write(tmp_path, MERGE), "policy")
    assert doc.line(("groups", 1, "allow", 0, "ports")) == line_of(MERGE, "udp/123")
    assert doc.line(("groups", 1, "name")) == line_of(MERGE, "name: depot")
    assert doc.line(("groups", 2, "severity")) == line_of(MERGE, "severity: high")


@pytest.mark.parametrize(("text", "error"), [
    ("a: 1\n<<: 1\n", "2: <<: a merge takes a mapping or a list of mappings, not a scalar"),
    ("a: &a {x: 1}\nb:\n  <<: [*a, 2]\n", "3: b.<<: a merge takes a mapping or a list of mappings, not a scalar"),
    ("a: &a {x: 1}\nb:\n  <<: *a\n  <<: *a\n", "4: b.<<: duplicate key (first at line 3; merge several with `<<: [*a, *b]`)"),
])  # fmt: skip
def test_a_merge_of_what_is_not_a_mapping_is_refused(tmp_path: Path, text: str, error: str) -> None:
    """A merge key holding a scalar, or given twice in one mapping, is a located error."""
    assert refusal(tmp_path, text) == error


def test_aliases_that_expand_past_the_limit_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nested aliases ask for 9**4 values from five lines: refused past the limit (a million;
    here 1,000), not expanded until memory runs out."""
    monkeypatch.setattr("egress.yamlfile._MAX_NODES", 1000)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 5)]
    with pytest.raises(UsageError, match="more than 1,000 values once aliases are expanded"):
        load_located(write(tmp_path, "\n".join(lines) + "\n"), "policy")


# ---- errors against a model ----------------------------------------------------------------


def _positive(value: int) -> int:
    if value <= 0:
        raise ValueError("must be positive")
    return value


class Capture(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interfaces: list[str] = []
    snaplen: Annotated[int, AfterValidator(_positive)] | None = None
    ports: Annotated[int, AfterValidator(_positive)] | list[int] = 1


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    site: str
    capture: Capture = Capture()
    groups: list[str] = []

    @field_validator("site")
    @classmethod
    def _lower(cls, value: str) -> str:
        if value != value.lower():
            raise ValueError("must be lower case")
        return value

    @model_validator(mode="after")
    def _not_both(self) -> Doc:
        if self.site == "both" and self.groups:
            raise ValueError("site 'both' takes no groups")
        return self


BAD = "site: London\ncapture:\n  snaplen: -1\n  snaplne: 512\n  interfaces: [eth1, 7]\n"


def _errors(tmp_path: Path, text: str) -> tuple[LocatedYaml, ValidationError]:
    doc = load_located(write(tmp_path, text), "config")
    with pytest.raises(ValidationError) as info:
        Doc.model_validate(doc.data)
    return doc, info.value


def test_format_errors_gives_one_located_line_per_error(tmp_path: Path) -> None:
    """Each pydantic error becomes `file:line: dotted.key: message`, at the line of that key."""
    doc, exc = _errors(tmp_path, BAD)
    assert format_errors(doc, exc) == [
        f"{doc.path}:{line_of(BAD, 'site:')}: site: must be lower case",
        f"{doc.path}:{line_of(BAD, 'interfaces')}: capture.interfaces.1: Input should be a valid string",
        f"{doc.path}:{line_of(BAD, 'snaplen:')}: capture.snaplen: must be positive",
        f"{doc.path}:{line_of(BAD, 'snaplne')}: capture.snaplne: unknown key",
    ]


def test_validator_steps_are_not_part_of_the_key_path(tmp_path: Path) -> None:
    """pydantic's `function-after[...]` step inside a union is dropped: the key path stays the user's."""
    doc, exc = _errors(tmp_path, "site: depot\ncapture:\n  ports: -1\n")
    assert any("function-after" in str(err["loc"]) for err in exc.errors())
    assert f"{doc.path}:3: capture.ports: must be positive" in format_errors(doc, exc)


def test_format_errors_without_a_document_names_the_source(tmp_path: Path) -> None:
    """Values that came from no file (the command line) are placed by the caller's source name."""
    _, exc = _errors(tmp_path, BAD)
    lines = format_errors(None, exc, source="command line")
    assert lines[0] == "command line: site: must be lower case" and len(lines) == len(exc.errors())


def test_a_whole_document_error_is_at_top_level(tmp_path: Path) -> None:
    """A check on the whole model has no key: `(top level)`, at the document's first line."""
    doc, exc = _errors(tmp_path, "site: both\ngroups: [a]\n")
    assert format_errors(doc, exc) == [f"{doc.path}:1: (top level): site 'both' takes no groups"]


def test_validate_returns_the_model_or_every_error_in_one_usage_error(tmp_path: Path) -> None:
    """A good document gives the frozen model; a bad one one UsageError holding all its lines."""
    good = validate(Doc, load_located(write(tmp_path, "site: depot\ngroups: [a]\n", "good.yaml"), "config"))
    assert (good.site, good.groups) == ("depot", ["a"])
    doc, exc = _errors(tmp_path, BAD)
    with pytest.raises(UsageError) as info:
        validate(Doc, doc)
    assert str(info.value).splitlines() == format_errors(doc, exc)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "~\n"])
def test_validate_refuses_a_document_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    """A list, a scalar or null at the top: `PATH:1: expected a mapping of keys at the top level`."""
    doc = load_located(write(tmp_path, text), "policy")
    with pytest.raises(UsageError) as info:
        validate(Doc, doc)
    assert str(info.value) == f"{doc.path}:1: expected a mapping of keys at the top level"
