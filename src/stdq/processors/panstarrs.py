"""Pan-STARRS1 (MAST catalogs API) answers -> the normalized photometry table.

The service keeps every answer byte for byte: ``mean-pNNN.csv`` (the cone search
of the mean table) and, in detection mode, ``detection-<objID>-pNNN.csv`` (the
pages of one object's detections). This module reads them back, and also reads
the same answers in MAST's JSON form (``{"info": [...], "data": [[...]...]}``,
file names ending in ``.json``), so both formats work for reprocessing and tests.

Detection mode (the default for DR2; docs/photometry.md sections 2, 4, 6, 7):

- one row per ``detectID`` (duplicates left out and counted) of the selected
  object: the object of the cone nearest the target, or every object with
  ``--all-objects`` (the selection is made again here from the mean answer);
- ``filterID`` 1..5 -> filter ``g r i z y`` and band ``ps1::g`` .. ``ps1::y``;
- ``psfFlux``/``psfFluxErr`` are in Jy: flux_ujy = psfFlux * 1e6; rows whose
  psfFlux is -999, null or 0 are left out and counted;
- ``obsTime`` is TAI (middle of the exposure): mjd = UTC via the leap-second
  table (34 s before 2012-07-01, 35 s before 2015-07-01, 36 s before 2017-01-01);
- every row is a catalogue detection (>= 5 sigma): detected true, magnitude
  23.9 - 2.5 log10(flux_ujy) for positive flux, magnitude_error
  1.0857 * err / flux, no limit (NaN), flux_kind ``total``;
- quality_flag bits (``stdq.photometry``): FLAG_SURVEY_CODE for an ``infoFlag``
  bit of PS1_BAD_INFOFLAG, FLAG_BLEND for BLEND/EXT_LIMIT, FLAG_MASKED_PIXELS
  for ``psfQfPerfect`` below the ``min_psf_qf_perfect`` setting (a missing,
  -999, psfQfPerfect counts as below);
- the common rule (``photometry.drop_bad_values``, survey ``PS1``, MJD 54832 ..
  57754): rows with a non-finite flux or error (an error of -999 or null), an
  error <= 0, or an epoch outside those years or in the future are left out and
  counted;
- extra columns ``ps1_obstime_tai``, ``ps1_filterid``, ``ps1_infoflag``,
  ``ps1_infoflag2``, ``ps1_infoflag3``, ``ps1_psfqfperfect``,
  ``ps1_psfmajorfwhm``, ``ps1_psfminorfwhm``, ``ps1_apflux_ujy``,
  ``ps1_apflux_err_ujy``.

Mean mode (``--table mean``, the only mode of DR1): one row per filter per
selected object from ``<f>MeanPSFMag``/``<f>MeanPSFMagErr``, converted to flux.
These are *averages* over the object's single-epoch detections: ``n_combined``
is ``<f>MeanPSFMagNpt`` (else ``n<f>``), and the time is the object's
``epochMean`` (the mean epoch of its position, the same for all five filters),
taken as TAI like ``obsTime`` (guess: the column description does not name the
scale) and converted to UTC. A filter without a mean magnitude (-999) is left
out and counted.

Object ids (``objID``, ``detectID``) are 64-bit integers: they are read as
int64 or kept as strings, never through a float. An id or an integer column
that does not fit a signed 64-bit integer, an answer nested too deeply, or a
number column holding text is QueryFailed (exit 1), never an internal error.
An answer whose first character is ``{`` or ``[`` is read as MAST's JSON form
whatever its file name.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from stdq import photometry
from stdq.errors import QueryFailed
from stdq.processors.base import DataProcessor

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from stdq.store import DataProduct, RawFile

SENTINEL = -999.0
FILTERS = "grizy"
BANDS = tuple(f"ps1::{f}" for f in FILTERS)

# Columns the service asks for (and the processor reads), from the STScI light-curve example.
DETECTION_COLUMNS: tuple[str, ...] = (
    "objID", "detectID", "filterID", "obsTime", "ra", "dec", "psfFlux", "psfFluxErr",
    "psfMajorFWHM", "psfMinorFWHM", "psfQfPerfect", "apFlux", "apFluxErr",
    "infoFlag", "infoFlag2", "infoFlag3",
)
DETECTION_REQUIRED = ("objID", "detectID", "filterID", "obsTime", "psfFlux", "psfFluxErr")
DETECTION_ID_COLUMNS = ("objID", "detectID")
DETECTION_INT_COLUMNS = ("filterID", "infoFlag", "infoFlag2", "infoFlag3")

MEAN_COLUMNS: tuple[str, ...] = (
    "objID", "raMean", "decMean", "epochMean", "nDetections", "objInfoFlag", "qualityFlag",
    *(f"n{f}" for f in FILTERS),
    *(
        col
        for f in FILTERS
        for col in (f"{f}MeanPSFMag", f"{f}MeanPSFMagErr", f"{f}MeanPSFMagNpt", f"{f}QfPerfect", f"{f}Flags")
    ),
)
MEAN_REQUIRED = ("objID", "raMean", "decMean")

# MAST JSON "type" vocabulary (docs/wire-formats.md section 2) -> how a column is read.
_JSON_INT_TYPES = {"int", "short", "unsignedByte", "byte"}
_JSON_FLOAT_TYPES = {"double", "float"}
_JSON_ID_TYPES = {"long"}  # 64-bit: kept as exact strings

LEFT_DUPLICATE = "duplicate detectID"
LEFT_OTHER_OBJECT = "detections of other objects in the cone (see --all-objects)"
LEFT_NO_FLUX = "psfFlux missing (-999 or null)"
LEFT_ZERO_FLUX = "psfFlux = 0"
LEFT_BAD_FILTER = "filterID not in 1..5"
LEFT_TIME = "outside the requested time range"
LEFT_NO_MEAN_MAG = "no mean PSF magnitude in that filter (-999)"


# -- reading MAST answers --------------------------------------------------------------


def read_mast_json(data: bytes | str) -> pd.DataFrame:
    """A MAST catalogs JSON answer ``{"info": [...], "data": [[...]...]}`` as a DataFrame.

    Column names and types come from ``info``: ``long`` columns (objID,
    detectID, ...) stay exact strings whether the answer gives them as strings or
    numbers; integer and float columns become numbers (-999 kept as it is);
    ``char`` columns stay strings. QueryFailed when the answer is not of that shape.
    """
    import numpy as np
    import pandas as pd

    try:
        payload = json.loads(data)
    except RecursionError:
        raise QueryFailed("panstarrs: the JSON answer is nested too deeply to be a MAST table") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryFailed(f"panstarrs: the JSON answer could not be parsed ({exc})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("info"), list) or not isinstance(
        payload.get("data"), list
    ):
        raise QueryFailed("panstarrs: the JSON answer has no 'info' and 'data' lists")
    info = payload["info"]
    try:
        names = [str(col["name"]) for col in info]
        types = [str(col.get("type", "")) for col in info]
    except (TypeError, KeyError):
        raise QueryFailed("panstarrs: the JSON answer's 'info' entries have no 'name'") from None
    rows = payload["data"]
    for row in rows:
        if not isinstance(row, list) or len(row) != len(names):
            raise QueryFailed(
                f"panstarrs: a JSON row has {len(row) if isinstance(row, list) else 'no'} values "
                f"for {len(names)} columns"
            )
    columns: dict[str, Any] = {}
    for i, (name, kind) in enumerate(zip(names, types, strict=True)):
        values = [row[i] for row in rows]
        if kind in _JSON_ID_TYPES:
            columns[name] = np.array([_id_text(v) for v in values], dtype=object)
        elif kind in _JSON_INT_TYPES or kind in _JSON_FLOAT_TYPES:
            if any(isinstance(v, (str, list, dict, bool)) for v in values):
                raise QueryFailed(f"panstarrs: the JSON column {name} holds a value that is not a number")
            try:
                as_float = np.array([np.nan if v is None else v for v in values], dtype="float64")
            except (TypeError, ValueError, OverflowError):
                raise QueryFailed(
                    f"panstarrs: the JSON column {name} holds a value that is not a number"
                ) from None
            if kind in _JSON_INT_TYPES:
                photometry.check_int64(
                    [v for v in values if isinstance(v, int) and not -(2**63) <= v < 2**63][:1],
                    f"panstarrs: column {name}:",
                )
            if kind in _JSON_INT_TYPES and np.isfinite(as_float).all():
                photometry.check_int64(as_float[np.abs(as_float) >= 2.0**63][:1].tolist(),
                                       f"panstarrs: column {name}:")
                columns[name] = as_float.astype("int64")
            else:
                columns[name] = as_float
        else:
            columns[name] = np.array([None if v is None else str(v) for v in values], dtype=object)
    return pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))


def _id_text(value: Any) -> str | None:
    """A 64-bit id as its exact decimal text (never through a float)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise QueryFailed(f"panstarrs: {value!r} is not an object id")
    if isinstance(value, int):
        photometry.check_int64([value], "panstarrs: object id")
        return str(value)
    if isinstance(value, float):
        # a JSON number too large for a double would have lost digits already
        if not value.is_integer() or abs(value) > 2**53:
            raise QueryFailed(f"panstarrs: object id {value!r} is not an exact integer")
        return str(int(value))
    text = str(value).strip()
    if not text.lstrip("-").isdigit():
        raise QueryFailed(f"panstarrs: {text[:40]!r} is not an object id")
    photometry.check_int64([text], "panstarrs: object id")
    return str(int(text))


