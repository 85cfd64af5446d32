"""The Gaia Science Alerts processor (subclass 3 of 3): ``lightcurve.csv`` -> normalized photometry.

The light curve (see README.md for the sources) is the alert's name on the first
line, a header line ``#Date,JD(TCB),averagemag`` (older files: ``#Date,JD,averagemag.``,
and a space-separated variant is seen in clients), then one row per epoch::

    2023-05-20 02:49:08,2460084.61745,13.52

``averagemag`` is a Gaia G magnitude (Vega system) or a word: ``untrusted`` (the
alert pipeline's own flag) or ``null``. Those rows have no usable flux: they are
left out and counted in product.json. There is no magnitude error in the file.

Conversions (all settings keys, shown by ``stdq services show gaia-alerts``):

- time: JD(TCB) -> UTC MJD by a change of time scale (astropy); the raw JD is
  kept in ``gaia_jd_tcb``. Guess: if the JD is barycentric (as the epoch
  photometry of Gaia DR3 is), the light-travel time (up to +-8.3 min) is not
  removed.
- magnitude: G_AB = G_Vega + ``ab_offset`` (default 0.1136 = 25.8010 - 25.6874,
  the G zero points of Gaia EDR3, Riello et al. 2021); the alert's own number is
  kept in ``gaia_g_vega``. flux_ujy = 10 ** (-0.4 (G_AB - 23.9)).
- error: with ``error_model = "hodgkin2021"`` the magnitude error is the
  polynomial SkyPortal uses for these light curves, evaluated at G clipped to
  13..21 (the range the polynomial is said to hold for); it is an estimate from
  the magnitude, not a measurement. ``"none"`` leaves errors (and snr) empty.

Every kept row is a detection (``detected`` true, no limits): the alert light
curve lists measured transits only. ``flux_kind`` is ``total``.

Then stdq's common rule (``photometry.drop_bad_values``, survey ``Gaia``): rows
with a non-finite flux or error (a magnitude such as ``1e999``), an error <= 0, a
JD that is not a finite number, before MJD 56800 or in the future are left out
and counted. With ``error_model = "none"`` the empty error is allowed. A line
that is not ``date,jd,mag`` or a JD that is not a number at all fails the
product (QueryFailed, exit 1).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from stdq.errors import ConfigError, QueryFailed
from stdq.processors.base import DataProcessor

if TYPE_CHECKING:
    import pandas as pd

    from stdq.store import DataProduct

ERROR_MODELS = ("hodgkin2021", "none")
HODGKIN_RANGE = (13.0, 21.0)
NULL_WORDS = frozenset({"null", "nan", "none", ""})
UNTRUSTED = "untrusted"
REASON_UNTRUSTED = "magnitude 'untrusted' (the alert pipeline's flag)"
REASON_NULL = "magnitude 'null' (no measurement)"
REASON_TIME = "outside the requested time range"


def hodgkin2021_error(g_vega: float) -> float:
    """The estimated G error (mag) of one alert epoch, at G clipped to 13..21.

    The polynomial of SkyPortal's Gaia-alerts ingest
    (skyportal/handlers/api/catalog_services.py), attributed to Hodgkin et al.
    2021 (arXiv:2106.00479) by other public clients; not checked against the paper.
    """
    m = min(max(g_vega, HODGKIN_RANGE[0]), HODGKIN_RANGE[1])
    return 3.43779 - (m / 1.13759) + (m / 3.44123) ** 2 - (m / 6.51996) ** 3 + (m / 11.45922) ** 4


def parse_lightcurve(text: str) -> list[tuple[str, str, str]]:
    """The (date, jd, averagemag) rows of a ``lightcurve.csv`` answer, as text.

    ValueError when the text is not such a light curve (no header line, a line
    that is not three fields, an unexpected header).
    """
    rows: list[tuple[str, str, str]] = []
    header: str | None = None
    seen_first = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        first, seen_first = not seen_first, True
        if line.startswith("#"):
            if header is None:
                header = line
            continue
        fields = [f.strip() for f in line.split(",")]
        if first and len(fields) == 1:
            continue  # the alert's name
        if len(fields) != 3:
            raise ValueError(
                f"line {number} of the light curve is not 'date,jd,mag': {line[:60]!r}"
            )
        rows.append((fields[0], fields[1], fields[2]))
    if header is None:
        raise ValueError("no '#Date,JD,averagemag' header: not a Gaia alert light curve")
    columns = [c.rstrip(".") for c in re.split(r"[,\s]+", header.lstrip("#").strip()) if c]
    if (
        len(columns) != 3
        or columns[0].lower() != "date"
        or not columns[1].upper().startswith("JD")
        or columns[2].lower() != "averagemag"
    ):
        raise ValueError(f"unexpected light-curve header {header[:80]!r}")
    return rows


class GaiaAlertsProcessor(DataProcessor):
    """Gaia alert G light curves -> stdq's normalized photometry (flux in uJy, AB)."""

    data_product_type = "gaia_alerts_photometry"
    version = "2"  # 2: the common value rule (drop_bad_values); error <= 0 left out, not flagged
    # its settings keys (in [services.gaia-alerts]), with their defaults and meaning
    settings_defaults: ClassVar[dict[str, Any]] = {
        "ab_offset": 0.1136,
        "error_model": "hodgkin2021",
    }
    settings_help: ClassVar[dict[str, str]] = {
        "ab_offset": "G_AB - G_Vega in mag, added to the alert magnitudes (EDR3 zero points "
        "25.8010 - 25.6874, Riello et al. 2021)",
        "error_model": "'hodgkin2021' (an estimated error from the magnitude, as SkyPortal does) "
        "or 'none' (errors left empty: the light curves carry none)",
    }

    def _error_model(self) -> str:
        model = str(self.setting("error_model"))
        if model not in ERROR_MODELS:
            raise ConfigError(
                f"gaia-alerts: error_model must be one of {', '.join(ERROR_MODELS)}, not {model!r}"
            )
        return model

    def requires_errors(self) -> bool:
        return self._error_model() != "none"

    def cuts(self) -> dict[str, Any]:
        return {
            "ab_offset": float(self.setting("ab_offset")),
            "error_model": self._error_model(),
        }

    def process(self, product: DataProduct) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        from stdq import photometry

        cuts = self.cuts()
        alert = dict(product.notes.get("alert") or {})
        name = str(alert.get("name") or product.target.get("name") or "")
        text = product.raw("lightcurve.csv").path.read_bytes().decode("utf-8", "replace")

        kept: list[tuple[str, float, float]] = []  # (jd text, jd, G Vega)
        try:
            rows = parse_lightcurve(text)
        except ValueError as exc:
            raise QueryFailed(f"gaia-alerts: {exc}") from None
        for _date, jd_text, mag_text in rows:
            try:
                jd = float(jd_text)  # nan, inf, 1e999: left out below ("epoch not a number")
            except ValueError:
                raise QueryFailed(f"gaia-alerts: JD {jd_text[:40]!r} is not a number") from None
            word = mag_text.strip().lower()
            if word == UNTRUSTED:
                product.leave_out(REASON_UNTRUSTED)
                continue
            if word in NULL_WORDS:
                product.leave_out(REASON_NULL)
                continue
            try:
                g_vega = float(mag_text)
            except ValueError:
                product.leave_out(f"unreadable magnitude {mag_text[:20]!r}")
                continue
            kept.append((jd_text, jd, g_vega))

        jd = np.array([k[1] for k in kept], dtype="float64")
        mjd = _tcb_jd_to_utc_mjd(jd)
        lo, hi = product.params.get("mjd_min"), product.params.get("mjd_max")
        inside = np.ones(len(kept), dtype=bool)
        if lo is not None:
            inside &= mjd >= float(lo)
        if hi is not None:
            inside &= mjd <= float(hi)
        product.leave_out(REASON_TIME, int((~inside).sum()))
        kept = [k for k, ok in zip(kept, inside, strict=True) if ok]
        mjd = mjd[inside]

        g_vega = np.array([k[2] for k in kept], dtype="float64")
        g_ab = g_vega + cuts["ab_offset"]
        with np.errstate(over="ignore", invalid="ignore"):
            flux = np.where(np.isfinite(g_ab), photometry.flux_from_magnitude(g_ab), np.nan)
            if cuts["error_model"] == "hodgkin2021":
                mag_err = np.array(
                    [hodgkin2021_error(g) if math.isfinite(g) else math.nan for g in g_vega],
                    dtype="float64",
                )
            else:
                mag_err = np.full(len(kept), np.nan)
            flux_err = flux * mag_err / photometry.PSF_MAG_ERR
        n = len(kept)
        table = pd.DataFrame(
            {
                "mjd": mjd,
                "survey": ["Gaia"] * n,
                "telescope": ["Gaia"] * n,
                "instrument": ["Gaia-AF"] * n,
                "filter": ["G"] * n,
                "band": ["gaia::g"] * n,
                "flux_ujy": flux,
                "flux_err_ujy": flux_err,
                "detected": np.ones(n, dtype=bool),
                "magnitude": g_ab,
                "magnitude_error": mag_err,
                "flux_kind": ["total"] * n,
                "ra": np.full(n, float(alert.get("ra", np.nan))),
                "dec": np.full(n, float(alert.get("dec", np.nan))),
                "sep_arcsec": np.full(n, float(alert.get("sep_arcsec", np.nan))),
                "object_id": [name] * n,
                "source_row_id": [f"{name}:{k[0]}" for k in kept],
                "gaia_g_vega": g_vega,
                "gaia_jd_tcb": np.array([k[1] for k in kept], dtype="float64"),
            }
        )
        return photometry.drop_bad_values(table, "Gaia", product, require_error=self.requires_errors())


def _tcb_jd_to_utc_mjd(jd):
    """JD in TCB -> MJD in UTC (a change of time scale only; astropy, no downloads)."""
    import numpy as np

    from stdq.photometry import quiet_astropy

    values = np.asarray(jd, dtype="float64")
    if values.size == 0:
        return values
    # years 1000..3000 change time scale; others (nan, inf, absurd) are only shifted to
    # an MJD, for the common rule to leave them out
    sane = np.isfinite(values) & (values > 2086308.0) & (values < 2816788.0)
    out = values - 2400000.5
    if sane.any():
        quiet_astropy()
        from astropy.time import Time

        with warnings.catch_warnings():  # ERFA's "dubious year" for a date far from now
            warnings.simplefilter("ignore")
            out[sane] = Time(values[sane], format="jd", scale="tcb").utc.mjd
    return out
