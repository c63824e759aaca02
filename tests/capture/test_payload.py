"""Camera P2P and STUN detectors (egress.capture.payload) on datagrams built byte by byte
from each protocol's public description, with near misses that must not match: read by
the header reader and by tshark alike, and carried to the flow's `network.protocol`.

Formats:
- CS2 PPPP: github.com/pmarrapese/iot `p2p/dissector/pppp.fdesc` (T_message_header: magic
  0xF1, uint8 message type, big-endian uint16 message size; the type list).
- STUN: RFC 5389 §6 (two zero bits, message length excluding the 20-byte header and a
  multiple of 4, magic cookie 0x2112A442, 96-bit transaction ID), §15.2 XOR-MAPPED-ADDRESS.
- Dahua P2P: github.com/khoanguyen-3fc/dh-p2p `dh-p2p.lua` ("Dahua HTTP": DHGET/DHPOST
  prefixes; "Inverted STUN": 255 - b of every byte), `ptcp.lua` ("PTCP" magic, 24-byte
  header), README (`/probe/p2psrv`); libprotoident `lib/udp/lpi_dahua.cc` (44 bytes, ff fe ff e7).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Literal

import pytest

from egress.capture.file import FileSource
from egress.capture.payload import identify
from tests.conftest import ndjson, run_egress

COOKIE = b"\x21\x12\xa4\x42"
TXID = bytes(range(1, 13))


def cs2(message_type: int, body: bytes, size: int | None = None) -> bytes:
    return struct.pack("!BBH", 0xF1, message_type, len(body) if size is None else size) + body


def stun(message_type: int, attributes: bytes = b"", cookie: bytes = COOKIE, length: int | None = None) -> bytes:
    return struct.pack("!HH", message_type, len(attributes) if length is None else length) + cookie + TXID + attributes


def inverted(data: bytes) -> bytes:
    return bytes(255 - b for b in data)


XOR_MAPPED = struct.pack("!HHBBH", 0x0020, 8, 0, 1, 50012 ^ 0x2112) + bytes(a ^ b for a, b in zip(bytes([198, 51, 100, 1]), COOKIE, strict=True))
SOFTWARE_24 = struct.pack("!HH", 0x8022, 20) + b"dahua-p2p-client-1.0"  # 24 bytes of attributes: a 44-byte message

# (source port, payload, what it must be)
CASES: list[tuple[int, bytes, str | None]] = [
    (41000, cs2(0x00, b""), "cs2-p2p"),  # MSG_HELLO: the header alone
    (41001, cs2(0x01, struct.pack("<HHI", 2, 0xA463, 0x0A81E3F8) + bytes(8)), "cs2-p2p"),  # MSG_HELLO_ACK: a sockaddr
    (41002, cs2(0x12, bytes(range(44))), "cs2-p2p"),  # MSG_DEV_LGN_CRC
    (41003, cs2(0xD0, b"\xd1\x00\x00\x01" + bytes(1024)), "cs2-p2p"),  # MSG_DRW: video
    (41004, cs2(0xE0, b""), "cs2-p2p"),  # MSG_ALIVE
    (41010, cs2(0x00, b"", size=5), None),  # near miss: the length says 5 bytes, none follow
    (41011, cs2(0x05, b""), None),  # near miss: 0x05 is no message type
    (41012, b"\xf0" + cs2(0x00, b"")[1:], None),  # near miss: magic 0xF0
    (41020, stun(0x0001), "stun"),  # Binding request
    (41021, stun(0x0101, XOR_MAPPED), "stun"),  # Binding success response, XOR-MAPPED-ADDRESS
    (41022, stun(0x0001, length=4), None),  # near miss: the length promises an attribute that is not there
    (41023, stun(0x0001, b"\x00\x06\x00\x01x", length=5), None),  # near miss: a length that is not a multiple of 4
    (41024, b"\x00\x01\x00\x00" + bytes(16), None),  # near miss: RFC 3489 STUN, no magic cookie
    (41025, stun(0x0001, cookie=b"\x21\x12\xa4\x43"), None),  # near miss: one bit off the cookie
    (41030, inverted(stun(0x0001, SOFTWARE_24)), "dahua-p2p"),  # inverted STUN, 44 bytes: ff fe ff e7 …
    (41031, inverted(stun(0x0001, SOFTWARE_24, cookie=b"\x21\x12\xa4\x00")), None),  # near miss: inverted, wrong cookie
    (41032, inverted(stun(0x0001, SOFTWARE_24, length=28)), None),  # near miss: inverted, the length does not add up
    (41040, b"DHGET /probe/p2psrv HTTP/1.1\r\nCSeq: 1\r\n\r\n", "dahua-p2p"),
    (41041, b"DHPOST /online/relay HTTP/1.1\r\nCSeq: 2\r\nContent-Length: 0\r\n\r\n", "dahua-p2p"),
    (41042, b"DHGETS /probe HTTP/1.1\r\n\r\n", None),  # near miss: not DHGET and a space
    (41043, b"DHCP", None),  # near miss: a short datagram starting DH
    (41050, b"PTCP" + struct.pack("!IIIII", 0, 0, 0x0002FFFF, 1, 0), "dahua-p2p"),  # PTCP header, no data
    (41051, b"PTCP" + bytes(4), None),  # near miss: shorter than PTCP's 24-byte header
    (41052, b"PTCQ" + bytes(20), None),  # near miss: one letter off the magic
    (41060, b"\x80\x60\x00\x01" + bytes(160), None),  # RTP video: not inspected at all
]


def _frame(sport: int, payload: bytes, dport: int = 32100) -> bytes:
    """Ethernet (a Hikvision OUI), IPv4 10.20.1.11 → 198.51.100.7, UDP."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), sport & 0xFFFF, 0, 64, 17, 0, bytes([10, 20, 1, 11]), bytes([198, 51, 100, 7]))
    checksum = sum(struct.unpack("!10H", ip))
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    ip = ip[:10] + struct.pack("!H", ~checksum & 0xFFFF) + ip[12:]
    frame = bytes.fromhex("00005e000114" "4419b6123456") + b"\x08\x00" + ip + udp
    return frame + bytes(max(0, 60 - len(frame)))


