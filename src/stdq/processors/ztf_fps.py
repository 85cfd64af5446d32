"""ZFPS light-curve file -> normalized difference-flux photometry (docs/photometry.md 3.2, 4).

The file (docs/wire-formats.md 3.2; the real ones are in ../shared/realdata/zfps): ``#``
comment lines (the requested position and JD range, the column definitions), then
the column line ``" index, field, ..."`` (single requests) or ``" sindex, field, ..."``
(the batch service), not commented (``#`` in front is accepted too), space-separated
rows, and a last ``# ----...END...----`` line (its absence is recorded: a file cut
short). Missing values are ``null`` in single-request files and ``-99999.000000`` in
batch files.

``procstatus`` is text, a comma list of codes (``56,57``); the file header calls
every non-zero code a warning. The code table (PROCSTATUS_CODES): 0 success; 56 bad
or NaN pixels; 57 no reference source within 5"; 58 reference PSF catalog missing;
59 suspect uncertainties; 60 PSF size not odd; 61 cutout off the image; 62 start JD
reset to survey start; 63 no records; 64 catastrophic; 65 end JD before survey
start; 255 database error. The rules, in this order:

- a row carrying a request code (63, 65, 64, 255) is left out, counted by its
  procstatus; when no row is kept and a request code was seen, the request had no
  data (63/65: NoData, exit 5) or failed (64/255: QueryFailed, exit 1);
- a row without a usable flux (``forcediffimflux`` or ``forcediffimfluxunc`` null
  or ``-99999``: the service's own "no measurement") is left out: with procstatus 0
  under "rows with null or -99999 forcediffimflux" (or ...fluxunc), otherwise
  counted by its procstatus ("rows without a usable flux, procstatus 57,61 (57 ...;
  61 ...)");
- rows without ``zpdiff`` (or outside 15..35), with an unknown ``filter``, or
  without whole ``field``/``ccdid``/``qid`` (0..99999) are left out; so is a last
  row cut short in a file without its END line; an integer (``field``, ``ccdid``,
  ``qid``, ``rfid``, ``pid``) that does not fit 64 bits ends the product
  (QueryFailed);
- then the common rule (``photometry.bad_values``, survey ZTF) on the microjansky
  values and the mid-exposure MJD: "non-finite flux or error" (``nan``, ``inf``,
  ``1e999``, or a flux that overflows in microjansky), "flux error <= 0", "epoch
  not a number", "epoch before ZTF began" (MJD 58000), "epoch in the future";
- a kept row with any non-zero code (an unknown one too: the real batch file has
  55) sets FLAG_SURVEY_CODE (quality bit 1); ``ztf_procstatus`` keeps the text.

Clean epochs: kept rows without a quality flag, where bit 1 set only by the codes
57, 58 and 62 does not count (CLEAN_CODES: they say nothing about the flux; 57,
"no reference source within 5\"", marks every epoch of a hostless transient and
would otherwise leave it without a baseline). The peak, the baseline epochs and
the error rescaling use the clean epochs.

Values:

- flux: ``flux_ujy = forcediffimflux * 10**(-0.4 (zpdiff - 23.9))`` epoch by epoch,
  the same factor for the error; ``flux_kind = difference``.
- time: ``mjd = jd - 2400000.5 + exptime/2/86400`` (``jd`` is the start of the
  exposure, UTC; 30 s when ``exptime`` is missing or not in (0, 3600]).
- detections: ``snr >= snr_threshold`` (default 3); others get an upper limit
  ``23.9 - 2.5 log10(limit_nsigma * flux_err_ujy)`` at ``limit_nsigma`` (default
  5) sigma; ``image_depth = diffmaglim``.
- quality_flag: FLAG_SURVEY_CODE ``infobitssci != 0`` or a non-zero procstatus;
  FLAG_LARGE_ERROR ``scisigpix > scisigpix_max`` (25 DN); FLAG_BAD_SEEING
  ``sciinpseeing > seeing_max`` (5 pixels).
- ids: ``object_id = fcqfid`` (field*10000 + ccdid*100 + qid*10 + fid, fid 1/2/3 =
  g/r/i) and ``source_row_id = pid``, as text; ``ra``/``dec`` are the forced
  (requested) position from the file's header.

Error rescaling (setting ``rescale_errors``, off by default; the ZFPS guide,
"Validating photometric uncertainties"): per fcqfid, the errors are multiplied by
``sqrt(mean forcediffimchisq)`` over its clean epochs (all its kept epochs when
none is clean) when that mean is above 1; ``err_scale`` per row (1 when
off), ``service_notes.err_scale`` per fcqfid.

Baseline correction (``--baseline auto`` or ``--baseline-before MJD``), per fcqfid,
in microjansky (zpdiff varies inside an fcqfid, so a baseline in DN is wrong):

- baseline epochs are the clean epochs that are
  - ``--baseline-before MJD``: earlier than MJD;
  - ``--baseline auto``: more than ``baseline_pre_peak_days`` (100) days before the
    peak -- the epoch with the highest SNR among the clean epochs of all
    fcqfids -- and, when an fcqfid has fewer than ``baseline_min_pre_epochs``
    (25) of those, also those more than ``baseline_post_peak_days`` (500) days
    after it (the BTS rule);
- an fcqfid with fewer than ``baseline_min_epochs`` (10) baseline epochs is not
  corrected (the reason is recorded);
- ``C`` = the median ``flux_ujy`` of its baseline epochs (each converted with its
  own zpdiff), subtracted from ``flux_ujy`` of every row of the fcqfid
  (``ztf_baseline_offset_ujy``); its error ``sqrt(pi/2) sqrt(sum err**2) / n``.
- ``service_notes.baseline`` records the rule, the peak, and per fcqfid the pids
  and MJD range of the epochs used, ``C`` and its error in microjansky, the zpdiff
  range, and the baseline's reduced chi2 ``sum(((f - C) / err)**2) / (n - 1)``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, ClassVar

from stdq import photometry
from stdq.errors import NoData, QueryFailed, StdqError
from stdq.processors.base import DataProcessor

if TYPE_CHECKING:
    import pandas as pd

    from stdq.store import DataProduct

SENTINEL = -99999.0
DEFAULT_EXPTIME = 30.0
FILTERS = {"ZTF_g": ("ztfg", 1), "ZTF_r": ("ztfr", 2), "ZTF_i": ("ztfi", 3)}
MJD_TO_JD = 2400000.5
MAX_EXPTIME = 3600.0  # s; a longer (or missing) exptime counts as DEFAULT_EXPTIME
SURVEY = "ZTF"  # the row of photometry.SURVEY_YEARS (MJD 58000, before ZTF's first light)
ZPDIFF_RANGE = (15.0, 35.0)  # mag; ZTF difference images have 24..27
MAX_ID = 99999.0  # field, ccdid, qid: whole numbers 0..MAX_ID
TEXT_COLUMNS = ("filter", "pid", "procstatus")
PROCSTATUS_CODES: dict[int, str] = {
    0: "success",
    56: "bad or NaN pixels",
    57: 'no reference source within 5"',
    58: "reference PSF catalog missing",
    59: "suspect uncertainties",
    60: "PSF size not odd",
    61: "cutout off the image",
    62: "start JD reset to survey start",
    63: "no records",
    64: "catastrophic",
    65: "end JD before survey start",
    255: "database error",
}
CLEAN_CODES = frozenset({0, 57, 58, 62})  # say nothing about the flux: still a clean epoch
INT_COLUMNS = ("field", "ccdid", "qid", "rfid", "pid")  # must fit 64 bits (else QueryFailed)
NO_DATA_CODES = frozenset({63, 65})
FAILURE_CODES = frozenset({64, 255})
REQUEST_CODES = NO_DATA_CODES | FAILURE_CODES
_COLUMN_LINE = re.compile(r"s?index[\s,]+field\b")
_END_LINE = re.compile(r"^#\s*-+\s*END\s*-+\s*$")
_GENERATOR = re.compile(r"Generated by\s+(.+?)\s+on\s+(\S+)(?:\s+at\s+(\S+))?")
_HEADER_VALUE = {
    "ra": re.compile(r"R\.A\.\s*=\s*([-+0-9.eE]+)"),
    "dec": re.compile(r"Dec\.\s*=\s*([-+0-9.eE]+)"),
    "jdstart": re.compile(r"JD start\s*=\s*([-+0-9.eE]+)"),
    "jdend": re.compile(r"JD end\s*=\s*([-+0-9.eE]+)"),
}
EXTRAS = ("field", "ccdid", "qid", "rfid", "infobitssci", "scisigpix", "sciinpseeing", "zpdiff",
          "diffmaglim", "forcediffimflux", "forcediffimfluxunc", "forcediffimsnr", "forcediffimchisq",
          "forcediffimfluxap", "forcediffimfluxuncap", "forcediffimsnrap",
          "zpmaginpsci", "zpmaginpscirms", "ncalmatches", "clrcoeff", "exptime", "programid", "jd",
          "dnearestrefsrc", "nearestrefmag", "nearestrefmagunc", "refjdstart", "refjdend")


def procstatus_codes(text: str) -> tuple[int | None, ...]:
    """The codes of a procstatus value: ``"56,57"`` -> ``(56, 57)``; a token that is no code -> None."""
    codes: list[int | None] = []
    for token in str(text).split(","):
        token = token.strip()
        codes.append(int(token) if token.isdigit() and len(token) <= 4 else None)
    return tuple(codes)


def describe_procstatus(text: str) -> str:
    """``"57,61"`` -> ``'57,61 (57 no reference source within 5"; 61 cutout off the image)'``.

    Text that is not a comma list of codes is not repeated: "not a list of codes".
    """
    if None in procstatus_codes(text):
        return "not a list of codes"
    parts = []
    for token, code in zip(str(text).split(","), procstatus_codes(text), strict=True):
        meaning = PROCSTATUS_CODES.get(code, "unknown code") if code is not None else ""
        parts.append(f"{token.strip()} {meaning}")
    return f"{text} ({'; '.join(parts)})"


def procstatus_warns(text: str) -> bool:
    """True when a kept row with this procstatus gets FLAG_SURVEY_CODE: any non-zero code
    (an unknown one, or a token that is no code, too)."""
    return any(code != 0 for code in procstatus_codes(text))


def procstatus_clean(text: str) -> bool:
    """True when every code of this procstatus is in CLEAN_CODES (a clean epoch, if unflagged
    otherwise: see the module text)."""
    return all(code in CLEAN_CODES for code in procstatus_codes(text))


def request_error(procstatus: str, what: str, kind: str = "procstatus") -> StdqError | None:
    """The error a whole-request code means (63/65 NoData, 64/255 QueryFailed), or None.

    PROCSTATUS is a file's procstatus or the status listing's ``exitcode`` (KIND
    "exit code" then, for the message); WHAT names the request ("ZFPS request 15270").
    """
    codes = set(procstatus_codes(procstatus))
    if codes & FAILURE_CODES:
        return QueryFailed(f"ztf-fps: {what} failed: {kind} {describe_procstatus(procstatus)}")
    if codes & NO_DATA_CODES:
        return NoData(f"ztf-fps: {what} has no data: {kind} {describe_procstatus(procstatus)}")
    return None


def file_notes(data: bytes) -> dict[str, Any]:
    """What the file says about itself: its generator and version, and whether it has its END line."""
    notes: dict[str, Any] = {}
    lines = data.decode("utf-8", "replace").splitlines()
    for line in lines[:5]:
        match = _GENERATOR.search(line)
        if match:
            notes["generated_by"] = match.group(1).rstrip(",")
            notes["generated_on"] = " ".join(g for g in match.groups()[1:] if g)
            break
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    notes["end_line"] = bool(_END_LINE.match(last))
    return notes


def _header_number(text: str) -> float | None:
    """A header value that parses whole as a finite number, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_result(data: bytes) -> tuple[dict[str, float], pd.DataFrame]:
    """The header values (requested ra, dec, jdstart, jdend) and the rows, all as text.

    The column line is `` index, field, ...`` or `` sindex, field, ...`` (batch files),
    with or without a ``#`` in front; every other ``#`` line is a comment. A row
    with the wrong number of values is a ValueError, except a last row cut short in a
    file without its END line (a file cut short): it is dropped and counted in
    ``meta["cut_rows"]``.
    """
    import pandas as pd

    text = data.decode("utf-8", "replace")
    meta: dict[str, float] = {}
    columns: list[str] | None = None
    rows: list[list[str]] = []
    short: str | None = None  # the error of a row with the wrong number of values, if it was the last
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        body = stripped.lstrip("#").strip()
        if columns is None and _COLUMN_LINE.match(body):
            columns = [c for c in re.split(r"[,\s]+", body) if c]
            if len(set(columns)) != len(columns):
                raise ValueError(f"line {number}: the column line names a column twice")
            continue
        if stripped.startswith("#"):
            if short and _END_LINE.match(stripped):
                raise ValueError(short)
            for key, pattern in _HEADER_VALUE.items():
                match = pattern.search(body)
                value = _header_number(match.group(1)) if match else None
                if value is not None and key not in meta:
                    meta[key] = value
            continue
        if columns is None:
            raise ValueError(f"line {number}: a data row before the ' index, field, ...' column line")
        if short:
            raise ValueError(short)
        values = stripped.split()
        if len(values) != len(columns):
            short = f"line {number} has {len(values)} values, the column line {len(columns)}"
            continue
        rows.append(values)
    if columns is None:
        raise ValueError("no ' index, field, ...' (or ' sindex, field, ...') column line:"
                         " not a ZFPS light-curve file")
    if short and not rows:
        raise ValueError(short)
    if short:
        meta["cut_rows"] = 1.0
    needed = {"field", "ccdid", "qid", "filter", "pid", "jd", "zpdiff", "forcediffimflux",
              "forcediffimfluxunc", "procstatus"}
    missing = needed - set(columns)
    if missing:
        raise ValueError(f"the light-curve file has no column(s) {', '.join(sorted(missing))}")
    return meta, pd.DataFrame(rows, columns=columns, dtype=str)


