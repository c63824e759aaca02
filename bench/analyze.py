#!/usr/bin/env python3
"""Throughput and memory of `egress analyze` against the naive tshark floor and pyshark.

    /tmp/venv/bin/python bench/analyze.py [--packets N ...] [--keep] [--reps 3]
                                          [--egress PATH] [--compare PATH]
                                          [--only floor,egress,pyshark]

For each N (default 100000 and 1000000): generate (or reuse from bench/out/) a
camera-VLAN capture with make_camera_capture.py, cut its first --slice (2,000)
packets with editcap, then run, --reps times each, interleaved (rep 1 of every
method, then rep 2, ...), every command under procwatch.measure():

  floor          tshark -n -r F -T fields -e <the 18 fields egress extracts>  > /dev/null
  egress         egress analyze F --policy deploy/policy.example.yaml --format json > /dev/null
  egress (compare)  the same with --compare's executable (e.g. the previous commit's
                 venv), interleaved with the others: before/after in one run
  pyshark        pyshark.FileCapture(slice) iterated, touching pkt.length (own process)
  floor (slice)  the floor command on the slice, to show tshark's fixed start-up cost

and print a table of medians: wall s, cpu s, packets/s, x floor (the method's
packets/s divided by the floor's: how many times the floor's speed), and the
peak RSS of each process name in the command's tree. Results go to
bench/out/analyze-<N>.json. A failing egress prints "egress: failed (exit N)" and
the run carries on (its stderr is kept in bench/out/egress-<N>.stderr).

This is a benchmark script, not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

from procwatch import DEVNULL, measure  # noqa: E402

FIELDS = [
    "frame.time_epoch", "frame.len", "eth.src", "eth.dst", "vlan.id", "ip.src", "ip.dst",
    "ipv6.src", "ipv6.dst", "ip.proto", "tcp.srcport", "tcp.dstport", "tcp.flags",
    "udp.srcport", "udp.dstport", "dns.qry.name", "dns.a",
    "tls.handshake.extensions_server_name",
]
POLICY = "deploy/policy.example.yaml"

PYSHARK_LOOP = r"""
import json, sys, time
t0 = time.perf_counter()
import pyshark
t1 = time.perf_counter()
cap = pyshark.FileCapture(sys.argv[1])
n = 0
for pkt in cap:
    pkt.length
    n += 1
t2 = time.perf_counter()
try:
    cap.close()
except Exception:
    pass
