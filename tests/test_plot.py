"""`stdq plot` / stdq.plot: files of every format, the artists matplotlib is given, exit 3 without the extra."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pandas as pd
import pytest

from stdq import bands

pytest.importorskip("matplotlib")

from matplotlib.colors import to_hex, to_rgba  # noqa: E402
from matplotlib.markers import MarkerStyle  # noqa: E402

from stdq import plot  # noqa: E402

SN = "SN 2023ixf"
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


def demo_like_table() -> pd.DataFrame:
    """A light curve like the demo's SN 2023ixf (ATLAS c/o, ZTF g/r/i, difference fluxes):
    detections, non-detections with negative fluxes, flagged rows, a stacked bin, masked rows."""
    rng = np.random.default_rng(12)
    rows = []
    for survey, band_names in (("ATLAS", ("atlasc", "atlaso")), ("ZTF", ("ztfg", "ztfr", "ztfi"))):
        for band in band_names:
            for k, mjd in enumerate(np.arange(60070.0, 60130.0, 3.0)):
                flux = 0.0 if mjd < 60083 else 20000.0 * np.exp(-(mjd - 60083) / 30.0)
                err = 15.0 + rng.random() * 5
                flux += rng.normal(0, err)
                detected = flux / err >= 3
                rows.append({
                    "mjd": mjd + rng.random() * 0.1, "time_utc": f"t{k}", "survey": survey, "band": band,
                    "filter": band[-1], "flux_ujy": flux, "flux_err_ujy": err, "detected": detected,
                    "magnitude": 23.9 - 2.5 * np.log10(flux) if detected else np.nan,
                    "magnitude_error": 1.0857 * err / flux if detected else np.nan,
                    "limit": np.nan if detected else 23.9 - 2.5 * np.log10(3 * err), "limit_nsigma": 3.0,
                    "flux_kind": "difference", "quality_flag": 2 if k % 7 == 3 else 0,
                    "n_combined": 4 if (survey == "ATLAS" and k % 5 == 0) else 1,
                    "source_row_id": f"{survey}-{band}-{k}", "product_id": 1 if survey == "ATLAS" else 2,
                    "service": "atlas" if survey == "ATLAS" else "ztf-fps", "masked": k == 10,
                })
    table = pd.DataFrame(rows).sort_values("mjd", kind="stable").reset_index(drop=True)
    assert (table["flux_ujy"] < 0).any() and (~table["detected"]).any() and table["masked"].sum() == 5
    return table


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return demo_like_table()


def marker_path(code: str):
    style = MarkerStyle(code)
    return style.get_path().transformed(style.get_transform())


def same_path(a, b) -> bool:
    return a.vertices.shape == b.vertices.shape and np.allclose(a.vertices, b.vertices)


def drawn(fig) -> list:
    """The marker lines of the figure's main axes (gid "<kind>|<survey>|<band>")."""
    return [line for line in fig.axes[0].lines if "|" in str(line.get_gid()) and ":" not in str(line.get_gid())]


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_each_file_format_is_written_and_of_its_type(tmp_path, table, fmt):
    info = plot.plot_table(table, tmp_path / f"ixf.{fmt}", name=SN, ra=210.910674, dec=54.31165)
    data = info.path.read_bytes()
    assert data.startswith(MAGIC[fmt]) and len(data) > 5_000
    assert (info.view, info.format, info.masked, info.drawn) == ("flux", fmt, 5, len(table) - 5)
    if fmt == "svg":
        assert b"<svg" in data[:2000]


def test_html_is_one_file_that_needs_no_network(tmp_path, table):
    pytest.importorskip("plotly")
    info = plot.plot_table(table, tmp_path / "ixf.html", name=SN, ra=210.910674, dec=54.31165)
    html = info.path.read_text(encoding="utf-8")
    srcs = re.findall(r"<script[^>]*\bsrc\s*=\s*[\"']?([^\"' >]+)", html, flags=re.I)
    assert not srcs, srcs                                  # every script inline, no CDN
    assert not re.search(r"<link[^>]+href=[\"']?https?:", html, flags=re.I)
    assert "plotly.js v" in html or "Plotly.newPlot" in html   # plotly's own code is in the file
    assert len(html) > 1_000_000
    assert "source_row_id" in html and "ATLAS-atlasc-1" in html   # hover data per point
    assert "ATLAS-atlasc-10" not in html                   # a masked row is not in the page
    assert '"groupclick":"togglegroup"' in html.replace(" ", "")
    # the calendar-date top axis, and a double click that resets both x axes together
    assert '"type":"date"' in html.replace(" ", "") and '"doubleClick":"reset"' in html.replace(" ", "")


