"""Emulator of the Gaia archive at ESAC: TAP sync and DataLink epoch photometry (docs/gaia.md).

Mounted at ``/gaia``, so the ``gaia`` service's url is ``<server>/gaia``. Routes::

    GET|POST /tap-server/tap/sync   REQUEST=doQuery, LANG=ADQL, FORMAT=csv|votable, QUERY=...
    GET|POST /data-server/data      RETRIEVAL_TYPE=EPOCH_PHOTOMETRY, ID=id,id,..., DATA_STRUCTURE,
                                    RELEASE=Gaia DR3, FORMAT=csv|votable, USE_ZIP_ALWAYS, VALID_DATA

The TAP side understands the ADQL stdq sends (a cone with ``CONTAINS(POINT, CIRCLE)``
on ``gaiadr3.gaia_source``, and ``SELECT TOP n source_id``), not ADQL in general.
``gaiadr4.gaia_source`` and any other table are an error document (HTTP 400, a VOTable
with ``QUERY_STATUS`` ERROR), as the archive answers a table it does not serve (guess:
the exact wording). DataLink: ``DATA_STRUCTURE=COMBINED`` answers HTTP 500 (as the real
archive does now); ``RAW`` is not emulated (HTTP 501, guess); more than 5000 ids is
HTTP 400 (guess: the real status and text); ids without epoch photometry are left out;
the answer is a zip with one file per source named ``EPOCH_PHOTOMETRY-Gaia DR3 <id>.csv``
(or ``.xml``; guess, as astroquery's examples show them), or the bare file for one id
without ``USE_ZIP_ALWAYS=true``; no epochs at all is an empty zip (guess). CSV
booleans: ``True``/``False`` in TAP answers, ``true``/``false`` in DataLink files
(guess: both are read either way). Every DataLink call is recorded in
``emulator.datalink_calls`` (ids, data structure, format).

Synthetic, deterministic data (:data:`VARIABLE`): an RR Lyrae-like variable (source
:data:`VARIABLE_ID`, 0.32" from the target position, 40 transits in G, BP and RP
between 2014-08 and 2017-05, period 0.5668 d), a fainter neighbour with epochs 0.71"
away (:data:`NEIGHBOUR_ID`), a source without epoch photometry 0.90" away
(:data:`NO_EPOCH_ID`) and one 3" away. Special transits of the variable: transit 0 has
G flux exactly 10000 e-/s; 5 has no BP flux (rejected by the photometry); 9 G is
rejected by the variability processing; 13 RP is rejected by the photometry with a
flux; 17 G has other_flags 4096. :data:`CROWDED` is a field of 12,000 sources with
epochs (one G transit each) within 60", for the DataLink batching.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

VARIABLE = sky.SkyObject("Gaia RRab synthetic", 83.401125, -2.317833, ("Gaia variable",), "RRLyr")
CROWDED = sky.SkyObject("Gaia crowded field", 266.416800, -29.007800, (), "Field")

VARIABLE_ID = 3216712345678901248
NEIGHBOUR_ID = 3216712345678905344
NO_EPOCH_ID = 3216712345678909440
OUTER_ID = 3216712345678913536
CROWD_FIRST_ID = 4057000000000004096
CROWD_COUNT = 12_000
SOLUTION_ID = 375316653866487564
PERIOD_DAYS = 0.5668
ZP_VEGA = {"G": 25.6874, "BP": 25.3385, "RP": 24.7479}  # Riello et al. 2021
DR3_FIRST_TIME = 1666.0  # 2014-07-25 as Gaia time (BJD(TCB) - 2455197.5)
DR3_LAST_TIME = 2704.0  # 2017-05-28
MAX_IDS = 5000

EPOCH_COLUMNS: list[tuple[str, str]] = [
    ("source_id", "long"), ("transit_id", "long"), ("band", "char"), ("time", "double"),
    ("mag", "double"), ("flux", "double"), ("flux_error", "double"), ("flux_over_error", "float"),
    ("rejected_by_photometry", "boolean"), ("rejected_by_variability", "boolean"),
    ("other_flags", "long"), ("solution_id", "long"),
]
SOURCE_COLUMNS: list[tuple[str, str]] = [
    ("source_id", "long"), ("ra", "double"), ("dec", "double"), ("phot_g_mean_mag", "float"),
    ("has_epoch_photometry", "boolean"), ("dist", "double"),
]


@dataclass
class Source:
    source_id: int
    ra: float
    dec: float
    gmag: float
    has_epochs: bool


def _flux(mag: float, band: str) -> float:
    return float(f"{10 ** (-0.4 * (mag - ZP_VEGA[band])):.7g}")


def variable_epochs() -> list[dict[str, Any]]:
    """The variable's transits: 40 x (G, BP, RP), with the special rows of the docstring."""
    rows: list[dict[str, Any]] = []
    for k in range(40):
        t = round(1700.0 + 24.7 * k + 0.0131 * k * k, 9)
        transit = 17_000_000_000_000_000 + 1_000_003 * k
        phase = (t / PERIOD_DAYS) % 1.0
        g = 15.9 + 0.8 * (phase if phase < 0.85 else (1.0 - phase) / 0.15 * 0.85) - 0.4
        for band, offset in (("G", 0.0), ("BP", 0.35), ("RP", -0.55)):
            mag = round(g + offset, 6)
            flux = _flux(mag, band)
            if k == 0 and band == "G":
                flux = 10000.0
                mag = round(ZP_VEGA["G"] - 10.0, 6)
            err = float(f"{flux * 0.002 + 5.0:.6g}")
            row = {
                "source_id": VARIABLE_ID, "transit_id": transit, "band": band,
                "time": t + {"G": 0.0, "BP": 0.00006, "RP": 0.00006}[band],
                "mag": mag, "flux": flux, "flux_error": err, "flux_over_error": round(flux / err, 4),
                "rejected_by_photometry": False, "rejected_by_variability": False,
                "other_flags": 0, "solution_id": SOLUTION_ID,
            }
            if k == 5 and band == "BP":
                row.update(flux=None, mag=None, flux_error=None, flux_over_error=None,
                           rejected_by_photometry=True)
            if k == 9 and band == "G":
                row["rejected_by_variability"] = True
            if k == 13 and band == "RP":
                row["rejected_by_photometry"] = True
            if k == 17 and band == "G":
                row["other_flags"] = 4096
            rows.append(row)
    return rows


