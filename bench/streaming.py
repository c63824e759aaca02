"""Throughput of the streaming half: flow records published by the agent's publisher and
evaluated by one `egress rules` consumer, through the development Kafka broker.

    python bench/streaming.py [--records N] [--bootstrap localhost:9092]

1. publish: a child process builds N flow records (99% to an allowed destination, 1% to
   a denied one), encodes them with the wire codec and sends them with egress's
   KafkaPublisher (idempotent, acks=all, gzip) — what `egress agent` does per flow.
2. evaluate: `egress rules` (one process, one consumer) reads the topic from the start;
   the time from its first to its N-th evaluated record is read off its /metrics.
Prints records/s and peak RSS of each, as measured in this run. Needs a broker
(`dev/kafka/broker start`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from procwatch import measure  # noqa: E402

POLICY = """version: 1
covered_vendors: []
groups:
  - name: cams
    allow:
      - {name: vms, destinations: [198.51.100.0/24], ports: [tcp/443]}
    deny:
      - {name: p2p, destinations: [192.0.2.0/24]}
"""


def _records(n: int):  # noqa: ANN202 - generator of FlowRecord
    from egress.model import TCP, UDP, Endpoint, FlowRecord

    for i in range(n):
        d = i % 5000  # a large estate: 5,000 devices
        mac = f"44-19-B6-00-{d // 256:02X}-{d % 256:02X}"
        denied = i % 100 == 0
        yield FlowRecord(
            start=1768471200.0 + i / 1000, end=1768471201.0 + i / 1000, transport=UDP if denied else TCP,
            source=Endpoint(f"10.20.{d // 250}.{d % 250 + 1}", 40000 + i % 20000, mac, 1200, 10),
            destination=Endpoint("192.0.2.7" if denied else "198.51.100.10", 32100 if denied else 443, None, 800, 8),
            vlans=(20,), community_id=f"1:{i:026d}=", direction="outbound", device_mac=mac,
            device_ip=f"10.20.{d // 250}.{d % 250 + 1}", device_manufacturer="Hikvision", site="bench",
            destination_domains=("cams.vms.example",), destination_domain="cams.vms.example", destination_country="GB",
            destination_asn=15169, destination_as_org="GOOGLE",
        )  # fmt: skip


async def _publish(bootstrap: str, topic: str, n: int, out: Path) -> None:
    from egress.bus.kafka import KafkaPublisher, ensure_topics
    from egress.config import KafkaConfig
    from egress.codec import flow_message

    cfg = KafkaConfig(bootstrap_servers=(bootstrap,), flows_topic=topic, partitions=6)
    await ensure_topics(cfg, [topic])
    pub = KafkaPublisher(cfg)
    await pub.start()
    t0 = time.perf_counter()
    for i, rec in enumerate(_records(n)):
        await pub.send(topic, flow_message(rec))
        if i % 50_000 == 49_999:
            await pub.flush()
    await pub.stop()
    out.write_text(json.dumps({"published": n, "seconds": time.perf_counter() - t0}))


def _metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}{{[^}}]*}} ([0-9.e+]+)$", text, re.M))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--bootstrap", default="localhost:9092")
    ap.add_argument("--child-publish", nargs=3, metavar=("TOPIC", "N", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_publish:
        asyncio.run(_publish(a.bootstrap, a.child_publish[0], int(a.child_publish[1]), Path(a.child_publish[2])))
        return
    topic = f"bench-{uuid.uuid4().hex[:8]}.flows"
    result_file = Path(tempfile.mkdtemp()) / "publish.json"
    pub = measure([sys.executable, __file__, "--bootstrap", a.bootstrap, "--child-publish", topic, str(a.records), str(result_file)])
    published = json.loads(result_file.read_text())
    pub_rate = a.records / published["seconds"]
    print(f"agent publisher: {a.records:,} records in {published['seconds']:.1f} s = {pub_rate:,.0f} records/s; "
          f"peak RSS {max(pub.peak_rss_by_proc.values()) / 2**20:.0f} MiB")  # fmt: skip

    port = _free_port()
    policy = Path(tempfile.mkdtemp()) / "policy.yaml"
    policy.write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")} | {
        "EGRESS_KAFKA__BOOTSTRAP_SERVERS": f"[{a.bootstrap}]", "EGRESS_KAFKA__FLOWS_TOPIC": topic,
        "EGRESS_KAFKA__ALERTS_TOPIC": topic.replace("flows", "alerts"), "EGRESS_KAFKA__GROUP_ID": topic,
        "EGRESS_METRICS__LISTEN": f"127.0.0.1:{port}", "EGRESS_POLICY_FILE": str(policy),
    }  # fmt: skip
    egress = [str(Path(sys.executable).with_name("egress")), "rules", "--log-format", "json", "--log-level", "warning"]
    first = last = 0.0

    def watch() -> None:
        nonlocal first, last
        while True:
            done = _metric(port, "egress_flows_evaluated_total")
            now = time.perf_counter()
            if done and not first:
                first = now
            if done >= a.records:
                last = now
                return
            time.sleep(0.2)

    import threading

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = _measure_until(egress, env, watcher)
    rate = a.records / (last - first) if last > first else 0.0
    rss = max(result["rss"].values()) / 2**20 if result["rss"] else 0
    print(f"rules consumer:  {a.records:,} records in {last - first:.1f} s = {rate:,.0f} flows/s on one process; "
          f"{a.records // 100:,} alerts published; peak RSS {rss:.0f} MiB")  # fmt: skip


def _measure_until(argv: list[str], env: dict[str, str], watcher: object) -> dict[str, object]:
    """Run the consumer until the watcher has seen every record, then stop it (SIGTERM)."""
    import threading

    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak: dict[str, int] = {}
    assert isinstance(watcher, threading.Thread)
    while watcher.is_alive():
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
            peak["egress rules"] = max(peak.get("egress rules", 0), hwm)
        except (OSError, AttributeError):
            pass
        time.sleep(0.2)
    proc.terminate()
    proc.wait(timeout=60)
    return {"rss": peak}


if __name__ == "__main__":
    main()
