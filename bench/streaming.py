"""Throughput of the streaming half: flow records published by the agent's publisher and
evaluated by `egress rules` consumers, through the development Kafka broker.

    python bench/streaming.py [--records N] [--reps R] [--compare PATH] [--no-baseline]
                              [--devices 5000] [--groups 50] [--keys-per-group 2000]
    python bench/streaming.py --state-only [--state-keys 100000]

1. publish: a child process builds N flow records and sends them with egress's
   KafkaPublisher (idempotent, acks=all), what `egress agent` does per flow, once, to a
   fresh flows topic. --devices devices (distinct MACs and IPs), device d on VLAN 100 + d
   mod --groups; flow time spans 2 h (the first hour is the baseline's learning window).
   Of each group's flows 1% go to a denied destination, 9% to an allowed one and 90% to
   --keys-per-group baseline destinations (a third each registered domains, as<N>/<CC>
   and IPs of 198.18.0.0/15, × 4 ports): 90% of them are seen while learning, the rest
   only after it (new-destination alerts), so with scope: group the baseline ends with
   groups × keys-per-group keys (100,000 by default, at 1M records).
2. evaluate: `egress rules` (one process, one consumer, a fresh group id and fresh
   alerts, dead-letter and baseline topics each run) reads the flows topic from the start;
   the time from its first to its N-th evaluated record is read off its /metrics. Runs,
   interleaved rep by rep: `rules` (the policy: 50 groups matched by VLAN, deny, allow,
   default_verdict allow), `rules + baseline` (the same policy with `baseline:` learn_for
   1h, scope group, volume windows of 10m) and, with --compare, `rules (compare)`: the
   policy without a baseline on a second egress executable (e.g. the previous commit's
   venv), and `baseline (compare)`: it with the baseline, so before/after come from one run.
3. the memory of the baseline state for --state-keys keys, in a fresh child interpreter:
   a BaselineState built through egress.baseline.learner.Learner (tracemalloc, and the
   RSS delta).
Prints records/s, CPU seconds, peak RSS (VmHWM) of each rules process, the ratios (the
median of the rep-by-rep ratios decides: a pair runs back to back, so a drifting machine
moves both; the ratio of the medians beside it), the
baseline keys at the end (egress_baseline_keys, summed) and the load average. Needs a
broker (`dev/kafka/broker start`). Writes bench/out/streaming-N.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT / "bench"))
from procwatch import measure  # noqa: E402

T0 = 1768471200.0
SPAN = 7200.0  # seconds of flow time the records cover, whatever N
PORTS = ("tcp/443", "tcp/8443", "tcp/1935", "udp/3478")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def policy_text(groups: int, baseline: bool) -> str:
    lines = ["version: 1", "covered_vendors: []", "default_verdict: allow"]
    if baseline:
        lines += ["baseline:", "  learn_for: 1h", "  scope: group", "  volume: {window: 10m}"]
    lines.append("groups:")
    for g in range(groups):
        lines += [
            f"  - name: g{g:02d}",
            f"    match: {{vlans: [{100 + g}]}}",
            "    allow:",
            "      - {name: vms, destinations: [198.51.100.0/24], ports: [tcp/443]}",
            "    deny:",
            "      - {name: p2p, destinations: [192.0.2.0/24]}",
        ]
    return "\n".join(lines) + "\n"


def _destination(k: int) -> tuple[str, int, int, str | None, int | None, str | None]:
    """Baseline destination k: (ip, transport, port, domain, asn, country); key identity x port."""
    j, p = divmod(k, len(PORTS))
    transport, port = PORTS[p].split("/")
    ip = f"198.{18 + j // 65536 % 2}.{j // 256 % 256}.{j % 256}"
    if j % 3 == 0:
        return ip, 6 if transport == "tcp" else 17, int(port), f"eu{j % 5}.vendor{j}.com", 15169, "US"
    if j % 3 == 1:
        return ip, 6 if transport == "tcp" else 17, int(port), None, 64512 + j, ("DE", "FR", "NL", "CN")[j % 4]
    return ip, 6 if transport == "tcp" else 17, int(port), None, None, None


def _records(n: int, devices: int, groups: int, keys: int):  # noqa: ANN202 - generator of FlowRecord
    from egress.model import TCP, UDP, Endpoint, FlowRecord

    per_group = max(1, keys)  # scope: group: each group learns its own `keys`, groups × keys in all
    learn_keys = per_group * 9 // 10
    for i in range(n):
        d = i % devices
        g = d % groups
        c = i // groups  # the flow's index within its group (devices is a multiple of groups)
        mac = f"44-19-B6-00-{d // 256:02X}-{d % 256:02X}"
        ip = f"10.{20 + d // 62500}.{d // 250 % 250}.{d % 250 + 1}"
        start = T0 + i * SPAN / n
        kind = c % 100
        domain: str | None
        if kind == 0:  # denied
            dst, transport, dport, domain, asn, cc = "192.0.2.7", UDP, 32100, None, None, None
        elif kind < 10:  # allowed
            dst, transport, dport, domain, asn, cc = "198.51.100.10", TCP, 443, "cams.vms.example", 15169, "GB"
        else:  # left to the baseline (or default_verdict)
            b = (c // 100) * 90 + kind - 10
            k = (b * 7919) % (learn_keys if start < T0 + SPAN / 2 else per_group)
            dst, transport, dport, domain, asn, cc = _destination(k)
        yield FlowRecord(
            start=start, end=start + 1.0, transport=transport,
            source=Endpoint(ip, 40000 + i % 9000, mac, 1200, 10),
            destination=Endpoint(dst, dport, None, 800, 8),
            vlans=(100 + g,), community_id=f"1:{i:026d}=", direction="outbound", device_mac=mac,
            device_ip=ip, device_manufacturer="Hikvision", site="bench",
            destination_domains=(domain,) if domain else (), destination_domain=domain, destination_country=cc,
            destination_asn=asn, destination_as_org="BENCH" if asn else None,
        )  # fmt: skip


async def _publish(bootstrap: str, topic: str, n: int, devices: int, groups: int, keys: int, out: Path) -> None:
    from egress.bus.kafka import KafkaPublisher, ensure_topics
    from egress.codec import flow_message
    from egress.config import KafkaConfig

    cfg = KafkaConfig(bootstrap_servers=(bootstrap,), flows_topic=topic, partitions=6)
    await ensure_topics(cfg, [topic])
    pub = KafkaPublisher(cfg)
    await pub.start()
    t0 = time.perf_counter()
    for i, rec in enumerate(_records(n, devices, groups, keys)):
        await pub.send(topic, flow_message(rec))
        if i % 50_000 == 49_999:
            await pub.flush()
    await pub.stop()
    out.write_text(json.dumps({"published": n, "seconds": time.perf_counter() - t0}))


def state_memory(n_keys: int, groups: int, traced: bool) -> dict[str, float]:
    """The baseline state for n_keys keys (scope group, `groups` groups), built through the
    Learner; tracemalloc's traced bytes (`traced`) or the RSS delta (not traced: tracemalloc's
    own bookkeeping would be in it). The records are made and dropped one at a time, so what
    stays is the state (and the key strings it holds)."""
    from egress.baseline.learner import Learner
    from egress.baseline.settings import BaselineSettings, VolumeSettings
    from egress.baseline.state import BaselineState
    from egress.model import TCP, Endpoint, FlowRecord

    def rss() -> int:
        return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024  # type: ignore[union-attr]

    settings = BaselineSettings(learn_for=3600.0, scope="group", volume=VolumeSettings(window=600.0))
    per_group = -(-n_keys // groups)
    gc.collect()
    rss0 = rss()
    if traced:
        tracemalloc.start()
    state = BaselineState()
    learner = Learner(state)
    made = 0
    for g in range(groups):
        for k in range(per_group):
            if made == n_keys:
                break
            dst, transport, port, domain, asn, cc = _destination(k)
            d = (k * groups + g) % 5000
            mac = f"44:19:b6:00:{d // 256:02x}:{d % 256:02x}"
            rec = FlowRecord(
                start=T0 + k, end=T0 + k + 1, transport=transport or TCP, source=Endpoint(f"10.20.{d // 250}.{d % 250 + 1}", 40000, mac, 1200, 10),
                destination=Endpoint(dst, port, None, 800, 8), vlans=(100 + g,), community_id=f"1:{made}=", direction="outbound",
                device_mac=mac, device_ip=f"10.20.{d // 250}.{d % 250 + 1}", site="bench",
                destination_domains=(domain,) if domain else (), destination_domain=domain, destination_country=cc, destination_asn=asn,
            )  # fmt: skip
            group = f"g{g:02d}"
            scope, learning, _ = learner.observe(rec, group, settings)
            learner.judge(rec, scope, group, learning)
            made += 1
    out = {"keys": len(state.entries), "scopes": len(state.scopes), "volumes": len(state.volumes)}
    if traced:
        with_changed = tracemalloc.get_traced_memory()[0]
        state.changed.clear()  # what a flush to the topic (or the file) drains
        gc.collect()
        out |= {"traced_mib": tracemalloc.get_traced_memory()[0] / 2**20, "traced_with_changed_mib": with_changed / 2**20}
        tracemalloc.stop()
    else:
        state.changed.clear()
        gc.collect()
        out["rss_delta_mib"] = (rss() - rss0) / 2**20
    return out


def _own_checkout() -> dict[str, str]:
    """The environment for this script's children: the egress of this checkout (a venv's
    editable install may point at another one)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}


