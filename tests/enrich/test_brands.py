"""The brand catalogue: registry organisation names → brands, matched precisely."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from egress.enrich.brands import BRANDS, CATALOGUE, brand_of, manufacturer, normalise
from egress.enrich.oui import DEFAULT_MANUF_PATH, OuiRegistry

# MA-L assignments listed in /work/shared/VENDORS.md (IEEE registry, Wireshark 4.0.17).
HIKVISION_OUIS = """
04:03:12 08:54:11 08:A1:89 08:CC:81 0C:75:D2 10:12:FB 18:68:CB 18:80:25 24:0F:9B 24:28:FD
24:32:AE 24:48:45 28:57:BE 2C:A5:9C 34:09:62 3C:1B:F8 40:AC:BF 44:19:B6 44:47:CC 44:A6:42
4C:62:DF 4C:BD:8F 4C:F5:DC 50:E5:38 54:8C:81 54:C4:15 58:03:FB 58:50:ED 5C:34:5B 64:DB:8B
68:6D:BC 74:3F:C2 80:48:9F 80:7C:62 80:BE:AF 80:F5:AE 84:9A:40 8C:E7:48 94:E1:AC 98:8B:0A
98:9D:E5 98:DF:82 98:F1:12 A0:FF:0C A4:14:37 A4:29:02 A4:A4:59 A4:D5:C2 AC:B9:2F AC:CB:51
B4:A3:82 BC:5E:33 BC:9B:5E BC:AD:28 BC:BA:C2 C0:51:7E C0:56:E3 C0:6D:ED C4:2F:90 D4:E8:53
DC:07:F8 DC:D2:6A E0:BA:AD E0:CA:3C E0:DF:13 E8:A0:ED EC:A9:71 EC:C8:9C F8:4D:FC FC:9F:FD
""".split()
PRAMA_OUIS = "24:B1:05 BC:29:78".split()
EZVIZ_OUIS = "20:BB:BC 34:C6:DD 54:D6:0D 58:8F:CF 64:F2:FB 78:A6:A0 78:C1:AE EC:97:E0".split()
DAHUA_OUIS = """
08:ED:ED 14:A7:8B 24:52:6A 30:DD:AA 38:AF:29 3C:E3:6B 3C:EF:8C 4C:11:BF 5C:F5:1A 64:FD:29
6C:1C:71 74:C9:29 8C:E9:B4 90:02:A9 98:F9:CC 9C:14:63 A0:BD:1D B4:4C:3B BC:32:5F C0:39:5A
C4:AA:C4 D4:43:0E E0:2E:FE E0:50:8B E4:24:6C F4:B1:C2 F8:CE:07 FC:5F:49 FC:B6:9D
""".split()
AXIS_OUIS = "00:40:8C AC:CC:8E B8:A4:4F E8:27:25".split()
UNIVIEW_OUIS = "48:EA:63 6C:F1:7E C4:79:05".split()
# A sample of the other covered vendors (they hold hundreds of OUIs; one or two each suffice).
COVERED_SAMPLES = [
    ("64:69:BC", "Hytera"),
    ("9C:06:6E", "Hytera"),
    ("00:18:82", "Huawei"),
    ("00:3D:E1", "Huawei"),
    ("00:15:EB", "ZTE"),
]

EXPECTED = (
    [(oui, "Hikvision") for oui in HIKVISION_OUIS + PRAMA_OUIS + EZVIZ_OUIS]
    + [(oui, "Dahua") for oui in DAHUA_OUIS]
    + [(oui, "Axis") for oui in AXIS_OUIS]
    + [(oui, "Uniview") for oui in UNIVIEW_OUIS]
    + COVERED_SAMPLES
)

# Catalogue patterns that match nothing in the 4.0.17 registry, on purpose (named in the
# spec or brief, registered under that name only in newer registries or not at all).
NOT_YET_REGISTERED = {"hanwha techwin"}


@pytest.fixture(scope="module")
def registry() -> OuiRegistry:
    """The real registry, or a skip where Wireshark's data is not installed."""
    if not DEFAULT_MANUF_PATH.exists():
        pytest.skip(f"{DEFAULT_MANUF_PATH} not installed (Debian: libwireshark-data)")
    return OuiRegistry.load()


def test_vendor_lists_are_complete() -> None:
    """The lists above hold every OUI VENDORS.md lists (70 Hikvision, 29 Dahua, ...)."""
    assert (len(HIKVISION_OUIS), len(PRAMA_OUIS), len(EZVIZ_OUIS)) == (70, 2, 8)
    assert (len(DAHUA_OUIS), len(AXIS_OUIS), len(UNIVIEW_OUIS)) == (29, 4, 3)
    assert len({oui for oui, _ in EXPECTED}) == len(EXPECTED)


