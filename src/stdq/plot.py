"""Light-curve plots: PNG, PDF and SVG with matplotlib, one self-contained HTML with plotly.

The conventions (docs/commands.md, `stdq plot`):

- flux view (default when any row is difference photometry): microjansky against
  MJD, a zero line, negative fluxes kept; detections with error bars; a
  non-detection is an open down-triangle at its measured flux with its error bar;
- magnitude view (``--mag``; default for total fluxes only): AB magnitude, axis
  inverted; detections with error bars, a non-detection an open down-triangle at
  its limit magnitude (``limit``, at ``limit_nsigma``);
- colour by band and marker by survey from the one table in :mod:`stdq.bands`;
  flagged rows (``quality_flag != 0``) hollow and grey; masked rows (``masked``)
  never drawn; stacked bins (``n_combined > 1``) larger;
- a secondary axis on top: the calendar date, or days since ``t0``;
- title with the target's name and coordinates; legend per survey and band.

matplotlib and plotly are optional (extras ``plot`` and ``html``): without them
a :class:`~stdq.errors.ConfigError` (exit 3) names the pip command.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stdq import bands
from stdq.errors import BadInput, ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

MATPLOTLIB_HINT = "pip install matplotlib   (or: pip install 'stdq[plot]')"
PLOTLY_HINT = "pip install plotly   (or: pip install 'stdq[html]')"
FORMATS = ("png", "pdf", "svg", "html")
VIEWS = ("flux", "mag")
MJD_UNIX_EPOCH = 40587.0  # MJD of 1970-01-01, matplotlib's date 0
POINT_SIZE = 16.0         # scatter area (points^2) of one exposure
STACKED_SIZE = 40.0       # ... of a stacked bin (n_combined > 1)
RASTER_ABOVE = 20_000     # PDF/SVG: markers rasterized above this many rows (small files)
AGG_CHUNK = 10_000        # agg.path.chunksize while saving
WEBGL_ABOVE = 5_000       # HTML: WebGL traces above this many rows
LEGEND_KEYS = ("not detected", "upper limit", "flagged (quality_flag ≠ 0)", "stacked bin")


@dataclass(frozen=True)
class PlotInfo:
    """What was drawn: the file, the view, and the rows drawn / left out."""

    path: Path
    view: str
    format: str
    drawn: int
    masked: int
    flagged: int
    not_drawable: int

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "view": self.view, "format": self.format, "drawn": self.drawn,
                "masked": self.masked, "flagged": self.flagged, "not_drawable": self.not_drawable}


def require(module: str) -> Any:
    """Import matplotlib or plotly, or raise ConfigError (exit 3) naming the pip command."""
    hint = MATPLOTLIB_HINT if module.startswith("matplotlib") else PLOTLY_HINT
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        what = "PNG, PDF and SVG plots need" if top == "matplotlib" else "HTML plots need"
        raise ConfigError(f"{what} {top}, which is not installed", hint=hint) from None


def plot_format(path: str | Path) -> str:
    """png, pdf, svg or html from PATH's suffix (BadInput, exit 2, for any other)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise BadInput(f"plot file {str(path)!r}: the name must end in .png, .pdf, .svg or .html")
    return suffix


def default_view(table: pd.DataFrame) -> str:
    """"flux" when any row is difference photometry, else "mag"."""
    kinds = {str(k) for k in table["flux_kind"].unique()} if "flux_kind" in table.columns and len(table) else set()
    return "flux" if "difference" in kinds or not kinds else "mag"


@dataclass
class Prepared:
    """The rows to draw, split by what they are (numpy arrays, one entry per row)."""

    table: Any          # pandas DataFrame of the drawn rows
    y: Any              # flux or magnitude
    yerr: Any           # its error (NaN: none)
    limit: Any          # bool: drawn as a non-detection (down-triangle)
    flagged: Any        # bool
    size: Any           # scatter area
    masked: int
    not_drawable: int


