#!/usr/bin/env python3
"""egress analyze against nfstream and the naive tshark floor, side by side, in one run.

    .venv/bin/python bench/vs_nfstream.py [--packets 100000 1000000] [--reps 3]
                                          [--egress PATH] [--nfstream-venv DIR]

For each capture (make_camera_capture.py's camera VLAN, generated into bench/out/ or
reused) and each variant of the policy:

  normal      deploy/policy.example.yaml: the camera VLANs are local, so the prefilter
              drops the intra-site video (99% of packets) in libpcap
  all-remote  the same policy with `local_networks: [127.0.0.0/8]`: every address is
              remote, every packet passes the prefilter and is metered (what a camera
              uploading to a cloud VMS or a P2P relay looks like to egress)

run, --reps times, alternating (rep 1 of each, then rep 2, ...), whole processes under
procwatch.measure (wall, CPU of the tree, peak RSS of each process):

  floor     tshark -n -r F -T fields -e <18 fields>  > /dev/null   (no policy: once a rep)
  egress    egress analyze F --policy P --format json               > /dev/null
  nfstream  NFStreamer(source=F) with its default settings, every flow iterated, in its own
            venv (made by this script at --nfstream-venv, default bench/out/nfstream-venv)

and print medians: wall s, CPU s, packets/s, × floor, × nfstream (egress's packets/s over
nfstream's), peak RSS. Targets (#12): all-remote ≥ 1.0× nfstream, normal ≥ 2.0×, every
process ≤ 300 MiB. JSON goes to bench/out/vs-nfstream-<N>.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

from analyze import ensure_capture, find_egress, floor_cmd, geoip_args  # noqa: E402
from procwatch import DEVNULL, measure  # noqa: E402

NFSTREAM_LOOP = r"""
import sys
from nfstream import NFStreamer
flows = 0
for flow in NFStreamer(source=sys.argv[1]):
    flows += 1
print(flows)
"""
VARIANTS = ("normal", "all-remote")
MIB = 1 << 20


def nfstream_python(venv: Path) -> str:
    """The venv's python, with nfstream installed in it (made on first use)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv} with nfstream ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    check = subprocess.run([str(python), "-c", "import nfstream"], capture_output=True)
    if check.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "nfstream"], check=True)
    return str(python)


def policy_for(variant: str) -> str:
    base = REPO / "deploy" / "policy.example.yaml"
    if variant == "normal":
        return str(base.relative_to(REPO))
    remote = OUT / "policy-all-remote.yaml"
    # the pack it includes stays where it is: the variant is written elsewhere
    lines = [("local_networks: [127.0.0.0/8]" if ln.startswith("local_networks:") else ln) for ln in base.read_text().splitlines()]
    lines = [ln.replace("include: [policies/", f"include: [{base.parent}/policies/") for ln in lines]
    remote.write_text("\n".join(lines) + "\n")
    return str(remote)


def run(argv: list[str]) -> dict:
    r = measure(argv, stdout=DEVNULL, stderr=DEVNULL, cwd=str(REPO))
    return {"ok": r.returncode == 0, "wall_s": r.wall_s, "cpu_s": r.cpu_s, "rss": dict(r.peak_rss_by_proc)}


def median(runs: list[dict]) -> dict:
    ok = [r for r in runs if r["ok"]]
    if not ok:
        return {"ok": False}
    names = sorted({k for r in ok for k in r["rss"]})
    return {
        "ok": True,
        "wall_s": statistics.median(r["wall_s"] for r in ok),
        "cpu_s": statistics.median(r["cpu_s"] for r in ok),
        "rss": {k: int(statistics.median(r["rss"].get(k, 0) for r in ok)) for k in names},
        "runs": len(ok),
    }


def bench(n: int, a: argparse.Namespace, egress: str, nfs_python: str) -> dict:
    pcap, info, _ = ensure_capture(n, a.seed, False)
    geo = geoip_args(a)
    commands: dict[str, list[str]] = {"floor": floor_cmd(pcap), "nfstream": [nfs_python, "-c", NFSTREAM_LOOP, str(pcap)]}
    for variant in VARIANTS:
        commands[f"egress {variant}"] = [egress, "analyze", str(pcap), "--policy", policy_for(variant), "--format", "json", "--log-level", "error", *geo]
    runs: dict[str, list[dict]] = {k: [] for k in commands}
    for rep in range(a.reps):
        for label, argv in commands.items():
            runs[label].append(run(argv))
            print(f"  N={n} rep {rep + 1}: {label} {runs[label][-1]['wall_s']:.2f} s", flush=True)
    rows = {label: median(r) for label, r in runs.items()}
    print_table(n, rows)
    result = {"packets": n, "capture": info, "medians": rows, "runs": runs, "commands": commands}
    (OUT / f"vs-nfstream-{n}.json").write_text(json.dumps(result, indent=2))
    return result


def print_table(n: int, rows: dict[str, dict]) -> None:
    floor, nfs = rows.get("floor", {}), rows.get("nfstream", {})
    print(f"\nN = {n:,} packets (medians)")
    print(f"{'':18} {'wall s':>7} {'cpu s':>7} {'packets/s':>10} {'x floor':>8} {'x nfstream':>10}  peak RSS (MiB)")
    for label, row in rows.items():
        if not row.get("ok"):
            print(f"{label:18} failed")
            continue
        pps = n / row["wall_s"]
        x_floor = row["wall_s"] and floor.get("wall_s", 0) / row["wall_s"]
        x_nfs = row["wall_s"] and nfs.get("wall_s", 0) / row["wall_s"]
        rss = ", ".join(f"{k} {v / MIB:.0f}" for k, v in sorted(row["rss"].items(), key=lambda kv: -kv[1])[:3])
        print(f"{label:18} {row['wall_s']:7.2f} {row['cpu_s']:7.2f} {pps:10,.0f} {x_floor:8.2f} {x_nfs:10.2f}  {rss}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--egress", help="egress executable (default: next to this Python, else on PATH)")
    ap.add_argument("--nfstream-venv", type=Path, default=OUT / "nfstream-venv")
    ap.add_argument("--geoip-country")
    ap.add_argument("--geoip-asn")
    ap.add_argument("--python", default=sys.executable, help="runs pcaps/make_geoip.py")
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    egress = find_egress(a.egress)
    if egress is None:
        print("egress not found: give --egress", file=sys.stderr)
        return 2
    nfs_python = nfstream_python(a.nfstream_venv)
    for n in a.packets:
        bench(n, a, egress, nfs_python)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
