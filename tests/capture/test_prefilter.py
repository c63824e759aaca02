"""The built-in BPF filter, proved by the real libpcap: tcpdump filters small captures
written here, frame by frame, with and without VLAN tags, with and without the user's
`capture.bpf`."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.packet import Packet
from scapy.utils import PcapWriter, rdpcap

from egress import model
from egress.capture.file import FileSource
from egress.capture.prefilter import build_filter, validate_bpf_text
from egress.flows.table import in_scope
from egress.localnet import DEFAULT_LOCAL_NETWORKS, LocalNetworks
from tests.conftest import PCAPS, real_capture

TCPDUMP = shutil.which("tcpdump")
pytestmark = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed")

# what the agent passes: the policy's local networks plus what never leaves the site
NETS = list(LocalNetworks(DEFAULT_LOCAL_NETWORKS).networks)
CAM, NVR, RESOLVER, CLOUD = "10.20.1.11", "10.20.0.5", "10.20.0.53", "192.0.2.10"
CAM6, NVR6, CLOUD6 = "fd00::11", "fd00::5", "2001:db8:1::1"
RAW_IP = 101  # LINKTYPE_RAW: IP packets with no link layer, where libpcap has no `vlan`

# (name, packet, passes): the module's rule is "at least one non-local endpoint, or DNS";
# and, for the device inventory alone, ARP, DHCP, mDNS, SSDP, TCP SYNs and 1 in 1024 IPv4 frames.
CASES: list[tuple[str, Packet, bool]] = [
    ("egress tcp", IP(src=CAM, dst=CLOUD) / TCP(sport=40000, dport=443), True),
    ("inbound udp", IP(src="198.51.100.7", dst=CAM) / UDP(sport=3478, dport=40000), True),
    ("local video", IP(src=CAM, dst=NVR) / UDP(sport=40000, dport=5004), False),
    ("local dns query", IP(src=CAM, dst=RESOLVER) / UDP(sport=40001, dport=53), True),
    ("local dns answer", IP(src=RESOLVER, dst=CAM) / UDP(sport=53, dport=40001), True),
    ("local dns over tcp", IP(src=CAM, dst=RESOLVER) / TCP(sport=40002, dport=53), True),
    ("dhcp broadcast", IP(src="0.0.0.0", dst="255.255.255.255") / UDP(sport=68, dport=67), True),
    ("ssdp multicast", IP(src=CAM, dst="239.255.255.250") / UDP(sport=40003, dport=1900), True),
    ("mdns multicast", IP(src=CAM, dst="224.0.0.251") / UDP(sport=5353, dport=5353), True),
    ("local tcp syn", IP(src=CAM, dst=NVR) / TCP(sport=40006, dport=8000, flags="S"), True),
    ("local tcp syn-ack", IP(src=NVR, dst=CAM) / TCP(sport=8000, dport=40006, flags="SA"), False),
    ("local tcp data", IP(src=CAM, dst=NVR) / TCP(sport=40006, dport=8000, flags="PA"), False),
    ("local video sampled", IP(src=CAM, dst=NVR, id=0x0C00) / UDP(sport=40000, dport=5004), True),
    ("ipv6 local syn", IPv6(src=CAM6, dst=NVR6) / TCP(sport=40007, dport=554, flags="S"), True),
    ("ipv6 egress", IPv6(src=CAM6, dst=CLOUD6) / TCP(sport=40004, dport=443), True),
    ("ipv6 local", IPv6(src=CAM6, dst=NVR6) / UDP(sport=40005, dport=5004), False),
    ("arp", ARP(psrc=CAM, pdst=NVR), True),
]
TAGS: dict[str, list[Packet]] = {
    "untagged": [],
    "802.1Q": [Dot1Q(vlan=20)],
    "priority-tagged": [Dot1Q(vlan=0, prio=5)],
    "QinQ": [Dot1AD(vlan=100), Dot1Q(vlan=20)],
    "three tags": [Dot1AD(vlan=100), Dot1Q(vlan=20), Dot1Q(vlan=30)],
}


def frame(index: int, payload: Packet, tags: list[Packet]) -> Packet:
    """An Ethernet frame, its source MAC unique to it, with `tags` between header and payload."""
    out = Ether(src=f"02:00:00:00:00:{index:02x}", dst="00:00:5e:00:01:14")
    for tag in tags:
        out = out / tag.copy()
    return out / payload.copy()


def survivors(tmp_path: Path, frames: list[Packet], bpf: str, linktype: int = 1) -> list[bytes]:
    """The frames that libpcap's filter lets through, as bytes, in order."""
    src, out = tmp_path / "in.pcap", tmp_path / "out.pcap"
    with PcapWriter(str(src), linktype=linktype, sync=True) as writer:
        for f in frames:
            writer.write(f)
    return filtered(src, out, bpf)