def prepare(table: pd.DataFrame, view: str, *, clean: bool = False) -> Prepared:
    """Leave out masked rows (and flagged ones with CLEAN); place every other row in VIEW."""
    import numpy as np

    df = table
    n_masked = 0
    if "masked" in df.columns:
        masked = _bools(df["masked"])
        n_masked = int(masked.sum())
        df = df[~masked]
    flag = _num(df, "quality_flag", 0.0)
    flagged = np.nan_to_num(flag, nan=0.0) != 0
    if clean:
        df, flagged = df[~flagged], flagged[~flagged]
    detected = _bools(df["detected"]) if "detected" in df.columns else np.ones(len(df), bool)
    flux, err = _num(df, "flux_ujy"), _num(df, "flux_err_ujy")
    if view == "flux":
        y, yerr = flux, err
        limit = ~detected
    else:
        mag, magerr, lim = _num(df, "magnitude"), _num(df, "magnitude_error"), _num(df, "limit")
        has_mag = detected & np.isfinite(mag)
        limit = ~has_mag
        y = np.where(has_mag, mag, lim)
        yerr = np.where(has_mag, magerr, np.nan)
    ok = np.isfinite(y) & np.isfinite(_num(df, "mjd"))
    n_combined = np.nan_to_num(_num(df, "n_combined", 1.0), nan=1.0)
    size = np.where(n_combined > 1, STACKED_SIZE, POINT_SIZE)
    return Prepared(df[ok], y[ok], yerr[ok], limit[ok], flagged[ok], size[ok], n_masked, int((~ok).sum()))


def _num(df: Any, column: str, default: float = math.nan) -> Any:
    import numpy as np
    import pandas as pd

    if column not in df.columns:
        return np.full(len(df), default, dtype="float64")
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _bools(column: Any) -> Any:
    """A boolean column as a numpy bool array (text "True"/"False" too; missing = False)."""

    if column.dtype == bool:
        return column.to_numpy(dtype=bool)
    return column.map(_truthy).to_numpy(dtype=bool)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    try:
        return bool(value) and value == value  # NaN is not true
    except (TypeError, ValueError):
        return False


def _groups(prep: Prepared) -> list[tuple[str, str, Any]]:
    """[(survey, band, row mask)] in a stable order: by survey, then band wavelength."""
    import numpy as np

    survey = prep.table["survey"].astype(str).to_numpy() if len(prep.table) else np.array([], dtype=object)
    band = prep.table["band"].astype(str).to_numpy() if len(prep.table) else np.array([], dtype=object)
    keys = sorted(set(zip(survey.tolist(), band.tolist(), strict=True)),
                  key=lambda k: (k[0], bands.band_wavelength(k[1]) or 0.0, k[1]))
    return [(s, b, (survey == s) & (band == b)) for s, b in keys]


def title_text(name: str | None, ra: float | None, dec: float | None) -> str:
    """"NAME  RA 10h..., Dec +..  (210.91067°, +54.31165°)"."""
    parts = [name or "light curve"]
    if ra is not None and dec is not None and math.isfinite(ra) and math.isfinite(dec):
        parts.append(f"RA {_sexagesimal(ra / 15.0, 'h')}, Dec {_sexagesimal(dec, 'd', signed=True)}"
                     f"  ({ra:.5f}°, {dec:+.5f}°)")
    return "   ".join(parts)


def _sexagesimal(value: float, unit: str, *, signed: bool = False) -> str:
    sign = "-" if value < 0 else "+"
    value = abs(value)
    whole = int(value)
    minutes = int((value - whole) * 60)
    seconds = ((value - whole) * 60 - minutes) * 60
    if round(seconds, 2 if unit == "h" else 1) >= 60:
        seconds, minutes = 0.0, minutes + 1
    if minutes >= 60:
        minutes, whole = 0, whole + 1
    if unit == "h":
        text = f"{whole:02d}h{minutes:02d}m{seconds:05.2f}s"
    else:
        text = f"{whole:02d}°{minutes:02d}′{seconds:04.1f}″"
    return (sign if signed else "") + text


