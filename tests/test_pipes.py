"""Captures read through a pipe (`<(…)`, a FIFO, /dev/stdin): opened once, read once."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import PCAPS, POLICY, ndjson, run_egress


def _fifo_of(source: Path, tmp_path: Path) -> tuple[Path, threading.Thread]:
    """A FIFO that a thread fills with `source` once a reader opens it."""
    fifo = tmp_path / f"{source.name}.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("wb") as out:
            try:
                out.write(source.read_bytes())
            except BrokenPipeError:
                pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return fifo, writer


def _alerts(target: Path, geoip: dict[str, Path]) -> tuple[int, list[dict], str]:
    res = run_egress("analyze", target, "--format", "json", "--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])
    return res.returncode, sorted(ndjson(res.stdout), key=lambda a: a["event"]["id"]), res.stderr


@pytest.mark.parametrize("name", ["street-cctv-vlan20.pcap", "building-cctv-ipv6.pcapng", "trunk-qinq-mixed.pcap"])
def test_a_capture_through_a_fifo_gives_the_alerts_of_the_file(name: str, geoip: dict[str, Path], tmp_path: Path) -> None:
    rc, expected, err = _alerts(PCAPS / name, geoip)
    assert rc == 0 and expected, err
    fifo, writer = _fifo_of(PCAPS / name, tmp_path)
    rc, got, err = _alerts(fifo, geoip)
    writer.join(10)
    assert rc == 0, err
    assert got == expected


def _raw_ip_capture(tmp_path: Path) -> Path:
    from scapy.all import IP, UDP, Raw, wrpcap

    path = tmp_path / "raw-ip.pcap"
    wrpcap(str(path), [IP(src="10.20.1.11", dst="192.0.2.50") / UDP(sport=40000, dport=32100) / Raw(b"x" * 20) for _ in range(3)], linktype=101)
    return path


def test_a_raw_ip_pcap_through_a_fifo_is_filtered_without_vlans(geoip: dict[str, Path], tmp_path: Path) -> None:
    """A pipe gets one try: the filter is chosen by the pcap's link type (Raw IP has no VLANs)."""
    raw = _raw_ip_capture(tmp_path)
    rc, expected, err = _alerts(raw, geoip)
    assert rc == 0 and len(expected) == 1, err
    fifo, writer = _fifo_of(raw, tmp_path)
    rc, got, err = _alerts(fifo, geoip)
    writer.join(10)
    assert (rc, got) == (0, expected), err


def test_a_pipe_libpcap_cannot_filter_is_one_line_and_exit_2(geoip: dict[str, Path], tmp_path: Path) -> None:
    """pcapng's link type is per interface, so a Raw IP pcapng pipe is tried with the VLAN filter, which libpcap refuses:
    exit 2, one line naming the pipe and the way out."""
    editcap = shutil.which("editcap")
    if editcap is None:
        pytest.skip("editcap (wireshark-common) is not installed")
    raw = _raw_ip_capture(tmp_path)
    ng = tmp_path / "raw-ip.pcapng"
    subprocess.run([editcap, "-F", "pcapng", raw, ng], check=True, capture_output=True)  # noqa: S603
    fifo, writer = _fifo_of(ng, tmp_path)
    rc, got, err = _alerts(fifo, geoip)
    writer.join(10)
    lines = [ln for ln in err.splitlines() if ln.startswith("egress: ")]
    assert rc == 2 and got == [], err
    assert lines == [f"egress: {fifo}: a pipe is read once, and libpcap could not filter it (tcpdump: no VLAN support for Raw IP): save it to a file"]
