"""Emulator of the MAST catalogs API for Pan-STARRS (docs/wire-formats.md section 2).

Mounted at ``/mast/api/v0.1/panstarrs``, so the service URL is
``<server>/mast/api/v0.1/panstarrs``. Routes::

    GET|POST /{release}/{table}[.csv|.json]         rows (CSV is the default format)
    GET      /{release}/{table}/metadata[.json]     the column descriptions (JSON array)

Releases ``dr1`` (table ``mean``) and ``dr2`` (``mean``, ``detection``).
Parameters: ``ra``, ``dec``, ``radius`` (degrees: a cone search, which adds a
``distance`` column), ``columns`` (``[a,b,c]``, a JSON list, or repeated),
filters ``col=value``, ``col=[v1,v2]`` (IN) and ``col.gt/gte/lt/lte/min/max=value``,
``sort_by=col`` / ``sort_by=desc.col``, ``pagesize`` (default 50000) and ``page``
(from 1). Missing values are -999; in JSON, ``long`` columns (objID, detectID)
are strings, as in the astroquery sample.

Synthetic, deterministic data near the targets of :mod:`stdq.testing.sky`
(see :func:`build_catalog`): for SN 2023ixf the target object (0.18" away), a
neighbour 1.5" away, a one-detection artifact 0.05" away (only the
``nDetections.gt=1`` filter keeps it out) and an object 5" away; 50 detections
of the target in 2010, 2011, 2013, 2014 and 2016 in all five filters, among them
two with psfFlux -999, one with psfFlux 0, some with bad infoFlag bits and one
with a low psfQfPerfect. NGC 3642 and M31 have one object each; "Empty Field"
has nothing. :meth:`MastCatalogsEmulator.set_detections` gives an object N
synthetic detections instead (benchmarks: a long light curve).

Where the real service's behaviour is not documented the code says "guess:".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

FILTERS = "grizy"

# (name, type, db_type, unit, description) -- names and types as in the real metadata
# (../shared/realdata/mast_panstarrs/panstarrs_columns.json for dr2/mean).
MEAN_COLUMNS: list[tuple[str, str, str, str | None, str]] = [
    ("objName", "char", "STRING", None, "IAU name for this object."),
    ("objID", "long", "BIGINT", None, "Unique object identifier."),
    ("objInfoFlag", "int", "INTEGER", None, "Information flag bitmask indicating details of the photometry."),
    ("qualityFlag", "unsignedByte", "TINYINT", None, "Subset of objInfoFlag denoting whether this object is real."),
    ("raStack", "double", "DOUBLE", None, "Right ascension from stack detections."),
    ("decStack", "double", "DOUBLE", None, "Declination from stack detections."),
    ("raMean", "double", "DOUBLE", "deg", "Right ascension from single epoch detections (weighted mean)."),
    ("decMean", "double", "DOUBLE", "deg", "Declination from single epoch detections (weighted mean)."),
    ("raMeanErr", "float", "DOUBLE", "deg", "Right ascension standard deviation from single epoch detections."),
    ("decMeanErr", "float", "DOUBLE", "deg", "Declination standard deviation from single epoch detections."),
    ("epochMean", "double", "DOUBLE", None, "Modified Julian Date of the mean epoch corresponding to raMean, decMean."),
    ("nStackDetections", "short", "SMALLINT", None, "Number of stack detections."),
    ("nDetections", "short", "SMALLINT", None, "Number of single epoch detections in all filters."),
    *((f"n{f}", "short", "SMALLINT", None, f"Number of single epoch detections in {f} filter.") for f in FILTERS),
    *(
        col
        for f in FILTERS
        for col in (
            (f"{f}QfPerfect", "float", "REAL", None, f"Maximum PSF weighted fraction of pixels totally unmasked from {f} filter detections."),
            (f"{f}MeanPSFMag", "float", "REAL", "mag", f"Mean PSF magnitude from {f} filter detections."),
            (f"{f}MeanPSFMagErr", "float", "REAL", "mag", f"Error in mean PSF magnitude from {f} filter detections."),
            (f"{f}MeanPSFMagStd", "float", "REAL", "mag", f"Standard deviation of PSF magnitudes from {f} filter detections."),
            (f"{f}MeanPSFMagNpt", "short", "SMALLINT", None, f"Number of measurements included in mean PSF magnitude from {f} filter detections."),
            (f"{f}MeanKronMag", "float", "REAL", "mag", f"Mean Kron (1980) magnitude from {f} filter detections."),
            (f"{f}MeanApMag", "float", "REAL", "mag", f"Mean aperture magnitude from {f} filter detections."),
            (f"{f}Flags", "int", "INTEGER", None, f"Information flag bitmask for mean object from {f} filter detections."),
        )
    ),
]

DETECTION_COLUMNS: list[tuple[str, str, str, str | None, str]] = [
    ("objID", "long", "BIGINT", None, "Unique object identifier."),
    ("detectID", "long", "BIGINT", None, "Unique detection identifier."),
    ("filterID", "unsignedByte", "TINYINT", None, "Filter identifier (1..5 = g, r, i, z, y)."),
    ("imageID", "long", "BIGINT", None, "Unique image identifier."),
    ("obsTime", "double", "DOUBLE", "d", "Modified Julian Date at the midpoint of the observation (TAI)."),
    ("ra", "double", "DOUBLE", "deg", "Right ascension."),
    ("dec", "double", "DOUBLE", "deg", "Declination."),
    ("psfFlux", "float", "REAL", "Jy", "Flux from PSF fit."),
    ("psfFluxErr", "float", "REAL", "Jy", "Error in flux from PSF fit."),
    ("psfMajorFWHM", "float", "REAL", "arcsec", "PSF major axis FWHM."),
    ("psfMinorFWHM", "float", "REAL", "arcsec", "PSF minor axis FWHM."),
    ("psfQfPerfect", "float", "REAL", None, "PSF-weighted fraction of pixels totally unmasked."),
    ("apFlux", "float", "REAL", "Jy", "Flux in seeing-dependent aperture."),
    ("apFluxErr", "float", "REAL", "Jy", "Error in apFlux."),
    ("infoFlag", "long", "BIGINT", None, "Information flag bitmask (DetectionFlags)."),
    ("infoFlag2", "int", "INTEGER", None, "Information flag bitmask (DetectionFlags2)."),
    ("infoFlag3", "int", "INTEGER", None, "Information flag bitmask (DetectionFlags3)."),
]

TABLES: dict[str, dict[str, list[tuple[str, str, str, str | None, str]]]] = {
    "dr1": {"mean": MEAN_COLUMNS},
    "dr2": {"mean": MEAN_COLUMNS, "detection": DETECTION_COLUMNS},
}
NUMERIC_TYPES = {"long", "int", "short", "unsignedByte", "double", "float"}
INTEGER_TYPES = {"long", "int", "short", "unsignedByte"}
RESERVED = {"ra", "dec", "radius", "columns", "sort_by", "pagesize", "page", "format"}
OPS = {"gt", "gte", "lt", "lte", "min", "max"}
DEFAULT_PAGESIZE = 50000  # guess: astroquery's default; the service's own is not documented
MAX_RADIUS_DEG = 0.5

# ids of the SN 2023ixf objects (> 2**53: a float would change them)
SN_TARGET_ID = 173142109106893051
SN_NEIGHBOUR_ID = 173142109112345678
SN_ARTIFACT_ID = 173142109106800001
SN_OUTER_ID = 173142109098765432
NGC3642_ID = 178861705745628093
M31_ID = 157500106847064937

# epochs (TAI MJD) of the target's detections: years with TAI-UTC = 34, 34, 35, 35, 36 s
EPOCH_BASES = (55300.25, 55650.30, 56400.40, 56800.35, 57500.45)
TARGET_MAGS = {1: 18.20, 2: 17.85, 3: 17.70, 4: 17.62, 5: 17.55}
SPECIAL_ROWS: dict[int, dict[str, Any]] = {
    0: {"psfFlux": 3.631e-05, "psfFluxErr": 3.631e-07},  # 36.31 uJy: AB 23.9 - 2.5 log10(36.31) ~ 20.0, error 0.010857 mag
    7: {"psfFlux": -999.0, "psfFluxErr": -999.0},
    11: {"infoFlag": 0x8},  # FAIL
    19: {"infoFlag": 0x1000 | 0x100},  # SATURATED | BLEND
    23: {"psfFlux": -999.0},
    27: {"infoFlag": 0x4000},  # EXT_LIMIT
    31: {"psfFlux": 0.0},
    35: {"psfQfPerfect": 0.62},
    43: {"infoFlag": 0x2},  # a harmless bit
}


def _sig(value: float, digits: int = 6) -> float:
    """VALUE rounded to DIGITS significant digits (like a single-precision column)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def _jy(mag: float) -> float:
    return _sig(3631.0 * 10 ** (-0.4 * mag))


