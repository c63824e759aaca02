#!/usr/bin/env python3
"""Generate the committed captures of the learned baseline (SPEC: Learned baseline), deterministically.

    python pcaps/generate_baseline.py [OUTDIR]      # default: the directory of this script

writes

    baseline-learn-enforce.pcap   (pcap, every frame 802.1Q VLAN 20, 40 minutes of flow time)
    baseline-upload.pcap          (pcap, every frame 802.1Q VLAN 20, 17 minutes; snaplen 256)

The first shows a group learning for 15 minutes and then enforcing: known keys stay
silent, each new key raises one new-destination alert, a deny rule alerts while the group
learns. The second shows a camera that uploads a little each minute while it learns, then
far more than it ever did, in two windows. Built with the helpers of generate.py and its
conventions (fixed times, ports, sequence numbers, DNS ids and "random" bytes), so two
runs give byte-identical files. pcaps/README.md lists every flow and what it should
raise; tests/baseline/test_baseline_samples.py checks it.
"""

from __future__ import annotations

import sys

from generate import (
    RESOLVER_MAC,
    VLAN20,
    Capture,
    Host,
    Tcp,
    at,
    dns_exchange,
    local,
    ntp_reply,
    ntp_request,
    remote,
    stream,
    tls_app_data,
    tls_session,
    udp,
    write_all,
    write_pcap,
)

MIN = 60.0
RESOLVER = local("10.20.0.53", RESOLVER_MAC)
H = local("10.20.1.11", "44:19:b6:12:34:56")  # Hikvision street camera
D = local("10.20.1.12", "3c:ef:8c:00:00:21")  # Dahua street camera

EU1 = "198.51.100.40"  # GB/AS15169: eu1.vms.eyecloud.co.uk, CNAME lb-eu1.eyecloud.co.uk
EU2 = "198.51.100.41"  # GB: eu2.vms.eyecloud.co.uk
HIK = "198.51.100.90"  # GB: eu.hik-connect.com (the test policies deny *.hik-connect.com)
UPLOADS = "198.51.100.60"  # GB: uploads.example.net
UNNAMED_US = "198.51.100.170"  # US/AS16509, never named
S3 = "198.51.100.180"  # US: b.s3.amazonaws.com
P2P = "203.0.113.140"  # DE/AS3320, never named
NTP = "203.0.113.200"  # DE: 0.pool.ntp.org

#: baseline-upload.pcap: (minute, client port of its first flow, 1400-byte segments per flow, ...)
UPLOAD_SEGMENTS = 1400
UPLOADS_PER_MINUTE: tuple[tuple[int, int, tuple[int, ...]], ...] = (
    (0, 50300, (10,)),          # learning (the first 10 minutes)
    (2, 50310, (20,)),
    (4, 50320, (28,)),          # the largest learned window
    (6, 50330, (14, 6)),
    (8, 50340, (12,)),
    (11, 50350, (32, 32)),      # enforcing: past the learned maximum, under the limit
    (12, 50360, (32, 32, 32, 32)),  # crosses the limit at its third flow
    (16, 50370, (32, 32, 32)),  # crosses again, at its third flow
)


def _isn(label: str) -> int:
    return int.from_bytes(stream(f"{label}/isn", 4), "big")


class Scene:
    """One capture being written: DNS ids and resolver client ports handed out in order."""

    def __init__(self, cap: Capture) -> None:
        self.cap = cap
        self._txid = 0x5B00
        self._dns_port = 53100

    def resolve(self, t_s: float, client: Host, qname: str, address: str, cname: str | None = None) -> None:
        """An A lookup through the local resolver; with `cname`, the answer is a CNAME chain."""
        self._txid += 1
        self._dns_port += 1
        chain = [(qname, "CNAME", cname, 300), (cname, "A", address, 60)] if cname else [(qname, "A", address, 60)]
        dns_exchange(self.cap, t_s, client, self._dns_port, RESOLVER, self._txid, qname, "A", chain, VLAN20)

    def connect(self, t_s: float, client: Host, cport: int, address: str, port: int, label: str) -> Tcp:
        return Tcp(self.cap, client, cport, remote(address), port, t_s, VLAN20,
                   cli_isn=_isn(f"{label}/c"), srv_isn=_isn(f"{label}/s"), label=label).handshake()  # fmt: skip

    def tls(self, t_s: float, client: Host, cport: int, address: str, sni: str | None, label: str) -> None:
        """A whole TLS connection to address:443: handshake, hello (SNI when given), data, FIN."""
        tls_session(self.connect(t_s, client, cport, address, 443, label), sni, label).close()

    def ntp(self, t_s: float, client: Host, address: str) -> None:
        udp(self.cap, t_s, client, 123, remote(address), 123, ntp_request(at(t_s)), VLAN20, "NTP")
        udp(self.cap, t_s + 0.024, remote(address), 123, client, 123,
            ntp_reply(at(t_s), at(t_s) + 12_000), VLAN20, "NTP")  # fmt: skip

    def p2p(self, t_s: float, client: Host, cport: int, address: str, port: int, label: str) -> None:
        """A UDP exchange the client starts: 3 datagrams out, 2 back."""
        for i, (dt, out, n) in enumerate(((0.0, True, 96), (0.030, False, 64), (0.050, True, 120),
                                          (0.081, False, 72), (0.400, True, 40))):  # fmt: skip
            payload = stream(f"{label}/{i}", n)
            if out:
                udp(self.cap, t_s + dt, client, cport, remote(address), port, payload, VLAN20, label)
            else:
                udp(self.cap, t_s + dt, remote(address), port, client, cport, payload, VLAN20, label)


