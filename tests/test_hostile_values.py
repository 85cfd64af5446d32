"""Hostile values in the services' answers, end to end against the emulators (issue 9 item 4).

Each test lets an emulator answer as usual and then changes its answer the way a
hostile or broken server would (``hostile``: the emulator's own body, rewritten
before it is sent): NaN / inf / 1e999 fluxes, zero and negative errors, epochs in
1990 and 2100 -- left out and counted by reason in product.json
(docs/photometry.md "Rows left out in every survey"); an id or integer column
beyond int64 and a 10,000-deep JSON -- exit 1 with one clear line, the product
(when there is one) failed with that reason in the catalog and in product.json,
and never a product left ``pending``.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import assert_clean_error
from stdq import photometry
from stdq.testing import irsa
from stdq.testing.fakeserver import Request, Response

SN = ("SN 2023ixf",)
MJD_1990 = 47892.0  # 1990-01-01
MJD_2100 = 88069.0  # 2100-01-01
NOT_64_BITS = "99999999999999999999"  # > 2**63 - 1 (and > 2**64 - 1)


# -- helpers --------------------------------------------------------------------------


def hostile(server, emulator: str, path: str, change: Callable[[bytes], bytes], *,
            content_type: str | None = None) -> list[int]:
    """From now on the answers of EMULATOR to requests whose path matches PATH are
    CHANGE(the emulator's own body); returns a list that counts the changed answers."""
    target = server.emulator(emulator)
    original = target.handle
    changed: list[int] = []

    def handle(request: Request) -> Response:
        answer = original(request)
        if answer.status == 200 and re.search(path, request.path):
            changed.append(1)
            headers = dict(answer.headers)
            if content_type:
                headers["Content-Type"] = content_type
            return Response(answer.status, change(answer.body), headers)
        return answer

    target.handle = handle  # type: ignore[method-assign]
    return changed


def products(stdq) -> list[dict]:
    """The catalog rows (products table) of the data directory."""
    path = stdq.data_dir / "stdq.sqlite3"
    if not path.is_file():
        return []
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM products ORDER BY id")]
    finally:
        conn.close()


def assert_none_pending(stdq) -> None:
    assert [p for p in products(stdq) if p["state"] == "pending"] == []


def product_json(row: dict) -> dict:
    return json.loads((Path(row["path"]) / "product.json").read_text())


def query_ok(stdq, service: str, *args: str) -> tuple[dict, dict, list[dict]]:
    """`stdq --json query SERVICE ...`: (its JSON, product.json, photometry.csv rows)."""
    result = stdq.run("--json", "query", service, *args)
    assert result.returncode == 0, (result.stdout, result.stderr)
    info = json.loads(result.stdout)
    folder = Path(info["path"]).parent
    meta = json.loads((folder / "product.json").read_text())
    rows = list(csv.DictReader(io.StringIO((folder / "photometry.csv").read_text())))
    assert_none_pending(stdq)
    return info, meta, rows


def assert_rows_clean(rows: list[dict], survey: str) -> None:
    """Every kept row has a finite flux, an error > 0 and an epoch within the survey's years."""
    first, last, _ = photometry.SURVEY_YEARS[survey]
    now = photometry.now_mjd()
    assert rows
    for row in rows:
        flux, err, mjd = float(row["flux_ujy"]), float(row["flux_err_ujy"]), float(row["mjd"])
        assert math.isfinite(flux) and math.isfinite(err) and err > 0, row
        assert first <= mjd <= (last if last is not None else now + 1), row


def assert_failed_product(stdq, result, *words: str) -> dict:
    """Exit 1 with one clear line holding WORDS; the one product failed with that reason."""
    last = assert_clean_error(result, 1)
    for word in words:
        assert word in last, last
    assert_none_pending(stdq)
    rows = products(stdq)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["state"] == "failed" and row["error"], row
    assert "\n" not in row["error"]
    for word in words:
        assert word in row["error"], row["error"]
    meta = product_json(row)
    assert meta["error"] == row["error"] and meta["photometry"] is None
    return row


def change_lines(body: bytes, edit: Callable[[int, list[str]], list[str] | None], *,
                 sep: str | None = None, skip: int = 1) -> bytes:
    """Rewrite the data lines of a text answer (after SKIP header lines): EDIT(index, fields)."""
    lines = body.decode().split("\n")
    out = lines[:skip]
    for i, line in enumerate(lines[skip:]):
        if not line.strip():
            out.append(line)
            continue
        fields = line.split(sep) if sep else line.split()
        new = edit(i, fields)
        out.append(line if new is None else (sep or " ").join(new))
    return "\n".join(out).encode()


# -- ATLAS ------------------------------------------------------------------------------


@pytest.fixture
def atlas(stdq, recorded_waits):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = 0.05
    emulator.run_seconds = 0.05
    return stdq


ATLAS_RESULT = r"^/static/results/job\d+\.txt$"
# ATLAS columns: MJD m dm uJy duJy F err chi/N RA Dec x y maj min phi apfit mag5sig Sky Obs
ATLAS_EDITS = {0: (3, "nan"), 1: (3, "inf"), 2: (3, "1e999"), 3: (4, "0"), 4: (4, "-3"),
               5: (0, f"{MJD_1990:.6f}"), 6: (0, f"{MJD_2100:.6f}"), 7: (4, "-inf")}


def test_atlas_hostile_values_are_left_out_and_counted(atlas):
    raw_rows: list[int] = []

    def edit(i: int, fields: list[str]) -> list[str] | None:
        raw_rows.append(i)
        if i in ATLAS_EDITS:
            column, value = ATLAS_EDITS[i]
            fields[column] = value
            return fields
        return None

    changed = hostile(atlas.server, "atlas", ATLAS_RESULT, lambda b: change_lines(b, edit))
    info, meta, rows = query_ok(atlas, "atlas", *SN, "--sync")
    assert changed == [1]
    assert meta["left_out"] == {
        "non-finite flux or error": 4,
        "flux error <= 0": 2,
        "epoch before ATLAS began": 1,
        "epoch in the future": 1,
    }
    assert len(rows) + 8 == len(raw_rows) and info["rows"] == len(rows)
    assert meta["counts"]["left_out"] == 8 and products(atlas)[0]["left_out"] == 8
    assert_rows_clean(rows, "ATLAS")


def test_atlas_err_code_beyond_int64_fails_the_product(atlas):
    def edit(i: int, fields: list[str]) -> list[str] | None:
        if i == 2:
            fields[6] = NOT_64_BITS
            return fields
        return None

    hostile(atlas.server, "atlas", ATLAS_RESULT, lambda b: change_lines(b, edit))
    result = atlas.run("query", "atlas", *SN, "--sync")
    assert_failed_product(atlas, result, "atlas", "64-bit integer")


def test_a_processor_bug_is_exit_1_with_the_product_failed(atlas, monkeypatch):
    from stdq.processors.atlas import AtlasProcessor

    def broken(self, product):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(AtlasProcessor, "process", broken)
    result = atlas.run("query", "atlas", *SN, "--sync")
    row = assert_failed_product(atlas, result, "atlas", "ZeroDivisionError")
    assert "internal error" not in row["error"]


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (OSError(errno.EIO, "Input/output error"), 1, ("could not be written", "OSError")),
        (OSError(errno.ENOSPC, "No space left on device"), 75, ("is full",)),
    ],
)
def test_product_json_that_cannot_be_written_leaves_no_pending_product(atlas, monkeypatch, error, code, words):
    from stdq import processing

    real = processing._write_product_json
    calls: list[int] = []

    def failing(product, query, service_info, used, summary, error_text):
        calls.append(1)
        if summary is not None:  # the product.json of a ready product
            raise error
        return real(product, query, service_info, used, summary, error_text)

    monkeypatch.setattr(processing, "_write_product_json", failing)
    result = atlas.run("query", "atlas", *SN, "--sync")
    last = assert_clean_error(result, code)
    for word in words:
        assert word in last, last
    assert_none_pending(atlas)
    (row,) = products(atlas)
    assert row["state"] == "failed" and all(w in row["error"] for w in words), row
    assert product_json(row)["error"] == row["error"]  # the second write (the failure) worked
    assert len(calls) == 2