def neighbour_epochs() -> list[dict[str, Any]]:
    rows = []
    for k in range(12):
        t = round(1710.0 + 80.3 * k, 9)
        transit = 17_500_000_000_000_000 + 2_000_011 * k
        for band, mag in (("G", 18.6), ("BP", 19.0), ("RP", 18.0)):
            flux = _flux(mag + 0.01 * math.sin(k), band)
            err = float(f"{flux * 0.01 + 3.0:.6g}")
            rows.append({
                "source_id": NEIGHBOUR_ID, "transit_id": transit, "band": band, "time": t,
                "mag": round(mag, 6), "flux": flux, "flux_error": err,
                "flux_over_error": round(flux / err, 4), "rejected_by_photometry": False,
                "rejected_by_variability": False, "other_flags": 0, "solution_id": SOLUTION_ID,
            })
    return rows


class GaiaArchiveEmulator(Emulator):
    """The Gaia archive's TAP sync and DataLink services (see the module docstring)."""

    name = "gaia"
    prefix = "/gaia"
    service_name = "gaia"

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[Source] = []
        self.epochs: dict[int, list[dict[str, Any]]] = {}
        self.datalink_calls: list[dict[str, Any]] = []
        self._crowd_built = False
        v_ra, v_dec = sky.offset(VARIABLE.ra, VARIABLE.dec, 0.25, 0.20)
        n_ra, n_dec = sky.offset(VARIABLE.ra, VARIABLE.dec, -0.55, -0.45)
        c_ra, c_dec = sky.offset(VARIABLE.ra, VARIABLE.dec, 0.0, 0.90)
        o_ra, o_dec = sky.offset(VARIABLE.ra, VARIABLE.dec, 2.4, -1.8)
        self.sources += [
            Source(VARIABLE_ID, v_ra, v_dec, 15.912, True),
            Source(NEIGHBOUR_ID, n_ra, n_dec, 18.603, True),
            Source(NO_EPOCH_ID, c_ra, c_dec, 20.31, False),
            Source(OUTER_ID, o_ra, o_dec, 17.2, True),
        ]
        self.epochs[VARIABLE_ID] = variable_epochs()
        self.epochs[NEIGHBOUR_ID] = neighbour_epochs()

    def _build_crowd(self) -> None:
        """12,000 sources with one G transit each, within 60" of CROWDED (on first use)."""
        if self._crowd_built:
            return
        self._crowd_built = True
        golden = math.pi * (3 - math.sqrt(5))
        for k in range(CROWD_COUNT):
            r = 59.0 * math.sqrt((k + 0.5) / CROWD_COUNT)
            ra, dec = sky.offset(CROWDED.ra, CROWDED.dec, r * math.cos(golden * k), r * math.sin(golden * k))
            sid = CROWD_FIRST_ID + 4096 * k
            self.sources.append(Source(sid, ra, dec, 19.0 + (k % 100) / 100, True))
            flux = _flux(19.0, "G")
            self.epochs[sid] = [{
                "source_id": sid, "transit_id": 18_000_000_000_000_000 + k, "band": "G",
                "time": 2000.0 + (k % 500), "mag": 19.0, "flux": flux, "flux_error": 12.0,
                "flux_over_error": round(flux / 12.0, 4), "rejected_by_photometry": False,
                "rejected_by_variability": False, "other_flags": 0, "solution_id": SOLUTION_ID,
            }]

    # -- routing ------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        params = {k: v[-1] for k, v in request.query.items()}
        if request.method == "POST" and request.body:
            form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
            params.update({k: v[-1] for k, v in form.items()})
        path = request.path.rstrip("/")
        with self.lock:
            if path == "/tap-server/tap/sync":
                return self.tap(params)
            if path == "/data-server/data":
                return self.datalink(params)
        return Response.text("Not Found", 404)

    # -- TAP ------------------------------------------------------------------------------------
    def tap(self, params: dict[str, str]) -> Response:
        if params.get("REQUEST", "").lower() != "doquery":
            return tap_error("REQUEST must be doQuery", 400)
        if params.get("LANG", "").upper() != "ADQL":
            return tap_error(f"unsupported LANG {params.get('LANG')!r}", 400)
        fmt = params.get("FORMAT", "votable").lower()
        if fmt not in ("csv", "votable", "votable_plain"):
            return tap_error(f"unsupported FORMAT {fmt!r} (emulated: csv, votable)", 400)
        query = " ".join(params.get("QUERY", "").split())
        table = re.search(r"\bFROM\s+([\w.]+)", query, re.IGNORECASE)
        if table is None:
            return tap_error("Cannot parse query: no FROM clause", 400)
        name = table.group(1).lower()
        if name != "gaiadr3.gaia_source":
            # guess: the archive's wording for a table it does not serve
            return tap_error(f"Cannot parse query: Table '{name}' does not exist", 400)
        top = re.match(r"SELECT\s+TOP\s+(\d+)\s+source_id\s+FROM", query, re.IGNORECASE)
        if top:
            top_rows = [{"source_id": s.source_id} for s in self.sources[: int(top.group(1))]]
            return table_response([("source_id", "long")], top_rows, fmt, tap=True)
        circle = re.search(
            r"CIRCLE\(\s*'ICRS'\s*,\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*,\s*([-+\d.eE]+)\s*\)", query
        )
        if circle is None:
            return tap_error("the emulator understands only a CONTAINS(POINT, CIRCLE) cone", 400)
        ra0, dec0, radius = (float(x) for x in circle.groups())
        if sky.separation_deg(ra0, dec0, CROWDED.ra, CROWDED.dec) < radius + 0.02:
            self._build_crowd()
        rows: list[dict[str, Any]] = []
        for s in self.sources:
            dist = sky.separation_deg(ra0, dec0, s.ra, s.dec)
            if dist <= radius:
                rows.append({"source_id": s.source_id, "ra": s.ra, "dec": s.dec, "phot_g_mean_mag": s.gmag,
                             "has_epoch_photometry": s.has_epochs, "dist": dist})
        return table_response(SOURCE_COLUMNS, rows, fmt, tap=True)

    # -- DataLink ---------------------------------------------------------------------------------
    def datalink(self, params: dict[str, str]) -> Response:
        structure = params.get("DATA_STRUCTURE", "INDIVIDUAL").upper()
        retrieval = params.get("RETRIEVAL_TYPE", "").upper()
        fmt = params.get("FORMAT", "votable").lower()
        ids_text = [i.strip() for i in params.get("ID", "").split(",") if i.strip()]
        self.datalink_calls.append({"ids": len(ids_text), "data_structure": structure, "format": fmt,
                                    "release": params.get("RELEASE")})
        if structure == "COMBINED":
            return Response.text("Internal Server Error: COMBINED data structure is not available", 500)
        if structure == "RAW":
            return Response.text("RAW is not emulated", 501)  # guess: never asked by stdq
        if structure != "INDIVIDUAL":
            return tap_error(f"Invalid DATA_STRUCTURE {structure!r}", 400)
        if retrieval != "EPOCH_PHOTOMETRY":
            return tap_error(f"RETRIEVAL_TYPE {retrieval!r} is not emulated", 400)
        if params.get("RELEASE", "Gaia DR3") != "Gaia DR3":
            return tap_error(f"Unknown release {params.get('RELEASE')!r}", 400)
        if fmt not in ("csv", "votable"):
            return tap_error(f"FORMAT {fmt!r} is not emulated (csv, votable)", 400)
        if not ids_text:
            return tap_error("No ID given", 400)
        if len(ids_text) > MAX_IDS:
            return tap_error(f"Too many ids: {len(ids_text)} (at most {MAX_IDS})", 400)
        try:
            ids = [int(i.removeprefix("Gaia DR3").strip()) for i in ids_text]
        except ValueError:
            return tap_error("ID must be source ids", 400)
        files = []
        ext = "csv" if fmt == "csv" else "xml"
        for sid in ids:
            rows = self.epochs.get(sid)
            if rows:
                files.append((f"EPOCH_PHOTOMETRY-Gaia DR3 {sid}.{ext}",
                              render(EPOCH_COLUMNS, rows, fmt, tap=False)))
        zip_always = params.get("USE_ZIP_ALWAYS", "false").lower() == "true"
        if len(files) == 1 and not zip_always:
            ctype = "text/csv" if fmt == "csv" else "application/x-votable+xml"
            return Response(200, files[0][1], {"Content-Type": ctype})
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, body in files:
                archive.writestr(name, body)
        return Response(200, buf.getvalue(), {"Content-Type": "application/zip",
                                              "Content-Disposition": 'attachment; filename="datalink.zip"'})


