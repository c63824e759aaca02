#!/usr/bin/env python3
"""Write a deterministic camera-VLAN capture (classic pcap, Ethernet, 802.1Q).

    python bench/make_camera_capture.py N OUT.pcap [--seed S] [--rtsp-setup]

What is in it (every frame 802.1Q-tagged, VLANs 20/30/40, ~8,000 packets/s of
capture time, strictly increasing timestamps):

* ~99 %: intra-site video. 60 cameras (Hikvision 44:19:b6, Dahua 3c:ef:8c,
  Axis ac:cc:8e, Uniview 48:ea:63) send RTP/UDP (H.264/H.265 sized packets,
  1,200-1,400 B, H.264 FU-A headers, marker bit on the last packet of each
  frame) to the NVR 10.20.0.5; 40 of them also send a sub-stream. Every
  stream has an RTCP flow (sender reports / receiver reports) and an RTSP/TCP
  control session on port 554 carrying GET_PARAMETER keepalives. By default
  the capture starts mid-session (no RTSP SETUP), so tshark sees the video as
  plain UDP ("data", after trying its UDP heuristics), as it would on a
  running network. With --rtsp-setup every stream starts, within the first
  5 s / 5 % of the capture, with TCP handshake + OPTIONS/DESCRIBE(SDP)/SETUP/
  PLAY, and tshark decodes the video as RTP.
* ~1 %: everything else, started at random points of the capture:
  DNS A queries to the local resolver 10.20.0.53 (answers with CNAME chains
  for some names) pointing at documentation-range addresses (192.0.2.0/24,
  198.51.100.0/24, 203.0.113.0/24); NTP to pool servers; HTTPS sessions with a
  TLS 1.3 ClientHello carrying SNI; P2P UDP to 192.0.2.x:32100 and :8800.

About 300 video/control flows exist at any N; the side-traffic flows scale with
N (about 760 at N=1,000,000, so ~1,060 IP flows in total there).

The hot loop only packs headers with precompiled ``struct.Struct`` objects and
slices a prebuilt random payload buffer; 1,000,000 packets take a few seconds.
RTP packets carry a zero UDP checksum (legal for IPv4); every other packet has
correct IP/UDP/TCP checksums. UDP ports are chosen clear of tshark 4.0's
registered UDP ports so nothing is misdecoded (a 10k/100k/1M-packet output
has no malformed packets and no expert warnings).
"""
from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from array import array

PPS = 8000                      # packets per second of capture time
SLOT_US = 1_000_000 // PPS      # 125 us per packet slot
EPOCH = 1710234000              # 2024-03-12 09:00:00 UTC
SIDE_FRACTION = 0.01

NVR_IP = "10.20.0.5"
DNS_IP = "10.20.0.53"
NVR_MAC = "00:25:90:5e:00:05"       # Supermicro server running the VMS
DNS_MAC = "00:50:56:9a:00:35"       # VMware guest
GW_MAC = {20: "00:1b:54:c2:00:14", 30: "00:1b:54:c2:00:1e", 40: "00:1b:54:c2:00:28"}

VENDORS = {
    "Hikvision": ("44:19:b6", "/Streaming/Channels/{ch}01", 1400),
    "Dahua": ("3c:ef:8c", "/cam/realmonitor?channel=1&subtype={sub}", 1300),
    "Axis": ("ac:cc:8e", "/axis-media/media.amp?streamprofile={prof}", 1360),
    "Uniview": ("48:ea:63", "/media/video{ch}", 1280),
}
# Fixed MACs that deploy/policy.example.yaml names.
POLICY_MACS = {("Hikvision", 20): "44:19:b6:12:34:56", ("Dahua", 20): "3c:ef:8c:00:00:21",
               ("Axis", 30): "ac:cc:8e:00:00:31"}

# (vlan, vendor, count)
CAMERA_PLAN = [
    (20, "Hikvision", 14), (20, "Dahua", 10), (20, "Uniview", 4),
    (30, "Axis", 14), (30, "Hikvision", 4),
    (40, "Dahua", 6), (40, "Uniview", 4), (40, "Axis", 4),
]

# name -> (cname chain, addresses). Only documentation-range addresses.
DNS_ZONE = {
    "dev.hik-connect.com": (["devlb-eu.hik-connect.com"], ["198.51.100.21", "198.51.100.22"]),
    "api.hik-connect.com": ([], ["198.51.100.23"]),
    "alarm.eu.hik-connect.com": (["alarm-eu-lb.hik-connect.com"], ["198.51.100.24"]),
    "p2p.easy4ipcloud.com": (["easy4ip-eu.dahuap2pcloud.com"], ["192.0.2.40", "192.0.2.41"]),
    "www.easy4ipcloud.com": (["www-lb.easy4ipcloud.com"], ["198.51.100.30"]),
    "dispatcher.axis.com": ([], ["198.51.100.50"]),
    "update.axis.com": (["update.axis.com.edgekey.example", "e1234.a.akamaiedge.example"],
                        ["198.51.100.51"]),
    "en.ezcloud.uniview.com": (["ezcloud-lb.uniview.com"], ["198.51.100.60"]),
    "fw.vendor-updates.example": ([], ["198.51.100.70"]),
    "0.pool.ntp.org": ([], ["203.0.113.10", "203.0.113.11"]),
    "1.pool.ntp.org": ([], ["203.0.113.12", "203.0.113.13"]),
    "2.pool.ntp.org": ([], ["203.0.113.14"]),
    "3.pool.ntp.org": ([], ["203.0.113.15", "203.0.113.16"]),
    "time.windows.com": ([], ["203.0.113.20"]),
}
NTP_NAMES = ["0.pool.ntp.org", "1.pool.ntp.org", "2.pool.ntp.org", "3.pool.ntp.org",
             "time.windows.com"]