@pytest.mark.parametrize("view", ["flux", "mag"])
def test_artists_of_each_view(table, view):
    fig, prep, used = plot.figure(table, view=view, name=SN, ra=210.9, dec=54.3)
    assert used == view
    ax = fig.axes[0]
    markers = drawn(fig)
    kept = table[~table["masked"]]
    # no masked point drawn: the points add up to the unmasked rows, none at a masked epoch
    offsets = np.concatenate([line.get_xydata() for line in markers])
    assert len(offsets) == len(kept)
    assert not np.isin(np.round(offsets[:, 0], 9), np.round(table.loc[table["masked"], "mjd"], 9)).any()
    per_band: dict[str, set[str]] = {}
    for line in markers:
        kind, survey, band = line.get_gid().split("|")
        assert line.get_linestyle() == "None"
        face, edge = line.get_markerfacecolor(), to_hex(line.get_markeredgecolor())
        if kind.endswith("limit"):                           # limits: open down-triangles
            assert line.get_marker() == "v" and face == "none", line.get_gid()
        else:
            assert line.get_marker() == bands.survey_marker(survey), line.get_gid()
        if kind.startswith("flagged"):                       # flagged: hollow and grey
            assert face == "none" and edge == bands.FLAGGED.lower()
        else:
            per_band.setdefault(band, set()).add(edge)
            if kind == "detection":
                assert to_hex(face) == edge == bands.band_colour(band).lower()
    # one colour per band, and different bands differ
    assert all(len(colours) == 1 for colours in per_band.values()), per_band
    assert set(per_band) == {"atlasc", "atlaso", "ztfg", "ztfr", "ztfi"}
    assert len({c for colours in per_band.values() for c in colours}) == 5
    limits = [line for line in markers if line.get_gid().split("|")[0] == "limit"]
    expected_limits = kept[~kept["detected"] & (kept["quality_flag"] == 0)]
    assert limits and sum(len(line.get_xdata()) for line in limits) == len(expected_limits)
    # stacked bins larger
    sizes = {line.get_markersize() for line in markers}
    assert len(sizes) == 2 and max(sizes) > min(sizes)
    stacked = [line for line in markers if line.get_markersize() == max(sizes)]
    assert sum(len(line.get_xdata()) for line in stacked) == int((kept["n_combined"] > 1).sum())
    # error bars: one broken polyline per marker line with errors, 3 vertices per bar
    bars = [line for line in ax.lines if str(line.get_gid()).startswith("errorbar:")]
    assert bars and all(len(line.get_xdata()) % 3 == 0 for line in bars)
    if view == "flux":                                     # negative fluxes kept, zero line
        assert (offsets[:, 1] < 0).any()
        assert any(np.allclose(line.get_ydata(), 0.0) for line in ax.get_lines())
        assert ax.get_ylim()[0] < ax.get_ylim()[1]
    else:                                                  # magnitudes: inverted axis, limits at `limit`
        assert ax.get_ylim()[0] > ax.get_ylim()[1]
        limit_y = np.concatenate([line.get_ydata() for line in limits])
        assert np.allclose(np.sort(limit_y), np.sort(expected_limits["limit"].to_numpy()))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"ATLAS c", "ATLAS o", "ZTF g", "ZTF r", "ZTF i"} <= set(labels)
    assert SN in ax.get_title() and "14h03m" in ax.get_title()
    assert [a.get_xlabel() for a in ax.child_axes] == ["date (UTC)"]   # the calendar date on top


def test_atlas_o_and_ztf_r_differ_in_greyscale():
    """Close colours, other shapes: the marker tells the survey."""
    assert bands.survey_marker("ATLAS") != bands.survey_marker("ZTF")
    assert not same_path(marker_path(bands.survey_marker("ATLAS")), marker_path(bands.survey_marker("ZTF")))
    assert "v" not in {bands.survey_marker(s) for s in ("ATLAS", "ZTF", "PS1", "LSST", "Gaia", "other")}


