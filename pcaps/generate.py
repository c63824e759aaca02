#!/usr/bin/env python3
"""Generate the committed sample captures, deterministically.

    python pcaps/generate.py [OUTDIR]      # default: the directory of this script

writes

    street-cctv-vlan20.pcap      (pcap,   every frame 802.1Q VLAN 20)
    building-cctv-ipv6.pcapng    (pcapng, untagged + one priority-tagged flow)
    trunk-qinq-mixed.pcap        (pcap,   802.1ad/802.1Q QinQ + untagged)

Everything is fixed: timestamps start at 2026-01-15T10:00:00Z, ports, TCP
sequence numbers, IP ids, DNS ids and the "random" bytes (TLS randoms, key
shares, opaque payloads: a SHA-256 stream over a fixed label) are derived from
constants, so two runs give byte-identical files. Packets are built with scapy
(layers 2-4, DNS) and hand-built payloads (TLS ClientHello/ServerHello, NTP,
RTP, RTSP, HTTP, STUN); the file formats are written here, not by scapy, so the
headers carry no host- or version-dependent fields.

See pcaps/README.md for what each file holds and the alerts it should raise.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR, DNSRR, dns_compress
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

#: 2026-01-15T10:00:00Z
T0 = 1768471200
US = 1_000_000

ROUTER_MAC = "00:00:5e:00:01:14"
RESOLVER_MAC = "00:00:5e:00:01:35"

LINKTYPE_ETHERNET = 1
MIN_FRAME = 60  # Ethernet minimum without FCS, as a mirror port shows it


# --------------------------------------------------------------------------
# deterministic bytes


def at(t_s: float) -> int:
    """Capture time t_s seconds after T0, in integer microseconds."""
    return T0 * US + round(t_s * US)


def stream(label: str, n: int) -> bytes:
    """n pseudo-random but fixed bytes named by label (SHA-256 in counter mode)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


# --------------------------------------------------------------------------
# application payloads


def _u8(v: int) -> bytes:
    return struct.pack("!B", v)


def _u16(v: int) -> bytes:
    return struct.pack("!H", v)


def _u24(v: int) -> bytes:
    return struct.pack("!I", v)[1:]


def _ext(ext_type: int, body: bytes) -> bytes:
    return _u16(ext_type) + _u16(len(body)) + body


def tls_client_hello(label: str, sni: str | None, alpn: tuple[str, ...] = ()) -> bytes:
    """A TLS 1.3-capable ClientHello record (as a modern client sends it).

    With ``sni`` it carries a server_name extension; without, none at all.
    """
    ciphers = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030,
               0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
    exts = b""
    if sni is not None:
        name = sni.encode("ascii")
        entry = _u8(0) + _u16(len(name)) + name          # host_name
        exts += _ext(0x0000, _u16(len(entry)) + entry)   # server_name
    exts += _ext(0x0017, b"")                            # extended_master_secret
    exts += _ext(0xFF01, b"\x00")                        # renegotiation_info
    groups = b"".join(_u16(g) for g in (0x001D, 0x0017, 0x0018))
    exts += _ext(0x000A, _u16(len(groups)) + groups)     # supported_groups
    exts += _ext(0x000B, b"\x01\x00")                    # ec_point_formats
    exts += _ext(0x0023, b"")                            # session_ticket
    if alpn:
        protos = b"".join(_u8(len(p)) + p.encode() for p in alpn)
        exts += _ext(0x0010, _u16(len(protos)) + protos)  # ALPN
    sigs = b"".join(_u16(s) for s in (0x0403, 0x0804, 0x0401, 0x0503,
                                      0x0805, 0x0501, 0x0806, 0x0601))
    exts += _ext(0x000D, _u16(len(sigs)) + sigs)         # signature_algorithms
    exts += _ext(0x002B, b"\x04\x03\x04\x03\x03")        # supported_versions 1.3, 1.2
    exts += _ext(0x002D, b"\x01\x01")                    # psk_key_exchange_modes
    share = _u16(0x001D) + _u16(32) + stream(f"{label}/ch-key", 32)
    exts += _ext(0x0033, _u16(len(share)) + share)       # key_share x25519
    session_id = stream(f"{label}/ch-sid", 32)
    body = (
        b"\x03\x03"                                       # legacy_version TLS 1.2
        + stream(f"{label}/ch-random", 32)
        + _u8(len(session_id)) + session_id
        + _u16(2 * len(ciphers)) + b"".join(_u16(c) for c in ciphers)
        + b"\x01\x00"                                     # compression: null
        + _u16(len(exts)) + exts
    )
    hs = b"\x01" + _u24(len(body)) + body                 # ClientHello
    return b"\x16\x03\x01" + _u16(len(hs)) + hs


