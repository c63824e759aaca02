#!/usr/bin/env python3
"""Run a command; report its wall time and the peak RSS of every process in its tree.

    python bench/procwatch.py [-i 0.05] [--json] [--timeout S] -- CMD [ARG ...]

Every ``interval`` seconds (default 50 ms) the command and all its descendants
are found (via /proc/<pid>/task/<tid>/children, or a /proc scan where that file
is missing) and /proc/<pid>/status is read for each:

* VmHWM -- the kernel's own high-water mark of that process's RSS, so a spike
  between two samples is still counted, as long as the process is sampled at
  least once before it exits;
* VmRSS -- the current RSS, summed over the tree to get the total at that
  instant; ``peak_total_rss`` is the largest such sum seen (this one *can* miss
  a spike between samples).

Per-process maxima are keyed by (pid, comm), so a forked child that exec()s
another program is counted as two entries. ``peak_rss_by_proc`` reports, per
command name (python3.11 etc. folded into "python"), the largest peak of any
process with that name -- not the sum of several processes of that name.

Processes that live less than one interval may be missed; if the top process
itself was never sampled its ru_maxrss from wait4() is used instead (an upper
bound: it can include the pre-exec copy of the calling Python and the peaks of
descendants). ``cpu_s`` is user+sys time of the command and every descendant
it waited for (wait4 rusage) -- less sensitive than wall time to other load on
the machine.

    from procwatch import measure
    r = measure(["tshark", "-r", "x.pcap"])        # stdout -> /dev/null
    r.wall_s, r.peak_rss_by_proc["tshark"], r.peak_total_rss, r.returncode
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from subprocess import DEVNULL

__all__ = ["measure", "Result", "DEVNULL"]

_HAS_CHILDREN_FILE = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


@dataclass
class ProcPeak:
    pid: int
    comm: str
    peak_hwm: int = 0          # bytes, max VmHWM seen
    peak_rss: int = 0          # bytes, max VmRSS seen
    samples: int = 0


@dataclass
class Result:
    wall_s: float
    peak_rss_by_proc: dict[str, int]     # name -> bytes (max over processes of that name)
    peak_total_rss: int                  # bytes, max over samples of sum(VmRSS) of the tree
    returncode: int
    timed_out: bool = False
    samples: int = 0
    cpu_s: float = 0.0                   # user+sys of the command and its reaped descendants
    processes: list[ProcPeak] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def normalize_name(comm: str) -> str:
    if re.fullmatch(r"python[0-9.]*", comm):
        return "python"
    return comm


def _children_of(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def _tree_by_scan(root: int) -> list[int]:
    parent: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                st = f.read()
        except OSError:
            continue
        # comm may contain spaces/parens: ppid is the 2nd field after the last ')'
        ppid = int(st[st.rindex(b")") + 2:].split()[1])
        parent.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parent.get(p, ()))
    return out


def process_tree(root: int) -> list[int]:
    """root and all its live descendants."""
    if not _HAS_CHILDREN_FILE:
        return _tree_by_scan(root)
    out, todo, seen = [], [root], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
        todo.extend(_children_of(p))
    return out


def read_status(pid: int) -> tuple[str, int, int] | None:
    """(comm, VmHWM bytes, VmRSS bytes), or None for exited/zombie/kernel processes."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read()
    except OSError:
        return None
    name, hwm, rss = "", -1, -1
    for line in text.split(b"\n"):
        if line.startswith(b"Name:"):
            name = line[5:].strip().decode(errors="replace")
        elif line.startswith(b"VmHWM:"):
            hwm = int(line.split()[1]) * 1024
        elif line.startswith(b"VmRSS:"):
            rss = int(line.split()[1]) * 1024
            break
    if hwm < 0 or rss < 0:
        return None
    return name, hwm, rss


