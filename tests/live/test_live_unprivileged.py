"""Live capture as an unprivileged user holding only CAP_NET_RAW and CAP_NET_ADMIN.

The agent's systemd unit grants exactly those two capabilities to user `egress`.
Here the agent runs the way that unit would start it, without systemd:
tests/deploy/sandbox.py --exact-caps becomes user nobody with the unit's
capabilities and nothing else (no CAP_DAC_READ_SEARCH), then applies the unit's
syscall filter, address families and MemoryDenyWriteExecute. Everything egress
reads is copied to a directory nobody can read, since the checkout, pytest's
temporary directories and the interpreter (pyenv's, under /root) may be root's
only: a venv of Debian's python3 (same minor version) holding a copy of the
test venv's packages and of egress, the policy, the GeoIP databases and
sandbox.py itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import record_result, wait_for
from tests.live.conftest import live_marks
from tests.live.lab import NETSVC, POLICY, REPO, Egress, Lab, alert_key, camera_site, leftovers
from tests.live.test_live_capture import EXPECTED

pytestmark = live_marks()

AGENT_UNIT = REPO / "deploy" / "systemd" / "egress-agent.service"
SANDBOX = REPO / "tests" / "deploy" / "sandbox.py"  # copied: user nobody runs it
SYSTEM_PYTHON = "/usr/bin/python3"
NET_RAW, NET_ADMIN = 13, 12  # capability numbers (linux/capability.h)
NOBODY = 65534


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def _caps(status: dict[str, str], field: str) -> set[int]:
    mask = int(status[field], 16)
    return {bit for bit in range(64) if mask >> bit & 1}


def _uids(status: dict[str, str]) -> set[int]:
    return {int(u) for u in status["Uid"].split()}


class Portable:
    """egress, its Python environment, policy and GeoIP databases where user nobody can read them."""

    def __init__(self, root: Path, geoip: dict[str, Path]) -> None:
        self.root = root
        venv = root / "venv"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", venv], check=True, capture_output=True)  # noqa: S603
        site = Path(sysconfig.get_path("purelib"))
        target = venv / site.relative_to(sys.prefix)
        skip = shutil.ignore_patterns("__pycache__", "__editable__*", "egress-*", "pip", "pip-*")
        shutil.copytree(site, target, ignore=skip, dirs_exist_ok=True)
        shutil.copytree(REPO / "egress", target / "egress", ignore=shutil.ignore_patterns("__pycache__"))
        self.sandbox = Path(shutil.copy(SANDBOX, root / SANDBOX.name))
        self.unit = Path(shutil.copy(AGENT_UNIT, root / AGENT_UNIT.name))
        shutil.copy(POLICY, root / POLICY.name)
        shutil.copytree(POLICY.parent / "policies", root / "policies")  # the pack it includes
        self.policy = root / POLICY.name
        self.geoip = {kind: Path(shutil.copy(path, root / path.name)) for kind, path in geoip.items()}
        self.out = root / "out"
        self.out.mkdir()
        self.home = root / "home"
        self.home.mkdir()
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o777 if path in (self.out, self.home) else (0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644))
        self.command = [venv / "bin" / "python", "-m", "egress"]
        self.env = {"HOME": str(self.home), "PYTHONDONTWRITEBYTECODE": "1"}

    def unit_without_capabilities(self) -> Path:
        """The agent unit with AmbientCapabilities= and CapabilityBoundingSet= removed."""
        lines = self.unit.read_text().splitlines()
        unit = self.root / "no-caps.service"
        unit.write_text("\n".join(ln for ln in lines if not ln.startswith(("AmbientCapabilities=", "CapabilityBoundingSet="))) + "\n")
        return unit


@pytest.fixture(scope="module")
def portable(geoip: dict[str, Path]) -> Iterator[Portable]:
    if subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True).returncode != 0:  # noqa: S603
        pytest.skip("Debian's python3-seccomp is not installed (scripts/install-system-deps --test)")
    debian = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True).stdout  # noqa: S603
    if debian.strip() != str(sys.version_info[:2]):
        pytest.skip(f"{SYSTEM_PYTHON} is Python {debian.strip()}, the test venv {sys.version_info[:2]}: its packages cannot be reused")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    root = Path(tempfile.mkdtemp(prefix="egress-unpriv-"))
    try:
        yield Portable(root, geoip)
    finally:
        shutil.rmtree(root)


def _sandboxed(portable: Portable, unit: Path) -> list[str | Path]:
    return [SYSTEM_PYTHON, portable.sandbox, unit, "--exact-caps", "--", *portable.command]


def test_agent_captures_live_as_nobody_with_only_net_raw_and_net_admin(lab: Lab, portable: Portable) -> None:
    """As nobody with CAP_NET_RAW + CAP_NET_ADMIN only (and the unit's seccomp filters), live capture on the trunk
    raises the expected alerts; dumpcap runs as nobody with no capability beyond those two; SIGTERM exits 0 and leaves nothing."""
    site = camera_site(lab)
    agent = Egress(lab, site.router, [site.trunk], portable.geoip, policy=portable.policy, alerts_dir=portable.out,
                   command=_sandboxed(portable, portable.unit), extra_env=portable.env)  # fmt: skip
    agent.wait_ready()
    lab.assert_isolated()

    status = _status(agent.proc.pid)
    assert _uids(status) == {NOBODY}, status["Uid"]
    assert _caps(status, "CapEff") == _caps(status, "CapPrm") == {NET_RAW, NET_ADMIN}, status
    assert _caps(status, "CapBnd") == {NET_RAW, NET_ADMIN}, status
    assert status["Seccomp"].strip() == "2", "the unit's syscall filter is not applied"
    dumpcaps = [pid for pid, comm in site.router.pids(("dumpcap",))]
    assert dumpcaps, "no dumpcap running"
    for pid in dumpcaps:
        child = _status(pid)
        assert _uids(child) == {NOBODY} and _caps(child, "CapEff") <= {NET_RAW, NET_ADMIN}, child

    done = site.camera.run(sys.executable, NETSVC, "camera", site.resolver, timeout=60)
    assert done.returncode == 0, done.stderr
    live = lambda: {alert_key(a) for a in agent.alerts()}  # noqa: E731
    assert wait_for(lambda: EXPECTED <= live(), 30), f"alerts: {sorted(live())}\n{agent.log_text()}"
    metrics = agent.metrics()
    assert metrics[f'egress_packets_captured_total{{interface="{site.trunk}"}}'] > 0
    assert "permission" not in agent.log_text().lower()
    assert "drops_only_at_capture_end" not in agent.log_text(), "kernel drops are not read while capturing"

    rc, took = agent.terminate(timeout=10)
    assert rc == 0 and took < 10, f"exit {rc} after {took:.1f}s\n{agent.log_text()}"
    assert leftovers(site.router, site.trunk) == []
    record_result("security_live_capabilities_only", check="live capture as user nobody with only CAP_NET_RAW + CAP_NET_ADMIN, the agent unit's seccomp filters",
                  outcome=f"{len(agent.alerts())} alerts (all {len(EXPECTED)} expected), dumpcap ran as nobody, SIGTERM exit {rc} in {took:.1f} s, no process left")  # fmt: skip


def test_without_the_capabilities_capture_is_refused_in_one_line(lab: Lab, portable: Portable) -> None:
    """The same sandbox minus the two capabilities: exit 3 at start with one line naming the interface and the capabilities."""
    site = camera_site(lab)
    agent = Egress(lab, site.router, [site.trunk], portable.geoip, policy=portable.policy, alerts_dir=portable.out,
                   command=_sandboxed(portable, portable.unit_without_capabilities()), extra_env=portable.env)  # fmt: skip
    try:
        rc = agent.proc.wait(60)
    except subprocess.TimeoutExpired:
        agent.terminate()
        raise AssertionError(f"egress kept running without capabilities:\n{agent.log_text()}") from None
    errors = [line for line in agent.log_text().splitlines() if line.startswith("egress: ")]
    assert rc == 3, agent.log_text()
    assert errors == [f"egress: interface {site.trunk}: permission denied (the agent needs CAP_NET_RAW and CAP_NET_ADMIN)"], agent.log_text()
    assert leftovers(site.router, site.trunk) == []
    record_result("security_live_without_capabilities", check="the same without the two capabilities", outcome=f"exit {rc}: {errors[0]}")
