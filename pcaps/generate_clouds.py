#!/usr/bin/env python3
"""Generate camera-clouds.pcap: one camera reaching a name of each set of
deploy/policies/camera-clouds.yaml that no real capture shows, deterministically.

    python pcaps/generate_clouds.py [OUTDIR]      # default: the directory of this script

Untagged; the camera C `02:00:00:00:40:10` (locally administered: no vendor) is
10.40.1.10, the resolver 10.40.0.53. Each scene: C resolves a name of the set, then talks
to the address the answer gave, as that service does (a TLS ClientHello with the name
as SNI, HTTP with a Host, or a datagram); every address is in a documentation range.
`CLOUDS` lists (set, name, address, transport, port), and the Dahua scene's datagram is
Dahua's HTTP over UDP (`DHGET /probe/p2psrv`), so it is also `network.protocol:
dahua-p2p`. Built with the helpers of generate.py and its conventions (fixed times,
ports, sequence numbers, DNS ids), so two runs give byte-identical files.
tests/test_policy_packs.py checks every set against it.
"""

from __future__ import annotations

import sys

from generate import RESOLVER_MAC, UNTAGGED, Capture, Tcp, crlf, dns_exchange, local, ntp_request, remote, at, tls_session, udp, write_all, write_pcap

CAMERA = local("10.40.1.10", "02:00:00:00:40:10")
RESOLVER = local("10.40.0.53", RESOLVER_MAC)

#: (set, name resolved, address answered, transport, port); the real captures show xiaomi-imilab,
#: dlink-mydlink, and building-cctv-ipv6.pcapng axis-o3c
CLOUDS: tuple[tuple[str, str, str, str, int], ...] = (
    ("hik-connect", "apiieu.hik-connect.com", "198.51.100.101", "tcp", 443),
    ("ezviz", "eucas.ezvizlife.com", "198.51.100.102", "tcp", 6500),
    ("dahua-easy4ip", "www.easy4ipcloud.com", "198.51.100.103", "udp", 8800),
    ("dahua-ddns", "www.dahuaddns.com", "198.51.100.104", "tcp", 80),
    ("imou", "imoulife.com", "198.51.100.105", "tcp", 443),
    ("uniview", "en.ezcloud.uniview.com", "198.51.100.106", "tcp", 443),
    ("tplink-tapo", "n-device-api.tplinkcloud.com", "198.51.100.107", "tcp", 443),
    ("reolink", "p2p7.reolink.com", "198.51.100.108", "udp", 9999),
    ("hanwha-wisenet", "mqtt.prod.wra1.wisenetcloud.com", "198.51.100.109", "tcp", 5000),
    ("ntp-pools", "2.pool.ntp.org", "203.0.113.110", "udp", 123),
)


def camera_clouds() -> Capture:
    cap = Capture("camera-clouds.pcap")
    for i, (label, name, address, transport, port) in enumerate(CLOUDS):
        t = 1.0 * i
        cport = 51000 + i
        dns_exchange(cap, t, CAMERA, 53100 + i, RESOLVER, 0x4C00 + i, name, "A", [(name, "A", address, 300)], UNTAGGED)
        server = remote(address)
        if transport == "udp":
            payload = {
                "dahua-easy4ip": crlf("DHGET /probe/p2psrv HTTP/1.1", "CSeq: 1", f"Host: {name}:8800"),
                "ntp-pools": ntp_request(at(t + 0.01)),
            }.get(label, b"\x00\x00\x00\x01" + name.encode())
            udp(cap, t + 0.01, CAMERA, cport, server, port, payload, UNTAGGED, f"{label} {name}")
            continue
        conn = Tcp(cap, CAMERA, cport, server, port, t + 0.01, UNTAGGED, cli_isn=0x40000000 + i, srv_isn=0x50000000 + i, label=f"{label} {name}")
        conn.handshake()
        if port == 80:
            conn.data(True, crlf("GET /update?mac=020000004010 HTTP/1.1", f"Host: {name}"))
        elif port == 6500:
            conn.data(True, b"\x9e\xba\xac\xe9" + bytes(28))  # CAS: binary, named by DNS alone
        else:
            tls_session(conn, name, label)
        conn.close()
    return cap


def main(argv: list[str]) -> int:
    return write_all(argv, ((camera_clouds, write_pcap),))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
