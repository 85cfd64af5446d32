"""`stdq query gaia` against the Gaia archive emulator (TAP sync + DataLink) on 127.0.0.1.

Numbers checked by hand (docs/gaia.md):
- flux: m_AB = ZP - 2.5 log10(flux[e-/s]) with the Gaia (E)DR3 AB zero points of
  Riello et al. 2021 (G 25.8010, BP 25.3540, RP 25.1040), so 1 e-/s in G is
  10**(-0.4 (25.8010 - 23.9)) uJy = 0.173620 uJy, and 10000 e-/s is AB 15.8010 and 1736.201 uJy;
- time: `time` is BJD(TCB) - 2455197.5 at the barycentre; mjd is UTC at the geocentre.
  The check goes the other way with astropy alone: UTC at the geocentre -> TDB, plus
  astropy's own ``Time.light_travel_time`` (barycentric, builtin ephemeris), -> TCB,
  must give back the archive's time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from pathlib import Path

import httpx
import pytest

from conftest import assert_clean_error
from stdq.testing.gaia import (
    CROWD_COUNT,
    CROWDED,
    NEIGHBOUR_ID,
    NO_EPOCH_ID,
    VARIABLE,
    VARIABLE_ID,
    GaiaArchiveEmulator,
)
from stdq.testing.resolvers import MastResolverEmulator, SesameEmulator

COORDS = ["--ra", f"{VARIABLE.ra}", "--dec", f"{VARIABLE.dec}"]
ZP_AB = {"G": 25.8010, "BP": 25.3540, "RP": 25.1040}  # Riello et al. 2021, table 3
BANDS = {"G": "gaia::g", "BP": "gaia::gbp", "RP": "gaia::grp"}


def EMULATORS():
    return [GaiaArchiveEmulator(), SesameEmulator(), MastResolverEmulator()]


def gaia(stdq) -> GaiaArchiveEmulator:
    emulator = stdq.server.emulator("gaia")
    assert isinstance(emulator, GaiaArchiveEmulator)
    return emulator


def query(stdq, *args: str):
    result = stdq.run("--json", "query", "gaia", *args)
    assert result.returncode == 0, (result.stdout, result.stderr)
    info = json.loads(result.stdout)
    product_dir = Path(info["path"]).parent
    table = list(csv.DictReader(io.StringIO(Path(info["path"]).read_text())))
    meta = json.loads((product_dir / "product.json").read_text())
    return info, product_dir, table, meta


def raw_epochs(product_dir: Path) -> dict[str, dict[str, str]]:
    """The epoch rows of the kept DataLink answers, by 'transit_id:band' (csv module only)."""
    rows: dict[str, dict[str, str]] = {}
    for path in sorted((product_dir / "raw").glob("epochs-*.zip")):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                for row in csv.DictReader(io.StringIO(archive.read(name).decode())):
                    rows[f"{row['transit_id']}:{row['band']}"] = row
    return rows


def datalink_requests(stdq):
    return [r for r in stdq.server.log_of(emulator="gaia", path=r"/data-server/data")]


def form_of(logged) -> dict[str, str]:
    from urllib.parse import parse_qs

    return {k: v[-1] for k, v in parse_qs(logged.body, keep_blank_values=True).items()}


# -- values by hand --------------------------------------------------------------------------


def test_zero_point_conversion_by_hand(stdq):
    from stdq.processors.gaia import ujy_per_e_s

    by_hand = {"G": 10 ** (-0.4 * 1.9010), "BP": 10 ** (-0.4 * 1.4540), "RP": 10 ** (-0.4 * 1.2040)}
    print({b: round(v, 6) for b, v in by_hand.items()})  # G 0.173620, BP 0.262060, RP 0.329913
    assert by_hand["G"] == pytest.approx(0.1736201, rel=1e-6)
    # the same from 3631 Jy at AB 0: 3631e6 uJy * 10**(-0.4 * 25.8010)
    assert pytest.approx(by_hand["G"], rel=1e-3) == 3631e6 * 10 ** (-0.4 * 25.8010)
    for band, value in by_hand.items():
        assert ujy_per_e_s(band) == pytest.approx(value, rel=1e-12)

    info, product_dir, table, _ = query(stdq, *COORDS)
    raws = raw_epochs(product_dir)
    # transit 0 in G: exactly 10000 e-/s -> 1736.201 uJy -> AB 25.8010 - 2.5 log10(10000) = 15.8010
    first = next(r for r in table if r["source_row_id"] == "17000000000000000:G")
    assert float(first["flux_ujy"]) == pytest.approx(1736.2010, rel=1e-6)
    assert float(first["magnitude"]) == pytest.approx(15.8010, abs=1e-9)
    assert float(first["gaia_flux_e_s"]) == 10000.0
    seen = set()
    for row in table:
        raw = raws[row["source_row_id"]]
        band = raw["band"]
        scale = 10 ** (-0.4 * (ZP_AB[band] - 23.9))
        assert row["filter"] == band and row["band"] == BANDS[band]
        assert float(row["flux_ujy"]) == pytest.approx(float(raw["flux"]) * scale, rel=1e-12)
        assert float(row["flux_err_ujy"]) == pytest.approx(float(raw["flux_error"]) * scale, rel=1e-12)
        assert float(row["magnitude"]) == pytest.approx(ZP_AB[band] - 2.5 * math.log10(float(raw["flux"])),
                                                        abs=1e-9)
        assert row["flux_kind"] == "total" and row["zpsys"] == "ab" and row["survey"] == "Gaia"
        assert row["object_id"] == str(VARIABLE_ID) == raw["source_id"]
        seen.add(band)
    assert seen == {"G", "BP", "RP"}
    assert info["rows"] == 119  # 40 transits x 3 bands, less the BP row without a flux


def test_bjd_tcb_to_utc_against_an_independent_astropy_computation():
    """UTC at the geocentre -> BJD(TCB) with astropy's light_travel_time; our inverse gives it back."""
    import numpy as np
    from astropy import units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    from stdq.photometry import quiet_astropy
    from stdq.processors.gaia import bjd_tcb_to_utc_mjd

    quiet_astropy()
    utc_mjd = np.array([56864.0, 56897.25, 57200.61, 57388.9, 57754.4, 57901.0])  # 2014-07 .. 2017-05
    ras = np.array([83.401125, 0.0, 180.0, 266.4168, 300.0, 45.0])
    decs = np.array([-2.317833, 89.0, 0.0, -29.0078, 23.4, -60.0])
    geocentre = EarthLocation.from_geocentric(0.0, 0.0, 0.0, unit=u.m)
    t = Time(utc_mjd, format="mjd", scale="utc", location=geocentre)
    ltt = t.light_travel_time(SkyCoord(ras, decs, unit="deg"), kind="barycentric", ephemeris="builtin")
    bary = (t.tdb + ltt).tcb
    gaia_time = (bary.jd1 - 2455197.5) + bary.jd2
    back = bjd_tcb_to_utc_mjd(gaia_time, ras, decs)
    diff_s = (back - utc_mjd) * 86400.0
    print("light travel times (s):", np.round(ltt.to_value(u.s), 3))
    print("difference ours - astropy (microseconds):", np.round(diff_s * 1e6, 3))
    assert np.abs(ltt.to_value(u.s)).max() > 100  # the correction removed is large
    assert np.abs(diff_s).max() < 1e-3  # well under a millisecond (float64 MJD: ~1 us)
    # no correction at all would be off by the light travel time
    naive = (Time(2455197.5, gaia_time, format="jd", scale="tcb").utc.mjd - utc_mjd) * 86400.0
    assert np.abs(naive).max() > 100


