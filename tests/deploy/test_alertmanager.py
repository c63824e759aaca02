"""deploy/alertmanager: the example config is valid and routes by severity, grouped by site and group."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, tool

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool", "prometheus-alertmanager"), *args], capture_output=True, text=True, timeout=60)


def test_config_is_valid() -> None:
    """amtool check-config accepts alertmanager.yml."""
    proc = amtool("check-config", str(CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(("severity", "receiver"), [("critical", "pager"), ("high", "soc-webhook"), ("medium", "soc-webhook"), ("low", "soc-webhook")])
def test_routes_by_severity(severity: str, receiver: str) -> None:
    """Critical alerts go to the pager, every other severity to the SOC webhook."""
    proc = amtool("config", "routes", "test", f"--config.file={CONFIG}", f"severity={severity}",
                  "alertname=EgressDeniedDestination", "site=london-hq", "group=street-cctv")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == receiver


def test_groups_by_site_and_group() -> None:
    """Notifications are grouped by site and policy group, on every route."""
    route = yaml.safe_load(CONFIG.read_text())["route"]
    assert route["group_by"] == ["site", "group"]
    assert all("group_by" not in r for r in route.get("routes", []))  # inherited