def _pcap(path: Path, frames: list[bytes]) -> Path:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i, frame in enumerate(frames):
        out += struct.pack("<IIII", 1_768_471_200 + i, 0, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


@pytest.mark.parametrize(("sport", "payload", "expected"), CASES, ids=[f"{c[0]}-{c[2] or 'none'}" for c in CASES])
def test_identify(sport: int, payload: bytes, expected: str | None) -> None:
    assert identify(payload, 0, len(payload), len(payload)) == expected
    assert identify(payload, 0, min(len(payload), 8), len(payload)) == expected  # the first 8 bytes decide


@pytest.mark.parametrize("dissect", ["names", "all"])
def test_header_reader_and_tshark_name_the_same_protocols(dissect: Literal["names", "all"], tmp_path: Path) -> None:
    """In a capture, each datagram gets its protocol whether Python reads its headers or tshark
    dissects it; port 53 is DNS whatever its bytes."""
    frames = [_frame(sport, payload) for sport, payload, _ in CASES] + [_frame(41070, cs2(0x00, b""), dport=53)]
    got = {p.sport: p.protocol for p in FileSource(_pcap(tmp_path / "p2p.pcap", frames), "", "", dissect=dissect).packets()}
    assert got == {**{sport: expected for sport, _, expected in CASES}, 41070: None}


def test_a_flow_takes_the_protocol_its_packets_tell_and_a_rule_denies_it(tmp_path: Path) -> None:
    """An unrecognised first datagram, then CS2: the flow is cs2-p2p; the record says so, a
    `protocols` rule denies it and the alert message names it."""
    frames = [_frame(42000, b"\x17\xfe\xfd" + bytes(40)), _frame(42000, cs2(0x00, b"")), _frame(42001, stun(0x0001), dport=3478), _frame(42002, bytes(20))]
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\ngroups:\n  - name: cams\n    deny:\n      - {name: p2p, protocols: [cs2-p2p, stun]}\ndefault_verdict: allow\n")
    flows_out = tmp_path / "flows.ndjson"
    proc = run_egress("analyze", _pcap(tmp_path / "p2p.pcap", frames), "--policy", policy, "--format", "json", "--flows-out", flows_out)
    assert proc.returncode == 0, proc.stderr
    protocols = {r["source"]["port"]: r["network"].get("protocol") for r in ndjson(flows_out.read_text())}
    assert protocols == {42000: "cs2-p2p", 42001: "stun", 42002: None}
    alerts = {a["source"]["port"]: a for a in ndjson(proc.stdout)}
    assert set(alerts) == {42000, 42001}
    assert alerts[42000]["network"]["protocol"] == "cs2-p2p" and alerts[42000]["rule"]["id"] == "cams/deny/p2p"
    assert "→ 198.51.100.7 udp/32100 cs2-p2p by rule p2p" in alerts[42000]["message"]