def test_product_times_against_astropy(stdq):
    """Each row's mjd, taken back to the barycentre by astropy alone, is the archive's time."""
    import numpy as np
    from astropy import units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    _, product_dir, table, _ = query(stdq, *COORDS)
    raws = raw_epochs(product_dir)
    mjd = np.array([float(r["mjd"]) for r in table])
    ra, dec = float(table[0]["ra"]), float(table[0]["dec"])
    t = Time(mjd, format="mjd", scale="utc", location=EarthLocation.from_geocentric(0, 0, 0, unit=u.m))
    ltt = t.light_travel_time(SkyCoord(ra, dec, unit="deg"), kind="barycentric", ephemeris="builtin")
    bary = (t.tdb + ltt).tcb
    expected = np.array([float(raws[r["source_row_id"]]["time"]) for r in table])
    diff_s = ((bary.jd1 - 2455197.5) + bary.jd2 - expected) * 86400.0
    print("max |difference| (ms):", round(float(np.abs(diff_s).max()) * 1e3, 4))
    assert np.abs(diff_s).max() < 1e-3
    for row in table:
        raw = raws[row["source_row_id"]]
        assert float(row["gaia_bjd_tcb"]) == pytest.approx(float(raw["time"]) + 2455197.5, abs=1e-9)
    assert mjd.min() >= 56863 and mjd.max() <= 57902  # DR3: 2014-07-25 .. 2017-05-28


