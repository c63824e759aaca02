"""deploy/egress.example.yaml: what deploy/README.md installs as /etc/egress/egress.yaml names
every config key, each at its built-in default, and `egress check` accepts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from egress.config import Config, load_config
from tests.conftest import POLICY, host_env, run_egress
from tests.deploy.conftest import DEPLOY

EXAMPLE = DEPLOY / "egress.example.yaml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        out.add(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out |= _keys(field.annotation, f"{prefix}{name}.")
    return out


def _doc_keys(doc: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, value in doc.items():
        out.add(prefix + name)
        if isinstance(value, dict):
            out |= _doc_keys(value, f"{prefix}{name}.")
    return out


def test_the_example_names_every_key_at_its_default() -> None:
    assert _doc_keys(yaml.safe_load(EXAMPLE.read_text())) == _keys(Config)
    assert load_config(EXAMPLE, environ={}) == Config()


def test_check_accepts_the_example(geoip: dict[str, Path], tmp_path: Path) -> None:
    """Valid as it stands; what its pre-flight needs of a host (GeoIP files, a spool
    directory, a free port) is given here by variables."""
    proc = run_egress("check", "--config", EXAMPLE, "--policy", POLICY, env=host_env(geoip, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"config OK: {EXAMPLE}")


def test_the_install_guide_installs_the_example_and_the_units() -> None:
    """Every deploy/ file the guide's commands install exists."""
    guide = (DEPLOY / "README.md").read_text()
    assert "deploy/egress.example.yaml /etc/egress/egress.yaml" in guide
    for name in ("egress-agent.service", "egress-rules.service", "egress-run.service"):
        assert f"deploy/systemd/{name}" in guide
