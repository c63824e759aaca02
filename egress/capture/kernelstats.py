"""Kernel drop counts of a running dumpcap, read while it captures.

dumpcap reports drops only when its capture ends. The kernel counts them per
packet socket (tpacket_stats: packets, drops), readable with
getsockopt(PACKET_STATISTICS) by whoever holds the socket; the read resets the
counters. So egress takes a duplicate of dumpcap's packet sockets
(pidfd_getfd(2): Linux 5.6, needs ptrace access to the child, which a parent of
the same user has) and reads them every second. Each drop is then counted once:
by egress while dumpcap runs, or in the remainder dumpcap prints at its end
(libpcap adds up what it reads after our last read).

Where that is refused (old kernel, a seccomp filter without pidfd_getfd, a
ptrace policy), egress says so once and falls back to dumpcap's end-of-capture
figures.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from pathlib import Path

import structlog

log = structlog.get_logger("egress.capture")

SOL_PACKET = 263
PACKET_STATISTICS = 6
_SYS_PIDFD_GETFD = 438  # one number on every architecture (the unified table of Linux 5.1+)
_libc = ctypes.CDLL(None, use_errno=True)


def _pidfd_getfd(pidfd: int, fd: int) -> int:
    got = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    if got < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(got)


def _packet_socket_inodes() -> set[int]:
    """Inodes of the packet sockets of this network namespace (/proc/net/packet)."""
    lines = Path("/proc/net/packet").read_text().splitlines()[1:]
    return {int(line.split()[8]) for line in lines if len(line.split()) >= 9}


def _packet_fds(pid: int) -> list[int]:
    """dumpcap's file descriptors that are packet sockets."""
    inodes = _packet_socket_inodes()
    found = []
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            found.append(int(entry))
    return found


class KernelDrops:
    """Duplicates of one process's packet sockets; `take()` returns the drops since the last take."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self._sockets = sockets

    @classmethod
    def attach(cls, pid: int, interface: str) -> KernelDrops | None:
        """Hold `pid`'s packet sockets, or None (logged) where the system refuses."""
        pidfd = -1
        try:
            pidfd = os.pidfd_open(pid)
            fds = _packet_fds(pid)
            if not fds:
                raise OSError(f"process {pid} holds no packet socket")
            held = [socket.socket(fileno=_pidfd_getfd(pidfd, fd)) for fd in fds]
        except OSError as exc:
            log.warning("drops_only_at_capture_end", interface=interface,
                        reason=f"cannot read dumpcap's socket statistics: {exc.strerror or exc}")  # fmt: skip
            return None
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        return cls(held)

    def take(self) -> int:
        """Drops since the last call (the kernel resets its counters on each read)."""
        dropped = 0
        for sock in self._sockets:
            try:
                raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            except OSError:
                continue
            dropped += struct.unpack_from("=II", raw)[1]
        return dropped

    def close(self) -> None:
        """Let go of the sockets: call once dumpcap has ended, without a last `take()`
        (dumpcap's own end figures hold the remainder)."""
        for sock in self._sockets:
            sock.close()
        self._sockets = []
