"""What `egress analyze` starts before its pipeline is built: the first file's prefilter
(tcpdump), and for the tshark that waits already (`tshark.start_early`) the pcap header that
tcpdump will write. Both start-ups (~30 ms for tcpdump to open the file, ~30-50 ms for tshark
to set up once it has read a header) then overlap egress's own imports. The file's source
takes the tcpdump only if it was started with the very command it would run; one nobody
takes is ended (`discard_early`)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path

from egress.capture.pcapfile import PCAP_HEADER_BYTES, pcap_magic
from egress.capture.prefilter import build_filter
from egress.capture.process import reap, spawn
from egress.capture.tshark import prime_early
from egress.localnet import IPNetwork

__all__ = ["prefilter_argv", "start_early", "take_early", "discard_early"]

# tcpdump reads and writes through stdio's 4 KiB buffers: 30,000 pipe writes for 120 MB, each
# one a wake-up of the reading thread (and a wait for Python's GIL). 1 MiB buffers: ~120. For
# a file only: from a pipe that pauses (a FIFO fed by hand), packets would wait in them.
_STDBUF = shutil.which("stdbuf")
_LARGE_STDIO: tuple[str, ...] = (_STDBUF, "-i1M", "-o1M") if _STDBUF else ()


def prefilter_argv(tcpdump: str, path: Path, bpf: str) -> list[str]:
    return [*_LARGE_STDIO, tcpdump, "-r", str(path), "-w", "-", "--", bpf]


_early: dict[tuple[str, ...], subprocess.Popen[bytes]] = {}


def take_early(argv: list[str]) -> subprocess.Popen[bytes] | None:
    """The early tcpdump, if it was started with this very command."""
    return _early.pop(tuple(argv), None)


def start_early(path: Path, local_networks: Iterable[IPNetwork], extra_bpf: str = "") -> None:
    """Start the prefilter of `analyze`'s first file now, while the rest of egress loads
    (tcpdump needs ~30 ms to start and open the file): the FileSource that reads this file
    with this filter takes it. A pipe is left alone (it is read once, and checked first)."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None or _early or not path.is_file():
        return
    argv = prefilter_argv(tcpdump, path, build_filter(list(local_networks), extra_bpf))
    try:
        _early[tuple(argv)] = spawn(argv, stdin=subprocess.DEVNULL)
        with path.open("rb") as fh:
            head = _tcpdump_head(fh.read(PCAP_HEADER_BYTES))
    except OSError:
        return
    if head is not None:
        prime_early(head)


def _tcpdump_head(head: bytes) -> bytes | None:
    """The pcap header tcpdump writes for a pcap file with this header (libpcap writes
    microseconds, in this host's byte order, the file's snapshot length (0: 262144) and link
    type), to give the early tshark; None for a pcapng file or another format (not guessed)."""
    magic = pcap_magic(head)
    if len(head) < PCAP_HEADER_BYTES or magic is None or magic.modified:
        return None
    snaplen, linktype = struct.unpack_from(magic.byte_order + "II", head, 16)
    return struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen or 262144, linktype)


def discard_early() -> None:
    """End an early prefilter nobody took (its file was refused, or read with another filter)."""
    while _early:
        reap(_early.popitem()[1])
