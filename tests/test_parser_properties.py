"""Property-based tests over each parser (hypothesis), seeded from real answers (issue 9).

Every test takes a seed answer -- a real file of ../shared/realdata where one exists
(ATLAS result files, a MAST JSON answer), else the emulator's answer (IRSA ZTF CSV, the
Gaia alerts light curve of examples/custom_service, a MAST detection answer) -- changes
some of its values to hostile ones (NaN, inf, 1e999, huge integers, zero and negative
numbers, text, epochs long before or after the survey) and parses it. The properties:

- no exception but the documented ones (StdqError subclasses: QueryFailed ...);
- every kept row has a finite flux, an error > 0 and an epoch within the survey's
  years (photometry.SURVEY_YEARS), and is not in the future;
- every input row is either kept or counted as left out (kept + left out = rows);
- bounded time: modest max_examples, derandomized, no per-example deadline.

The ZFPS parser has its own test of this kind (tests/test_zfps_realdata.py, 9-A).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from stdq import photometry
from stdq.errors import StdqError
from stdq.store import DataProduct
from stdq.testing import sky
from stdq.testing.fakeserver import Request

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SN = sky.find("SN 2023ixf")
TARGET = {"name": "SN 2023ixf", "ra": SN.ra, "dec": SN.dec, "resolver": "coordinates"}
# Text a hostile server may put in a field (no spaces, no '#', no separators: the field
# count is changed on purpose elsewhere).
HOSTILE_TEXT = ("nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e308", "-1e308", "0", "-0",
                "0.0", "-5", "-1e-06", "4.9e-324", "-999", "-99999", "null", "None", "abc", "9" * 25,
                "-" + "9" * 25, "9223372036854775808", "18446744073709551616", "1_000", "0x1F", "é",
                "47892.0", "88069.0", "2447892.5", "2488069.5", "1.5", "3")
_counter = itertools.count()


def hostile_text():
    return st.one_of(st.sampled_from(HOSTILE_TEXT), st.floats().map(repr),
                     st.integers(-(2**70), 2**70).map(str),
                     st.text(alphabet="0123456789.e+-", min_size=1, max_size=14))


def product_of(tmp: Path, service: str, kind: str, raws: dict[str, bytes], **params) -> DataProduct:
    product = DataProduct(id=next(_counter) + 1, service=service, data_product_type=kind,
                          target=dict(TARGET), params=params, path=tmp / f"p{next(_counter)}")
    for name, data in raws.items():
        product.add_raw(name, data)
    return product


def assert_clean_rows(table, survey: str, *, require_error: bool = True) -> None:
    """The kept rows: finite flux, error > 0 (or empty when allowed), epoch in the survey's years."""
    first, last, _ = photometry.SURVEY_YEARS[survey]
    now = photometry.now_mjd()
    flux = table["flux_ujy"].to_numpy(dtype="float64")
    err = table["flux_err_ujy"].to_numpy(dtype="float64")
    mjd = table["mjd"].to_numpy(dtype="float64")
    assert all(math.isfinite(v) for v in flux)
    for e in err:
        assert (math.isfinite(e) and e > 0) or (not require_error and math.isnan(e)), e
    for t in mjd:
        assert math.isfinite(t) and first <= t <= now + photometry.FUTURE_DAYS, t
        assert last is None or t <= last, t


def ask(emulator, path: str, query: dict[str, str]) -> bytes:
    """The emulator's own answer to GET PATH?QUERY (no server needed)."""
    request = Request("GET", path, f"{path}?{urlencode(query)}", {k: [v] for k, v in query.items()}, {}, b"")
    answer = emulator.handle(request)
    assert answer.status == 200, answer.body[:200]
    return answer.body


def mutate_fields(draw, lines: list[str], first: int, sep: str | None, max_changes: int = 10) -> list[str]:
    """LINES with up to MAX_CHANGES fields of the data lines (from index FIRST) replaced."""
    lines = list(lines)
    rows = [i for i in range(first, len(lines)) if lines[i].strip()]
    for _ in range(draw(st.integers(0, max_changes))):
        if not rows:
            break
        i = draw(st.sampled_from(rows))
        fields = lines[i].split(sep) if sep else lines[i].split()
        j = draw(st.integers(0, len(fields) - 1))
        fields[j] = draw(hostile_text())
        lines[i] = (sep or " ").join(fields)
    return lines


