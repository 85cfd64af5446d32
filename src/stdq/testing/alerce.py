"""Emulator of ALeRCE's multisurvey API for LSST (``api-lsst.alerce.online``).

Routes, as ``alercebroker/alerce_client`` calls them (``alerce/default_config.json``,
``alerce/ms_search.py``), each a GET::

    /object_api/list_objects         survey=lsst, ra, dec, radius (arcsec), page, page_size
    /lightcurve_api/detections       survey_id=lsst, oid
    /lightcurve_api/forced-photometry survey_id=lsst, oid

``list_objects`` answers ``{"total", "page", "next", "has_next", "prev", "has_prev",
"items": [...]}`` (the client reads ``items``); the light-curve routes a JSON list of
records with ``oid``, ``measurement_id``, ``band`` (a number) and ``band_map`` (number
-> letter, which the client applies), ``psfFlux``/``psfFluxErr`` in nJy (the documented
LSST detection and forced-photometry models) and the ``psfFlux_flag*`` flags on
detections. Errors: JSON ``{"detail": ...}``, 400 for a bad parameter, 404 for an
unknown object.

guess: the items' fields (``oid``, ``meanra``, ``meandec``, ``firstmjd``, ``lastmjd``,
``n_det`` as in the ZTF object model); that ``radius`` is in arcsec as in the ZTF API;
the name ``mjd`` for the epoch (taken as TAI, the alert's midpointMjdTai); the
``band_map`` numbering (0..5 = u g r i z y); that forced photometry has ``visit`` and
``detector`` but no direct-image flux; that ``oid`` is a JSON number.
"""

from __future__ import annotations

import json
from typing import Any

from stdq.testing.fakeserver import Emulator, Request, Response
from stdq.testing.fink import BANDS, RubinObject, cone, rubin_sky

BAND_MAP = {str(i): b for i, b in enumerate(BANDS)}
BAND_NUMBER = {b: i for i, b in enumerate(BANDS)}


class AlerceLsstEmulator(Emulator):
    """ALeRCE LSST: list_objects, detections, forced-photometry (see the module docstring)."""

    name = "alerce-lsst"
    prefix = "/alerce-lsst"

    def __init__(self, now: float | None = None) -> None:
        super().__init__()
        self.objects = rubin_sky(now)

    @staticmethod
    def _error(status: int, detail: str) -> Response:
        return Response.json({"detail": detail}, status)

    def handle(self, request: Request) -> Response:
        args = {k: v[-1] for k, v in request.query.items()}
        route = request.path.rstrip("/")
        if route == "/object_api/list_objects":
            if args.get("survey") != "lsst":
                return self._error(400, "survey must be one of ['lsst', 'ztf']")
            try:
                ra, dec, radius = float(args["ra"]), float(args["dec"]), float(args["radius"])
                page, size = int(args.get("page", 1)), int(args.get("page_size", 10))
            except (KeyError, ValueError):
                return self._error(400, "ra, dec and radius must be numbers")
            found = cone(self.objects, ra, dec, radius)
            items = [self._item(obj) for obj, _ in found]
            chunk = items[(page - 1) * size: page * size]
            has_next = page * size < len(items)
            return Response.json({
                "total": len(items), "page": page, "next": page + 1 if has_next else None,
                "has_next": has_next, "prev": page - 1 if page > 1 else None, "has_prev": page > 1,
                "items": chunk,
            })
        if route in ("/lightcurve_api/detections", "/lightcurve_api/forced-photometry"):
            if args.get("survey_id") != "lsst":
                return self._error(400, "survey_id must be lsst")
            obj = next((o for o in self.objects if str(o.dia_object_id) == args.get("oid")), None)
            if obj is None:
                return self._error(404, f"Object {args.get('oid')} not found")
            if route.endswith("detections"):
                records = [self._detection(obj, sid, m) for sid, m in obj.sources]
            else:
                records = [self._forced(obj, m, j) for j, m in enumerate(obj.forced)]
            return Response(200, json.dumps(records).encode(), {"Content-Type": "application/json"})
        return self._error(404, "Not Found")

    @staticmethod
    def _item(obj: RubinObject) -> dict[str, Any]:
        epochs = [m.tai for m in obj.forced]
        return {"oid": obj.dia_object_id, "meanra": obj.ra, "meandec": obj.dec,
                "firstmjd": min(epochs, default=None), "lastmjd": max(epochs, default=None),
                "n_det": len(obj.sources)}

    @staticmethod
    def _detection(obj: RubinObject, source_id: int, m: Any) -> dict[str, Any]:
        return {
            "oid": obj.dia_object_id, "measurement_id": source_id, "parentDiaSourceId": None,
            "mjd": m.tai, "band": BAND_NUMBER[m.band], "band_map": BAND_MAP,
            "psfFlux": m.diff, "psfFluxErr": m.diff_err,
            "psfFlux_flag": bool(m.flags.get("psfFlux_flag")), "psfFlux_flag_edge": False,
            "psfFlux_flag_noGoodPixels": bool(m.flags.get("pixelFlags_saturated")),
            "ra": obj.ra, "dec": obj.dec,
        }

    @staticmethod
    def _forced(obj: RubinObject, m: Any, j: int) -> dict[str, Any]:
        return {
            "oid": obj.dia_object_id, "measurement_id": obj.dia_object_id % 10**12 * 1000 + j,
            "visit": m.visit, "detector": m.detector, "mjd": m.tai,
            "band": BAND_NUMBER[m.band], "band_map": BAND_MAP,
            "psfFlux": m.diff, "psfFluxErr": m.diff_err, "ra": obj.ra, "dec": obj.dec,
        }