def tls_server_hello(label: str) -> bytes:
    """ServerHello (TLS 1.3) + ChangeCipherSpec + one encrypted record, as sent."""
    session_id = stream(f"{label}/ch-sid", 32)  # echoed
    exts = _ext(0x002B, b"\x03\x04")
    exts += _ext(0x0033, _u16(0x001D) + _u16(32) + stream(f"{label}/sh-key", 32))
    body = (
        b"\x03\x03" + stream(f"{label}/sh-random", 32)
        + _u8(32) + session_id
        + _u16(0x1301) + b"\x00"
        + _u16(len(exts)) + exts
    )
    hs = b"\x02" + _u24(len(body)) + body
    return (
        b"\x16\x03\x03" + _u16(len(hs)) + hs
        + b"\x14\x03\x03\x00\x01\x01"
        + tls_app_data(f"{label}/sh-enc", 120)
    )


def tls_app_data(label: str, n: int) -> bytes:
    """An opaque TLS application_data record of n encrypted bytes."""
    return b"\x17\x03\x03" + _u16(n) + stream(label, n)


def tls_client_finish(label: str) -> bytes:
    return b"\x14\x03\x03\x00\x01\x01" + tls_app_data(f"{label}/cfin", 53)


NTP_EPOCH_OFFSET = 2208988800