# -- ATLAS result text ----------------------------------------------------------------------

ATLAS_FILES = ("job01088.txt", "tom_base_test_atlas_fp.txt")


def atlas_rows(text: str) -> int:
    """The data lines of an ATLAS result, counted here: non-blank lines after the header."""
    lines = text.split("\n")
    header = next(i for i, line in enumerate(lines) if line.lstrip("#").startswith("MJD"))
    return sum(1 for line in lines[header + 1:] if line.strip())


def test_atlas_parser_properties(realdata, tmp_path):
    from stdq.processors.atlas import AtlasProcessor

    seeds = {name: (realdata / "atlas" / name).read_text() for name in ATLAS_FILES}

    @SETTINGS
    @given(st.data(), st.sampled_from(ATLAS_FILES), st.booleans())
    def check(data, name, reduced):
        lines = seeds[name].rstrip("\n").split("\n")
        lines = mutate_fields(data.draw, lines, 1, None)
        if data.draw(st.booleans()):  # a repeated exposure, a row with a field missing or extra
            i = data.draw(st.integers(1, len(lines) - 1))
            how = data.draw(st.sampled_from(("repeat", "short", "long")))
            if how == "repeat":
                lines.insert(i, lines[i])
            elif how == "short":
                lines[i] = " ".join(lines[i].split()[:-1])
            else:
                lines[i] += " 1.0"
        if data.draw(st.booleans()):  # cut inside the last line
            cut = data.draw(st.integers(1, max(1, len(lines[-1]) - 1)))
            lines[-1] = lines[-1][:cut]
        text = "\n".join(lines) + "\n"
        product = product_of(tmp_path, "atlas", "atlas_photometry", {"job1.txt": text.encode()},
                             reduced=reduced)
        try:
            table = AtlasProcessor({}).process(product)
        except StdqError as exc:
            assert str(exc)
            return
        assert_clean_rows(table, "ATLAS")
        assert len(table) + sum(product.left_out.values()) == atlas_rows(text), product.left_out

    check()


# -- PS1: MAST JSON (the real answer) and the detection processor (the emulator's answer) -----


def hostile_json_value():
    return st.one_of(
        st.none(), st.booleans(), st.sampled_from((float("nan"), float("inf"), -float("inf"), 0, -999, -1e-6)),
        st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
        st.sampled_from(("1e999", "173142109106893051", "-1", "")), st.just([1]), st.just({}),
    )


def mutate_json(draw, payload: dict, max_changes: int = 8) -> dict:
    payload = json.loads(json.dumps(payload))
    rows = payload["data"]
    for _ in range(draw(st.integers(0, max_changes))):
        if not rows:
            break
        row = draw(st.sampled_from(rows))
        j = draw(st.integers(0, len(row) - 1))
        row[j] = draw(hostile_json_value())
    if rows and draw(st.integers(0, 9)) == 0:  # a row with a value missing
        draw(st.sampled_from(rows)).pop()
    return payload


def test_mast_json_reader_properties(realdata):
    from stdq.processors.panstarrs import read_mast_json

    seed = json.loads((realdata / "mast_panstarrs" / "panstarrs.json").read_text())
    longs = [c["name"] for c in seed["info"] if c["type"] == "long"]

    @SETTINGS
    @given(st.data())
    def check(data):
        payload = mutate_json(data.draw, seed)
        try:
            table = read_mast_json(json.dumps(payload))
        except StdqError as exc:
            assert str(exc)
            return
        assert len(table) == len(payload["data"])
        for name in longs:  # 64-bit ids stay exact text (or missing)
            for value in table[name]:
                missing = value is None or value != value  # None or NaN
                assert missing or (isinstance(value, str) and -(2**63) <= int(value) < 2**63), value

    check()


