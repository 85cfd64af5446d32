"""ZFPS light-curve file -> normalized difference-flux photometry (photometry.md 3.2, 4).

The rules of Masci et al. (2023), the ZFPS guide:

- rows left out and counted, by the first reason that applies: ``forcediffimflux``
  null or -99999; ``forcediffimfluxunc`` null or -99999; no ``zpdiff`` or ``jd``;
  an unknown ``filter``; ``procstatus`` other than "0" (compared as text: it can
  hold several comma-separated codes; one reason per code).
- flux: ``flux_ujy = (forcediffimflux - C) * 10**(-0.4 (zpdiff - 23.9))`` and
  the same factor for the error, with ``C = 0`` unless a baseline correction is
  asked for; ``flux_kind = difference``.
- time: ``mjd = jd - 2400000.5 + exptime/2/86400`` (``jd`` is the start of the
  exposure, UTC; 30 s when ``exptime`` is missing).
- detections: ``snr >= snr_threshold`` (default 3); others get an upper limit
  ``23.9 - 2.5 log10(limit_nsigma * flux_err_ujy)`` at ``limit_nsigma`` (default
  5) sigma; ``image_depth = diffmaglim``.
- quality_flag: FLAG_SURVEY_CODE ``infobitssci != 0``; FLAG_LARGE_ERROR
  ``scisigpix > scisigpix_max`` (25 DN); FLAG_BAD_SEEING ``sciinpseeing >
  seeing_max`` (5 pixels); FLAG_ZERO_ERROR for a non-positive error.
- ids: ``object_id = fcqfid`` (field*10000 + ccdid*100 + qid*10 + fid, fid 1/2/3 =
  g/r/i) and ``source_row_id = pid``, as text; ``ra``/``dec`` are the forced
  (requested) position from the file's header.

Baseline correction (``--baseline auto`` or ``--baseline-before MJD``), per fcqfid:

- baseline epochs are the kept rows without a quality flag that are
  - ``--baseline-before MJD``: earlier than MJD;
  - ``--baseline auto``: more than ``baseline_pre_peak_days`` (100) days before the
    peak -- the epoch with the highest SNR among the unflagged rows of all
    fcqfids -- and, when an fcqfid has fewer than ``baseline_min_pre_epochs``
    (25) of those, also those more than ``baseline_post_peak_days`` (500) days
    after it (the BTS rule);
- an fcqfid with fewer than ``baseline_min_epochs`` (10) baseline epochs is not
  corrected (the reason is recorded);
- ``C`` = the median ``forcediffimflux`` of its baseline epochs, subtracted from
  every row of the fcqfid; with ``baseline_rescale_errors`` the errors of the
  fcqfid are multiplied by ``sqrt(chi2_nu)`` when the baseline's reduced chi2
  ``sum(((f - C) / unc)**2) / (n - 1)`` is above 1 (``err_scale`` per row).
- ``service_notes.baseline`` records the rule, the peak, and per fcqfid the pids
  and MJD range of the epochs used, ``C`` in DN and in microjansky (at the
  fcqfid's median zpdiff), chi2_nu and err_scale.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from stdq import photometry
from stdq.processors.base import DataProcessor

if TYPE_CHECKING:
    import pandas as pd

    from stdq.store import DataProduct

SENTINEL = -99999.0
DEFAULT_EXPTIME = 30.0
FILTERS = {"ZTF_g": ("ztfg", 1), "ZTF_r": ("ztfr", 2), "ZTF_i": ("ztfi", 3)}
MJD_TO_JD = 2400000.5
TEXT_COLUMNS = ("filter", "pid", "procstatus")
_HEADER_VALUE = {
    "ra": re.compile(r"R\.A\.\s*=\s*([-+0-9.eE]+)"),
    "dec": re.compile(r"Dec\.\s*=\s*([-+0-9.eE]+)"),
    "jdstart": re.compile(r"JD start\s*=\s*([-+0-9.eE]+)"),
    "jdend": re.compile(r"JD end\s*=\s*([-+0-9.eE]+)"),
}
EXTRAS = ("field", "ccdid", "qid", "rfid", "infobitssci", "scisigpix", "sciinpseeing", "zpdiff",
          "diffmaglim", "forcediffimflux", "forcediffimfluxunc", "forcediffimsnr", "forcediffimchisq",
          "zpmaginpsci", "zpmaginpscirms", "ncalmatches", "clrcoeff", "exptime", "programid", "jd",
          "dnearestrefsrc", "nearestrefmag", "nearestrefmagunc", "refjdstart", "refjdend")


def parse_result(data: bytes) -> tuple[dict[str, float], pd.DataFrame]:
    """The header values (requested ra, dec, jdstart, jdend) and the rows, all as text."""
    import pandas as pd

    text = data.decode("utf-8", "replace")
    meta: dict[str, float] = {}
    columns: list[str] | None = None
    rows: list[list[str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        body = stripped.lstrip("#").strip()
        if columns is None and re.match(r"index[\s,]+field\b", body):
            columns = [c for c in re.split(r"[,\s]+", body) if c]
            continue
        if stripped.startswith("#"):
            for key, pattern in _HEADER_VALUE.items():
                match = pattern.search(body)
                if match and key not in meta:
                    meta[key] = float(match.group(1))
            continue
        if columns is None:
            raise ValueError(f"line {number}: a data row before the '# index, field, ...' column line")
        values = stripped.split()
        if len(values) != len(columns):
            raise ValueError(f"line {number} has {len(values)} values, the column line {len(columns)}")
        rows.append(values)
    if columns is None:
        raise ValueError("no '# index, field, ...' column line: not a ZFPS light-curve file")
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
    version = "1"

    def cuts(self) -> dict[str, Any]:
        return {
            "snr_threshold": float(self.setting("snr_threshold", 3.0)),
            "limit_nsigma": float(self.setting("limit_nsigma", 5.0)),
            "scisigpix_max": float(self.setting("scisigpix_max", 25.0)),
            "seeing_max": float(self.setting("seeing_max", 5.0)),
            "procstatus": "only '0' kept",
            "baseline_pre_peak_days": float(self.setting("baseline_pre_peak_days", 100.0)),
            "baseline_post_peak_days": float(self.setting("baseline_post_peak_days", 500.0)),
            "baseline_min_pre_epochs": int(self.setting("baseline_min_pre_epochs", 25)),
            "baseline_min_epochs": int(self.setting("baseline_min_epochs", 10)),
            "baseline_rescale_errors": bool(self.setting("baseline_rescale_errors", True)),
        }

    def process(self, product: DataProduct) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        meta, raw = parse_result(light_curve_raw(product).path.read_bytes())
        for name in raw.columns:
            if name not in TEXT_COLUMNS:
                raw[name] = pd.to_numeric(raw[name], errors="coerce")  # "null" -> NaN
            else:
                raw[name] = raw[name].str.strip()
        raw = self._leave_out(product, raw)

        zpdiff = raw["zpdiff"].to_numpy(dtype="float64")
        factor = np.power(10.0, -0.4 * (zpdiff - photometry.ZP_AB_UJY))
        flux_dn = raw["forcediffimflux"].to_numpy(dtype="float64")
        unc_dn = raw["forcediffimfluxunc"].to_numpy(dtype="float64")
        fid = raw["filter"].map(lambda f: FILTERS[f][1]).to_numpy(dtype="int64")
        fcqfid = (raw["field"].to_numpy(dtype="int64") * 10000 + raw["ccdid"].to_numpy(dtype="int64") * 100
                  + raw["qid"].to_numpy(dtype="int64") * 10 + fid)
        exptime = raw["exptime"].to_numpy(dtype="float64") if "exptime" in raw else np.full(len(raw), np.nan)
        exptime = np.where(np.isfinite(exptime) & (exptime > 0), exptime, DEFAULT_EXPTIME)
        mjd = raw["jd"].to_numpy(dtype="float64") - MJD_TO_JD + exptime / 2.0 / 86400.0
        quality = self._quality(raw, unc_dn)

        mode = str(product.params.get("baseline") or "none")
        offset = np.zeros(len(raw))
        scale = np.ones(len(raw))
        if mode != "none" and len(raw):
            offset, scale = self._baseline(product, raw, mode, mjd, fcqfid, flux_dn, unc_dn, zpdiff,
                                           quality)
        ra = float(meta.get("ra", product.target["ra"]))
        dec = float(meta.get("dec", product.target["dec"]))
        table = pd.DataFrame(
            {
                "mjd": mjd,
                "survey": "ZTF",
                "telescope": "P48",
                "instrument": "ZTF",
                "filter": raw["filter"].to_numpy(),
                "band": raw["filter"].map(lambda f: FILTERS[f][0]).to_numpy(),
                "flux_ujy": (flux_dn - offset) * factor,
                "flux_err_ujy": unc_dn * scale * factor,
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
                table[f"ztf_{name}"] = pd.array(table[f"ztf_{name}"].round(), dtype="Int64")
        if mode != "none":
            table["ztf_baseline_offset_dn"] = np.where(offset != 0, offset, np.nan)
        photometry.fill_detections(
            table,
            snr_threshold=float(self.setting("snr_threshold", 3.0)),
            limit_nsigma=float(self.setting("limit_nsigma", 5.0)),
        )
        product.notes["time"] = "mjd = jd - 2400000.5 + exptime/2 (mid-exposure, UTC)"
        product.notes["requested_position"] = {k: meta[k] for k in ("ra", "dec", "jdstart", "jdend") if k in meta}
        return table.reset_index(drop=True)

    # -- steps ---------------------------------------------------------------------------------
    @staticmethod
    def _leave_out(product: DataProduct, raw: pd.DataFrame) -> pd.DataFrame:
        import numpy as np

        def unusable(column: str):
            values = raw[column].to_numpy(dtype="float64")
            return ~np.isfinite(values) | (values == SENTINEL)

        checks = [
            ("rows with null or -99999 forcediffimflux", lambda: unusable("forcediffimflux")),
            ("rows with null or -99999 forcediffimfluxunc", lambda: unusable("forcediffimfluxunc")),
            ("rows without zpdiff", lambda: ~np.isfinite(raw["zpdiff"].to_numpy(dtype="float64"))),
            ("rows without jd", lambda: ~np.isfinite(raw["jd"].to_numpy(dtype="float64"))),
            ("rows with an unknown filter", lambda: ~raw["filter"].isin(list(FILTERS)).to_numpy()),
        ]
        for reason, test in checks:
            bad = test()
            product.leave_out(reason, int(bad.sum()))
            raw = raw[~bad]
        status = raw["procstatus"].fillna("").astype(str)
        for code in sorted(set(status[status != "0"])):
            product.leave_out(f"rows with procstatus {code or '(empty)'}", int((status == code).sum()))
        return raw[status == "0"]

    def _quality(self, raw: pd.DataFrame, unc_dn) -> Any:
        import numpy as np

        n = len(raw)

        def column(name: str):
            return raw[name].to_numpy(dtype="float64") if name in raw else np.full(n, np.nan)

        flags = np.zeros(n, dtype="int64")
        infobits = np.nan_to_num(column("infobitssci"), nan=0.0)
        flags |= np.where(infobits != 0, photometry.FLAG_SURVEY_CODE, 0)
        flags |= np.where(column("scisigpix") > float(self.setting("scisigpix_max", 25.0)),
                          photometry.FLAG_LARGE_ERROR, 0)
        flags |= np.where(column("sciinpseeing") > float(self.setting("seeing_max", 5.0)),
                          photometry.FLAG_BAD_SEEING, 0)
        flags |= np.where(~(unc_dn > 0), photometry.FLAG_ZERO_ERROR, 0)
        return flags

    def _baseline(self, product: DataProduct, raw: pd.DataFrame, mode: str, mjd, fcqfid, flux_dn,
                  unc_dn, zpdiff, quality):
        """Per-fcqfid offsets C (DN) and error scales; the notes go to product.json."""
        import numpy as np

        min_epochs = int(self.setting("baseline_min_epochs", 10))
        rescale = bool(self.setting("baseline_rescale_errors", True))
        offset = np.zeros(len(raw))
        scale = np.ones(len(raw))
        clean = quality == 0
        notes: dict[str, Any] = {"mode": mode}
        if mode == "before":
            cutoff = float(product.params["baseline_before"])
            notes["rule"] = f"unflagged epochs before MJD {cutoff:g}"
            in_window = lambda sel: sel & (mjd < cutoff)  # noqa: E731
        else:
            pre = float(self.setting("baseline_pre_peak_days", 100.0))
            post = float(self.setting("baseline_post_peak_days", 500.0))
            min_pre = int(self.setting("baseline_min_pre_epochs", 25))
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = np.where(unc_dn > 0, flux_dn / unc_dn, -np.inf)
            candidates = np.where(clean, snr, -np.inf)
            peak_index = int(np.argmax(candidates)) if np.isfinite(candidates).any() else int(np.argmax(snr))
            peak = float(mjd[peak_index])
            notes["peak_mjd"] = peak
            notes["rule"] = (
                f"unflagged epochs more than {pre:g} d before the peak (MJD {peak:.5f}, the highest-SNR"
                f" epoch); with fewer than {min_pre} of those, also those more than {post:g} d after it"
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
            c = float(np.median(flux_dn[base]))
            residual = (flux_dn[base] - c) / unc_dn[base]
            chi2_nu = float(np.sum(residual**2) / (n - 1))
            err_scale = float(np.sqrt(chi2_nu)) if rescale and chi2_nu > 1.0 else 1.0
            offset[rows] = c
            scale[rows] = err_scale
            median_zp = float(np.median(zpdiff[rows]))
            entry.update(
                applied=True,
                offset_dn=c,
                offset_ujy=c * 10 ** (-0.4 * (median_zp - photometry.ZP_AB_UJY)),
                offset_ujy_zpdiff=median_zp,
                chi2_nu=chi2_nu,
                err_scale=err_scale,
                mjd_min=float(mjd[base].min()),
                mjd_max=float(mjd[base].max()),
                epochs=[str(p) for p in pids[base]],
            )
            per[str(value)] = entry
        notes["fcqfids"] = per
        product.notes["baseline"] = notes
        return offset, scale
