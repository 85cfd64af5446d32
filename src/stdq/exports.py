"""Light-curve exports for the field's tools: sncosmo, the TOM Toolkit, SkyPortal.

Each writer takes a merged table (:mod:`stdq.lightcurve`, normalized schema) and
writes bytes; the column mappings are in docs/photometry.md "Community formats".
Masked rows are never exported (they are counted in the LightCurve's left_aside).

sncosmo: stdq writes sncosmo's own band names (``atlasc``, ``ztfg``, ``ps1::g``, ...).
sncosmo downloads those transmission curves on first use; stdq ships the ATLAS c/o, ZTF,
PS1, LSST and Gaia curves (:mod:`stdq.passbands`), which
``stdq.passbands.register_sncosmo()`` registers offline. ``atlasw`` (not in sncosmo, and
no curve shipped) is left out of the sncosmo export with a note unless a curve was
registered (:func:`register_band`). The file's ``#`` lines say
which of its bands are which.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

EXPORT_FORMATS = ("sncosmo", "tom", "skyportal")

#: The bands sncosmo 2.13 has among its built-ins (stdq's ``band`` names).
SNCOSMO_BUILTIN_BANDS = frozenset(
    {"atlasc", "atlaso", "ztfg", "ztfr", "ztfi"}
    | {f"ps1::{f}" for f in "grizyw"}
    | {f"lsst{f}" for f in "ugrizy"}
    | {"gaia::g", "gaia::gbp", "gaia::grp"}
)
SNCOSMO_COLUMNS = ("time", "band", "flux", "fluxerr", "zp", "zpsys")
TOM_COLUMNS = ("time", "filter", "magnitude", "error", "limit", "telescope")
SKYPORTAL_KEYS = ("obj_id", "instrument_id", "mjd", "flux", "fluxerr", "zp", "magsys", "filter", "origin")
ATLASW_NOTE = (
    "band atlasw is not one of sncosmo's bands and stdq ships no ATLAS w transmission curve:"
    " its rows are left out (register one: stdq.exports.register_band('atlasw', wave, trans))"
)
SHIPPED_NOTE = "bands registered offline by stdq.passbands.register_sncosmo() (curves shipped with stdq): {}"
_PREFIXES = ("ps1::", "gaia::", "atlas", "ztf", "lsst")


def register_band(name: str, wave: Sequence[float], trans: Sequence[float], *, force: bool = True) -> None:
    """Register a transmission curve (wavelength in Angstrom) as an sncosmo band."""
    import sncosmo

    sncosmo.register(sncosmo.Bandpass(wave, trans, name=name), name, force=force)


def _registered(name: str) -> bool:
    """Whether NAME was registered as an sncosmo band in this process (sncosmo is never
    imported for this: a band registered by a user has imported it)."""
    import sys

    module = sys.modules.get("sncosmo.bandpasses")
    registry = getattr(module, "_BANDPASSES", None)
    key = (name.lower(), None)
    return registry is not None and (
        key in getattr(registry, "_instances", {}) or key in getattr(registry, "_loaders", {})
    )


def usable(table: pd.DataFrame) -> pd.DataFrame:
    """Rows an export may carry: not masked, finite flux and a positive error."""
    import numpy as np

    flux = table["flux_ujy"].to_numpy(dtype="float64")
    err = table["flux_err_ujy"].to_numpy(dtype="float64")
    keep = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    if "masked" in table.columns:
        keep &= ~table["masked"].to_numpy(dtype=bool)
    return table[keep]


def sncosmo_table(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """(the six sncosmo columns, {band: rows left out}): bands sncosmo knows (built in, or
    registered in this process) are kept."""
    import pandas as pd

    rows = usable(table)
    bands = rows["band"].astype(str)
    extra = {b for b in bands.unique() if b not in SNCOSMO_BUILTIN_BANDS and _registered(b)}
    known = bands.isin(SNCOSMO_BUILTIN_BANDS | extra)
    left = {str(b): int(n) for b, n in bands[~known].value_counts().sort_index().items()}
    rows = rows[known.to_numpy()]
    out = pd.DataFrame({
        "time": rows["mjd"].to_numpy(dtype="float64"),
        "band": rows["band"].astype(str).to_numpy(dtype=object),
        "flux": rows["flux_ujy"].to_numpy(dtype="float64"),
        "fluxerr": rows["flux_err_ujy"].to_numpy(dtype="float64"),
        "zp": rows["zp"].to_numpy(dtype="float64"),
        "zpsys": rows["zpsys"].fillna("ab").astype(str).to_numpy(dtype=object),
    })
    return out, left


def write_sncosmo(table: pd.DataFrame, dest: IO[bytes], meta: dict[str, Any] | None = None) -> dict[str, int]:
    """sncosmo's ascii light-curve format (``sncosmo.read_lc(path)``): ``@key value`` lines,
    then ``time band flux fluxerr zp zpsys`` separated by spaces. Returns the rows left out
    per band."""
    out, left = sncosmo_table(table)
    text = io.StringIO()
    for key, value in (meta or {}).items():
        if value is not None and str(value).strip() and " " not in str(key):
            text.write(f"@{key} {str(value).splitlines()[0]}\n")
    for note in sncosmo_notes(out["band"].unique(), left):
        text.write(f"# {note}\n")
    text.write(" ".join(SNCOSMO_COLUMNS) + "\n")
    for t, band, flux, err, zp, zpsys in out.itertuples(index=False, name=None):
        text.write(f"{t!r} {band} {flux!r} {err!r} {zp!r} {zpsys}\n")
    dest.write(text.getvalue().encode("utf-8"))
    return left


def sncosmo_notes(bands: Any, left: dict[str, int]) -> list[str]:
    """The ``#`` lines of an sncosmo export with BANDS (and LEFT out): which bands stdq
    registers offline, why atlasw is left out."""
    from stdq import passbands

    present = sorted({str(b) for b in bands})
    shipped = [b for b in passbands.names() if b in present]
    notes = [SHIPPED_NOTE.format(" ".join(shipped))] if shipped else []
    if "atlasw" in left:
        notes.append(ATLASW_NOTE)
    return notes


def short_filter(band: Any, filt: Any) -> str:
    """The TOM filter name: the band without its survey prefix (``ztfg`` -> ``g``,
    ``atlaso`` -> ``o``, ``ps1::r`` -> ``r``), else the survey's own filter name."""
    name = "" if band is None else str(band)
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return name or ("" if filt is None else str(filt))


