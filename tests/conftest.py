"""Shared fixtures: the test GeoIP databases, the egress command, the real captures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "reliability-results"
PCAPS = ROOT / "pcaps"
POLICY = ROOT / "deploy" / "policy.example.yaml"
REAL = ROOT.parent / "shared" / "pcaps-real"


def geolite2_city() -> Path:
    """The real (2018) GeoLite2-City database that the PyPI package maxminddb-geolite2 carries."""
    import importlib.util

    spec = importlib.util.find_spec("_maxminddb_geolite2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("maxminddb-geolite2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "GeoLite2-City.mmdb"

sys.path.insert(0, str(PCAPS))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs the development Kafka broker started by dev/kafka/broker")
    config.addinivalue_line("markers", "cluster: needs the three-broker cluster started by dev/kafka/cluster")
    config.addinivalue_line("markers", "slow: a fault test of minutes (a real 60 s outage); `-m 'not slow'` leaves them out")


@pytest.fixture(scope="session")
def geoip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Test Country, City and ASN databases for the documentation ranges."""
    import make_geoip

    return make_geoip.build(tmp_path_factory.mktemp("geoip"))


def run_egress(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a child process, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "egress", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def host_env(geoip: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    """EGRESS_* variables standing in for a deployed host in the pre-flight of `egress check
    --config`: the test GeoIP databases, a spool under tmp_path, any free port."""
    return {
        "EGRESS_GEOIP__COUNTRY_DB": str(geoip["country"]), "EGRESS_GEOIP__ASN_DB": str(geoip["asn"]),
        "EGRESS_SPOOL__PATH": str(tmp_path / "spool"), "EGRESS_METRICS__LISTEN": "127.0.0.1:0",
    }  # fmt: skip


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def egress_cli():
    return run_egress


def real_capture(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared absent)")
    return path


def record_result(name: str, **figures: object) -> None:
    """Keep what a fault, fuzz or security test measured, for scripts/reliability-report."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"test": name, **figures}, indent=2) + "\n")


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.25) -> bool:
    """Poll until `predicate()` holds or `timeout` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`small_disk("64k")`: a tmpfs of that size (a real filesystem that fills up: ENOSPC),
    mounted in tmp_path and unmounted afterwards; skips the test where it cannot mount (not root)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True, check=False).returncode:
            pytest.skip("cannot mount a tmpfs (needs root)")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)