# -- ZTF (IRSA light curves) --------------------------------------------------------------

IRSA_PATH = r".*"
IRSA_COLUMNS = list(irsa.COLUMNS)


def irsa_edit(edits: dict[int, dict[str, str]], seen: list[int]) -> Callable[[bytes], bytes]:
    def change(body: bytes) -> bytes:
        def edit(i: int, fields: list[str]) -> list[str] | None:
            seen.append(i)
            if i not in edits:
                return None
            for name, value in edits[i].items():
                fields[IRSA_COLUMNS.index(name)] = value
            return fields

        return change_lines(body, edit, sep=",")

    return change


def test_ztf_hostile_values_are_left_out_and_counted(stdq):
    seen: list[int] = []
    edits = {
        0: {"mag": "-inf"}, 1: {"mag": "-1e999"}, 2: {"magerr": "inf"},
        3: {"magerr": "0"}, 4: {"magerr": "-0.05"},
        5: {"mjd": f"{MJD_1990}"}, 6: {"mjd": f"{MJD_2100}"},
        7: {"mag": "nan"},
    }
    changed = hostile(stdq.server, "irsa", IRSA_PATH, irsa_edit(edits, seen))
    info, meta, rows = query_ok(stdq, "ztf", *SN, "--all-objects")
    assert changed == [1]
    assert meta["left_out"] == {
        "rows without a usable mag, magerr or mjd": 1,  # nan: ZTF's own reason
        "non-finite flux or error": 3,
        "flux error <= 0": 2,
        "epoch before ZTF began": 1,
        "epoch in the future": 1,
    }
    assert len(rows) + 8 == len(seen)
    assert_rows_clean(rows, "ZTF")


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("oid", NOT_64_BITS, ("ztf", "oid", "64-bit integer")),
        ("oid", "735205200001234x", ("ztf", "oid", "64-bit integer")),
        ("catflags", NOT_64_BITS, ("ztf", "catflags", "64-bit integer")),
        ("field", "1e30", ("ztf", "field", "64-bit integer")),
    ],
)
def test_ztf_ids_and_integers_beyond_int64_fail_the_product(stdq, column, value, words):
    hostile(stdq.server, "irsa", IRSA_PATH, irsa_edit({1: {column: value}}, []))
    result = stdq.run("query", "ztf", *SN)
    assert_failed_product(stdq, result, *words)


