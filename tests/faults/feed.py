"""A capture fed to an agent's `--read` FIFO a piece at a time, so that the agent has records
to publish before, during and after a fault; and a capture made long enough for that."""

from __future__ import annotations

import re
import struct
import threading
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tests.baseline.test_baseline_samples import T0

PIECES = 6
LOAD = 4000
LOAD_FRAME_S = 1260.4  # in the enforcing part: 10.20.1.11:40500 → 203.0.113.140:52000/udp, key as3320/DE udp/ephemeral, learned


def loaded(enforce: Path, flows: int) -> bytes:
    """The enforcing part with `flows` copies of one learned flow's last frame from other
    source ports, spread over the next 1000 s of flow time (classic pcap, one VLAN tag); every
    other copy goes to a port of its own below 49152, a key nobody learned: one
    new-destination alert each (its event.id from scope and key), the rest are silent."""
    data = enforce.read_bytes()
    frames, offset = [], 24
    while offset < len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, offset)
        frames.append((sec + usec / 1e6, data[offset + 16 : offset + 16 + caplen]))
        offset += 16 + caplen
    template = next(f for t, f in frames if abs(t - T0 - LOAD_FRAME_S) < 0.01)
    assert struct.unpack_from("!HH", template, 38) == (40500, 52000), "the learned UDP flow's frame"
    for i in range(flows):
        frame = bytearray(template)
        struct.pack_into("!H", frame, 38, 41000 + i % 20000)
        if i % 2:
            struct.pack_into("!H", frame, 40, 20000 + i // 2)
        struct.pack_into("!H", frame, 44, 0)  # no UDP checksum (IPv4)
        frames.append((T0 + LOAD_FRAME_S + 1 + i * 1000 / flows, bytes(frame)))
    out = bytearray(data[:24])
    for t, frame in sorted(frames, key=lambda f: f[0]):
        sec, usec = divmod(round(t * 1e6), 1_000_000)
        out += struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame
    return bytes(out)


class Feed:
    """A capture written to an agent's --read FIFO a piece at a time; `log` is the agent's."""

    def __init__(self, fifo: Path, data: bytes, log: Path) -> None:
        self.log = log
        self._header, body = data[:24], data[24:]
        self._pieces = [body[i * len(body) // PIECES : (i + 1) * len(body) // PIECES] for i in range(PIECES)]
        opened: list[BinaryIO] = []
        opener = threading.Thread(target=lambda: opened.append(fifo.open("wb")), daemon=True)
        opener.start()
        opener.join(60)
        assert opened, f"the agent did not open {fifo}"
        self._out = opened[0]
        self._out.write(self._header)

    def next(self) -> None:
        if self._pieces:
            self._out.write(self._pieces.pop(0))
            self._out.flush()

    def close(self) -> None:
        while self._pieces:
            self.next()
        self._out.close()


def agent_metric(log: Path, name: str) -> float | None:
    """A sample of an egress process's /metrics, found through the address its JSON log gives
    (None before it listens, after it exited, or when the sample is not there)."""
    port = re.search(r'"address": "127\.0\.0\.1:(\d+)"', log.read_text())
    if port is None:
        return None
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    found = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else None