@dataclass
class Catalog:
    """The emulator's rows: release -> table -> list of row dicts."""

    tables: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def rows(self, release: str, table: str) -> list[dict[str, Any]]:
        return self.tables.setdefault(release, {}).setdefault(table, [])


def _detection(obj_id: int, detect_id: int, fid: int, t: float, ra: float, dec: float, mag: float,
               **extra: Any) -> dict[str, Any]:
    flux = _jy(mag)
    row = {
        "objID": obj_id,
        "detectID": detect_id,
        "filterID": fid,
        "imageID": 1_000_000_000 + int(round(t * 100)) % 100_000_000 * 10 + fid,
        "obsTime": round(t, 8),
        "ra": ra,
        "dec": dec,
        "psfFlux": flux,
        "psfFluxErr": _sig(flux * 0.008 + 2.0e-7),
        "psfMajorFWHM": _sig(1.25 + 0.05 * fid, 4),
        "psfMinorFWHM": _sig(1.10 + 0.05 * fid, 4),
        "psfQfPerfect": 0.998,
        "apFlux": _sig(flux * 1.03),
        "apFluxErr": _sig(flux * 0.012 + 3.0e-7),
        "infoFlag": 0,
        "infoFlag2": 0,
        "infoFlag3": 0,
    }
    row.update(extra)
    return row