@pytest.mark.parametrize(("oui", "brand"), EXPECTED)
def test_listed_ouis_resolve_to_their_brand(registry: OuiRegistry, oui: str, brand: str) -> None:
    """Every OUI VENDORS.md lists for a brand resolves to that brand via the real registry."""
    found_brand, organization = manufacturer(f"{oui}:12:34:56", registry)
    assert organization is not None
    assert found_brand == brand, organization


def test_real_hikvision_and_dahua_sets_match_the_lists(registry: OuiRegistry) -> None:
    """The real registry's Hikvision-family and Dahua /24s are exactly the listed ones."""
    ma_l = registry.tables[24]

    def ouis(prefix: str) -> set[str]:
        word = prefix.split()[1]  # cheap pre-filter before normalising
        return {
            f"{value:06X}"
            for value, org in ma_l.items()
            if word in org.casefold() and normalise(org).startswith(prefix)
        }

    def flat(ouis: list[str]) -> set[str]:
        return {o.replace(":", "") for o in ouis}

    assert ouis("hangzhou hikvision") == flat(HIKVISION_OUIS)
    assert ouis("prama hikvision") == flat(PRAMA_OUIS)
    assert ouis("hangzhou ezviz") == flat(EZVIZ_OUIS)
    assert ouis("zhejiang dahua technology") == flat(DAHUA_OUIS)


def test_dahua_scale_factory_is_not_dahua(registry: OuiRegistry) -> None:
    """40:2C:76:1x:xx:xx is Shanghai Dahua Scale Factory, with no brand."""
    assert manufacturer("40:2C:76:10:ab:cd", registry) == (None, "Shanghai Dahua Scale Factory")


def test_locally_administered_mac_gives_nothing(registry: OuiRegistry) -> None:
    """A locally administered MAC has neither brand nor organisation."""
    assert manufacturer("46:19:b6:12:34:56", registry) == (None, None)


def test_unbranded_organisation_keeps_registry_name(registry: OuiRegistry) -> None:
    """An organisation outside the catalogue comes back with brand None and its name."""
    assert manufacturer("40:2C:76:00:12:34", registry) == (None, "Lista AG")


def test_every_pattern_matches_a_real_organisation(registry: OuiRegistry) -> None:
    """Each catalogue pattern matches some organisation in the real registry (no typos)."""
    by_first_word: dict[str, list[str]] = {}
    for org in {org for table in registry.tables.values() for org in table.values()}:
        core = normalise(org)
        by_first_word.setdefault(core.partition(" ")[0], []).append(core)
    for brand, patterns in CATALOGUE.items():
        for pattern in patterns:
            if pattern in NOT_YET_REGISTERED:
                continue
            first_word = re.match(r"[a-z0-9]+\b", pattern)  # every pattern opens with one
            assert first_word is not None, pattern
            candidates = by_first_word.get(first_word[0], [])
            assert any(re.fullmatch(pattern, core) for core in candidates), (brand, pattern)


@pytest.mark.parametrize(
    ("organization", "brand"),
    [
        ("Hangzhou Hikvision Digital Technology Co.,Ltd.", "Hikvision"),
        ("HANGZHOU HIKVISION DIGITAL TECHNOLOGY CO., LTD", "Hikvision"),
        ("Prama Hikvision India Private Limited", "Hikvision"),
        ("Hangzhou Ezviz Software Co.,Ltd.", "Hikvision"),
        ("Zhejiang Dahua Technology Co., Ltd.", "Dahua"),
        ("Zhejiang Dahua Technologyco.,Ltd", "Dahua"),
        ("zhejiang  dahua   technology co ltd", "Dahua"),
        ("Hangzhou Huacheng Network Technology Co.,Ltd", "Dahua"),
        ("Axis Communications AB", "Axis"),
        ("Samsung Techwin Co.,Ltd", "Hanwha"),
        ("Hanwha Techwin Co., Ltd.", "Hanwha"),
        ("Hanwha Vision Co., Ltd.", "Hanwha"),
        ("Zhejiang Uniview Technologies Co.,Ltd.", "Uniview"),
        ("Hytera Communications Corporation Limited", "Hytera"),
        ("Huawei Technologies Co.,Ltd", "Huawei"),
        ("Huawei Device Co., Ltd.", "Huawei"),
        ("zte corporation", "ZTE"),
        ("Bosch Security Systems B.V.", "Bosch"),
        ("Swann communications Pty Ltd", "Swann"),
        ("Tp-Link Technologies Co.,Ltd.", "TP-Link"),
        ("D-Link International", "D-Link"),
        ("D-Link （Shanghai）Limited Corp.", "D-Link"),
        ("Beijing Xiaomi Mobile Software Co., Ltd", "Xiaomi"),
        ("Shanghai Imilab Technology Co.Ltd", "Xiaomi"),
        ("Shanghai Xiaoyi Technology Co., Ltd.", "YI"),
        ("Nest Labs Inc.", "Nest"),
    ],
)
def test_known_names_and_spelling_variants(organization: str, brand: str) -> None:
    """Registry names and their case/punctuation/legal-form variants map to the brand."""
    assert brand_of(organization) == brand


