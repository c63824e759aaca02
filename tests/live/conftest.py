"""Live-capture tests: egress capturing inside network namespaces joined by veth pairs.

They need root and `ip netns` (iproute2), dumpcap/tshark, and for one test tcpreplay
(`scripts/install-system-deps --test`). The modules skip when not root or when
network namespaces cannot be made; deselect them with `-m "not live"`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.live.lab import Lab, skip_reason


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: captures live in network namespaces (needs root and ip netns)")


@cache
def live_skip_reason() -> str | None:
    return skip_reason()


def live_marks() -> list[pytest.MarkDecorator]:
    reason = live_skip_reason()
    return [pytest.mark.live, pytest.mark.skipif(reason is not None, reason=reason or "")]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Namespaces and processes of one test, all removed afterwards, even on failure."""
    with Lab(tmp_path) as made:
        yield made


@pytest.fixture
def tcpreplay() -> str:
    path = shutil.which("tcpreplay")
    if path is None:
        pytest.skip("tcpreplay is not installed (scripts/install-system-deps --test)")
    return path
