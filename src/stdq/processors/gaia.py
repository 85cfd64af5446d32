"""Gaia epoch photometry (Gaia archive TAP + DataLink) -> the normalized photometry table.

The service keeps every answer byte for byte: ``cone.csv`` (or ``cone.vot``), the
TAP cone search of ``gaiadr3.gaia_source``, and ``epochs-NNN.zip`` (or ``.csv`` /
``.vot``), the DataLink answers (``RETRIEVAL_TYPE=EPOCH_PHOTOMETRY``,
``DATA_STRUCTURE=INDIVIDUAL``; a zip with one file per source). This module
reads them back (docs/gaia.md):

- the selected sources: the source of the cone nearest the target among those
  with ``has_epoch_photometry``, or every such source with ``--all-objects`` (the
  selection is made again here from the cone answer); epochs of other sources are
  left out and counted;
- one row per (transit_id, band) of bands G, BP, RP: filter ``G``/``BP``/``RP``,
  band ``gaia::g`` / ``gaia::gbp`` / ``gaia::grp`` (sncosmo's built-in names, as
  SkyPortal's bandpass list has them; sncosmo itself is not installed here);
- flux in e-/s -> microjansky with the Gaia (E)DR3 AB zero points of
  Riello et al. 2021 (A&A 649, A3, table 3): ``m_AB = ZP - 2.5 log10(flux)``, so
  ``flux_ujy = flux * 10**(-0.4 (ZP - 23.9))``; flux_kind ``total``;
- time: ``time`` is BJD(TCB) - 2455197.5 at the solar-system barycentre; it is
  kept as ``gaia_bjd_tcb`` (= time + 2455197.5, days) and ``mjd`` is UTC at the
  geocentre (:func:`bjd_tcb_to_utc_mjd`);
- quality_flag: bit 1 (FLAG_SURVEY_CODE) for ``rejected_by_photometry`` or an
  ``other_flags`` bit in the ``other_flags_mask`` setting; bit 128 (FLAG_OUTLIER)
  for ``rejected_by_variability``;
- detected when flux/flux_error >= ``snr_threshold``; the others get an upper
  limit at ``limit_nsigma`` from the flux error;
- the common rule (``photometry.drop_bad_values``, survey ``Gaia``): a null flux
  (the archive gives rows rejected by the photometry with no flux), a non-finite or
  non-positive error, an epoch outside the survey's years are left out and counted.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, ClassVar

from stdq import photometry
from stdq.errors import QueryFailed
from stdq.processors.base import DataProcessor

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from stdq.store import DataProduct, RawFile

# Gaia (E)DR3 photometric zero points, AB, magnitudes for 1 e-/s (Riello et al. 2021,
# A&A 649, A3, table 3; the Gaia EDR3/DR3 documentation, section 5.4.1). DR3 keeps the
# EDR3 photometric system. Vega ones (the `mag` column) for reference.
ZP_AB = {"G": 25.8010, "BP": 25.3540, "RP": 25.1040}
ZP_AB_ERROR = {"G": 0.0028, "BP": 0.0023, "RP": 0.0016}
ZP_VEGA = {"G": 25.6874, "BP": 25.3385, "RP": 24.7479}
BANDS = {"G": "gaia::g", "BP": "gaia::gbp", "RP": "gaia::grp"}
INSTRUMENTS = {"G": "AF", "BP": "BP", "RP": "RP"}  # astrometric field CCDs, blue/red photometers
GAIA_TIME_ZERO_JD = 2455197.5  # `time` = BJD(TCB) - this (2010-01-01T00:00 TCB)
SOURCE_COLUMNS = ("source_id", "ra", "dec", "phot_g_mean_mag", "has_epoch_photometry")
EPOCH_REQUIRED = ("source_id", "transit_id", "band", "time", "flux", "flux_error")

LEFT_OTHER_SOURCE = "epochs of other sources in the cone (see --all-objects)"
LEFT_BAD_BAND = "band not G, BP or RP"
LEFT_DUPLICATE = "duplicate transit_id and band"
LEFT_TIME = "outside the requested time range"


def ujy_per_e_s(band: str) -> float:
    """Microjansky of 1 e-/s in BAND (G, BP, RP): 10**(-0.4 (ZP_AB - 23.9))."""
    return 10.0 ** (-0.4 * (ZP_AB[band] - photometry.ZP_AB_UJY))


# -- time ------------------------------------------------------------------------------


def bjd_tcb_to_utc_mjd(gaia_time: Any, ra: Any, dec: Any, *, iterations: int = 2) -> np.ndarray:
    """Gaia ``time`` (BJD(TCB) - 2455197.5, days) -> UTC MJD at the geocentre.

    The barycentric time is t_obs + (r_earth(t_obs) . n) / c (the Roemer delay for
    the direction n of RA/DEC, degrees, ICRS). It is removed by iteration: t_obs =
    t_bary - (r_earth(t_obs) . n) / c, starting from t_obs = t_bary, with the
    Earth's barycentric position and velocity at t_bary from astropy's built-in
    ephemeris (ERFA epv00; no download) and r_earth(t_obs) = r + v (t_obs - t_bary)
    (< 3 us from the Earth's acceleration); ITERATIONS=2 converges to well below a
    microsecond. TCB -> TDB -> UTC by astropy (leap seconds from its bundled
    table). NaN stays NaN.
    """
    import numpy as np

    photometry.quiet_astropy()
    import warnings

    from astropy import constants
    from astropy import units as u
    from astropy.time import Time, TimeDelta

    values = np.asarray(gaia_time, dtype="float64")
    out = np.full(values.shape, np.nan)
    ra_r = np.radians(np.broadcast_to(np.asarray(ra, dtype="float64"), values.shape))
    dec_r = np.radians(np.broadcast_to(np.asarray(dec, dtype="float64"), values.shape))
    # a span astropy/ERFA handles without trouble (years 1900 .. 2200); the rest stays NaN
    good = np.isfinite(values) & np.isfinite(ra_r) & np.isfinite(dec_r)
    good &= (values > -40177.0) & (values < 69397.0)
    if not good.any():
        return out
    n = np.stack([np.cos(dec_r[good]) * np.cos(ra_r[good]),
                  np.cos(dec_r[good]) * np.sin(ra_r[good]),
                  np.sin(dec_r[good])])
    c = constants.c.to_value(u.m / u.s)
    with warnings.catch_warnings():  # ERFA's "dubious year" far from now
        warnings.simplefilter("ignore")
        bary = Time(GAIA_TIME_ZERO_JD, values[good], format="jd", scale="tcb").tdb
        r, v = earth_posvel(bary)
        # r(t_obs) = r(t_bary) + v (t_obs - t_bary): the Earth's acceleration (6 mm/s2) over
        # the <= 500 s between the two makes < 1 km, < 3 us of delay
        delay = (r * n).sum(axis=0) / c
        for _ in range(max(1, int(iterations))):
            delay = ((r - v * delay) * n).sum(axis=0) / c
        utc = (bary - TimeDelta(delay, format="sec")).utc
    out[good] = (utc.jd1 - 2400000.5) + utc.jd2
    return out


EPHEMERIS_STEP_DAYS = 0.5  # grid of the interpolated ephemeris (many epochs)


def earth_posvel(tdb: Any) -> tuple[np.ndarray, np.ndarray]:
    """The Earth's barycentric position (m) and velocity (m/s), shape (3, n), at the TDB
    times TDB (an astropy Time), from astropy's built-in ephemeris (ERFA epv00).

    With more epochs than nodes of a 0.5-day grid over their span, epv00 is evaluated
    at the nodes only and the epochs are interpolated by cubic Hermite polynomials from
    the nodes' positions and velocities: the error, h**4/384 times the fourth
    derivative (the yearly orbit and the monthly wobble about the Earth-Moon
    barycentre), is a few metres (~10 ns of light travel time); a million epochs take
    a fraction of a second instead of a minute.
    """
    import numpy as np
    from astropy import units as u
    from astropy.coordinates import get_body_barycentric_posvel, solar_system_ephemeris
    from astropy.time import Time

    step = EPHEMERIS_STEP_DAYS
    n = len(tdb)
    base = float(np.floor(np.min(tdb.jd1)))
    offset = (tdb.jd1 - base) + tdb.jd2  # days from BASE, exact to ~1e-11
    lo = float(np.floor(offset.min() / step) * step)
    nodes = int(np.ceil((offset.max() - lo) / step)) + 2
    with solar_system_ephemeris.set("builtin"):
        if nodes >= n:
            pos, vel = get_body_barycentric_posvel("earth", tdb)
            return pos.xyz.to_value(u.m), vel.xyz.to_value(u.m / u.s)
        grid = Time(base, lo + step * np.arange(nodes), format="jd", scale="tdb")
        pos, vel = get_body_barycentric_posvel("earth", grid)
    p = pos.xyz.to_value(u.m)
    h = step * 86400.0
    m = vel.xyz.to_value(u.m / u.s) * h
    x = (offset - lo) / step
    k = np.clip(np.floor(x).astype("int64"), 0, nodes - 2)
    t = x - k
    t2, t3 = t * t, t * t * t
    r = ((2 * t3 - 3 * t2 + 1) * p[:, k] + (t3 - 2 * t2 + t) * m[:, k]
         + (-2 * t3 + 3 * t2) * p[:, k + 1] + (t3 - t2) * m[:, k + 1])
    v = ((6 * t2 - 6 * t) * p[:, k] + (3 * t2 - 4 * t + 1) * m[:, k]
         + (-6 * t2 + 6 * t) * p[:, k + 1] + (3 * t2 - 2 * t) * m[:, k + 1]) / h
    return r, v


# -- reading the answers -------------------------------------------------------------------


def _is_votable(head: bytes) -> bool:
    text = head.lstrip()[:400].lower()
    return text.startswith(b"<?xml") or b"<votable" in text


def read_table(data: bytes, what: str) -> pd.DataFrame:
    """A TAP or DataLink answer (CSV or VOTable) as a DataFrame; QueryFailed otherwise."""
    import pandas as pd

    if not data.strip():
        return pd.DataFrame()
    if _is_votable(data[:2048]):
        return _read_votable(data, what)
    try:
        table = pd.read_csv(io.BytesIO(data), comment="#", dtype={"source_id": "string",
                                                                 "transit_id": "string"})
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError) as exc:
        raise QueryFailed(f"gaia: {what} could not be read as CSV ({exc})") from None
    table.columns = [str(c).strip() for c in table.columns]
    return table


def _read_votable(data: bytes, what: str) -> pd.DataFrame:
    import warnings

    import numpy as np
    import pandas as pd

    photometry.quiet_astropy()
    from astropy.io import votable

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            doc = votable.parse(io.BytesIO(data), verify="ignore")
            error = _votable_error(doc)
            if error:
                raise QueryFailed(f"gaia: {what} is an error: {error[:200]}")
            tables = list(doc.iter_tables())
            if not tables:
                return pd.DataFrame()
            table = tables[0].to_table()
    except QueryFailed:
        raise
    except Exception as exc:  # astropy's parser raises many kinds
        raise QueryFailed(f"gaia: {what} could not be read as a VOTable ({type(exc).__name__})") from None
    columns: dict[str, Any] = {}
    for name in table.colnames:
        col = table[name]
        values = np.ma.getdata(col)
        mask = np.ma.getmaskarray(col)
        if name in ("source_id", "transit_id", "solution_id"):
            columns[name] = pd.array([None if m else str(int(v)) for v, m in zip(values, mask, strict=True)],
                                     dtype="string")
        elif values.dtype.kind in "fiu":
            f = values.astype("float64")
            columns[name] = np.where(mask, np.nan, f) if mask.any() else f
        elif values.dtype.kind == "b":
            columns[name] = np.where(mask, False, values)
        else:
            columns[name] = np.array(
                [None if m else (v.decode() if isinstance(v, bytes) else str(v))
                 for v, m in zip(values, mask, strict=True)], dtype=object)
    return pd.DataFrame(columns)


def _votable_error(doc: Any) -> str | None:
    """The QUERY_STATUS ERROR message of a VOTable answer, if any."""
    for resource in getattr(doc, "resources", []):
        for info in getattr(resource, "infos", []):
            if info.name == "QUERY_STATUS" and str(info.value).upper() == "ERROR":
                return str(info.content or "").strip() or "QUERY_STATUS ERROR"
    for info in getattr(doc, "infos", []):
        if info.name == "QUERY_STATUS" and str(info.value).upper() == "ERROR":
            return str(info.content or "").strip() or "QUERY_STATUS ERROR"
    return None


def votable_error_text(data: bytes) -> str | None:
    """The error message of a TAP/DataLink VOTable error document (None: not one)."""
    if not _is_votable(data[:2048]):
        return None
    import re

    match = re.search(rb'<INFO[^>]*name="QUERY_STATUS"[^>]*value="ERROR"[^>]*>(.*?)</INFO>', data,
                      re.DOTALL | re.IGNORECASE)
    if match is None:
        match = re.search(rb'<INFO[^>]*value="ERROR"[^>]*name="QUERY_STATUS"[^>]*>(.*?)</INFO>', data,
                          re.DOTALL | re.IGNORECASE)
    if match is None:
        return None
    return " ".join(match.group(1).decode("utf-8", "replace").split())[:300] or "QUERY_STATUS ERROR"


def epoch_members(data: bytes) -> list[tuple[str, bytes]]:
    """The files of one DataLink answer: the members of a zip, else the answer itself."""
    if data[:4] == b"PK\x03\x04" or (data[:4] == b"PK\x05\x06"):
        import zipfile  # here: the registry imports this module to check the settings

        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = sorted(n for n in archive.namelist() if not n.endswith("/"))
                return [(name, archive.read(name)) for name in names]
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise QueryFailed(f"gaia: a DataLink answer is a broken zip ({exc})") from None
    return [("answer", data)]


def read_epochs(data: bytes) -> pd.DataFrame:
    """Every epoch row of one DataLink answer (zip, CSV or VOTable)."""
    import pandas as pd

    members = epoch_members(data)
    # CSV files with one header (one file per source: thousands in a batch) are read as one table
    csv_groups: dict[bytes, list[bytes]] = {}
    others: list[tuple[str, bytes]] = []
    for name, body in members:
        stripped = body.lstrip()
        if not stripped or _is_votable(body[:2048]) or stripped[:1] == b"#":
            others.append((name, body))
            continue
        header, _, rest = stripped.partition(b"\n")
        csv_groups.setdefault(header.rstrip(b"\r"), []).append(rest if rest.endswith(b"\n") or not rest
                                                               else rest + b"\n")
    frames = [read_table(body, f"the DataLink file {name!r}") for name, body in others]
    for header, bodies in csv_groups.items():
        frames.append(read_table(header + b"\n" + b"".join(bodies), "a DataLink CSV file"))
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def as_bool(values: Any) -> np.ndarray:
    """true/false, t/f, 1/0, True/False (text or bool) -> bool; anything else False."""
    import numpy as np

    arr = np.asarray(values, dtype=object)
    out = np.zeros(arr.shape, dtype=bool)
    for i, v in enumerate(arr):
        if isinstance(v, (bool, np.bool_)):
            out[i] = bool(v)
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[i] = bool(v == v and v != 0)
        elif isinstance(v, (str, bytes)):
            word = (v.decode() if isinstance(v, bytes) else v).strip().lower()
            out[i] = word in ("true", "t", "1", "yes")
    return out


def _float(frame: pd.DataFrame, name: str) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    col = frame[name]
    if col.dtype.kind not in "fiub":
        return pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return col.to_numpy(dtype="float64", na_value=np.nan)


def _ids(frame: pd.DataFrame, name: str) -> np.ndarray:
    """An id column as exact decimal text (None where missing); QueryFailed beyond int64."""
    import numpy as np

    if name not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    import pandas as pd

    out = np.empty(len(frame), dtype=object)
    for i, v in enumerate(frame[name].tolist()):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            out[i] = None
            continue
        text = str(v).strip()
        if text.endswith(".0") and text[:-2].lstrip("-").isdigit():
            text = text[:-2]
        photometry.check_int64([text], f"gaia: {name}")
        out[i] = str(int(text))
    return out


# -- the cone -----------------------------------------------------------------------------------


def ranked_sources(cone: pd.DataFrame, ra: float, dec: float) -> list[dict[str, Any]]:
    """Every source of the cone answer, nearest first: source_id, sep_arcsec, ra, dec,
    phot_g_mean_mag, has_epoch_photometry."""
    import numpy as np

    if not len(cone):
        return []
    missing = [c for c in ("source_id", "ra", "dec") if c not in cone.columns]
    if missing:
        raise QueryFailed(f"gaia: the cone search answer lacks column(s) {', '.join(missing)}")
    ids = _ids(cone, "source_id")
    s_ra, s_dec = _float(cone, "ra"), _float(cone, "dec")
    sep = photometry.separation_arcsec(ra, dec, s_ra, s_dec)
    has = as_bool(cone["has_epoch_photometry"].to_numpy()) if "has_epoch_photometry" in cone.columns \
        else np.ones(len(cone), dtype=bool)
    gmag = _float(cone, "phot_g_mean_mag")
    order = np.argsort(np.where(np.isfinite(sep), sep, np.inf), kind="stable")
    return [
        {
            "source_id": ids[i],
            "sep_arcsec": round(float(sep[i]), 4) if math.isfinite(sep[i]) else None,
            "ra": float(s_ra[i]),
            "dec": float(s_dec[i]),
            "phot_g_mean_mag": round(float(gmag[i]), 4) if math.isfinite(gmag[i]) else None,
            "has_epoch_photometry": bool(has[i]),
        }
        for i in order
        if ids[i] is not None
    ]


def select_sources(ranked: list[dict[str, Any]], all_objects: bool) -> list[dict[str, Any]]:
    """The nearest source with epoch photometry, or every one with ALL_OBJECTS."""
    with_epochs = [s for s in ranked if s["has_epoch_photometry"]]
    return with_epochs if all_objects else with_epochs[:1]


# -- the processor -------------------------------------------------------------------------------


class GaiaEpochPhotometryProcessor(DataProcessor):
    """Gaia DR3 epoch photometry (G, BP, RP) -> normalized rows (see the module docstring)."""

    data_product_type = "gaia_photometry"
    version = "1"
    settings_defaults: ClassVar[dict[str, Any]] = {
        "snr_threshold": 3.0,
        "limit_nsigma": 5.0,
        "other_flags_mask": 0,
    }
    settings_help: ClassVar[dict[str, str]] = {
        "snr_threshold": "flux/flux_error >= this is a detection",
        "limit_nsigma": "non-detections get the limit 23.9 - 2.5 log10(n * error) with this n",
        "other_flags_mask": "bits of the epoch's other_flags that set quality_flag 1 (0: none; "
        "the archive's coding is not checked by stdq)",
    }
    settings_ranges: ClassVar[dict[str, str]] = {"other_flags_mask": ">= 0"}

    def cuts(self) -> dict[str, Any]:
        return {
            "snr_threshold": float(self.setting("snr_threshold")),
            "limit_nsigma": float(self.setting("limit_nsigma")),
            "other_flags_mask": int(self.setting("other_flags_mask")),
            "zero_points_ab": dict(ZP_AB),
        }

    def process(self, product: DataProduct) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        cone_files = sorted((r for r in product.raw_files if r.name.startswith("cone")), key=lambda r: r.name)
        epoch_files = sorted((r for r in product.raw_files if r.name.startswith("epochs")),
                             key=lambda r: r.name)
        if not epoch_files:
            raise QueryFailed("gaia: the product has no DataLink answer")
        target = product.target or {}
        ranked: list[dict[str, Any]] = []
        if cone_files and target.get("ra") is not None:
            cone = read_table(_read(cone_files[0]), "the cone search answer")
            ranked = ranked_sources(cone, float(target["ra"]), float(target["dec"]))
        selected = select_sources(ranked, bool(product.params.get("all_objects")))
        frames = [read_epochs(_read(r)) for r in epoch_files]
        frames = [f for f in frames if len(f.columns)]
        epochs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if not len(epochs):
            return photometry.empty_table()
        missing = [c for c in EPOCH_REQUIRED if c not in epochs.columns]
        if missing:
            raise QueryFailed(f"gaia: the epoch photometry lacks column(s) {', '.join(missing)}")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self.rows(product, epochs, selected, ranked)

    def rows(
        self, product: DataProduct, epochs: pd.DataFrame, selected: list[dict[str, Any]],
        ranked: list[dict[str, Any]],
    ) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        n_in = len(epochs)
        source = _ids(epochs, "source_id")
        transit = _ids(epochs, "transit_id")
        band = np.array([str(b).strip().upper() if b is not None else "" for b in epochs["band"].tolist()],
                        dtype=object)
        keep = np.ones(n_in, dtype=bool)

        def drop(mask: Any, reason: str) -> None:
            nonlocal keep
            mask = np.asarray(mask, dtype=bool) & keep
            if mask.any():
                product.leave_out(reason, int(mask.sum()))
                keep &= ~mask

        if selected:
            wanted = {s["source_id"] for s in selected}
            drop(np.array([s not in wanted for s in source], dtype=bool), LEFT_OTHER_SOURCE)
        drop(~np.isin(band, list(ZP_AB)), LEFT_BAD_BAND)
        keys = pd.Series([f"{t}:{b}" for t, b in zip(transit, band, strict=True)])
        drop(keys.duplicated().to_numpy() & keep, LEFT_DUPLICATE)
        idx = np.flatnonzero(keep)
        n = idx.size
        source, transit, band = source[idx], transit[idx], band[idx]
        time = _float(epochs, "time")[idx]
        flux_e = _float(epochs, "flux")[idx]
        err_e = _float(epochs, "flux_error")[idx]
        positions = {s["source_id"]: (s["ra"], s["dec"]) for s in ranked}
        target = product.target or {}
        t_ra, t_dec = target.get("ra"), target.get("dec")
        ra = np.array([positions.get(s, (t_ra, t_dec))[0] for s in source], dtype="float64")
        dec = np.array([positions.get(s, (t_ra, t_dec))[1] for s in source], dtype="float64")
        mjd = bjd_tcb_to_utc_mjd(time, ra, dec)
        lo, hi = product.params.get("mjd_min"), product.params.get("mjd_max")
        outside = np.zeros(n, dtype=bool)
        if lo is not None:
            outside |= mjd < float(lo)
        if hi is not None:
            outside |= mjd > float(hi)
        scale = np.array([ujy_per_e_s(b) for b in band], dtype="float64")
        flux = flux_e * scale
        err = err_e * scale
        rej_phot = as_bool(epochs["rejected_by_photometry"].to_numpy()[idx]) \
            if "rejected_by_photometry" in epochs.columns else np.zeros(n, dtype=bool)
        rej_var = as_bool(epochs["rejected_by_variability"].to_numpy()[idx]) \
            if "rejected_by_variability" in epochs.columns else np.zeros(n, dtype=bool)
        other = _float(epochs, "other_flags")[idx]
        other_int = np.where(np.isfinite(other) & (np.abs(other) < 2.0**62), other, 0).astype("int64")
        mask = int(self.setting("other_flags_mask"))
        quality = np.where(rej_phot, photometry.FLAG_SURVEY_CODE, 0)
        quality |= np.where((other_int & mask) != 0, photometry.FLAG_SURVEY_CODE, 0)
        quality |= np.where(rej_var, photometry.FLAG_OUTLIER, 0)
        if target.get("ra") is not None and target.get("dec") is not None:
            sep = photometry.separation_arcsec(float(target["ra"]), float(target["dec"]), ra, dec)
        else:
            sep = np.full(n, np.nan)

        def const(value: str) -> np.ndarray:
            out = np.empty(n, dtype=object)
            out[:] = value
            return out

        table = pd.DataFrame({
            "mjd": mjd,
            "survey": const("Gaia"),
            "telescope": const("Gaia"),
            "instrument": np.array([INSTRUMENTS[b] for b in band], dtype=object),
            "filter": band.astype(object),
            "band": np.array([BANDS[b] for b in band], dtype=object),
            "flux_ujy": flux,
            "flux_err_ujy": err,
            "zp": np.full(n, photometry.ZP_AB_UJY),
            "zpsys": const("ab"),
            "flux_kind": const("total"),
            "quality_flag": quality.astype("int64"),
            "err_scale": np.ones(n),
            "ra": ra,
            "dec": dec,
            "sep_arcsec": sep,
            "object_id": source.astype(object),
            "source_row_id": np.array([f"{t}:{b}" for t, b in zip(transit, band, strict=True)], dtype=object),
            "n_combined": np.ones(n, dtype="int64"),
            "product_id": np.full(n, product.id or 0, dtype="int64"),
            "gaia_bjd_tcb": time + GAIA_TIME_ZERO_JD,
            "gaia_transit_id": transit.astype(object),
            "gaia_flux_e_s": flux_e,
            "gaia_flux_error_e_s": err_e,
            "gaia_mag_vega": _float(epochs, "mag")[idx],
            "gaia_rejected_by_photometry": rej_phot,
            "gaia_rejected_by_variability": rej_var,
            "gaia_other_flags": other_int,
        })
        if outside.any():
            product.leave_out(LEFT_TIME, int(outside.sum()))
            table = table.loc[~outside].reset_index(drop=True)
        table["time_utc"] = photometry.mjd_to_isot(table["mjd"].to_numpy())
        table = photometry.drop_bad_values(table, "Gaia", product)
        table = photometry.fill_detections(table, float(self.setting("snr_threshold")),
                                           float(self.setting("limit_nsigma")))
        return photometry.normalize(table, product.id)


def _read(raw: RawFile) -> bytes:
    return raw.path.read_bytes()