@pytest.mark.parametrize(
    "organization",
    [
        "Shanghai Dahua Scale Factory",
        "Dahua Scale Co., Ltd.",
        "Dahua",
        "Hikvision",
        "Hikvision Fan Club Ltd",
        "Shenzhen Hikvision Reseller Co., Ltd.",
        "Zhejiang Dahua Technology Consulting Co., Ltd.",
        "Not Zhejiang Dahua Technology Co., Ltd.",
        "Hangzhou Hikvision Digital Technology Spare Parts Inc.",
        "Hangzhou Hikrobot Technology Co., Ltd.",
        "Wuhan Hikstorage Technology Co.,Ltd",
        "ZHEJIANG HIKAILINK TECHNOLOGY Co., Ltd",
        "HYESUNG TECHWIN Co., Ltd",
        "Shenzhen Techwinsemi Technology Co., Ltd.",
        "Hanwha NxMD (Thailand) Co., Ltd.",
        "ZTEC Instruments, Inc.",
        "Honor Device Co., Ltd.",
        "Robert Bosch GmbH",
        "Pelcombe Group Ltd.",
        "ProVision Communications",
        "Axis Communications Fans AB",
        "Ringo Ltd",
        "Xiaomi EV Technology Co., Ltd.",
        "Google, Inc.",
        "",
    ],
)
def test_substrings_and_lookalikes_are_not_brands(organization: str) -> None:
    """Names merely containing a brand word (or near misses) map to no brand."""
    assert brand_of(organization) is None


def test_none_has_no_brand() -> None:
    """brand_of(None) is None (the registry had no name)."""
    assert brand_of(None) is None


def test_normalise_strips_case_punctuation_and_legal_form() -> None:
    """normalise() folds case, collapses punctuation and drops trailing legal forms."""
    assert normalise("Zhejiang Dahua Technology Co., Ltd.") == "zhejiang dahua technology"
    assert normalise("Prama Hikvision India Private Limited") == "prama hikvision india"
    assert normalise("Bosch Security Systems B.V.") == "bosch security systems"
    assert normalise("Co. Ltd. Holdings Co") == "co ltd holdings"


def test_brands_is_the_sorted_catalogue() -> None:
    """BRANDS lists every catalogue brand once, sorted, including the spec's examples."""
    assert list(BRANDS) == sorted(CATALOGUE, key=str.casefold)
    for brand in ("Hikvision", "Dahua", "Axis", "Hanwha", "Uniview", "Hytera", "Huawei", "ZTE"):
        assert brand in BRANDS


def test_catalogue_is_read_only() -> None:
    """CATALOGUE cannot be modified by callers."""
    with pytest.raises(TypeError):
        CATALOGUE["Evil"] = ("dahua",)  # type: ignore[index]


def test_every_brand_result_is_in_brands() -> None:
    """brand_of only ever returns names listed in BRANDS."""
    samples = ["Axis Communications AB", "Hangzhou Ezviz Software Co.,Ltd.", "Ring LLC"]
    assert {brand_of(s) for s in samples} <= set(BRANDS)


REAL = Path(__file__).resolve().parents[2].parent / "shared" / "pcaps-real"


@pytest.mark.parametrize(
    ("capture", "mac", "brand"),
    [
        ("dlink-dcs935l-camera-setup-mydlink.pcap", "b0:c5:54:25:5b:0e", "D-Link"),
        ("nest-device-weave-logsink-cloud.pcap", "18:b4:30:26:34:40", "Nest"),
        ("xiaobai-y2-camera-idle-cn-p2p-keepalive.pcap", "78:df:72:24:69:4d", "Xiaomi"),
        ("edimax-camera-setup-ssdp-mdns.pcap", "74:da:38:80:7a:08", "Edimax"),
        ("tuya-local-protocol-udp6667-broadcast.pcap", "68:57:2d:6a:87:5f", "Tuya"),
    ],
)
def test_the_cameras_of_the_real_captures_have_their_brand(registry: OuiRegistry, capture: str, mac: str, brand: str) -> None:
    """The device that talks most in each real camera capture (its MAC read from the file by
    tshark) resolves to its brand, not to `other`."""
    path = REAL / capture
    if not path.exists():
        pytest.skip(f"{REAL} is not here")
    macs = subprocess.run(["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "eth.src"], capture_output=True, text=True, check=True).stdout.split()
    assert mac in macs
    assert manufacturer(mac, registry)[0] == brand