# -- the nearest-object rule -------------------------------------------------------------------


def test_nearest_source_with_epochs_and_a_neighbour_in_the_cone(stdq):
    _, _, table, meta = query(stdq, *COORDS)
    notes = meta["service_notes"]
    cone = notes["objects_in_cone"]
    assert [c["source_id"] for c in cone] == [str(VARIABLE_ID), str(NEIGHBOUR_ID), str(NO_EPOCH_ID)]
    assert [c["sep_arcsec"] for c in cone] == pytest.approx([0.3202, 0.7106, 0.9], abs=1e-3)
    assert [c["has_epoch_photometry"] for c in cone] == [True, True, False]
    assert notes["selected_objects"] == [str(VARIABLE_ID)]
    assert {r["object_id"] for r in table} == {str(VARIABLE_ID)}
    assert float(table[0]["sep_arcsec"]) == pytest.approx(0.3202, abs=1e-3)
    calls = datalink_requests(stdq)
    assert len(calls) == 1 and form_of(calls[0])["ID"] == str(VARIABLE_ID)


def test_all_objects_fetches_every_source_with_epochs_in_one_call(stdq):
    info, _, table, meta = query(stdq, *COORDS, "--all-objects")
    assert {r["object_id"] for r in table} == {str(VARIABLE_ID), str(NEIGHBOUR_ID)}
    assert sum(r["object_id"] == str(NEIGHBOUR_ID) for r in table) == 36
    calls = datalink_requests(stdq)
    assert len(calls) == 1
    assert form_of(calls[0])["ID"] == f"{VARIABLE_ID},{NEIGHBOUR_ID}"  # never the one without epochs
    assert meta["service_notes"]["selected_objects"] == [str(VARIABLE_ID), str(NEIGHBOUR_ID)]


def test_only_sources_without_epochs_is_no_data(stdq):
    from stdq.testing import sky

    ra, dec = sky.offset(VARIABLE.ra, VARIABLE.dec, 0.0, 0.9)
    result = stdq.run("query", "gaia", "--ra", f"{ra}", "--dec", f"{dec}", "--radius", "0.2")
    line = assert_clean_error(result, 5)
    assert "no Gaia DR3 source with epoch photometry" in line and str(NO_EPOCH_ID) in line
    assert not datalink_requests(stdq)


def test_empty_cone_is_no_data(stdq):
    result = stdq.run("query", "gaia", "--ra", "150.0", "--dec", "-30.0")
    assert "no Gaia DR3 source within 1 arcsec" in assert_clean_error(result, 5)


# -- DataLink calls ---------------------------------------------------------------------------


