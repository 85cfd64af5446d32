"""`stdq query` through the installed command: output, JSON shape, exit codes, no partial files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from conftest import assert_clean_error
from stdq.photometry import COLUMNS

PLUGINS = str(Path(__file__).parent / "plugins")
DUMMY = """
[services.dummy]
class = "dummy_service:DummyService"

[data_processors]
dummy_photometry = "dummy_service:DummyProcessor"
"""


@pytest.fixture
def dq(stdq):
    stdq.extra_env["PYTHONPATH"] = PLUGINS
    stdq.write_settings(DUMMY)
    return stdq


def test_stdout_table_only(dq):
    result = dq.run("query", "dummy", "--ra", "10", "--dec", "20", "--rows", "4", "-o", "-")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))  # nothing but the table on stdout
    assert list(rows[0]) == COLUMNS
    assert [float(r["flux_ujy"]) for r in rows] == [0.0, 10.0, 20.0, 30.0]
    # snr 0, 5, 10, 15 with threshold 3: three detections; the first a 3-sigma limit of 2 uJy
    assert [r["detected"] for r in rows] == ["False", "True", "True", "True"]
    assert float(rows[0]["limit"]) == pytest.approx(23.9 - 2.5 * 0.7781512503836436)  # log10(6)


def test_json_shape_and_files(dq):
    result = dq.run("--json", "query", "dummy", "--ra", "14:03:38.56", "--dec", "+54:18:41.9")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    for key in ("job_id", "product_id", "rows", "detections", "path"):
        assert key in info
    assert info["rows"] == 3 and info["detections"] == 2
    # 14:03:38.56 = 14.0607111 h = 210.910667 deg; +54:18:41.9 = 54.311639 deg
    assert info["target"]["ra"] == pytest.approx(210.9106667, abs=1e-6)
    assert info["target"]["dec"] == pytest.approx(54.3116389, abs=1e-6)
    folder = Path(info["path"]).parent
    assert folder.parent.parent.name == "J210.910667+54.311639"
    meta = json.loads((folder / "product.json").read_text())
    assert meta["counts"]["rows"] == 3
    assert meta["raw_files"][0]["name"] == "answer.json"


def test_no_data_exits_5(dq):
    result = dq.run("query", "dummy", "--ra", "10", "--dec", "20", "--mode", "nodata")
    assert_clean_error(result, 5)
    assert "nothing here" in result.stderr


def test_unparseable_answer_exits_1_without_table(dq, tmp_path):
    out = tmp_path / "out.csv"
    result = dq.run("query", "dummy", "--ra", "10", "--dec", "20", "--mode", "garbage", "-o", str(out))
    assert_clean_error(result, 1)
    assert not out.exists()
    assert not list(dq.data_dir.rglob("photometry.csv"))
    assert not [p for p in dq.data_dir.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ra", "10"], "without --dec"),
        (["--ra", "360", "--dec", "0"], "'360'"),
        (["--ra", "10", "--dec", "-91"], "'-91'"),
        (["--ra", "ten", "--dec", "0"], "'ten'"),
        (["--ra", "10", "--dec", "0", "--mjd-min", "60010", "--mjd-max", "60000"], "empty"),
        (["--ra", "10", "--dec", "0", "--mjd-min", "60000", "--date-min", "2023-01-01"], "not both"),
        (["--ra", "10", "--dec", "0", "--date-max", "yesterday"], "yesterday"),
        (["--ra", "10", "--dec", "0", "--background", "-o", "x.csv"], "jobs result"),
    ],
)
def test_bad_input_exits_2(dq, args, needle):
    result = dq.run("query", "dummy", *args)
    line = assert_clean_error(result, 2)
    assert needle in result.stderr, line


def test_unknown_service(dq):
    result = dq.run("query", "nosuch", "--ra", "1", "--dec", "1")
    assert_clean_error(result, 2)
    assert "nosuch" in result.stderr


def test_service_help_lists_its_options(dq):
    result = dq.run("query", "dummy", "--help")
    assert result.returncode == 0
    for option in ("--rows", "--mode", "--mjd-min", "--date-max", "--background", "--format"):
        assert option in result.stdout
