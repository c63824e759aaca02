"""The built-in capture filter: let libpcap drop what can never be egress.

On a camera VLAN almost every packet is video between local addresses (camera →
NVR). A BPF filter runs in the kernel (live) or in libpcap (files) before anything
is dissected, so those packets cost nearly nothing. What passes: IP packets with at
least one non-local endpoint, and DNS (port 53) even between local hosts, because
answers from a site resolver are how egress learns destination names. The flow table
applies the same rule in Python (`flows.scope`), so the filter only changes speed,
never results.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

__all__ = ["build_filter", "validate_bpf_text"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _nets(direction: str, networks: Iterable[IPNetwork]) -> str:
    return "(" + " or ".join(f"{direction} net {n.with_prefixlen}" for n in networks) + ")"


def build_filter(local_networks: Iterable[IPNetwork], extra: str = "", vlan: bool = True) -> str:
    """BPF text: non-local IP or DNS, also inside one or two VLAN tags (802.1Q/802.1ad);
    PPPoE session frames pass whole.

    libpcap's `vlan` keyword shifts the offsets for the rest of the expression, so the
    untagged case comes first and each deeper tag nests inside the previous one.
    """
    nets = list(local_networks)
    core = "(ip or ip6)"
    if nets:
        core = f"((ip or ip6) and (not ({_nets('src', nets)} and {_nets('dst', nets)}) or port 53))"
    if vlan:
        # PPPoE sessions (a site behind a DSL uplink) pass whole: the `pppoes` keyword
        # would shift the offsets of every branch after it, `ether proto` does not.
        inner = f"({core} or ether proto 0x8864)"
        text = f"({inner} or (vlan and ({inner} or (vlan and {inner}))))"
    else:
        text = core
    if extra.strip():
        text = f"{text} and ({extra.strip()})"
    return text


_SAFE_BPF = re.compile(r"^[A-Za-z0-9 .:/()\[\]&|!<>=+\-*%^~,\"']*$")


def validate_bpf_text(text: str) -> str | None:
    """A reason the user's extra filter is refused, or None. Compilation checks the rest."""
    if "\n" in text or "\0" in text:
        return "capture.bpf must be one line"
    if not _SAFE_BPF.match(text):
        return "capture.bpf holds characters that BPF does not use"
    return None
