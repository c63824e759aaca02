#!/usr/bin/env python3
"""The hosts of the live tests, each run inside its network namespace (`ip netns exec`).

    python netsvc.py dns ADDR                    # a DNS responder on ADDR:53 (UDP)
    python netsvc.py servers tcp:IP:PORT udp:IP:PORT ...   # accept/echo servers
    python netsvc.py camera RESOLVER             # what the camera does, then exits

`dns` and `servers` print "ready" once listening and run until SIGTERM. `camera`
prints one JSON line: what it resolved and which exchanges got their answer.
Standard library only.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import sys
import threading
import time

#: name -> (CNAME chain after the name asked, final A address)
ZONE: dict[str, tuple[tuple[str, ...], str]] = {
    "dev.hik-connect.com": (("hik-edge.cdn.example",), "198.51.100.200"),
    "pool.ntp.org": ((), "203.0.113.161"),
}
TTL = 60


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """(name, position after it) with compression pointers followed."""
    labels: list[str] = []
    end = None
    while True:
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            continue
        if n == 0:
            return ".".join(labels), (end if end is not None else pos + 1)
        labels.append(msg[pos + 1 : pos + 1 + n].decode())
        pos += 1 + n


def answer(query: bytes) -> bytes | None:
    if len(query) < 12:
        return None
    qid, flags = struct.unpack_from("!HH", query)
    if flags & 0x8000:
        return None
    name, pos = read_name(query, 12)
    qtype, _ = struct.unpack_from("!HH", query, pos)
    question = query[12 : pos + 4]
    entry = ZONE.get(name.lower())
    if entry is None or qtype != 1:
        rcode = 3 if entry is None else 0
        return struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 0, 0, 0) + question
    chain, address = entry
    records = b""
    owner = b"\xc0\x0c"  # the name asked, at offset 12
    for target in chain:
        rdata = encode_name(target)
        records += owner + struct.pack("!HHIH", 5, 1, TTL, len(rdata)) + rdata
        owner = encode_name(target)
    records += owner + struct.pack("!HHIH", 1, 1, TTL, 4) + socket.inet_aton(address)
    return struct.pack("!HHHHHH", qid, 0x8180, 1, len(chain) + 1, 0, 0) + question + records


def query(name: str) -> bytes:
    return struct.pack("!HHHHHH", int(time.time() * 1000) & 0xFFFF, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", 1, 1)


def parse_a(msg: bytes) -> tuple[list[str], str | None]:
    """(CNAME chain, the A address) of an answer."""
    _, _, qd, an, _, _ = struct.unpack_from("!HHHHHH", msg)
    pos = 12
    for _ in range(qd):
        _, pos = read_name(msg, pos)
        pos += 4
    chain: list[str] = []
    address = None
    for _ in range(an):
        _, pos = read_name(msg, pos)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        if rtype == 5:
            chain.append(read_name(msg, pos)[0])
        elif rtype == 1:
            address = socket.inet_ntoa(msg[pos : pos + 4])
        pos += rdlen
    return chain, address


def serve_dns(addr: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(2048)
        try:
            reply = answer(data)
        except (IndexError, struct.error, UnicodeDecodeError):
            continue
        if reply is not None:
            sock.sendto(reply, peer)


def _tcp(sock: socket.socket) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(5)
            try:
                data = conn.recv(4096)
                conn.sendall(b"ok " + data[:64])
                while conn.recv(4096):  # until the client closes
                    pass
            except OSError:
                pass


def _udp(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(4096)
        sock.sendto(b"ok " + data[:64], peer)


def serve(specs: list[str]) -> None:
    threads = []
    for spec in specs:
        proto, ip, port = spec.split(":")
        if proto == "tcp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, int(port)))
            sock.listen(16)
            threads.append(threading.Thread(target=_tcp, args=(sock,), daemon=True))
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((ip, int(port)))
            threads.append(threading.Thread(target=_udp, args=(sock,), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def camera(resolver: str) -> dict:
    """Resolve two names through the site resolver, then talk to five destinations."""
    out: dict = {"resolved": {}, "answered": []}

    def resolve(name: str) -> str:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(query(name), (resolver, 53))
        chain, address = parse_a(s.recv(2048))
        s.close()
        out["resolved"][name] = [*chain, address]
        assert address is not None, name
        return address

    def tcp(ip: str, port: int, payload: bytes) -> None:
        with socket.create_connection((ip, port), timeout=5) as s:
            s.sendall(payload)
            if s.recv(1024).startswith(b"ok"):
                out["answered"].append(f"tcp/{ip}:{port}")

    def udp(ip: str, port: int, payload: bytes, count: int = 3) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        for _ in range(count):
            s.sendto(payload, (ip, port))
            if s.recv(1024).startswith(b"ok") and f"udp/{ip}:{port}" not in out["answered"]:
                out["answered"].append(f"udp/{ip}:{port}")
        s.close()

    cloud = resolve("dev.hik-connect.com")
    tcp(cloud, 443, b"\x16\x03\x01hello-cloud")
    udp("192.0.2.50", 32100, b"p2p-hello")
    tcp("198.51.100.10", 8000, b"GET / HTTP/1.0\r\n\r\n")
    tcp("198.51.100.10", 443, b"\x16\x03\x01hello-vms")
    tcp("203.0.113.160", 443, b"\x16\x03\x01hello-de")
    udp(resolve("pool.ntp.org"), 123, b"\x23" + b"\0" * 47, count=1)
    return out


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "dns":
        serve_dns(args[0])
    elif cmd == "servers":
        serve(args)
    elif cmd == "camera":
        print(json.dumps(camera(args[0])), flush=True)
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
