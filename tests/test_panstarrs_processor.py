"""The Pan-STARRS processor and MAST answer parsers, on small files the tests write, and on real answers.

Expected values are computed here from the documented rules (photometry.md
sections 2, 4, 6), from the raw numbers, not with the code under test:
flux_ujy = psfFlux[Jy] * 1e6; m = 23.9 - 2.5 log10(flux_ujy); dm = 2.5/ln(10) * err/flux;
UTC = TAI - (TAI-UTC), TAI-UTC = 34 s before 2012-07-01 (MJD 56109), 35 s before
2015-07-01 (MJD 57204), 36 s before 2017-01-01 (MJD 57754).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stdq import photometry
from stdq.errors import QueryFailed
from stdq.processors.panstarrs import (
    DETECTION_COLUMNS,
    MEAN_COLUMNS,
    PanstarrsProcessor,
    parse_metadata,
    read_mast_csv,
    read_mast_json,
    unknown_columns,
)
from stdq.store import Store

TARGET = {"name": "test target", "ra": 210.910674, "dec": 54.311650, "resolver": "coordinates"}
OBJ = "173142109106893051"  # > 2**53: a float would turn it into 173142109106893056
OTHER = "173142109112345678"
BAD_INFOFLAG = 8 + 16 + 128 + 1024 + 2048 + 4096 + 8192 + 32768 + 65536 + 131072  # photometry.md
BLEND_BITS = 0x100 | 0x4000


def tai_minus_utc(mjd_tai: float) -> int:
    """TAI-UTC in seconds, from the leap-second dates (by hand, for PS1's years)."""
    if mjd_tai < 56109:
        return 34
    if mjd_tai < 57204:
        return 35
    if mjd_tai < 57754:
        return 36
    return 37


def sep_arcsec(ra1, dec1, ra2, dec2) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    h = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((r2 - r1) / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(h))) * 3600


# objID, detectID, filterID, obsTime (TAI), ra, dec, psfFlux, psfFluxErr, major, minor,
# psfQfPerfect, apFlux, apFluxErr, infoFlag, infoFlag2, infoFlag3
ROWS = [
    (OBJ, "1612345678900000000", 1, 55300.25, 210.91070, 54.31161, 3.631e-05, 3.631e-07, 1.3, 1.15, 0.998, 3.7e-05, 4e-07, 0, 0, 0),
    (OBJ, "1612345678900001013", 2, 55650.5, 210.91071, 54.31162, 2.5e-04, 2e-06, 1.3, 1.15, 0.998, 2.6e-04, 3e-06, 0x8, 5, 7),
    (OBJ, "1612345678900002026", 3, 56400.75, 210.91072, 54.31160, 3.0e-04, 2.5e-06, 1.3, 1.15, 0.5, 3.1e-04, 3e-06, 0x100, 0, 0),
    (OBJ, "1612345678900003039", 4, 56800.125, 210.91069, 54.31163, 3.2e-04, 2.7e-06, 1.3, 1.15, 0.95, 3.3e-04, 3e-06, 0x1000 | 0x4000, 0, 0),
    (OBJ, "1612345678900004052", 5, 57500.375, 210.91070, 54.31161, 3.4e-04, 2.9e-06, 1.3, 1.15, -999, 3.5e-04, 3e-06, 0x2, 0, 0),
    (OBJ, "1612345678900005065", 1, 57501.0, 210.91070, 54.31161, -999, -999, -999, -999, 0.99, -999, -999, 0, 0, 0),
    (OBJ, "1612345678900006078", 2, 57502.0, 210.91070, 54.31161, 0.0, 1e-06, 1.3, 1.15, 0.99, 1e-06, 1e-06, 0, 0, 0),
    (OBJ, "1612345678900007091", 3, 57503.0, 210.91070, 54.31161, 3.0e-04, 0.0, 1.3, 1.15, 0.99, 3e-04, 3e-06, 0, 0, 0),
    (OBJ, "1612345678900000000", 1, 55300.25, 210.91070, 54.31161, 3.631e-05, 3.631e-07, 1.3, 1.15, 0.998, 3.7e-05, 4e-07, 0, 0, 0),
    (OTHER, "1612345679900000000", 3, 55700.5, 210.91105, 54.31190, 1.0e-05, 1e-07, 1.3, 1.15, 0.99, 1e-05, 1e-07, 0, 0, 0),
]
GOOD = ROWS[:5]  # the rows of OBJ that stay: -999 flux, zero flux, zero error and the duplicate leave
MEAN_HEADER = "objID,raMean,decMean,epochMean,nDetections,gMeanPSFMag,gMeanPSFMagErr,gMeanPSFMagNpt,ng,rMeanPSFMag,rMeanPSFMagErr,rMeanPSFMagNpt,nr,gQfPerfect,rQfPerfect,distance"
MEAN_ROWS = [
    f"{OBJ},210.9107216,54.3116083,56357.4411,50,18.2,0.005,9,10,-999.0,-999.0,0,0,0.998,-999.0,5.0e-05",
    f"{OTHER},210.9111,54.3119,55700.5,12,20.5,0.02,-999,3,20.6,0.03,2,2,0.5,0.99,4.2e-04",
]


