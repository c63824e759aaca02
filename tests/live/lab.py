"""Network namespaces for the live tests: hosts, links, VLANs, processes, and the egress agent.

Safety: nothing here adds an address or a route in the root namespace, and nothing
sends from it. Every namespace is `egt-<tag>-<role>`; every interface name carries
the lab's tag and is created inside its namespace (a veth's peer goes straight into
the other namespace), so the root namespace never holds one. `Lab.assert_isolated()`
checks that before any traffic: in every lab namespace each route leaves through a
lab interface or lo, and the root namespace has no interface with the tag.
`Lab.close()` stops every process the lab started (by pid), then any process still
inside a lab namespace (by pid, found through /proc/PID/ns/net), then deletes the
namespaces, also when the test failed.

802.1Q: the kernel's VLAN sub-interface (`ip link add link X name X.20 type vlan id 20`)
when the kernel has 8021q, else a userspace one (`vlantap.py`: a tap device whose
frames leave the parent tagged). `EGRESS_LIVE_VLAN=kernel|user|auto` (default auto).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POLICY = REPO / "deploy" / "policy.example.yaml"
EGRESS = Path(sys.executable).with_name("egress")
VLANTAP = HERE / "vlantap.py"
NETSVC = HERE / "netsvc.py"
CAMERA_MAC = "44:19:b6:12:34:56"  # Hikvision OUI; named vauxhall-lamp-01 in the example policy
INTERNET = ("192.0.2.50", "198.51.100.10", "198.51.100.200", "203.0.113.160", "203.0.113.161")
_counter = itertools.count()


def skip_reason() -> str | None:
    """Why live tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "live tests need root (network namespaces, packet capture)"
    probe = f"egt-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns is not possible here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res


@dataclass
class Netns:
    name: str

    def argv(self, *argv: str | Path) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(self, *argv: str | Path, check: bool = True, timeout: float = 30, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return _run(self.argv(*argv), check=check, timeout=timeout, env=env)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "-n", self.name, *args], check=check)

    def sysctl(self, *settings: str) -> None:
        self.run("sysctl", "-qw", *settings)

    @property
    def inode(self) -> int:
        return os.stat(f"/run/netns/{self.name}").st_ino

    def pids(self, comms: Sequence[str] | None = None) -> list[tuple[int, str]]:
        """(pid, comm) of the processes inside this namespace (optionally only those named)."""
        out = []
        inode = self.inode
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino != inode:
                    continue
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comms is None or comm in comms:
                out.append((int(entry), comm))
        return out

    def links(self) -> list[str]:
        return [link["ifname"] for link in json.loads(self.ip("-j", "link").stdout)]

    def routes(self) -> list[dict[str, Any]]:
        out = []
        for family in ("-4", "-6"):
            out += json.loads(self.ip(family, "-j", "route", "show", "table", "all").stdout or "[]")
        return out

    def get(self, url: str, timeout: float = 10) -> str:
        """GET an http://127.0.0.1 URL from inside the namespace."""
        assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", url
        code = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
        return self.run(sys.executable, "-c", code, url, timeout=timeout).stdout