def test_12000_ids_are_asked_in_3_datalink_calls(stdq):
    info, _, table, meta = query(stdq, "--ra", f"{CROWDED.ra}", "--dec", f"{CROWDED.dec}",
                                 "--radius", "60", "--all-objects")
    calls = gaia(stdq).datalink_calls
    print("DataLink calls (ids per call):", [c["ids"] for c in calls])
    assert [c["ids"] for c in calls] == [5000, 5000, 2000]
    assert len(datalink_requests(stdq)) == 3
    asked = [i for r in datalink_requests(stdq) for i in form_of(r)["ID"].split(",")]
    assert len(asked) == len(set(asked)) == CROWD_COUNT
    assert info["rows"] == CROWD_COUNT and len(table) == CROWD_COUNT
    assert meta["service_notes"]["datalink_calls"] == 3
    assert meta["service_notes"]["objects_in_cone_count"] == CROWD_COUNT


def test_datalink_is_asked_individual_never_combined(stdq):
    query(stdq, *COORDS, "--all-objects")
    for logged in datalink_requests(stdq):
        form = form_of(logged)
        assert form["DATA_STRUCTURE"] == "INDIVIDUAL"
        assert form["RETRIEVAL_TYPE"] == "EPOCH_PHOTOMETRY" and form["RELEASE"] == "Gaia DR3"
    # the emulator, like the archive, answers COMBINED with HTTP 500
    answer = httpx.post(stdq.server.url("gaia") + "/data-server/data", data={
        "RETRIEVAL_TYPE": "EPOCH_PHOTOMETRY", "ID": str(VARIABLE_ID), "DATA_STRUCTURE": "COMBINED",
        "RELEASE": "Gaia DR3", "FORMAT": "csv"})
    assert answer.status_code == 500


def test_votable_answers_give_the_same_rows(stdq):
    _, _, csv_table, _ = query(stdq, *COORDS)
    stdq.write_settings("")
    text = stdq.config_path.read_text().replace(
        f'url = "{stdq.server.url("gaia")}"', f'url = "{stdq.server.url("gaia")}"\nformat = "votable"')
    stdq.config_path.write_text(text)
    _, product_dir, vot_table, meta = query(stdq, *COORDS, "--all-objects")
    assert meta["service_notes"]["format"] == "votable"
    assert {p.name for p in (product_dir / "raw").iterdir()} == {"cone.vot", "epochs-001.zip"}
    vot = {r["source_row_id"]: r for r in vot_table if r["object_id"] == str(VARIABLE_ID)}
    assert len(vot) == len(csv_table) == 119
    for row in csv_table:
        other = vot[row["source_row_id"]]
        for key in ("mjd", "flux_ujy", "flux_err_ujy", "quality_flag", "band"):
            assert other[key] == row[key], key


# -- flags -----------------------------------------------------------------------------------


def test_rejections_and_other_flags_are_quality_bits(stdq):
    stdq.write_settings("")
    text = stdq.config_path.read_text().replace(
        f'url = "{stdq.server.url("gaia")}"', f'url = "{stdq.server.url("gaia")}"\nother_flags_mask = 4096')
    stdq.config_path.write_text(text)
    _, _, table, meta = query(stdq, *COORDS)
    flags = {r["source_row_id"]: int(r["quality_flag"]) for r in table}
    t = 17_000_000_000_000_000
    assert flags[f"{t + 9 * 1_000_003}:G"] == 128  # rejected_by_variability
    assert flags[f"{t + 13 * 1_000_003}:RP"] == 1  # rejected_by_photometry (with a flux)
    assert flags[f"{t + 17 * 1_000_003}:G"] == 1  # other_flags 4096 in other_flags_mask
    assert sum(1 for v in flags.values() if v) == 3
    assert f"{t + 5 * 1_000_003}:BP" not in flags  # no flux: left out
    assert meta["left_out"] == {"non-finite flux or error": 1}
    assert meta["processor"]["cuts"]["other_flags_mask"] == 4096


# -- releases ------------------------------------------------------------------------------------