def test_band_table_and_wavelength_colours():
    for survey_bands in (("ztfg", "ztfr", "ztfi"), ("atlasc", "atlaso", "atlasw"),
                         tuple(f"ps1::{b}" for b in "grizy"), tuple(f"lsst{b}" for b in "ugrizy"),
                         ("gaia::g", "gaia::gbp", "gaia::grp")):
        colours = [bands.band_colour(b) for b in survey_bands]
        assert len(set(colours)) == len(colours), survey_bands
        assert bands.FLAGGED not in colours
    assert bands.band_colour("ztfr") == bands.band_colour("ps1::r") == bands.band_colour("lsstr")
    assert bands.band_colour("sdssg") == bands.GREEN           # by effective wavelength
    assert bands.band_colour("2massj") == bands.BROWN          # redder than every anchor
    assert bands.band_colour("no-such-band_") == bands.BLACK
    assert to_rgba(bands.band_colour("lsstu"))                 # valid colours


def test_default_view_follows_the_flux_kind(table):
    assert plot.default_view(table) == "flux"
    assert plot.default_view(table.assign(flux_kind="total")) == "mag"


def test_t0_top_axis_and_bad_values(table, tmp_path):
    assert plot.parse_t0("2023-05-19") == pytest.approx(60083.0)
    assert plot.parse_t0("60083.5") == 60083.5
    fig, _, _ = plot.figure(table, t0=60083.0)
    assert "days since t0 = MJD 60083" in json.dumps([a.get_xlabel() for a in fig.axes[0].child_axes])
    from stdq.errors import BadInput

    with pytest.raises(BadInput):
        plot.parse_t0("yesterday")
    with pytest.raises(BadInput):
        plot.plot_table(table, tmp_path / "x.jpg")


def both_kinds(table: pd.DataFrame) -> pd.DataFrame:
    """TABLE with its ZTF rows made total fluxes (as `--flux-kind both` gives them)."""
    out = table.copy()
    out.loc[out["survey"] == "ZTF", "flux_kind"] = "total"
    return out


def test_difference_and_total_rows_get_two_panels_never_one_axis(tmp_path, table):
    """--flux-kind both: difference fluxes above (flux view), total magnitudes below; each
    panel holds only its kind's rows, the top axis carries the date, the x axes are shared."""
    mixed = both_kinds(table)
    fig, prep, view = plot.figure(mixed, name=SN, ra=210.9, dec=54.3)
    assert view == "flux+mag" and len(fig.axes) == 2
    top, bottom = fig.axes
    assert top.get_shared_x_axes().joined(top, bottom)
    kept = mixed[~mixed["masked"]]
    for ax, survey, kind in ((top, "ATLAS", "difference"), (bottom, "ZTF", "total")):
        markers = [line for line in ax.lines if "|" in str(line.get_gid()) and ":" not in str(line.get_gid())]
        assert {line.get_gid().split("|")[1] for line in markers} == {survey}
        rows = kept[kept["flux_kind"] == kind]
        assert sum(len(line.get_xdata()) for line in markers) == len(rows)
    assert "difference" in top.get_ylabel() and "total" in bottom.get_ylabel()
    assert top.get_ylim()[0] < top.get_ylim()[1] and bottom.get_ylim()[0] > bottom.get_ylim()[1]  # mag inverted
    ztf_det = kept[(kept["survey"] == "ZTF") & kept["detected"] & (kept["quality_flag"] == 0)]
    y = np.concatenate([line.get_ydata() for line in bottom.lines if str(line.get_gid()).startswith("detection|")])
    assert np.allclose(np.sort(y), np.sort(ztf_det["magnitude"].to_numpy()))  # magnitudes, not fluxes
    assert [a.get_xlabel() for a in top.child_axes] == ["date (UTC)"] and not bottom.child_axes
    assert (prep.masked, len(prep.table)) == (5, len(kept))
    labels = [t.get_text() for t in top.get_legend().get_texts()]
    assert labels[:5] == ["ATLAS c", "ATLAS o", "ZTF g", "ZTF r", "ZTF i"]  # bands first, then the keys
    assert labels[5:] == ["not detected", "upper limit", "flagged (quality_flag ≠ 0)", "stacked bin"]
    info = plot.plot_table(mixed, tmp_path / "both.png", name=SN)
    assert (info.view, info.drawn, info.masked) == ("flux+mag", len(kept), 5)