# -- Pan-STARRS1 (MAST) -------------------------------------------------------------------

DETECTION = r"/dr2/detection\.csv$"
MEAN = r"/dr2/mean\.csv$"


def csv_edit(edits: dict[int, dict[str, str]], seen: list[int]) -> Callable[[bytes], bytes]:
    def change(body: bytes) -> bytes:
        header = body.decode().split("\n", 1)[0].split(",")

        def edit(i: int, fields: list[str]) -> list[str] | None:
            seen.append(i)
            if i not in edits:
                return None
            for name, value in edits[i].items():
                fields[header.index(name)] = value
            return fields

        return change_lines(body, edit, sep=",")

    return change


def test_panstarrs_hostile_values_are_left_out_and_counted(stdq):
    seen: list[int] = []
    edits = {
        0: {"psfFlux": "inf"}, 1: {"psfFlux": "1e999"}, 2: {"psfFluxErr": "0"},
        3: {"psfFluxErr": "-1e-06"}, 4: {"obsTime": f"{MJD_1990}"}, 5: {"obsTime": f"{MJD_2100}"},
        6: {"psfFluxErr": "nan"},
    }
    changed = hostile(stdq.server, "mast", DETECTION, csv_edit(edits, seen))
    info, meta, rows = query_ok(stdq, "panstarrs", *SN)
    assert changed == [1]
    left = dict(meta["left_out"])
    # the emulator's own -999 and 0 fluxes keep their PS1 reasons
    assert left.pop("psfFlux missing (-999 or null)") >= 1 and left.pop("psfFlux = 0") >= 1
    assert left == {
        "non-finite flux or error": 3,
        "flux error <= 0": 2,
        "epoch before PS1 began": 1,
        "epoch after PS1 ended": 1,
    }
    assert len(rows) + sum(meta["left_out"].values()) == len(seen)
    assert_rows_clean(rows, "PS1")


@pytest.mark.parametrize(
    ("path", "column"),
    [(MEAN, "objID"), (DETECTION, "detectID"), (DETECTION, "objID")],
)
def test_panstarrs_ids_beyond_int64_are_exit_1(stdq, path, column):
    hostile(stdq.server, "mast", path, csv_edit({0: {column: NOT_64_BITS}}, []))
    result = stdq.run("query", "panstarrs", *SN)
    last = assert_clean_error(result, 1)
    assert "panstarrs" in last and "64-bit integer" in last, last
    # the service reads the ids of every answer before it makes the product: none, so none pending
    assert products(stdq) == []


def test_panstarrs_flag_column_beyond_int64_fails_the_product(stdq):
    hostile(stdq.server, "mast", DETECTION, csv_edit({0: {"infoFlag": NOT_64_BITS}}, []))
    result = stdq.run("query", "panstarrs", *SN)
    assert_failed_product(stdq, result, "panstarrs", "infoFlag", "64-bit integer")


