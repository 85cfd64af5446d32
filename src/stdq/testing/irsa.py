"""Emulator of IRSA's ZTF light-curve API (``nph_light_curves``), docs/wire-formats.md 3.1.

``GET {prefix}?POS=CIRCLE+ra+dec+r&BANDNAME=g,r&TIME=mjd1+mjd2&BAD_CATFLAGS_MASK=n
&COLLECTION=ztf_drN&FORMAT=CSV`` -> a CSV with exactly the documented columns
(:data:`HEADER`), detections only, one row per (oid, expid). The emulator is
mounted at ``/irsa/cgi-bin/ZTF/nph_light_curves`` so that the service's ``url``
setting is exactly the endpoint, as in production.

Rules followed from the documentation: r in degrees, in (0, 0.1667]; ``TIME``
bounds may be ``-Inf``/``Inf``; ``BAD_CATFLAGS_MASK`` drops epochs whose
``catflags`` share a bit with the mask; only the 5 most recent data releases are
served; an empty result is the header line alone; a bad request is a 400.

guess: the text and content type of a 400 answer (plain text here, one line
saying what is wrong); the number formatting of the CSV values; that rows come
sorted by oid then mjd; that ``ID`` queries are not needed (answered with 400
here); that formats other than CSV exist but are not emulated (400 here).

Synthetic sky (deterministic; :mod:`stdq.testing.sky`): SN 2023ixf has three oids
of its own -- field 735 ccd 5 quadrant 2 in zg and zr, and field 1768 ccd 9
quadrant 1 in zr (a secondary-grid field) -- plus a neighbour oid 1.0 arcsec away
(zg, field 735, sharing the target's zg exposures: a deblended neighbour) and a
fainter star 4.0 arcsec north (zr, field 735). NGC 3642 and M31 have one oid each
in zr. "Empty Field" (and any other position) has nothing: header-only answers.
The target's zg oid has one epoch with ``catflags = 32768`` (removed by the
default mask) and its zr oid one with ``catflags = 4`` (kept, flagged).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

# The documented header line, to the byte.
HEADER = (
    "oid,expid,hjd,mjd,mag,magerr,catflags,filtercode,ra,dec,chi,sharp,filefracday,field,"
    "ccdid,qid,limitmag,magzp,magzprms,clrcoeff,clrcounc,exptime,airmass,programid"
)
COLUMNS = tuple(HEADER.split(","))
MAX_RADIUS_DEG = 0.1667
# The 5 data releases IRSA serves (docs/wire-formats.md: only the 5 most recent are live).
RELEASES = ("ztf_dr19", "ztf_dr20", "ztf_dr21", "ztf_dr22", "ztf_dr23")
FILTER_OF_BAND = {"g": "zg", "r": "zr", "i": "zi"}
# A fixed heliocentric correction (days) for the emulated hjd; hjd is a JD, not an MJD.
HJD_CORRECTION = 0.00312


@dataclass(frozen=True)
class Oid:
    """One emulated light-curve object: a star seen in one field/ccd/quadrant/filter."""

    oid: str
    ra: float
    dec: float
    field: int
    ccdid: int
    qid: int
    filtercode: str
    epochs: tuple[tuple[int, float, float, float, int], ...]  # (expid, mjd, mag, magerr, catflags)
    magzp: float = 26.3
    limitmag: float = 20.8


# Per-epoch position scatter in arcsec (east, north), cycled.
_JITTER = ((0.03, -0.02), (-0.01, 0.04), (0.02, 0.01), (-0.04, -0.03), (0.00, 0.02), (0.01, -0.01))


def _epochs(first_expid: int, mjds: list[float], mags: list[float], errs: list[float], flags: dict[int, int]):
    return tuple(
        (first_expid + 1117 * i, mjd, mag, err, flags.get(i, 0))
        for i, (mjd, mag, err) in enumerate(zip(mjds, mags, errs, strict=True))
    )


def _sky_objects() -> list[Oid]:
    objects: list[Oid] = []
    sn = sky.find("SN 2023ixf")
    assert sn is not None
    g_mjds = [60084.15312, 60086.21544, 60088.18230, 60090.24111, 60093.20875, 60097.19002]
    r_mjds = [60084.19520, 60086.25801, 60088.22467, 60090.28350, 60093.25112, 60097.23246]
    # the target itself, a few hundredths of an arcsec off the catalogue position
    ra, dec = sky.offset(sn.ra, sn.dec, 0.06, -0.04)
    objects.append(Oid(
        "735105200012345", ra, dec, 735, 5, 2, "zg",
        _epochs(237011001, g_mjds, [14.8215, 13.9604, 13.2581, 12.9470, 12.8012, 12.9953],
                [0.0213, 0.0152, 0.0127, 0.0119, 0.0118, 0.0121], {3: 32768}),
        magzp=26.32, limitmag=20.91,
    ))
    ra, dec = sky.offset(sn.ra, sn.dec, -0.05, 0.07)
    objects.append(Oid(
        "735205200023456", ra, dec, 735, 5, 2, "zr",
        _epochs(237011012, r_mjds, [14.6120, 13.8843, 13.1877, 12.8809, 12.7124, 12.7680],
                [0.0198, 0.0144, 0.0125, 0.0117, 0.0115, 0.0116], {2: 4}),
        magzp=26.18, limitmag=20.62,
    ))
    ra, dec = sky.offset(sn.ra, sn.dec, 0.10, 0.02)
    objects.append(Oid(
        "176809100034567", ra, dec, 1768, 9, 1, "zr",
        _epochs(237022501, [60087.30114, 60091.29851, 60095.31077, 60099.28893],
                [13.5270, 12.9142, 12.7436, 12.7911], [0.0139, 0.0121, 0.0116, 0.0118], {}),
        magzp=26.15, limitmag=20.55,
    ))
    # a deblended neighbour 1.0 arcsec away (0.8 E, 0.6 N), on the target's zg exposures
    ra, dec = sky.offset(sn.ra, sn.dec, 0.8, 0.6)
    objects.append(Oid(
        "735105200012399", ra, dec, 735, 5, 2, "zg",
        _epochs(237011001, g_mjds, [18.9021, 18.9310, 18.8874, 18.9145, 18.9402, 18.8991],
                [0.0712, 0.0730, 0.0698, 0.0721, 0.0744, 0.0709], {3: 32768}),
        magzp=26.32, limitmag=20.91,
    ))
    # a fainter star 4 arcsec north, outside the default 1.5 arcsec cone
    ra, dec = sky.offset(sn.ra, sn.dec, 0.0, 4.0)
    objects.append(Oid(
        "735205200023499", ra, dec, 735, 5, 2, "zr",
        _epochs(237011012, r_mjds, [19.4410, 19.4862, 19.4125, 19.4733, 19.4507, 19.4290],
                [0.0951, 0.0987, 0.0933, 0.0975, 0.0962, 0.0944], {}),
        magzp=26.18, limitmag=20.62,
    ))
    ngc = sky.find("NGC 3642")
    assert ngc is not None
    objects.append(Oid(
        "686204100045678", ngc.ra, ngc.dec, 686, 4, 1, "zr",
        _epochs(150033001, [59001.2101, 59005.2233, 59009.1987],
                [15.2012, 15.1988, 15.2035], [0.0151, 0.0150, 0.0152], {}),
        magzp=26.2, limitmag=20.7,
    ))
    m31 = sky.find("M31")
    assert m31 is not None
    objects.append(Oid(
        "695211400056789", m31.ra, m31.dec, 695, 11, 4, "zr",
        _epochs(120044001, [58800.1511, 58802.1622, 58804.1733],
                [13.1017, 13.1042, 13.0998], [0.0101, 0.0102, 0.0101], {}),
        magzp=26.25, limitmag=20.4,
    ))
    return objects


SKY_OBJECTS = _sky_objects()


def _filefracday(mjd: float) -> str:
    """``YYYYMMDDdddddd``: the UT date and the fraction of the day (6 digits)."""
    import datetime as dt

    day = math.floor(mjd)
    date = dt.date(1858, 11, 17) + dt.timedelta(days=day)
    frac = int(round((mjd - day) * 1e6))
    return f"{date:%Y%m%d}{min(frac, 999999):06d}"


def csv_rows(ra: float, dec: float, radius_deg: float, bands: set[str] | None = None,
             tmin: float = -math.inf, tmax: float = math.inf, mask: int = 0) -> list[str]:
    """The CSV data lines for one cone (without the header)."""
    lines: list[str] = []
    for obj in SKY_OBJECTS:
        if bands is not None and obj.filtercode not in bands:
            continue
        for i, (expid, mjd, mag, magerr, catflags) in enumerate(obj.epochs):
            if mask and catflags & mask:
                continue
            if not (tmin <= mjd <= tmax):
                continue
            east, north = _JITTER[i % len(_JITTER)]
            row_ra, row_dec = sky.offset(obj.ra, obj.dec, east, north)
            if sky.separation_deg(ra, dec, row_ra, row_dec) > radius_deg:
                continue
            airmass = 1.10 + 0.03 * (i % 5)
            lines.append(",".join((
                obj.oid,
                str(expid),
                f"{mjd + 2400000.5 + HJD_CORRECTION:.8f}",
                f"{mjd:.8f}",
                f"{mag:.6f}",
                f"{magerr:.6f}",
                str(catflags),
                obj.filtercode,
                f"{row_ra:.7f}",
                f"{row_dec:.7f}",
                f"{1.05 + 0.02 * (i % 4):.3f}",
                f"{0.012 - 0.004 * (i % 3):.3f}",
                _filefracday(mjd),
                str(obj.field),
                str(obj.ccdid),
                str(obj.qid),
                f"{obj.limitmag - 0.05 * (i % 3):.4f}",
                f"{obj.magzp + 0.01 * (i % 2):.4f}",
                "0.021500",
                "-0.054000" if obj.filtercode == "zg" else "0.081000",
                "0.0000120",
                "30",
                f"{airmass:.3f}",
                "1",
            )))
    return lines


class IrsaLightCurveEmulator(Emulator):
    """IRSA ``nph_light_curves``: cone searches over the emulated sky, answered as CSV."""

    name = "irsa"
    service_name = "ztf"
    prefix = "/irsa/cgi-bin/ZTF/nph_light_curves"

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD") or request.path not in ("/", ""):
            return self._bad("unsupported request", 404)
        query = {k.upper(): v[-1] for k, v in request.query.items()}
        try:
            return self._answer(query)
        except ValueError as exc:
            return self._bad(str(exc))

    @staticmethod
    def _bad(text: str, status: int = 400) -> Response:
        # guess: a short plain-text explanation (bhtom2 #52 only tells the status).
        return Response.text(f"ERROR: {text}\n", status)

    def _answer(self, query: dict[str, str]) -> Response:
        if "ID" in query:
            raise ValueError("ID queries are not emulated")
        pos = query.get("POS") or (f"CIRCLE {query['CIRCLE']}" if "CIRCLE" in query else None)
        if not pos:
            raise ValueError("one of POS or ID is required")
        parts = pos.split()
        if len(parts) != 4 or parts[0].upper() != "CIRCLE":
            raise ValueError(f"POS must be 'CIRCLE ra dec radius', not {pos!r}")
        try:
            ra, dec, radius = (float(p) for p in parts[1:])
        except ValueError:
            raise ValueError(f"POS values are not numbers: {pos!r}") from None
        if not (0 <= ra < 360 and -90 <= dec <= 90):
            raise ValueError(f"POS position out of range: {pos!r}")
        if not (0 < radius <= MAX_RADIUS_DEG):
            raise ValueError(f"radius must be > 0 and <= {MAX_RADIUS_DEG} degrees, not {radius:g}")
        bands = None
        if query.get("BANDNAME"):
            names = [b.strip() for b in query["BANDNAME"].split(",") if b.strip()]
            if not names or any(b not in FILTER_OF_BAND for b in names):
                raise ValueError(f"BANDNAME must be g, r, i or a combination, not {query['BANDNAME']!r}")
            bands = {FILTER_OF_BAND[b] for b in names}
        tmin, tmax = -math.inf, math.inf
        if query.get("TIME"):
            bounds = query["TIME"].split()
            try:
                tmin, tmax = (float(b) for b in bounds)  # float() reads -Inf and Inf
            except ValueError:
                raise ValueError(f"TIME must be 'mjd1 mjd2', not {query['TIME']!r}") from None
            if tmin > tmax:
                raise ValueError("TIME: mjd1 is after mjd2")
        mask = 0
        if "BAD_CATFLAGS_MASK" in query:
            if not re.fullmatch(r"\d+", query["BAD_CATFLAGS_MASK"].strip()):
                raise ValueError("BAD_CATFLAGS_MASK must be a non-negative integer")
            mask = int(query["BAD_CATFLAGS_MASK"])
        collection = query.get("COLLECTION")
        if collection and collection.lower() not in RELEASES:
            raise ValueError(
                f"COLLECTION {collection!r} is not served; available: {', '.join(RELEASES)}"
            )
        fmt = query.get("FORMAT", "CSV").upper()
        if fmt != "CSV":
            raise ValueError(f"FORMAT {fmt} is not emulated")
        lines = [HEADER, *csv_rows(ra, dec, radius, bands, tmin, tmax, mask)]
        return Response.text("\n".join(lines) + "\n", 200, "text/csv")
