"""The ZFPS processor on the real light-curve files of ../shared/realdata/zfps (never copied here).

Expected values are worked out in this file from the service's documented rules
(photometry.md 3.2, wire-formats.md 3.2, the files' own headers), not taken from
the code's output:

- uJy = DN * 10**(-0.4 (zpdiff - 23.9)); mjd = jd - 2400000.5 + exptime/2/86400;
- the guide's own magnitudes, in DN: m = zpdiff - 2.5 log10(flux),
  sigma_m = 1.0857 unc / flux, limit = zpdiff - 2.5 log10(5 unc), detected at snr >= 3;
- procstatus: non-zero codes are warnings (the files' own header); a row with a usable
  flux is kept with quality bit 1 for any non-zero code, one without is left out and
  counted by its procstatus; 63/65 for the whole request are no data, 64/255 a failure;
  57, 58 and 62 alone still leave a row a clean epoch (peak, baseline, error rescaling);
- the common rule: non-finite flux or error, error <= 0, epoch before MJD 58000 or
  after tomorrow: left out and counted.
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pytest

from conftest import REALDATA_REQUIRED
from stdq.errors import NoData, QueryFailed
from stdq.processors.ztf_fps import (
    PROCSTATUS_CODES,
    ZtfForcedPhotometryProcessor,
    describe_procstatus,
    request_error,
)
from stdq.store import DataProduct

REALDATA = Path(__file__).parents[1].parent / "shared" / "realdata"
ZFPS = REALDATA / "zfps"
BATCH = "batchfp_req0001718201_lc.EXCERPT.txt"
V34 = "forcedphotometry_req00010458_lc.txt"
BTS = "forcedphotometry_req00069624_lc.HEAD.txt"
V38 = "forcedphotometry_req00381131_lc.txt"

# in CI (REALDATA_REQUIRED) the real files must be there: missing, the tests fail
pytestmark = pytest.mark.skipif(not ZFPS.is_dir() and not REALDATA_REQUIRED, reason=f"no real ZFPS files in {ZFPS}")

NEAR = 'no reference source within 5"'
# file -> (generator, END line present, rows kept, left out by reason)
EXPECTED = {
    BATCH: ("forcedphotometry_trim_cforcepsfaper_threads.pl, v5.9", True, 2, {
        f"rows without a usable flux, procstatus 55,57 (55 unknown code; 57 {NEAR})": 1,
        f"rows without a usable flux, procstatus 57,61 (57 {NEAR}; 61 cutout off the image)": 2,
        "rows without a usable flux, procstatus 61 (61 cutout off the image)": 1,
    }),
    V34: ("forcedphotometry_trim.pl, v3.4", True, 50, {}),
    BTS: ("forcedphotometry_trim.pl, v3.7", False, 28, {}),  # the head of a file: no END line
    V38: ("forcedphotometry_trim.pl, v3.8", True, 0, {
        f"rows without a usable flux, procstatus 56,57 (56 bad or NaN pixels; 57 {NEAR})": 2,
    }),
}


def k(zpdiff: float) -> float:
    """Microjansky per DN at this difference-image zero point."""
    return 10 ** (-0.4 * (zpdiff - 23.9))


def process(tmp_path: Path, data: bytes, params: dict | None = None, settings: dict | None = None,
            notes: dict | None = None):
    product = DataProduct(id=1, service="ztf-fps", data_product_type="ztf_fps_photometry",
                          target={"name": "t", "ra": 214.2615809, "dec": 10.8219968},
                          params=params or {"baseline": "none"}, path=tmp_path / "product")
    product.notes.update(notes or {})
    product.add_raw("forcedphotometry_req00000001_lc.txt", data)
    table = ZtfForcedPhotometryProcessor(settings or {}).process(product)
    return product, table


def data_lines(text: str) -> list[str]:
    """The data rows of a ZFPS file, read here independently: not '#', not the column line."""
    return [line for line in text.splitlines()
            if line.strip() and not line.startswith("#") and ", field," not in line]


def row_of(text: str, first: str) -> dict[str, str]:
    """The row whose first value (sindex/index) is FIRST, by the file's own column line."""
    lines = text.splitlines()
    columns = next(line for line in lines if ", field," in line).replace(",", " ").split()
    (line,) = [line for line in data_lines(text) if line.split()[0] == first]
    return dict(zip(columns, line.split(), strict=True))


# -- every real file parses ----------------------------------------------------------------------


