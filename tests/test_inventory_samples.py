"""The device inventory on pcaps/lan-only-cameras.pcap: covered cameras that never leave the
LAN raise their one covered-vendor alert, and their rows in `analyze --format devices`,
`devices-csv` and `devices-json`; `run` agrees; the frames that reveal them make no flow."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import PCAPS, POLICY, ndjson, run_egress

CAPTURE = PCAPS / "lan-only-cameras.pcap"
L1, L2, L3, H = "44-19-B6-00-00-31", "BC-AD-28-00-00-32", "3C-EF-8C-00-00-33", "44-19-B6-12-34-56"
VMS = "198.51.100.40"


@pytest.fixture
def geo(geoip: dict[str, Path]) -> tuple[str | Path, ...]:
    return ("--policy", POLICY, "--geoip-country", geoip["country"], "--geoip-asn", geoip["asn"])


def _analyze(geo: tuple[str | Path, ...], fmt: str, *extra: str | Path) -> str:
    done = run_egress("analyze", CAPTURE, *geo, "--format", fmt, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_covered_camera_raises_one_alert_with_or_without_egress(geo: tuple[str | Path, ...]) -> None:
    """Four covered-vendor alerts, one per camera and nothing else: L1 (DHCP and a TCP push to the
    NVR), L2 (ARP only) and L3 (RTP to the NVR only) from their inventory records, without a
    destination; H (ARP, then DNS and egress) from its first flow (the DNS query), as before
    the inventory, and only once."""
    alerts = ndjson(_analyze(geo, "json"))
    assert [a["rule"]["category"] for a in alerts] == ["covered-vendor"] * 4
    by_mac = {a["device"]["id"]: a for a in alerts}
    assert set(by_mac) == {L1, L2, L3, H}
    assert by_mac[H]["destination"]["ip"] == "10.20.0.53" and by_mac[H]["device"]["name"] == "vauxhall-lamp-01"
    for mac in (L1, L2, L3):
        alert = by_mac[mac]
        assert "destination" not in alert and alert["labels"]["group"] == "street-cctv"
        assert alert["message"] == f"covered-vendor device present: {mac} is {alert['device']['manufacturer']} (group street-cctv)"
    assert by_mac[L2]["source"]["ip"] == "10.20.1.32" and by_mac[L3]["device"]["manufacturer"] == "Dahua"


def test_run_raises_the_alerts_of_analyze(geo: tuple[str | Path, ...]) -> None:
    """`egress run --read` over the in-process bus: the same event.ids as `analyze`."""
    analyzed = {a["event"]["id"] for a in ndjson(_analyze(geo, "json"))}
    done = run_egress("run", "--read", CAPTURE, *geo, env={"EGRESS_METRICS__LISTEN": "127.0.0.1:0"})
    assert done.returncode == 0, done.stderr
    ran = [a["event"]["id"] for a in ndjson(done.stdout)]
    assert len(ran) == len(analyzed) == 4 and set(ran) == analyzed


def test_the_frames_that_reveal_devices_make_no_flow(geo: tuple[str | Path, ...], tmp_path: Path) -> None:
    """ARP, DHCP, the SYN to the NVR and the sampled RTP packet pass the prefilter for the
    inventory only: the flows are H's DNS query and its TLS connection, nothing of L1, L2, L3."""
    flows_out = tmp_path / "flows.ndjson"
    _analyze(geo, "json", "--flows-out", flows_out)
    flows = ndjson(flows_out.read_text())
    assert sorted((f["source"]["ip"], f["destination"]["ip"], f["destination"]["port"]) for f in flows) == [
        ("10.20.1.11", "10.20.0.53", 53), ("10.20.1.11", VMS, 443),
    ]  # fmt: skip


def test_devices_csv_has_a_row_per_device(geo: tuple[str | Path, ...], tmp_path: Path) -> None:
    """One row per camera, with what revealed it; bytes out are the egress flow's source.bytes."""
    flows_out = tmp_path / "flows.ndjson"
    rows = {r["mac"]: r for r in csv.DictReader(io.StringIO(_analyze(geo, "devices-csv", "--flows-out", flows_out)))}
    assert set(rows) == {L1, L2, L3, H}
    assert {mac: (r["vendor"], r["covered"], r["group"], r["ips"], r["vlans"], r["seen_by"]) for mac, r in rows.items()} == {
        L1: ("Hikvision", "yes", "street-cctv", "10.20.1.31", "20", "lan"),
        L2: ("Hikvision", "yes", "street-cctv", "10.20.1.32", "20", "arp"),
        L3: ("Dahua", "yes", "street-cctv", "10.20.1.33", "20", "lan"),
        H: ("Hikvision", "yes", "street-cctv", "10.20.1.11", "20", "arp flow"),
    }  # fmt: skip
    assert rows[L2]["first_seen"] == "2026-01-15T10:00:00Z" and rows[L2]["last_seen"] == "2026-01-15T10:01:30Z"
    assert rows[L3]["first_seen"] == "2026-01-15T10:00:41Z"  # its 1,024th packet: the IP ID sample
    assert rows[H]["name"] == "vauxhall-lamp-01" and rows[H]["organization"] == "Hangzhou Hikvision Digital Technology Co.,Ltd."
    tls = next(f for f in ndjson(flows_out.read_text()) if f["destination"]["ip"] == VMS)
    assert (rows[H]["flows_out"], rows[H]["packets_out"], rows[H]["bytes_out"]) == ("1", str(tls["source"]["packets"]), str(tls["source"]["bytes"]))
    assert all((rows[m]["flows_out"], rows[m]["bytes_out"]) == ("0", "0") for m in (L1, L2, L3))


def test_devices_json_and_table(geo: tuple[str | Path, ...]) -> None:
    """devices-json: one ECS device record per line, as on the devices topic; devices: a table
    whose title counts them, every MAC in it."""
    records = {d["device"]["id"]: d for d in ndjson(_analyze(geo, "devices-json"))}
    assert set(records) == {L1, L2, L3, H}
    l2 = records[L2]
    assert l2["event"]["kind"] == "state" and l2["host"] == {"mac": [L2], "ip": ["10.20.1.32"]}
    assert l2["egress"]["device"]["covered"] is True and l2["egress"]["device"]["lan_only"] is True
    assert records[H]["egress"]["device"]["lan_only"] is False and records[H]["device"]["name"] == "vauxhall-lamp-01"
    table = _analyze(geo, "devices")
    assert "Devices: 4 (4 of covered vendors, 3 without egress)" in table
    assert all(mac in table for mac in (L1, L2, L3, H))


def test_the_html_report_lists_the_devices_without_flows(geo: tuple[str | Path, ...], tmp_path: Path) -> None:
    """The HTML page's device table has the inventory's LAN-only cameras beside the one with flows."""
    page = tmp_path / "report.html"
    _analyze(geo, "html", "-o", page)
    text = page.read_text()
    devices = text[text.index('<section id="devices">') : text.index("</section>", text.index('<section id="devices">'))]
    assert all(mac in devices for mac in (L1, L2, L3, H))
    assert "<b>4</b><span>devices (4 of a covered vendor)</span>" in text