def _value(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def tom_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One TOM photometry row per usable row: a detection with a magnitude gives
    magnitude + error, a non-detection its limit; rows with neither are left out."""
    rows = usable(table)
    out = []
    for mjd, band, filt, survey, detected, mag, err, limit in zip(
        rows["mjd"], rows["band"], rows["filter"], rows["survey"], rows["detected"],
        rows["magnitude"], rows["magnitude_error"], rows["limit"], strict=True,
    ):
        mag, err, limit = _value(mag), _value(err), _value(limit)
        entry = {"time": float(mjd), "filter": short_filter(band, filt), "magnitude": None,
                 "error": None, "limit": None, "telescope": "" if survey is None else str(survey)}
        if bool(detected) and mag is not None:
            entry["magnitude"], entry["error"] = mag, err
        elif not bool(detected) and limit is not None:
            entry["limit"] = limit
        else:
            continue
        out.append(entry)
    return out


def write_tom(table: pd.DataFrame, dest: IO[bytes]) -> None:
    """The TOM Toolkit's photometry upload CSV: ``time,filter,magnitude,error,limit,telescope``
    (time = MJD, AB magnitudes; an empty field where there is no value)."""
    import csv

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TOM_COLUMNS)
    for row in tom_rows(table):
        writer.writerow(["" if row[c] is None else (repr(row[c]) if isinstance(row[c], float) else row[c])
                         for c in TOM_COLUMNS])
    dest.write(text.getvalue().encode("utf-8"))


def skyportal_document(table: pd.DataFrame, obj_id: str) -> dict[str, Any]:
    """The body of SkyPortal's ``POST /api/photometry`` in its flux form (columnar lists):
    obj_id, instrument_id (null placeholders: each SkyPortal has its own instrument ids),
    mjd, flux and fluxerr (µJy), zp (23.9), magsys (ab), filter (sncosmo band), origin."""
    rows = usable(table)
    n = len(rows)
    return {
        "obj_id": obj_id,
        "instrument_id": [None] * n,
        "mjd": [float(v) for v in rows["mjd"]],
        "flux": [float(v) for v in rows["flux_ujy"]],
        "fluxerr": [float(v) for v in rows["flux_err_ujy"]],
        "zp": [float(v) for v in rows["zp"]],
        "magsys": [str(v or "ab") for v in rows["zpsys"]],
        "filter": [str(v) for v in rows["band"]],
        "origin": [f"stdq:{s}" for s in (rows["service"] if "service" in rows else rows["survey"])],
    }


def write_skyportal(table: pd.DataFrame, dest: IO[bytes], obj_id: str) -> None:
    """skyportal_document as JSON."""
    dest.write((json.dumps(skyportal_document(table, obj_id), indent=1) + "\n").encode("utf-8"))
