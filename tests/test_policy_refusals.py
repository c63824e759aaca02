"""Policy mistakes that would silently weaken detection are refused, each at its own line
(issue: nothing typed wrong goes unnoticed), by `egress check` as at every start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    pytest.param(
        "groups:\n  - name: cams\n    deny:\n      - {name: uk, countries: [UK]}\n",
        "5: groups.0.deny.0.countries: country 'UK' is not an ISO 3166-1 alpha-2 code (did you mean GB?)",
        id="country-UK",
    ),
    pytest.param(
        "groups:\n  - name: cams\n    deny:\n      - {name: zz, countries: [CN, ZZ]}\n",
        "5: groups.0.deny.0.countries: country 'ZZ' is not an ISO 3166-1 alpha-2 code",
        id="country-unassigned",
    ),
    pytest.param(
        "groups:\n  - name: cams\n    allow:\n      - {name: big, asns: [4294967296]}\n",
        "5: groups.0.allow.0.asns: ASN 4294967296 is outside 0-4294967295",
        id="asn-too-big",
    ),
    pytest.param(
        "groups:\n  - name: cams\n    deny:\n      - {name: p2p, ports: [udp/32100]}\n"
        "    allow:\n      - {name: ntp, ports: [udp/123]}\n      - {name: p2p, countries: [US]}\n",
        "8: groups.0.allow.1: rule name 'p2p' is used twice in group 'cams' (first at deny.0)",
        id="rule-name-twice",
    ),
    pytest.param(
        "devices:\n  - {mac: 44:19:b6:00:00:01, name: door}\n  - {mac: 44:19:b6:00:00:02, name: gate}\n"
        "  - {mac: 4419.B600.0001, name: lobby}\n",
        "5: devices.2: MAC 44-19-B6-00-00-01 is listed twice (first at devices.0)",
        id="mac-twice",
    ),
    pytest.param(
        "covered_vendors: [Hikvision, Hikvison]\n",
        "2: covered_vendors.1: vendor 'Hikvison' is neither a brand of the catalogue nor an organisation of the "
        "IEEE registry: it would match no device (did you mean Hikvision?)",
        id="covered-vendor-typo",
    ),
    pytest.param(
        "groups:\n  - name: doors\n    match:\n      vendors:\n        - Axis\n        - Acme Doorbells\n",
        "7: groups.0.match.vendors.1: vendor 'Acme Doorbells' is neither a brand of the catalogue nor an "
        "organisation of the IEEE registry: it would match no device",
        id="match-vendor-unknown",
    ),
    pytest.param(
        "groups:\n  - name: street\n  - name: lobby\n  - name: street\n    match: {vlans: [20]}\n",
        "5: groups.2: group name 'street' is used twice (first at groups.0)",
        id="group-twice",
    ),
]


@pytest.mark.parametrize(("body", "line"), CASES)
def test_check_refuses_at_the_line(tmp_path: Path, body: str, line: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("version: 1\n" + body)
    proc = subprocess.run([sys.executable, "-m", "egress", "check", "--policy", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"egress: {path}:{line}" in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr


def test_what_is_refused_above_is_accepted_when_right(tmp_path: Path) -> None:
    """The same shapes, written correctly, pass: GB and XK (GeoIP's Kosovo) are countries,
    4294967295 is an ASN, one name per rule, group and MAC; vendors are brands or registry
    organisation names in any case."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\ndevices:\n  - {mac: 44:19:b6:00:00:01, name: door}\n  - {mac: 44:19:b6:00:00:02, name: lobby}\n"
        "groups:\n  - name: street\n    deny:\n      - {name: p2p, countries: [GB, XK], asns: [4294967295]}\n"
        "    allow:\n      - {name: vms, ports: [tcp/443]}\n  - name: lobby\n"
        "    match: {vendors: [dahua, 'Hangzhou Hikvision Digital Technology Co.,Ltd.']}\n"
        "covered_vendors: [HIKVISION, Hytera]\n"
    )
    proc = subprocess.run([sys.executable, "-m", "egress", "check", "--policy", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_allow_for_every_address_without_ports_is_a_warning_at_its_line(tmp_path: Path) -> None:
    """Valid (exit 0) but named on stderr: an allow rule for 0.0.0.0/0 or ::/0 that nothing
    narrows. The same destinations with ports, or a deny rule, are not warned about."""
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\ngroups:\n  - name: cams\n    deny:\n      - {name: all-p2p, destinations: ['0.0.0.0/0'], ports: [udp/32100]}\n"
        "      - {name: block, destinations: ['::/0']}\n    allow:\n      - {name: web, destinations: ['0.0.0.0/0'], ports: [tcp/443]}\n"
        "      - name: everything\n        destinations: [198.51.100.0/24, '::/0']\n"
    )
    proc = subprocess.run([sys.executable, "-m", "egress", "check", "--policy", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        f"egress: warning: {path}:9: groups.0.allow.1: rule everything allows every address on every port, "
        "so nothing group cams sends is checked (add ports, or narrow destinations)"
    ]