TLS_NAMES = {
    "Hikvision": ["dev.hik-connect.com", "api.hik-connect.com", "alarm.eu.hik-connect.com",
                  "fw.vendor-updates.example"],
    "Dahua": ["www.easy4ipcloud.com", "fw.vendor-updates.example"],
    "Axis": ["dispatcher.axis.com", "update.axis.com"],
    "Uniview": ["en.ezcloud.uniview.com", "fw.vendor-updates.example"],
}
P2P_HIK_SERVERS = ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"]   # :32100, no DNS

# Per 1,000,000 packets (scaled with N).
SIDE_PLAN = {"dns_only": 85, "ntp": 150, "tls": 120, "p2p": 90}


# --------------------------------------------------------------------------- helpers

def mac_b(m: str) -> bytes:
    return bytes.fromhex(m.replace(":", ""))


def ip_b(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def inet_csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    a = array("H", data)
    if sys.byteorder == "little":
        a.byteswap()
    s = sum(a)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


ETH_VLAN = struct.Struct("!6s6sHHH")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
UDP = struct.Struct("!HHHH")
TCP = struct.Struct("!HHIIBBHHH")
REC = struct.Struct("<IIII")


class Host:
    __slots__ = ("mac", "ip", "vlan", "gw", "name", "vendor", "ipid")

    def __init__(self, mac, ip, vlan, gw=None, name="", vendor=""):
        self.mac, self.ip, self.vlan, self.gw = mac_b(mac), ip_b(ip), vlan, gw
        self.name, self.vendor = name, vendor
        self.ipid = 0


def frame(src: Host, dst_ip: bytes, dst_mac: bytes, vlan: int, proto: int, l4: bytes,
          ttl: int = 64, ipid: int = 0, df: bool = True) -> bytes:
    tot = 20 + len(l4)
    hdr = IPV4.pack(0x45, 0, tot, ipid & 0xFFFF, 0x4000 if df else 0, ttl, proto, 0,
                    src.ip, dst_ip)
    c = inet_csum(hdr)
    hdr = hdr[:10] + struct.pack("!H", c) + hdr[12:]
    return ETH_VLAN.pack(dst_mac, src.mac, 0x8100, vlan, 0x0800) + hdr + l4


def l4_csum(src_ip: bytes, dst_ip: bytes, proto: int, seg: bytes) -> int:
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, proto, len(seg))
    c = inet_csum(pseudo + seg)
    return c