def test_html_has_a_calendar_date_axis_and_dates_in_hover(table):
    pytest.importorskip("plotly")
    fig, prep, view = plot.plotly_figure(table, name=SN)
    layout = fig.layout
    low, high = float(table["mjd"].min()), float(table["mjd"].max())
    assert layout.xaxis.title.text == "MJD (UTC)" and layout.xaxis.range[0] < low < high < layout.xaxis.range[1]
    top = layout.xaxis2
    assert (top.type, top.side, top.overlaying, top.title.text) == ("date", "top", "x", "date (UTC)")
    # the same span: MJD 40587 is 1970-01-01, so the date axis ends are the MJD axis ends as dates
    assert list(top.range) == list(plot.mjd_to_iso(list(layout.xaxis.range)))
    assert plot.mjd_to_iso([60083.5])[0] == "2023-05-19 12:00:00"
    first = fig.data[0]
    assert "%{customdata[2]} UTC" in first.hovertemplate
    row = table.set_index("source_row_id").loc[first.customdata[0][0]]
    assert first.customdata[0][2] == plot.mjd_to_iso([row["mjd"]])[0]
    # with t0: MJD below, days since t0 on top (as the PNG)
    shifted, _, _ = plot.plotly_figure(table, t0=60083.0)
    assert shifted.layout.xaxis2.title.text == "days since t0 = MJD 60083"
    assert list(shifted.layout.xaxis2.range) == pytest.approx([x - 60083.0 for x in shifted.layout.xaxis.range])
    # both kinds: two rows of panels, the date axis over the top one
    two, prep2, view2 = plot.plotly_figure(both_kinds(table))
    assert view2 == "flux+mag" and two.layout.xaxis3.overlaying == "x" and two.layout.yaxis2.autorange == "reversed"


def query_ztf(stdq) -> None:
    result = stdq.run("query", "ztf", SN, "--json")
    assert result.returncode == 0, result.stderr


def test_cli_plot_writes_target_png_here_and_json(stdq):
    query_ztf(stdq)
    result = stdq.run("plot", SN)
    assert result.returncode == 0, result.stderr
    path = stdq.tmp / "SN_2023ixf.png"
    assert result.stdout.strip() == str(path)
    assert path.read_bytes().startswith(MAGIC["png"])
    assert "rows drawn (mag view)" in result.stderr            # ZTF light curve: total fluxes
    as_json = stdq.run("plot", SN, "--flux", "--t0", "2023-05-19", "-o", "ixf.svg", "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["view"] == "flux" and data["format"] == "svg" and data["path"] == str(stdq.tmp / "ixf.svg")
    assert data["drawn"] > 0 and data["masked"] == 0
    from stdq import Stdq

    with Stdq(stdq.config_path, stdq.data_dir) as sdq:
        row = str(sdq.lightcurve(SN).table["source_row_id"].iloc[0])
        sdq.mask(SN, [row], reason="test")
    masked = json.loads(stdq.run("plot", SN, "-o", "m.png", "--json").stdout)
    assert (masked["masked"], masked["drawn"]) == (1, data["drawn"] - 1)
    bad = stdq.run("plot", SN, "-o", "ixf.jpg")
    assert bad.returncode == 2 and ".png, .pdf, .svg or .html" in bad.stderr


@pytest.mark.parametrize(("blocked", "output", "hint"), [
    ("matplotlib", "ixf.png", "pip install 'stdq[plot]'"),
    ("plotly", "ixf.html", "pip install 'stdq[html]'"),
])
def test_exit_3_without_the_extra(stdq, monkeypatch, blocked, output, hint):
    """A blocked import (sys.modules[name] = None) stands for the missing extra: exit 3 with
    the pip command, before any work (no product is needed)."""
    monkeypatch.setitem(sys.modules, blocked, None)
    result = stdq.run("plot", SN, "-o", output)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert hint in result.stderr and "Traceback" not in result.stderr
    assert not (stdq.tmp / output).exists()


def test_library_plot_and_png_on_stdout(stdq):
    """Stdq.plot returns the path; `-o -` writes the PNG bytes to stdout (piped)."""
    import subprocess

    from conftest import STDQ_BIN
    from stdq import Stdq

    query_ztf(stdq)
    with Stdq(stdq.config_path, stdq.data_dir) as sdq:
        path = sdq.plot(SN, stdq.tmp / "lib.pdf", view="mag", t0="2023-05-19")
    assert path == stdq.tmp / "lib.pdf" and path.read_bytes().startswith(MAGIC["pdf"])
    piped = subprocess.run([str(STDQ_BIN), "plot", SN, "-o", "-"], capture_output=True, env=stdq.env,
                           cwd=stdq.tmp, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith(MAGIC["png"]) and len(piped.stdout) > 10_000
    unknown = stdq.run("plot", SN, "--services", "nope")
    assert unknown.returncode == 2, unknown.stderr