class Lab:
    """Namespaces and processes of one test; `close()` removes everything."""

    def __init__(self, workdir: Path) -> None:
        self.tag = f"{os.getpid() % 100000}{next(_counter)}"
        self.workdir = workdir
        self.namespaces: list[Netns] = []
        self.procs: list[subprocess.Popen[Any]] = []

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def if_name(self, prefix: str) -> str:
        name = f"{prefix}{self.tag}"
        assert len(name) <= 12, name  # room for a ".20" suffix within IFNAMSIZ
        return name

    def netns(self, role: str) -> Netns:
        ns = Netns(f"egt-{self.tag}-{role}")
        _run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.sysctl("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        ns.ip("link", "set", "lo", "up")
        return ns

    def veth(self, a: Netns, a_name: str, b: Netns, b_name: str) -> None:
        """A veth pair made inside `a`, its peer moved straight into `b` (never the root namespace)."""
        a.ip("link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b.name)
        a.ip("link", "set", a_name, "up")
        b.ip("link", "set", b_name, "up")

    def vlan(self, ns: Netns, parent: str, vid: int, name_prefix: str, mac: str | None = None) -> str:
        """An 802.1Q sub-interface of `parent` for VLAN `vid`; returns its name."""
        mode = os.environ.get("EGRESS_LIVE_VLAN", "auto")
        if mode in ("auto", "kernel"):
            name = f"{parent}.{vid}"
            made = ns.ip("link", "add", "link", parent, "name", name, "type", "vlan", "id", str(vid), check=mode == "kernel")
            if made.returncode == 0:
                if mac:
                    ns.ip("link", "set", parent, "address", mac)
                    ns.ip("link", "set", name, "address", mac)
                ns.ip("link", "set", name, "up")
                return name
        name = self.if_name(name_prefix)
        ns.ip("tuntap", "add", "mode", "tap", "name", name)
        if mac:
            ns.ip("link", "set", name, "address", mac)
        ns.ip("link", "set", name, "mtu", "1400", "up")  # room for the tag on the 1500-byte veth
        ns.ip("link", "set", parent, "promisc", "on")
        self.start(ns, [sys.executable, VLANTAP, parent, str(vid), name], ready=True)
        return name

    def start(self, ns: Netns, argv: Sequence[str | Path], *, ready: bool = False, env: dict[str, str] | None = None,
              stdout: IO[Any] | int | None = None, stderr: IO[Any] | int | None = None) -> subprocess.Popen[Any]:  # fmt: skip
        """A background process in `ns`; with `ready`, wait for it to print "ready"."""
        proc = subprocess.Popen(
            ns.argv(*argv), stdin=subprocess.DEVNULL, env=env,
            stdout=subprocess.PIPE if ready else (stdout if stdout is not None else subprocess.DEVNULL),
            stderr=stderr if stderr is not None else subprocess.DEVNULL, text=ready,
        )  # fmt: skip
        self.procs.append(proc)
        if ready:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"{' '.join(map(str, argv))} did not start (exit {proc.poll()})")
        return proc

    def assert_isolated(self) -> None:
        """Every route in a lab namespace leaves through a lab interface or lo; the root namespace holds no lab interface."""
        root_links = [link["ifname"] for link in json.loads(_run(["ip", "-j", "link"]).stdout)]
        assert not [n for n in root_links if self.tag in n], f"lab interfaces in the root namespace: {root_links}"
        for ns in self.namespaces:
            for route in ns.routes():
                dev = route.get("dev", "lo")
                assert dev == "lo" or self.tag in dev, f"{ns.name}: route {route} leaves through {dev}"
            assert not [n for n in ns.links() if n.startswith("eth")], f"{ns.name}: {ns.links()}"

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        for ns in self.namespaces:
            try:
                for pid, _ in ns.pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass
        for ns in self.namespaces:
            _run(["ip", "netns", "del", ns.name], check=False)
        self.namespaces.clear()


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 5) -> int | None:
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return proc.returncode


@dataclass
class CameraSite:
    """camera ─(VLAN 20 on a trunk veth)─ router ─ internet. The agent captures on `trunk`,
    the router's end of the trunk, so it sees the 802.1Q tags. The site resolver
    10.20.0.53 is a second address of the router's VLAN interface."""

    lab: Lab
    camera: Netns
    router: Netns
    internet: Netns
    trunk: str
    camera_if: str
    router_if: str
    resolver: str = "10.20.0.53"
    services: list[subprocess.Popen[Any]] = field(default_factory=list)


def camera_site(lab: Lab) -> CameraSite:
    camera, router, internet = lab.netns("camera"), lab.netns("router"), lab.netns("internet")
    cam_trunk, trunk = lab.if_name("cam"), lab.if_name("trk")
    lab.veth(camera, cam_trunk, router, trunk)
    cam_if = lab.vlan(camera, cam_trunk, 20, "c20", mac=CAMERA_MAC)
    rtr_if = lab.vlan(router, trunk, 20, "r20")
    camera.ip("addr", "add", "10.20.1.11/16", "dev", cam_if)
    camera.ip("route", "add", "default", "via", "10.20.0.1", "dev", cam_if)
    router.ip("addr", "add", "10.20.0.1/16", "dev", rtr_if)
    router.ip("addr", "add", "10.20.0.53/16", "dev", rtr_if)
    up, down = lab.if_name("rin"), lab.if_name("inr")
    lab.veth(router, up, internet, down)
    router.ip("addr", "add", "172.31.255.1/30", "dev", up)
    internet.ip("addr", "add", "172.31.255.2/30", "dev", down)
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"):
        router.ip("route", "add", net, "via", "172.31.255.2", "dev", up)
    router.sysctl("net.ipv4.ip_forward=1")
    for addr in INTERNET:
        internet.ip("addr", "add", f"{addr}/32", "dev", "lo")
    internet.ip("route", "add", "10.20.0.0/16", "via", "172.31.255.1", "dev", down)
    lab.assert_isolated()
    site = CameraSite(lab, camera, router, internet, trunk, cam_if, rtr_if)
    site.services.append(lab.start(router, [sys.executable, NETSVC, "dns", site.resolver], ready=True))
    specs = ["tcp:198.51.100.200:443", "udp:192.0.2.50:32100", "tcp:198.51.100.10:8000", "tcp:198.51.100.10:443",
             "tcp:203.0.113.160:443", "udp:203.0.113.161:123"]  # fmt: skip
    site.services.append(lab.start(internet, [sys.executable, NETSVC, "servers", *specs], ready=True))
    return site