print(json.dumps({"packets": n, "import_s": t1 - t0, "loop_s": t2 - t1}))
"""


def floor_cmd(pcap: Path) -> list[str]:
    cmd = ["tshark", "-n", "-r", str(pcap), "-T", "fields"]
    for f in FIELDS:
        cmd += ["-e", f]
    return cmd


def egress_cmd(egress: str, pcap: Path, extra: list[str]) -> list[str]:
    return [egress, "analyze", str(pcap), "--policy", POLICY, "--format", "json", *extra]


def geoip_args(a) -> list[str]:
    """--geoip-country/--geoip-asn for egress: as given; else none if the system databases
    exist; else the test databases that pcaps/make_geoip.py builds (into bench/out/geoip/;
    they cover the documentation ranges the capture uses); else none (egress may then refuse
    to start, since the example policy has country and ASN rules)."""
    if a.geoip_country or a.geoip_asn:
        out = []
        if a.geoip_country:
            out += ["--geoip-country", a.geoip_country]
        if a.geoip_asn:
            out += ["--geoip-asn", a.geoip_asn]
        return out
    if Path("/var/lib/GeoIP/GeoLite2-Country.mmdb").exists() and \
            Path("/var/lib/GeoIP/GeoLite2-ASN.mmdb").exists():
        return []
    maker = REPO / "pcaps" / "make_geoip.py"
    geo = OUT / "geoip"
    country, asn = geo / "Test-Country.mmdb", geo / "Test-ASN.mmdb"
    if not (country.exists() and asn.exists()) and maker.exists():
        geo.mkdir(parents=True, exist_ok=True)
        subprocess.run([a.python, str(maker), str(geo)], stdout=DEVNULL, stderr=DEVNULL)
    if country.exists() and asn.exists():
        print(f"egress GeoIP: test databases from pcaps/make_geoip.py in "
              f"{geo.relative_to(REPO)}/ (give --geoip-country/--geoip-asn to override)")
        return ["--geoip-country", str(country.relative_to(REPO)),
                "--geoip-asn", str(asn.relative_to(REPO))]
    return []


def pyshark_cmd(python: str, pcap: Path) -> list[str]:
    return [python, "-c", PYSHARK_LOOP, str(pcap)]


def shell_line(argv: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(a) if "\n" not in a else "'<pyshark loop, see analyze.py>'"
                    for a in argv)


def find_egress(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    cand = Path(sys.executable).parent / "egress"
    if cand.exists():
        return str(cand)
    return shutil.which("egress")


# --------------------------------------------------------------------------- capture cache

def generator_digest() -> str:
    return hashlib.sha256((HERE / "make_camera_capture.py").read_bytes()).hexdigest()[:16]


def ensure_capture(n: int, seed: int, rtsp_setup: bool) -> tuple[Path, dict, bool]:
    """Return (path, generator info, generated_now)."""
    OUT.mkdir(parents=True, exist_ok=True)
    stem = f"camera-{n}-seed{seed}{'-setup' if rtsp_setup else ''}"
    pcap, meta = OUT / f"{stem}.pcap", OUT / f"{stem}.meta.json"
    digest = generator_digest()
    if pcap.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m.get("generator") == digest and pcap.stat().st_size == m["info"]["bytes"]:
            return pcap, m["info"], False
    sys.path.insert(0, str(HERE))
    import make_camera_capture as gen
    print(f"generating {pcap.relative_to(REPO)} ...", flush=True)
    info = gen.write(n, str(pcap), seed, rtsp_setup)
    meta.write_text(json.dumps({"generator": digest, "info": info}, indent=2))
    return pcap, info, True


def make_slice(pcap: Path, count: int) -> Path:
    out = pcap.with_name(pcap.stem + f"-first{count}.pcap")
    if out.exists() and out.stat().st_mtime >= pcap.stat().st_mtime:
        return out
    if shutil.which("editcap"):
        subprocess.run(["editcap", "-r", str(pcap), str(out), f"1-{count}"], check=True,
                       stdout=DEVNULL, stderr=DEVNULL)
    else:
        subprocess.run(["tcpdump", "-r", str(pcap), "-c", str(count), "-w", str(out)],
                       check=True, stdout=DEVNULL, stderr=DEVNULL)
    return out


# --------------------------------------------------------------------------- running

def run_one(label: str, argv: list[str], n: int, timeout: float, stdout=DEVNULL,
            stderr_path: Path | None = None) -> dict:
    err = open(stderr_path, "wb") if stderr_path else DEVNULL
    try:
        try:
            r = measure(argv, stdout=stdout, stderr=err, timeout=timeout, cwd=str(REPO))
        except FileNotFoundError:
            return {"label": label, "packets": n, "returncode": 127, "wall_s": 0.0,
                    "cpu_s": 0.0, "peak_rss_by_proc": {}, "peak_total_rss": 0,
                    "timed_out": False, "error": f"{argv[0]}: not found"}
    finally:
        if stderr_path:
            err.close()
    return {"label": label, "packets": n, "returncode": r.returncode, "wall_s": r.wall_s,
            "cpu_s": r.cpu_s, "peak_rss_by_proc": r.peak_rss_by_proc,
            "peak_total_rss": r.peak_total_rss, "timed_out": r.timed_out,
            "samples": r.samples}


def median_row(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["returncode"] == 0]
    if not ok:
        return {"ok": False, "returncode": runs[-1]["returncode"],
                "timed_out": runs[-1].get("timed_out", False), "runs": len(runs)}
    names = sorted({k for r in ok for k in r["peak_rss_by_proc"]})
    rss = {k: int(statistics.median([r["peak_rss_by_proc"][k] for r in ok
                                     if k in r["peak_rss_by_proc"]])) for k in names}
    rss = dict(sorted(rss.items(), key=lambda kv: -kv[1]))
    row = {"ok": True, "runs": len(ok), "packets": ok[0]["packets"],
           "wall_s": statistics.median(r["wall_s"] for r in ok),
           "wall_s_all": [round(r["wall_s"], 3) for r in ok],
           "cpu_s": statistics.median(r["cpu_s"] for r in ok),
           "peak_rss_by_proc": rss,
           "peak_total_rss": int(statistics.median(r["peak_total_rss"] for r in ok))}
    row["packets_per_s"] = row["packets"] / row["wall_s"] if row["wall_s"] else 0.0
    if "inner" in ok[0]:
        inner = [r["inner"] for r in ok if r.get("inner")]
        if inner:
            row["loop_s"] = statistics.median(x["loop_s"] for x in inner)
            row["loop_packets"] = inner[0]["packets"]
            row["loop_packets_per_s"] = row["loop_packets"] / row["loop_s"]
    return row


def mib(b: int) -> str:
    return f"{b / 2**20:.0f}"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def print_table(n: int, rows: dict[str, dict], floor_pps: float | None) -> None:
    hdr = ["method", "packets", "wall s", "cpu s", "packets/s", "x floor", "x floor cpu",
           "peak RSS MiB by process", "tree MiB"]
    lines = []
    for label, row in rows.items():
        if not row.get("ok"):
            why = "timeout" if row.get("timed_out") else f"exit {row.get('returncode')}"
            name = label.split(" ")[0]
            lines.append([f"{name}: failed ({why})", "", "", "", "", "", "", "", ""])
            continue
        pps = row["packets_per_s"]
        ratio = f"{pps / floor_pps:.2f}x" if floor_pps and pps else ""
        cratio = f"{row['x_floor_cpu']:.2f}x" if row.get("x_floor_cpu") else ""
        procs = ", ".join(f"{k} {mib(v)}" for k, v in row["peak_rss_by_proc"].items()
                          if v >= 2**20 or len(row["peak_rss_by_proc"]) == 1)
        lines.append([label, f"{row['packets']:,}", f"{row['wall_s']:.2f}",
                      f"{row['cpu_s']:.2f}", fmt_rate(pps), ratio, cratio, procs,
                      mib(row["peak_total_rss"])])
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(hdr)]
    right = {1, 2, 3, 4, 5, 6, 8}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(hdr))
    print("  ".join("-" * w for w in widths))
    for l in lines:
        print(fmt(l))


def bench(n: int, a, egress: str | None) -> dict:
    load0 = os.getloadavg()
    pcap, info, generated = ensure_capture(n, a.seed, a.rtsp_setup)
    sl = make_slice(pcap, a.slice)
    only = set(a.only.split(","))
    plan: list[tuple[str, list[str], int]] = []
    if "floor" in only:
        plan.append(("tshark -T fields (floor)", floor_cmd(pcap), n))
    if "egress" in only:
        plan.append(("egress analyze", egress_cmd(egress or "egress", pcap, a.egress_extra),
                     n))
        if a.compare:
            plan.append((f"egress analyze (compare: {a.compare})", egress_cmd(a.compare, pcap, a.egress_extra), n))
    if "pyshark" in only:
        plan.append((f"pyshark FileCapture (first {a.slice:,})", pyshark_cmd(a.python, sl),
                     a.slice))
    if "floor" in only:
        plan.append((f"tshark -T fields (first {a.slice:,})", floor_cmd(sl), a.slice))

    runs: dict[str, list[dict]] = {label: [] for label, _, _ in plan}
    egress_failed = None
    for rep in range(a.reps):
        for label, argv, count in plan:
            if label.startswith("egress") and egress_failed is not None:
                continue
            print(f"  N={n:,} rep {rep + 1}/{a.reps}: {label} ...", end="", flush=True)
            if label.startswith("egress"):
                if egress is None:
                    r = {"label": label, "packets": count, "returncode": 127, "wall_s": 0.0,
                         "cpu_s": 0.0, "peak_rss_by_proc": {}, "peak_total_rss": 0,
                         "timed_out": False, "error": "egress: not found"}
                else:
                    r = run_one(label, argv, count, a.timeout,
                                stderr_path=OUT / f"egress-{n}.stderr")
                if r["returncode"] != 0:
                    egress_failed = r["returncode"]
                    why = "timeout" if r.get("timed_out") else f"exit {r['returncode']}"
                    print(f" egress: failed ({why})", flush=True)
                    runs[label].append(r)
                    continue
            elif label.startswith("pyshark"):
                outp = OUT / f"pyshark-{n}.out"
                with open(outp, "wb") as fo:
                    r = run_one(label, argv, count, a.timeout, stdout=fo,
                                stderr_path=OUT / f"pyshark-{n}.stderr")
                try:
                    r["inner"] = json.loads(outp.read_text().strip().splitlines()[-1])
                except (ValueError, IndexError):
                    r["inner"] = None
                if r["inner"] and r["inner"]["packets"] != count:
                    print(f" [pyshark saw {r['inner']['packets']} packets, expected {count}]",
                          end="")
            else:
                r = run_one(label, argv, count, a.timeout)
            runs[label].append(r)
            status = "" if r["returncode"] == 0 else f" exit {r['returncode']}"
            print(f" {r['wall_s']:.2f} s{status}", flush=True)

    rows = {label: median_row(rs) for label, rs in runs.items()}
    floor = rows.get("tshark -T fields (floor)")
    floor_pps = floor["packets_per_s"] if floor and floor.get("ok") else None
    for row in rows.values():
        if row.get("ok") and floor_pps:
            row["x_floor"] = row["packets_per_s"] / floor_pps
            if floor["cpu_s"] and row["cpu_s"]:
                row["x_floor_cpu"] = (floor["cpu_s"] / n) / (row["cpu_s"] / row["packets"])
    load1 = os.getloadavg()

    print()
    print(f"N = {n:,} packets ({info['bytes'] / 1e6:,.0f} MB, {info['ip_flows']:,} IP flows, "
          f"{info['duration_s']:.1f} s of capture), {a.reps} reps, medians; "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after, {os.cpu_count()} CPUs")
    print_table(n, rows, floor_pps)
    py = rows.get(f"pyshark FileCapture (first {a.slice:,})")
    if py and py.get("ok") and py.get("loop_packets_per_s"):
        print(f"  pyshark: {py['loop_packets_per_s']:,.0f} packets/s inside the loop "
              f"(without interpreter start-up and `import pyshark`)")
    if egress_failed is not None:
        print(f"  egress stderr: {(OUT / f'egress-{n}.stderr').relative_to(REPO)}")
    print()

    result = {
        "packets": n, "capture": str(pcap.relative_to(REPO)), "capture_info": info,
        "slice": str(sl.relative_to(REPO)), "slice_packets": a.slice,
        "reps": a.reps, "seed": a.seed, "rtsp_setup": a.rtsp_setup,
        "commands": {label: shell_line(argv) for label, argv, _ in plan},
        "floor_packets_per_s": floor_pps,
        "rows": rows, "runs": runs,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load0, "loadavg_after": load1,
                    "platform": platform.platform(), "python": sys.version.split()[0],
                    "tshark": tshark_version(), "pyshark": pyshark_version(a.python)},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (OUT / f"analyze-{n}.json").write_text(json.dumps(result, indent=2, default=str))
    if not a.keep:
        for p in (pcap, sl) if generated else (sl,):
            p.unlink(missing_ok=True)
        if generated:
            pcap.with_suffix(".meta.json").unlink(missing_ok=True)
    return result


def tshark_version() -> str:
    try:
        out = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def pyshark_version(python: str) -> str:
    try:
        return subprocess.run([python, "-c", "import importlib.metadata as m;"
                               "print(m.version('pyshark'))"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, nargs="+", default=[100_000, 1_000_000],
                    metavar="N", help="capture sizes (default: 100000 1000000)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the generated captures in bench/out/ (they are reused by the "
                         "next run); by default captures generated by this run are deleted")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slice", type=int, default=2000, help="packets fed to pyshark")
    ap.add_argument("--egress", help="egress executable (default: next to this Python, "
                                     "else on PATH)")
    ap.add_argument("--compare", metavar="PATH", help="a second egress executable, run interleaved with the first")
    ap.add_argument("--geoip-country", help="passed to egress (default: see geoip_args)")
    ap.add_argument("--geoip-asn", help="passed to egress")
    ap.add_argument("--egress-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for egress analyze (repeatable; use --egress-arg=-x)")
    ap.add_argument("--python", default=sys.executable, help="Python with pyshark installed")
    ap.add_argument("--only", default="floor,egress,pyshark",
                    help="comma-separated subset of floor,egress,pyshark")
    ap.add_argument("--rtsp-setup", action="store_true",
                    help="generate captures whose streams start with RTSP SETUP (tshark then "
                         "decodes the video as RTP)")
    ap.add_argument("--timeout", type=float, default=3600, help="per run, seconds")
    a = ap.parse_args(argv)
    egress = find_egress(a.egress)
    a.egress_extra = []
    if "egress" in a.only.split(","):
        a.egress_extra = geoip_args(a) + a.egress_arg
    if not shutil.which("tshark"):
        print("tshark not found", file=sys.stderr)
        return 2
    summary = []
    for n in a.packets:
        res = bench(n, a, egress)
        summary.append(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