def panels(table: pd.DataFrame, view: str | None = None) -> list[tuple[str | None, str]]:
    """The panels to draw, [(flux_kind or None for all rows, view)]: one, or two when TABLE
    holds both difference and total rows (``--flux-kind both``): difference fluxes on top
    (flux view), total fluxes below (magnitude view), never on one axis. VIEW, when given,
    is the view of every panel."""
    if view is not None and view not in VIEWS:
        raise BadInput(f"view {view!r}: use flux or mag")
    kinds = {str(k) for k in table["flux_kind"].dropna().unique()} if "flux_kind" in table.columns else set()
    if {"difference", "total"} <= kinds:
        return [("difference", view or "flux"), ("total", view or "mag")]
    return [(None, view or default_view(table))]


def panel_rows(table: pd.DataFrame, kind: str | None) -> pd.DataFrame:
    """The rows of TABLE drawn in the panel of flux KIND (None: every row)."""
    if kind is None:
        return table
    return table[(table["flux_kind"] == kind).to_numpy(dtype=bool, na_value=False)]


def combined(preps: list[Prepared], others: int = 0) -> Prepared:
    """One Prepared for the counts of several panels (OTHERS: rows of no panel's flux kind,
    counted as not drawable)."""
    import numpy as np
    import pandas as pd

    if len(preps) == 1 and not others:
        return preps[0]
    def joined(name: str) -> Any:
        return np.concatenate([getattr(p, name) for p in preps])

    return Prepared(
        pd.concat([p.table for p in preps], ignore_index=True), joined("y"), joined("yerr"), joined("limit"),
        joined("flagged"), joined("size"),
        masked=sum(p.masked for p in preps), not_drawable=sum(p.not_drawable for p in preps) + others,
    )


def view_name(plan: list[tuple[str | None, str]]) -> str:
    """The view of PLAN's panels: "flux", "mag", or "flux+mag" (difference above, total below)."""
    return "+".join(dict.fromkeys(v for _, v in plan))


