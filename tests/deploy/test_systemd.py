"""deploy/systemd: both units pass `systemd-analyze verify`, the agent's exposure stays
at most 3.0, the sandbox lets egress do its work (seccomp filters applied as
systemd would), the notify protocol the units rely on works, and sysusers.d and
tmpfiles.d make the user and directories (in a temporary root)."""

from __future__ import annotations

import errno
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PCAPS, POLICY, ndjson
from tests.deploy.conftest import DEPLOY, EGRESS, SANDBOX, Processes, egress_env, free_port, scrape, tool, wait_for

UNITS = DEPLOY / "systemd"
AGENT, RULES, RUN = UNITS / "egress-agent.service", UNITS / "egress-rules.service", UNITS / "egress-run.service"
MAX_AGENT_EXPOSURE = 3.0


def directives(unit: Path) -> dict[str, list[str]]:
    """[Service] and [Unit] settings, every value of a repeated key in order."""
    out: dict[str, list[str]] = {}
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line and line[0] not in "#;[" and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def local_copy(unit: Path, directory: Path) -> Path:
    """The unit with ExecStart= pointing at this checkout's egress: verify wants the binary to exist."""
    text = unit.read_text().replace("ExecStart=/usr/local/bin/egress ", f"ExecStart={EGRESS} ")
    assert f"ExecStart={EGRESS} " in text
    copy = directory / unit.name
    copy.write_text(text)
    return copy