def light_curve_raw(product: DataProduct):
    """The product's light-curve raw file (``..._lc.txt``)."""
    for raw in product.raw_files:
        if raw.name.endswith("_lc.txt"):
            return raw
    candidates = [r for r in product.raw_files if not r.name.endswith("_log.txt")]
    if len(candidates) == 1:
        return candidates[0]
    raise ValueError("the product has no ZFPS light-curve file (…_lc.txt)")


class ZtfForcedPhotometryProcessor(DataProcessor):
    """ZFPS forced photometry on difference images -> microjansky, limits, flags, baseline."""

    data_product_type = "ztf_fps_photometry"
    version = "3"  # 3: every non-zero procstatus flags bit 1; clean epochs; the common value rule
    settings_defaults: ClassVar[dict[str, Any]] = {
        "snr_threshold": 3.0,
        "limit_nsigma": 5.0,
        "scisigpix_max": 25.0,
        "seeing_max": 5.0,
        "baseline_pre_peak_days": 100.0,
        "baseline_post_peak_days": 500.0,
        "baseline_min_pre_epochs": 25,
        "baseline_min_epochs": 10,
        "rescale_errors": False,
    }
    settings_help: ClassVar[dict[str, str]] = {
        "snr_threshold": "snr >= this is a detection",
        "limit_nsigma": "sigma level of the upper limits of non-detections",
        "scisigpix_max": "scisigpix above this (DN) sets FLAG_LARGE_ERROR",
        "seeing_max": "sciinpseeing above this (pixels) sets FLAG_BAD_SEEING",
        "baseline_pre_peak_days": "--baseline auto: baseline epochs end this long before the peak",
        "baseline_post_peak_days": "--baseline auto: epochs this long after the peak join the baseline"
                                   " when there are too few before it",
        "baseline_min_pre_epochs": "--baseline auto: fewer pre-peak epochs than this adds post-peak ones",
        "baseline_min_epochs": "an fcqfid with fewer baseline epochs than this is not corrected",
        "rescale_errors": "multiply the errors of each fcqfid by sqrt(mean forcediffimchisq) when it is > 1",
    }

    def value(self, key: str) -> Any:
        """Setting KEY (or its default), as the default's type."""
        default = self.settings_defaults[key]
        value = self.setting(key, default)
        if isinstance(default, bool):
            return bool(value)
        return type(default)(value)

    def cuts(self) -> dict[str, Any]:
        return {
            **{key: self.value(key) for key in self.settings_defaults},
            "procstatus": "0 kept; a non-zero code kept with FLAG_SURVEY_CODE when the flux is usable,"
                          " left out when not; 63 64 65 255 left out; 57 58 62 still clean epochs"
                          " for the peak, baseline and error rescaling",
        }

    def process(self, product: DataProduct) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        data = light_curve_raw(product).path.read_bytes()
        meta, raw = parse_result(data)
        product.notes["file"] = file_notes(data)
        product.leave_out("a last row cut short (the file has no END line)", int(meta.get("cut_rows", 0)))
        for stale in ("baseline", "err_scale"):  # from an earlier processing with other settings
            product.notes.pop(stale, None)
        self._check_integers(raw)
        for name in ("forcediffimflux", "forcediffimfluxunc"):  # the service's "no measurement"
            text = raw[name].str.strip().str.lower()
            raw[f"_missing_{name}"] = text.isin(["null", ""])
        for name in raw.columns:
            if name.startswith("_missing_"):
                continue
            if name not in TEXT_COLUMNS:
                raw[name] = pd.to_numeric(raw[name], errors="coerce")  # "null" -> NaN
            else:
                raw[name] = raw[name].str.strip()
        raw = self._leave_out(product, raw)

        zpdiff = raw["zpdiff"].to_numpy(dtype="float64")
        factor = np.power(10.0, -0.4 * (zpdiff - photometry.ZP_AB_UJY))  # uJy per DN, epoch by epoch
        flux_dn = raw["forcediffimflux"].to_numpy(dtype="float64")
        unc_dn = raw["forcediffimfluxunc"].to_numpy(dtype="float64")
        fid = raw["filter"].map(lambda f: FILTERS[f][1]).to_numpy(dtype="int64")
        fcqfid = (raw["field"].to_numpy(dtype="int64") * 10000 + raw["ccdid"].to_numpy(dtype="int64") * 100
                  + raw["qid"].to_numpy(dtype="int64") * 10 + fid)
        exptime = raw["exptime"].to_numpy(dtype="float64") if "exptime" in raw else np.full(len(raw), np.nan)
        exptime = np.where(np.isfinite(exptime) & (exptime > 0) & (exptime <= MAX_EXPTIME), exptime,
                           DEFAULT_EXPTIME)
        mjd = raw["jd"].to_numpy(dtype="float64") - MJD_TO_JD + exptime / 2.0 / 86400.0
        with np.errstate(over="ignore", invalid="ignore"):
            flux_ujy, err_ujy = flux_dn * factor, unc_dn * factor
        # the common rule: non-finite, error <= 0, epoch not a number / before ZTF / in the future
        bad = np.zeros(len(raw), dtype=bool)
        for reason, mask in photometry.bad_values(flux_ujy, err_ujy, mjd, SURVEY):
            product.leave_out(reason, int(mask.sum()))
            bad |= mask
        if bad.any():
            keep = ~bad
            raw = raw[keep]
            zpdiff, factor, flux_dn, unc_dn = zpdiff[keep], factor[keep], flux_dn[keep], unc_dn[keep]
            fid, fcqfid, mjd = fid[keep], fcqfid[keep], mjd[keep]
            flux_ujy, err_ujy = flux_ujy[keep], err_ujy[keep]
        status = raw["procstatus"].fillna("null").astype(str).to_numpy()
        warned = np.array([procstatus_warns(v) for v in status], dtype=bool)
        quality = self._quality(raw, warned)
        # clean: no flag, but bit 1 from the codes 57, 58, 62 alone does not count
        clean = (((quality & ~photometry.FLAG_SURVEY_CODE) == 0) & ~self._infobits(raw)
                 & np.array([procstatus_clean(v) for v in status], dtype=bool))

        scale = np.ones(len(raw))
        rescale = product.params.get("rescale_errors")
        if bool(self.value("rescale_errors") if rescale is None else rescale) and len(raw):
            scale = self._err_scale(product, raw, fcqfid, clean)
        err_ujy = err_ujy * scale

        mode = str(product.params.get("baseline") or "none")
        offset = np.zeros(len(raw))
        applied = np.zeros(len(raw), dtype=bool)
        if mode != "none" and len(raw):
            offset, applied = self._baseline(product, raw, mode, mjd, fcqfid, flux_ujy, err_ujy, zpdiff,
                                             clean)
        ra, dec = float(product.target["ra"]), float(product.target["dec"])
        if 0 <= meta.get("ra", -1) < 360 and -90 <= meta.get("dec", -91) <= 90:
            ra, dec = meta["ra"], meta["dec"]
        table = pd.DataFrame(
            {
                "mjd": mjd,
                "survey": "ZTF",
                "telescope": "P48",
                "instrument": "ZTF",
                "filter": raw["filter"].to_numpy(),
                "band": raw["filter"].map(lambda f: FILTERS[f][0]).to_numpy(),
                "flux_ujy": flux_ujy - offset,
                "flux_err_ujy": err_ujy,
                "image_depth": raw["diffmaglim"].to_numpy(dtype="float64") if "diffmaglim" in raw else np.nan,
                "flux_kind": "difference",
                "quality_flag": quality,
                "err_scale": scale,
                "ra": ra,
                "dec": dec,
                "sep_arcsec": float(photometry.separation_arcsec(
                    float(product.target["ra"]), float(product.target["dec"]), ra, dec)),
                "object_id": [str(v) for v in fcqfid],
                "source_row_id": raw["pid"].to_numpy(),
                "ztf_fcqfid": fcqfid,
                "ztf_procstatus": raw["procstatus"].to_numpy(),
            },
            index=raw.index,
        )
        for name in EXTRAS:
            if name in raw.columns:
                table[f"ztf_{name}"] = raw[name].to_numpy()
        for name in ("field", "ccdid", "qid", "rfid", "infobitssci", "programid", "ncalmatches"):
            if f"ztf_{name}" in table:
                values = table[f"ztf_{name}"].to_numpy(dtype="float64")
                whole = np.isfinite(values) & (np.abs(values) < 2.0**53) & (values == np.round(values))
                table[f"ztf_{name}"] = pd.array(np.where(whole, values, 0).astype("int64"), dtype="Int64")
                table.loc[~whole, f"ztf_{name}"] = pd.NA  # not a whole number: no value
        if mode != "none":
            table["ztf_baseline_offset_ujy"] = np.where(applied, offset, np.nan)
        photometry.fill_detections(
            table,
            snr_threshold=float(self.value("snr_threshold")),
            limit_nsigma=float(self.value("limit_nsigma")),
        )
        product.notes["time"] = "mjd = jd - 2400000.5 + exptime/2 (mid-exposure, UTC)"
        product.notes["requested_position"] = {k: meta[k] for k in ("ra", "dec", "jdstart", "jdend") if k in meta}
        return table.reset_index(drop=True)

    # -- steps ---------------------------------------------------------------------------------
    @staticmethod
    def _check_integers(raw: pd.DataFrame) -> None:
        """QueryFailed when an integer column holds a whole number that does not fit 64 bits."""
        for name in INT_COLUMNS:
            if name not in raw.columns:
                continue
            texts = raw[name].str.strip()
            whole = texts[texts.str.fullmatch(r"[+-]?[0-9]+")]
            try:
                photometry.check_int64(whole, f"ztf-fps: the light-curve file's {name}")
            except QueryFailed as exc:
                raise QueryFailed(f"{exc.message} (an integer column: the file is not usable)") from None
            if name == "pid":  # the row's id: digits only
                odd = texts[~texts.str.fullmatch(r"[0-9]+")]
                if len(odd):
                    shown = str(odd.iloc[0])[:40]
                    raise QueryFailed(f"ztf-fps: the light-curve file's pid {shown!r} is not a"
                                      " 64-bit integer (an id: the file is not usable)")

    @staticmethod
    def _leave_out(product: DataProduct, raw: pd.DataFrame) -> pd.DataFrame:
        """RAW without the rows the ZFPS rules leave out (counted in PRODUCT); the common
        rule on values follows in process()."""
        import numpy as np

        status = raw["procstatus"].fillna("null").astype(str).to_numpy()
        values = sorted(set(status))
        request = {v: bool(set(procstatus_codes(v)) & REQUEST_CODES) for v in values}

        def count(reason: str, bad) -> None:
            product.leave_out(reason, int(bad.sum()))

        # 1. whole-request codes: the row is no measurement
        seen_request = [v for v in values if request[v]]
        bad = np.array([request[v] for v in status], dtype=bool)
        for value in seen_request:
            count(f"rows with procstatus {describe_procstatus(value)}", status == value)
        raw, status = raw[~bad], status[~bad]

        # 2. no measurement (null or -99999): by procstatus (the warning says why), or by column
        def missing_value(column: str):
            numbers = raw[column].to_numpy(dtype="float64")
            return raw[f"_missing_{column}"].to_numpy(dtype=bool) | (numbers == SENTINEL)

        no_flux, no_unc = missing_value("forcediffimflux"), missing_value("forcediffimfluxunc")
        missing = no_flux | no_unc
        ok_status = status == "0"
        count("rows with null or -99999 forcediffimflux", missing & ok_status & no_flux)
        count("rows with null or -99999 forcediffimfluxunc", missing & ok_status & ~no_flux)
        for value in sorted(set(status[missing & ~ok_status])):
            count(f"rows without a usable flux, procstatus {describe_procstatus(value)}",
                  missing & (status == value))
        raw, status = raw[~missing], status[~missing]

        # 3. rows that cannot be placed in flux, band or field
        def number(column: str):
            return raw[column].to_numpy(dtype="float64")

        def outside(column: str, low: float, high: float):
            values = number(column)
            return ~(np.isfinite(values) & (values >= low) & (values <= high))

        def bad_ids():
            values = np.stack([number(c) for c in ("field", "ccdid", "qid")])
            return ~(np.isfinite(values) & (values >= 0) & (values <= MAX_ID)
                     & (values == np.round(values))).all(axis=0)

        checks = [
            ("rows without zpdiff", lambda: ~np.isfinite(number("zpdiff"))),
            (f"rows with zpdiff outside {ZPDIFF_RANGE[0]:g}..{ZPDIFF_RANGE[1]:g}",
             lambda: outside("zpdiff", *ZPDIFF_RANGE)),
            ("rows with an unknown filter", lambda: ~raw["filter"].isin(list(FILTERS)).to_numpy()),
            ("rows without a whole field, ccdid or qid", bad_ids),
        ]
        for reason, test in checks:
            bad = test()
            count(reason, bad)
            raw, status = raw[~bad], status[~bad]
        if not len(raw) and seen_request:
            worst = sorted(seen_request, key=lambda v: not set(procstatus_codes(v)) & FAILURE_CODES)[0]
            req_id = str((product.notes.get("zfps") or {}).get("request_id") or "").strip()
            error = request_error(worst, f"ZFPS request {req_id}" if req_id else "the ZFPS request")
            if error is not None:
                raise error
        return raw

    @staticmethod
    def _infobits(raw: pd.DataFrame) -> Any:
        """Whether each row's ``infobitssci`` is non-zero (missing: zero)."""
        import numpy as np

        if "infobitssci" not in raw:
            return np.zeros(len(raw), dtype=bool)
        return np.nan_to_num(raw["infobitssci"].to_numpy(dtype="float64"), nan=0.0) != 0

    def _quality(self, raw: pd.DataFrame, warned) -> Any:
        import numpy as np

        n = len(raw)

        def column(name: str):
            return raw[name].to_numpy(dtype="float64") if name in raw else np.full(n, np.nan)

        flags = np.zeros(n, dtype="int64")
        flags |= np.where(self._infobits(raw) | warned, photometry.FLAG_SURVEY_CODE, 0)
        flags |= np.where(column("scisigpix") > float(self.value("scisigpix_max")),
                          photometry.FLAG_LARGE_ERROR, 0)
        flags |= np.where(column("sciinpseeing") > float(self.value("seeing_max")),
                          photometry.FLAG_BAD_SEEING, 0)
        return flags

    @staticmethod
    def _err_scale(product: DataProduct, raw: pd.DataFrame, fcqfid, clean) -> Any:
        """Per-fcqfid ``sqrt(mean forcediffimchisq)`` when above 1 (the ZFPS guide); notes to product.json."""
        import numpy as np

        scale = np.ones(len(raw))
        notes: dict[str, Any] = {
            "rule": "per fcqfid: errors times sqrt(mean forcediffimchisq) of its clean epochs"
                    " (all its epochs when none is clean), when that mean is above 1",
        }
        per: dict[str, Any] = {}
        if "forcediffimchisq" not in raw:
            notes["reason"] = "the file has no forcediffimchisq column; not rescaled"
            product.notes["err_scale"] = notes
            return scale
        chisq = raw["forcediffimchisq"].to_numpy(dtype="float64")
        usable = np.isfinite(chisq) & (chisq >= 0)
        for value in sorted(set(int(v) for v in fcqfid)):
            rows = fcqfid == value
            sel = rows & usable & clean
            if not sel.any():
                sel = rows & usable
            n = int(sel.sum())
            if not n:
                per[str(value)] = {"n_epochs": 0, "err_scale": 1.0, "reason": "no finite forcediffimchisq"}
                continue
            mean = float(np.mean(chisq[sel]))
            s = math.sqrt(mean) if mean > 1.0 else 1.0
            scale[rows] = s
            per[str(value)] = {"n_epochs": n, "mean_forcediffimchisq": mean, "err_scale": s}
        notes["fcqfids"] = per
        product.notes["err_scale"] = notes
        return scale

    def _baseline(self, product: DataProduct, raw: pd.DataFrame, mode: str, mjd, fcqfid, flux_ujy,
                  err_ujy, zpdiff, clean):
        """Per-fcqfid offsets C (microjansky) and where they apply; the notes go to product.json."""
        import numpy as np

        min_epochs = int(self.value("baseline_min_epochs"))
        offset = np.zeros(len(raw))
        applied = np.zeros(len(raw), dtype=bool)
        notes: dict[str, Any] = {"mode": mode, "unit": "uJy"}
        if mode == "before":
            cutoff = float(product.params["baseline_before"])
            notes["rule"] = f"clean epochs before MJD {cutoff:g}"
            in_window = lambda sel: sel & (mjd < cutoff)  # noqa: E731
        else:
            pre = float(self.value("baseline_pre_peak_days"))
            post = float(self.value("baseline_post_peak_days"))
            min_pre = int(self.value("baseline_min_pre_epochs"))
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = np.where(err_ujy > 0, flux_ujy / err_ujy, -np.inf)
            candidates = np.where(clean, snr, -np.inf)
            peak_index = int(np.argmax(candidates)) if np.isfinite(candidates).any() else int(np.argmax(snr))
            peak = float(mjd[peak_index])
            notes["peak_mjd"] = peak
            notes["rule"] = (
                f"clean epochs more than {pre:g} d before the peak (MJD {peak:.5f}, the highest-SNR"
                f" clean epoch); with fewer than {min_pre} of those, also those more than {post:g} d"
                " after it (clean: no quality flag but bit 1 from procstatus 57, 58, 62)"
            )

            def in_window(sel):
                before = sel & (mjd < peak - pre)
                if int(before.sum()) >= min_pre:
                    return before
                return before | (sel & (mjd > peak + post))

        per: dict[str, Any] = {}
        pids = raw["pid"].to_numpy()
        for value in sorted(set(int(v) for v in fcqfid)):
            rows = fcqfid == value
            base = in_window(rows & clean)
            n = int(base.sum())
            entry: dict[str, Any] = {"n_epochs": n}
            if n < min_epochs:
                entry.update(applied=False,
                             reason=f"{n} baseline epoch{'s' if n != 1 else ''}, fewer than "
                                    f"baseline_min_epochs ({min_epochs}); not corrected")
                per[str(value)] = entry
                continue
            c = float(np.median(flux_ujy[base]))
            c_err = math.sqrt(math.pi / 2) * float(np.sqrt(np.sum(err_ujy[base] ** 2))) / n
            residual = (flux_ujy[base] - c) / err_ujy[base]
            offset[rows] = c
            applied[rows] = True
            entry.update(
                applied=True,
                offset_ujy=c,
                offset_err_ujy=c_err,
                chi2_nu=float(np.sum(residual**2) / (n - 1)),
                zpdiff_min=float(zpdiff[base].min()),
                zpdiff_max=float(zpdiff[base].max()),
                mjd_min=float(mjd[base].min()),
                mjd_max=float(mjd[base].max()),
                epochs=[str(p) for p in pids[base]],
            )
            per[str(value)] = entry
        notes["fcqfids"] = per
        product.notes["baseline"] = notes
        return offset, applied