def test_every_real_file_is_in_the_table():
    assert sorted(p.name for p in ZFPS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_file_rows_and_left_out(tmp_path, name):
    generator, end_line, kept, left_out = EXPECTED[name]
    text = (ZFPS / name).read_text()
    product, table = process(tmp_path, text.encode())
    print(f"\n{name}: {len(table)} rows kept, left out {product.left_out}")
    assert len(table) == kept
    assert product.left_out == left_out
    assert kept + sum(left_out.values()) == len(data_lines(text))  # every row kept or counted
    assert product.notes["file"]["generated_by"] == generator
    assert product.notes["file"]["end_line"] is end_line
    # what is kept is finite, in the requested JD range, with the header's forced position
    header = product.notes["requested_position"]
    for column in ("mjd", "flux_ujy", "flux_err_ujy"):
        assert table[column].map(math.isfinite).all()
    assert (table["flux_err_ujy"] > 0).all()
    assert (table["mjd"] >= header["jdstart"] - 2400000.5).all()
    assert (table["mjd"] <= header["jdend"] - 2400000.5).all()
    assert set(table["band"]) <= {"ztfg", "ztfr", "ztfi"}


def test_batch_excerpt_values_checked_by_hand(tmp_path):
    text = (ZFPS / BATCH).read_text()
    _, table = process(tmp_path, text.encode())
    assert list(table["ztf_procstatus"]) == ["56", "56"]
    # the two rows with a flux, sindex 15 and 20, copied here from the file
    cases = {
        "15": dict(pid="460346162415", zpdiff=25.7542, flux=123.62543924854, unc=60.020798,
                   jd=2458214.846169, diffmaglim=19.0361,
                   flux_ujy=22.40928, err_ujy=10.87982, limit=19.56102, mjd=58214.3463426),
        "20": dict(pid="463370702415", zpdiff=26.2333, flux=15.55673967687, unc=21.745926,
                   jd=2458217.870706, diffmaglim=20.6277,
                   flux_ujy=1.81384, err_ujy=2.53547, limit=21.14243, mjd=58217.3708796),
    }
    for sindex, c in cases.items():
        src = row_of(text, sindex)
        assert (src["pid"], float(src["zpdiff"]), float(src["forcediffimflux"])) == (c["pid"], c["zpdiff"], c["flux"])
        row = table[table["source_row_id"] == c["pid"]].iloc[0]
        # flux and error: DN times 10**(-0.4 (zpdiff - 23.9))
        assert row["flux_ujy"] == pytest.approx(c["flux"] * k(c["zpdiff"]), rel=1e-12)
        assert row["flux_ujy"] == pytest.approx(c["flux_ujy"], abs=1e-5)
        assert row["flux_err_ujy"] == pytest.approx(c["unc"] * k(c["zpdiff"]), rel=1e-12)
        assert row["flux_err_ujy"] == pytest.approx(c["err_ujy"], abs=1e-5)
        # snr 2.06 and 0.72 < 3: 5-sigma limits, by the guide's DN formula zpdiff - 2.5 log10(5 unc)
        assert not row["detected"] and math.isnan(row["magnitude"])
        assert row["limit"] == pytest.approx(c["zpdiff"] - 2.5 * math.log10(5 * c["unc"]), abs=1e-9)
        assert row["limit"] == pytest.approx(c["limit"], abs=1e-5)
        assert row["limit_nsigma"] == 5.0
        # time: jd is the start of a 30 s exposure (UTC); MJD at mid-exposure
        assert row["mjd"] == pytest.approx(c["jd"] - 2400000.5 + 15 / 86400, abs=1e-9)
        assert row["mjd"] == pytest.approx(c["mjd"], abs=1e-7)
        # flags: procstatus 56 (bad or NaN pixels) is a warning about the flux: bit 1;
        # infobitssci 0, scisigpix 10.3 / 5.7 DN < 25, seeing 3.2 / 1.9 px < 5: nothing else
        assert row["quality_flag"] == 1
        assert row["image_depth"] == c["diffmaglim"]
        assert row["band"] == "ztfr" and row["object_id"] == str(529 * 10000 + 7 * 100 + 1 * 10 + 2)
        assert (row["ra"], row["dec"]) == (214.2615809, 10.8219968)
        assert row["err_scale"] == 1.0 and row["flux_kind"] == "difference"
    # the aperture flux error is spelled forcediffimfluxuncap in the real files
    assert table["ztf_forcediffimfluxuncap"].iloc[0] == pytest.approx(76.019363)


def test_single_request_detection_checked_by_hand(tmp_path):
    text = (ZFPS / V34).read_text()
    _, table = process(tmp_path, text.encode())
    src = row_of(text, "46")  # 358.44 +- 27.33 DN at zpdiff 26.3105: snr 13.1
    assert src["pid"] == "1526284542915" and src["procstatus"] == "0"
    zp, flux, unc = 26.3105, 358.43746983995, 27.3309247802946
    row = table[table["source_row_id"] == "1526284542915"].iloc[0]
    assert row["detected"]
    assert row["flux_ujy"] == pytest.approx(38.92364, abs=1e-5)
    assert row["magnitude"] == pytest.approx(zp - 2.5 * math.log10(flux), abs=1e-9)  # 19.92447
    assert row["magnitude"] == pytest.approx(19.92447, abs=1e-5)
    assert row["magnitude_error"] == pytest.approx(1.0857 * unc / flux, rel=1e-4)  # 0.08278
    assert row["mjd"] == pytest.approx(2459280.7845486 - 2400000.5 + 15 / 86400, abs=1e-9)
    assert math.isnan(row["limit"]) and row["quality_flag"] == 0
    # qid 0 exists in single-request files ("Quadrant ... (0..3)" in their header)
    assert 0 in set(table["ztf_qid"])


def test_zpdiff_varies_inside_a_group_in_the_bts_file(tmp_path):
    text = (ZFPS / BTS).read_text()
    _, table = process(tmp_path, text.encode())
    group = table[table["object_id"] == str(663 * 10000 + 10 * 100 + 3 * 10 + 2)]
    per_ujy = 1 / group["ztf_zpdiff"].map(k)  # DN per microjansky
    # zpdiff 24.3267 .. 26.275 in one fcqfid: 10**(0.4 * 1.9483) = 6.02
    assert per_ujy.max() / per_ujy.min() == pytest.approx(10 ** (0.4 * (26.275 - 24.3267)))
    assert per_ujy.max() / per_ujy.min() > 6
    assert len(group) == 12  # the r rows: index 6-11, 13, 15, 22, 24, 26, 27


# -- the emulator serves the real layout ----------------------------------------------------------------


def emulated(file_format: str) -> str:
    """The emulator's light-curve file of SN 2023ixf, as the real service's of that kind."""
    from stdq.testing import zfps

    req = zfps.ZfpsRequest(req_id=15270, email="x@example.org", ra=210.910674, dec=54.31165,
                           jdstart=2458194.5, jdend=2460508.5, created=0.0, ready_at=1721075128.0,
                           file_format=file_format)
    return zfps.result_file(req).decode()


def header_block(text: str) -> list[str]:
    """The lines up to and including the '#' line after the column line."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if ", field," in line) + 2
    return lines[:end]


VALUE_LINES = re.compile(r"^# (Generated by \S+, v[\d.]+ on )\d{4}-\d\d-\d\d at \d\d:\d\d:\d\d$"
                         r"|^# (Requested (input R\.A\.|input Dec\.|JD start|JD end) = )[-\d.]+( degrees| days)$")


def masked(lines: list[str]) -> list[str]:
    """LINES with the request's own values (date, position, JD range) taken out."""
    return [VALUE_LINES.sub(lambda m: "".join(g or "" for g in m.groups()[:2]) + "<value>" + (m.group(4) or ""), line)
            for line in lines]


@pytest.mark.parametrize(("file_format", "real"), [("batch", BATCH), ("single", V38)])
def test_emulator_header_is_the_real_one_to_the_byte(file_format, real):
    text, real_text = emulated(file_format), (ZFPS / real).read_text()
    ours, theirs = header_block(text), header_block(real_text)
    assert masked(ours) == masked(theirs)  # every comment line, the column line, the '#' after it
    assert ours != masked(ours)  # (the mask did take the values out)
    assert ours[-2] == theirs[-2] and not ours[-2].startswith("#")  # the column line, no '#'
    assert ours[-2].startswith(" sindex, field," if file_format == "batch" else " index, field,")
    assert "forcediffimfluxuncap" in ours[-2]
    # the last line is the real END line; the file ends with a newline, as the real ones
    assert text.splitlines()[-1] == real_text.splitlines()[-1] == "# " + "-" * 30 + "END" + "-" * 33
    assert text.endswith("\n") and real_text.endswith("\n")
    # the header's values as Perl prints them (%.15g: 54.31165, 2458194.5)
    assert "# Requested input Dec. = 54.31165 degrees" in ours
    assert "# Requested JD start = 2458194.5 days" in ours


def shape(token: str) -> str:
    """A value's shape: digits runs as 9 ('-0.0451077' -> '-9.9', '1.01981e-05' -> '9.9e-9')."""
    return re.sub(r"[0-9]+", "9", token)


def columns_of(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    names = next(line for line in lines if ", field," in line).replace(",", " ").split()
    values: dict[str, list[str]] = {name: [] for name in names}
    for line in data_lines(text):
        for name, value in zip(names, line.split(), strict=True):
            values[name].append(value)
    return values


FORCED = ("forcediffimflux", "forcediffimfluxunc", "forcediffimsnr", "forcediffimchisq",
          "forcediffimfluxap", "forcediffimfluxuncap", "forcediffimsnrap", "aperturecorr")
NEAREST = ("dnearestrefsrc", "nearestrefmag", "nearestrefmagunc", "nearestrefchi", "nearestrefsharp")


@pytest.mark.parametrize(("file_format", "reals"), [("batch", [BATCH]), ("single", [V34, V38, BTS])])
def test_emulator_rows_have_the_real_value_shapes(file_format, reals):
    ours = columns_of(emulated(file_format))
    theirs: dict[str, set[str]] = {}
    for real in reals:
        for name, values in columns_of((ZFPS / real).read_text()).items():
            theirs.setdefault(name, set()).update(shape(v) for v in values)
    assert list(ours) == list(theirs)
    for name, values in ours.items():
        shapes = {shape(v) for v in values}
        if file_format == "single" and name in FORCED:  # %.15g of the emulator's whole DN: '38'
            shapes = {t + ".9" if t in ("9", "-9") else t for t in shapes}
        odd = shapes - theirs[name] - {"-" + t for t in theirs[name]}
        assert not odd, (name, odd, theirs[name])
    # missing values: batch files -99999.000000 in the 8 forced columns and null in the 5
    # nearest-reference ones; single files null in all 13 (as in the real files)
    missing_token = "-99999.000000" if file_format == "batch" else "null"
    for columns in (ours, columns_of((ZFPS / reals[0]).read_text())):
        no_flux = [i for i, v in enumerate(columns["forcediffimflux"]) if v in ("-99999.000000", "null")]
        if file_format == "batch" or columns is ours:
            assert no_flux
        for i in no_flux:
            assert {columns[c][i] for c in FORCED} == {missing_token}
            assert "," in columns["procstatus"][i] or columns["procstatus"][i] != "0"
        for i, status in enumerate(columns["procstatus"]):
            if "57" in status.split(","):  # no reference source within 5": the ref columns null
                assert {columns[c][i] for c in NEAREST} == {"null"}
    # procstatus: comma lists, as in the real files
    assert {v for v in ours["procstatus"] if "," in v} >= {"57,61", "56,57"}
    if file_format == "batch":  # fixed decimals in batch files: %.11f fluxes, %.6f the rest
        for columns in (ours, columns_of((ZFPS / BATCH).read_text())):
            for name in FORCED:
                digits = 11 if name in ("forcediffimflux", "forcediffimfluxap") else 6
                pattern = rf"-?[0-9]+\.[0-9]{{{digits}}}|-99999\.000000"
                assert all(re.fullmatch(pattern, v) for v in columns[name]), name


@pytest.mark.parametrize("file_format", ["batch", "single"])
def test_emulator_file_gives_the_real_kinds_of_rows(tmp_path, file_format):
    text = emulated(file_format)
    product, table = process(tmp_path, text.encode())
    # like the real batch file: rows without a flux counted by their comma-list procstatus
    near = 'no reference source within 5"'
    assert product.left_out == {
        f"rows without a usable flux, procstatus 57,61 (57 {near}; 61 cutout off the image)": 1,
        "rows without a usable flux, procstatus 61 (61 cutout off the image)": 1,
    }
    assert product.notes["file"]["end_line"] is True
    assert product.notes["file"]["generated_by"] == (
        "forcedphotometry_trim_cforcepsfaper_threads.pl, v5.9" if file_format == "batch"
        else "forcedphotometry_trim.pl, v3.8")
    # kept with a warning: bit 1, as the real batch file's procstatus-56 rows
    warned = table[table["ztf_procstatus"] != "0"]
    assert set(warned["ztf_procstatus"]) == {"57", "56,57"} and set(warned["quality_flag"]) == {1}
    assert len(table) + sum(product.left_out.values()) == len(data_lines(text))


# -- procstatus: the code table ----------------------------------------------------------------------


def constructed(rows: list[dict[str, object]]) -> bytes:
    """A batch file: the real excerpt's header and column line, rows made from its sindex-15 row."""
    text = (ZFPS / BATCH).read_text()
    lines = text.splitlines()
    head = lines[: next(i for i, line in enumerate(lines) if ", field," in line) + 2]
    template = row_of(text, "15")
    out = []
    for number, changes in enumerate(rows):
        values = {**template, "sindex": str(number), "pid": str(460346162415 + number), **changes}
        out.append(" " + " ".join(str(values[c]) for c in template))
    return ("\n".join([*head, *out, lines[-1]]) + "\n").encode()


# every non-zero code is a warning (the file header: "0 => no warnings"): bit 1
FLAGGED = {"56": 1, "59": 1, "60": 1, "61": 1, "55": 1, "56,57": 1, "57": 1, "58": 1, "62": 1,
           "57,62": 1, "0": 0}


def test_warning_codes_keep_a_usable_flux_and_flag_it(tmp_path):
    codes = [*FLAGGED, "63", "64", "65", "255"]
    product, table = process(tmp_path, constructed([{"procstatus": c} for c in codes]))
    assert dict(zip(table["ztf_procstatus"], table["quality_flag"], strict=True)) == FLAGGED
    assert product.left_out == {
        "rows with procstatus 63 (63 no records)": 1,
        "rows with procstatus 64 (64 catastrophic)": 1,
        "rows with procstatus 65 (65 end JD before survey start)": 1,
        "rows with procstatus 255 (255 database error)": 1,
    }
    # the flux of a warned row is the row's own: 123.6 DN at zpdiff 25.7542
    assert set(table["flux_ujy"].round(5)) == {22.40928}


def test_rows_without_a_flux_are_counted_by_code(tmp_path):
    missing = {"forcediffimflux": "-99999.000000", "forcediffimfluxunc": "-99999.000000"}
    rows = [{**missing, "procstatus": "56"}, {**missing, "procstatus": "56"},
            {**missing, "procstatus": "0"}, {"forcediffimfluxunc": "null", "procstatus": "0"},
            {"forcediffimflux": "nan", "procstatus": "59"}, {"procstatus": "0"}]
    product, table = process(tmp_path, constructed(rows))
    assert len(table) == 1
    # null and -99999 are the service's "no measurement": counted by procstatus; a "nan"
    # flux is a broken value, counted by the common rule whatever its procstatus
    assert product.left_out == {
        "rows without a usable flux, procstatus 56 (56 bad or NaN pixels)": 2,
        "rows with null or -99999 forcediffimflux": 1,
        "rows with null or -99999 forcediffimfluxunc": 1,
        "non-finite flux or error": 1,
    }


def test_values_no_survey_can_have_are_left_out_and_counted(tmp_path):
    import time

    tomorrow_jd = time.time() / 86400 + 2440587.5 + 1.0
    rows = [
        {"forcediffimfluxunc": "0"}, {"forcediffimfluxunc": "-3.5"},  # no SNR: error <= 0
        {"forcediffimflux": "inf"}, {"forcediffimfluxunc": "1e999"}, {"forcediffimflux": "NaN"},
        {"forcediffimflux": "1e305", "zpdiff": "15.5"},  # 1e305 DN * 10**3.36 overflows in uJy
        {"jd": "2457999.0"},  # MJD 57998.5 + 15 s: before ZTF (MJD 58000)
        {"jd": f"{tomorrow_jd + 0.5:.6f}"},  # later than now + 1 day
        {"jd": "nan"},
        {"procstatus": "0"},  # the template row, kept
    ]
    product, table = process(tmp_path, constructed(rows))
    assert product.left_out == {
        "flux error <= 0": 2,
        "non-finite flux or error": 4,
        "epoch before ZTF began": 1,
        "epoch in the future": 1,
        "epoch not a number": 1,
    }
    assert list(table["source_row_id"]) == [str(460346162415 + 9)]
    assert 64 not in set(table["quality_flag"])  # FLAG_ZERO_ERROR is no longer set


@pytest.mark.parametrize(("column", "value"), [
    ("field", "9" * 30), ("pid", "9" * 20), ("rfid", "-" + "9" * 19), ("pid", "12a"), ("qid", "99999999999999999999"),
])
def test_an_integer_that_does_not_fit_64_bits_ends_the_product(tmp_path, column, value):
    with pytest.raises(QueryFailed, match="64-bit integer") as caught:
        process(tmp_path, constructed([{column: value}, {}]))
    assert caught.value.exit_code == 1 and column in caught.value.message


def test_a_whole_field_outside_ztf_ids_is_left_out(tmp_path):
    product, table = process(tmp_path, constructed([{"field": "123456"}, {"qid": "2.5"}, {}]))
    assert product.left_out == {"rows without a whole field, ccdid or qid": 2}
    assert len(table) == 1


@pytest.mark.parametrize(("codes", "error", "exit_code"), [
    (["63"], NoData, 5), (["65", "65"], NoData, 5), (["64"], QueryFailed, 1), (["255"], QueryFailed, 1),
    (["63", "255"], QueryFailed, 1),
])
def test_whole_request_codes_end_the_query(tmp_path, codes, error, exit_code):
    rows = [{"procstatus": c, "forcediffimflux": "null", "forcediffimfluxunc": "null"} for c in codes]
    with pytest.raises(error) as caught:
        process(tmp_path, constructed(rows), notes={"zfps": {"request_id": "1718201"}})
    assert caught.value.exit_code == exit_code
    assert "ZFPS request 1718201" in caught.value.message
    assert PROCSTATUS_CODES[int(codes[-1])] in caught.value.message or "database error" in caught.value.message


def test_request_codes_of_the_status_listing():
    assert isinstance(request_error("63", "ZFPS request 7"), NoData)
    assert isinstance(request_error("65", "ZFPS request 7"), NoData)
    assert isinstance(request_error("64", "ZFPS request 7"), QueryFailed)
    assert isinstance(request_error("255", "ZFPS request 7"), QueryFailed)
    assert request_error("0", "x") is None and request_error("56,57", "x") is None
    assert describe_procstatus("57,61") == f"57,61 (57 {NEAR}; 61 cutout off the image)"
    assert describe_procstatus("x") == describe_procstatus("57,x") == "not a list of codes"


# -- baseline in microjansky, error rescaling ----------------------------------------------------------

ZP_A, ZP_B = 26.2, 24.25  # uJy per DN 0.1202 and 0.7244: the DN per uJy differ by a factor of 6.03
SIGMA = 4.0  # uJy, every epoch
OFFSET = -20.0  # uJy: the reference image holds 20 uJy of the source
TRANSIENT = 500.0  # uJy, above the reference
# deviates in units of SIGMA, typed here: median 0.06, so the median baseline is -20 + 0.24 uJy
NOISE = (0.27, -0.71, 1.32, -0.13, -0.64, 0.50, 0.10, -1.52, 0.86, -0.34,
         0.62, -0.05, -1.19, 0.41, 0.93, -0.83, 0.21, 1.05, -0.26, -0.48,
         -0.92, 0.34, 0.77, -1.33, 0.15, -0.18, 1.21, -0.57, 0.45, 0.02,
         -0.39, 0.68, -1.01, 0.29, 0.88, -0.74, 0.11, -0.22, 1.47, -0.61)


def two_zero_points(noise: bool = True) -> tuple[bytes, list[tuple[float, float, float]]]:
    """One fcqfid (field 529, ccd 7, q 1, r): 40 baseline epochs alternating between two zpdiff,
    true flux OFFSET, then 6 transient epochs of OFFSET + TRANSIENT. Also (mjd, zpdiff, dn) per row."""
    rows, truth = [], []
    for i in range(46):
        zp = ZP_A if i % 2 == 0 else ZP_B
        jd = 2459000.5 + (5.0 * i if i < 40 else 300.0 + 5.0 * (i - 40))
        true = OFFSET + (TRANSIENT if i >= 40 else 0.0)
        ujy = true + (SIGMA * NOISE[i] if noise and i < 40 else 0.0)
        dn, unc = ujy / k(zp), SIGMA / k(zp)
        rows.append({"zpdiff": zp, "zpmaginpsci": zp, "jd": f"{jd:.7f}", "forcediffimflux": repr(dn),
                     "forcediffimfluxunc": repr(unc), "procstatus": "0", "forcediffimchisq": "1.0"})
        truth.append((jd - 2400000.5 + 15 / 86400, zp, dn))
    return constructed(rows), truth


def test_dn_space_baseline_was_wrong():
    # what the old rule (median in DN, subtracted in DN) gives for the noise-free light curve
    _, truth = two_zero_points(noise=False)
    c_dn = statistics.median(dn for _, _, dn in truth[:40])  # halfway: (-166.35 - 27.61) / 2 = -96.98
    corrected = {zp: (dn - c_dn) * k(zp) for _, zp, dn in truth[:40]}
    assert corrected[ZP_A] == pytest.approx(-8.34, abs=0.01)  # should be 0
    assert corrected[ZP_B] == pytest.approx(50.26, abs=0.01)  # should be 0


@pytest.mark.parametrize("params", [{"baseline": "before", "baseline_before": 59200.0}, {"baseline": "auto"}])
def test_baseline_at_two_zero_points_recovers_the_offset_in_microjansky(tmp_path, params):
    data, truth = two_zero_points()
    product, table = process(tmp_path, data, params)
    (entry,) = product.notes["baseline"]["fcqfids"].values()
    assert entry["applied"] and entry["n_epochs"] == 40
    assert (entry["zpdiff_min"], entry["zpdiff_max"]) == (ZP_B, ZP_A)
    # the offset: -20 uJy within its error, sqrt(pi/2) * sqrt(40 * 4**2) / 40 = 0.79 uJy
    error = math.sqrt(math.pi / 2) * math.sqrt(40 * SIGMA**2) / 40
    assert entry["offset_err_ujy"] == pytest.approx(error)
    print(f"\nbaseline offset {entry['offset_ujy']:.3f} +- {entry['offset_err_ujy']:.3f} uJy (true {OFFSET})")
    assert abs(entry["offset_ujy"] - OFFSET) < error
    assert entry["offset_ujy"] == pytest.approx(OFFSET + SIGMA * 0.06)  # the median deviate
    assert set(table["ztf_baseline_offset_ujy"]) == {entry["offset_ujy"]}
    # at each zero point: the corrected baseline is 0 and the transient TRANSIENT, within their errors
    for zp in (ZP_A, ZP_B):
        rows = table[table["ztf_zpdiff"] == zp]
        base, peak = rows[rows["mjd"] < 59200], rows[rows["mjd"] > 59200]
        mean = base["flux_ujy"].mean()
        error_mean = math.hypot(SIGMA / math.sqrt(20), error)
        print(f"zpdiff {zp}: corrected baseline {mean:+.3f} +- {error_mean:.3f} uJy,"
              f" transient {peak['flux_ujy'].mean():.3f} uJy (true {TRANSIENT})")
        assert abs(mean) < 2 * error_mean
        assert abs(peak["flux_ujy"] - TRANSIENT).max() < 2 * error  # noise-free transient epochs
        assert list(base["flux_err_ujy"]) == pytest.approx([SIGMA] * 20)
    assert not table[table["mjd"] < 59200]["detected"].any()


def test_a_hostless_transient_keeps_its_baseline(tmp_path):
    """Every epoch 57 (no reference source within 5"): all flagged (bit 1), all still clean."""
    data, truth = two_zero_points()
    text = data.decode().replace(" 0\n", " 57\n")  # procstatus is the last value of each row
    # two baseline epochs 56 (bad pixels) with a wild flux: flagged and NOT baseline epochs
    lines = text.splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith(" ") and not line.startswith(" sindex")]
    for i in rows[:2]:
        values = lines[i].split()
        values[24], values[-1] = "99999.0", "56,57"  # forcediffimflux, procstatus
        lines[i] = " " + " ".join(values)
    product, table = process(tmp_path, ("\n".join(lines) + "\n").encode(), {"baseline": "auto"})
    assert set(table["ztf_procstatus"]) == {"57", "56,57"}
    assert set(table["quality_flag"]) == {1}
    (entry,) = product.notes["baseline"]["fcqfids"].values()
    # 40 baseline epochs less the two 56 ones; the peak is a transient epoch, not a 99999 DN one
    assert entry["applied"] and entry["n_epochs"] == 38
    assert product.notes["baseline"]["peak_mjd"] > 59200
    pids = {str(460346162415 + n) for n in range(2)}
    assert not pids & set(entry["epochs"])
    # the offset: the median of the 38 clean epochs (in uJy, each at its own zero point)
    expected = statistics.median(dn * k(zp) for _, zp, dn in truth[2:40])
    assert entry["offset_ujy"] == pytest.approx(expected, rel=1e-12)
    assert abs(entry["offset_ujy"] - OFFSET) < 1.0


def test_error_rescaling_by_mean_chisq_is_off_by_default(tmp_path):
    # g group: chisq 2.0 and 2.5 (mean 2.25, scale 1.5); r group: 0.7 and 0.9 (mean 0.8: never shrunk)
    rows = [{"filter": "ZTF_g", "forcediffimchisq": "2.0"}, {"filter": "ZTF_g", "forcediffimchisq": "2.5"},
            {"filter": "ZTF_r", "forcediffimchisq": "0.7"}, {"filter": "ZTF_r", "forcediffimchisq": "0.9"}]
    err = 60.020798 * k(25.7542)  # the template row's error, 10.880 uJy
    product, table = process(tmp_path, constructed(rows))
    assert list(table["err_scale"]) == [1.0] * 4 and "err_scale" not in product.notes
    assert list(table["flux_err_ujy"]) == pytest.approx([err] * 4)
    for how in ({"settings": {"rescale_errors": True}},
                {"params": {"baseline": "none", "rescale_errors": True}}):
        product, table = process(tmp_path / str(len(how)), constructed(rows), **how)
        assert list(table["err_scale"]) == pytest.approx([1.5, 1.5, 1.0, 1.0])
        assert list(table["flux_err_ujy"]) == pytest.approx([1.5 * err, 1.5 * err, err, err])
        per = product.notes["err_scale"]["fcqfids"]
        assert per["5290711"]["mean_forcediffimchisq"] == pytest.approx(2.25)
        assert per["5290712"] == {"n_epochs": 2, "mean_forcediffimchisq": pytest.approx(0.8), "err_scale": 1.0}
    cuts = ZtfForcedPhotometryProcessor({}).cuts()
    assert cuts["rescale_errors"] is False


# -- property: hostile changes to the real files -------------------------------------------------------

HOSTILE = ("nan", "NaN", "inf", "-inf", "1e999", "-1e999", "null", "-99999.000000", "-99999", "0", "-0",
           "1e308", "-1e308", "9" * 30, "1_000", "0x1F", "ZTF_g", "ZTF_x", "56,57", "63", "65", "255", "64",
           "57,", ",", "é", "\x00", "2458194.5", "2400000.5", "1e-320", "1 2", "")

KEY_COLUMNS = ("field", "ccdid", "qid", "filter", "exptime", "zpdiff", "jd", "forcediffimflux",
               "forcediffimfluxunc", "forcediffimchisq", "procstatus")


def hostile_file(draw_from, name: str) -> tuple[bytes, int]:
    """A real file with some values replaced; also its number of data rows with the right length."""
    from hypothesis import strategies as st

    lines = (ZFPS / name).read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if ", field," in line) + 1
    columns = lines[first - 1].replace(",", " ").split()
    width = len(columns)
    key_columns = [columns.index(c) for c in KEY_COLUMNS]
    for _ in range(draw_from(st.integers(0, 12))):
        rows = [i for i, line in enumerate(lines) if i > first and not line.startswith("#")]
        if not rows:
            break
        i = draw_from(st.sampled_from(rows))
        values = lines[i].split()
        j = draw_from(st.one_of(st.sampled_from(key_columns), st.integers(0, len(values) - 1)))
        values[j] = draw_from(st.one_of(st.sampled_from(HOSTILE), st.floats().map(repr),
                                        st.text(alphabet="0123456789.e+-,", min_size=1, max_size=12)))
        lines[i] = " " + " ".join(values)
    if draw_from(st.booleans()):  # a hostile requested position in the header
        lines = [line.replace("R.A. = ", "R.A. = " + draw_from(st.sampled_from(HOSTILE))) for line in lines]
    if draw_from(st.booleans()) and lines[-1].startswith("# -"):
        cut = draw_from(st.integers(1, max(1, len(lines[-2]) - 1)))
        lines = [*lines[:-2], lines[-2][:cut]]  # cut short: no END line, a part of the last row
    rows = [line for line in data_lines("\n".join(lines)) if len(line.split()) == width]
    return ("\n".join(lines) + "\n").encode(), len(rows)