def read_mast_csv(
    source: bytes | str | os.PathLike,
    *,
    id_columns: tuple[str, ...] = DETECTION_ID_COLUMNS,
    int_columns: tuple[str, ...] = (),
    wanted: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """A MAST catalogs CSV answer (bytes, or the path of a file) as a DataFrame.

    The format: a header line of comma-separated column names, then the rows.

    ID_COLUMNS and INT_COLUMNS are read as int64 (ids exact, never through a
    float); the other columns as pandas infers them; only the columns in WANTED
    (default: all) are returned. An empty answer is a table with no rows (guess:
    MAST may answer an empty body when nothing matches; LCExtract checks for
    that). A last line with fewer fields than the header (a cut-off answer), or
    anything that is not CSV, is QueryFailed.
    """
    import pandas as pd

    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        head, tail, empty = raw[:65536], raw[-65536:], not raw.strip()
        reader: Any = io.BytesIO(raw)
    else:
        head, tail, empty = _head_and_tail(source)
        reader = source
    if empty:
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in wanted or ()})
    if head.lstrip()[:1] in (b"{", b"["):  # MAST's JSON form (or a hostile imitation)
        data = raw if isinstance(source, (bytes, bytearray, memoryview)) else _read_bytes(source)
        table = read_mast_json(data)
        return table if wanted is None else table[[c for c in table.columns if c in wanted]]
    newline = head.find(b"\n")
    header_line = head[: newline if newline >= 0 else len(head)].rstrip(b"\r")
    header = [h.strip().strip('"') for h in header_line.decode("utf-8", "replace").split(",")]
    if not header or not all(header) or header_line.lstrip().startswith(b"<"):
        raise QueryFailed("panstarrs: the answer is not CSV (no header line of column names)")
    _check_last_line(tail, len(header), header_only=newline < 0 or len(head.rstrip(b"\r\n")) <= newline)
    usecols = [h for h in header if wanted is None or h in wanted]
    dtype: dict[str, str] = {}
    for name in usecols:
        if name in id_columns or name in int_columns:
            dtype[name] = "int64"
    # Every column is parsed (no usecols): pandas then reads a large file in parallel.
    try:
        with warnings.catch_warnings():  # pandas' "invalid value encountered in cast"
            warnings.simplefilter("ignore", RuntimeWarning)
            table = pd.read_csv(_rewind(reader), dtype=dtype)
    except (ValueError, TypeError, OverflowError):  # ParserError is a ValueError
        table = None
    if table is None:
        # Slow path: nulls in integer columns, or ids that are not integers.
        try:
            table = pd.read_csv(_rewind(reader), dtype={n: str for n in dtype})
        except (ValueError, TypeError, OverflowError) as exc:
            raise QueryFailed(f"panstarrs: the CSV answer could not be parsed ({exc})") from None
        for name in dtype:
            if name not in table.columns:
                continue
            if name in id_columns:
                table[name] = table[name].map(lambda v: None if v is None or v != v else _id_text(v))
            else:
                numbers = pd.to_numeric(table[name], errors="coerce").astype("float64")
                big = numbers.to_numpy()[~(numbers.abs() < 2.0**63).to_numpy() & numbers.notna().to_numpy()]
                photometry.check_int64(big[:1].tolist(), f"panstarrs: column {name}:")
                table[name] = numbers
    return table if len(usecols) == len(table.columns) else table[usecols]