def _mean_row(obj_id: int, name: str, ra: float, dec: float, dets: list[dict[str, Any]],
              mags: dict[int, float], offset: float = 0.0, n_override: int | None = None,
              missing_filters: tuple[int, ...] = ()) -> dict[str, Any]:
    row: dict[str, Any] = {
        "objName": name,
        "objID": obj_id,
        "objInfoFlag": 0x10000000,
        "qualityFlag": 52,
        "raStack": ra,
        "decStack": dec,
        "raMean": ra,
        "decMean": dec,
        "raMeanErr": 0.0012,
        "decMeanErr": 0.0011,
        "epochMean": round(sum(d["obsTime"] for d in dets) / len(dets), 6) if dets else -999.0,
        "nStackDetections": 5,
        "nDetections": n_override if n_override is not None else len(dets),
    }
    for fid, f in enumerate(FILTERS, 1):
        in_filter = [d for d in dets if d["filterID"] == fid]
        good = [d for d in in_filter if d["psfFlux"] not in (-999.0, 0.0)]
        row[f"n{f}"] = len(in_filter)
        if fid in missing_filters or not good:
            for suffix in ("MeanPSFMag", "MeanPSFMagErr", "MeanPSFMagStd", "MeanKronMag", "MeanApMag"):
                row[f"{f}{suffix}"] = -999.0
            row[f"{f}QfPerfect"] = -999.0
            row[f"{f}MeanPSFMagNpt"] = 0
            row[f"{f}Flags"] = 0
            continue
        mag = round(mags[fid] + offset, 4)
        row[f"{f}QfPerfect"] = 0.998
        row[f"{f}MeanPSFMag"] = mag
        row[f"{f}MeanPSFMagErr"] = round(0.004 + 0.001 * fid, 4)
        row[f"{f}MeanPSFMagStd"] = 0.021
        row[f"{f}MeanPSFMagNpt"] = len(good)
        row[f"{f}MeanKronMag"] = round(mag + 0.03, 4)
        row[f"{f}MeanApMag"] = round(mag + 0.02, 4)
        row[f"{f}Flags"] = 0x1000 * fid
    return row