def test_unknown_release_is_exit_2_listing_the_known_ones(stdq):
    result = stdq.run("query", "gaia", *COORDS, "--release", "dr5")
    line = assert_clean_error(result, 2)
    assert "dr3" in line and "dr4" in line
    assert not stdq.server.log_of(emulator="gaia")


def test_dr4_not_served_yet_is_a_clear_failure(stdq):
    result = stdq.run("query", "gaia", *COORDS, "--release", "dr4")
    text = result.stderr
    assert_clean_error(result, 1)
    assert "does not serve DR4 yet" in text and "gaiadr4.gaia_source" in text and "--release dr3" in text
    assert not datalink_requests(stdq)


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["tap-server", "data-server"])
def test_html_page_is_temporary_quoting_it(stdq, recorded_waits, where):
    stdq.server.add_fault("html", rf"/gaia/{where}/", times=5)
    result = stdq.run("query", "gaia", *COORDS)
    line = assert_clean_error(result, 75)
    assert "an HTML page" in result.stderr, result.stderr
    assert "gaia" in line
    assert not list(stdq.data_dir.rglob("photometry.csv"))


@pytest.mark.parametrize("where", ["tap-server", "data-server"])
def test_5xx_then_success_is_retried(stdq, recorded_waits, where):
    stdq.server.add_fault("503", rf"/gaia/{where}/", times=2)
    info, _, table, _ = query(stdq, *COORDS)
    assert info["rows"] == 119
    assert len(recorded_waits) == 2
    statuses = [r.status for r in stdq.server.log_of(emulator="gaia", path=where)]
    assert statuses == [503, 503, 200]


def test_persistent_5xx_is_exit_75(stdq, recorded_waits):
    stdq.server.add_fault("500", r"/gaia/data-server/", times=10)
    result = stdq.run("query", "gaia", *COORDS)
    line = assert_clean_error(result, 75)
    assert "500" in result.stderr and "gaia" in line


def test_429_with_retry_after_then_success(stdq, recorded_waits):
    stdq.server.add_fault("429", r"/gaia/tap-server/", times=1, retry_after=1)
    info, _, _, _ = query(stdq, *COORDS)
    assert info["rows"] == 119
    assert recorded_waits == [1.0]


def test_hang_is_exit_75(stdq, recorded_waits):
    stdq.write_settings("")
    stdq.config_path.write_text(stdq.config_path.read_text().replace("timeout = 5", "timeout = 0.1"))
    stdq.server.add_fault("hang", r"/gaia/data-server/", times=3, seconds=0.3)
    result = stdq.run("query", "gaia", *COORDS)
    assert_clean_error(result, 75)


# -- services list/show ---------------------------------------------------------------------------


def test_services_list_and_show(stdq):
    listed = stdq.run("--json", "services", "list")
    assert listed.returncode == 0, listed.stderr
    names = [s["name"] for s in json.loads(listed.stdout)]
    assert "gaia" in names
    shown = stdq.run("--json", "services", "show", "gaia")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for key in ("format", "batch_size", "snr_threshold", "limit_nsigma", "other_flags_mask"):
        assert key in text, key
    assert "5000" in text and "gaia_photometry" in text
    plain = stdq.run("services", "show", "gaia")
    assert plain.returncode == 0 and "DataLink" in plain.stdout


# -- more ----------------------------------------------------------------------------------------


def test_time_bounds_leave_out_and_count(stdq):
    _, _, full, _ = query(stdq, *COORDS)
    cut = sorted(float(r["mjd"]) for r in full)[60]
    info, _, table, meta = query(stdq, *COORDS, "--mjd-min", f"{cut}", "--force")
    assert all(float(r["mjd"]) >= cut for r in table)
    assert len(full) - len(table) == 60
    # and the BP row without a flux (transit 5, early): each row counts under its first reason
    assert meta["left_out"] == {"outside the requested time range": 61}