# -- formats ------------------------------------------------------------------------------------


def _text(value: Any, kind: str, tap: bool) -> str:
    if value is None:
        return ""
    if kind == "boolean":
        return ("True" if value else "False") if tap else ("true" if value else "false")
    if kind == "long":
        return str(int(value))
    if kind in ("double", "float"):
        return repr(float(value))
    return str(value)


def render(columns: list[tuple[str, str]], rows: list[dict[str, Any]], fmt: str, *, tap: bool) -> bytes:
    """ROWS as CSV (header line, then rows) or as a VOTable (TABLEDATA)."""
    if fmt == "csv":
        lines = [",".join(name for name, _ in columns)]
        lines += [",".join(_text(row.get(name), kind, tap) for name, kind in columns) for row in rows]
        return ("\n".join(lines) + "\n").encode()
    star = ' arraysize="*"'
    fields = "".join(
        f'<FIELD name="{name}" datatype="{kind}"{star if kind == "char" else ""}/>'
        for name, kind in columns
    )
    body = "".join(
        "<TR>" + "".join(f"<TD>{escape(_text(row.get(name), kind, True))}</TD>" for name, kind in columns) + "</TR>"
        for row in rows
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
        '<RESOURCE type="results"><INFO name="QUERY_STATUS" value="OK"/>'
        f"<TABLE>{fields}<DATA><TABLEDATA>{body}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>\n"
    ).encode()


def table_response(columns: list[tuple[str, str]], rows: list[dict[str, Any]], fmt: str, *,
                   tap: bool) -> Response:
    ctype = "text/csv;charset=UTF-8" if fmt == "csv" else "application/x-votable+xml"
    return Response(200, render(columns, rows, "csv" if fmt == "csv" else "votable", tap=tap),
                    {"Content-Type": ctype})


def tap_error(message: str, status: int = 400) -> Response:
    """A TAP error document: a VOTable with QUERY_STATUS ERROR (guess: the archive's layout)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
        f'<RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>'
        "</RESOURCE></VOTABLE>\n"
    ).encode()
    return Response(status, body, {"Content-Type": "application/x-votable+xml"})
