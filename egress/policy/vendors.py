"""Which vendor names a policy may use: the brand catalogue's brands and the IEEE
registry's organisation names (what `device.manufacturer` and the evaluator compare with).
A name that is neither matches no device, so a typo (`Hikvison`) would silently switch
detection off: the policy loader refuses it with the nearest brand."""

from __future__ import annotations

import difflib
import functools

from egress.enrich.brands import BRANDS
from egress.enrich.oui import ManufNotFoundError, default_registry

__all__ = ["vendor_problem"]

_BRANDS: dict[str, str] = {b.casefold(): b for b in BRANDS}


def vendor_problem(name: str) -> str | None:
    """What is wrong with a policy's vendor name, or None (case-insensitive). A catalogue
    brand, the common case, is known without reading the registry."""
    folded = name.casefold()
    if folded in _BRANDS:
        return None
    organizations = _organizations()
    if organizations is None or folded in organizations:
        return None
    close = difflib.get_close_matches(folded, _BRANDS, n=1, cutoff=0.75)
    hint = f" (did you mean {_BRANDS[close[0]]}?)" if close else ""
    return (f"vendor {name!r} is neither a brand of the catalogue nor an organisation of the IEEE registry: "
            f"it would match no device{hint}")  # fmt: skip


@functools.cache
def _organizations() -> frozenset[str] | None:
    """The registry's names, case-folded (None without a registry file: then nothing can be
    checked, and the services refuse to start for want of it anyway)."""
    try:
        return frozenset(n.casefold() for n in default_registry().organizations())
    except ManufNotFoundError:
        return None