def test_probe_for_doctor(stdq):
    from stdq.config import load_settings
    from stdq.http import make_client
    from stdq.registry import registry_for

    settings = load_settings(stdq.config_path)
    service = registry_for(settings).service("gaia")
    client = make_client("gaia", settings.http)
    try:
        assert service.probe(client).startswith("HTTP 200")
        stdq.server.add_fault("html", r"/gaia/tap-server/", times=1)
        from stdq.errors import TemporaryFailure

        with pytest.raises(TemporaryFailure):
            service.probe(client)
    finally:
        client.close()


def test_library_query(stdq):
    from stdq import Stdq

    with Stdq(config=stdq.config_path, data_dir=stdq.data_dir) as lib:
        result = lib.query("gaia", ra=VARIABLE.ra, dec=VARIABLE.dec, release="DR3")
        table = result.table
    assert len(table) == 119
    assert set(table["band"]) == {"gaia::g", "gaia::gbp", "gaia::grp"}
    assert table["gaia_bjd_tcb"].min() > 2456800


def test_hostile_values_are_left_out_and_counted(stdq):
    rows = gaia(stdq).epochs[VARIABLE_ID]
    rows[3]["flux"] = float("inf")  # G of transit 1
    rows[4]["flux_error"] = 0.0  # BP of transit 1
    rows[6]["time"] = -5000.0  # G of transit 2: 1996, before Gaia
    rows[7]["time"] = float("nan")
    rows[8]["time"] = 99999.0  # beyond 2200: not converted
    _, _, table, meta = query(stdq, *COORDS)
    assert len(table) == 119 - 5
    assert meta["left_out"] == {
        "non-finite flux or error": 2,  # inf, and the BP row without a flux
        "flux error <= 0": 1,
        "epoch not a number": 2,
        "epoch before Gaia began": 1,
    }


def test_an_id_beyond_int64_is_a_clear_failure(stdq):
    gaia(stdq).epochs[VARIABLE_ID][0]["transit_id"] = 2**64
    result = stdq.run("query", "gaia", *COORDS)
    line = assert_clean_error(result, 1)
    assert "transit_id" in line and "64-bit" in line


def test_a_broken_zip_is_a_clear_failure(stdq, monkeypatch):
    emulator = gaia(stdq)
    from stdq.testing.fakeserver import Response

    monkeypatch.setattr(emulator, "datalink", lambda params: Response(
        200, b"PK\x03\x04 this is not a zip", {"Content-Type": "application/zip"}))
    result = stdq.run("query", "gaia", *COORDS)
    assert "broken zip" in assert_clean_error(result, 1)
    assert not list(stdq.data_dir.rglob("photometry.csv"))


def test_a_bare_csv_answer_is_read_too(stdq, monkeypatch):
    """An archive that ignores USE_ZIP_ALWAYS for one id answers the file itself."""
    emulator = gaia(stdq)
    real = emulator.datalink
    monkeypatch.setattr(emulator, "datalink", lambda params: real({**params, "USE_ZIP_ALWAYS": "false"}))
    info, product_dir, table, _ = query(stdq, *COORDS)
    assert info["rows"] == 119
    assert (product_dir / "raw" / "epochs-001.csv").is_file()


def test_reprocess_gives_the_same_rows(stdq):
    info, product_dir, table, _ = query(stdq, *COORDS, "--all-objects")
    before = Path(info["path"]).read_text()
    result = stdq.run("--json", "products", "reprocess", str(info["product_id"]))
    assert result.returncode == 0, result.stderr
    assert Path(info["path"]).read_text() == before
    assert len(datalink_requests(stdq)) == 1  # nothing asked again