def filtered(src: Path, out: Path, bpf: str) -> list[bytes]:
    """The frames of `src` that `tcpdump -r src -w out -- bpf` keeps, as bytes, in order."""
    assert TCPDUMP is not None
    subprocess.run([TCPDUMP, "-r", str(src), "-w", str(out), "--", bpf], check=True, capture_output=True, timeout=30)
    return [bytes(p) for p in rdpcap(str(out))]


def run_cases(tmp_path: Path, bpf: str, tags: list[Packet], cases: list[tuple[str, Packet, bool]] = CASES) -> dict[str, bool]:
    """For each case, whether its frame passed `bpf`."""
    frames = [frame(i, payload, tags) for i, (_, payload, _) in enumerate(cases)]
    passed = set(survivors(tmp_path, frames, bpf))
    return {name: bytes(f) in passed for (name, _, _), f in zip(cases, frames, strict=True)}


EXPECTED = {name: passes for name, _, passes in CASES}


@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
def test_filter_passes_non_local_and_dns_at_every_tag_depth(tmp_path: Path, tags: list[Packet]) -> None:
    """Untagged, one tag (VLAN 0 included) or two: non-local IP and DNS pass, local-only traffic does not,
    except the device inventory's frames (ARP, DHCP, mDNS, SSDP, a SYN, a sampled IP ID)."""
    assert run_cases(tmp_path, build_filter(NETS), tags) == EXPECTED


@pytest.mark.parametrize("extra", ["", "tcp"])
@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
def test_pppoe_session_frames_pass_whole(tmp_path: Path, tags: list[Packet], extra: str) -> None:
    """A PPPoE session frame passes even when the IP inside is local-only, or UDP under
    `capture.bpf: tcp`: libpcap cannot look inside it there (a documented limit)."""
    pppoe = [("pppoe local video", PPPoE(sessionid=7) / PPP(proto=0x0021) / IP(src=CAM, dst=NVR) / UDP(sport=40000, dport=5004), True)]
    assert run_cases(tmp_path, build_filter(NETS, extra), tags, pppoe) == {"pppoe local video": True}


def test_four_tags_are_past_the_filter(tmp_path: Path) -> None:
    """The documented limit: a frame with four VLAN tags is dropped, egress or not."""
    tags = [*TAGS["three tags"], Dot1Q(vlan=40)]
    assert run_cases(tmp_path, build_filter(NETS), tags) == {name: False for name in EXPECTED}


def test_without_local_networks_every_ip_packet_passes(tmp_path: Path) -> None:
    """No local network given: nothing is local, so every IP packet passes and non-IP does not."""
    every_ip = {name: name != "arp" for name in EXPECTED}
    for tags in TAGS.values():
        assert run_cases(tmp_path, build_filter([]), tags) == every_ip


def test_untagged_variant_filters_the_same_and_drops_tagged_frames(tmp_path: Path) -> None:
    """`vlan=False` gives the same answers on untagged frames and passes no tagged frame."""
    bpf = build_filter(NETS, vlan=False)
    assert "vlan" not in bpf
    assert run_cases(tmp_path, bpf, []) == EXPECTED
    assert run_cases(tmp_path, bpf, TAGS["802.1Q"]) == {name: False for name in EXPECTED}


def test_raw_ip_capture_needs_the_untagged_variant(tmp_path: Path) -> None:
    """On a link type without VLANs the full filter does not compile, and the untagged one filters."""
    ip_cases = [(payload, passes) for _, payload, passes in CASES if IP in payload or IPv6 in payload]
    packets = [payload for payload, _ in ip_cases]
    with pytest.raises(subprocess.CalledProcessError) as info:
        survivors(tmp_path, packets, build_filter(NETS), RAW_IP)
    assert b"VLAN" in info.value.stderr
    kept = survivors(tmp_path, packets, build_filter(NETS, vlan=False), RAW_IP)
    assert kept == [bytes(payload) for payload, passes in ip_cases if passes]


# capture.bpf text → which payloads it keeps, as Python reads them
EXTRAS: dict[str, Callable[[Packet], bool]] = {
    "tcp": lambda p: TCP in p,
    "ip proto \\tcp": lambda p: IP in p and TCP in p,
    "udp": lambda p: UDP in p,
    "ip6": lambda p: IPv6 in p,
    "not port 53": lambda p: 53 not in (getattr(p, "sport", None), getattr(p, "dport", None)),
    f"not host {CLOUD} and not host {CLOUD6}": lambda p: not {CLOUD, CLOUD6} & {getattr(p, k, None) for k in ("src", "dst", "psrc", "pdst")},
}