# --------------------------------------------------------------------------
# baseline-learn-enforce.pcap


def learn_enforce() -> Capture:
    """Learning (the first 15 minutes of the group) and enforcing (from minute 20).

    The expected outcomes are those of `baseline: {learn_for: 15m}` with `scope: group`
    (pcaps/README.md); `scope: device` differs only for D → eu1.vms.eyecloud.co.uk."""
    s = Scene(Capture("baseline-learn-enforce.pcap"))
    # learning
    s.resolve(0.0, H, "eu1.vms.eyecloud.co.uk", EU1, cname="lb-eu1.eyecloud.co.uk")
    s.tls(1.0, H, 50101, EU1, "eu1.vms.eyecloud.co.uk", "L1 H eu1.vms.eyecloud.co.uk")
    s.p2p(30.0, H, 40500, P2P, 51000, "L2 H udp 203.0.113.140:51000")
    s.resolve(60.0, H, "0.pool.ntp.org", NTP)
    s.ntp(60.01, H, NTP)
    s.resolve(120.0, D, "eu.hik-connect.com", HIK)
    s.tls(120.01, D, 50201, HIK, "eu.hik-connect.com", "L4 D eu.hik-connect.com (deny)")
    for n, minute in enumerate((3, 6, 9, 12), start=2):
        s.resolve(minute * MIN, H, "eu1.vms.eyecloud.co.uk", EU1, cname="lb-eu1.eyecloud.co.uk")
        s.tls(minute * MIN + 0.01, H, 50100 + n, EU1, "eu1.vms.eyecloud.co.uk", f"L5.{n} H eu1.vms.eyecloud.co.uk")
    # enforcing
    s.resolve(20 * MIN, H, "eu2.vms.eyecloud.co.uk", EU2)
    s.tls(20 * MIN + 0.01, H, 50106, EU2, "eu2.vms.eyecloud.co.uk", "E1 H eu2.vms.eyecloud.co.uk")
    s.p2p(21 * MIN, H, 40500, P2P, 52000, "E2 H udp 203.0.113.140:52000")
    s.resolve(22 * MIN, H, "uploads.example.net", UPLOADS)
    s.tls(22 * MIN + 0.01, H, 50110, UPLOADS, "uploads.example.net", "E3 H uploads.example.net")
    s.resolve(25 * MIN, H, "uploads.example.net", UPLOADS)
    s.tls(25 * MIN + 0.01, H, 50111, UPLOADS, "uploads.example.net", "E4 H uploads.example.net again")
    c = s.connect(27 * MIN, H, 50112, UNNAMED_US, 8443, "E5 H 198.51.100.170:8443")
    c.data(True, b"\x00\x00\x00\x60" + stream("E5/c0", 92), acked=False)
    c.data(False, b"\x00\x00\x00\x20" + stream("E5/s0", 28), dt=20_000)
    c.close()
    s.resolve(30 * MIN, D, "b.s3.amazonaws.com", S3)
    s.tls(30 * MIN + 0.01, D, 50202, S3, "b.s3.amazonaws.com", "E6 D b.s3.amazonaws.com")
    s.resolve(33 * MIN, D, "eu1.vms.eyecloud.co.uk", EU1, cname="lb-eu1.eyecloud.co.uk")
    s.tls(33 * MIN + 0.01, D, 50203, EU1, "eu1.vms.eyecloud.co.uk", "E7 D eu1.vms.eyecloud.co.uk")
    s.tls(35 * MIN, H, 50113, EU1, "eu1.vms.eyecloud.co.uk", "E8 H eu1.vms.eyecloud.co.uk again")
    s.resolve(38 * MIN, H, "0.pool.ntp.org", NTP)
    s.ntp(38 * MIN + 0.01, H, NTP)
    return s.cap


# --------------------------------------------------------------------------
# baseline-upload.pcap


def upload() -> Capture:
    """H sends its cloud a little each minute while learning (10 minutes), then far more.

    Every upload is a TCP connection to eu1.vms.eyecloud.co.uk:443 (named by DNS only)
    carrying 1400-byte TLS records, the server ACKing every second one. The snaplen of 256
    keeps each full-size frame's wire length (1458) but only 256 bytes of it on disk."""
    s = Scene(Capture("baseline-upload.pcap", snaplen=256))
    s.resolve(0.0, H, "eu1.vms.eyecloud.co.uk", EU1, cname="lb-eu1.eyecloud.co.uk")
    for minute, first_port, flows in UPLOADS_PER_MINUTE:
        for i, segments in enumerate(flows):
            label = f"U{minute}.{i} H upload"
            c = s.connect(minute * MIN + 5 + 10 * i, H, first_port + i, EU1, 443, label)
            for k in range(segments):
                payload = tls_app_data(f"{label}/{k}", UPLOAD_SEGMENTS - 5)
                c.data(True, payload, dt=1_000, acked=k % 2 == 1 or k == segments - 1)
            c.close()
    return s.cap


def main(argv: list[str]) -> int:
    return write_all(argv, ((learn_enforce, write_pcap), (upload, write_pcap)))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
