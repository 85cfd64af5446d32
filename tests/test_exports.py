"""Light-curve exports (stdq.exports): the sncosmo file read and fitted by sncosmo itself,
offline; the TOM CSV and the SkyPortal JSON against their documented columns."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stdq import exports, photometry

DOCS = Path(__file__).resolve().parents[1] / "docs" / "photometry.md"


def table(rows: list[dict]) -> pd.DataFrame:
    """A normalized table (the merged light curve's columns) from ROWS."""
    rows = [{"service": "atlas", "masked": False, **r} for r in rows]
    return photometry.normalize(pd.DataFrame(rows), product_id=7)  # sorted by mjd, extras kept


def documented(section: str) -> list[str]:
    """The first column of the mapping table after SECTION's bold title in photometry.md."""
    text = DOCS.read_text(encoding="utf-8")
    part = text[text.index(f"**{section}**"):]
    part = part[: part.index("\n\n", part.index("|---|"))]
    names = []
    for line in part.splitlines()[2:]:
        if line.startswith("|") and not line.startswith("|---"):
            names += re.findall(r"`([^`]+)`", line.split("|")[1])
    return names


ROWS = [
    dict(mjd=60080.0, survey="ATLAS", filter="o", band="atlaso", flux_ujy=-3.0, flux_err_ujy=10.0,
         detected=False, limit=19.4, flux_kind="difference", source_row_id="a1"),
    dict(mjd=60090.0, survey="ZTF", filter="ZTF_r", band="ztfr", flux_ujy=900.0, flux_err_ujy=9.0,
         detected=True, magnitude=16.51, magnitude_error=0.011, flux_kind="difference", source_row_id="z1",
         service="ztf-fps"),
    dict(mjd=60091.0, survey="ATLAS", filter="w", band="atlasw", flux_ujy=800.0, flux_err_ujy=8.0,
         detected=True, magnitude=16.64, magnitude_error=0.011, flux_kind="difference", source_row_id="w1"),
    dict(mjd=60092.0, survey="PS1", filter="g", band="ps1::g", flux_ujy=700.0, flux_err_ujy=7.0,
         detected=True, magnitude=16.79, magnitude_error=0.011, flux_kind="difference", source_row_id="p1",
         masked=True),
    dict(mjd=60093.0, survey="ATLAS", filter="c", band="atlasc", flux_ujy=5.0, flux_err_ujy=0.0,
         detected=False, limit=np.nan, flux_kind="difference", source_row_id="bad"),
]


def test_tom_csv_has_the_documented_columns_and_limits_for_non_detections():
    out = io.BytesIO()
    exports.write_tom(table(ROWS), out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    assert list(rows[0]) == list(exports.TOM_COLUMNS) == documented("TOM Toolkit")
    # the masked row and the row with a zero error are never exported
    assert [r["time"] for r in rows] == ["60080.0", "60090.0", "60091.0"]
    limit, det, w = rows
    assert limit == {"time": "60080.0", "filter": "o", "magnitude": "", "error": "", "limit": "19.4",
                     "telescope": "ATLAS"}
    assert det["filter"] == "r" and det["magnitude"] == "16.51" and det["error"] == "0.011" and det["limit"] == ""
    assert w["filter"] == "w" and det["telescope"] == "ZTF"


def test_skyportal_json_has_the_documented_keys_as_parallel_lists():
    out = io.BytesIO()
    exports.write_skyportal(table(ROWS), out, "SN 2023ixf")
    doc = json.loads(out.getvalue())
    assert list(doc) == list(exports.SKYPORTAL_KEYS) == documented("SkyPortal")
    assert doc["obj_id"] == "SN 2023ixf"
    n = len(doc["mjd"])
    assert n == 3 and all(len(doc[k]) == n for k in exports.SKYPORTAL_KEYS[1:])
    assert doc["instrument_id"] == [None] * 3
    assert doc["flux"] == [-3.0, 900.0, 800.0] and doc["fluxerr"] == [10.0, 9.0, 8.0]
    assert doc["zp"] == [23.9] * 3 and doc["magsys"] == ["ab"] * 3
    assert doc["filter"] == ["atlaso", "ztfr", "atlasw"]
    assert doc["origin"] == ["stdq:atlas", "stdq:ztf-fps", "stdq:atlas"]


def test_sncosmo_file_leaves_atlasw_out_with_a_note_and_has_six_columns():
    out = io.BytesIO()
    left = exports.write_sncosmo(table(ROWS), out, {"name": "SN_2023ixf"})
    text = out.getvalue().decode()
    assert left == {"atlasw": 1}
    assert "# band atlasw is not one of sncosmo's bands" in text
    header = [line for line in text.splitlines() if line and line[0] not in "@#"][0]
    assert header.split() == list(exports.SNCOSMO_COLUMNS) == documented("sncosmo")


def test_sncosmo_reads_the_export_and_fits_a_constructed_light_curve(tmp_path):
    """Offline: the bundled Bessell bands and a model built here (no download)."""
    sncosmo = pytest.importorskip("sncosmo")
    phase = np.linspace(-30.0, 60.0, 91)
    wave = np.linspace(3000.0, 10000.0, 141)
    shape = np.exp(-0.5 * (phase / 12.0) ** 2)
    spectrum = 1.0 + 0.5 * np.exp(-0.5 * ((wave - 5000.0) / 1200.0) ** 2)
    source = sncosmo.TimeSeriesSource(phase, wave, np.outer(shape, spectrum) * 1e-15, name="stdq-test")
    model = sncosmo.Model(source=source)
    truth = {"t0": 60100.0, "amplitude": 2.5}
    model.set(z=0.0, **truth)
    rng = np.random.default_rng(12)
    times = np.arange(60075.0, 60150.0, 2.0)
    rows = []
    for band in ("bessellb", "bessellv", "bessellr"):
        flux = model.bandflux(band, times, zp=23.9, zpsys="ab")
        err = 0.02 * flux.max() + 0.0 * flux
        noisy = flux + rng.normal(0.0, err)
        for t, f, e in zip(times, noisy, err, strict=True):
            rows.append(dict(mjd=t, survey="TEST", filter=band[-1], band=band, flux_ujy=f, flux_err_ujy=e,
                             detected=f / e >= 3, flux_kind="difference", source_row_id=f"{band}{t}"))
    rows.append(dict(mjd=60100.0, survey="TEST", filter="b", band="bessellb", flux_ujy=1e9, flux_err_ujy=1.0,
                     detected=True, flux_kind="difference", source_row_id="outlier", masked=True))
    path = tmp_path / "lc.dat"
    with path.open("wb") as fh:
        left = exports.write_sncosmo(table(rows), fh, {"name": "test", "flux_kind": "difference"})
    assert left == {}
    data = sncosmo.read_lc(str(path))
    assert data.meta["name"] == "test"
    assert set(data.colnames) == set(exports.SNCOSMO_COLUMNS)
    assert len(data) == len(rows) - 1  # the masked outlier is not exported
    fit_model = sncosmo.Model(source=source)
    fit_model.set(z=0.0, t0=60095.0, amplitude=1.0)
    result, fitted = sncosmo.fit_lc(data, fit_model, ["t0", "amplitude"])
    assert result.success
    assert fitted["t0"] == pytest.approx(truth["t0"], abs=0.5)
    assert fitted["amplitude"] == pytest.approx(truth["amplitude"], rel=0.03)


def test_a_registered_band_is_exported(monkeypatch):
    pytest.importorskip("sncosmo")
    exports.register_band("stdqtestw", [4000.0, 4500.0, 8500.0, 9000.0], [0.0, 1.0, 1.0, 0.0])
    rows = [dict(ROWS[2], band="stdqtestw")]
    out, left = exports.sncosmo_table(table(rows))
    assert left == {} and list(out["band"]) == ["stdqtestw"]