def measure(argv, stdout=DEVNULL, stderr=None, *, interval: float = 0.05,
            timeout: float | None = None, cwd=None, env=None) -> Result:
    """Run argv to completion, sampling its process tree every `interval` seconds.

    stdout/stderr are passed to subprocess.Popen (default: stdout to /dev/null,
    stderr inherited). On `timeout` the command's process group is killed
    (it runs in its own session) and returncode is -SIGKILL, timed_out=True.
    """
    peaks: dict[tuple[int, str], ProcPeak] = {}
    peak_total = 0
    samples = 0
    done = threading.Event()
    end: dict = {}

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=DEVNULL, stdout=stdout, stderr=stderr, cwd=cwd,
                            env=env, start_new_session=True)
    root = proc.pid

    def waiter():
        _, status, ru = os.wait4(root, 0)
        end["t"] = time.perf_counter()
        end["status"] = status
        end["ru"] = ru
        done.set()

    th = threading.Thread(target=waiter, daemon=True)
    th.start()
    deadline = None if timeout is None else t0 + timeout
    timed_out = False
    while not done.is_set():
        total = 0
        for pid in process_tree(root):
            st = read_status(pid)
            if st is None:
                continue
            comm, hwm, rss = st
            pk = peaks.get((pid, comm))
            if pk is None:
                pk = peaks[(pid, comm)] = ProcPeak(pid, comm)
            pk.peak_hwm = max(pk.peak_hwm, hwm, rss)
            pk.peak_rss = max(pk.peak_rss, rss)
            pk.samples += 1
            total += rss
        samples += 1
        peak_total = max(peak_total, total)
        if deadline is not None and time.perf_counter() > deadline and not timed_out:
            timed_out = True
            try:
                os.killpg(root, signal.SIGKILL)     # the group we created for this command
            except ProcessLookupError:
                pass
        done.wait(interval)
    th.join()
    # Popen must not try to reap the pid we already reaped.
    proc.returncode = os.waitstatus_to_exitcode(end["status"])
    wall = end["t"] - t0

    if not any(pk.pid == root for pk in peaks.values()):
        name = os.path.basename(str(argv[0]))
        ru_bytes = end["ru"].ru_maxrss * 1024
        peaks[(root, name)] = ProcPeak(root, name, ru_bytes, ru_bytes, 0)
        peak_total = max(peak_total, ru_bytes)

    by_name: dict[str, int] = {}
    for pk in peaks.values():
        n = normalize_name(pk.comm)
        by_name[n] = max(by_name.get(n, 0), pk.peak_hwm)
    ru = end["ru"]
    return Result(wall, dict(sorted(by_name.items(), key=lambda kv: -kv[1])), peak_total,
                  proc.returncode, timed_out, samples, ru.ru_utime + ru.ru_stime,
                  sorted(peaks.values(), key=lambda p: (p.pid, p.comm)))


def mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Wall time and peak RSS of a command's process tree.")
    ap.add_argument("-i", "--interval", type=float, default=0.05, help="sampling period, s")
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--show-stdout", action="store_true", help="do not send stdout to /dev/null")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command given")
    r = measure(cmd, stdout=None if a.show_stdout else DEVNULL, interval=a.interval,
                timeout=a.timeout)
    if a.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    print(f"wall {r.wall_s:.3f} s, cpu {r.cpu_s:.3f} s, exit {r.returncode}"
          f"{' (timeout)' if r.timed_out else ''}, {r.samples} samples")
    print("peak RSS by process name (MiB): " + ", ".join(
        f"{k} {mib(v)}" for k, v in r.peak_rss_by_proc.items()))
    print(f"peak total RSS of the tree at one instant: {mib(r.peak_total_rss)} MiB")
    for p in r.processes:
        print(f"  pid {p.pid:>7} {p.comm:<16} VmHWM {mib(p.peak_hwm):>8} MiB  "
              f"max VmRSS {mib(p.peak_rss):>8} MiB  ({p.samples} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
