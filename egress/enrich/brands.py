"""The curated brand catalogue: IEEE registry organisation name → camera/covered brand.

Policies name brands ("Hikvision", "Dahua"), the registry names legal entities
("Hangzhou Hikvision Digital Technology Co.,Ltd.", "Prama Hikvision India Private Limited").
This module bridges the two, precisely: an organisation name is normalised (case-folded,
punctuation collapsed to spaces, trailing legal-form words such as "Co Ltd" removed) and the
remaining *core* must match one of a brand's patterns in full. Substrings never count:
"Shanghai Dahua Scale Factory" (a weighing-scale maker holding ``40:2C:76:1`` /28) is not
Dahua, and "HYESUNG TECHWIN" is not Hanwha.

Every entry was checked against the registry as Wireshark ships it (Debian
libwireshark-data 4.0.17), except one organisation name this registry does not list yet
("Hanwha Techwin", a former name of the spec's Hanwha), marked as such. An organisation
that matches nothing has no brand (None) and callers keep the registry's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from egress.enrich.oui import OuiRegistry

__all__ = ["BRANDS", "CATALOGUE", "brand_of", "manufacturer", "normalise"]

# Brand → regular expressions, each matched against the WHOLE normalised core name
# (see normalise()). Keep them literal where possible; alternations only for the registry's
# own spelling variants.
_CATALOGUE: dict[str, tuple[str, ...]] = {
    # --- covered by US NDAA §889 / the FCC Covered List (and their subsidiaries) ---
    "Hikvision": (
        "hangzhou hikvision digital technology",
        "prama hikvision india",  # Hikvision's Indian joint venture
        # EZVIZ is Hikvision's consumer brand, run by its subsidiary Hangzhou Ezviz Software
        # (and Hik-Connect streams over EZVIZ infrastructure). §889 covers "subsidiaries and
        # affiliates", so an EZVIZ camera is a Hikvision device for policy purposes.
        "hangzhou ezviz software",
    ),
    "Dahua": (
        # The registry spells it both ways: "Technology Co., Ltd." and, for 30:DD:AA and
        # F8:CE:07, "Technologyco.,Ltd" (a typo in the IEEE record).
        "zhejiang dahua technology(?:co)?",
        # Imou (formerly Lechange), Dahua's consumer brand, is run by its subsidiary
        # Hangzhou Huacheng Network Technology: same reasoning as EZVIZ above.
        "hangzhou huacheng network technology",
    ),
    "Hytera": ("hytera communications",),
    "Huawei": (
        "huawei technologies",
        "huawei device",
        # Huawei's former joint venture with Symantec; Huawei bought it outright in 2012.
        "huawei symantec technologies",
        # HiSilicon is Huawei's wholly owned chip maker.
        "hisilicon technologies",
        # Not "Honor Device": Honor was sold off by Huawei in 2020.
    ),
    "ZTE": (
        "zte",  # "zte corporation" once the legal form is removed
        "zhongxing telecom",  # ZTE's earlier name (Zhongxing Telecommunication Equipment)
        # Not "Shanghai Zte Technologies" (ownership unverified) nor "ZTEC Instruments".
    ),
    # --- other camera makers ---
    "Axis": ("axis communications",),
    "Hanwha": (
        "samsung techwin",  # the same company before 2015
        "hanwha techwin",  # 2015-2023 name; not in the 4.0.17 registry
        "hanwha vision(?: vietnam)?",
        # Not "Hanwha NxMD" (medical X-ray detectors) nor "HYESUNG TECHWIN"/"Stechwin".
    ),
    "Uniview": ("zhejiang uniview technologies",),
    "Bosch": ("bosch security systems",),  # not the many other Robert Bosch entities
    "Vivotek": ("vivotek",),
    "Mobotix": ("mobotix",),
    "i-PRO": ("i pro",),  # the former Panasonic security-camera business
    "Honeywell": (
        # Only Honeywell's video/security units; Honeywell at large makes everything.
        "honeywell video systems",
        "honeywell security china",
    ),
    "Tiandy": ("tiandy technologies",),
    "TVT": ("tvt",),  # Shenzhen TVT Digital Technology, DVR/NVR maker
    "Milesight": ("xiamen milesight iot", "milesight taiwan"),
    "Sunell": ("sunell electronics",),
    "GeoVision": ("geovision",),
    "IDIS": ("idis",),
    "ACTi": ("acti",),
    "March Networks": ("march networks",),
    "Arecont Vision": ("arecont vision",),
    "IQinVision": ("iqinvision",),
    "Infinova": ("infinova",),
    "Provision-ISR": ("provision isr",),  # not "ProVision Communications"/"Provision Thai"
    "CP Plus": ("aditya infotech",),  # Aditya Infotech owns the CP PLUS brand
    "Verkada": ("verkada",),
    "Rhombus": ("rhombus systems", "rhombus europe"),
    "Reolink": ("reolink innovation",),
    "Amcrest": ("amcrest technologies",),
    "Lorex": ("lorex technology",),
    "Swann": ("swann communications",),
    "Wyze": ("wyze labs",),
    "Arlo": ("arlo technology",),
    "Ring": ("ring",),  # "Ring LLC"
    # Tapo cameras carry TP-Link's own OUIs; so do its routers, so expect more than cameras.
    "TP-Link": ("tp link(?: technologies| systems)?",),
    # --- consumer cameras seen in the real captures (../shared/pcaps-real) ---
    # D-Link's DCS cameras (mydlink) carry D-Link's OUIs, as do its routers.
    "D-Link": ("d link(?: international| systems| shanghai| middle east fzco)?",),
    "Xiaomi": (
        "xiaomi communications", "xiaomi electronics", "beijing xiaomi (?:mobile software|electronics)",
        # Imilab makes the Mi Home / Xiaobai cameras sold under Xiaomi's brand (its
        # ecosystem company); not "Xiaomi EV Technology" (cars).
        "shanghai imilab technology",
    ),
    "YI": ("shanghai xiaoyi technology",),  # YI Technology (Xiaoyi) cameras
    "Nest": ("nest labs",),  # Google Nest cameras and doorbells; not Google's other OUIs
    "Edimax": ("edimax technology",),
    "Tuya": ("tuya smart",),  # white-label cameras on Tuya's cloud
    "Blink": ("blink by amazon",),
}

CATALOGUE: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(_CATALOGUE)
"""Brand → the patterns a normalised organisation core must match in full (for docs)."""

BRANDS: Final[tuple[str, ...]] = tuple(sorted(_CATALOGUE, key=str.casefold))
"""Every brand name the catalogue can return, sorted."""


def _compile(catalogue: Mapping[str, tuple[str, ...]]) -> tuple[re.Pattern[str], dict[str, str]]:
    """All patterns as one alternation with a named group each, and group name → brand.

    A name then costs a single ``fullmatch``; the group that matched names the brand.
    """
    alternatives: list[str] = []
    brands: dict[str, str] = {}
    for brand, patterns in catalogue.items():
        for pattern in patterns:
            group = f"p{len(alternatives)}"
            alternatives.append(f"(?P<{group}>{pattern})")
            brands[group] = brand
    return re.compile("|".join(alternatives)), brands


_MATCHER, _GROUP_BRANDS = _compile(_CATALOGUE)

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits; the rest is punctuation
# Legal-form words, removed only from the END of a name and repeatedly ("co ltd"). Dotted
# forms arrive split by punctuation ("B.V." → "b v"), hence the multi-word entries.
_LEGAL_FORMS: Final[frozenset[tuple[str, ...]]] = frozenset(
    tuple(form.split())
    for form in (
        "co", "company", "corp", "corporation", "inc", "incorporated", "ltd", "limited",
        "llc", "plc", "private", "pvt", "pte", "pty", "gmbh", "ag", "ab", "kg", "bv", "b v",
        "sa", "s a", "spa", "s p a", "srl", "oy", "as",
    )
)  # fmt: skip
_LEGAL_WORDS: Final[frozenset[str]] = frozenset(f[0] for f in _LEGAL_FORMS if len(f) == 1)


def normalise(organization: str) -> str:
    """Reduce a registry name to its comparable core.

    ``"Zhejiang Dahua Technology Co., Ltd."`` → ``"zhejiang dahua technology"``;
    ``"Prama Hikvision India Private Limited"`` → ``"prama hikvision india"``.
    """
    words = _WORD.findall(organization.casefold())
    while words:
        if words[-1] in _LEGAL_WORDS:
            words.pop()
        elif len(words) >= 2 and tuple(words[-2:]) in _LEGAL_FORMS:
            del words[-2:]
        elif len(words) >= 3 and tuple(words[-3:]) in _LEGAL_FORMS:
            del words[-3:]
        else:
            break
    return " ".join(words)


@lru_cache(maxsize=4096)
def brand_of(organization: str | None) -> str | None:
    """The catalogue brand for a registry organisation name, or None if it has none."""
    if not organization:
        return None
    match = _MATCHER.fullmatch(normalise(organization))
    if match is None or match.lastgroup is None:
        return None
    return _GROUP_BRANDS[match.lastgroup]


def manufacturer(mac: str, registry: OuiRegistry) -> tuple[str | None, str | None]:
    """(brand, registry organisation) for a MAC; (None, None) when the registry is silent."""
    organization = registry.lookup(mac)
    return brand_of(organization), organization
