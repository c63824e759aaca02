#!/usr/bin/env python3
"""Live capture under load: replay a camera-VLAN capture into a veth that
`egress run --interface` captures, at increasing rates, or for a long soak.

    sudo /tmp/venv/bin/python bench/replay.py [--packets 1000000] [--rates 20000,40000,80000,120000]
                                              [--topspeed] [--idle-timeout 20]
    sudo /tmp/venv/bin/python bench/replay.py --soak [SECONDS] [--soak-rate 40000] [--sample 5]
                                              [--chunk-packets N]

Two network namespaces, `egb-<pid>-gen` and `egb-<pid>-cap`, joined by one veth
pair and by nothing else: no addresses, no routes, no forwarding, so no replayed
packet can leave them (checked before any packet is sent). tcpreplay runs in
`gen` onto its end of the pair; egress runs in `cap` and captures the other end.
The capture comes from make_camera_capture.py (bench/out/, reused like
analyze.py does); every frame carries an 802.1Q tag, so the kernel hands the tag
to dumpcap out of band, as on a real trunk.

Rate sweep, per rate: tcpreplay --pps=RATE (once through the file, preloaded
with -K); then wait until egress has dissected everything (its packet counter
is still for 3 scrapes) and the flows have left on the idle timeout; then read:

  sent       tcpreplay's "Successful packets" (and "Failed packets")
  expected   packets the built-in filter passes, once per replay (from the offline run)
  captured   egress_packets_captured_total{interface}
  drops      lost = expected - captured; egress_packets_dropped_total (from /metrics,
             before exit: the ring drops egress reads every second from dumpcap's
             socket, PACKET_STATISTICS); kernel TX drops of the sending veth and RX
             drops of the capturing veth (`ip -s link`).
  flows      egress_flows_exported_total and the egress verdicts (denied+allowed+
             unexpected) vs `egress analyze --flows-out` of the same file: all flows
             and flows with direction outbound (a non-local responder)

The offline run uses the same timeouts in capture time: an idle timeout of T s
live at R packets/s is T*R/r s of the file's time (r: the file's own rate, 8,000
packets/s), so both sides cut flows at the same gaps. The active timeout is one
day on both sides. Then SIGTERM: egress must exit 0; its `run_done` says how many
flows it evaluated in all (more than the exported count means flows waited for the
SIGTERM flush). The highest rate with zero drops of every kind is printed at the end.

Soak: tcpreplay --loop=0 at --soak-rate for SECONDS (default 600), while the RSS
(VmRSS) of egress, dumpcap and every tshark (each process name's sum, and its
largest single process) is sampled every --sample seconds; prints min/max/first/
last per name and the distinct tshark pids seen (tshark is recycled every
capture.chunk_packets packets that pass the filter: 100,000 by default, about 1 %
of the replayed packets). At the end: SIGTERM, exit code and time to exit, and a
check that no dumpcap/tshark outlives egress (its namespace and pgrep -f on the
interface name).

This is a benchmark, not a test: it prints figures and asserts nothing. Needs
root, iproute2, tcpreplay, dumpcap/tshark. Output: bench/out/replay-*.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

from analyze import ensure_capture, find_egress, geoip_args  # noqa: E402

POLICY = REPO / "deploy" / "policy.example.yaml"
EGRESS_VERDICTS = ("denied", "allowed", "unexpected")


# --------------------------------------------------------------------------- namespaces

def sh(argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {res.returncode}: {res.stderr.strip()}")
    return res


class Lab:
    """gen ─veth─ cap, nothing else. Never touches the root namespace's addresses or routes."""

    def __init__(self) -> None:
        self.tag = f"{os.getpid() % 100000}"
        self.gen, self.cap = f"egb-{self.tag}-gen", f"egb-{self.tag}-cap"
        self.out_if, self.cap_if = f"rpo{self.tag}", f"rpc{self.tag}"
        self.made: list[str] = []

    def __enter__(self) -> Lab:
        for ns in (self.gen, self.cap):
            sh(["ip", "netns", "add", ns])
            self.made.append(ns)
            self.exec(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh(["ip", "-n", self.gen, "link", "add", self.out_if, "mtu", "9000", "type", "veth",
            "peer", "name", self.cap_if, "mtu", "9000", "netns", self.cap])
        sh(["ip", "-n", self.gen, "link", "set", self.out_if, "up"])
        sh(["ip", "-n", self.cap, "link", "set", self.cap_if, "up"])
        self.check_isolated()
        return self

    def check_isolated(self) -> None:
        root = [link["ifname"] for link in json.loads(sh(["ip", "-j", "link"]).stdout)]
        if any(self.tag in name and name.startswith("rp") for name in root):
            raise SystemExit("refusing to run: a bench interface is in the root namespace")
        for ns in (self.gen, self.cap):
            for fam in ("-4", "-6"):
                routes = json.loads(sh(["ip", "-n", ns, fam, "-j", "route", "show", "table", "all"]).stdout or "[]")
                bad = [r for r in routes if r.get("dev", "lo") != "lo"]
                if bad:
                    raise SystemExit(f"refusing to run: {ns} has routes off lo: {bad}")
            if sh(["ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() != "0":
                raise SystemExit(f"refusing to run: {ns} forwards")

    def exec(self, ns: str, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return sh(["ip", "netns", "exec", ns, *argv], **kw)

    def popen(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL, **kw)

    def pids(self, ns: str, comms: tuple[str, ...]) -> list[tuple[int, str]]:
        inode = os.stat(f"/run/netns/{ns}").st_ino
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                        comm = Path(f"/proc/{entry}/comm").read_text().strip()
                        if comm in comms:
                            out.append((int(entry), comm))
                except OSError:
                    pass
        return out

    def __exit__(self, *exc: object) -> None:
        for ns in self.made:
            try:
                for pid, _ in self.pids(ns, ("egress", "dumpcap", "tshark", "tcpreplay", "python", "python3")):
                    os.kill(pid, signal.SIGKILL)  # only ever processes this script started in its namespaces
            except OSError:
                pass
            sh(["ip", "netns", "del", ns], check=False)


def link_stats(lab: Lab, ns: str, ifname: str) -> dict[str, int]:
    link = json.loads(sh(["ip", "-n", ns, "-s", "-j", "link", "show", ifname]).stdout)[0]
    s = link["stats64"]
    return {"rx_packets": s["rx"]["packets"], "rx_dropped": s["rx"]["dropped"],
            "tx_packets": s["tx"]["packets"], "tx_dropped": s["tx"]["dropped"]}


# --------------------------------------------------------------------------- egress

class Agent:
    def __init__(self, lab: Lab, egress: str, geo: list[str], env_extra: dict[str, str], name: str) -> None:
        self.lab = lab
        self.log_path = OUT / f"replay-{name}.log"
        self.alerts_path = OUT / f"replay-{name}.alerts.ndjson"
        self.alerts_path.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")}
        env.update({"EGRESS_METRICS__LISTEN": "127.0.0.1:0"}, **env_extra)
        self._log = self.log_path.open("wb")
        self.proc = lab.popen(lab.cap, [egress, "run", "--interface", lab.cap_if, "--policy", str(POLICY), *geo,
                                        "--log-format", "json", "--alerts-out", str(self.alerts_path)],
                              env=env, stdout=subprocess.DEVNULL, stderr=self._log, cwd=REPO)
        self.address = self.wait_event("metrics_listening")["address"]
        self.wait_event("capture_started")

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
                if isinstance(rec, dict):
                    out.append(rec)
            except ValueError:
                pass
        return out

    def wait_event(self, name: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e.get("event") == name:
                    return e
            if self.proc.poll() is not None:
                raise SystemExit(f"egress exited {self.proc.returncode}: see {self.log_path}")
            time.sleep(0.1)
        raise SystemExit(f"egress: no {name} within {timeout}s: see {self.log_path}")

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        code = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        text = self.lab.exec(self.lab.cap, [sys.executable, "-c", code, f"http://{self.address}/metrics"]).stdout
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$", line)
            if m and not line.startswith("#"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
                out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
        return out

    def figures(self) -> dict[str, float]:
        m = self.metrics()

        def total(name: str, **match: str) -> float:
            return sum(v for labels, v in m.get(name, []) if all(labels.get(k) == x for k, x in match.items()))

        verdicts = {v: total("egress_flows_evaluated_total", verdict=v) for v in (*EGRESS_VERDICTS, "not-egress")}
        return {
            "captured": total("egress_packets_captured_total", interface=self.lab.cap_if),
            "dropped_metric": total("egress_packets_dropped_total", interface=self.lab.cap_if),
            "restarts": total("egress_capture_restarts_total", interface=self.lab.cap_if),
            "flows_exported": total("egress_flows_exported_total"),
            "flows_egress": sum(verdicts[v] for v in EGRESS_VERDICTS),
            "flows_not_egress": verdicts["not-egress"],
            "alerts": total("egress_alerts_total"),
        }

    def settle(self, quiet_scrapes: int = 3, every: float = 2.0, timeout: float = 600) -> dict[str, float]:
        """Figures once the packet counter has not moved for `quiet_scrapes` scrapes."""
        seen: list[float] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fig = self.figures()
            seen.append(fig["captured"])
            if len(seen) >= quiet_scrapes and len(set(seen[-quiet_scrapes:])) == 1:
                return fig
            time.sleep(every)
        return self.figures()

    def descendants(self) -> list[int]:
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
        return out

    def stop(self, timeout: float = 30) -> tuple[int | None, float, dict[str, Any]]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
            self.proc.kill()
            self.proc.wait()
        took = time.monotonic() - t0
        self._log.close()
        done = next((e for e in self.events() if e.get("event") == "run_done"), {})
        return rc, took, done


def leftovers(lab: Lab) -> list[str]:
    found = [f"{pid} {comm}" for pid, comm in lab.pids(lab.cap, ("dumpcap", "tshark"))]
    named = sh(["pgrep", "-a", "-f", f"(dumpcap|tshark) .*{lab.cap_if}( |$)"], check=False).stdout.splitlines()
    return found + named


# --------------------------------------------------------------------------- offline reference

_offline_cache: dict[tuple[str, float], dict[str, Any]] = {}


def offline(egress: str, pcap: Path, geo: list[str], idle_s: float) -> dict[str, Any]:
    key = (str(pcap), round(idle_s, 3))
    if key in _offline_cache:
        return _offline_cache[key]
    flows_path = OUT / "replay-offline.flows.ndjson"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")}
    env.update({"EGRESS_FLOWS__IDLE_TIMEOUT": f"{idle_s:.3f}s", "EGRESS_FLOWS__ACTIVE_TIMEOUT": "1d"})
    res = subprocess.run([egress, "analyze", str(pcap), "--policy", str(POLICY), *geo, "--format", "json",
                          "--flows-out", str(flows_path), "--log-format", "json"],
                         capture_output=True, text=True, env=env, cwd=REPO)
    if res.returncode not in (0, 1):
        raise SystemExit(f"egress analyze failed ({res.returncode}): {res.stderr[-2000:]}")
    done = next(json.loads(l) for l in res.stderr.splitlines() if '"analysis_done"' in l)
    directions: dict[str, int] = {}
    with flows_path.open() as fh:
        for line in fh:
            d = json.loads(line)["network"]["direction"]
            directions[d] = directions.get(d, 0) + 1
    flows_path.unlink()
    out = {"idle_timeout_s": idle_s, "packets_after_filter": done["packets"], "flows": sum(directions.values()),
           "outbound": directions.get("outbound", 0),
           "non_local_end": sum(n for d, n in directions.items() if d != "internal"),
           "alerts": len([l for l in res.stdout.splitlines() if l.strip()])}
    _offline_cache[key] = out
    return out


def passing_in_first(egress: str, pcap: Path, geo: list[str], count: int) -> int:
    """How many of the file's first `count` packets the built-in filter passes."""
    if count <= 0:
        return 0
    part = OUT / "replay-slice.pcap"
    sh(["editcap", "-r", str(pcap), str(part), f"1-{count}"], timeout=600)
    try:
        res = subprocess.run([egress, "analyze", str(part), "--policy", str(POLICY), *geo, "--format", "json", "--log-format", "json"],
                             capture_output=True, text=True, cwd=REPO,
                             env={k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")})
        return next(json.loads(l) for l in res.stderr.splitlines() if '"analysis_done"' in l)["packets"]
    finally:
        part.unlink(missing_ok=True)


# --------------------------------------------------------------------------- tcpreplay

def tcpreplay_argv(lab: Lab, pcap: Path, rate: int | None, loop: int = 1) -> list[str]:
    argv = ["tcpreplay", "-i", lab.out_if, "-K", f"--loop={loop}"]
    argv += [f"--pps={rate}"] if rate else ["--topspeed"]
    return argv + [str(pcap)]


def parse_tcpreplay(text: str) -> dict[str, float]:
    def grab(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else float("nan")

    return {"sent": grab(r"Successful packets:\s+(\d+)"), "failed": grab(r"Failed packets:\s+(\d+)"),
            "seconds": grab(r"Actual: \d+ packets \(\d+ bytes\) sent in ([\d.]+) seconds"),
            "pps": grab(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps")}


# --------------------------------------------------------------------------- modes

def sweep(a: argparse.Namespace, egress: str, geo: list[str], pcap: Path, info: dict[str, Any]) -> dict[str, Any]:
    file_pps = info["packets"] / info["duration_s"]
    rows = []
    rates: list[int | None] = [int(r) for r in a.rates.split(",") if r]
    if a.topspeed:
        rates.append(None)
    for rate in rates:
        label = f"{rate} pps" if rate else "topspeed"
        print(f"\n== {label}: replaying {info['packets']:,} packets", flush=True)
        with Lab() as lab:
            env = {"EGRESS_FLOWS__IDLE_TIMEOUT": f"{a.idle_timeout}s", "EGRESS_FLOWS__ACTIVE_TIMEOUT": "1d"}
            if a.chunk_packets:
                env["EGRESS_CAPTURE__CHUNK_PACKETS"] = str(a.chunk_packets)
            agent = Agent(lab, egress, geo, env, f"rate-{rate or 'top'}")
            lab.check_isolated()
            before_out, before_cap = link_stats(lab, lab.gen, lab.out_if), link_stats(lab, lab.cap, lab.cap_if)
            t0 = time.monotonic()
            rep = lab.exec(lab.gen, tcpreplay_argv(lab, pcap, rate), timeout=3600)
            replay = parse_tcpreplay(rep.stdout + rep.stderr)
            fig = agent.settle()
            caught_up = time.monotonic() - t0
            time.sleep(a.idle_timeout + 3)  # every flow leaves on the idle timeout, before SIGTERM
            fig = agent.figures()
            out_s, cap_s = link_stats(lab, lab.gen, lab.out_if), link_stats(lab, lab.cap, lab.cap_if)
            rc, took, done = agent.stop()
            left = leftovers(lab)
        actual_pps = replay["pps"] if replay["pps"] == replay["pps"] else (rate or 0)
        ref = offline(egress, pcap, geo, a.idle_timeout * actual_pps / file_pps)
        expected = ref["packets_after_filter"]
        row = {
            "rate": rate, "label": label, "replay": replay, "expected": expected, **fig,
            "lost": expected - fig["captured"],
            "veth_tx_dropped": out_s["tx_dropped"] - before_out["tx_dropped"],
            "veth_rx_dropped": cap_s["rx_dropped"] - before_cap["rx_dropped"],
            "veth_rx_packets": cap_s["rx_packets"] - before_cap["rx_packets"],
            "caught_up_s": caught_up, "exit": rc, "exit_s": took, "evaluated_in_all": done.get("evaluated"),
            "leftovers": left, "offline": ref,
        }
        row["zero_drops"] = (row["lost"] == 0 and not replay["failed"] and not row["veth_tx_dropped"]
                             and not row["veth_rx_dropped"] and replay["sent"] == info["packets"])
        rows.append(row)
        print(f"   sent {replay['sent']:,.0f} (failed {replay['failed']:.0f}) in {replay['seconds']:.1f}s = {replay['pps']:,.0f} pps; "
              f"veth rx {row['veth_rx_packets']:,}", flush=True)
        print(f"   captured {fig['captured']:,.0f} of {expected:,} passing the filter -> lost {row['lost']:,.0f}; "
              f"dropped metric {fig['dropped_metric']:.0f}; "
              f"veth drops tx {row['veth_tx_dropped']} rx {row['veth_rx_dropped']}; caught up {caught_up:.1f}s after start")
        print(f"   flows live {fig['flows_exported']:.0f} (egress {fig['flows_egress']:.0f}) vs offline {ref['flows']} "
              f"(outbound {ref['outbound']}, non-local end {ref['non_local_end']}, idle {ref['idle_timeout_s']:.0f}s of file time); "
              f"run_done evaluated {done.get('evaluated')}; exit {rc} in {took:.1f}s; leftovers {left or 'none'}", flush=True)

    print("\n rate        sent  pps(actual)  passing  captured     lost  veth drops  metric  flows live/offline  egress live/offline")
    for r in rows:
        print(f" {r['label']:>10} {r['replay']['sent']:>9,.0f} {r['replay']['pps']:>11,.0f} {r['expected']:>8,} {r['captured']:>9,.0f} "
              f"{r['lost']:>8,.0f} {r['veth_tx_dropped'] + r['veth_rx_dropped']:>11} {r['dropped_metric']:>7.0f}"
              f"  {r['flows_exported']:>7.0f}/{r['offline']['flows']:<9} {r['flows_egress']:>7.0f}/{r['offline']['outbound']}")
    clean = [r for r in rows if r["zero_drops"]]
    best = max(clean, key=lambda r: r["replay"]["pps"]) if clean else None
    print(f"\nhighest rate with zero drops: {best['label'] + ' (' + format(best['replay']['pps'], ',.0f') + ' pps actual)' if best else 'none'}")
    return {"mode": "sweep", "rows": rows, "highest_zero_drop": best["label"] if best else None}


def soak(a: argparse.Namespace, egress: str, geo: list[str], pcap: Path, info: dict[str, Any]) -> dict[str, Any]:
    seconds = a.soak
    print(f"\n== soak: {a.soak_rate} pps for {seconds}s, looping {pcap.name}; RSS sampled every {a.sample}s", flush=True)
    samples: list[dict[str, Any]] = []
    with Lab() as lab:
        env: dict[str, str] = {}
        if a.chunk_packets:
            env["EGRESS_CAPTURE__CHUNK_PACKETS"] = str(a.chunk_packets)
        agent = Agent(lab, egress, geo, env, "soak")
        lab.check_isolated()
        rep = lab.popen(lab.gen, tcpreplay_argv(lab, pcap, a.soak_rate, loop=0), stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
        t0 = time.monotonic()
        tsharks: set[int] = set()
        while time.monotonic() - t0 < seconds:
            row: dict[str, Any] = {"t": round(time.monotonic() - t0, 1), "rss": {}, "max1": {}}
            for pid in agent.descendants():
                try:
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024
                except (OSError, AttributeError):
                    continue
                name = "egress" if comm.startswith(("egress", "python")) else comm
                row["rss"][name] = row["rss"].get(name, 0) + rss
                row["max1"][name] = max(row["max1"].get(name, 0), rss)
                if comm == "tshark":
                    tsharks.add(pid)
            if a.verbose:
                print(f"   t={row['t']:>6.1f}s " + "  ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(row["rss"].items())), flush=True)
            samples.append(row)
            time.sleep(a.sample)
        rep.send_signal(signal.SIGINT)
        try:
            text, _ = rep.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            rep.kill()
            text, _ = rep.communicate()
        replay = parse_tcpreplay(text)
        fig = agent.settle()
        out_s, cap_s = link_stats(lab, lab.gen, lab.out_if), link_stats(lab, lab.cap, lab.cap_if)
        rc, took, done = agent.stop()
        time.sleep(1)
        left = leftovers(lab)
    per_name: dict[str, dict[str, float]] = {}
    for name in sorted({n for s in samples for n in s["rss"]}):
        series = [s["rss"][name] for s in samples if name in s["rss"]]
        single = [s["max1"][name] for s in samples if name in s["max1"]]
        per_name[name] = {"first": series[0], "last": series[-1], "min": min(series), "max": max(series),
                          "max_single": max(single), "samples": len(series)}
    loops, rest = divmod(int(replay["sent"]), info["packets"]) if replay["sent"] == replay["sent"] else (0, 0)
    expected = loops * offline(egress, pcap, geo, 60)["packets_after_filter"] + passing_in_first(egress, pcap, geo, rest)
    print(f"   sent {replay['sent']:,.0f} (failed {replay['failed']:.0f}) = {replay['pps']:,.0f} pps; captured {fig['captured']:,.0f} "
          f"of {expected:,} passing the filter ({loops} loops + {rest:,} packets) -> lost {expected - fig['captured']:,.0f}; dropped metric {fig['dropped_metric']:.0f}; "
          f"veth drops tx {out_s['tx_dropped']} rx {cap_s['rx_dropped']}")
    print(f"   tshark processes seen: {len(tsharks)} (recycled every {a.chunk_packets or 100000:,} packets that pass the filter)")
    print("   RSS MiB (sum per name)   first     min     max    last   largest single process")
    for name, s in per_name.items():
        print(f"   {name:<22} {s['first'] / 2**20:>7.1f} {s['min'] / 2**20:>7.1f} {s['max'] / 2**20:>7.1f} {s['last'] / 2**20:>7.1f}"
              f"   {s['max_single'] / 2**20:.1f}")
    print(f"   SIGTERM: exit {rc} in {took:.1f}s; run_done evaluated {done.get('evaluated')}; "
          f"dumpcap/tshark left after exit: {left or 'none'}")
    return {"mode": "soak", "seconds": seconds, "rate": a.soak_rate, "replay": replay, **fig, "expected": expected,
            "lost": expected - fig["captured"],
            "veth_tx_dropped": out_s["tx_dropped"], "veth_rx_dropped": cap_s["rx_dropped"], "rss": per_name,
            "tshark_pids": len(tsharks), "exit": rc, "exit_s": took, "leftovers": left, "samples": samples}


def all_egress_variant(pcap: Path) -> Path:
    """The capture with the NVR moved to the internet: camera video becomes egress."""
    out = pcap.with_name(pcap.stem + "-alleg.pcap")
    if not out.exists() or out.stat().st_mtime < pcap.stat().st_mtime:
        print(f"writing {out.relative_to(REPO)} (tcprewrite --pnat=10.20.0.5/32:198.51.100.5/32) ...", flush=True)
        sh(["tcprewrite", "--pnat=10.20.0.5/32:198.51.100.5/32", "-i", str(pcap), "-o", str(out)], timeout=3600)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000, help="size of the generated capture (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rates", default="20000,40000,80000,120000", help="comma-separated packets/s (default %(default)s)")
    ap.add_argument("--topspeed", action="store_true", help="also replay as fast as tcpreplay can")
    ap.add_argument("--idle-timeout", type=float, default=20, help="live flows.idle_timeout in seconds (default 20)")
    ap.add_argument("--soak", type=int, nargs="?", const=600, default=None, metavar="SECONDS",
                    help="soak mode instead of the sweep (default 600 s)")
    ap.add_argument("--soak-rate", type=int, default=40000, help="packets/s during the soak (default 40000)")
    ap.add_argument("--sample", type=float, default=5, help="seconds between RSS samples in the soak (default 5)")
    ap.add_argument("--all-egress", action="store_true",
                    help="replay a variant in which the NVR 10.20.0.5 is 198.51.100.5 (tcprewrite --pnat): the video "
                         "becomes egress, so nearly every packet passes the filter and is dissected (the worst case)")
    ap.add_argument("--chunk-packets", type=int, default=0, help="capture.chunk_packets for egress (default: egress's default)")
    ap.add_argument("--egress", help="egress executable (default: next to this Python, else PATH)")
    ap.add_argument("--geoip-country")
    ap.add_argument("--geoip-asn")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every RSS sample")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("replay.py needs root (network namespaces, packet capture)", file=sys.stderr)
        return 2
    egress = find_egress(a.egress)
    if not egress:
        print("egress not found", file=sys.stderr)
        return 2
    geo = geoip_args(types.SimpleNamespace(geoip_country=a.geoip_country, geoip_asn=a.geoip_asn, python=sys.executable))
    geo = [str(REPO / g) if g.endswith(".mmdb") and not os.path.isabs(g) else g for g in geo]
    pcap, info, _ = ensure_capture(a.packets, a.seed, False)
    if a.all_egress:
        pcap = all_egress_variant(pcap)
    print(f"capture {pcap.relative_to(REPO)}: {info['packets']:,} packets, {info['duration_s']:.0f}s of capture time; "
          f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    result = soak(a, egress, geo, pcap, info) if a.soak is not None else sweep(a, egress, geo, pcap, info)
    result.update({"all_egress": a.all_egress, "capture": str(pcap), "capture_info": info, "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                   "load_after": os.getloadavg()[0]})
    variant = "-alleg" if a.all_egress else ""
    name = f"replay-soak-{a.soak}s{variant}.json" if a.soak is not None else f"replay-sweep-{info['packets']}{variant}.json"
    (OUT / name).write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwritten: {(OUT / name).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