def test_interpolated_ephemeris_is_the_direct_one_within_metres():
    """Many epochs: epv00 on a 0.5-day grid, cubic Hermite between nodes (< 50 m = 0.2 us)."""
    import numpy as np
    from astropy import units as u
    from astropy.coordinates import get_body_barycentric_posvel, solar_system_ephemeris
    from astropy.time import Time

    from stdq.processors.gaia import earth_posvel

    days = 1666.0 + np.random.default_rng(7).random(5000) * 1040.0  # the DR3 span
    t = Time(2455197.5, days, format="jd", scale="tdb")
    r, v = earth_posvel(t)
    with solar_system_ephemeris.set("builtin"):
        pos, vel = get_body_barycentric_posvel("earth", t)
    dr = float(np.abs(r - pos.xyz.to_value(u.m)).max())
    dv = float(np.abs(v - vel.xyz.to_value(u.m / u.s)).max())
    print(f"max |position error| {dr:.2f} m, max |velocity error| {dv:.2e} m/s")
    assert dr < 50.0 and dv < 0.01


def test_hostile_epoch_files_never_crash_the_processor(tmp_path):
    """Random values in every column of a DataLink CSV: rows or a StdqError, never another error."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from stdq.errors import StdqError
    from stdq.processors.gaia import GaiaEpochPhotometryProcessor, read_epochs
    from stdq.testing.gaia import EPOCH_COLUMNS, render, variable_epochs

    base = variable_epochs()[:6]
    value = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
        st.sampled_from(["G", "BP", "RP", "g", "X", "", "true", "nan", "-inf", "1e999"]),
    )

    class Product:
        id = 1
        params: dict = {}
        target = {"ra": VARIABLE.ra, "dec": VARIABLE.dec}

        def __init__(self):
            self.left_out: dict = {}

        def leave_out(self, reason, n=1):
            self.left_out[reason] = self.left_out.get(reason, 0) + n

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([c for c, _ in EPOCH_COLUMNS]), value),
                    max_size=8))
    def check(changes):
        rows = [dict(r) for r in base]
        for i, column, v in changes:
            rows[i][column] = v
        kinds = dict(EPOCH_COLUMNS)
        body = render([(c, "char") for c in kinds], rows, "csv", tap=False)
        try:
            epochs = read_epochs(body)
            if len(epochs):
                GaiaEpochPhotometryProcessor().rows(Product(), epochs, [], [])
        except StdqError:
            pass

    check()


# -- stdq update: a frozen release is not fetched again ----------------------------------------


@pytest.fixture
def named(stdq):
    """The variable as a local target (update asks by name)."""
    added = stdq.run("targets", "add", VARIABLE.name, "--ra", f"{VARIABLE.ra}", "--dec", f"{VARIABLE.dec}")
    assert added.returncode == 0, added.stderr
    return stdq


def update_item(stdq, *args: str) -> dict:
    result = stdq.run("--json", "update", VARIABLE.name, "--services", "gaia", *args)
    assert result.returncode == 0, (result.stdout, result.stderr)
    (item,) = json.loads(result.stdout)
    return item


def test_update_of_a_frozen_release_asks_nothing_once_it_is_stored(named):
    stdq = named
    first = update_item(stdq)  # no product yet: the whole history is fetched
    assert first["state"] == "succeeded" and first["job_id"] is not None and first["mjd_min"] is None
    assert first["new_rows"] == first["rows_total"] > 0
    assert len(datalink_requests(stdq)) == 1
    asked = len(stdq.server.log_of(emulator="gaia"))
    second = update_item(stdq)
    # DR3 never changes: 0 new rows, no job, not one request to the archive
    assert second["state"] == "unchanged" and second["job_id"] is None and second["error"] is None
    assert second["new_rows"] == 0 and second["new_detections"] == 0
    assert second["rows_total"] == first["rows_total"] and second["latest_path"] == first["latest_path"]
    assert len(stdq.server.log_of(emulator="gaia")) == asked
    jobs = json.loads(stdq.run("--json", "jobs", "list").stdout)
    assert [j["id"] for j in jobs] == [first["job_id"]]
    # `stdq query gaia --force` still fetches it again
    info, _, table, _ = query(stdq, VARIABLE.name, "--force")
    assert len(datalink_requests(stdq)) == 2 and len(table) == first["rows_total"]


def test_update_fetches_when_the_stored_product_left_part_of_the_release_out(named):
    stdq = named
    _, _, table, meta = query(stdq, VARIABLE.name, "--mjd-max", "57400")  # before DR3 ended
    assert table and all(float(r["mjd"]) <= 57400 for r in table)
    assert len(datalink_requests(stdq)) == 1
    item = update_item(stdq)  # from the newest stored epoch on: that is not stored yet
    assert item["state"] == "succeeded" and len(datalink_requests(stdq)) == 2
    assert item["mjd_min"] == pytest.approx(max(float(r["mjd"]) for r in table) - 1.0, abs=1e-6)
    assert item["new_rows"] > 0
    assert update_item(stdq)["state"] == "unchanged"  # now the whole span after it is stored
    assert len(datalink_requests(stdq)) == 2


def test_update_unchanged_needs_the_same_release_and_a_source_near_the_target():
    from types import SimpleNamespace

    from stdq.records import Target
    from stdq.services.gaia import GaiaService

    def product(tmp: Path, pid: int, **params) -> SimpleNamespace:
        folder = tmp / str(pid)
        folder.mkdir()
        meta = {"query": {"params": {"release": "dr3", **params}},
                "service_notes": {"selected_objects": [VARIABLE_ID],
                                  "objects_in_cone": [{"source_id": VARIABLE_ID, "ra": VARIABLE.ra,
                                                       "dec": VARIABLE.dec}]}}
        (folder / "product.json").write_text(json.dumps(meta))
        return SimpleNamespace(id=pid, path=folder, rows=80)

    import tempfile

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        here = Target(ra=VARIABLE.ra, dec=VARIABLE.dec, name=VARIABLE.name)
        moved = Target(ra=VARIABLE.ra, dec=VARIABLE.dec + 1.5 / 3600, name=VARIABLE.name)  # 1.5"
        stored = product(tmp, 1)
        reason = GaiaService.update_unchanged(here, [stored], 57000.0)
        assert reason is not None and "frozen release" in reason and "product 1" in reason
        assert GaiaService.update_unchanged(here, [stored], None) is not None  # the whole history
        assert GaiaService.update_unchanged(moved, [stored], 57000.0) is None  # not the same source
        assert GaiaService.update_unchanged(here, [product(tmp, 2, release="dr4")], 57000.0) is None
        late = product(tmp, 3, mjd_min=57500.0)
        assert GaiaService.update_unchanged(here, [late], 57000.0) is None  # 57000..57500 not stored
        assert GaiaService.update_unchanged(here, [late], 57600.0) is not None
        early = product(tmp, 4, mjd_max=57800.0)  # DR3 ends at MJD 57901.4
        assert GaiaService.update_unchanged(here, [early], 57000.0) is None
        empty = product(tmp, 5)
        empty.rows = 0
        assert GaiaService.update_unchanged(here, [empty], 57000.0) is None


def test_update_in_the_background_says_no_job_for_an_unchanged_item(named):
    stdq = named
    assert update_item(stdq)["state"] == "succeeded"
    result = stdq.run("update", VARIABLE.name, "--services", "gaia", "--background")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{VARIABLE.name}\tgaia\tno job\tunchanged\n"


def test_a_time_range_outside_the_release_asks_nothing(stdq):
    # DR3: epochs from 2014-07-25 to 2017-05-28 (MJD 56863-57901); 58000 is 2017-09-04
    for bounds in (("--mjd-min", "58000"), ("--mjd-max", "56000"), ("--date-min", "2024-01-01")):
        result = stdq.run("query", "gaia", *COORDS, *bounds)
        assert result.returncode == 5, (bounds, result.stderr)
        assert "has epochs between MJD 56862 and 57902 only" in result.stderr
        assert "nothing was asked" in result.stderr
    assert stdq.server.log_of(emulator="gaia") == []
    # a range overlapping the release is asked as before
    _, _, table, _ = query(stdq, *COORDS, "--mjd-min", "57800")
    assert table and all(float(r["mjd"]) >= 57800 for r in table)
