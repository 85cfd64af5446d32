"""Emulator of the Fink LSST object API (``api.lsst.fink-portal.org``), and the Rubin sky
that the three Rubin emulators (Fink, ALeRCE LSST, the RSP TAP service) share.

Routes, as in ``astrolabsoftware/fink-object-api`` (``apps/routes/v1/lsst``), each a GET
(or a POST with a JSON body) under ``/api/v1``::

    /conesearch  ra, dec, radius (arcsec, at most 18000), n, columns, output-format
    /sources     diaObjectId (one, or comma-separated), columns, output-format
    /fp          diaObjectId (one, or comma-separated), columns, output-format

Answers are ``pandas.to_json(orient="records")`` (``application/json``) or CSV
(``application/csv``); keys carry the family prefix (``r:diaObjectId``,
``v:separation_degree``). The cone search groups alerts: one row per diaObjectId
(its last alert), sorted by separation. A bad request is HTTP 400 with the text of a
Python dict (``{'status': 'error', 'text': ...}``), as the real code answers. An
empty result is ``[]``.

guess: which alert the grouped cone search keeps (the last one here); the columns of
``/fp`` (the alert packet's DiaForcedSource fields: diaForcedSourceId, diaObjectId,
visit, detector, midpointMjdTai, psfFlux, psfFluxErr, scienceFlux, scienceFluxErr,
band, ra, dec) and of ``/sources`` (a subset of DiaSource with its pixel flags).

The Rubin sky (:func:`rubin_sky`): one transient in the ECDFS field (RA 53.13, Dec
-28.10, a DP1 field) with forced photometry on 18 recent nights in u g r i z y
(epochs before its rise are non-detections), its DIA detections (those at >= 5
sigma, two of them flagged), a fainter neighbour 0.7 arcsec east (inside the default
1 arcsec cone) and a star 4 arcsec north. Epochs are relative to the current date.
Fluxes in nJy; the peak r-band difference flux is 36307.805477 nJy = 36.307805 uJy,
AB 20.000.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

RUBIN_TARGET = sky.SkyObject("Rubin ECDFS Transient", 53.1300, -28.1000, ("RubinTr1",), "SN")
TARGET_ID = 609782208097419276  # > 2**53: a float would change it
NEIGHBOUR_ID = 609782208097419301
OUTER_ID = 609782208097419355
NEIGHBOUR_OFFSET = (0.7, 0.0)  # arcsec east, north
OUTER_OFFSET = (0.0, 4.0)
BANDS = "ugrizy"
ERR_NJY = {"u": 1500.0, "g": 600.0, "r": 500.0, "i": 600.0, "z": 900.0, "y": 1600.0}
HOST_NJY = 120000.0  # the host under the transient (total flux = host + difference)
PEAK_NJY = 36307.805477  # 10**(-0.4 * (20.0 - 23.9)) uJy, in nJy: AB 20.000
PEAK_NIGHT = 12  # nights before today
NIGHTS = (30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 9, 8, 6, 5, 4, 3, 2)
TAI_MINUS_UTC = 37.0  # seconds, since 2017-01-01
NULL_FLUX_EPOCH = 3  # index of a forced measurement without a flux (null)
SATURATED_SOURCE = 1  # index (among the detections) with pixelFlags_saturated
FIT_FLAG_SOURCE = 3  # index with psfFlux_flag


@dataclass
class Measurement:
    """One forced measurement of one object in one visit (nJy, TAI)."""

    visit: int
    detector: int
    band: str
    tai: float
    diff: float | None
    diff_err: float
    total: float
    total_err: float
    flags: dict[str, bool] = field(default_factory=dict)


@dataclass
class RubinObject:
    dia_object_id: int
    ra: float
    dec: float
    forced: list[Measurement]
    sources: list[tuple[int, Measurement]]  # (diaSourceId, measurement)


def _sig(value: float, digits: int = 7) -> float:
    return float(f"{value:.{digits}g}")


def rubin_sky(now: float | None = None) -> list[RubinObject]:
    """The objects of the Rubin sky, with epochs on the nights before NOW (unix time)."""
    now = time.time() if now is None else now
    today = math.floor(now / 86400.0 + 40587.0)
    target_ra, target_dec = RUBIN_TARGET.ra, RUBIN_TARGET.dec
    forced: list[Measurement] = []
    for i, night in enumerate(NIGHTS):
        band = BANDS[(i + 2) % 6] if night != PEAK_NIGHT else "r"
        utc = today - night + 0.1 + 0.004 * i
        tai = round(utc + TAI_MINUS_UTC / 86400.0, 8)
        days = night - PEAK_NIGHT  # > 0 before the peak
        if night == PEAK_NIGHT:
            diff = PEAK_NJY
        elif days > 8:  # before the rise: nothing there (non-detections)
            diff = _sig(((i * 37) % 11 - 5) * 60.0)
        else:
            diff = _sig(PEAK_NJY * math.exp(-((days / (4.0 if days > 0 else 9.0)) ** 2)))
        err = ERR_NJY[band]
        visit = 2025_1100_0000 + (today - night) * 100 + i
        forced.append(Measurement(
            visit=visit, detector=(4 + i) % 9, band=band, tai=tai,
            diff=None if i == NULL_FLUX_EPOCH else diff, diff_err=err,
            total=_sig(HOST_NJY + diff), total_err=_sig(err * 1.15),
        ))
    sources: list[tuple[int, Measurement]] = []
    for m in forced:
        if m.diff is not None and m.diff / m.diff_err >= 5.0:
            k = len(sources)
            flags = {"pixelFlags_saturated": k == SATURATED_SOURCE, "psfFlux_flag": k == FIT_FLAG_SOURCE}
            measured = Measurement(m.visit, m.detector, m.band, m.tai, _sig(m.diff * 1.01), m.diff_err,
                                   m.total, m.total_err, flags)
            sources.append((1_700_000_000_000_000_000 + m.visit * 10 + k, measured))
    ra_n, dec_n = sky.offset(target_ra, target_dec, *NEIGHBOUR_OFFSET)
    neighbour = [
        Measurement(m.visit, m.detector, m.band, m.tai, 2000.0 + 10.0 * j, m.diff_err, 40000.0, m.total_err)
        for j, m in enumerate(forced[::3])
    ]
    ra_o, dec_o = sky.offset(target_ra, target_dec, *OUTER_OFFSET)
    outer = [
        Measurement(m.visit, m.detector, m.band, m.tai, -150.0, m.diff_err, 90000.0, m.total_err)
        for m in forced[::6]
    ]
    return [
        RubinObject(TARGET_ID, round(target_ra + 0.03 / 3600, 7), round(target_dec - 0.02 / 3600, 7),
                    forced, sources),
        RubinObject(NEIGHBOUR_ID, round(ra_n, 7), round(dec_n, 7), neighbour, []),
        RubinObject(OUTER_ID, round(ra_o, 7), round(dec_o, 7), outer, []),
    ]


def cone(objects: list[RubinObject], ra: float, dec: float, radius_arcsec: float) -> list[tuple[RubinObject, float]]:
    """The objects within RADIUS of (RA, DEC), nearest first, with their separations (arcsec)."""
    found = []
    for obj in objects:
        sep = sky.separation_deg(ra, dec, obj.ra, obj.dec) * 3600.0
        if sep <= radius_arcsec:
            found.append((obj, sep))
    return sorted(found, key=lambda item: item[1])


def py_dict_text(text: str) -> str:
    """An error as Fink sends it: the str() of a Python dict."""
    return str({"status": "error", "text": text})


class FinkEmulator(Emulator):
    """The Fink LSST API: conesearch, sources, fp (see the module docstring)."""

    name = "fink"
    prefix = "/fink"
    service_name = "rubin"

    def __init__(self, now: float | None = None) -> None:
        super().__init__()
        self.objects = rubin_sky(now)
        self.hidden: set[int] = set()  # ids this broker does not know (tests: "no object")

    def service_settings_lines(self) -> list[str]:
        assert self.server is not None
        try:
            return [f'alerce_url = "{self.server.url("alerce-lsst")}"']
        except KeyError:
            return []

    def visible(self) -> list[RubinObject]:
        return [o for o in self.objects if o.dia_object_id not in self.hidden]

    def handle(self, request: Request) -> Response:
        args = {k: v[-1] for k, v in request.query.items()}
        if request.method == "POST" and not args and request.body:
            try:
                args = {k: str(v) for k, v in dict(request.json()).items()}
            except (ValueError, TypeError):
                return Response.text(py_dict_text("the body is not JSON"), 400, "text/html; charset=utf-8")
        route = request.path.rstrip("/")
        if route not in ("/api/v1/conesearch", "/api/v1/sources", "/api/v1/fp"):
            return Response.text("<!doctype html><title>404 Not Found</title><h1>Not Found</h1>", 404,
                                 "text/html; charset=utf-8")
        if not args:  # the real API answers its description
            return Response.text(f"Fink {route}", 200, "text/html; charset=utf-8")
        fmt = args.get("output-format", "json")
        if fmt not in ("json", "csv"):
            return Response.text(py_dict_text(f"Output format `{fmt}` is not supported."), 400,
                                 "text/html; charset=utf-8")
        if route == "/api/v1/conesearch":
            try:
                ra, dec, radius = float(args["ra"]), float(args["dec"]), float(args["radius"])
            except (KeyError, ValueError):
                return Response.text(py_dict_text("ra, dec and radius are required numbers"), 400,
                                     "text/html; charset=utf-8")
            if radius > 18000.0:
                return Response.text(py_dict_text("`radius` cannot be bigger than 18,000 arcseconds"
                                                  " (5 degrees).\n"), 400, "text/html; charset=utf-8")
            records = []
            for obj, sep in cone(self.visible(), ra, dec, radius)[: int(args.get("n", 1000))]:
                last = obj.sources[-1][1] if obj.sources else obj.forced[-1]
                records.append({"r:diaObjectId": obj.dia_object_id, "r:ra": obj.ra, "r:dec": obj.dec,
                                "r:midpointMjdTai": last.tai, "v:separation_degree": sep / 3600.0})
            return self._answer(records, fmt)
        if "diaObjectId" not in args:
            return Response.text(py_dict_text("diaObjectId is required"), 400, "text/html; charset=utf-8")
        wanted = {s.strip() for s in args["diaObjectId"].split(",")}
        records = []
        for obj in self.visible():
            if str(obj.dia_object_id) not in wanted:
                continue
            if route == "/api/v1/fp":
                records += [self._forced(obj, m, j) for j, m in enumerate(obj.forced)]
            else:
                records += [self._source(obj, sid, m) for sid, m in obj.sources]
        return self._answer(records, fmt)

    @staticmethod
    def _forced(obj: RubinObject, m: Measurement, j: int) -> dict[str, Any]:
        return {
            "r:diaForcedSourceId": obj.dia_object_id % 10**12 * 1000 + j,
            "r:diaObjectId": obj.dia_object_id,
            "r:visit": m.visit,
            "r:detector": m.detector,
            "r:midpointMjdTai": m.tai,
            "r:psfFlux": m.diff,
            "r:psfFluxErr": m.diff_err,
            "r:scienceFlux": m.total,
            "r:scienceFluxErr": m.total_err,
            "r:band": m.band,
            "r:ra": obj.ra,
            "r:dec": obj.dec,
        }

    @staticmethod
    def _source(obj: RubinObject, source_id: int, m: Measurement) -> dict[str, Any]:
        return {
            "r:diaSourceId": source_id,
            "r:diaObjectId": obj.dia_object_id,
            "r:visit": m.visit,
            "r:detector": m.detector,
            "r:midpointMjdTai": m.tai,
            "r:psfFlux": m.diff,
            "r:psfFluxErr": m.diff_err,
            "r:scienceFlux": m.total,
            "r:scienceFluxErr": m.total_err,
            "r:snr": round((m.diff or 0.0) / m.diff_err, 3),
            "r:band": m.band,
            "r:ra": round(obj.ra + 0.01 / 3600, 7),
            "r:dec": obj.dec,
            "r:psfFlux_flag": bool(m.flags.get("psfFlux_flag")),
            "r:pixelFlags_saturated": bool(m.flags.get("pixelFlags_saturated")),
            "r:pixelFlags_cr": False,
            "r:pixelFlags_bad": False,
            "r:isDipole": False,
        }

    @staticmethod
    def _answer(records: list[dict[str, Any]], fmt: str) -> Response:
        if fmt == "csv":
            out = io.StringIO()
            names = list(dict.fromkeys(k for r in records for k in r))
            writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
            return Response.text(out.getvalue(), 200, "application/csv")
        return Response(200, json.dumps(records).encode(), {"Content-Type": "application/json"})