class Egress:
    """`egress run --interface IF...` inside a namespace, JSON logs to a file."""

    def __init__(self, lab: Lab, ns: Netns, interfaces: Sequence[str], geoip: dict[str, Path], *,
                 idle_timeout: str = "3s", extra_env: dict[str, str] | None = None, extra_args: Sequence[str] = (),
                 command: Sequence[str | Path] = (EGRESS,), alerts_dir: Path | None = None, policy: Path = POLICY) -> None:  # fmt: skip
        """`command` runs egress (a wrapper may come first); `alerts_dir` must be writable by the user egress runs as."""
        self.ns = ns
        self.alerts_path = (alerts_dir or lab.workdir) / f"alerts-{lab.tag}-{ns.name}.ndjson"
        self.log_path = lab.workdir / f"egress-{lab.tag}-{ns.name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EGRESS_")}
        env.update({"EGRESS_FLOWS__IDLE_TIMEOUT": idle_timeout, "EGRESS_METRICS__LISTEN": "127.0.0.1:0"}, **(extra_env or {}))
        argv: list[str | Path] = [*command, "run"]
        for interface in interfaces:
            argv += ["--interface", interface]
        argv += ["--policy", policy, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"],
                 "--log-format", "json", "--alerts-out", self.alerts_path, *extra_args]  # fmt: skip
        self._log = self.log_path.open("wb")
        self.proc = lab.start(ns, argv, env=env, stderr=self._log, stdout=subprocess.DEVNULL)
        self.started = time.monotonic()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_event(self, name: str, timeout: float = 30, count: int = 1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if e.get("event") == name]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"egress exited {self.proc.returncode} before {name}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} within {timeout}s:\n{self.log_text()}")
            time.sleep(0.1)

    def wait_ready(self, sources: int = 1) -> None:
        self.metrics_address = self.wait_event("metrics_listening")["address"]
        self.wait_event("capture_started", count=sources)

    def alerts(self) -> list[dict[str, Any]]:
        if not self.alerts_path.exists():
            return []
        return [json.loads(line) for line in self.alerts_path.read_text().splitlines() if line.strip()]

    def metrics(self) -> dict[str, float]:
        """Samples by `name{labels}` as Prometheus prints them."""
        text = self.ns.get(f"http://{self.metrics_address}/metrics")
        return parse_metrics(text)

    def terminate(self, timeout: float = 10) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if still running after `timeout`, seconds taken)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
        if rc is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
        return rc, took


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1)] = float(m.group(2))
    return out


def alert_key(alert: dict[str, Any]) -> tuple[Any, ...]:
    """What must agree between the live agent and offline analysis."""
    return (
        alert["device"]["id"], alert["destination"]["ip"], alert["destination"].get("port"),
        alert["network"]["transport"], alert["rule"]["category"], alert["rule"]["name"],
    )  # fmt: skip


def leftovers(ns: Netns, interface: str) -> list[str]:
    """dumpcap/tshark processes still inside `ns`, or anywhere naming `interface`."""
    found = [f"{pid} {comm} (in {ns.name})" for pid, comm in ns.pids(("dumpcap", "tshark"))]
    named = _run(["pgrep", "-a", "-f", rf"(dumpcap|tshark).*\b{interface}\b"], check=False).stdout.splitlines()
    return found + named


def camera_link(lab: Lab, agent_ns: Netns, cam: Netns, cap: str, cam_if: str) -> None:
    """An untagged link camera → agent, captured on `cap`. The camera reaches 203.0.113.10
    "through" it by a permanent neighbour entry (no gateway): the agent's namespace drops
    what it captured, as a SPAN port's receiver does."""
    lab.veth(cam, cam_if, agent_ns, cap)
    cam.ip("link", "set", cam_if, "address", CAMERA_MAC)
    cam.ip("addr", "add", "10.20.1.11/16", "dev", cam_if)
    cam.ip("route", "add", "203.0.113.0/24", "dev", cam_if)
    cam.ip("neigh", "add", "203.0.113.10", "lladdr", "02:00:00:00:00:01", "dev", cam_if, "nud", "permanent")
    lab.assert_isolated()


@dataclass
class InjectionLink:
    """A veth from an "inject" namespace (tcpreplay's side) to the agent's captured `cap`."""

    agent: Netns
    inject: Netns
    cap: str
    out: str


def injection_link(lab: Lab) -> InjectionLink:
    agent_ns, inj = lab.netns("agent"), lab.netns("inject")
    link = InjectionLink(agent_ns, inj, lab.if_name("cap"), lab.if_name("inj"))
    lab.veth(inj, link.out, agent_ns, link.cap)
    lab.assert_isolated()
    return link


def send_udp(cam: Netns, port: int) -> None:
    """One UDP datagram from the camera to 203.0.113.10:`port`."""
    code = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('203.0.113.10', {port}))"
    cam.run(sys.executable, "-c", code)