def build_catalog() -> Catalog:
    """The deterministic synthetic catalog (same answer on every call)."""
    cat = Catalog()
    # -- SN 2023ixf ---------------------------------------------------------------------
    sn = sky.find("SN 2023ixf")
    assert sn is not None
    a_ra, a_dec = sky.offset(sn.ra, sn.dec, 0.10, -0.15)
    target_dets: list[dict[str, Any]] = []
    i = 0
    for year, base in enumerate(EPOCH_BASES):
        for fid in range(1, 6):
            for k in range(2):
                t = base + 3.1 * (fid - 1) + 41.7 * k + 0.0137 * fid
                ra, dec = sky.offset(a_ra, a_dec, 0.03 * math.cos(i), 0.03 * math.sin(i))
                mag = TARGET_MAGS[fid] + 0.05 * math.sin(i + year)
                row = _detection(SN_TARGET_ID, 1612345678900000000 + 1013 * i, fid, t, ra, dec, mag)
                row.update(SPECIAL_ROWS.get(i, {}))
                target_dets.append(row)
                i += 1
    b_ra, b_dec = sky.offset(sn.ra, sn.dec, 1.2, 0.9)
    neighbour_dets = [
        _detection(SN_NEIGHBOUR_ID, 1612345679900000000 + 7 * j, 1 + j % 5,
                   EPOCH_BASES[1 + j % 3] + 5.0 + j, b_ra, b_dec, 20.5 + 0.1 * (j % 5))
        for j in range(12)
    ]
    c_ra, c_dec = sky.offset(sn.ra, sn.dec, -0.03, 0.04)
    artifact_dets = [_detection(SN_ARTIFACT_ID, 1612345680900000000, 2, 56821.5, c_ra, c_dec, 21.9)]
    d_ra, d_dec = sky.offset(sn.ra, sn.dec, -4.0, 3.0)
    outer_dets = [
        _detection(SN_OUTER_ID, 1612345681900000000 + 3 * j, 1 + j % 5, EPOCH_BASES[j % 5] + 9.5,
                   d_ra, d_dec, 19.8) for j in range(6)
    ]
    sn_objects = [
        (SN_TARGET_ID, "PSO J140338.564+541841.790", a_ra, a_dec, target_dets, TARGET_MAGS, ()),
        (SN_NEIGHBOUR_ID, "PSO J140338.596+541842.840", b_ra, b_dec, neighbour_dets,
         {f: 20.5 + 0.1 * (f - 1) for f in range(1, 6)}, (5,)),
        (SN_ARTIFACT_ID, "PSO J140338.575+541842.010", c_ra, c_dec, artifact_dets,
         {f: 21.9 for f in range(1, 6)}, ()),
        (SN_OUTER_ID, "PSO J140338.145+541844.940", d_ra, d_dec, outer_dets,
         {f: 19.8 for f in range(1, 6)}, ()),
    ]
    # -- NGC 3642 and M31: one object each --------------------------------------------------
    others = []
    for obj_id, name, label, east, north, mag0, n in (
        (NGC3642_ID, "PSO J112218.013+590427.270", "NGC 3642", 0.2, 0.22, 16.1, 20),
        (M31_ID, "PSO J004244.330+411607.500", "M31", -0.3, 0.26, 13.9, 15),
    ):
        obj = sky.find(label)
        assert obj is not None
        ra, dec = sky.offset(obj.ra, obj.dec, east, north)
        dets = [
            _detection(obj_id, obj_id // 100 * 10 + j, 1 + j % 3, EPOCH_BASES[j % 4] + 2.0 * j,
                       ra, dec, mag0 + 0.2 * (j % 3)) for j in range(n)
        ]
        others.append((obj_id, name, ra, dec, dets, {f: mag0 + 0.2 * (f - 1) for f in range(1, 6)}, ()))
    for obj_id, name, ra, dec, dets, mags, missing in sn_objects + others:
        cat.rows("dr2", "detection").extend(dets)
        cat.rows("dr2", "mean").append(_mean_row(obj_id, name, ra, dec, dets, mags, 0.0, None, missing))
        # guess: DR1 knows the same objects, with fewer epochs (up to 2014) and other averages
        early = [d for d in dets if d["obsTime"] < 57000]
        cat.rows("dr1", "mean").append(
            _mean_row(obj_id, name, ra, dec, early or dets[:1], mags, 0.01,
                      len(early) if obj_id != SN_ARTIFACT_ID else 1, missing)
        )
    return cat


