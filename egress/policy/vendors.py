"""Which vendor names a policy may use: the brand catalogue's brands and the IEEE
registry's organisation names (what `device.manufacturer` and the evaluator compare with).
A name that is neither matches no device, so a typo (`Hikvison`) would silently switch
detection off: the policy loader refuses it with the nearest known name."""

from __future__ import annotations

import difflib
import functools

from egress.enrich.brands import BRANDS
from egress.enrich.oui import ManufNotFoundError, default_registry

__all__ = ["VendorNames", "known_vendors"]


class VendorNames:
    """Known names, compared case-insensitively; `problem(name)` says what is wrong with one."""

    def __init__(self, brands: tuple[str, ...], organizations: frozenset[str]) -> None:
        self._brands = brands
        self._known = {n.casefold() for n in (*brands, *organizations)}

    def problem(self, name: str) -> str | None:
        if name.casefold() in self._known:
            return None
        folded = {b.casefold(): b for b in self._brands}
        close = difflib.get_close_matches(name.casefold(), folded, n=1, cutoff=0.75)
        hint = f" (did you mean {folded[close[0]]}?)" if close else ""
        return (f"vendor {name!r} is neither a brand of the catalogue nor an organisation of the IEEE registry: "
                f"it would match no device{hint}")  # fmt: skip


@functools.cache
def known_vendors() -> VendorNames | None:
    """The catalogue and the registry this host has (None without a registry file: then
    nothing can be checked, and the services refuse to start for want of it anyway)."""
    try:
        registry = default_registry()
    except ManufNotFoundError:
        return None
    return VendorNames(BRANDS, registry.organizations())