def _head_and_tail(path: Any) -> tuple[bytes, bytes, bool]:
    """The first and last 64 KiB of the file at PATH, and whether it is blank."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 65536))
        tail = fh.read()
    return head, tail, not head.strip()


def _read_bytes(path: Any) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _rewind(reader: Any) -> Any:
    if hasattr(reader, "seek"):
        reader.seek(0)
    return reader


def _check_last_line(tail: bytes, n_fields: int, *, header_only: bool) -> None:
    """QueryFailed when the last line of a CSV answer has fewer fields than the header."""
    if header_only:
        return
    end = len(tail.rstrip(b"\r\n"))
    start = tail.rfind(b"\n", 0, end) + 1
    last = tail[start:end]
    if last.count(b",") + 1 < n_fields and b'"' not in last:
        raise QueryFailed(
            f"panstarrs: the CSV answer ends in a cut-off line ({last.count(b',') + 1} of "
            f"{n_fields} fields): the answer was truncated"
        )


def parse_answer(source: bytes | str | os.PathLike, kind: str) -> pd.DataFrame:
    """One MAST CSV answer (bytes or a path) of KIND "detection" or "mean", read as the
    processor reads it (the service parses each page with this, once)."""
    if kind == "detection":
        return read_mast_csv(
            source, id_columns=DETECTION_ID_COLUMNS, int_columns=DETECTION_INT_COLUMNS,
            wanted=DETECTION_COLUMNS,
        )
    return read_mast_csv(source, id_columns=("objID",), wanted=None)


# Pages the service has parsed already, for the processor of the same process:
# (stored path, sha256 of the stored bytes) -> table. Taken (popped) by read_answer.
_PARSED: dict[tuple[str, str], pd.DataFrame] = {}
_PARSED_MAX = 256


def keep_parsed(raw: RawFile, table: pd.DataFrame) -> None:
    """Hand TABLE, parsed from RAW's bytes, on to the processor (not for a redacted file:
    its stored bytes differ from those parsed)."""
    if getattr(raw, "redacted", False):
        return
    while len(_PARSED) >= _PARSED_MAX:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[(str(raw.path), raw.sha256)] = table


def read_answer(raw: RawFile | Any, kind: str) -> pd.DataFrame:
    """One stored answer (CSV or JSON, by its file name) of KIND "detection" or "mean"
    (the table the service parsed already, when it is this process's)."""
    name = getattr(raw, "name", str(raw))
    path: Any = getattr(raw, "path", raw)
    sha = getattr(raw, "sha256", None)
    if sha is not None:
        parsed = _PARSED.pop((str(path), sha), None)
        if parsed is not None:
            return parsed
    if name.endswith(".json"):
        return read_mast_json(_read_bytes(path))
    return parse_answer(path, kind)


def parse_metadata(data: bytes | str) -> list[dict[str, Any]]:
    """A MAST ``<release>/<table>/metadata`` answer: a JSON array of column descriptions.

    Returns one dict per column with ``name``, ``type``, ``db_type``, ``unit``
    (None for the string "NULL") and ``description``. QueryFailed otherwise.
    """
    try:
        payload = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QueryFailed(f"panstarrs: the metadata answer could not be parsed ({exc})") from None
    if not isinstance(payload, list) or not all(isinstance(c, dict) and "name" in c for c in payload):
        raise QueryFailed("panstarrs: the metadata answer is not a list of column descriptions")

    def value(col: dict[str, Any], key: str) -> Any:
        v = col.get(key)
        return None if v in (None, "NULL") else v

    return [
        {
            "name": str(col["name"]),
            "type": value(col, "type") or value(col, "datatype"),
            "db_type": value(col, "db_type"),
            "unit": value(col, "unit"),
            "description": value(col, "description") or "",
        }
        for col in payload
    ]


def unknown_columns(metadata: list[dict[str, Any]], wanted: tuple[str, ...] | list[str]) -> list[str]:
    """The names in WANTED that the table described by METADATA does not have (case-insensitive)."""
    known = {c["name"].lower() for c in metadata}
    return [name for name in wanted if name.lower() not in known]


# -- fast vectorized time helpers ---------------------------------------------------------


_TABLES: dict[str, Any] = {}


def ids_as_text(values) -> np.ndarray:
    """64-bit ids (int64 or strings) -> an object array of exact decimal strings."""
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        return np.array([None if v is None else str(v) for v in arr], dtype=object)
    if arr.size >= 1000:
        lo, hi = int(arr.min()), int(arr.max())
        width = len(str(hi))
        if lo >= 10 ** (width - 1) and width <= 19:  # every id has WIDTH digits: fast path
            return _same_width_ids(arr.astype("int64"), width)
    return arr.astype(str).astype(object)


def _same_width_ids(arr: np.ndarray, width: int) -> np.ndarray:
    """Positive ids of exactly WIDTH digits -> strings, four digits at a time."""
    import numpy as np

    groups = -(-width // 4)
    head = width - 4 * (groups - 1)  # digits in the first group: 1..4
    tables = [_digit_table(head)] + [_digit_table(4)] * (groups - 1)
    fields = [(f"g{k}", f"S{4 if k else head}") for k in range(groups)] + [("nl", "S1")]
    buf = np.empty(arr.size, dtype=fields)
    rest = arr
    for k in range(groups - 1, 0, -1):
        rest, digits = np.divmod(rest, 10000)
        buf[f"g{k}"] = tables[k][digits]
    buf["g0"] = tables[0][rest]
    buf["nl"] = b"\n"
    lines = buf.tobytes().decode("ascii").split("\n")
    lines.pop()
    out = np.empty(arr.size, dtype=object)
    out[:] = lines
    return out


def _digit_table(width: int) -> np.ndarray:
    """Every number below 10**WIDTH as WIDTH zero-padded ASCII digits."""
    import numpy as np

    key = f"digits{width}"
    if key not in _TABLES:
        _TABLES[key] = np.array([f"{i:0{width}d}" for i in range(10**width)], dtype=f"S{width}")
    return _TABLES[key]


# -- the processor ------------------------------------------------------------------------


class PanstarrsProcessor(DataProcessor):
    """Pan-STARRS1 detections (or mean photometry) -> normalized rows (see module docstring)."""

    data_product_type = "panstarrs_photometry"
    version = "2"  # 2: the common value rule (drop_bad_values); error <= 0 left out, not flagged
    settings_defaults: ClassVar[dict[str, Any]] = {"min_psf_qf_perfect": 0.9}
    settings_help: ClassVar[dict[str, str]] = {
        "min_psf_qf_perfect": "psfQfPerfect below this sets quality_flag bit 8 (masked pixels)",
    }

    @property
    def min_psf_qf_perfect(self) -> float:
        return float(self.setting("min_psf_qf_perfect"))

    def cuts(self) -> dict[str, Any]:
        return {
            "min_psf_qf_perfect": self.min_psf_qf_perfect,
            "bad_infoflag_mask": photometry.PS1_BAD_INFOFLAG,
            "blend_infoflag_mask": photometry.PS1_BLEND_INFOFLAG,
        }

    def process(self, product: DataProduct) -> pd.DataFrame:
        mean_files = sorted((r for r in product.raw_files if r.name.startswith("mean")), key=lambda r: r.name)
        det_files = sorted(
            (r for r in product.raw_files if r.name.startswith("detection")), key=lambda r: r.name
        )
        table = product.params.get("table") or ("detection" if det_files else "mean")
        import numpy as np

        objects = _concat([read_answer(r, "mean") for r in mean_files])
        # a hostile value overflows to inf (then left out as non-finite): no numpy warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if table == "mean":
                if objects is None:
                    raise QueryFailed("panstarrs: the product has no mean-table answer")
                return self.mean_rows(product, objects)
            detections = _concat([read_answer(r, "detection") for r in det_files])
            if detections is None:
                raise QueryFailed("panstarrs: the product has no detection-table answer")
            return self.detection_rows(product, detections, objects)

    # -- detections -------------------------------------------------------------------------
    def detection_rows(
        self, product: DataProduct, det: pd.DataFrame, objects: pd.DataFrame | None
    ) -> pd.DataFrame:
        """The normalized rows of the detection table DET (OBJECTS: the cone's mean answer).

        Works on numpy arrays throughout (a million rows take about a second).
        """
        import numpy as np
        import pandas as pd

        missing = [c for c in DETECTION_REQUIRED if c not in det.columns]
        if missing:
            raise QueryFailed(f"panstarrs: the detection answer lacks column(s) {', '.join(missing)}")
        n_in = len(det)
        cols: dict[str, np.ndarray] = {}
        for name in DETECTION_COLUMNS:
            if name in DETECTION_ID_COLUMNS:
                cols[name] = det[name].to_numpy()
            elif name in DETECTION_INT_COLUMNS and name != "filterID":
                cols[name] = _int_flags(det, name, n_in)
            else:
                cols[name] = _optional(det, name, n_in)
        keep = np.ones(n_in, dtype=bool)

        def drop(mask: np.ndarray, reason: str) -> None:
            nonlocal keep
            mask = mask & keep
            count = int(mask.sum())
            if count:
                product.leave_out(reason, count)
                keep &= ~mask

        drop(pd.Series(cols["detectID"]).duplicated().to_numpy(), LEFT_DUPLICATE)
        if objects is not None and len(objects) and not product.params.get("all_objects"):
            nearest = nearest_object_id(objects, product.target)
            if nearest is not None:
                obj = cols["objID"]
                other = obj != int(nearest) if obj.dtype.kind in "iu" else ids_as_text(obj) != nearest
                drop(np.asarray(other, dtype=bool), LEFT_OTHER_OBJECT)
        flux_jy = cols["psfFlux"]
        drop(np.isnan(flux_jy) | (flux_jy == SENTINEL), LEFT_NO_FLUX)
        drop(flux_jy == 0, LEFT_ZERO_FLUX)
        drop(~np.isin(cols["filterID"], (1.0, 2.0, 3.0, 4.0, 5.0)), LEFT_BAD_FILTER)
        obs = cols["obsTime"]
        drop(np.isnan(obs) | (obs == SENTINEL), "obsTime missing (-999 or null)")
        if not keep.all():
            cols = {name: values[keep] for name, values in cols.items()}
        mjd = photometry.tai_to_utc_mjd(cols["obsTime"])
        lo, hi = product.params.get("mjd_min"), product.params.get("mjd_max")
        if lo is not None or hi is not None:
            outside = np.zeros(len(mjd), dtype=bool)
            if lo is not None:
                outside |= mjd < float(lo) - 1e-8
            if hi is not None:
                outside |= mjd > float(hi) + 1e-8
            if outside.any():
                product.leave_out(LEFT_TIME, int(outside.sum()))
                cols = {name: values[~outside] for name, values in cols.items()}
                mjd = mjd[~outside]

        n = len(mjd)
        fidx = cols["filterID"].astype("int64") - 1
        flux = cols["psfFlux"] * 1e6
        err = _sentinel_nan(cols["psfFluxErr"]) * 1e6
        positive_err = err > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.where(positive_err, flux / err, np.nan)
            magerr = np.where((flux > 0) & positive_err, photometry.PSF_MAG_ERR * err / flux, np.nan)
        ra = _sentinel_nan(cols["ra"])
        dec = _sentinel_nan(cols["dec"])
        target = product.target or {}
        if target.get("ra") is not None and target.get("dec") is not None:
            sep = photometry.separation_arcsec(float(target["ra"]), float(target["dec"]), ra, dec)
        else:
            sep = np.full(n, np.nan)
        info = cols["infoFlag"]
        qf = _sentinel_nan(cols["psfQfPerfect"])
        quality = np.where(info & photometry.PS1_BAD_INFOFLAG, photometry.FLAG_SURVEY_CODE, 0)
        quality |= np.where(info & photometry.PS1_BLEND_INFOFLAG, photometry.FLAG_BLEND, 0)
        with np.errstate(invalid="ignore"):
            quality |= np.where(qf >= self.min_psf_qf_perfect, 0, photometry.FLAG_MASKED_PIXELS)

        nan = np.full(n, np.nan)
        columns: dict[str, Any] = {
            "mjd": mjd,
            "time_utc": photometry.mjd_to_isot(mjd),
            "survey": _const("PS1", n),
            "telescope": _const("PS1", n),
            "instrument": _const("GPC1", n),
            "filter": _FILTER_NAMES[fidx],
            "band": _BAND_NAMES[fidx],
            "flux_ujy": flux,
            "flux_err_ujy": err,
            "snr": snr,
            "detected": np.ones(n, dtype=bool),
            "magnitude": photometry.magnitude_from_flux(flux),
            "magnitude_error": magerr,
            "limit": nan,
            "limit_nsigma": nan,
            "image_depth": nan,
            "zp": np.full(n, photometry.ZP_AB_UJY),
            "zpsys": _const("ab", n),
            "flux_kind": _const("total", n),
            "quality_flag": quality.astype("int64", copy=False),
            "err_scale": np.ones(n),
            "ra": ra,
            "dec": dec,
            "sep_arcsec": sep,
            "object_id": _ids_fast(cols["objID"]),
            "source_row_id": ids_as_text(cols["detectID"]),
            "n_combined": np.ones(n, dtype="int64"),
            "product_id": np.full(n, product.id or 0, dtype="int64"),
            "ps1_obstime_tai": cols["obsTime"],
            "ps1_filterid": fidx + 1,
            "ps1_infoflag": info,
            "ps1_infoflag2": cols["infoFlag2"],
            "ps1_infoflag3": cols["infoFlag3"],
            "ps1_psfqfperfect": qf,
            "ps1_psfmajorfwhm": _sentinel_nan(cols["psfMajorFWHM"]),
            "ps1_psfminorfwhm": _sentinel_nan(cols["psfMinorFWHM"]),
            "ps1_apflux_ujy": _sentinel_nan(cols["apFlux"]) * 1e6,
            "ps1_apflux_err_ujy": _sentinel_nan(cols["apFluxErr"]) * 1e6,
        }
        if n > 1 and not (np.diff(mjd) >= 0).all():  # MAST sorts by obsTime; sort if it did not
            order = np.argsort(mjd, kind="stable")
            columns = {name: values[order] for name, values in columns.items()}
        return photometry.drop_bad_values(_frame(columns, n), "PS1", product)

    # -- mean photometry ---------------------------------------------------------------------
    def mean_rows(self, product: DataProduct, objects: pd.DataFrame) -> pd.DataFrame:
        """One row per filter per selected object, from the mean table's PSF magnitudes."""
        import numpy as np
        import pandas as pd

        missing = [c for c in MEAN_REQUIRED if c not in objects.columns]
        if missing:
            raise QueryFailed(f"panstarrs: the mean-table answer lacks column(s) {', '.join(missing)}")
        if not any(f"{f}MeanPSFMag" in objects.columns for f in FILTERS):
            raise QueryFailed("panstarrs: the mean-table answer has no <f>MeanPSFMag column")
        if len(objects) and not product.params.get("all_objects"):
            nearest = nearest_object_id(objects, product.target)
            ids = ids_as_text(objects["objID"].to_numpy())
            objects = objects.loc[ids == nearest]
        n_obj = len(objects)
        ids = ids_as_text(objects["objID"].to_numpy())
        ra = _sentinel_nan(_float(objects["raMean"]))
        dec = _sentinel_nan(_float(objects["decMean"]))
        target = product.target or {}
        if target.get("ra") is not None and target.get("dec") is not None and n_obj:
            sep = photometry.separation_arcsec(float(target["ra"]), float(target["dec"]), ra, dec)
        else:
            sep = np.full(n_obj, np.nan)
        epoch = _sentinel_nan(_optional(objects, "epochMean", n_obj))
        mjd = photometry.tai_to_utc_mjd(epoch)
        frames = []
        for i, f in enumerate(FILTERS):
            if f"{f}MeanPSFMag" not in objects.columns:
                continue
            mag = _sentinel_nan(_optional(objects, f"{f}MeanPSFMag", n_obj))
            have = np.isfinite(mag)
            if (~have).any():
                product.leave_out(LEFT_NO_MEAN_MAG, int((~have).sum()))
            if not have.any():
                continue
            magerr = _sentinel_nan(_optional(objects, f"{f}MeanPSFMagErr", n_obj))[have]
            flux = photometry.flux_from_magnitude(mag[have])
            err = flux * magerr / photometry.PSF_MAG_ERR
            npt = _optional(objects, f"{f}MeanPSFMagNpt", n_obj)
            count = _optional(objects, f"n{f}", n_obj)
            n_comb = np.where(np.isfinite(npt) & (npt > 0), npt, np.where(np.isfinite(count) & (count > 0), count, 1))
            qf = _optional(objects, f"{f}QfPerfect", n_obj)[have]
            quality = np.zeros(int(have.sum()), dtype="int64")
            with np.errstate(invalid="ignore"):
                quality |= np.where(~(qf >= self.min_psf_qf_perfect), photometry.FLAG_MASKED_PIXELS, 0)
            m = int(have.sum())
            frames.append(
                _frame(
                    {
                        "mjd": mjd[have],
                        "survey": _const("PS1", m),
                        "telescope": _const("PS1", m),
                        "instrument": _const("GPC1", m),
                        "filter": _const(f, m),
                        "band": _const(BANDS[i], m),
                        "flux_ujy": flux,
                        "flux_err_ujy": err,
                        "detected": np.ones(m, dtype=bool),
                        "magnitude": photometry.magnitude_from_flux(flux),
                        "magnitude_error": magerr,
                        "flux_kind": _const("total", m),
                        "quality_flag": quality,
                        "ra": ra[have],
                        "dec": dec[have],
                        "sep_arcsec": sep[have],
                        "object_id": ids[have],
                        "source_row_id": np.array([f"{o}:{f}" for o in ids[have]], dtype=object),
                        "n_combined": n_comb[have].astype("int64"),
                        "ps1_epochmean_tai": epoch[have],
                        "ps1_mean_psf_mag": mag[have],
                        "ps1_qfperfect": _sentinel_nan(qf),
                        "ps1_flags": _int_flags(objects, f"{f}Flags", n_obj)[have],
                        "ps1_ndetections": _optional(objects, "nDetections", n_obj)[have],
                    },
                    m,
                )
            )
        if not frames:
            return photometry.empty_table()
        table = pd.concat(frames, ignore_index=True)
        table["time_utc"] = photometry.mjd_to_isot(table["mjd"].to_numpy())
        return photometry.drop_bad_values(table, "PS1", product)


# -- helpers ---------------------------------------------------------------------------------


class _NameTable:
    """FILTERS / BANDS as object arrays, built on first use (numpy is imported lazily)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self._array = None

    def __getitem__(self, index):
        import numpy as np

        if self._array is None:
            self._array = np.array(self.names, dtype=object)
        return self._array[index]


_FILTER_NAMES = _NameTable(tuple(FILTERS))
_BAND_NAMES = _NameTable(BANDS)


def nearest_object_id(objects: pd.DataFrame, target: dict[str, Any] | None) -> str | None:
    """The objID (text) of the object of the cone nearest TARGET (raMean/decMean, else distance)."""
    import numpy as np

    if not len(objects):
        return None
    ids = ids_as_text(objects["objID"].to_numpy())
    sep = np.full(len(objects), np.nan)
    target = target or {}
    if {"raMean", "decMean"} <= set(objects.columns) and target.get("ra") is not None:
        ra = _sentinel_nan(_float(objects["raMean"]))
        dec = _sentinel_nan(_float(objects["decMean"]))
        sep = photometry.separation_arcsec(float(target["ra"]), float(target["dec"]), ra, dec)
    if "distance" in objects.columns:  # guess: degrees (the cone search's own column)
        dist = _sentinel_nan(_float(objects["distance"])) * 3600.0
        sep = np.where(np.isfinite(sep), sep, dist)
    if not np.isfinite(sep).any():
        return str(ids[0])
    return str(ids[int(np.nanargmin(sep))])


def object_separations(objects: pd.DataFrame, target: dict[str, Any]) -> list[tuple[str, float]]:
    """(objID text, separation in arcsec) of every object, nearest first."""
    import numpy as np

    if not len(objects):
        return []
    ids = ids_as_text(objects["objID"].to_numpy())
    ra = _sentinel_nan(_float(objects["raMean"])) if "raMean" in objects.columns else np.full(len(ids), np.nan)
    dec = _sentinel_nan(_float(objects["decMean"])) if "decMean" in objects.columns else np.full(len(ids), np.nan)
    sep = photometry.separation_arcsec(float(target["ra"]), float(target["dec"]), ra, dec)
    if "distance" in objects.columns:
        sep = np.where(np.isfinite(sep), sep, _sentinel_nan(_float(objects["distance"])) * 3600.0)
    order = np.argsort(np.where(np.isfinite(sep), sep, np.inf), kind="stable")
    return [(str(ids[i]), float(sep[i]) if math.isfinite(sep[i]) else float("nan")) for i in order]


def _frame(columns: dict[str, Any], n: int) -> pd.DataFrame:
    """A DataFrame of COLUMNS (numpy arrays); text columns stay ``object`` as in COLUMN_TYPES.

    (pandas 3 would otherwise turn each object array of strings into its ``str``
    dtype, checking every value: a tenth of a second per million rows.)
    """
    import numpy as np
    import pandas as pd

    index = pd.RangeIndex(n)
    data = {
        name: pd.Series(values, index=index, dtype=object, copy=False)
        if getattr(values, "dtype", None) == np.dtype(object)
        else values
        for name, values in columns.items()
    }
    return pd.DataFrame(data, index=index, copy=False)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    """The pages one after the other. A page without rows adds none, nor its dtypes: the
    header-only last page of a paged answer has ``object`` columns, which would make
    every column of the whole table ``object`` (every value a Python object)."""
    import pandas as pd

    if not frames:
        return None
    frames = [f for f in frames if len(f.columns)] or frames[:1]
    frames = [f for f in frames if len(f)] or frames[:1]
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _float(series: pd.Series) -> np.ndarray:
    import pandas as pd

    if series.dtype.kind not in "fiub":  # text (object or pandas' str): not a number -> NaN
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=float("nan"))
    return series.to_numpy(dtype="float64", na_value=float("nan"))


def _optional(frame: pd.DataFrame, name: str, n: int) -> np.ndarray:
    import numpy as np

    if name not in frame.columns:
        return np.full(n, np.nan)
    return _float(frame[name])


def _sentinel_nan(values: np.ndarray) -> np.ndarray:
    import numpy as np

    values = np.asarray(values, dtype="float64")
    return np.where(values == SENTINEL, np.nan, values)


def _int_flags(frame: pd.DataFrame, name: str, n: int) -> np.ndarray:
    """A flag column as int64 (missing, null or -999 -> 0)."""
    import numpy as np

    if name not in frame.columns:
        return np.zeros(n, dtype="int64")
    col = frame[name]
    if col.dtype.kind in "iu":
        values = col.to_numpy(dtype="int64")
        return np.where(values == -999, 0, values)
    values = _float(col)
    return np.where(np.isfinite(values) & (values != SENTINEL), values, 0).astype("int64")


def _const(value: str, n: int) -> np.ndarray:
    import numpy as np

    out = np.empty(n, dtype=object)
    out[:] = value
    return out


def _ids_fast(values) -> np.ndarray:
    """Ids with few distinct values (objID of a light curve) -> text, converting each once."""
    import numpy as np
    import pandas as pd

    arr = np.asarray(values)
    if arr.dtype.kind not in "iu" or arr.size < 1000:
        return ids_as_text(arr)
    codes, uniques = pd.factorize(arr)
    return ids_as_text(np.asarray(uniques))[codes]