def figure(
    table: pd.DataFrame, *, view: str | None = None, t0: float | None = None, name: str | None = None,
    ra: float | None = None, dec: float | None = None, clean: bool = False, rasterize: bool = False,
) -> tuple[Figure, Prepared, str]:
    """The matplotlib Figure of TABLE (no pyplot, no display); also what was drawn and the view
    (:func:`view_name`; a table with difference and total rows gets two panels, :func:`panels`).

    Every marker line (a Line2D with no line, one per kind, survey, band and marker
    size) carries a gid ``"<kind>|<survey>|<band>"`` with kind ``detection``,
    ``limit``, ``flagged-detection`` or ``flagged-limit``; its error bars one
    ``"errorbar:<kind>|<survey>|<band>"`` (tests and users find them in
    ``fig.axes[i].lines``, one axes per panel, top first).
    """
    require("matplotlib")
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    plan = panels(table, view)
    fig = Figure(figsize=(10.0, 5.6 if len(plan) == 1 else 8.4), layout="constrained")
    axes = fig.subplots(len(plan), 1, sharex=True, squeeze=False)[:, 0]
    handles: dict[str, Any] = {}
    preps = []
    parts = [panel_rows(table, kind) for kind, _ in plan]
    for ax, (kind, panel_view), part in zip(axes, plan, parts, strict=True):
        prep = prepare(part, panel_view, clean=clean)
        _draw_panel(ax, prep, panel_view, kind, handles, rasterize)
        preps.append(prep)
        if ax is not axes[-1]:
            ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("MJD (UTC)")
    ax = axes[0]
    if t0 is not None:
        top = ax.secondary_xaxis("top", functions=_shift(t0))
        top.set_xlabel(f"days since t0 = MJD {t0:g}")
    else:  # matplotlib's dates count days from 1970-01-01
        top = ax.secondary_xaxis("top", functions=_shift(MJD_UNIX_EPOCH))
        locator = mdates.AutoDateLocator()
        top.xaxis.set_major_locator(locator)
        top.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        top.set_xlabel("date (UTC)")
    ax.set_title(title_text(name, ra, dec), fontsize=11)
    if handles:  # survey and band entries first, then what the marker styles mean
        keys = [k for k in handles if k not in LEGEND_KEYS] + [k for k in LEGEND_KEYS if k in handles]
        ax.legend(handles=[handles[k] for k in keys], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small", frameon=False, borderaxespad=0.0)
    return fig, combined(preps, len(table) - sum(len(part) for part in parts)), view_name(plan)


def _draw_panel(ax: Any, prep: Prepared, view: str, kind: str | None, handles: dict[str, Any],
                rasterize: bool) -> None:
    """Draw PREP's rows on AX in VIEW; legend handles are added to HANDLES by label."""
    import numpy as np
    from matplotlib.lines import Line2D

    mjd = _num(prep.table, "mjd")
    for survey, band, rows in _groups(prep):
        colour, marker = bands.band_colour(band), bands.survey_marker(survey)
        for what in ("detection", "limit"):
            for flagged in (False, True):
                sel = rows & (prep.limit == (what == "limit")) & (prep.flagged == flagged)
                if not sel.any():
                    continue
                edge = bands.FLAGGED if flagged else colour
                hollow = flagged or what == "limit"
                shape = bands.LIMIT_MARKER if what == "limit" else marker
                gid = f"{'flagged-' if flagged else ''}{what}|{survey}|{band}"
                err = prep.yerr[sel]
                has_err = np.isfinite(err)
                if has_err.any():
                    bar_x, bar_y = _error_bars(mjd[sel][has_err], prep.y[sel][has_err], err[has_err])
                    ax.plot(bar_x, bar_y, color=edge, linewidth=0.7, alpha=0.5 if what == "limit" else 0.8,
                            zorder=1, rasterized=rasterize, gid=f"errorbar:{gid}")
                for area in np.unique(prep.size[sel]):
                    part = sel & (prep.size == area)
                    ax.plot(mjd[part], prep.y[part], linestyle="none", marker=shape,
                            markersize=float(np.sqrt(area)), markerfacecolor="none" if hollow else colour,
                            markeredgecolor=edge, markeredgewidth=0.9,
                            zorder=3 if what == "detection" else 2, gid=gid, rasterized=rasterize)
        label = f"{survey} {bands.band_label(band)}"
        handles.setdefault(label, Line2D([], [], linestyle="none", marker=marker, color=colour, markersize=6,
                                         label=label))
    if prep.limit.any():
        label = "not detected" if view == "flux" else "upper limit"
        handles.setdefault(label, Line2D([], [], linestyle="none", marker=bands.LIMIT_MARKER,
                                         markerfacecolor="none", markeredgecolor="black", markersize=6,
                                         label=label))
    if prep.flagged.any():
        label = "flagged (quality_flag ≠ 0)"
        handles.setdefault(label, Line2D([], [], linestyle="none", marker="o", markerfacecolor="none",
                                         markeredgecolor=bands.FLAGGED, markersize=6, label=label))
    if (prep.size > POINT_SIZE).any():
        handles.setdefault("stacked bin", Line2D([], [], linestyle="none", marker="o", color="black",
                                                 markersize=8, label="stacked bin"))
    kinds = sorted(set(prep.table["flux_kind"].astype(str))) if "flux_kind" in prep.table.columns else []
    kind_text = kind or (" / ".join(kinds) if kinds else "difference")
    if view == "flux":
        ax.axhline(0.0, color="0.4", linewidth=0.8, zorder=0)
        ax.set_ylabel(f"flux (µJy, {kind_text}; AB zp 23.9)")
    else:
        ax.invert_yaxis()
        ax.set_ylabel("AB magnitude" + (f" ({kind} fluxes)" if kind else ""))
    ax.grid(True, color="0.9", linewidth=0.6, zorder=0)
    if not len(prep.table):
        ax.text(0.5, 0.5, "no rows to draw", transform=ax.transAxes, ha="center", va="center", color="0.4")


def _error_bars(x: Any, y: Any, err: Any) -> tuple[Any, Any]:
    """Vertical error bars as ONE polyline broken by NaN (x, x, NaN, ...): a million of them
    draw in a second, where matplotlib's errorbar builds a Path object per bar."""
    import numpy as np

    n = len(x)
    bar_x = np.empty(3 * n)
    bar_y = np.empty(3 * n)
    bar_x[0::3] = bar_x[1::3] = x
    bar_x[2::3] = np.nan
    bar_y[0::3], bar_y[1::3], bar_y[2::3] = y - err, y + err, np.nan
    return bar_x, bar_y


def _shift(offset: float) -> tuple[Any, Any]:
    """The (forward, inverse) pair of a top axis OFFSET days from MJD."""

    def forward(mjd: Any) -> Any:
        return mjd - offset

    def inverse(value: Any) -> Any:
        return value + offset

    return forward, inverse


def plot_table(
    table: pd.DataFrame, path: str | Path, *, view: str | None = None, t0: float | None = None,
    name: str | None = None, ra: float | None = None, dec: float | None = None, clean: bool = False,
) -> PlotInfo:
    """Draw TABLE (normalized schema) into PATH (.png, .pdf, .svg or .html); what was drawn."""
    from stdq.store import atomic_write

    path = Path(path)
    fmt = plot_format(path)
    if fmt == "html":
        html, prep, view = html_text(table, view=view, t0=t0, name=name, ra=ra, dec=dec, clean=clean)
        atomic_write(path, html.encode("utf-8"))
    else:
        big = len(table) > RASTER_ABOVE and fmt in ("pdf", "svg")
        fig, prep, view = figure(table, view=view, t0=t0, name=name, ra=ra, dec=dec, clean=clean, rasterize=big)
        metadata: dict[str, Any] = {"Software": "stdq"} if fmt == "png" else (
            {"Creator": "stdq", "CreationDate": None} if fmt == "pdf" else {"Creator": "stdq", "Date": None})
        import matplotlib

        def save(fh: Any) -> None:
            # Agg draws a long polyline (the error bars) much faster in chunks
            with matplotlib.rc_context({"agg.path.chunksize": AGG_CHUNK}):
                fig.savefig(fh, format=fmt, dpi=150, metadata=metadata)

        atomic_write(path, save)
    return PlotInfo(path, view, fmt, len(prep.table), prep.masked, int(prep.flagged.sum()), prep.not_drawable)


PLOTLY_SYMBOLS = {"o": "circle", "s": "square", "D": "diamond", "p": "pentagon", "h": "hexagon",
                  "P": "cross", "v": "triangle-down"}


def html_text(
    table: pd.DataFrame, *, view: str | None = None, t0: float | None = None, name: str | None = None,
    ra: float | None = None, dec: float | None = None, clean: bool = False,
) -> tuple[str, Prepared, str]:
    """One self-contained HTML page (plotly.js inline, no CDN) of :func:`plotly_figure`."""
    fig, prep, used = plotly_figure(table, view=view, t0=t0, name=name, ra=ra, dec=dec, clean=clean)
    # a double click resets both x axes to their first ranges (an autorange of each would
    # pad them differently and take the date axis out of register)
    return fig.to_html(include_plotlyjs=True, full_html=True, config={"doubleClick": "reset"}), prep, used


def plotly_figure(
    table: pd.DataFrame, *, view: str | None = None, t0: float | None = None, name: str | None = None,
    ra: float | None = None, dec: float | None = None, clean: bool = False,
) -> tuple[Any, Prepared, str]:
    """The plotly Figure of TABLE, also what was drawn and the view: MJD below and, as in the PNG,
    the calendar date (or days since T0) on a top axis overlaying it with the same span
    (plotly zooms overlaid axes together; a double click resets both); legend toggles a
    survey and band; hover shows the date, MJD, value, source_row_id and product of each
    point. Difference and total rows get two panels (:func:`panels`)."""
    import numpy as np

    require("plotly")
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    plan = panels(table, view)
    fig = make_subplots(rows=len(plan), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    preps = []
    lows, highs = [], []
    parts = [panel_rows(table, kind) for kind, _ in plan]
    for row, ((kind, panel_view), part) in enumerate(zip(plan, parts, strict=True), start=1):
        prep = prepare(part, panel_view, clean=clean)
        preps.append(prep)
        _html_panel(fig, go, prep, panel_view, kind, row, t0)
        mjd = _num(prep.table, "mjd")
        if np.isfinite(mjd).any():
            lows.append(float(np.nanmin(mjd)))
            highs.append(float(np.nanmax(mjd)))
    layout: dict[str, Any] = {"title": title_text(name, ra, dec), "template": "plotly_white",
                              "legend": {"groupclick": "togglegroup"}, "height": 560 if len(plan) == 1 else 820}
    last = "xaxis" if len(plan) == 1 else f"xaxis{len(plan)}"
    layout[last] = {"title": "MJD (UTC)"}
    if lows:
        low, high = min(lows), max(highs)
        pad = max((high - low) * 0.03, 0.5)
        x_range = [low - pad, high + pad]
        layout["xaxis"] = {**layout.get("xaxis", {}), "range": x_range}
        top = f"xaxis{len(plan) + 1}"
        layout[top] = _top_axis(x_range, t0)
        # an invisible trace on the top axis: plotly draws an axis only for a trace on it
        fig.add_trace(go.Scatter(x=layout[top].pop("_x"), y=[None, None], xaxis=f"x{len(plan) + 1}",
                                 yaxis="y", showlegend=False, hoverinfo="skip", mode="markers"))
    fig.update_layout(**layout)
    return fig, combined(preps, len(table) - sum(len(part) for part in parts)), view_name(plan)


def mjd_to_iso(mjd: Any) -> Any:
    """MJD (UTC) as "YYYY-MM-DD HH:MM:SS" text, per element (numpy datetime64 arithmetic;
    NaN gives "")."""
    import numpy as np

    values = np.asarray(mjd, dtype="float64")
    ms = np.round((np.nan_to_num(values) - MJD_UNIX_EPOCH) * 86_400_000.0).astype("int64")
    text = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="s").astype(object)
    text = np.char.replace(text.astype(str), "T", " ").astype(object)
    text[~np.isfinite(values)] = ""
    return text


def _top_axis(x_range: list[float], t0: float | None) -> dict[str, Any]:
    """The top axis over the MJD range X_RANGE: the calendar date (a plotly date axis), or
    days since T0. It overlays the MJD axis with the same span, so plotly zooms and pans
    the two together (both are linear in time) and they stay in register."""
    axis: dict[str, Any] = {"overlaying": "x", "anchor": "y", "side": "top", "showgrid": False}
    if t0 is None:
        ends = list(mjd_to_iso(x_range))
        axis.update({"type": "date", "range": ends, "title": "date (UTC)", "_x": ends})
    else:
        shifted = [x - t0 for x in x_range]
        axis.update({"range": shifted, "title": f"days since t0 = MJD {t0:g}", "_x": shifted})
    return axis


def _html_panel(fig: Any, go: Any, prep: Prepared, view: str, kind: str | None, row: int,
                t0: float | None) -> None:
    """PREP's traces in the panel ROW of FIG (one per survey, band, kind and flag)."""
    import numpy as np

    mjd = _num(prep.table, "mjd")
    scatter = go.Scattergl if len(prep.table) > WEBGL_ABOVE else go.Scatter
    unit = "µJy" if view == "flux" else "mag"

    def column(name: str) -> Any:
        if name in prep.table.columns:
            return prep.table[name].astype(str).to_numpy()
        return np.full(len(prep.table), "", dtype=object)

    since = np.array([f"<br>t - t0 {v:+.3f} d" for v in mjd - t0], dtype=object) if t0 is not None \
        else np.full(len(mjd), "", dtype=object)
    info = np.stack([column("source_row_id"), column("product_id"), mjd_to_iso(mjd), column("quality_flag"),
                     since], axis=-1) if len(prep.table) else np.empty((0, 5))
    for survey, band, rows in _groups(prep):
        colour, marker = bands.band_colour(band), bands.survey_marker(survey)
        group = f"{survey} {bands.band_label(band)}"
        for what in ("detection", "limit"):
            for flagged in (False, True):
                sel = rows & (prep.limit == (what == "limit")) & (prep.flagged == flagged)
                if not sel.any():
                    continue
                symbol = PLOTLY_SYMBOLS.get(bands.LIMIT_MARKER if what == "limit" else marker, "cross")
                if flagged or what == "limit":
                    symbol += "-open"
                edge = bands.FLAGGED if flagged else colour
                err = np.nan_to_num(prep.yerr[sel], nan=0.0)
                label = group + ("" if what == "detection" else (" not detected" if view == "flux" else " limit"))
                if kind is not None:
                    label += f" ({kind})"
                fig.add_trace(scatter(
                    x=mjd[sel], y=prep.y[sel], mode="markers", name=label + (" (flagged)" if flagged else ""),
                    legendgroup=group, customdata=info[sel],
                    marker={"symbol": symbol, "color": edge, "size": np.sqrt(prep.size[sel]) * 1.6,
                            "line": {"color": edge, "width": 1}},
                    error_y={"type": "data", "array": err, "visible": bool(err.any()), "color": edge,
                             "thickness": 0.8, "width": 0},
                    hovertemplate=(f"{group} ({kind + ', ' if kind else ''}{what}{', flagged' if flagged else ''})"
                                   "<br>%{customdata[2]} UTC<br>MJD %{x:.5f}%{customdata[4]}"
                                   f"<br>%{{y:.3f}} {unit}"
                                   "<br>source_row_id %{customdata[0]}<br>product %{customdata[1]}"
                                   "<br>quality_flag %{customdata[3]}<extra></extra>"),
                ), row=row, col=1)
    yaxis = "yaxis" if row == 1 else f"yaxis{row}"
    if view == "flux":
        fig.add_hline(y=0.0, line={"color": "#666666", "width": 1}, row=row, col=1)
        title = f"flux (µJy{', ' + kind if kind else ''}; AB zp 23.9)"
    else:
        title = "AB magnitude" + (f" ({kind} fluxes)" if kind else "")
    fig.update_layout({yaxis: {"title": title, "autorange": "reversed" if view == "mag" else True}})


def parse_t0(value: str | float | None) -> float | None:
    """--t0: an MJD (a number) or an ISO 8601 date (UTC); BadInput (exit 2) otherwise."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        mjd = float(value)
    else:
        from stdq.services.base import date_to_mjd

        text = value.strip()
        try:
            mjd = float(text)
        except ValueError:
            mjd = date_to_mjd(text)
    if not (math.isfinite(mjd) and 0 < mjd < 100000):
        raise BadInput(f"--t0 {value!r} is not a plausible MJD or date")
    return mjd


def default_path(label: str, folder: str | Path | None = None) -> Path:
    """TARGET.png in FOLDER (default: the current folder), the name made safe for a file."""
    from stdq.store import safe_name

    return Path(folder if folder is not None else Path.cwd()) / f"{safe_name(label)}.png"


def plot_target(
    sdq: Any, target: Any, path: str | Path | None = None, *, view: str | None = None,
    t0: str | float | None = None, services: Any = None, clean: bool = False, flux_kind: str | None = None,
) -> PlotInfo:
    """Draw the merged light curve of TARGET (``Stdq.lightcurve``, with FLUX_KIND) into PATH
    (default TARGET.png in the current folder); ``flux_kind="both"`` gives two panels,
    difference fluxes above total magnitudes. Checks the format and the extra before any work."""
    if view is not None and view not in VIEWS:
        raise BadInput(f"view {view!r}: use flux or mag")
    mjd0 = parse_t0(t0)
    label = target.label if hasattr(target, "label") else str(target).strip()
    dest = (Path(path) if path is not None else default_path(label)).absolute()
    fmt = plot_format(dest)
    require("plotly" if fmt == "html" else "matplotlib")
    curve = sdq.lightcurve(target, services=services, clean=clean, flux_kind=flux_kind)
    where = getattr(curve, "target", None)
    name = getattr(where, "name", None) or label
    return plot_table(curve.table, dest, view=view, t0=mjd0, name=name, ra=getattr(where, "ra", None),
                      dec=getattr(where, "dec", None), clean=clean)