@pytest.mark.parametrize("path", [MEAN, DETECTION])
def test_panstarrs_deeply_nested_json_is_exit_1(stdq, path):
    deep = b"[" * 10_000 + b"]" * 10_000
    changed = hostile(stdq.server, "mast", path, lambda body: deep, content_type="application/json")
    result = stdq.run("query", "panstarrs", *SN)
    last = assert_clean_error(result, 1)
    assert changed and "nested too deeply" in last, last
    assert "RecursionError" not in result.stderr
    assert products(stdq) == []
    jobs = json.loads(stdq.run("--json", "jobs", "list").stdout)
    assert [j["state"] for j in jobs] == ["failed"] and "nested too deeply" in jobs[0]["error"]


def test_reprocessing_a_deeply_nested_raw_answer_fails_the_product(stdq):
    """Hostile local state: a stored answer replaced by a 10,000-deep JSON."""
    info, _, _ = query_ok(stdq, "panstarrs", *SN)
    folder = Path(info["path"]).parent
    (raw,) = sorted((folder / "raw").glob("detection-*.csv"))
    raw.write_bytes(b'{"info": [], "data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    result = stdq.run("products", "reprocess", str(info["product_id"]))
    assert_failed_product(stdq, result, "panstarrs", "nested too deeply")


def test_a_product_made_before_the_query_failed_is_not_left_pending(atlas, monkeypatch):
    """The service made its product, then failed (a download cut, a hostile answer): the
    job's end marks the product failed with the job's reason (jobs/runner.py)."""
    from stdq.errors import QueryFailed
    from stdq.services.atlas import AtlasForcedPhotometryService

    def query_service(self, target, params, context):
        context.new_product(target, params)
        raise QueryFailed("atlas: the result file was refused by this test")

    monkeypatch.setattr(AtlasForcedPhotometryService, "query_service", query_service)
    result = atlas.run("query", "atlas", *SN, "--sync")
    assert "refused by this test" in assert_clean_error(result, 1)
    assert_none_pending(atlas)
    (row,) = products(atlas)
    assert row["state"] == "failed" and row["error"] == "atlas: the result file was refused by this test"


# -- Gaia alerts (examples/custom_service): the example's processor on its emulator's file ----


def test_gaia_alerts_hostile_values_are_left_out_and_counted(tmp_path):
    """The plug-in's processor applies the same rule (its service needs the example
    installed: tests/test_custom_service.py runs it end to end; here its emulator's
    light curve, made hostile, goes through its processor)."""
    from test_parser_properties import _load

    from stdq.store import DataProduct

    src = Path(__file__).parents[1] / "examples" / "custom_service" / "src" / "stdq_gaia_alerts"
    emulator = _load("_stdq_test_gaia_emulator", src / "emulator.py")
    processor = _load("_stdq_test_gaia_processor", src / "processor.py")
    alert = next(a for a in emulator.ALERTS if a.name == "Gaia23emu")
    lines = emulator.lightcurve_csv(alert).rstrip("\n").split("\n")
    data = [line.split(",") for line in lines[2:]]
    data[0][2] = "-1e999"  # G = -inf: an infinite flux
    data[3][1] = "2447892.5"  # 1990
    data[5][1] = "2488069.5"  # 2100
    data[6][1] = "nan"
    text = "\n".join(lines[:2] + [",".join(d) for d in data]) + "\n"
    product = DataProduct(id=1, service="gaia-alerts", data_product_type="gaia_alerts_photometry",
                          target={"name": "SN 2023ixf", "ra": 210.910674, "dec": 54.31165},
                          params={}, path=tmp_path / "product")
    product.add_raw("lightcurve.csv", text.encode())
    table = processor.GaiaAlertsProcessor({}).process(product)
    left = dict(product.left_out)
    assert left.pop("magnitude 'untrusted' (the alert pipeline's flag)") == 1  # the emulator's own
    assert left.pop("magnitude 'null' (no measurement)") == 1
    assert left == {
        "non-finite flux or error": 1,
        "epoch not a number": 1,
        "epoch before Gaia began": 1,
        "epoch in the future": 1,
    }
    assert len(table) == 1 and len(table) + sum(product.left_out.values()) == len(data)
    assert table["flux_ujy"].map(math.isfinite).all() and (table["flux_err_ujy"] > 0).all()


def test_a_deeply_nested_json_status_answer_is_exit_1(atlas):
    """The service's own JSON steps (ATLAS: the task's status) meet the deep JSON: the job
    fails with one clear line (jobs/runner.py), never 'internal error: RecursionError'."""
    deep = b"[" * 10_000 + b"]" * 10_000
    changed = hostile(atlas.server, "atlas", r"^/queue/\d+/$", lambda body: deep, content_type="application/json")
    result = atlas.run("query", "atlas", *SN, "--sync")
    last = assert_clean_error(result, 1)
    assert changed and "nested too deeply" in last, last
    assert "RecursionError" not in result.stderr
    assert_none_pending(atlas)
