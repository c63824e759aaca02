#!/usr/bin/python3
"""Run a command under the identity and seccomp part of a systemd unit's sandbox,
without systemd.

    /usr/bin/python3 tests/deploy/sandbox.py UNIT [--exact-caps] -- COMMAND...

Started as root, it first becomes an unprivileged user (nobody: the unit's
User= need not exist here) holding only the unit's AmbientCapabilities= (and
CapabilityBoundingSet=), with setpriv, plus CAP_DAC_READ_SEARCH unless
--exact-caps: nobody must reach the test's Python and files (a venv may live
under /root), and that capability changes no code path (tshark and dumpcap look
at uids and gids). With --exact-caps the caller has put everything COMMAND
reads where nobody can read it. Then it applies what the unit's
SystemCallFilter=, SystemCallErrorNumber=, RestrictAddressFamilies= and
MemoryDenyWriteExecute= would, the way systemd 252 builds them (an allow list that always holds @default, denied calls failing with
the errno; socket() of another family failing with EAFNOSUPPORT; W+X mappings
and making memory executable failing with EPERM), then execs COMMAND, whose
children (tcpdump, tshark) inherit the filters. The groups are expanded by the
installed `systemd-analyze syscall-filter`, so they are systemd's own lists.

Needs Debian's python3-seccomp, hence /usr/bin/python3 rather than the venv.
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import subprocess
import sys

import seccomp


def directives(unit: str) -> list[tuple[str, str]]:
    """(key, value) of the [Service] section, in order (repeated keys kept)."""
    out, section = [], ""
    for raw in open(unit, encoding="utf-8"):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]" and "=" in line:
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def syscall_groups() -> dict[str, list[str]]:
    text = subprocess.run(["systemd-analyze", "--no-pager", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not raw.startswith(" ") and line.startswith("@"):
            current = groups.setdefault(line, [])
        elif current is not None and raw.startswith(" "):
            current.append(line)
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= expand(groups[name], groups) if name.startswith("@") else {name}
    return out


def allowed_syscalls(settings: list[tuple[str, str]]) -> set[str] | None:
    groups = syscall_groups()
    allowed: set[str] | None = None
    for key, value in settings:
        if key != "SystemCallFilter":
            continue
        deny = value.startswith("~")
        names = value.lstrip("~").split()
        if not names:
            allowed = None
            continue
        if allowed is None:
            if deny:
                raise SystemExit("sandbox.py: only allow-list filters are emulated")
            allowed = expand(["@default"], groups)
        allowed = allowed - expand(names, groups) if deny else allowed | expand(names, groups)
    return allowed


def apply(unit: str) -> None:
    settings = directives(unit)
    keys = dict(settings)
    err = getattr(errno, keys.get("SystemCallErrorNumber", "EPERM"))
    allowed = allowed_syscalls(settings)
    families = keys.get("RestrictAddressFamilies", "").split()
    mdwe = keys.get("MemoryDenyWriteExecute", "no") in ("yes", "true", "1")
    if families or mdwe:
        f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        if families:
            allowed_af = {getattr(socket, name) for name in families}
            for af in range(64):
                if af not in allowed_af:
                    f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, af))
        if mdwe:
            wx = mmap.PROT_WRITE | mmap.PROT_EXEC
            f.add_rule(seccomp.ERRNO(errno.EPERM), "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
            for name in ("mprotect", "pkey_mprotect"):
                f.add_rule(seccomp.ERRNO(errno.EPERM), name, seccomp.Arg(2, seccomp.MASKED_EQ, mmap.PROT_EXEC, mmap.PROT_EXEC))
            shm_exec = 0o100000
            f.add_rule(seccomp.ERRNO(errno.EPERM), "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, shm_exec, shm_exec))
        f.load()

    # The allow list last: it does not allow seccomp() itself.
    if allowed is not None:
        f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(err))
        for name in sorted(allowed):
            try:
                f.add_rule(seccomp.ALLOW, name)
            except (RuntimeError, ValueError, OSError):
                pass  # not a syscall of this architecture
        f.load()


def caps(value: str) -> str:
    """`CAP_NET_RAW CAP_NET_ADMIN` → setpriv's `-all,+net_raw,+net_admin`."""
    return ",".join(["-all"] + [f"+{c.lower().removeprefix('cap_')}" for c in value.split()])


def drop_to_user(unit: str, exact: bool, argv: list[str]) -> None:
    """As root: re-exec this script as nobody with the unit's capabilities only."""
    keys = dict(directives(unit))
    extra = "" if exact else " CAP_DAC_READ_SEARCH"
    ambient = caps(keys.get("AmbientCapabilities", "") + extra)
    bounding = caps(keys.get("CapabilityBoundingSet", "") + extra)
    nobody = "65534"
    os.execvp("setpriv", [
        "setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
        f"--inh-caps={ambient}", f"--ambient-caps={ambient}", f"--bounding-set={bounding}",
        sys.executable, *argv,
    ])  # fmt: skip


def main(argv: list[str]) -> None:
    options = argv[2 : argv.index("--")] if "--" in argv else None
    if len(argv) < 4 or options is None or set(options) - {"--exact-caps"}:
        raise SystemExit(__doc__)
    command = argv[argv.index("--") + 1 :]
    if not command:
        raise SystemExit(__doc__)
    if os.geteuid() == 0:
        drop_to_user(argv[1], "--exact-caps" in options, argv)
    apply(argv[1])
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