def test_panstarrs_detection_processor_properties(tmp_path):
    from stdq.processors.panstarrs import DETECTION_COLUMNS, PanstarrsProcessor
    from stdq.testing.mast import SN_TARGET_ID, MastCatalogsEmulator

    query = {"objID": str(SN_TARGET_ID), "columns": "[" + ",".join(DETECTION_COLUMNS) + "]"}
    emulator = MastCatalogsEmulator()
    seed_json = json.loads(ask(emulator, "/dr2/detection.json", query))
    seed_csv = ask(emulator, "/dr2/detection.csv", query).decode()

    @settings(SETTINGS, max_examples=80)  # the slowest parser here (TAI -> UTC each time)
    @given(st.data(), st.booleans())
    def check(data, as_json):
        if as_json:
            payload = mutate_json(data.draw, seed_json)
            raw, name, rows = json.dumps(payload).encode(), "detection-1-p001.json", len(payload["data"])
        else:
            lines = mutate_fields(data.draw, seed_csv.rstrip("\n").split("\n"), 1, ",")
            raw, name, rows = ("\n".join(lines) + "\n").encode(), "detection-1-p001.csv", len(lines) - 1
        product = product_of(tmp_path, "panstarrs", "panstarrs_photometry", {name: raw},
                             release="dr2", table="detection", all_objects=True)
        try:
            table = PanstarrsProcessor({}).process(product)
        except StdqError as exc:
            assert str(exc)
            return
        assert_clean_rows(table, "PS1")
        assert len(table) + sum(product.left_out.values()) == rows, product.left_out

    check()


# -- ZTF: IRSA light-curve CSV (the emulator's answer) ----------------------------------------


def test_ztf_irsa_parser_properties(tmp_path):
    from stdq.processors.ztf import ZtfLightCurveProcessor
    from stdq.testing.irsa import IrsaLightCurveEmulator

    seed = ask(IrsaLightCurveEmulator(), "/", {
        "POS": f"CIRCLE {SN.ra} {SN.dec} 0.0014", "BANDNAME": "g,r", "COLLECTION": "ztf_dr23", "FORMAT": "CSV",
    }).decode()

    @SETTINGS
    @given(st.data(), st.booleans())
    def check(data, all_objects):
        lines = mutate_fields(data.draw, seed.rstrip("\n").split("\n"), 1, ",", max_changes=12)
        if data.draw(st.integers(0, 9)) == 0:  # a field too many or too few
            i = data.draw(st.integers(1, len(lines) - 1))
            lines[i] = lines[i] + ",1" if data.draw(st.booleans()) else lines[i].rsplit(",", 1)[0]
        text = "\n".join(lines) + "\n"
        product = product_of(tmp_path, "ztf", "ztf_photometry", {"lightcurve.csv": text.encode()},
                             all_objects=all_objects)
        try:
            table = ZtfLightCurveProcessor({}).process(product)
        except StdqError as exc:
            assert str(exc)
            return
        assert_clean_rows(table, "ZTF")
        assert len(table) + sum(product.left_out.values()) == len(lines) - 1, product.left_out

    check()


# -- Gaia alerts light curve (examples/custom_service; the example's emulator) ----------------


def _load(name: str, path: Path):
    """A module of the example, loaded from its file under a private name (the installed
    example package of tests/test_custom_service.py is not shadowed)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gaia():
    src = ROOT / "examples" / "custom_service" / "src" / "stdq_gaia_alerts"
    return (_load("_stdq_test_gaia_processor", src / "processor.py"),
            _load("_stdq_test_gaia_emulator", src / "emulator.py"))


def test_gaia_alerts_parser_properties(gaia, tmp_path):
    processor_module, emulator_module = gaia
    seeds = [emulator_module.lightcurve_csv(alert) for alert in emulator_module.ALERTS]

    @SETTINGS
    @given(st.data(), st.integers(0, len(seeds) - 1), st.sampled_from(("hodgkin2021", "none")))
    def check(data, which, error_model):
        lines = seeds[which].rstrip("\n").split("\n")
        lines = mutate_fields(data.draw, lines, 2, ",", max_changes=6)
        text = "\n".join(lines) + "\n"
        product = product_of(tmp_path, "gaia-alerts", "gaia_alerts_photometry",
                             {"lightcurve.csv": text.encode()})
        processor = processor_module.GaiaAlertsProcessor({"error_model": error_model})
        try:
            table = processor.process(product)
        except StdqError as exc:
            assert str(exc)
            return
        assert_clean_rows(table, "Gaia", require_error=error_model != "none")
        assert len(table) + sum(product.left_out.values()) == len(lines) - 2, product.left_out

    check()