def _ntp_ts(t_us: int) -> bytes:
    sec, frac_us = divmod(t_us, US)
    return struct.pack("!II", sec + NTP_EPOCH_OFFSET, (frac_us << 32) // US)


def ntp_request(t_us: int) -> bytes:
    # LI 0, VN 4, mode 3 (client); stratum 0; poll 6; precision -23
    return (b"\x23\x00\x06\xe9" + b"\x00" * 12 + b"\x00" * 24 + _ntp_ts(t_us))


def ntp_reply(req_t_us: int, t_us: int) -> bytes:
    # LI 0, VN 4, mode 4 (server); stratum 2; poll 6; precision -24
    return (
        b"\x24\x02\x06\xe8"
        + struct.pack("!II", 0x00000211, 0x00000433)      # root delay, dispersion
        + bytes([192, 0, 2, 123])                          # reference id (upstream)
        + _ntp_ts(t_us - 64 * US)                          # reference
        + _ntp_ts(req_t_us)                                # origin (client transmit)
        + _ntp_ts(t_us - 40)                               # receive
        + _ntp_ts(t_us)                                    # transmit
    )


def rtp_packet(seq: int, ts: int, ssrc: int, size: int) -> bytes:
    hdr = struct.pack("!BBHII", 0x80, 96, seq, ts, ssrc)   # V2, PT 96 (H.264)
    # an H.264 FU-A fragment: indicator 0x7c (NRI 3, type 28), header (type 1)
    fu = b"\x7c" + (b"\x81" if seq % 10 == 0 else b"\x01")
    return hdr + fu + stream(f"rtp/{ssrc:08x}/{seq}", size - len(hdr) - 2)


def stun_binding_request(txid: bytes) -> bytes:
    return _u16(0x0001) + _u16(0) + b"\x21\x12\xa4\x42" + txid


def stun_binding_response(txid: bytes, mapped_ip: str, mapped_port: int) -> bytes:
    cookie = 0x2112A442
    ip = bytes(int(x) for x in mapped_ip.split("."))
    xip = struct.pack("!I", struct.unpack("!I", ip)[0] ^ cookie)
    attr = _u16(0x0020) + _u16(8) + b"\x00\x01" + _u16(mapped_port ^ (cookie >> 16)) + xip
    return _u16(0x0101) + _u16(len(attr)) + struct.pack("!I", cookie) + txid + attr


def crlf(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------
# hosts, frames and a capture being assembled


@dataclass(frozen=True)
class Host:
    ip: str
    mac: str | None = None  # None: a remote host, seen through the router

    @property
    def v6(self) -> bool:
        return ":" in self.ip

    @property
    def l2(self) -> str:
        return self.mac or ROUTER_MAC


def local(ip: str, mac: str) -> Host:
    return Host(ip, mac)


def remote(ip: str) -> Host:
    return Host(ip)


Tags = tuple[Packet, ...]
VLAN20: Tags = (Dot1Q(vlan=20),)
UNTAGGED: Tags = ()
PRIO5: Tags = (Dot1Q(prio=5, vlan=0),)
QINQ_100_20: Tags = (Dot1AD(vlan=100), Dot1Q(vlan=20))


@dataclass
class Capture:
    """Frames collected from several scenes, written out in time order."""

    name: str
    snaplen: int = 262144
    frames: list[tuple[int, int, bytes, int, str]] = field(default_factory=list)
    _ipid: dict[str, int] = field(default_factory=dict)

    def ipid(self, ip: str) -> int:
        if ip not in self._ipid:
            self._ipid[ip] = (0x1000 * (len(self._ipid) + 1)) & 0xFFFF
        self._ipid[ip] = (self._ipid[ip] + 1) & 0xFFFF
        return self._ipid[ip]

    def emit(self, t_us: int, src: Host, dst: Host, l4: Packet, tags: Tags,
             comment: str = "") -> None:
        if src.v6:
            l3 = IPv6(src=src.ip, dst=dst.ip, hlim=64 if src.mac else 54)
        else:
            l3 = IP(src=src.ip, dst=dst.ip, ttl=64 if src.mac else 54,
                    id=self.ipid(src.ip), flags="DF" if TCP in l4 else 0)
        frame: Packet = Ether(src=src.l2, dst=dst.l2)
        for tag in tags:
            frame = frame / tag.copy()
        data = bytes(frame / l3 / l4)
        if len(data) < MIN_FRAME:
            data += b"\x00" * (MIN_FRAME - len(data))
        wirelen = len(data)
        self.frames.append((t_us, len(self.frames), data[: self.snaplen], wirelen, comment))

    def ordered(self) -> list[tuple[int, bytes, int, str]]:
        return [(t, d, w, c) for t, _, d, w, c in sorted(self.frames)]


class Tcp:
    """One TCP connection; keeps seq/ack right in both directions."""

    def __init__(self, cap: Capture, cli: Host, cport: int, srv: Host, sport: int,
                 t_s: float, tags: Tags, cli_isn: int, srv_isn: int,
                 rtt_us: int = 20_000, label: str = ""):
        self.cap, self.cli, self.srv, self.tags = cap, cli, srv, tags
        self.cport, self.sport = cport, sport
        self.t = at(t_s)
        self.rtt = rtt_us
        self.seq = {True: cli_isn, False: srv_isn}   # next seq, by "from client"
        self.label = label

    def _send(self, from_cli: bool, flags: str, payload: bytes = b"",
              opts: list | None = None, dt: int | None = None,
              ack: bool = True) -> None:
        if dt is not None:
            self.t += dt
        src, dst = (self.cli, self.srv) if from_cli else (self.srv, self.cli)
        sport, dport = (self.cport, self.sport) if from_cli else (self.sport, self.cport)
        if "S" in flags:
            window = 64240 if from_cli else 65160
        else:  # scaled: wscale 7 (client) and 8 (server) were agreed in the SYNs
            window = 502 if from_cli else 252
        tcp = TCP(sport=sport, dport=dport, flags=flags, seq=self.seq[from_cli],
                  ack=self.seq[not from_cli] if ack else 0,
                  window=window, options=opts or [])
        l4 = tcp / Raw(payload) if payload else tcp
        self.cap.emit(self.t, src, dst, l4, self.tags, self.label)
        self.seq[from_cli] = (self.seq[from_cli] + len(payload)
                              + (1 if ("S" in flags or "F" in flags) else 0)) & 0xFFFFFFFF

    def handshake(self) -> "Tcp":
        syn_opts = [("MSS", 1460), ("NOP", None), ("WScale", 7),
                    ("NOP", None), ("NOP", None), ("SAckOK", b"")]
        self._send(True, "S", opts=syn_opts, dt=0, ack=False)
        self._send(False, "SA", opts=[("MSS", 1400), ("NOP", None), ("WScale", 8),
                                       ("NOP", None), ("NOP", None), ("SAckOK", b"")],
                   dt=self.rtt // 2)
        self._send(True, "A", dt=self.rtt // 2)
        return self

    def data(self, from_cli: bool, payload: bytes, dt: int | None = None,
             acked: bool = True) -> "Tcp":
        """Send payload; the peer ACKs it (unless acked=False: the next segment will)."""
        self._send(from_cli, "PA", payload, dt=200 if dt is None else dt)
        if acked:
            self._send(not from_cli, "A", dt=self.rtt // 2)
        return self

    def close(self, from_cli: bool = True, dt: int = 2_000) -> "Tcp":
        self._send(from_cli, "FA", dt=dt)
        self._send(not from_cli, "FA", dt=self.rtt // 2)
        self._send(from_cli, "A", dt=self.rtt // 2)
        return self


def udp(cap: Capture, t_s: float, src: Host, sport: int, dst: Host, dport: int,
        payload: bytes, tags: Tags, comment: str = "") -> None:
    cap.emit(at(t_s), src, dst,
             UDP(sport=sport, dport=dport) / Raw(payload), tags, comment)


def dns_exchange(cap: Capture, t_s: float, client: Host, cport: int, resolver: Host,
                 txid: int, qname: str, qtype: str,
                 chain: list[tuple[str, str, str, int]], tags: Tags,
                 rtt_us: int = 1_800) -> None:
    """Query and answer; chain: [(rrname, type, rdata, ttl), ...] (CNAMEs first)."""
    comment = f"DNS {qtype} {qname}"
    q = DNS(id=txid, rd=1, qd=DNSQR(qname=qname, qtype=qtype))
    cap.emit(at(t_s), client, resolver,
             UDP(sport=cport, dport=53) / q, tags, comment)
    r = DNS(id=txid, qr=1, rd=1, ra=1, qd=DNSQR(qname=qname, qtype=qtype),
            an=[DNSRR(rrname=n, type=ty, rdata=rd, ttl=ttl) for n, ty, rd, ttl in chain])
    cap.emit(at(t_s) + rtt_us, resolver, client,
             UDP(sport=53, dport=cport) / dns_compress(r), tags, comment)


def tls_session(conn: Tcp, sni: str | None, label: str, alpn: tuple[str, ...] = (),
                reply_sizes: tuple[int, ...] = (160,)) -> Tcp:
    """ClientHello, ServerHello+CCS+encrypted, client finish + request, responses."""
    # each segment is ACKed by the peer's next one (as delayed ACKs do)
    conn.data(True, tls_client_hello(label, sni, alpn), acked=False)
    conn.data(False, tls_server_hello(label), dt=conn.rtt, acked=False)
    conn.data(True, tls_client_finish(label) + tls_app_data(f"{label}/req", 80),
              acked=False)
    for i, n in enumerate(reply_sizes):
        conn.data(False, tls_app_data(f"{label}/resp{i}", n),
                  dt=conn.rtt if i == 0 else 300, acked=i == len(reply_sizes) - 1)
    return conn


# --------------------------------------------------------------------------
# File A: street-cctv-vlan20.pcap


def street_cctv_vlan20() -> Capture:
    cap = Capture("street-cctv-vlan20.pcap", snaplen=384)
    tags = VLAN20
    resolver = local("10.20.0.53", RESOLVER_MAC)
    H = local("10.20.1.11", "44:19:b6:12:34:56")    # Hikvision camera
    D = local("10.20.1.21", "3c:ef:8c:00:00:21")    # Dahua camera
    NVR = local("10.20.0.5", "00:40:8c:00:00:05")    # NVR (Axis OUI)

    # j. D <-> 192.0.2.80:443, already established when the capture started:
    #    first frame is the server's, no SYN anywhere for it.
    j = Tcp(cap, D, 49500, remote("192.0.2.80"), 443, 0.0, tags,
            cli_isn=0x5A17C0DE, srv_isn=0x0BADF00D, rtt_us=180_000,
            label="j mid-stream D <-> 192.0.2.80:443 (no SYN)")
    j.data(False, tls_app_data("j/s0", 96), dt=0, acked=False)
    j.data(True, tls_app_data("j/c0", 64), dt=40_000)
    j.data(False, tls_app_data("j/s1", 240), dt=900_000, acked=False)
    j.data(True, tls_app_data("j/c1", 48), dt=60_000)

    # l. intra-site video: NVR pulls H's stream over RTSP, RTP over UDP 5000.
    rtsp = Tcp(cap, NVR, 40100, H, 554, 0.30, tags, cli_isn=0x00A0C000,
               srv_isn=0x00B0D000, rtt_us=400, label="l intra-site RTSP NVR -> H")
    rtsp.handshake()
    url = "rtsp://10.20.1.11:554/Streaming/Channels/101"
    rtsp.data(True, crlf(f"SETUP {url}/trackID=1 RTSP/1.0", "CSeq: 2",
                         "Transport: RTP/AVP;unicast;client_port=5000-5001"),
              acked=False)
    rtsp.data(False, crlf("RTSP/1.0 200 OK", "CSeq: 2", "Session: 7f3a2b1c;timeout=60",
                          "Transport: RTP/AVP;unicast;client_port=5000-5001;"
                          "server_port=5000-5001;ssrc=48696B31"), dt=800, acked=False)
    rtsp.data(True, crlf(f"PLAY {url} RTSP/1.0", "CSeq: 3", "Session: 7f3a2b1c"),
              acked=False)
    rtsp.data(False, crlf("RTSP/1.0 200 OK", "CSeq: 3", "Session: 7f3a2b1c"), dt=800)
    for i in range(40):
        udp(cap, 0.40 + 0.33 * i, H, 5000, NVR, 5000,
            rtp_packet(4000 + i, 3600 * i, 0x48696B31, 1200), tags,
            "l intra-site RTP H -> NVR")
    rtsp.t = at(13.6)
    rtsp.data(True, crlf(f"TEARDOWN {url} RTSP/1.0", "CSeq: 4", "Session: 7f3a2b1c"),
              acked=False)
    rtsp.data(False, crlf("RTSP/1.0 200 OK", "CSeq: 4"), dt=600, acked=False)
    rtsp.close(from_cli=True, dt=300)

    # a. H resolves dev.hik-connect.com (CNAME -> hik-edge.cdn.example -> A),
    #    then TLS without SNI to 198.51.100.200:443.
    dns_exchange(cap, 1.00, H, 53001, resolver, 0x1A01, "dev.hik-connect.com", "A",
                 [("dev.hik-connect.com", "CNAME", "hik-edge.cdn.example", 300),
                  ("hik-edge.cdn.example", "A", "198.51.100.200", 60)], tags)
    a = Tcp(cap, H, 50001, remote("198.51.100.200"), 443, 1.01, tags,
            cli_isn=0x1A000001, srv_isn=0x2A000001, label="a H -> dev.hik-connect.com, no SNI")
    tls_session(a.handshake(), None, "a").close()

    # b. D resolves p2p.dh-relay.example (CNAME www.easy4ipcloud.com -> A), UDP 8800.
    dns_exchange(cap, 2.00, D, 53002, resolver, 0x1B01, "p2p.dh-relay.example", "A",
                 [("p2p.dh-relay.example", "CNAME", "www.easy4ipcloud.com", 300),
                  ("www.easy4ipcloud.com", "A", "198.51.100.201", 60)], tags)
    relay = remote("198.51.100.201")
    lb = "b D -> p2p.dh-relay.example udp/8800"
    for i, (t, out, n) in enumerate([(2.010, True, 88), (2.032, False, 64),
                                     (2.040, True, 120), (2.061, False, 72),
                                     (2.500, True, 40)]):
        pl = b"\xcc\x01" + _u16(n) + stream(f"b/{i}", n - 4)
        if out:
            udp(cap, t, D, 40001, relay, 8800, pl, tags, lb)
        else:
            udp(cap, t, relay, 8800, D, 40001, pl, tags, lb)

    # c. H resolves 0.pool.ntp.org, NTP to it.
    dns_exchange(cap, 3.00, H, 53003, resolver, 0x1C01, "0.pool.ntp.org", "A",
                 [("0.pool.ntp.org", "A", "203.0.113.200", 150)], tags)
    ntp_srv = remote("203.0.113.200")
    t_req = at(3.010)
    udp(cap, 3.010, H, 123, ntp_srv, 123, ntp_request(t_req), tags, "c H NTP 0.pool.ntp.org")
    udp(cap, 3.034, ntp_srv, 123, H, 123, ntp_reply(t_req, t_req + 24_000 - 12_000), tags,
        "c H NTP 0.pool.ntp.org")

    # d. D: NTP to 203.0.113.201 without any DNS.
    ntp2 = remote("203.0.113.201")
    t_req = at(4.000)
    udp(cap, 4.000, D, 123, ntp2, 123, ntp_request(t_req), tags, "d D NTP, no DNS")
    udp(cap, 4.026, ntp2, 123, D, 123, ntp_reply(t_req, t_req + 13_000), tags, "d D NTP, no DNS")

    # e. H: TLS with SNI fw.vendor-updates.example, no DNS.
    e = Tcp(cap, H, 50002, remote("198.51.100.150"), 443, 5.00, tags,
            cli_isn=0x1E000001, srv_isn=0x2E000001, label="e H SNI fw.vendor-updates.example")
    tls_session(e.handshake(), "fw.vendor-updates.example", "e",
                alpn=("http/1.1",), reply_sizes=(240, 200)).close()

    # f. H: TLS without SNI to 198.51.100.10:443, no DNS.
    f = Tcp(cap, H, 50003, remote("198.51.100.10"), 443, 6.00, tags,
            cli_isn=0x1F000001, srv_isn=0x2F000001, label="f H -> 198.51.100.10:443, no SNI")
    tls_session(f.handshake(), None, "f").close()

    # g. H: plain data to 198.51.100.10:8000, no DNS.
    g = Tcp(cap, H, 50004, remote("198.51.100.10"), 8000, 7.00, tags,
            cli_isn=0x10000001, srv_isn=0x20000001, label="g H -> 198.51.100.10:8000")
    g.handshake()
    g.data(True, b"\x00\x00\x00\x40\x5a\x00\x00\x00" + stream("g/c0", 56), acked=False)
    g.data(False, b"\x00\x00\x00\x20\x5a\x00\x00\x01" + stream("g/s0", 24), dt=10_000)
    g.close()

    # h. D: UDP to 192.0.2.50:32100 (a P2P "hello"), 2 out 1 back.
    p2p = remote("192.0.2.50")
    lh = "h D -> 192.0.2.50 udp/32100"
    udp(cap, 8.000, D, 40002, p2p, 32100, b"\xf1\x00\x00\x00", tags, lh)
    udp(cap, 8.150, p2p, 32100, D, 40002, b"\xf1\x01\x00\x04" + stream("h/s0", 4), tags, lh)
    udp(cap, 8.300, D, 40002, p2p, 32100, b"\xf1\xe0\x00\x00", tags, lh)

    # i. inbound: 203.0.113.150 opens RTSP on H:554 (not egress).
    i = Tcp(cap, remote("203.0.113.150"), 51000, H, 554, 9.00, tags,
            cli_isn=0x30000001, srv_isn=0x40000001, label="i inbound 203.0.113.150 -> H:554")
    i.handshake()
    i.data(True, crlf("OPTIONS rtsp://10.20.1.11:554/ RTSP/1.0", "CSeq: 1",
                      "User-Agent: LibVLC/3.0.18"), acked=False)
    i.data(False, crlf("RTSP/1.0 200 OK", "CSeq: 1",
                       "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"), dt=500)
    i.close(from_cli=True)

    # k. H: HTTP GET to 203.0.113.160:80 with an IP-literal Host.
    k = Tcp(cap, H, 50005, remote("203.0.113.160"), 80, 10.00, tags,
            cli_isn=0x1B000001, srv_isn=0x2B000001, label="k H HTTP Host: 203.0.113.160")
    k.handshake()
    k.data(True, crlf("GET /api/v1/heartbeat?sn=DS-2CD2143G2 HTTP/1.1",
                      "Host: 203.0.113.160", "User-Agent: Hikvision-Webs",
                      "Accept: */*", "Connection: close"), acked=False)
    body = b'{"ok":true}'
    k.data(False, crlf("HTTP/1.1 200 OK", "Content-Type: application/json",
                       f"Content-Length: {len(body)}", "Connection: close")[:-2]
           + b"\r\n" + body, dt=10_000, acked=False)
    k.close(from_cli=False, dt=100)
    return cap


# --------------------------------------------------------------------------
# File B: building-cctv-ipv6.pcapng


def building_cctv_ipv6() -> Capture:
    cap = Capture("building-cctv-ipv6.pcapng")
    resolver6 = local("fd30::53", RESOLVER_MAC)
    A4 = local("10.30.1.31", "ac:cc:8e:00:00:31")   # Axis camera, IPv4
    A6 = local("fd30::31", "ac:cc:8e:00:00:31")     # the same camera, IPv6
    U = local("10.30.1.99", "02:00:00:00:00:99")    # unknown, locally administered

    # a. AAAA prod.adm.connect.axis.com over IPv6, TLS with SNI.
    dns_exchange(cap, 0.00, A6, 53010, resolver6, 0x2A01, "prod.adm.connect.axis.com",
                 "AAAA", [("prod.adm.connect.axis.com", "AAAA", "2001:db8:2::443", 300)],
                 UNTAGGED)
    a = Tcp(cap, A6, 50010, remote("2001:db8:2::443"), 443, 0.01, UNTAGGED,
            cli_isn=0x3A000001, srv_isn=0x4A000001,
            label="a A -> prod.adm.connect.axis.com (SNI)")
    tls_session(a.handshake(), "prod.adm.connect.axis.com", "B.a",
                alpn=("h2", "http/1.1"), reply_sizes=(300, 96)).close()

    # b. IPv6 TLS to 2001:db8:1::5:443, no DNS, no SNI.
    b = Tcp(cap, A6, 50011, remote("2001:db8:1::5"), 443, 1.50, UNTAGGED,
            cli_isn=0x3B000001, srv_isn=0x4B000001, rtt_us=190_000,
            label="b A -> [2001:db8:1::5]:443, no DNS")
    tls_session(b.handshake(), None, "B.b").close()

    # c. STUN over UDP, priority-tagged (VLAN 0, PCP 5) both ways.
    stun = remote("198.51.100.99")
    lc = "c A STUN, priority-tagged VID 0 PCP 5"
    for n in range(2):
        txid = stream(f"B.c/tx{n}", 12)
        t = 3.50 + 0.5 * n
        udp(cap, t, A4, 50012, stun, 3478, stun_binding_request(txid), PRIO5, lc)
        udp(cap, t + 0.021, stun, 3478, A4, 50012,
            stun_binding_response(txid, "198.51.100.1", 50012), PRIO5, lc)

    # d. unknown device U: TLS (no SNI) to 198.51.100.10:443.
    d = Tcp(cap, U, 50013, remote("198.51.100.10"), 443, 5.50, UNTAGGED,
            cli_isn=0x3D000001, srv_isn=0x4D000001, label="d U -> 198.51.100.10:443")
    tls_session(d.handshake(), None, "B.d").close()
    return cap


# --------------------------------------------------------------------------
# File C: trunk-qinq-mixed.pcap


def trunk_qinq_mixed() -> Capture:
    cap = Capture("trunk-qinq-mixed.pcap")
    resolver = local("10.20.0.53", RESOLVER_MAC)
    H2 = local("10.20.2.77", "44:19:b6:00:00:77")   # Hikvision, behind QinQ
    V = local("192.168.1.50", "48:ea:63:00:00:50")  # Uniview, untagged

    # a. QinQ (outer 802.1ad VLAN 100, inner 802.1Q VLAN 20).
    dns_exchange(cap, 0.00, H2, 53020, resolver, 0x3C01, "eucas.ezvizlife.com", "A",
                 [("eucas.ezvizlife.com", "A", "198.51.100.210", 120)], QINQ_100_20)
    a = Tcp(cap, H2, 50020, remote("198.51.100.210"), 6500, 0.01, QINQ_100_20,
            cli_isn=0x5A000001, srv_isn=0x6A000001, label="a H2 -> eucas.ezvizlife.com:6500")
    a.handshake()
    a.data(True, b"\x9e\xba\xac\xe9" + _u16(1) + _u16(92) + stream("C.a/c0", 92),
           acked=False)
    a.data(False, b"\x9e\xba\xac\xe9" + _u16(2) + _u16(36) + stream("C.a/s0", 36),
           dt=20_000, acked=False)
    a.data(True, b"\x9e\xba\xac\xe9" + _u16(3) + _u16(16) + stream("C.a/c1", 16), dt=30_000)

    # b. untagged: Uniview V -> 192.0.2.99:443.
    b = Tcp(cap, V, 50021, remote("192.0.2.99"), 443, 0.80, UNTAGGED,
            cli_isn=0x5B000001, srv_isn=0x6B000001, rtt_us=170_000,
            label="b V -> 192.0.2.99:443")
    tls_session(b.handshake(), None, "C.b").close()
    return cap


# --------------------------------------------------------------------------
# file formats


def write_pcap(path: Path, cap: Capture) -> None:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, cap.snaplen,
                                LINKTYPE_ETHERNET))
    for t, data, wirelen, _ in cap.ordered():
        sec, usec = divmod(t, US)
        out += struct.pack("<IIII", sec, usec, len(data), wirelen) + data
    path.write_bytes(bytes(out))


def _opt(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * pad


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def write_pcapng(path: Path, cap: Capture, if_name: str = "eth1") -> None:
    end = _opt(0, b"")
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + _opt(4, b"egress pcaps/generate.py") + end)
    idb = _block(0x00000001, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, cap.snaplen)
                 + _opt(2, if_name.encode()) + _opt(9, b"\x06") + end)
    out = bytearray(shb + idb)
    for t, data, wirelen, comment in cap.ordered():
        body = struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(data), wirelen)
        body += data + b"\x00" * ((-len(data)) % 4)
        if comment:
            body += _opt(1, comment.encode()) + end
        out += _block(0x00000006, body)
    path.write_bytes(bytes(out))


def write_all(argv: list[str], builds) -> int:  # builds: ((Capture factory, writer), ...)
    """Build each capture and write it into argv[1] (default: pcaps/), saying what was written."""
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    outdir.mkdir(parents=True, exist_ok=True)
    for build, writer in builds:
        cap = build()
        path = outdir / cap.name
        writer(path, cap)
        print(f"{path}: {len(cap.frames)} frames, {path.stat().st_size} bytes")
    return 0


def main(argv: list[str]) -> int:
    return write_all(argv, ((street_cctv_vlan20, write_pcap), (building_cctv_ipv6, write_pcapng), (trunk_qinq_mixed, write_pcap)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