def udp_seg(src_ip, dst_ip, sport, dport, payload: bytes) -> bytes:
    seg = UDP.pack(sport, dport, 8 + len(payload), 0) + payload
    c = l4_csum(src_ip, dst_ip, 17, seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def tcp_seg(src_ip, dst_ip, sport, dport, seq, ack, flags, payload=b"", win=64240,
            opts=b"") -> bytes:
    off = (20 + len(opts)) // 4
    seg = TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, off << 4, flags, win, 0,
                   0) + opts + payload
    c = l4_csum(src_ip, dst_ip, 6, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class Side:
    """Side-channel packets placed into slots (slot index -> frame bytes)."""

    def __init__(self, n: int):
        self.n = n
        self.slots: dict[int, bytes] = {}
        self.flows: set = set()

    def place(self, want: int, prev: int, data: bytes) -> int:
        """Put data at the first free slot >= max(want, prev+1); return it or -1."""
        s = max(want, prev + 1)
        while s < self.n and s in self.slots:
            s += 1
        if s >= self.n:
            return -1
        self.slots[s] = data
        return s

    def flow(self, a_ip, a_port, b_ip, b_port, proto):
        k = tuple(sorted([(a_ip, a_port), (b_ip, b_port)])) + (proto,)
        self.flows.add(k)


# UDP ports >= 32768 that tshark 4.0 maps to a dissector; ephemeral ports avoid them so
# that P2P flows (whose server port has no dissector) are not misdecoded.
_TSHARK_UDP_PORTS = {34962, 34980, 37008, 41170, 44818, 45564, 47000, 47808, 49999, 54328,
                     56000, 56001, 56500, 56501, 57000, 57001, 57032, 57033, 57500, 57501,
                     57532, 57533, 59000, 59001, 59032, 59033, 59500, 59501, 59532, 59533,
                     60001}


def eph(rng: random.Random) -> int:
    while True:
        p = rng.randint(32768, 60999)
        if p not in _TSHARK_UDP_PORTS:
            return p


def ms(x: float) -> int:
    return int(x * PPS / 1000)


# --------------------------------------------------------------------------- payloads

def dns_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_query(txid: int, name: str) -> bytes:
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + dns_name(name) + struct.pack(
        "!HH", 1, 1)


def dns_response(txid: int, name: str, rng: random.Random) -> bytes:
    cnames, addrs = DNS_ZONE[name]
    q = dns_name(name) + struct.pack("!HH", 1, 1)
    answers = b""
    count = 0
    owner_ptr = 0xC00C                      # the question name
    offset = 12 + len(q)
    for cn in cnames:
        rdata = dns_name(cn)
        rr = struct.pack("!HHHIH", owner_ptr, 5, 1, 300, len(rdata)) + rdata
        owner_ptr = 0xC000 | (offset + 12)  # rdata of this record starts after 12 bytes
        offset += len(rr)
        answers += rr
        count += 1
    for a in addrs:
        answers += struct.pack("!HHHIH", owner_ptr, 1, 1, rng.choice((60, 120, 300)), 4) + ip_b(a)
        count += 1
    return struct.pack("!HHHHHH", txid, 0x8180, 1, count, 0, 0) + q + answers


def ntp_packet(mode: int, rng: random.Random, t: float) -> bytes:
    secs = int(t) + 2208988800
    frac = int((t % 1) * 2**32)
    if mode == 3:   # client
        return struct.pack("!BBbbII4sQQQQ", 0x23, 0, 6, -20, 0, 0, b"\0" * 4, 0, 0, 0,
                           (secs << 32) | frac)
    ref = ((secs - 30) << 32)
    return struct.pack("!BBbbII4sQQQQ", 0x24, 2, 6, -23, 0x1A0, 0x2B0, ip_b("192.0.2.123"),
                       ref, (secs << 32) | frac, (secs << 32) | (frac + 4000),
                       (secs << 32) | (frac + 9000))


def tls_client_hello(sni: str, rng: random.Random) -> bytes:
    def ext(t, body):
        return struct.pack("!HH", t, len(body)) + body
    host = sni.encode()
    exts = b"".join([
        ext(0x0000, struct.pack("!HBH", len(host) + 3, 0, len(host)) + host),
        ext(0x000B, b"\x01\x00"),                                           # ec_point_formats
        ext(0x000A, struct.pack("!H", 6) + struct.pack("!HHH", 0x001D, 0x0017, 0x0018)),
        ext(0x0010, struct.pack("!H", 9) + b"\x08http/1.1"),                # ALPN
        ext(0x0017, b""),                                                   # extended_master_secret
        ext(0x000D, struct.pack("!H", 8) + struct.pack("!HHHH", 0x0403, 0x0804, 0x0401, 0x0201)),
        ext(0x002B, b"\x04\x03\x04\x03\x03"),                               # supported_versions
        ext(0x002D, b"\x01\x01"),                                           # psk_key_exchange_modes
        ext(0x0033, struct.pack("!HHH", 36, 0x001D, 32) + rng.randbytes(32)),  # key_share
    ])
    suites = struct.pack("!8H", 0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0x009C)
    body = (b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32)
            + struct.pack("!H", len(suites)) + suites + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def tls_server_flight(rng: random.Random, client_sid: bytes = b"") -> bytes:
    def ext(t, body):
        return struct.pack("!HH", t, len(body)) + body
    exts = ext(0x002B, b"\x03\x04") + ext(0x0033, struct.pack("!HH", 0x001D, 32) + rng.randbytes(32))
    body = (b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\x13\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    sh = b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs
    ccs = b"\x14\x03\x03\x00\x01\x01"
    appdata = tls_appdata(rng, rng.randint(900, 1200))       # EE+Cert+CV+Finished, encrypted
    return sh + ccs + appdata


def tls_appdata(rng: random.Random, n: int) -> bytes:
    return b"\x17\x03\x03" + struct.pack("!H", n) + rng.randbytes(n)


# --------------------------------------------------------------------------- conversations

class TcpConv:
    def __init__(self, side: Side, cli: Host, cli_port: int, srv_ip: bytes, srv_mac: bytes,
                 srv_port: int, vlan: int, cli_dst_mac: bytes, srv_src_mac: bytes,
                 cseq: int, sseq: int, srv_ttl: int):
        self.side, self.cli, self.cp, self.sip, self.sp = side, cli, cli_port, srv_ip, srv_port
        self.vlan, self.cdm, self.ssm, self.srv_ttl = vlan, cli_dst_mac, srv_src_mac, srv_ttl
        self.cseq, self.sseq = cseq, sseq
        self.srv = Host("00:00:00:00:00:00", "0.0.0.0", vlan)
        self.srv.mac, self.srv.ip = srv_src_mac, srv_ip
        self.srv_ipid = cseq & 0xFFFF
        side.flow(cli.ip, cli_port, srv_ip, srv_port, 6)

    def c2s(self, flags, payload=b"", opts=b""):
        seg = tcp_seg(self.cli.ip, self.sip, self.cp, self.sp, self.cseq,
                      self.sseq if flags & ACK else 0, flags,
                      payload, 64240, opts)
        self.cseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        self.cli.ipid += 1
        return frame(self.cli, self.sip, self.cdm, self.vlan, 6, seg, 64, self.cli.ipid)

    def s2c(self, flags, payload=b"", opts=b""):
        seg = tcp_seg(self.sip, self.cli.ip, self.sp, self.cp, self.sseq, self.cseq, flags,
                      payload, 65160, opts)
        self.sseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
        self.srv_ipid += 1
        return frame(self.srv, self.cli.ip, self.cli.mac, self.vlan, 6, seg, self.srv_ttl,
                     self.srv_ipid)


def place_seq(side: Side, start: int, steps) -> int:
    """steps: iterable of (delay_ms_before, frame_bytes_callable). Returns #placed."""
    prev, slot, placed = -1, start, 0
    for delay, make in steps:
        slot = max(slot + ms(delay), prev + 1)
        got = side.place(slot, prev, make())
        if got < 0:
            break
        prev = slot = got
        placed += 1
    return placed


def rtsp_session_setup(side: Side, conv: TcpConv, st: dict, url: str, session: str,
                       rng: random.Random, start: int) -> int:
    """Place an RTSP session setup; return the slot of the PLAY reply (-1 if cut off)."""
    cam = st["cam"]
    ip = ".".join(map(str, cam.ip))
    server = f"{cam.vendor} RTSP Server"
    sdp = (f"v=0\r\no=- {st['ssrc']} 1 IN IP4 {ip}\r\ns=Media Presentation\r\n"
           f"c=IN IP4 0.0.0.0\r\nt=0 0\r\na=control:{url}\r\n"
           f"m=video 0 RTP/AVP {st['pt']}\r\na=rtpmap:{st['pt']} H264/90000\r\n"
           f"a=fmtp:{st['pt']} packetization-mode=1;profile-level-id=640028\r\n"
           f"a=control:{url}/trackID=1\r\n").encode()
    cp, sp = st["dport"], st["sport"]
    msgs = [
        (f"OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: NVR VMS/4.1\r\n\r\n",
         f"RTSP/1.0 200 OK\r\nCSeq: 1\r\nServer: {server}\r\nPublic: OPTIONS, DESCRIBE, "
         "SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER\r\n\r\n"),
        (f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n"
         "User-Agent: NVR VMS/4.1\r\n\r\n",
         f"RTSP/1.0 200 OK\r\nCSeq: 2\r\nServer: {server}\r\nContent-Base: {url}/\r\n"
         f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
         + sdp.decode()),
        (f"SETUP {url}/trackID=1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;"
         f"client_port={cp}-{cp + 1}\r\nUser-Agent: NVR VMS/4.1\r\n\r\n",
         f"RTSP/1.0 200 OK\r\nCSeq: 3\r\nServer: {server}\r\nSession: {session};timeout=60"
         f"\r\nTransport: RTP/AVP;unicast;client_port={cp}-{cp + 1};server_port={sp}-{sp + 1};"
         f"ssrc={st['ssrc']:08X};mode=\"play\"\r\n\r\n"),
        (f"PLAY {url} RTSP/1.0\r\nCSeq: 4\r\nSession: {session}\r\nRange: npt=0.000-\r\n"
         "User-Agent: NVR VMS/4.1\r\n\r\n",
         f"RTSP/1.0 200 OK\r\nCSeq: 4\r\nServer: {server}\r\nSession: {session}\r\n"
         f"RTP-Info: url={url}/trackID=1;seq={(st['seq'] + 1) & 0xFFFF};"
         f"rtptime={(st['ts'] + 3000) & 0xFFFFFFFF}\r\n\r\n"),
    ]
    opts = b"\x02\x04\x05\xb4\x04\x02\x01\x03\x03\x07\x00\x00"
    steps = [(0, lambda: conv.c2s(SYN, opts=opts)),
             (0.2, lambda: conv.s2c(SYN | ACK, opts=opts)),
             (0.1, lambda: conv.c2s(ACK))]
    for req, resp in msgs:
        steps.append((0.3, lambda r=req.encode(): conv.c2s(PSH | ACK, r)))
        steps.append((rng.uniform(1, 8), lambda r=resp.encode(): conv.s2c(PSH | ACK, r)))
    steps.append((rng.uniform(20, 40), lambda: conv.c2s(ACK)))
    # find the PLAY reply's slot: it is the second to last step placed
    prev, slot, placed = -1, start, []
    for delay, make in steps:
        slot = max(slot + ms(delay), prev + 1)
        got = side.place(slot, prev, make())
        if got < 0:
            return -1
        prev = slot = got
        placed.append(got)
    return placed[-2]


# --------------------------------------------------------------------------- generator

def build(n: int, seed: int, rtsp_setup: bool = False):
    rng = random.Random(seed)
    side = Side(n)
    scale = n / 1_000_000
    duration = n / PPS
    setup_window = max(1, min(5 * PPS, n // 20))      # RTSP setups: first 5 s / 5 %

    # ---- hosts
    cams: list[Host] = []
    for vlan, vendor, count in CAMERA_PLAN:
        oui = VENDORS[vendor][0]
        for k in range(count):
            mac = POLICY_MACS.pop((vendor, vlan), None) if k == 0 else None
            if mac is None:
                mac = oui + ":" + ":".join(f"{rng.randrange(256):02x}" for _ in range(3))
            ip = f"10.{vlan}.{1 + len(cams) // 200}.{11 + len(cams) % 200}"
            cams.append(Host(mac, ip, vlan, name=f"cam{len(cams):02d}", vendor=vendor))
    nvr_ip, dns_ip = ip_b(NVR_IP), ip_b(DNS_IP)
    nvr_mac, dns_mac = mac_b(NVR_MAC), mac_b(DNS_MAC)
    gw = {v: mac_b(m) for v, m in GW_MAC.items()}

    def toward_nvr(cam):      # (dst MAC seen from camera, src MAC of frames coming back)
        if cam.vlan == 20:
            return nvr_mac, nvr_mac
        return gw[cam.vlan], gw[cam.vlan]

    def toward_dns(cam):
        if cam.vlan == 20:
            return dns_mac, dns_mac
        return gw[cam.vlan], gw[cam.vlan]

    # ---- video streams (hot-loop templates)
    streams = []          # per stream: dict of constants/state (converted to lists below)
    for ci, cam in enumerate(cams):
        vendor = cam.vendor
        oui, path, full = VENDORS[vendor]
        nsub = 2 if ci % 3 != 2 else 1        # 40 of 60 cameras also stream a sub-stream
        for sub in range(nsub):
            # ports chosen clear of tshark's registered UDP ports (so no misdecodes)
            srv_port = (15000 if vendor in ("Hikvision", "Uniview") else 15400) + 2 * (ci * 3 + sub)
            cli_port = 42000 + 2 * (ci * 3 + sub) + (1000 if sub else 0)
            dmac, smac = toward_nvr(cam)
            # weight ~ bitrate; main 3..9, sub 1
            weight = rng.randint(3, 9) if sub == 0 else 1
            full_pl = (full if sub == 0 else 1100) - 20 - 8 - 12 + rng.randrange(-40, 1) * 2
            streams.append(dict(cam=cam, sub=sub, sport=srv_port, dport=cli_port, dmac=dmac,
                                smac=smac, weight=weight, full=full_pl,
                                ssrc=rng.getrandbits(32), seq=rng.getrandbits(16),
                                ts=rng.getrandbits(32), pt=96 if vendor != "Axis" else 97,
                                path=path.format(ch=sub + 1, sub=sub, prof=("Quality", "Balanced")[sub]),
                                fps=25 if vendor in ("Hikvision", "Dahua") else 30,
                                gop=50 if sub == 0 else 25, start=0))
            side.flow(cam.ip, srv_port, nvr_ip, cli_port, 17)           # RTP
            side.flow(cam.ip, srv_port + 1, nvr_ip, cli_port + 1, 17)   # RTCP
            side.flow(cam.ip, 554, nvr_ip, 51000 + ci * 3 + sub, 6)     # RTSP

    # ---- RTSP keepalives (GET_PARAMETER over established sessions), RTCP SR/RR
    for si, st in enumerate(streams):
        cam = st["cam"]
        dmac, smac = st["dmac"], st["smac"]
        nvr = Host(NVR_MAC, NVR_IP, cam.vlan)
        nvr.mac = smac
        conv = TcpConv(side, nvr, 51000 + cams.index(cam) * 3 + st["sub"], cam.ip, cam.mac, 554,
                       cam.vlan, cam.mac, cam.mac, rng.getrandbits(32), rng.getrandbits(32), 64)
        # client = NVR, server = camera; NVR frames: src MAC smac (NVR or gateway), dst cam MAC
        conv.cdm = cam.mac
        conv.srv = cam
        session = f"{rng.getrandbits(32):08X}"
        cseq = rng.randint(3, 40)
        url = f"rtsp://{'.'.join(map(str, cam.ip))}:554{st['path']}"
        period = 30.0
        if rtsp_setup:
            # the NVR (re)connects: TCP handshake, OPTIONS, DESCRIBE, SETUP, PLAY; the stream
            # starts right after PLAY. tshark learns the RTP ports from SETUP's Transport.
            cseq = 1
            st["start"] = play = rtsp_session_setup(side, conv, st, url, session, rng,
                                                    rng.randrange(0, setup_window))
            t0 = (play if play >= 0 else n) / PPS
            t = t0 + period
        else:
            t0 = 0.0
            t = rng.uniform(0, min(period, duration * 0.9))
        while t < duration:
            cseq += 1
            req = (f"GET_PARAMETER {url} RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {session}\r\n"
                   f"User-Agent: NVR VMS/4.1\r\n\r\n").encode()
            resp = (f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nSession: {session};timeout=60\r\n"
                    f"Server: {cam.vendor} RTSP Server\r\n"
                    f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime(EPOCH + t))}\r\n\r\n").encode()
            place_seq(side, int(t * PPS), [
                (0, lambda r=req: conv.c2s(PSH | ACK, r)),
                (rng.uniform(0.3, 3), lambda r=resp: conv.s2c(PSH | ACK, r)),
                (rng.uniform(20, 40), lambda: conv.c2s(ACK)),
            ])
            t += period

        # RTCP: camera SR every 5 s, NVR RR right after
        t = t0 + rng.uniform(0, min(5.0, duration * 0.9))
        rtcp_ipid = rng.getrandbits(16)
        while t < duration:
            secs = int(EPOCH + t) + 2208988800
            sr = struct.pack("!BBHIQIII", 0x80, 200, 6, st["ssrc"], secs << 32,
                             (st["ts"] + int(t * 90000)) & 0xFFFFFFFF, int(t * 100), int(t * 150000))
            cname = f"{cam.name}@{'.'.join(map(str, cam.ip))}".encode()
            sdes_body = struct.pack("!IBB", st["ssrc"], 1, len(cname)) + cname + b"\0"
            sdes_body += b"\0" * ((4 - len(sdes_body) % 4) % 4)
            sdes = struct.pack("!BBH", 0x81, 202, len(sdes_body) // 4) + sdes_body
            rr_ssrc = (st["ssrc"] ^ 0x5A5A5A5A)
            rr = struct.pack("!BBHIIIIIII", 0x81, 201, 7, rr_ssrc, st["ssrc"], 0,
                             (st["seq"] + int(t * 400)) & 0xFFFF, 12, 0, 0)
            cam.ipid += 1
            rtcp_ipid += 1
            f1 = frame(cam, nvr_ip, dmac, cam.vlan, 17,
                       udp_seg(cam.ip, nvr_ip, st["sport"] + 1, st["dport"] + 1, sr + sdes),
                       64, cam.ipid)
            f2 = frame(nvr, cam.ip, cam.mac, cam.vlan, 17,
                       udp_seg(nvr_ip, cam.ip, st["dport"] + 1, st["sport"] + 1, rr),
                       64, rtcp_ipid)
            place_seq(side, int(t * PPS), [(0, lambda f=f1: f), (rng.uniform(1, 10), lambda f=f2: f)])
            t += 5.0

    video_side = len(side.slots)

    # ---- side traffic (~1 %)
    budget = int(n * SIDE_FRACTION)
    counts = {k: max(1, round(v * scale)) for k, v in SIDE_PLAN.items()}
    used = 0

    def lookup(cam: Host, name: str, start: int) -> tuple[int, str]:
        """DNS A lookup; returns (slot of the answer, address)."""
        nonlocal used
        dmac, smac = toward_dns(cam)
        sport = eph(rng)
        txid = rng.getrandbits(16)
        resolver = Host(DNS_MAC, DNS_IP, cam.vlan)
        resolver.mac = smac
        side.flow(cam.ip, sport, dns_ip, 53, 17)
        cam.ipid += 1
        q = frame(cam, dns_ip, dmac, cam.vlan, 17,
                  udp_seg(cam.ip, dns_ip, sport, 53, dns_query(txid, name)), 64, cam.ipid)
        r = frame(resolver, cam.ip, cam.mac, cam.vlan, 17,
                  udp_seg(dns_ip, cam.ip, 53, sport, dns_response(txid, name, rng)), 64,
                  rng.getrandbits(16))
        s1 = side.place(start, -1, q)
        if s1 < 0:
            return -1, ""
        s2 = side.place(s1 + ms(rng.uniform(0.4, 25)), s1, r)
        used += 1 + (s2 >= 0)
        return s2, rng.choice(DNS_ZONE[name][1])

    def rand_start(tail_ms: float = 200) -> int:
        return rng.randrange(0, max(1, n - ms(tail_ms) - 1))

    # NTP
    for _ in range(counts["ntp"]):
        cam = rng.choice(cams)
        name = rng.choice(NTP_NAMES)
        s, addr = lookup(cam, name, rand_start())
        if s < 0:
            continue
        srv = Host(GW_MAC[cam.vlan], addr, cam.vlan)
        sport = 123 if rng.random() < 0.5 else eph(rng)
        t = EPOCH + s / PPS
        cam.ipid += 1
        side.flow(cam.ip, sport, srv.ip, 123, 17)
        f1 = frame(cam, srv.ip, gw[cam.vlan], cam.vlan, 17,
                   udp_seg(cam.ip, srv.ip, sport, 123, ntp_packet(3, rng, t)), 64, cam.ipid)
        f2 = frame(srv, cam.ip, cam.mac, cam.vlan, 17,
                   udp_seg(srv.ip, cam.ip, 123, sport, ntp_packet(4, rng, t + 0.02)), 54,
                   rng.getrandbits(16), df=False)
        used += place_seq(side, s + ms(rng.uniform(0.2, 2)),
                          [(0, lambda f=f1: f), (rng.uniform(8, 45), lambda f=f2: f)])

    # DNS lookups nobody follows up (cache refreshes, failed connects)
    for _ in range(counts["dns_only"]):
        cam = rng.choice(cams)
        lookup(cam, rng.choice(list(DNS_ZONE)), rand_start())

    # HTTPS with SNI
    for _ in range(counts["tls"]):
        cam = rng.choice(cams)
        name = rng.choice(TLS_NAMES[cam.vendor])
        s, addr = lookup(cam, name, rand_start(3000))
        if s < 0:
            continue
        srv = Host(GW_MAC[cam.vlan], addr, cam.vlan)
        conv = TcpConv(side, cam, eph(rng), srv.ip, srv.mac, 443, cam.vlan,
                       gw[cam.vlan], gw[cam.vlan], rng.getrandbits(32), rng.getrandbits(32), 52)
        conv.srv = srv
        rtt = rng.uniform(12, 90)
        mss = b"\x02\x04\x05\xb4\x04\x02\x01\x03\x03\x07\x00\x00"  # MSS 1460, SACKp, WS 7
        ch = tls_client_hello(name, rng)
        flight = tls_server_flight(rng)
        req = tls_appdata(rng, rng.randint(300, 700))
        resp = tls_appdata(rng, rng.randint(200, 1300))
        steps = [
            (rng.uniform(0.2, 2), lambda: conv.c2s(SYN, opts=mss)),
            (rtt, lambda: conv.s2c(SYN | ACK, opts=mss)),
            (0.1, lambda: conv.c2s(ACK)),
            (0.3, lambda: conv.c2s(PSH | ACK, ch)),
            (rtt, lambda: conv.s2c(ACK)),
            (2, lambda: conv.s2c(PSH | ACK, flight)),
            (0.2, lambda: conv.c2s(ACK)),
            (5, lambda: conv.c2s(PSH | ACK, b"\x14\x03\x03\x00\x01\x01" + tls_appdata(rng, 53))),
            (0.3, lambda: conv.c2s(PSH | ACK, req)),
            (rtt, lambda: conv.s2c(ACK)),
            (rng.uniform(5, 200), lambda: conv.s2c(PSH | ACK, resp)),
            (0.2, lambda: conv.c2s(ACK)),
            (rng.uniform(50, 1500), lambda: conv.c2s(FIN | ACK)),
            (rtt, lambda: conv.s2c(FIN | ACK)),
            (0.1, lambda: conv.c2s(ACK)),
        ]
        used += place_seq(side, s, steps)

    # P2P UDP: gets whatever is left of the side budget
    remaining = max(0, budget - used)
    per_flow = max(4, remaining // counts["p2p"])
    for k in range(counts["p2p"]):
        cam = rng.choice([c for c in cams if c.vendor in ("Hikvision", "Dahua", "Uniview")])
        start = rand_start(2000)
        if cam.vendor == "Dahua":
            s, addr = lookup(cam, "p2p.easy4ipcloud.com", start)
            dport = 8800
            if s < 0:
                continue
        else:
            s, addr, dport = start, rng.choice(P2P_HIK_SERVERS), 32100
        srv = Host(GW_MAC[cam.vlan], addr, cam.vlan)
        sport = eph(rng)
        side.flow(cam.ip, sport, srv.ip, dport, 17)
        span = max(1, n - s - 1)
        gap_ms = span / per_flow / PPS * 1000
        uid = rng.randbytes(8)
        steps = []
        reply = 0.0
        for j in range(per_flow):
            c2s = j % 2 == 0
            if c2s:
                body = b"\xf1\x41\x00\x14" + b"EGRS" + uid + struct.pack("!IH", j, 0) + b"\0\0"
                body = b"\xf1\xe0\x00\x00" if j > 2 and rng.random() < 0.5 else body
            else:
                body = b"\xf1\xe1\x00\x00" if j > 3 else b"\xf1\x42\x00\x10" + ip_b(addr) + b"\0" * 12

            def mk(c2s=c2s, body=body):
                if c2s:
                    cam.ipid += 1
                    return frame(cam, srv.ip, gw[cam.vlan], cam.vlan, 17,
                                 udp_seg(cam.ip, srv.ip, sport, dport, body), 64, cam.ipid)
                return frame(srv, cam.ip, cam.mac, cam.vlan, 17,
                             udp_seg(srv.ip, cam.ip, dport, sport, body), 49,
                             rng.getrandbits(16))
            if c2s:
                delay = max(0.0, 2 * gap_ms * rng.uniform(0.85, 1.0) - reply)
            else:
                reply = delay = min(rng.uniform(20, 120), 0.6 * gap_ms)
            steps.append((delay if j else 0, mk))
        used += place_seq(side, s, steps)

    return cams, streams, side, video_side


def write(n: int, out: str, seed: int, rtsp_setup: bool = False) -> dict:
    t0 = time.perf_counter()
    cams, streams, side, video_side = build(n, seed, rtsp_setup)
    rng = random.Random(seed ^ 0xC0FFEE)
    slots = side.slots

    # ---- hot-loop tables
    S = len(streams)
    cycle = []
    for i, st in enumerate(streams):
        cycle += [i] * st["weight"]
    rng.shuffle(cycle)
    L = len(cycle)
    # per-stream constant prefix: Ethernet+VLAN header
    eth = [ETH_VLAN.pack(st["dmac"], st["cam"].mac, 0x8100, st["cam"].vlan, 0x0800)
           for st in streams]
    addrs = [st["cam"].ip + ip_b(NVR_IP) for st in streams]
    # IP header checksum partial: 0x4500 + 0x4000 + (64<<8|17) + addresses
    base = []
    for a in addrs:
        w = struct.unpack("!4H", a)
        base.append(0x4500 + 0x4000 + (64 << 8 | 17) + sum(w))
    sport = [st["sport"] for st in streams]
    dport = [st["dport"] for st in streams]
    ssrc = [st["ssrc"] for st in streams]
    pt = [st["pt"] for st in streams]
    seq = [st["seq"] for st in streams]
    rts = [st["ts"] for st in streams]
    ipid = [rng.getrandbits(16) for _ in streams]
    full = [st["full"] for st in streams]
    tsinc = [90000 // st["fps"] for st in streams]
    gop = [st["gop"] for st in streams]
    fno = [rng.randrange(st["gop"]) for st in streams]
    left = [0] * S
    nal = [1] * S                       # H.264 NAL type of the current frame: 5 IDR, 1 non-IDR
    first = [0] * S                     # 0x80 (FU-A start bit) on a frame's first packet
    # stream s sends from slot vstart[s] on (after its PLAY with --rtsp-setup, else from 0);
    # slots before the first PLAY that carry no side packet are skipped, not filled.
    vstart = [st["start"] if st["start"] >= 0 else 1 << 62 for st in streams]
    first_start = min(vstart)
    extra = max(0, first_start - sum(1 for k in slots if k < first_start))
    # packets per frame from the stream's packet rate: P-frames p packets, I-frames 6p
    wsum = sum(st["weight"] for st in streams)
    pframe = [max(1, round(PPS * st["weight"] / wsum / st["fps"] / 1.1)) for st in streams]

    buf = random.Random(seed + 1).randbytes(1 << 20)
    mv = memoryview(buf)
    BUFMAX = len(buf) - 1600
    tail_sizes = [rng.randrange(160, 1300) for _ in range(4096)]
    jit = [rng.randrange(0, 100) for _ in range(4096)]

    hdr = struct.Struct("!HHHHHH8sHHHHBBHIIBB")
    rec = REC.pack
    hpack = hdr.pack
    out_chunks = []
    append = out_chunks.append
    join = b"".join

    f = open(out, "wb", buffering=1 << 20)
    f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    off = 0
    nbytes = 24
    side_get = slots.get
    written = 0
    for i in range(n + extra):
        us = i * SLOT_US + jit[i & 4095]
        fr = side_get(i)
        if fr is not None:
            ln = len(fr)
            append(rec(EPOCH + us // 1_000_000, us % 1_000_000, ln, ln))
            append(fr)
        else:
            if i < first_start:
                continue
            c = i % L
            s = cycle[c]
            while vstart[s] > i:
                c = (c + 1) % L
                s = cycle[c]
            lf = left[s]
            if lf == 0:                       # start a new video frame
                k = fno[s] = fno[s] + 1
                idr = k % gop[s] == 0
                lf = pframe[s] * (6 if idr else 1) + (k % 3 == 0)
                nal[s] = 5 if idr else 1
                first[s] = 0x80
                rts[s] = (rts[s] + tsinc[s]) & 0xFFFFFFFF
            lf -= 1
            left[s] = lf
            if lf:
                pl = full[s]
                b1 = pt[s]
                h0, h1 = 0x7C, first[s] | nal[s]          # FU-A indicator, FU header
            else:
                pl = tail_sizes[i & 4095]
                b1 = pt[s] | 0x80
                if first[s]:                              # one-packet frame: single NAL unit
                    h0, h1 = (0x65 if nal[s] == 5 else 0x41), 0x9A
                else:
                    h0, h1 = 0x7C, 0x40 | nal[s]          # FU-A end
            first[s] = 0
            q = (seq[s] + 1) & 0xFFFF
            seq[s] = q
            d = (ipid[s] + 1) & 0xFFFF
            ipid[s] = d
            tot = pl + 40
            c = base[s] + tot + d
            c = (c & 0xFFFF) + (c >> 16)
            c = ~((c & 0xFFFF) + (c >> 16)) & 0xFFFF
            ln = tot + 18
            append(rec(EPOCH + us // 1_000_000, us % 1_000_000, ln, ln))
            append(eth[s])
            append(hpack(0x4500, tot, d, 0x4000, 0x4011, c, addrs[s], sport[s], dport[s],
                         pl + 20, 0, 0x80, b1, q, rts[s], ssrc[s], h0, h1))
            off += 1531
            if off > BUFMAX:
                off -= BUFMAX
            append(mv[off:off + pl - 2])
        nbytes += ln + 16
        written += 1
        if len(out_chunks) > 16384:
            f.write(join(out_chunks))
            out_chunks.clear()
    f.write(join(out_chunks))
    f.close()
    dt = time.perf_counter() - t0
    assert written == n, (written, n)
    return dict(packets=n, bytes=nbytes, rtsp_setup=rtsp_setup, duration_s=n / PPS, cameras=len(cams),
                video_streams=len(streams), ip_flows=len(side.flows),
                side_packets=len(slots) - video_side, control_packets=video_side,
                seconds=round(dt, 2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packets", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rtsp-setup", action="store_true",
                    help="start every video stream with an RTSP session setup (DESCRIBE/SETUP/"
                         "PLAY) so that tshark decodes the video as RTP; default: the capture "
                         "starts mid-session and the video is plain UDP to tshark")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    if a.packets < 1000:
        ap.error("N must be >= 1000")
    info = write(a.packets, a.out, a.seed, a.rtsp_setup)
    if not a.quiet:
        print(" ".join(f"{k}={v}" for k, v in info.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
