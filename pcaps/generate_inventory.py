#!/usr/bin/env python3
"""Generate the committed capture of the device inventory (README: Device inventory), deterministically.

    python pcaps/generate_inventory.py [OUTDIR]      # default: the directory of this script

writes

    lan-only-cameras.pcap   (pcap, every frame 802.1Q VLAN 20, 90 s of flow time, snaplen 128)

Covered cameras that never leave the LAN, beside one that does:
- L1 Hikvision 44:19:b6:00:00:31 10.20.1.31: DHCP (DISCOVER from 0.0.0.0, then a REQUEST),
  then pushes its stream to the NVR over TCP (it sends the SYN) and nothing else;
- L2 Hikvision bc:ad:28:00:00:32 10.20.1.32: only ARPs (at 0 s, 30 s and 90 s);
- L3 Dahua 3c:ef:8c:00:00:33 10.20.1.33: only streams RTP over UDP to the NVR (1,100
  packets, no SYN, no ARP): the prefilter's 1-in-1024 IP ID sample is what shows it;
- H Hikvision 44:19:b6:12:34:56 10.20.1.11 (vauxhall-lamp-01 in deploy/policy.example.yaml):
  ARPs for its gateway, resolves eu.vms.example and sends it TLS (egress);
- the NVR (Axis) 10.20.0.5 answers the TCP push and the resolver answers H.
With deploy/policy.example.yaml: four covered-vendor alerts, one per camera (H's from its
flow, the others' from their inventory records), H's egress to 198.51.100.40 allowed as
vms-cloud (GB, AS15169), and nothing else. Built with the helpers and conventions of
generate.py, so two runs give byte-identical files.
"""

from __future__ import annotations

import sys

from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from generate import RESOLVER_MAC, VLAN20, Capture, Host, Tcp, at, dns_exchange, local, remote, rtp_packet, tls_session, write_all, write_pcap

L1 = local("10.20.1.31", "44:19:b6:00:00:31")  # Hikvision: DHCP, then TCP to the NVR only
L2 = local("10.20.1.32", "bc:ad:28:00:00:32")  # Hikvision: ARP only
L3 = local("10.20.1.33", "3c:ef:8c:00:00:33")  # Dahua: RTP to the NVR only
H = local("10.20.1.11", "44:19:b6:12:34:56")  # Hikvision: ARP, DNS, TLS egress
NVR = local("10.20.0.5", "00:40:8c:00:00:05")  # Axis NVR
RESOLVER = local("10.20.0.53", RESOLVER_MAC)
GATEWAY = "10.20.0.1"
VMS = "198.51.100.40"  # GB/AS15169 in the test GeoIP databases: allowed as vms-cloud
BROADCAST = "ff:ff:ff:ff:ff:ff"
L3_PACKETS = 1100


def _raw(cap: Capture, t_s: float, frame: object, comment: str) -> None:
    """A frame built here (ARP, DHCP), padded like the rest and tagged VLAN 20."""
    data = bytes(frame)  # type: ignore[call-overload]
    data += b"\x00" * max(0, 60 - len(data))
    cap.frames.append((at(t_s), len(cap.frames), data[: cap.snaplen], len(data), comment))


def _arp(cap: Capture, t_s: float, host: Host, target: str, comment: str) -> None:
    assert host.mac is not None
    frame = Ether(src=host.mac, dst=BROADCAST) / Dot1Q(vlan=20) / ARP(op=1, hwsrc=host.mac, psrc=host.ip, hwdst="00:00:00:00:00:00", pdst=target)
    _raw(cap, t_s, frame, comment)


def _dhcp(cap: Capture, t_s: float, host: Host, kind: str, xid: int) -> None:
    assert host.mac is not None
    options = [("message-type", kind), ("hostname", b"L1-camera")]
    if kind == "request":
        options.append(("requested_addr", host.ip))
    bootp = BOOTP(op=1, chaddr=bytes.fromhex(host.mac.replace(":", "")) + b"\x00" * 10, xid=xid, flags=0x8000)
    ip_layer = IP(src="0.0.0.0", dst="255.255.255.255", ttl=64, id=cap.ipid("0.0.0.0"))
    frame = Ether(src=host.mac, dst=BROADCAST) / Dot1Q(vlan=20) / ip_layer / UDP(sport=68, dport=67) / bootp / DHCP(options=[*options, "end"])
    _raw(cap, t_s, frame, f"L1 DHCP {kind}")


def lan_only_cameras() -> Capture:
    cap = Capture("lan-only-cameras.pcap", snaplen=128)
    tags = VLAN20
    # L2: ARP only, for its gateway, three times over 90 s
    for t in (0.0, 30.0, 90.0):
        _arp(cap, t, L2, GATEWAY, "L2 ARP who-has gateway")
    # L1: DHCP, then pushes video to the NVR over TCP (the camera opens the connection)
    _dhcp(cap, 0.10, L1, "discover", 0x00310001)
    _dhcp(cap, 0.20, L1, "request", 0x00310001)
    push = Tcp(cap, L1, 40310, NVR, 8000, 0.50, tags, cli_isn=0x31000001, srv_isn=0x05000001, rtt_us=400, label="L1 push -> NVR:8000").handshake()
    for i in range(20):
        push.data(True, bytes([i]) * 1200, dt=40_000)
    # L3: RTP over UDP to the NVR, nothing else: 1,100 packets, 40 ms apart
    for i in range(L3_PACKETS):
        cap.emit(at(1.0 + 0.04 * i), L3, NVR, UDP(sport=5004, dport=5004) / rtp_packet(i, i * 3600, 0x33333333, 160), tags, "L3 RTP -> NVR")
    # H: ARP for its gateway, DNS, TLS to the VMS cloud (egress)
    _arp(cap, 0.30, H, GATEWAY, "H ARP who-has gateway")
    dns_exchange(cap, 2.0, H, 40111, RESOLVER, 0x1101, "eu.vms.example", "A", [("eu.vms.example", "A", VMS, 300)], tags)
    tls = Tcp(cap, H, 50111, remote(VMS), 443, 2.10, tags, cli_isn=0x11000001, srv_isn=0x40000001, label="H -> eu.vms.example:443").handshake()
    tls_session(tls, "eu.vms.example", "inventory H").close()
    return cap


def main(argv: list[str]) -> int:
    return write_all(argv, ((lan_only_cameras, write_pcap),))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