def narrowed(extra: str) -> dict[str, bool]:
    return {name: passes and EXTRAS[extra](payload) for name, payload, passes in CASES}


def test_extra_filter_narrows_the_untagged_variant(tmp_path: Path) -> None:
    """The user's `capture.bpf` is ANDed: with `tcp` only the TCP frames that pass the rule remain."""
    bpf = build_filter(NETS, "tcp", vlan=False)
    assert run_cases(tmp_path, bpf, []) == narrowed("tcp")


@pytest.mark.parametrize("extra", EXTRAS)
@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
def test_extra_filter_narrows_at_every_tag_depth(tmp_path: Path, tags: list[Packet], extra: str) -> None:
    """`capture.bpf` means the same untagged, under one tag (VLAN 0 too), two or three: with
    `tcp` a TCP egress frame passes at every depth, and a UDP one at none."""
    assert run_cases(tmp_path, build_filter(NETS, extra), tags) == narrowed(extra)


Fields = dict[str, str]
# capture.bpf text → which frames it keeps, as tshark dissects them
SAMPLE_EXTRAS: dict[str, Callable[[Fields], bool]] = {
    "": lambda f: True,
    "tcp": lambda f: bool(f["tcp.srcport"]),
    "udp": lambda f: bool(f["udp.srcport"]),
    "not port 53": lambda f: "53" not in (f["tcp.srcport"], f["tcp.dstport"], f["udp.srcport"], f["udp.dstport"]),
}
SAMPLES = ["street-cctv-vlan20.pcap", "building-cctv-ipv6.pcapng", "trunk-qinq-mixed.pcap"]


def _rule_by_tshark(path: Path, extra: Callable[[Fields], bool]) -> list[bool]:
    """Frame by frame, whether tshark's dissection of `path` meets the documented rule and `extra`."""
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed")
    fields = ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport", "tcp.flags", "ip.id", "arp.opcode"]
    argv = [tshark, "-r", str(path), "-T", "fields", "-E", "occurrence=f", "-E", "separator=,", *(a for f in fields for a in ("-e", f))]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout
    local, verdicts = LocalNetworks(DEFAULT_LOCAL_NETWORKS), []
    for line in out.splitlines():
        f = dict(zip(fields, line.split(","), strict=True))
        src, dst = f["ip.src"] or f["ipv6.src"], f["ip.dst"] or f["ipv6.dst"]
        ports = [f[k] for k in fields[4:8]]
        device = bool(f["arp.opcode"]) or bool({f["udp.srcport"], f["udp.dstport"]} & {"67", "68", "546", "547", "5353", "1900"})
        device = device or (bool(f["tcp.flags"]) and int(f["tcp.flags"], 16) & 0x12 == 0x02) or (bool(f["ip.id"]) and int(f["ip.id"], 16) & 0x3FF == 0)
        verdicts.append((device or (bool(src) and (src not in local or dst not in local or "53" in ports))) and extra(f))
    return verdicts


@pytest.mark.parametrize("extra", SAMPLE_EXTRAS)
@pytest.mark.parametrize("name", SAMPLES)
def test_on_the_sample_captures_libpcap_keeps_what_the_rule_keeps(tmp_path: Path, name: str, extra: str) -> None:
    """On the recorded samples (VLAN 20, IPv6 with a priority tag, QinQ) tcpdump keeps exactly the
    frames whose tshark dissection has a non-local endpoint or port 53 or is one of the device
    inventory's frames (ARP, DHCP, mDNS, SSDP, a TCP SYN, 1 in 1024 IPv4 IDs), and meets `capture.bpf`."""
    path = PCAPS / name
    verdicts, frames = _rule_by_tshark(path, SAMPLE_EXTRAS[extra]), rdpcap(str(path))
    kept = filtered(path, tmp_path / "out.pcap", build_filter(NETS, extra))
    assert kept == [bytes(f) for f, passes in zip(frames, verdicts, strict=True) if passes]
    assert kept


