"""A capture whose names are hostile: control characters, quotes, backslashes, NULs,
escape sequences and invalid UTF-8 in DNS names, a TLS SNI and an HTTP Host.

    python tests/fuzz/hostile.py OUT.pcap

A camera (10.20.0.23, Hikvision OUI) asks the local resolver (10.20.0.1) for hostile
names; the answers point at 198.51.100.10-12. The camera then opens TLS to
198.51.100.10 with a 10,000-byte SNI and sends an HTTP request to 198.51.100.11 whose
Host header is 10 kB of the same, and a UDP datagram to 198.51.100.12 (named by a
CNAME chain of hostile names only). Every hostile name carries the marker `hostile`,
so a test can tell where such a name ended up.

Layers 2-4 are scapy's; the DNS, TLS and HTTP payloads are built byte by byte here, so
nothing on the way normalises the names. The file is written by hand (pcap, Ethernet,
snaplen 262144), with fixed timestamps: the same bytes every time.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

__all__ = ["build", "MARKER", "DNS_NAMES", "SNI", "HTTP_HOST", "SERVERS", "DEVICE_IP", "BAD_FRAGMENTS"]

MARKER = "hostile"
T0 = 1768471200  # 2026-01-15T10:00:00Z
DEVICE_MAC = "c0:56:e3:00:00:23"  # a Hikvision OUI
DEVICE_IP = "10.20.0.23"
RESOLVER_MAC = "00:00:5e:00:01:35"
RESOLVER_IP = "10.20.0.1"
ROUTER_MAC = "00:00:5e:00:01:14"
SERVERS = {"tls": "198.51.100.10", "http": "198.51.100.11", "udp": "198.51.100.12"}

# What must never reach a metric label or break a JSON line.
BAD_FRAGMENTS = ("\x00", "\x1b", "\n", "\t", "\ufffd", MARKER)

# Raw label bytes. DNS labels are byte strings: anything but the length prefix goes,
# a "." inside a label included.
_LABELS: tuple[bytes, ...] = (
    b"ev\x00il",
    b"\x1b[31mred\x1b[0m",
    b"new\nline",
    b"tab\there",
    b'quo"te',
    b"back\\slash",
    b"\xff\xfe\xc3\x28",  # invalid UTF-8
    b"\xed\xa0\x80lone",  # a UTF-16 surrogate, UTF-8-encoded (invalid)
    b"dot.inside",
    b"\x7f\x01\x02\x08",
)
DNS_NAMES: tuple[tuple[bytes, ...], ...] = (
    (b"hostile", *_LABELS[:5], b"example", b"com"),
    (_LABELS[5], b"hostile", *_LABELS[6:], b"example", b"net"),
    (b"cname", b"hostile\x00\n\x1b", b"\xc0\xaf", b"org"),
)
_CHUNK = b'hostile\x01\x1b[2J\x1b]0;pwned\x07\n\r\t"\\\xff\xfe\xc3\x28\xed\xa0\x80\xe2\x80\xa8\x85\x7f.'
# tshark reads these fields as C strings: the one NUL goes near the end, so ~10 kB gets through.
SNI = (_CHUNK * (10_000 // len(_CHUNK) + 1))[:9_990] + b"\x00tail.hostile"[:10]
_HOST_CHUNK = _CHUNK.replace(b"\n", b"\x0b").replace(b"\r", b"\x0c")  # an HTTP header line cannot hold CR or LF
HTTP_HOST = (_HOST_CHUNK * (10_240 // len(_HOST_CHUNK) + 1))[:10_230] + b"\x00tail.hostile"[:10]


def _name(labels: tuple[bytes, ...]) -> bytes:
    return b"".join(struct.pack("!B", len(lab)) + lab for lab in labels) + b"\0"


def dns_query(qid: int, labels: tuple[bytes, ...]) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _name(labels) + struct.pack("!HH", 1, 1)


def dns_response(qid: int, labels: tuple[bytes, ...], address: str, cname: tuple[bytes, ...] | None = None) -> bytes:
    """An A answer for `labels` (through `cname` when given), names uncompressed."""
    answers = []
    owner = labels
    if cname is not None:
        answers.append(_name(labels) + struct.pack("!HHIH", 5, 1, 60, len(_name(cname))) + _name(cname))
        owner = cname
    answers.append(_name(owner) + struct.pack("!HHIH", 1, 1, 60, 4) + bytes(int(x) for x in address.split(".")))
    return struct.pack("!HHHHHH", qid, 0x8180, 1, len(answers), 0, 0) + _name(labels) + struct.pack("!HH", 1, 1) + b"".join(answers)


def client_hello(sni: bytes) -> bytes:
    """A TLS 1.2-framed ClientHello with one server_name of `sni` (any bytes, any length < 16 KB)."""
    server_name = struct.pack("!BH", 0, len(sni)) + sni
    sni_ext = struct.pack("!HHH", 0x0000, len(server_name) + 2, len(server_name)) + server_name
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + struct.pack("!H", 4) + b"\x13\x01\x13\x02" + b"\x01\x00"
    body += struct.pack("!H", len(sni_ext)) + sni_ext
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


def _frames() -> list[bytes]:
    out: list[bytes] = []

    def up(l4, payload: bytes = b"", dst: str = "") -> None:  # camera → internet
        out.append(bytes(Ether(src=DEVICE_MAC, dst=ROUTER_MAC) / IP(src=DEVICE_IP, dst=dst, id=len(out)) / l4 / Raw(payload)))

    def down(l4, payload: bytes = b"", src: str = "") -> None:
        out.append(bytes(Ether(src=ROUTER_MAC, dst=DEVICE_MAC) / IP(src=src, dst=DEVICE_IP, id=len(out)) / l4 / Raw(payload)))

    # DNS: the camera asks the local resolver, the resolver answers with hostile names.
    for qid, (labels, address, cname) in enumerate(
        (
            (DNS_NAMES[0], SERVERS["tls"], None),
            (DNS_NAMES[1], SERVERS["http"], None),
            (DNS_NAMES[0], SERVERS["udp"], DNS_NAMES[2]),
        ),
        start=0x4242,
    ):
        sport = 40000 + qid % 100
        out.append(bytes(Ether(src=DEVICE_MAC, dst=RESOLVER_MAC) / IP(src=DEVICE_IP, dst=RESOLVER_IP) / UDP(sport=sport, dport=53) / Raw(dns_query(qid, labels))))
        out.append(bytes(Ether(src=RESOLVER_MAC, dst=DEVICE_MAC) / IP(src=RESOLVER_IP, dst=DEVICE_IP) / UDP(sport=53, dport=sport) / Raw(dns_response(qid, labels, address, cname))))

    # TLS with a 10,000-byte hostile SNI (one jumbo segment: a capture can hold it).
    tls = SERVERS["tls"]
    up(TCP(sport=50443, dport=443, flags="S", seq=1000), dst=tls)
    down(TCP(sport=443, dport=50443, flags="SA", seq=5000, ack=1001), src=tls)
    up(TCP(sport=50443, dport=443, flags="A", seq=1001, ack=5001), dst=tls)
    hello = client_hello(SNI)
    up(TCP(sport=50443, dport=443, flags="PA", seq=1001, ack=5001), hello, dst=tls)
    down(TCP(sport=443, dport=50443, flags="A", seq=5001, ack=1001 + len(hello)), src=tls)

    # HTTP with a 10 kB hostile Host.
    web = SERVERS["http"]
    request = b"GET /snapshot.jpg HTTP/1.1\r\nHost: " + HTTP_HOST + b"\r\nUser-Agent: cam\r\n\r\n"
    up(TCP(sport=50080, dport=80, flags="S", seq=2000), dst=web)
    down(TCP(sport=80, dport=50080, flags="SA", seq=7000, ack=2001), src=web)
    up(TCP(sport=50080, dport=80, flags="A", seq=2001, ack=7001), dst=web)
    up(TCP(sport=50080, dport=80, flags="PA", seq=2001, ack=7001), request, dst=web)
    down(TCP(sport=80, dport=50080, flags="PA", seq=7001, ack=2001 + len(request)), b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", src=web)

    # UDP to the address only the CNAME chain names.
    up(UDP(sport=50999, dport=9999), b"\x00hostile\x1b\xff", dst=SERVERS["udp"])
    return out


def build(path: Path | str) -> Path:
    """Write the hostile capture to `path` (pcap); the same bytes every time."""
    path = Path(path)
    frames = _frames()
    data = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
    for i, frame in enumerate(frames):
        data += struct.pack("<IIII", T0 + i // 4, (i * 1000) % 1_000_000, len(frame), len(frame)) + frame
    path.write_bytes(bytes(data))
    return path


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "hostile.pcap"))