class QueryError(Exception):
    """A request the real service would refuse: (status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class MastCatalogsEmulator(Emulator):
    """The MAST catalogs API for Pan-STARRS (see the module docstring)."""

    name = "mast"
    prefix = "/mast/api/v0.1/panstarrs"
    service_name = "panstarrs"

    def __init__(self) -> None:
        super().__init__()
        self.catalog = build_catalog()

    def set_detections(self, count: int, obj_id: int = SN_TARGET_ID) -> None:
        """Replace object OBJ_ID's detections (default: the SN 2023ixf target) by COUNT
        synthetic ones: all five filters in turn, spread over the DR2 years, flux near
        the object's mean magnitudes; deterministic."""
        with self.lock:
            rows = self.catalog.rows("dr2", "detection")
            own = [r for r in rows if r["objID"] == obj_id]
            if not own:
                raise KeyError(f"no detections of object {obj_id}")
            ra, dec = own[0]["ra"], own[0]["dec"]
            first, last = EPOCH_BASES[0], EPOCH_BASES[-1]
            fresh = [
                _detection(obj_id, 1612345678900000000 + 1013 * i, 1 + i % 5,
                           first + (last - first) * i / max(1, count), ra, dec,
                           TARGET_MAGS[1 + i % 5] + 0.05 * math.sin(i))
                for i in range(count)
            ]
            rows[:] = [r for r in rows if r["objID"] != obj_id] + fresh

    # -- routing -----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path = request.path.strip("/")
        meta = re.fullmatch(r"(dr\d)/(\w+)/metadata(?:\.json)?", path)
        if meta:
            return self._metadata(*meta.groups())
        match = re.fullmatch(r"(dr\d)/(\w+?)(?:\.(csv|json|votable))?", path)
        if not match:
            return self._error(404, f"no such resource: /{path}")  # guess: body format unknown
        release, table, fmt = match.group(1), match.group(2), match.group(3) or "csv"
        if release not in TABLES:
            return self._error(404, f"unknown release {release!r}")  # guess
        if table not in TABLES[release]:
            # guess: the real service's answer for e.g. dr1/detection is not documented
            return self._error(404, f"table {table!r} is not available in {release}")
        if fmt == "votable":
            return self._error(422, "votable output is not emulated")
        try:
            params = self._params(request)
            columns, rows = self.select(release, table, params)
        except QueryError as exc:
            return self._error(exc.status, exc.message)
        if fmt == "json":
            return self._json(release, table, columns, rows)
        return Response.text(self._csv(columns, rows, release, table), content_type="text/csv; charset=utf-8")

    @staticmethod
    def _error(status: int, message: str) -> Response:
        # guess: the error body format of the real service is not known (docs/wire-formats.md)
        return Response.json({"detail": message}, status)

    @staticmethod
    def _params(request: Request) -> dict[str, list[str]]:
        params = {k: list(v) for k, v in request.query.items()}
        if request.method == "POST" and request.body:
            try:
                for key, values in request.form().items():
                    params.setdefault(key, []).extend(values)
            except ValueError:
                raise QueryError(422, "the request body could not be parsed") from None
        return params

    # -- metadata -------------------------------------------------------------------------------
    def _metadata(self, release: str, table: str) -> Response:
        columns = TABLES.get(release, {}).get(table)
        if columns is None:
            return self._error(404, f"table {table!r} is not available in {release}")
        return Response.json(metadata_document(columns))

    # -- the query ---------------------------------------------------------------------------------
    def select(self, release: str, table: str, params: dict[str, list[str]]) -> tuple[list[str], list[dict[str, Any]]]:
        """(column names, rows) answering PARAMS, after filters, sort and paging."""
        schema = {name: kind for name, kind, *_ in TABLES[release][table]}
        lowered = {name.lower(): name for name in schema}
        rows = list(self.catalog.rows(release, table))
        cone = self._cone(params)
        if cone is not None:
            ra0, dec0, radius = cone
            kept = []
            for row in rows:
                ra, dec = (row["raMean"], row["decMean"]) if "raMean" in row else (row["ra"], row["dec"])
                distance = sky.separation_deg(ra0, dec0, ra, dec)
                if distance <= radius:
                    kept.append({**row, "distance": distance})  # guess: degrees
            rows = kept
        for key, values in params.items():
            if key in RESERVED:
                continue
            column, _, op = key.partition(".")
            name = lowered.get(column.lower())
            if name is None:
                raise QueryError(422, f"unknown column {column!r} in filter {key!r}")
            if op and op not in OPS:
                raise QueryError(422, f"unknown operator {op!r} in filter {key!r}")
            for value in values:
                rows = self._filter(rows, name, schema[name], op, value)
        columns = self._columns(params, schema, lowered)
        if cone is not None:
            columns.append("distance")  # guess: the cone search appends it after the columns asked
        for spec in _sort_specs(params.get("sort_by", []))[-1:]:
            parts = spec.split(".")
            descending = "desc" in (p.lower() for p in parts)
            key_name = next((p for p in parts if p.lower() not in ("asc", "desc")), spec)
            name = "distance" if key_name == "distance" and cone else lowered.get(key_name.lower())
            if name is None:
                raise QueryError(422, f"unknown column {key_name!r} in sort_by")
            rows.sort(key=lambda r: r[name], reverse=descending)
        pagesize = self._int(params, "pagesize", DEFAULT_PAGESIZE)
        page = self._int(params, "page", 1)
        if pagesize < 1 or page < 1:
            raise QueryError(422, "pagesize and page must be positive")
        rows = rows[(page - 1) * pagesize : page * pagesize]
        return columns, rows

    @staticmethod
    def _int(params: dict[str, list[str]], key: str, default: int) -> int:
        values = params.get(key)
        if not values:
            return default
        try:
            return int(values[-1])
        except ValueError:
            raise QueryError(422, f"{key} must be an integer, not {values[-1]!r}") from None

    @staticmethod
    def _cone(params: dict[str, list[str]]) -> tuple[float, float, float] | None:
        given = [k for k in ("ra", "dec", "radius") if params.get(k)]
        if not given:
            return None
        if len(given) != 3:
            raise QueryError(422, "a cone search needs ra, dec and radius")
        try:
            ra, dec, radius = (float(params[k][-1]) for k in ("ra", "dec", "radius"))
        except ValueError:
            raise QueryError(422, "ra, dec and radius must be numbers (degrees)") from None
        if radius <= 0 or radius > MAX_RADIUS_DEG:
            raise QueryError(422, f"radius must be > 0 and <= {MAX_RADIUS_DEG} degrees")
        return ra, dec, radius

    @staticmethod
    def _columns(params: dict[str, list[str]], schema: dict[str, str], lowered: dict[str, str]) -> list[str]:
        raw = params.get("columns")
        if not raw:
            return list(schema)
        names: list[str] = []
        for value in raw:
            value = value.strip()
            if value.startswith("[") and '"' in value:
                try:
                    items = json.loads(value)
                except ValueError:
                    raise QueryError(422, f"bad columns list {value!r}") from None
            elif value.startswith("["):
                items = [v.strip() for v in value.strip("[]").split(",")]
            else:
                items = [value]
            names += [str(v) for v in items if str(v).strip()]
        unknown = [n for n in names if n.lower() not in lowered]
        if unknown:
            raise QueryError(422, f"unknown column(s): {', '.join(unknown)}")
        return [lowered[n.lower()] for n in names]

    @staticmethod
    def _filter(rows: list[dict[str, Any]], name: str, kind: str, op: str, value: str) -> list[dict[str, Any]]:
        text = value.strip()
        items = [v.strip() for v in text.strip("[]").split(",")] if text.startswith("[") else [text]

        def convert(item: str) -> Any:
            if kind in NUMERIC_TYPES:
                try:
                    return int(item) if kind in INTEGER_TYPES and re.fullmatch(r"-?\d+", item) else float(item)
                except ValueError:
                    raise QueryError(422, f"{name}: {item!r} is not a number") from None
            return item

        wanted = [convert(item) for item in items if item]
        if not wanted:
            raise QueryError(422, f"no value for filter on {name}")
        if not op:
            return [r for r in rows if r[name] in wanted]
        if len(wanted) != 1:
            raise QueryError(422, f"{name}.{op} takes one value")
        bound = wanted[0]
        compare = {
            "gt": lambda v: v > bound,
            "gte": lambda v: v >= bound,
            "min": lambda v: v >= bound,
            "lt": lambda v: v < bound,
            "lte": lambda v: v <= bound,
            "max": lambda v: v <= bound,
        }[op]
        return [r for r in rows if compare(r[name])]

    # -- formats -------------------------------------------------------------------------------------
    @staticmethod
    def _csv(columns: list[str], rows: list[dict[str, Any]], release: str, table: str) -> str:
        """Header line of column names, then rows; no comment lines (docs/wire-formats.md)."""
        kinds = {name: kind for name, kind, *_ in TABLES[release][table]}
        kinds["distance"] = "double"
        lines = [",".join(columns)]
        for row in rows:
            lines.append(",".join(_csv_value(row.get(c, -999), kinds.get(c, "double")) for c in columns))
        # guess: every line, the last one too, ends with a newline; an empty result is the header
        return "\n".join(lines) + "\n"

    @staticmethod
    def _json(release: str, table: str, columns: list[str], rows: list[dict[str, Any]]) -> Response:
        described = {name: (kind, db_type, desc) for name, kind, db_type, _, desc in TABLES[release][table]}
        described["distance"] = ("double", "DOUBLE", "Distance from the cone centre (degrees).")
        info = [
            {"name": c, "type": described[c][0], "db_type": "NUMBER" if described[c][0] in NUMERIC_TYPES else "STRING",
             "description": described[c][2]}
            for c in columns
        ]
        data = [[_json_value(row.get(c, -999), described[c][0]) for c in columns] for row in rows]
        return Response.json({"info": info, "data": data})


