"""The built-in capture filter: let libpcap drop what can never be egress.

On a camera VLAN almost every packet is video between local addresses (camera →
NVR). A BPF filter runs in the kernel (live) or in libpcap (files) before anything
is dissected, so those packets cost nearly nothing. What passes: IP packets with at
least one non-local endpoint, and DNS (port 53) even between local hosts, because
answers from a site resolver are how egress learns destination names. The flow table
applies the same rule in Python (`flows.table.in_scope`), so the filter only changes
speed, never flows.

Also passing, for the device inventory only (`egress.inventory`; the flow table drops
them as it drops every LAN-only packet): the cheap frames that reveal a device that never
leaves the LAN. ARP; DHCP and DHCPv6; mDNS and SSDP announcements; TCP SYNs (without ACK:
the sender opens a connection); and a deterministic sample of the other IPv4 frames, one
in 1024 by the IP ID (`ip[4:2] & 0x3ff = 0`), so a camera that only streams to its NVR
is seen after about a thousand of its packets. On the 300,000-packet camera capture of
bench/ these add well under one percent of the packets (README: Device inventory).

The rule, and the user's `capture.bpf` with it, holds untagged and inside up to three
VLAN tags (802.1Q, 802.1ad QinQ, VLAN 0). Limits:
- a frame with four tags or more is dropped (each depth writes the rule again);
- PPPoE session frames pass whole, unfiltered by `capture.bpf` too: libpcap reads inside
  PPPoE only after its `pppoes` keyword, which moves the offsets for the rest of the
  expression, as `vlan` does, and no `vlan` may follow it.
For the same reason `capture.bpf` may not use `vlan`, `mpls`, `pppoes` or `geneve`.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable

__all__ = ["build_filter", "validate_bpf_text", "DEVICE_FRAMES"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_TAGS = 3  # VLAN tags deep; the program grows ~170 instructions a depth (the kernel takes 4096)
#: frames for the device inventory alone (module docstring): ARP, DHCP/DHCPv6, mDNS, SSDP,
#: TCP SYN without ACK (IPv4, and IPv6 without extension headers), 1 in 1024 IPv4 frames
DEVICE_FRAMES = (
    "(arp or (udp and (port 67 or port 68 or port 546 or port 547 or port 5353 or port 1900))"
    " or (tcp[tcpflags] & (tcp-syn|tcp-ack) = tcp-syn) or (ip6 and ip6[6] = 6 and ip6[53] & 0x12 = 0x02)"
    " or (ip and ip[4:2] & 0x3ff = 0))"
)


def _nets(direction: str, networks: Iterable[IPNetwork]) -> str:
    return "(" + " or ".join(f"{direction} net {n.with_prefixlen}" for n in networks) + ")"


def build_filter(local_networks: Iterable[IPNetwork], extra: str = "", vlan: bool = True, devices: bool = True) -> str:
    """BPF text: non-local IP or DNS (and, with `devices`, the inventory's DEVICE_FRAMES),
    ANDed with `extra`, untagged and inside up to three VLAN tags; PPPoE session frames pass whole.

    libpcap's `vlan` keyword shifts the offsets for the rest of the expression, so the
    untagged case comes first, each deeper tag nests inside the previous one, and the
    whole rule, `extra` included, is written again at each depth (ANDed once at the end,
    `extra` would be read at the deepest tag's offsets for every frame).
    """
    nets = list(local_networks)
    rule = "(ip or ip6)"
    if nets:
        rule = f"((ip or ip6) and (not ({_nets('src', nets)} and {_nets('dst', nets)}) or port 53))"
        if devices:
            rule = f"({rule} or {DEVICE_FRAMES})"
    if extra.strip():
        rule = f"({rule} and ({extra.strip()}))"
    if not vlan:
        return rule
    # PPPoE sessions (a site behind a DSL uplink) pass whole: the `pppoes` keyword
    # would shift the offsets of every branch after it, `ether proto` does not.
    depth = f"({rule} or ether proto 0x8864)"
    text = depth
    for _ in range(_MAX_TAGS):
        text = f"({depth} or (vlan and {text}))"
    return text


_SAFE_BPF = re.compile(r"^[A-Za-z0-9 .:/()\[\]&|!<>=+\-*%^~,\"'\\]*$")
_SHIFTS_OFFSETS = re.compile(r"(?<![\w.\-\\])(vlan|mpls|pppoes|geneve)(?![\w.\-])")  # as keywords, not inside a hostname


def validate_bpf_text(text: str) -> str | None:
    """A reason the user's extra filter is refused, or None. Compilation checks the rest.

    A backslash is allowed (`ip proto \\tcp`, as pcap-filter writes it): the text is one
    argument of tcpdump or dumpcap, never seen by a shell."""
    if "\n" in text or "\0" in text:
        return "capture.bpf must be one line"
    if not _SAFE_BPF.match(text):
        return "capture.bpf holds characters that BPF does not use"
    if keyword := _SHIFTS_OFFSETS.search(text):
        return f"capture.bpf cannot use `{keyword.group(1)}`: libpcap would read the rest of the filter at shifted offsets (the built-in filter already looks inside VLAN tags)"
    depth = 0
    for char in text:  # a `)` closing more than it opened would take the rest out of its AND
        depth += (char == "(") - (char == ")")
        if depth < 0:
            break
    if depth:
        return "capture.bpf has unbalanced parentheses"
    return _compile_error(text) if text.strip() else None


#: a classic pcap header with no packet (Ethernet): something for tcpdump to compile against
_EMPTY_ETHERNET_PCAP = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def _compile_error(text: str) -> str | None:
    """What libpcap says of the filter (`tcpdump -d` compiles it without reading a packet), or
    None where it compiles, where only a host name did not resolve here, or where tcpdump is
    absent (live capture compiles it at start).
    Without this, a filter libpcap refuses was found out only when a file was read, and the
    file was then read unfiltered."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        return None
    try:
        proc = subprocess.run([tcpdump, "-r", "-", "-d", "--", text], input=_EMPTY_ETHERNET_PCAP, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode == 0:
        return None
    said = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if said and "unknown host" in said[-1]:
        return None  # names resolve where the capture runs, not necessarily here
    return f"libpcap cannot compile it: {said[-1].removeprefix('tcpdump: ') if said else f'tcpdump exit {proc.returncode}'}"