def detection_csv(rows=ROWS) -> bytes:
    lines = [",".join(DETECTION_COLUMNS)]
    lines += [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def detection_json(rows=ROWS) -> bytes:
    types = {"objID": "long", "detectID": "long", "filterID": "unsignedByte", "infoFlag": "long",
             "infoFlag2": "int", "infoFlag3": "int"}
    info = [{"name": c, "type": types.get(c, "double" if c in ("obsTime", "ra", "dec") else "float"),
             "db_type": "NUMBER", "description": ""} for c in DETECTION_COLUMNS]
    return json.dumps({"info": info, "data": [list(r) for r in rows]}).encode()


def mean_csv() -> bytes:
    return ("\n".join([MEAN_HEADER, *MEAN_ROWS]) + "\n").encode()


def make_product(tmp_path, raws: dict[str, bytes], **params):
    store = Store(tmp_path / "data")
    product = store.create_product(
        service="panstarrs", data_product_type="panstarrs_photometry", target=TARGET,
        params={"release": "dr2", "table": "detection", "all_objects": False, **params},
    )
    for name, data in raws.items():
        product.add_raw(name, data)
    return product


def run(product, **settings):
    table = PanstarrsProcessor(settings).process(product)
    return photometry.normalize(table, product_id=product.id)


# -- detections ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_detection_rows_follow_the_documented_rules(tmp_path, fmt):
    data = detection_csv() if fmt == "csv" else detection_json()
    product = make_product(tmp_path, {"mean-p001.csv": mean_csv(), f"detection-{OBJ}-p001.{fmt}": data})
    table = run(product)

    assert list(table.columns[: len(photometry.COLUMNS)]) == photometry.COLUMNS
    assert len(table) == len(GOOD)
    assert product.left_out == {
        "duplicate detectID": 1,
        "detections of other objects in the cone (see --all-objects)": 1,
        "psfFlux missing (-999 or null)": 1,
        "psfFlux = 0": 1,
        "flux error <= 0": 1,
    }
    by_id = {row.source_row_id: row for row in table.itertuples()}
    assert set(by_id) == {r[1] for r in GOOD}
    for raw in GOOD:
        row = by_id[raw[1]]
        _, det_id, fid, obs, ra, dec, flux_jy, err_jy, *_rest = raw
        qf, info = raw[10], raw[13]
        assert row.object_id == OBJ and isinstance(row.object_id, str)
        assert row.filter == "grizy"[fid - 1] and row.band == "ps1::" + "grizy"[fid - 1]
        assert row.survey == "PS1" and row.telescope == "PS1" and row.instrument == "GPC1"
        assert row.flux_ujy == pytest.approx(flux_jy * 1e6, rel=1e-12)
        assert row.flux_err_ujy == pytest.approx(err_jy * 1e6, rel=1e-12, abs=1e-12)
        assert row.mjd == pytest.approx(obs - tai_minus_utc(obs) / 86400.0, abs=1e-9)
        assert row.magnitude == pytest.approx(23.9 - 2.5 * math.log10(flux_jy * 1e6), abs=1e-9)
        if err_jy > 0:
            assert row.magnitude_error == pytest.approx(2.5 / math.log(10) * err_jy / flux_jy, rel=1e-9)
            assert row.snr == pytest.approx(flux_jy / err_jy, rel=1e-9)
        else:
            assert math.isnan(row.magnitude_error) and math.isnan(row.snr)
        expected_flag = (
            (1 if info & BAD_INFOFLAG else 0)
            | (16 if info & BLEND_BITS else 0)
            | (8 if not qf >= 0.9 else 0)  # -999 counts as low
        )
        assert row.quality_flag == expected_flag, raw
        assert row.detected is True or row.detected == True  # noqa: E712
        assert math.isnan(row.limit) and math.isnan(row.image_depth)
        assert row.flux_kind == "total" and row.n_combined == 1 and row.zp == 23.9
        assert row.sep_arcsec == pytest.approx(sep_arcsec(TARGET["ra"], TARGET["dec"], ra, dec), abs=1e-6)
        assert row.ps1_infoflag == info and row.ps1_filterid == fid
        assert row.ps1_obstime_tai == obs
    # the flags by hand for the special rows
    assert by_id["1612345678900000000"].quality_flag == 0
    assert by_id["1612345678900001013"].quality_flag == 1  # FAIL
    assert by_id["1612345678900002026"].quality_flag == 16 | 8  # BLEND, psfQfPerfect 0.5
    assert by_id["1612345678900003039"].quality_flag == 1 | 16  # SATURATED + EXT_LIMIT
    assert by_id["1612345678900004052"].quality_flag == 8  # psfQfPerfect -999
    # TAI-UTC of 34, 35 and 36 s all occur
    offsets = {round((r.ps1_obstime_tai - r.mjd) * 86400, 6) for r in table.itertuples()}
    assert offsets == {34.0, 35.0, 36.0}
    assert list(table["mjd"]) == sorted(table["mjd"])
    assert table.loc[table.source_row_id == "1612345678900000000", "time_utc"].item() == "2010-04-14T05:59:26.000Z"


def test_csv_and_json_answers_give_the_same_table(tmp_path):
    a = run(make_product(tmp_path / "a", {f"detection-{OBJ}-p001.csv": detection_csv()}, all_objects=True))
    b = run(make_product(tmp_path / "b", {f"detection-{OBJ}-p001.json": detection_json()}, all_objects=True))
    assert len(a) == len(b) == len(GOOD) + 1  # all objects: OTHER's row too
    cols = [c for c in a.columns if c != "product_id"]
    assert a[cols].astype(str).equals(b[cols].astype(str))


def test_all_objects_keeps_the_neighbour_and_pages_are_joined(tmp_path):
    page1 = detection_csv(ROWS[:3])
    page2 = detection_csv(ROWS[3:])
    product = make_product(
        tmp_path, {"mean-p001.csv": mean_csv(), f"detection-{OBJ}-p001.csv": page1, f"detection-{OBJ}-p002.csv": page2},
        all_objects=True,
    )
    table = run(product)
    assert set(table.object_id) == {OBJ, OTHER}
    other = table[table.object_id == OTHER].iloc[0]
    assert other.sep_arcsec == pytest.approx(sep_arcsec(TARGET["ra"], TARGET["dec"], 210.91105, 54.31190), abs=1e-6)


def test_a_header_only_last_page_leaves_the_columns_typed(tmp_path, monkeypatch):
    """The header-only page that ends a paged answer (its columns are ``object``) adds no
    rows and no dtypes: the joined detections keep int64 ids and float fluxes (else every
    value would be a Python object), and the table is the one of the pages with rows."""
    from stdq.processors import panstarrs

    seen = []
    real = PanstarrsProcessor.detection_rows

    def detection_rows(self, product, det, objects):
        seen.append({name: det[name].dtype.kind for name in ("detectID", "filterID", "psfFlux")})
        return real(self, product, det, objects)

    monkeypatch.setattr(PanstarrsProcessor, "detection_rows", detection_rows)
    header_only = (",".join(DETECTION_COLUMNS) + "\n").encode()
    assert panstarrs.parse_answer(header_only, "detection")["psfFlux"].dtype.kind == "O"
    raws = {f"detection-{OBJ}-p001.csv": detection_csv(ROWS[:3]),
            f"detection-{OBJ}-p002.csv": detection_csv(ROWS[3:]),
            f"detection-{OBJ}-p003.csv": header_only}
    paged = run(make_product(tmp_path / "a", raws))
    assert seen == [{"detectID": "i", "filterID": "i", "psfFlux": "f"}]
    whole = run(make_product(tmp_path / "b", {f"detection-{OBJ}-p001.csv": detection_csv()}))
    cols = [c for c in paged.columns if c != "product_id"]
    assert len(paged) == len(GOOD) + 1 and paged[cols].equals(whole[cols])  # + OTHER: no mean answer


def test_time_bounds_are_applied_in_utc(tmp_path):
    # 2013-04-... row: obsTime 56400.75 TAI is 56400.75 - 35/86400 UTC; a bound just above that
    # UTC time (but below the TAI value) must leave it out.
    utc = 56400.75 - 35 / 86400
    product = make_product(tmp_path, {f"detection-{OBJ}-p001.csv": detection_csv()}, mjd_min=utc + 1e-6)
    table = run(product)
    assert "1612345678900002026" not in set(table.source_row_id)
    # OBJ's 2010, 2011 and 2013 rows, and OTHER's 2011 row (no mean answer here: no selection)
    assert product.left_out["outside the requested time range"] == 4
    # a bound exactly at a row's UTC time keeps it
    product = make_product(tmp_path / "b", {f"detection-{OBJ}-p001.csv": detection_csv()}, mjd_min=utc)
    assert "1612345678900002026" in set(run(product).source_row_id)


def test_ids_never_go_through_a_float():
    table = read_mast_csv(detection_csv(), int_columns=("filterID",))
    assert str(table["objID"].iloc[0]) == OBJ
    parsed = read_mast_json(detection_json())
    assert parsed["objID"].iloc[0] == OBJ and parsed["detectID"].iloc[0] == "1612345678900000000"
    # a JSON answer giving the id as a number keeps it exact too
    doc = {"info": [{"name": "objID", "type": "long"}], "data": [[int(OBJ)]]}
    assert read_mast_json(json.dumps(doc))["objID"].iloc[0] == OBJ
    # ... but a float that lost digits is refused, not silently changed
    doc = {"info": [{"name": "objID", "type": "long"}], "data": [[1.7314210910689306e17]]}
    with pytest.raises(QueryFailed):
        read_mast_json(json.dumps(doc))


@pytest.mark.parametrize(
    "body",
    [
        b"<!DOCTYPE html><html><body>Service Unavailable</body></html>",
        detection_csv()[:-40],  # cut in the middle of the last line
        b'{"info": [{"name": "objID"}], "data": [[1, 2]]}',
        b"not json at all",
    ],
)
def test_bad_answers_are_query_failed(tmp_path, body):
    name = f"detection-{OBJ}-p001." + ("json" if body.startswith((b"{", b"not")) else "csv")
    product = make_product(tmp_path, {name: body})
    with pytest.raises(QueryFailed):
        run(product)


def test_empty_and_header_only_answers_have_no_rows():
    assert len(read_mast_csv(b"")) == 0
    assert len(read_mast_csv(",".join(DETECTION_COLUMNS).encode() + b"\n")) == 0


def test_nulls_in_integer_columns_take_the_slow_path(tmp_path):
    text = detection_csv(ROWS[:2]).decode().replace(",0,0,0\n", ",,0,0\n", 1)
    product = make_product(tmp_path, {f"detection-{OBJ}-p001.csv": text.encode()})
    table = run(product)
    assert len(table) == 2 and table.ps1_infoflag.iloc[0] == 0 and table.object_id.iloc[0] == OBJ


# -- mean photometry --------------------------------------------------------------------------


def test_mean_rows_are_averages_per_filter(tmp_path):
    product = make_product(tmp_path, {"mean-p001.csv": mean_csv()}, table="mean")
    table = run(product)
    assert list(table.band) == ["ps1::g"]  # r is -999 for the nearest object
    row = table.iloc[0]
    flux = 10 ** (-0.4 * (18.2 - 23.9))
    assert row.flux_ujy == pytest.approx(flux, rel=1e-12)
    assert row.flux_err_ujy == pytest.approx(flux * 0.005 / (2.5 / math.log(10)), rel=1e-12)
    assert row.magnitude == pytest.approx(18.2, abs=1e-9) and row.magnitude_error == 0.005
    assert row.n_combined == 9 and row.object_id == OBJ and row.source_row_id == f"{OBJ}:g"
    assert row.mjd == pytest.approx(56357.4411 - 35 / 86400, abs=1e-9)
    assert product.left_out == {"no mean PSF magnitude in that filter (-999)": 1}

    product = make_product(tmp_path / "all", {"mean-p001.csv": mean_csv()}, table="mean", all_objects=True)
    table = run(product)
    other = table[table.object_id == OTHER].set_index("filter")
    assert other.loc["g", "n_combined"] == 3  # Npt is -999: the count n<f> instead
    assert other.loc["g", "quality_flag"] == 8 and other.loc["r", "quality_flag"] == 0  # gQfPerfect 0.5


# -- time helpers -------------------------------------------------------------------------------


def test_fast_tai_to_utc_equals_astropy_everywhere():
    from astropy.time import Time

    rng = np.random.default_rng(7)
    leaps = [56109.0, 57204.0, 57754.0]
    values = np.concatenate(
        [rng.uniform(55197, 57760, 20000)] + [leap + rng.uniform(-1.5, 1.5, 2000) for leap in leaps]
        + [np.array([56109 + 34 / 86400, 56109 + 35 / 86400, 57754 + 36.5 / 86400])]
    )
    fast = photometry.tai_to_utc_mjd(values)
    exact = Time(values, format="mjd", scale="tai").utc.mjd
    assert np.array_equal(fast, exact)
    assert np.isnan(photometry.tai_to_utc_mjd(np.array([np.nan, 55300.0]))[0])
    # by hand, one value per epoch
    for tai in (55400.5, 56500.5, 57500.5):
        assert photometry.tai_to_utc_mjd(np.array([tai]))[0] == pytest.approx(tai - tai_minus_utc(tai) / 86400, abs=1e-10)


def test_isot_text_matches_python_datetime():
    import datetime as dt

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.uniform(40000, 70000, 5000), [51544.5, 55300.263306481]])
    texts = photometry.mjd_to_isot(np.concatenate([values, [np.nan]]))
    epoch = dt.datetime(1858, 11, 17)
    for mjd, text in zip(values, texts, strict=False):
        ms = round(mjd * 86_400_000)
        expected = epoch + dt.timedelta(milliseconds=ms)
        assert text == expected.isoformat(timespec="milliseconds") + "Z"
    assert texts[-1] == ""
    assert photometry.mjd_to_isot(np.array([51544.5]))[0] == "2000-01-01T12:00:00.000Z"