@pytest.mark.parametrize("name", [*SAMPLES, "vlan42-and-qinq-10-20-mixed-untagged.pcap"])
def test_the_file_route_with_capture_bpf_keeps_what_the_whole_file_route_keeps(name: str) -> None:
    """Through `FileSource` (libpcap's filter given to tcpdump as one argument, then tshark),
    `capture.bpf: ip proto \\tcp` yields exactly the in-scope IPv4 TCP packets that the unfiltered
    whole-file route reads."""
    local = LocalNetworks(DEFAULT_LOCAL_NETWORKS)
    path = PCAPS / name if name in SAMPLES else real_capture(name)
    fast = FileSource.for_networks(path, NETS, "ip proto \\tcp")
    got = [p for p in fast.packets() if in_scope(p, local)]
    whole = FileSource.for_networks(path, NETS, prefilter=False)
    want = [p for p in whole.packets() if in_scope(p, local) and p.proto == model.TCP and ":" not in p.src_ip]
    assert fast.report.prefiltered and not whole.report.prefiltered
    assert got == want and got


def test_blank_extra_filter_changes_nothing() -> None:
    """An empty or blank `capture.bpf` adds no clause."""
    assert build_filter(NETS, "   ") == build_filter(NETS, "") == build_filter(NETS)


# ---- validate_bpf_text ---------------------------------------------------------------------

ACCEPTED = [
    "",
    "tcp port 443",
    "not host 10.20.0.5 and udp",
    "ip6 net 2001:db8::/32 or net 192.0.2.0/24",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) != 0",
    "ether[12:2] = 0x8100 and len <= 1500",
    "portrange 8000-8010 or greater 1000",
    "ether host 44:19:b6:12:34:56",
    "ip proto \\tcp or ip6 proto \\udp",  # pcap-filter's escaped keywords
    "ether proto \\ip and (tcp or (udp and not port 53))",
    " or ".join(f"host 192.0.2.{i}" for i in range(1, 41)),
]
KERNEL_MAX_INSNS = 4096  # BPF_MAXINSNS: a live capture's filter runs in the kernel


@pytest.mark.parametrize("text", ACCEPTED)
def test_ordinary_bpf_is_accepted_and_libpcap_compiles_it(text: str, tmp_path: Path) -> None:
    """Usual filter text is not refused, and the filter built with it, written at four depths,
    compiles to a program the kernel takes."""
    assert validate_bpf_text(text) is None
    sample = tmp_path / "empty.pcap"
    PcapWriter(str(sample), linktype=1).close()
    assert TCPDUMP is not None
    out = subprocess.run([TCPDUMP, "-d", "-r", str(sample), "--", build_filter(NETS, text)], check=True, capture_output=True, text=True, timeout=30)
    assert len(out.stdout.splitlines()) < KERNEL_MAX_INSNS


@pytest.mark.parametrize("text", ["tcp\nor udp", "tcp\0", "tcp\r\n"])
def test_more_than_one_line_is_refused(text: str) -> None:
    """A newline or NUL byte in the filter is refused as not one line."""
    assert validate_bpf_text(text) == "capture.bpf must be one line"


@pytest.mark.parametrize("text", ["tcp; reboot", "tcp $(id)", "tcp `id`", "port 443 # comment", "host {a}", "tcp\tor udp"])
def test_characters_bpf_does_not_use_are_refused(text: str) -> None:
    """Shell and template characters (and tabs) are refused before any compiler sees them."""
    assert validate_bpf_text(text) == "capture.bpf holds characters that BPF does not use"


@pytest.mark.parametrize("text", ["vlan 20", "tcp and not vlan", "(mpls 7)", "pppoes and tcp", "geneve"])
def test_keywords_that_move_offsets_are_refused(text: str) -> None:
    """`vlan`, `mpls`, `pppoes`, `geneve` would shift libpcap's offsets for the built-in filter's
    deeper VLAN branches, so the filter would mean something else at each depth."""
    keyword = next(k for k in ("vlan", "mpls", "pppoes", "geneve") if k in text)
    assert validate_bpf_text(text) == (
        f"capture.bpf cannot use `{keyword}`: libpcap would read the rest of the filter at shifted offsets"
        " (the built-in filter already looks inside VLAN tags)"
    )


@pytest.mark.parametrize("text", ["host my-vlan-gw", "host vlan.example.com", "host mplsbox or pppoed"])
def test_those_words_inside_a_hostname_are_not_keywords(text: str) -> None:
    """A hostname that holds one of the words (or `pppoed`, PPPoE discovery) is not refused."""
    assert validate_bpf_text(text) is None


@pytest.mark.parametrize("text", ["(tcp", "tcp)", "tcp) or (udp", "((tcp) or udp"])
def test_unbalanced_parentheses_are_refused(text: str) -> None:
    """A `)` that closes more than it opened would take the rest out of the AND with the built-in rule."""
    assert validate_bpf_text(text) == "capture.bpf has unbalanced parentheses"