def _poll_pause(done: float, n: int, elapsed: float) -> float:
    """Seconds until the next look at /metrics: each scrape costs the measured process (3 ms
    without a baseline, 8 ms with one: its series), so once records flow, half the time the
    rest should take, between 0.05 s (the end is still timed to that) and 2 s."""
    if not done or elapsed <= 0:
        return 0.05
    left = (n - done) / (done / elapsed)
    return min(2.0, max(0.05, left / 2))


def _metrics(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return ""


def _sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}{{[^}}]*}} ([0-9.e+]+)$", text, re.M))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def run_rules(egress: str, policy: Path, bootstrap: str, flows_topic: str, n: int, timeout: float, cpu: int | None = None) -> dict[str, float]:
    """One `egress rules` over the whole flows topic: fresh group and topics; its rate off /metrics."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")} | {
        "EGRESS_KAFKA__BOOTSTRAP_SERVERS": f"[{bootstrap}]", "EGRESS_KAFKA__FLOWS_TOPIC": flows_topic,
        "EGRESS_KAFKA__ALERTS_TOPIC": f"{run}.alerts", "EGRESS_KAFKA__DEAD_LETTER_TOPIC": f"{run}.deadletter",
        "EGRESS_KAFKA__GROUP_ID": run, "EGRESS_METRICS__LISTEN": f"127.0.0.1:{port}", "EGRESS_POLICY_FILE": str(policy),
    }  # fmt: skip
    if "baseline" in policy.read_text():  # an egress without baselines knows no baseline_topic
        env["EGRESS_KAFKA__BASELINE_TOPIC"] = f"{run}.baseline"
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    proc = subprocess.Popen([*pin, egress, "rules", "--log-format", "json", "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    first = last = cpu_first = cpu_last = 0.0
    hwm = 0
    text = ""
    deadline = time.perf_counter() + timeout
    try:
        while proc.poll() is None and time.perf_counter() < deadline:
            text = _metrics(port)
            done = _sum(text, "egress_flows_evaluated_total")
            now, cpu = time.perf_counter(), _cpu_s(proc.pid)
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                hwm = max(hwm, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024)  # type: ignore[union-attr]
            except (OSError, AttributeError):
                pass
            if done and not first:
                first, cpu_first = now, cpu
            if done >= n:
                last, cpu_last = now, cpu
                time.sleep(1.0)  # the last batch's baseline records and gauges
                text = _metrics(port) or text
                break
            time.sleep(_poll_pause(done, n, now - first if first else 0.0))
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if not last:
        sys.exit(f"egress rules ({egress}) did not evaluate {n:,} records (exit {proc.returncode}):\n{err.decode()[-2000:]}")
    seconds = last - first
    return {"seconds": seconds, "rate": n / seconds, "cpu_s": cpu_last - cpu_first, "peak_rss_mib": hwm / 2**20,
            "baseline_keys": _sum(text, "egress_baseline_keys"),
            "alerts": _sum(text, "egress_alerts_total")}  # fmt: skip


def main() -> None:  # noqa: C901, PLR0915 - one bench, printed as it goes
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=5000)
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--keys-per-group", type=int, default=2000, help="baseline destinations per group (identity x port)")
    ap.add_argument("--reps", type=int, default=1, help="runs of each rules variant, interleaved")
    ap.add_argument("--egress", default=str(Path(sys.executable).with_name("egress")))
    ap.add_argument("--compare", metavar="PATH", help="a second egress executable, run interleaved (the policy without and with the baseline)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the rules + baseline runs")
    ap.add_argument("--state-keys", type=int, default=100_000, help="keys of the in-process baseline state measured (0: skip)")
    ap.add_argument("--state-only", action="store_true", help="only the in-process baseline state")
    ap.add_argument("--bootstrap", default="localhost:9092")
    ap.add_argument("--cpu", type=int, help="pin each rules process to this CPU (taskset; pin the broker to another: less noise)")
    ap.add_argument("--timeout", type=float, default=1800, help="per rules run, s")
    ap.add_argument("--child-publish", nargs=3, metavar=("TOPIC", "N", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--child-state", nargs=2, metavar=("KEYS", "traced|rss"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.devices % a.groups:
        ap.error("--devices must be a multiple of --groups")
    if a.child_publish:
        asyncio.run(_publish(a.bootstrap, a.child_publish[0], int(a.child_publish[1]), a.devices, a.groups, a.keys_per_group, Path(a.child_publish[2])))
        return
    if a.child_state is not None:
        print(json.dumps(state_memory(int(a.child_state[0]), a.groups, a.child_state[1] == "traced")))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    report: dict[str, object] = {"records": a.records, "devices": a.devices, "groups": a.groups, "keys_per_group": a.keys_per_group,
                                 "reps": a.reps, "egress": a.egress, "compare": a.compare, "loadavg_before": load0}  # fmt: skip

    state = None
    if a.state_keys:
        state = {}
        for mode in ("traced", "rss"):
            out = subprocess.run([sys.executable, __file__, "--groups", str(a.groups), "--devices", str(a.devices), "--child-state", str(a.state_keys), mode],
                                 capture_output=True, text=True, check=True, env=_own_checkout())  # fmt: skip
            state |= json.loads(out.stdout)
        report["state"] = state
        print(f"baseline state in-process: {state['keys']:,} keys ({state['scopes']} scopes, {state['volumes']:,} device volumes): "
              f"{state['traced_mib']:.1f} MiB traced (tracemalloc; {state['traced_with_changed_mib']:.1f} MiB before the changes are drained), "
              f"RSS +{state['rss_delta_mib']:.1f} MiB")  # fmt: skip
    if a.state_only:
        return

    flows_topic = f"bench-{uuid.uuid4().hex[:8]}.flows"
    result_file = Path(tempfile.mkdtemp()) / "publish.json"
    pub = measure([sys.executable, __file__, "--bootstrap", a.bootstrap, "--devices", str(a.devices), "--groups", str(a.groups),
                   "--keys-per-group", str(a.keys_per_group), "--child-publish", flows_topic, str(a.records), str(result_file)], env=_own_checkout())  # fmt: skip
    if pub.returncode:
        sys.exit(f"publisher failed (exit {pub.returncode})")
    published = json.loads(result_file.read_text())
    pub_rss = max(pub.peak_rss_by_proc.values()) / 2**20
    print(f"agent publisher: {a.records:,} records in {published['seconds']:.1f} s = {a.records / published['seconds']:,.0f} records/s; "
          f"peak RSS {pub_rss:.0f} MiB")  # fmt: skip
    report["publisher"] = {"seconds": published["seconds"], "rate": a.records / published["seconds"], "peak_rss_mib": pub_rss}

    tmp = Path(tempfile.mkdtemp())
    plain, based = tmp / "policy.yaml", tmp / "policy-baseline.yaml"
    plain.write_text(policy_text(a.groups, baseline=False))
    based.write_text(policy_text(a.groups, baseline=True))
    plan = [("rules", a.egress, plain)]
    if not a.no_baseline:
        plan.append(("rules + baseline", a.egress, based))
    if a.compare:
        plan.append(("rules (compare)", a.compare, plain))
        if not a.no_baseline:
            plan.append(("baseline (compare)", a.compare, based))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in plan}
    for rep in range(a.reps):
        for name, exe, policy in plan:
            r = run_rules(exe, policy, a.bootstrap, flows_topic, a.records, a.timeout, a.cpu)
            runs[name].append(r)
            print(f"  rep {rep + 1} {name:<17} {r['rate']:>9,.0f} records/s  {r['seconds']:6.1f} s  cpu {r['cpu_s']:6.1f} s  "
                  f"peak RSS {r['peak_rss_mib']:4.0f} MiB  baseline keys {r['baseline_keys']:>8,.0f}", flush=True)  # fmt: skip
    load1 = os.getloadavg()

    def med(name: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[name])

    base_rate = med("rules", "rate")
    print()
    print(f"`egress rules`, {a.records:,} records, {a.devices:,} devices, {a.groups} groups; medians of {a.reps}, interleaved")
    print()
    print("| run | records/s | × rules | CPU s | peak RSS | baseline keys at end |")
    print("|---|---|---|---|---|---|")
    for name, exe, _ in plan:
        label = f"{name} ({exe})" if name.endswith("(compare)") else name
        print(f"| {label} | {med(name, 'rate'):,.0f} | {med(name, 'rate') / base_rate:.3f} | {med(name, 'cpu_s'):.1f} | "
              f"{med(name, 'peak_rss_mib'):.0f} MiB | {med(name, 'baseline_keys'):,.0f} |")  # fmt: skip
    print()
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    def paired(name: str, other: str) -> tuple[float, str]:
        """Rate ratios rep by rep (each pair ran back to back, so a machine that drifts moves
        both): their median, and it with the range as text."""
        ratios = sorted(x["rate"] / y["rate"] for x, y in zip(runs[name], runs[other], strict=True))
        report.setdefault("paired", {})[f"{name} / {other}"] = ratios  # type: ignore[union-attr]
        middle = statistics.median(ratios)
        return middle, f"{middle:.3f} (reps {ratios[0]:.3f}–{ratios[-1]:.3f})"

    if "rules + baseline" in runs:
        ratio, text = paired("rules + baseline", "rules")
        print(f"rules + baseline / rules: paired {text}, {med('rules + baseline', 'rate') / base_rate:.3f} of the medians "
              f"(target ≥ 0.80: {'holds' if ratio >= 0.8 else 'MISSED'})")  # fmt: skip
    if a.compare:
        ratio, text = paired("rules", "rules (compare)")
        print(f"rules (this egress) / rules (compare): paired {text}, {base_rate / med('rules (compare)', 'rate'):.3f} "
              f"of the medians (within 5%: {'yes' if ratio >= 0.95 else 'NO'})")  # fmt: skip
        if "baseline (compare)" in runs:
            _, text = paired("baseline (compare)", "rules (compare)")
            print(f"the compare executable's rules + baseline / rules: paired {text}")
            _, text = paired("rules + baseline", "baseline (compare)")
            print(f"rules + baseline (this egress) / rules + baseline (compare): paired {text}")
    if state is not None:
        print(f"baseline state for {state['keys']:,} keys: {state['traced_mib']:.1f} MiB (target ≤ 100 MiB: "
              f"{'holds' if state['traced_mib'] <= 100 and state['rss_delta_mib'] <= 100 else 'MISSED'})")  # fmt: skip
    report |= {"runs": runs, "loadavg_after": load1}
    path = OUT / f"streaming-{a.records}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