# -- real answers (../shared/realdata/mast_panstarrs) ------------------------------------------


def test_real_json_answer_is_parsed(realdata):
    path = realdata / "mast_panstarrs" / "panstarrs.json"
    raw = json.loads(path.read_text())
    table = read_mast_json(path.read_bytes())
    assert list(table.columns) == [c["name"] for c in raw["info"]]
    assert len(table) == len(raw["data"]) == 35
    # objID: a string in the answer, kept exactly
    assert list(table["objID"]) == [row[1] for row in raw["data"]]
    assert table["objID"].iloc[0] == "68960059717834079"
    assert table["iMeanApMag"].dtype == "float64" and table["surveyID"].dtype == "int64"
    assert table["iMeanApMag"].iloc[0] == raw["data"][0][4]
    assert table["objname"].iloc[0] == "PSO J002353.230-323148.612"


def test_real_json_answer_through_the_processor_fails_clearly(tmp_path, realdata):
    """That sample has no raMean/decMean or PSF magnitudes: a clear QueryFailed, not a crash."""
    data = (realdata / "mast_panstarrs" / "panstarrs.json").read_bytes()
    product = make_product(tmp_path, {"mean-p001.json": data}, table="mean")
    with pytest.raises(QueryFailed, match="raMean"):
        run(product)