def systemd_analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("systemd-analyze", "systemd"), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("unit", [AGENT, RULES, RUN], ids=lambda u: u.name)
def test_units_pass_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    """systemd-analyze verify finds nothing to say about the unit."""
    proc = systemd_analyze("verify", local_copy(unit, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == ""


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The verify check is not vacuous: a misspelt directive in a copy is reported."""
    copy = local_copy(AGENT, tmp_path)
    copy.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    proc = systemd_analyze("verify", copy)
    assert "ProtectHomes" in proc.stderr


def exposure(unit: Path) -> float:
    proc = systemd_analyze("security", "--offline=true", "--no-pager", unit)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return float(found.group(1))


def test_agent_exposure_is_at_most_3(tmp_path: Path) -> None:
    """systemd-analyze security rates the agent unit's exposure 3.0 or lower (it has raw sockets), the rules unit
    lower still, and the one-box unit (the agent's sandbox) no higher than the agent."""
    agent, rules, one_box = (exposure(local_copy(u, tmp_path)) for u in (AGENT, RULES, RUN))
    print(f"exposure: egress-agent.service {agent}, egress-rules.service {rules}, egress-run.service {one_box}")
    assert agent <= MAX_AGENT_EXPOSURE
    assert rules <= agent
    assert one_box <= agent


def test_units_run_egress_as_a_notify_service_with_a_watchdog() -> None:
    """Both units: user egress, Type=notify, NotifyAccess=main, WatchdogSec=30, Restart=on-failure, the config in /etc/egress."""
    for unit, command in ((AGENT, "agent"), (RULES, "rules"), (RUN, "run")):
        d = directives(unit)
        extra = " --alerts-out /var/lib/egress/alerts.ndjson" if unit == RUN else ""
        assert d["ExecStart"] == [f"/usr/local/bin/egress {command} --config /etc/egress/egress.yaml{extra}"]
        for key, value in {"User": "egress", "Group": "egress", "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30",
                           "Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                           "PrivateTmp": "yes", "PrivateDevices": "yes", "MemoryDenyWriteExecute": "yes", "UMask": "0077",
                           "SystemCallArchitectures": "native"}.items():  # fmt: skip
            assert d[key] == [value], (unit.name, key)
        assert d["SystemCallFilter"][0] == "@system-service"


def test_only_the_agent_has_capabilities_and_packet_sockets() -> None:
    """The agent and the one-box unit get exactly CAP_NET_RAW and CAP_NET_ADMIN and AF_PACKET; the rules consumer no capability
    and Internet sockets only."""
    agent, rules, one_box = directives(AGENT), directives(RULES), directives(RUN)
    for capturing in (agent, one_box):
        assert capturing["AmbientCapabilities"] == capturing["CapabilityBoundingSet"] == ["CAP_NET_RAW CAP_NET_ADMIN"]
        assert capturing["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"]
        assert capturing["StateDirectory"] == ["egress"]
    assert rules["CapabilityBoundingSet"] == [""] and rules["AmbientCapabilities"] == [""]
    assert rules["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert rules["Environment"][0] == "EGRESS_METRICS__LISTEN=127.0.0.1:9109"


def test_sysusers_and_tmpfiles_make_the_user_and_directories(tmp_path: Path) -> None:
    """systemd-sysusers makes the system user egress and systemd-tmpfiles its directories (in a temporary root)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    made = subprocess.run([tool("systemd-sysusers", "systemd"), f"--root={root}", str(UNITS / "sysusers.d" / "egress.conf")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    user = next(line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines() if line.startswith("egress:"))
    assert int(user[2]) < 1000 and user[5] == "/var/lib/egress" and user[6] == "/usr/sbin/nologin"
    made = subprocess.run([tool("systemd-tmpfiles", "systemd"), f"--root={root}", "--create", str(UNITS / "tmpfiles.d" / "egress.conf")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    for path, owner, mode in (("etc/egress", 0, 0o750), ("var/lib/egress", int(user[2]), 0o750), ("var/lib/egress/spool", int(user[2]), 0o750)):
        st = (root / path).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (owner, int(user[3]), mode), path


def _seccomp_python() -> str:
    python = "/usr/bin/python3"
    if subprocess.run([python, "-c", "import seccomp"], capture_output=True).returncode != 0:  # noqa: S603
        pytest.skip("Debian's python3-seccomp is not installed (scripts/install-system-deps --test)")
    return python


@pytest.fixture
def readable_by_all(geoip: dict[str, Path]) -> Iterator[Path]:
    """The capture, policy and GeoIP files in a directory that user nobody can read (pytest's are root's only)."""
    directory = Path(tempfile.mkdtemp(prefix="egress-sandbox-"))
    try:
        directory.chmod(0o755)
        for source in (PCAPS / "street-cctv-vlan20.pcap", POLICY, geoip["country"], geoip["asn"]):
            shutil.copy(source, directory / source.name)
            (directory / source.name).chmod(0o644)
        packs = Path(shutil.copytree(POLICY.parent / "policies", directory / "policies"))  # the pack the policy includes
        for path in (packs, *packs.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (directory / "home").mkdir(mode=0o777)
        (directory / "home").chmod(0o777)
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.mark.parametrize("unit", [AGENT, RULES, RUN], ids=lambda u: u.name)
def test_egress_works_inside_the_units_sandbox(unit: Path, geoip: dict[str, Path], readable_by_all: Path) -> None:
    """Unprivileged, with the unit's capabilities, syscall filter, address families and MemoryDenyWriteExecute,
    `egress run` (Python, tcpdump, tshark) gives the alerts of an unconfined `egress analyze`."""
    python = _seccomp_python()
    tool("setpriv", "util-linux")
    d = readable_by_all
    capture = d / "street-cctv-vlan20.pcap"
    geo = ["--policy", str(d / POLICY.name), "--geoip-country", str(d / geoip["country"].name), "--geoip-asn", str(d / geoip["asn"].name)]
    expected = subprocess.run([str(EGRESS), "analyze", str(capture), *geo, "--format", "json"],
                              capture_output=True, text=True, env=egress_env(), timeout=120)  # fmt: skip
    assert expected.returncode == 0, expected.stderr
    sandboxed = subprocess.run(
        [python, str(SANDBOX), str(unit), "--", str(EGRESS), "run", "--read", str(capture), *geo],
        capture_output=True, text=True, timeout=120, cwd=d / "home",
        env=egress_env(HOME=str(d / "home"), EGRESS_METRICS__LISTEN="127.0.0.1:0"),
    )  # fmt: skip
    assert sandboxed.returncode == 0, sandboxed.stderr
    assert "capture_warning" not in sandboxed.stderr, sandboxed.stderr
    key = lambda a: a["event"]["id"]  # noqa: E731
    alerts = sorted(ndjson(sandboxed.stdout), key=key)
    assert alerts and alerts == sorted(ndjson(expected.stdout), key=key)


def test_sandbox_filters_are_really_applied(tmp_path: Path) -> None:
    """The emulation is not vacuous: inside the rules unit's sandbox, packet sockets, chown and W+X memory are refused."""
    python = _seccomp_python()
    probe = (
        "import mmap, os, socket\n"
        "def refused(f):\n"
        "    try: f()\n"
        "    except OSError as e: return e.errno\n"
        "print(refused(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),"
        " refused(lambda: os.chown('.', os.getuid(), os.getgid())),"
        " refused(lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)),"
        " os.getuid())\n"
    )
    proc = subprocess.run([python, str(SANDBOX), str(RULES), "--", python, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(errno.EAFNOSUPPORT), str(errno.EPERM), str(errno.EPERM), "65534"]


def test_egress_speaks_the_notify_protocol_the_units_expect(geoip: dict[str, Path], processes: Processes, tmp_path: Path) -> None:
    """Under Type=notify with a watchdog: READY=1 once up, WATCHDOG=1 at least every half WatchdogSec, STOPPING=1 on SIGTERM."""
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(30)
    port = free_port()
    watchdog_s = 2
    run = processes.start("egress-run", [EGRESS, "run", "--read", PCAPS / "street-cctv-vlan20.pcap", "--linger", "--policy", POLICY,
                                          "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"]],
                          env=egress_env(NOTIFY_SOCKET=str(notify), WATCHDOG_USEC=str(watchdog_s * 1_000_000),
                                         EGRESS_METRICS__LISTEN=f"127.0.0.1:{port}"))  # fmt: skip
    try:
        messages = [sock.recv(4096).decode() for _ in range(4)]
        assert messages[0] == "READY=1"
        assert messages[1:] == ["WATCHDOG=1"] * 3
        wait_for("metrics", lambda: scrape(port, "egress_alerts_total{"), procs=[run], logs=processes.logs)
        run.send_signal(signal.SIGTERM)
        while (message := sock.recv(4096).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1"
        assert run.wait(timeout=30) == 0
    finally:
        sock.close()


def test_the_readme_states_the_measured_exposure(tmp_path: Path) -> None:
    """deploy/README.md quotes the agent's exposure as systemd-analyze measures it now."""
    measured = exposure(local_copy(AGENT, tmp_path))
    readme = (DEPLOY / "README.md").read_text()
    assert f"egress-agent.service: {measured}" in readme



@pytest.mark.parametrize("unit", [AGENT, RULES, RUN], ids=lambda u: u.name)
def test_units_name_files_that_exist(unit: Path) -> None:
    """Documentation= points at the READMEs as deploy/README.md installs them (/usr/local/share/doc/egress/ is
    this checkout), and every deploy/ file a unit's comments name is here."""
    docs = directives(unit)["Documentation"][0].split()
    assert docs and all(d.startswith("file:///usr/local/share/doc/egress/") for d in docs)
    for doc in docs:
        assert (DEPLOY.parent / doc.removeprefix("file:///usr/local/share/doc/egress/")).is_file(), doc
    named = re.findall(r"deploy/[\w./-]+\w", unit.read_text())
    assert named
    for path in named:
        assert (DEPLOY.parent / path).exists(), f"{unit.name} names {path}"
