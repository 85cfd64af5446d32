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

from stdq import bands, exports, passbands, photometry

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


@pytest.fixture
def offline_sncosmo(monkeypatch, tmp_path):
    """sncosmo with every way to the network closed: its data folder an empty one, its
    download functions, its redirects fetch and socket connections raising (each attempt
    recorded). sncosmo's registry is a copy, restored after the test."""
    import socket

    import sncosmo
    import sncosmo.builtins
    import sncosmo.utils

    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:1]))
        raise RuntimeError("network access in a test")

    monkeypatch.setattr(sncosmo.utils, "download_file", refuse)
    monkeypatch.setattr(sncosmo.utils, "download_dir", refuse)
    monkeypatch.setattr(sncosmo.builtins.DATADIR, "_fetch_redirects", refuse)
    monkeypatch.setattr(sncosmo.builtins.DATADIR, "_checked_rootdir", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    registry = sncosmo.bandpasses._BANDPASSES
    monkeypatch.setattr(registry, "_instances", dict(registry._instances))
    monkeypatch.setattr(registry, "_loaders", dict(registry._loaders))
    return attempts


def test_the_guard_catches_a_download(offline_sncosmo):
    """sdssg is only a loader in sncosmo (stdq ships no SDSS curve): getting it tries to
    download, which the guard refuses, so the tests below would see any download."""
    import sncosmo

    with pytest.raises(RuntimeError, match="network access"):
        sncosmo.get_bandpass("sdssg")
    assert offline_sncosmo


def test_register_sncosmo_gives_every_shipped_band_with_no_network(offline_sncosmo):
    import sncosmo

    registry = sncosmo.bandpasses._BANDPASSES
    loaders_before = dict(registry._loaders)
    others_before = {k: v for k, v in registry._instances.items() if k[0] not in passbands.PASSBANDS}
    registered = passbands.register_sncosmo()
    assert registered == passbands.names() and len(registered) == 20
    assert set(registered) >= {"atlasc", "atlaso", "ztfg", "ztfr", "ztfi", *(f"ps1::{f}" for f in "grizy")}
    for name in registered:
        band = sncosmo.get_bandpass(name)
        wave, trans = passbands.load(name)
        assert band.wave_eff == pytest.approx(np.trapezoid(wave * trans, wave) / np.trapezoid(trans, wave))
    assert offline_sncosmo == []
    # nothing else in sncosmo's registry changed: the same loaders, the same other instances
    assert registry._loaders == loaders_before
    assert {k: v for k, v in registry._instances.items() if k[0] not in passbands.PASSBANDS} == others_before
    assert ("sdssg", None) not in registry._instances and passbands.register_sncosmo() == []  # all loaded now


def test_register_sncosmo_leaves_a_band_already_loaded(offline_sncosmo):
    import sncosmo

    mine = sncosmo.Bandpass([4000.0, 4500.0, 5500.0, 6000.0], [0.0, 1.0, 1.0, 0.0], name="ztfg")
    sncosmo.register(mine, "ztfg", force=True)
    assert "ztfg" not in passbands.register_sncosmo(["ztfg", "ztfr"])
    assert sncosmo.get_bandpass("ztfg") is mine and sncosmo.get_bandpass("ztfr").name == "ztfr"
    with pytest.raises(KeyError, match="atlasw: no ATLAS transmission curve"):
        passbands.register_sncosmo(["atlasw"])


# Values of the source files read by hand: pyphot 2.1.1 ZTF_g.csv "480.0,90.99446694" (percent,
# nm), PS1_r.csv "6.2e+03,6.42e-01"; speclite 1.0.0 gaiadr3-G.ecsv "3400.0 0.0868837415"; SNooPy
# 2.7.4 ATLAS/ATLAS/filter1 (cyan) "5460 80.8" and filter2 (orange) "5680 80.5" (percent, Angstrom).
BY_HAND = {("ztfg", 4800.0): 0.9099446694, ("ps1::r", 6200.0): 0.642, ("gaia::g", 3400.0): 0.0868837415,
           ("atlasc", 5460.0): 0.808, ("atlaso", 5680.0): 0.805}


def test_shipped_curves_are_in_angstrom_and_fractions_on_a_10_angstrom_grid():
    for name in passbands.names():
        wave, trans = passbands.load(name)
        assert np.all(np.diff(wave) == 10.0), name
        assert trans.min() >= 0.0 and 0.1 < trans.max() <= 1.0, name  # a fraction, not percent
        half = wave[trans >= 0.5 * trans.max()]
        if name in bands.BANDS:  # the effective wavelength: within 3 % of the published one
            eff = np.trapezoid(wave * trans, wave) / np.trapezoid(trans, wave)
            assert eff == pytest.approx(bands.BANDS[name].wavelength_nm * 10, rel=0.03), name
            assert half[0] < eff < half[-1], name
        else:  # ps1::w, not in stdq.bands: its half-maximum range in pyphot's PS1_w.csv
            assert name == "ps1::w" and (half[0], half[-1]) == (4520.0, 8130.0)
    for (name, at), value in BY_HAND.items():
        wave, trans = passbands.load(name)
        assert trans[wave == at] == pytest.approx([value], rel=1e-5)
    notice = (Path(passbands.__file__).parent / "data" / "NOTICE.md").read_text(encoding="utf-8")
    assert "Copyright (c) 2016 Morgan Fouesneau" in notice and "Copyright (c) 2015-2025, Speclite" in notice
    assert "Copyright (c) 2015 Christopher R. Burns" in notice
    for band in passbands.PASSBANDS.values():
        assert band.file.endswith(".dat") and (Path(passbands.__file__).parent / "data" / band.file).is_file()


def test_sncosmo_reads_the_export_and_fits_it_in_atlas_ztf_and_ps1_bands(tmp_path, offline_sncosmo):
    """The round trip, offline: stdq's ATLAS, ZTF and PS1 curves registered by stdq, a model built
    here (a Gaussian in time times a smooth spectrum), an export of its noisy band fluxes
    read back by sncosmo.read_lc and fitted with sncosmo.fit_lc."""
    import sncosmo

    assert passbands.register_sncosmo(["atlasc", "atlaso", "ztfg", "ztfr", "ztfi", *(f"ps1::{f}" for f in "grizy")])
    phase = np.linspace(-40.0, 80.0, 121)
    wave = np.linspace(2500.0, 12000.0, 191)
    shape = np.exp(-0.5 * (phase / 12.0) ** 2)
    spectrum = 1.0 + 0.5 * np.exp(-0.5 * ((wave - 5000.0) / 1500.0) ** 2)
    source = sncosmo.TimeSeriesSource(phase, wave, np.outer(shape, spectrum) * 1e-15, name="stdq-test")
    model = sncosmo.Model(source=source)
    truth = {"t0": 60100.0, "amplitude": 2.5}
    model.set(z=0.0, **truth)
    rng = np.random.default_rng(12)
    times = np.arange(60070.0, 60160.0, 3.0)
    rows = []
    survey = {"atl": ("ATLAS", "atlas"), "ztf": ("ZTF", "ztf-fps"), "ps1": ("PS1", "panstarrs")}
    for band in ("atlasc", "atlaso", "ztfg", "ztfr", "ztfi", "ps1::g", "ps1::r", "ps1::i", "ps1::z", "ps1::y"):
        flux = model.bandflux(band, times, zp=23.9, zpsys="ab")
        err = np.full_like(flux, 0.02 * flux.max())
        noisy = flux + rng.normal(0.0, err)
        name, service = survey[band[:3]]
        for t, f, e in zip(times, noisy, err, strict=True):
            rows.append(dict(mjd=t, survey=name, filter=band[-1], band=band, flux_ujy=f, flux_err_ujy=e,
                             detected=f / e >= 3, flux_kind="difference", source_row_id=f"{band}{t}",
                             service=service))
    rows.append(dict(mjd=60100.0, survey="ZTF", filter="g", band="ztfg", flux_ujy=1e9, flux_err_ujy=1.0,
                     detected=True, flux_kind="difference", source_row_id="outlier", masked=True))
    path = tmp_path / "lc.dat"
    with path.open("wb") as fh:
        left = exports.write_sncosmo(table(rows), fh, {"name": "test", "flux_kind": "difference"})
    assert left == {}
    text = path.read_text()
    assert "# bands registered offline by stdq.passbands.register_sncosmo()" in text
    data = sncosmo.read_lc(str(path))
    assert data.meta["name"] == "test"
    assert set(data.colnames) == set(exports.SNCOSMO_COLUMNS)
    assert len(data) == len(rows) - 1 == 10 * 30  # the masked outlier is not exported
    assert sorted(set(data["band"])) == sorted({r["band"] for r in rows})
    fit_model = sncosmo.Model(source=source)
    fit_model.set(z=0.0, t0=60094.0, amplitude=1.0)
    result, fitted = sncosmo.fit_lc(data, fit_model, ["t0", "amplitude"])
    assert result.success
    # tolerances: 0.2 d and 1 % of the truth, and within 4 sigma of the fit's own errors
    # (10 bands x 30 epochs at 2 % of each band's peak give sigma(t0) ~ 0.05 d, ~0.3 %)
    assert fitted["t0"] == pytest.approx(truth["t0"], abs=0.2)
    assert fitted["amplitude"] == pytest.approx(truth["amplitude"], rel=0.01)
    assert abs(fitted["t0"] - truth["t0"]) < 4 * result.errors["t0"]
    assert abs(fitted["amplitude"] - truth["amplitude"]) < 4 * result.errors["amplitude"]
    assert offline_sncosmo == []


def test_a_registered_band_is_exported(offline_sncosmo):
    exports.register_band("stdqtestw", [4000.0, 4500.0, 8500.0, 9000.0], [0.0, 1.0, 1.0, 0.0])
    rows = [dict(ROWS[2], band="stdqtestw")]
    out, left = exports.sncosmo_table(table(rows))
    assert left == {} and list(out["band"]) == ["stdqtestw"]


def test_importing_passbands_loads_neither_numpy_nor_sncosmo():
    """The names and sources are stdlib only; numpy comes with load(), sncosmo with register."""
    import subprocess
    import sys

    code = ("import sys, stdq.passbands as p; p.names(); "
            "print(sorted(m for m in ('numpy', 'sncosmo', 'pandas', 'astropy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