# photometry.magnitude_error divides in the rows it then masks (flux 1e-320 DN): a warning only
@pytest.mark.filterwarnings("ignore:overflow encountered in divide:RuntimeWarning")
def test_hostile_real_files_keep_finite_rows_or_count_them(tmp_path_factory):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=100, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.data(), st.sampled_from(sorted(EXPECTED)), st.booleans())
    def check(data, name, baseline):
        raw, complete_rows = hostile_file(data.draw, name)
        params = {"baseline": "auto"} if baseline else {"baseline": "none"}
        try:
            product, table = process(tmp_path_factory.mktemp("h"), raw, params, {"rescale_errors": True})
        except (ValueError, NoData, QueryFailed) as exc:  # the documented ones (ValueError: not parseable)
            assert str(exc)
            return
        for column in ("mjd", "flux_ujy", "flux_err_ujy", "err_scale", "ra", "dec"):
            assert table[column].map(math.isfinite).all(), column
        for column in ("magnitude", "magnitude_error", "limit"):  # a value or NaN, never infinite
            assert not table[column].map(math.isinf).any(), column
        assert (table["mjd"] >= 2458000.5 - 2400000.5).all()
        cut = product.left_out.get("a last row cut short (the file has no END line)", 0)
        assert len(table) + sum(product.left_out.values()) - cut == complete_rows

    check()
