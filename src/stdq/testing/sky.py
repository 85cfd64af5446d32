"""The emulators' sky: a few named targets with fixed coordinates.

Every emulator draws its synthetic data from these, deterministically, so tests
can compute the expected numbers by hand. "Empty Field" resolves but no survey
has data there; "Nowhere Object" resolves nowhere.
"""

from __future__ import annotations

import math
import threading
import time
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


# -- data up to the present (issue 11 item 7) ----------------------------------------------
#: The recent nights an emulator serves after its hand-checked history.
RECENT_NIGHTS = 30


def last_night_mjd(unix_time: float) -> int:
    """The MJD (integer) of last night: the day before the current UTC date."""
    return int(unix_time // 86400.0 + 40587) - 1


class RecentNights:
    """An emulator's data up to the present: the last ``recent_nights`` nights ending with
    ``anchor_mjd`` (None: last night by :meth:`now`); :meth:`add_night` adds one more, the
    first night staying put. A mixin of the ATLAS and ZFPS emulators (their ``lock``)."""

    lock: threading.RLock

    def init_recent(self, recent_nights: int | None, anchor_mjd: int | None) -> None:
        self.recent_nights = RECENT_NIGHTS if recent_nights is None else int(recent_nights)
        self.anchor_mjd: int | None = anchor_mjd
        self.recent_first: int | None = None  # set by add_night(): the first night stays put

    def now(self) -> float:
        return time.time()

    def last_night(self) -> int:
        """The newest night with data: anchor_mjd, else last night by the emulator's clock."""
        if self.anchor_mjd is not None:
            return int(self.anchor_mjd)
        return last_night_mjd(self.now())

    def recent(self) -> tuple[int, int] | None:
        """(first, last) night of the recent data, None when there is none."""
        if self.recent_nights <= 0:
            return None
        last = self.last_night()
        first = self.recent_first if self.recent_first is not None else last - self.recent_nights + 1
        return first, last

    def add_night(self) -> int:
        """One more night of epochs (the anchor moves on by a night); the new night's MJD."""
        with self.lock:
            last = self.last_night()
            if self.recent_first is None:
                self.recent_first = last - self.recent_nights + 1
            self.anchor_mjd = last + 1
            return self.anchor_mjd