def _sort_specs(values: list[str]) -> list[str]:
    """sort_by values: ``col``, ``desc.col``, ``col.desc`` (astroquery's JSON body sends a
    list, e.g. ``["obsTime.asc"]``)."""
    specs: list[str] = []
    for value in values:
        if value.startswith("["):
            try:
                specs += [str(v) for v in json.loads(value)]
                continue
            except ValueError:
                pass
        specs.append(value)
    return specs


def _csv_value(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind in INTEGER_TYPES:
        return str(int(value))
    if kind in ("double", "float"):
        number = float(value)
        if number == -999:
            return "-999.0"
        return repr(number)
    text = str(value)
    return f'"{text}"' if "," in text else text


def _json_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "long":
        return str(int(value))  # as in the astroquery sample: objID is a string
    if kind in INTEGER_TYPES:
        return int(value)
    if kind in ("double", "float"):
        return float(value)
    return str(value)


def metadata_document(columns: list[tuple[str, str, str, str | None, str]]) -> list[dict[str, str]]:
    """A metadata answer in the real shape: one object per column, nulls as the string "NULL"."""
    sizes = {"long": "8", "double": "8", "int": "4", "float": "4", "short": "2", "unsignedByte": "1", "char": "32"}
    return [
        {
            "name": name,
            "db_type": db_type,
            "column_name": name,
            "description": description,
            "unit": unit or "NULL",
            "ucd": "NULL",
            "utype": "NULL",
            "datatype": kind,
            "size": sizes.get(kind, "NULL"),
            "principal": "NULL",
            "indexed": "NULL",
            "std": "NULL",
            "column_index": str(i),
            "arraysize": "32*" if kind == "char" else "NULL",
            "search_priority": str(i),
            "default_value": "NULL",
            "type": kind,
        }
        for i, (name, kind, db_type, unit, description) in enumerate(columns, 1)
    ]
