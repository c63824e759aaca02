#!/usr/bin/env python3
"""A userspace 802.1Q sub-interface, for kernels built without 8021q.

    python vlantap.py PARENT VID TAP

TAP (an existing tap device, `ip tuntap add mode tap name TAP`) behaves like
`PARENT.VID`: every frame the kernel sends out of TAP leaves PARENT with an
802.1Q tag VID (TPID 0x8100) written into the frame; every frame that arrives on
PARENT tagged VID is handed to TAP without its tag. VID 0 means priority-tagged
frames (a tag with VLAN ID 0); untagged frames on PARENT are ignored.

The kernel moves a received tag into the packet's metadata before packet
sockets see it, so the tag is read from PACKET_AUXDATA; a tag still in the
frame (PACKET_AUXDATA absent) is read from the frame itself. Frames are copied
as they are otherwise: the MAC addresses are those of TAP and of its peer.

Runs until killed (SIGTERM). Standard library only.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def tag_of(data: bytes, ancdata: list[tuple[int, int, bytes]]) -> tuple[int | None, bytes]:
    """(VLAN ID or None when untagged, the frame without its tag)."""
    for level, kind, raw in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(raw) >= _AUX.size:
            status, _, _, _, _, tci, _ = _AUX.unpack_from(raw)
            if status & TP_STATUS_VLAN_VALID or tci:
                return tci & 0x0FFF, data
    if len(data) >= 18 and data[12:14] in (b"\x81\x00", b"\x88\xa8"):
        return int.from_bytes(data[14:16], "big") & 0x0FFF, data[:12] + data[16:]
    return None, data


def main() -> int:
    parent, vid, tap_name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tap = open_tap(tap_name)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((parent, ETH_P_ALL))
    tag = struct.pack("!HH", 0x8100, vid)
    print("ready", flush=True)
    while True:
        ready, _, _ = select.select([tap, sock], [], [])
        if tap in ready:
            frame = os.read(tap, 65536)
            if len(frame) >= 14:
                try:
                    sock.send(frame[:12] + tag + frame[12:])
                except OSError:
                    pass  # the parent went down: drop, as a NIC would
        if sock in ready:
            data, ancdata, _, addr = sock.recvmsg(65536, socket.CMSG_SPACE(_AUX.size))
            if addr[2] == PACKET_OUTGOING:
                continue
            got, frame = tag_of(data, ancdata)
            if got == vid:
                try:
                    os.write(tap, frame)
                except OSError:
                    pass


if __name__ == "__main__":
    sys.exit(main())
