"""The emulators' sky: a few named targets with fixed coordinates.

Every emulator draws its synthetic data from these, deterministically, so tests
can compute the expected numbers by hand. "Empty Field" resolves but no survey
has data there; "Nowhere Object" resolves nowhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SkyObject:
    name: str
    ra: float
    dec: float
    aliases: tuple[str, ...] = ()
    otype: str = "SN"


TARGETS: tuple[SkyObject, ...] = (
    SkyObject("SN 2023ixf", 210.910674, 54.311650, ("2023ixf", "AT 2023ixf", "SN2023ixf"), "SN"),
    SkyObject("NGC 3642", 170.5750583, 59.0742417, ("NGC3642",), "LIN"),
    SkyObject("M31", 10.684708, 41.268750, ("Andromeda", "NGC 224"), "G"),
    SkyObject("Empty Field", 150.0, -30.0, (), "Field"),
)


def _key(name: str) -> str:
    return " ".join(name.split()).casefold()


def find(name: str) -> SkyObject | None:
    """The target called NAME (any alias, case and spacing ignored), or None."""
    key = _key(name)
    for obj in TARGETS:
        if key == _key(obj.name) or key in {_key(a) for a in obj.aliases}:
            return obj
    return None


def separation_deg(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    s = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((r2 - r1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(s))))


def offset(ra: float, dec: float, east_arcsec: float, north_arcsec: float) -> tuple[float, float]:
    """A position EAST/NORTH arcsec away (small offsets, tangent plane)."""
    dec2 = dec + north_arcsec / 3600.0
    ra2 = ra + east_arcsec / 3600.0 / math.cos(math.radians(dec))
    return ra2 % 360.0, dec2
