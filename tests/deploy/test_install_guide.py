"""The install guide is tried: scripts/try-install-guide runs the commands of deploy/README.md's
marked blocks as written, as root, in a throwaway root (private mount and network
namespaces, /etc and /var overlays, empty /opt and /usr/local), and fails where an
operator would: a file the guide names that does not exist, a package that cannot
install, a unit that `systemd-analyze verify` rejects, a pre-flight that fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, REPO, tool

SCRIPT = REPO / "scripts" / "try-install-guide"
LEFT_ON_THE_HOST = [Path("/etc/egress"), Path("/opt/egress"), Path("/usr/local/bin/egress"), Path("/etc/systemd/system/egress-agent.service")]


def try_guide(geoip: dict[str, Path] | None = None, guide: Path | None = None) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.skip("the install guide is tried as root (it mounts in private namespaces)")
    for name, package in (("unshare", "util-linux"), ("systemd-analyze", "systemd"), ("runuser", "util-linux"), ("openssl", "openssl")):
        tool(name, package)
    args: list[str | Path] = [SCRIPT]
    if guide is not None:
        args += ["--guide", guide]
    if geoip is not None:
        args += ["--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]]
    # a new session: no terminal, so the guide's password prompt reads standard input
    return subprocess.run([str(a) for a in args], input="scrape-password\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900, start_new_session=True)  # fmt: skip


def test_the_install_guide_runs_as_written(geoip: dict[str, Path]) -> None:
    """Packages, the venv and pip install of this checkout, user and directories, config and policy, the pre-flight,
    the three units verified, the TLS certificate, hash and web config with a second pre-flight; nothing left on this host."""
    before = [path for path in LEFT_ON_THE_HOST if path.exists()]
    proc = try_guide(geoip)
    assert proc.returncode == 0, proc.stdout[-6000:]
    lines = proc.stdout.splitlines()
    for expected in (
        "+ apt-get install --no-install-recommends tshark tcpdump python3-venv",
        "+ /opt/egress/bin/pip install .",
        "+ systemd-sysusers egress.conf",
        "+ runuser -u egress -- egress check --config /etc/egress/egress.yaml",
        "host OK: GeoIP databases, capture interfaces, spool directory, metrics address",
        "systemctl enable egress-agent.service: systemd-analyze verify clean",
        "systemctl enable egress-rules.service: systemd-analyze verify clean",
        "systemctl enable egress-run.service: systemd-analyze verify clean",
        "host OK: GeoIP databases, capture interfaces, spool directory, metrics address and its web config",
        "systemctl restart egress-agent.service: systemd-analyze verify clean",
        f"try-install-guide: every marked command of {DEPLOY / 'README.md'} ran",
    ):
        assert expected in lines, expected
    assert [path for path in LEFT_ON_THE_HOST if path.exists()] == before


BROKEN = {
    "a file that does not exist": ("install -m 0644 deploy/systemd/egress-agnet.service /etc/systemd/system/\n",
                                   "cannot stat 'deploy/systemd/egress-agnet.service'"),
    "a package that cannot install": ("apt-get install --no-install-recommends tshark tcpdump python3-venvv\n",
                                      "Unable to locate package python3-venvv"),
    "a unit that verify rejects": ("ln -s /bin/true /usr/local/bin/egress\n"
                                   "sed s/ProtectHome=yes/ProtectHomes=yes/ deploy/systemd/egress-agent.service > /etc/systemd/system/egress-agent.service\n"
                                   "systemctl enable --now egress-agent.service\n", "ProtectHomes"),
    "a unit that is not installed": ("systemctl enable --now egress-agent.service\n", "egress-agent.service: not installed in /etc/systemd/system"),
}  # fmt: skip


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_guide_fails(case: str, tmp_path: Path) -> None:
    """Each fault in a marked block stops the try, with what the command said."""
    commands, said = BROKEN[case]
    guide = tmp_path / "README.md"
    guide.write_text(f"Some words.\n\n<!-- install-check -->\n```sh\n{commands}```\n")
    proc = try_guide(guide=guide)
    assert proc.returncode != 0
    assert said in proc.stdout, proc.stdout[-3000:]
    assert "every marked command" not in proc.stdout


def test_the_same_unit_unbroken_passes(tmp_path: Path) -> None:
    """The control for the cases above: the shipped unit, installed the same way, verifies clean."""
    guide = tmp_path / "README.md"
    guide.write_text("<!-- install-check -->\n```sh\nln -s /bin/true /usr/local/bin/egress\n"
                     "install -m 0644 deploy/systemd/egress-agent.service /etc/systemd/system/\nsystemctl enable --now egress-agent.service\n```\n")  # fmt: skip
    proc = try_guide(guide=guide)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "systemctl enable egress-agent.service: systemd-analyze verify clean" in proc.stdout.splitlines()


def test_a_guide_with_no_marked_block_fails(tmp_path: Path) -> None:
    """Unmarked commands would make the try vacuous."""
    guide = tmp_path / "README.md"
    shutil.copy(DEPLOY / "README.md", guide)
    guide.write_text(guide.read_text().replace("<!-- install-check -->", ""))
    proc = try_guide(guide=guide)
    assert proc.returncode == 1
    assert f"try-install-guide: {guide} has no block marked <!-- install-check -->" in proc.stdout