def test_real_metadata_is_parsed_and_knows_every_column_we_ask_for(realdata):
    path = realdata / "mast_panstarrs" / "panstarrs_columns.json"
    columns = parse_metadata(path.read_bytes())
    assert len(columns) == 124
    by_name = {c["name"]: c for c in columns}
    assert by_name["objID"]["type"] == "long" and by_name["objID"]["db_type"] == "BIGINT"
    assert by_name["raMean"]["unit"] == "deg" and by_name["objID"]["unit"] is None  # "NULL"
    assert by_name["gMeanPSFMag"]["type"] == "float"
    # the service's cone search asks only for real dr2/mean columns
    assert unknown_columns(columns, MEAN_COLUMNS) == []
    assert unknown_columns(columns, ["objID", "psfFlux"]) == ["psfFlux"]


def test_emulator_metadata_has_the_real_shape_and_types(realdata):
    from stdq.testing.mast import MEAN_COLUMNS as EMULATED
    from stdq.testing.mast import metadata_document

    real = {c["name"]: c for c in json.loads((realdata / "mast_panstarrs" / "panstarrs_columns.json").read_text())}
    doc = metadata_document(EMULATED)
    assert all(set(entry) == set(real["objID"]) for entry in doc)
    parsed = parse_metadata(json.dumps(doc))
    for col in parsed:
        assert col["name"] in real, col["name"]
        assert col["type"] == real[col["name"]]["type"], col["name"]
