"""The table writer (photometry.write_table / write_csv, issue 10 item 2): every value reads
back equal (both engines), the file is streamed, -o in the product's format is a copy of
photometry.csv (never written again), Parquet round-trips (or exit 3 without pyarrow)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stdq import photometry

ENGINES = ["pandas"] + (["arrow"] if photometry.have_pyarrow() else [])
needs_pyarrow = pytest.mark.skipif(not photometry.have_pyarrow(), reason="pyarrow is not installed")

FLOATS = [0.1, -0.0, 0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 1.7976931348623157e308, 1e22,
          123456789.123, 1.0, -2.5, 1 / 3, np.nan, np.inf, -np.inf, 60000.123456789012]
TEXTS = ["ztfg", 'a,"b"', "comma, here", 'quote " here', "line\nbreak", "cr\rhere", "ünï©ødé",
         None, " spaced ", "x" * 300, "plain", "1", "-0", "nan", "True", "ps1::g"]


def edge_table() -> pd.DataFrame:
    n = len(FLOATS)
    df = pd.DataFrame(
        {
            "mjd": np.linspace(60000.0, 60001.0, n),
            "flux_ujy": FLOATS,
            "flux_err_ujy": FLOATS[::-1],
            "band": TEXTS,
            "object_id": ["9223372036854775807", None] * (n // 2),
            "source_row_id": [str(2**62 + i) for i in range(n)],
            "quality_flag": np.arange(n, dtype="int64") * (2**40),
        }
    )
    table = photometry.normalize(df, product_id=2**31)
    table["detected"] = np.arange(n) % 3 == 0
    table["x_whole"] = np.arange(n, dtype="float64") - 3.0  # whole floats: must stay floats
    table["x_whole"] = table["x_whole"].where(table.index != 3, -0.0)
    table["x_int"] = pd.array([None if i % 4 == 0 else i * 7 for i in range(n)], dtype="Int64")
    table["x_big"] = np.full(n, 2**63 - 1, dtype="int64")
    table["x_text"] = TEXTS[::-1]
    return table


def same(a: pd.Series, b: pd.Series) -> bool:
    """Equal values: floats bit for bit (NaN as NaN, -0.0 as -0.0); missing text as missing."""
    if a.dtype.kind == "f":
        x, y = a.to_numpy(), b.to_numpy(dtype="float64")
        nan = np.isnan(x)
        return b.dtype.kind == "f" and bool((np.isnan(y) == nan).all()) and (
            x[~nan].view("u8") == y[~nan].view("u8")
        ).all()

    def norm(v):
        return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v

    return [norm(v) for v in a.tolist()] == [norm(v) for v in b.tolist()]


def written(df: pd.DataFrame, tmp_path, engine: str) -> bytes:
    path = tmp_path / f"t-{engine}.csv"
    with open(path, "wb") as fh:
        photometry.write_csv(df, fh, engine=engine)
    photometry.forget_written()
    return path.read_bytes()


@pytest.mark.parametrize("engine", ENGINES)
def test_round_trip_exact_every_column_type(tmp_path, engine):
    df = edge_table()
    written(df, tmp_path, engine)
    back = photometry.read_table(tmp_path / f"t-{engine}.csv")
    assert list(back.columns) == list(df.columns)
    for name in df.columns:
        if name in ("x_text", "band"):  # '' and None both read back missing (documented)
            continue
        assert same(df[name], back[name]), name
    # text: every value back, commas, quotes, line breaks and all
    assert back["band"].tolist() == TEXTS
    assert back["x_text"].tolist() == TEXTS[::-1]
    assert back["detected"].tolist() == df["detected"].tolist()
    assert back["x_whole"].dtype.kind == "f" and math.copysign(1, back["x_whole"][3]) < 0
    assert back["x_big"].tolist() == [2**63 - 1] * len(df)


@pytest.mark.parametrize("engine", ENGINES)
def test_booleans_and_quoting_as_documented(tmp_path, engine):
    df = photometry.normalize(
        pd.DataFrame({"mjd": [60000.0, 60001.0], "flux_ujy": [1.5, 2.0], "flux_err_ujy": [1.0, 1.0],
                      "band": ["ztfg", 'say "hi", ok']}),
        product_id=1,
    )
    df["detected"] = [True, False]
    text = written(df, tmp_path, engine).decode()
    lines = text.split("\n")
    assert lines[0] == ",".join(photometry.COLUMNS)
    first = lines[1].split(",")
    assert first[photometry.COLUMNS.index("detected")] == "True"
    assert first[photometry.COLUMNS.index("band")] == "ztfg"  # not quoted: nothing to quote
    assert first[photometry.COLUMNS.index("magnitude")] == ""  # NaN: an empty field
    assert ',False,' in lines[2] and '"say ""hi"", ok"' in lines[2]


@needs_pyarrow
def test_engines_agree_on_values(tmp_path):
    df = edge_table()
    for engine in ENGINES:
        written(df, tmp_path, engine)
    a = photometry.read_table(tmp_path / "t-arrow.csv")
    b = photometry.read_table(tmp_path / "t-pandas.csv")
    for name in df.columns:
        assert same(a[name], b[name]) if a[name].dtype.kind == "f" else a[name].tolist() == b[name].tolist(), name


@pytest.mark.parametrize("engine", ENGINES)
def test_streamed_in_chunks(tmp_path, engine, monkeypatch):
    monkeypatch.setattr(photometry, "CSV_CHUNK_ROWS", 1000)
    n = 10_000
    df = photometry.normalize(
        pd.DataFrame({"mjd": 60000.0 + np.arange(n) / 7, "flux_ujy": np.arange(n) / 3.0,
                      "flux_err_ujy": np.ones(n), "band": ["ztfg"] * n}),
        product_id=1,
    )
    df.loc[5000, "band"] = "needs, quotes"  # one chunk goes the quoting way
    sizes: list[int] = []

    class Sink(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            sizes.append(len(b))
            return len(b)

    photometry.write_csv(df, Sink(), engine=engine)
    assert sum(sizes) > 10 * max(sizes) // 2  # never the whole file in one piece
    assert len(sizes) >= 10
    buf = io.BytesIO()
    photometry.write_csv(df, buf, engine=engine)
    assert buf.getvalue().count(b"\n") == n + 1  # one header, every row once
    path = tmp_path / "s.csv"
    path.write_bytes(buf.getvalue())
    back = photometry.read_table(path)
    assert same(df["flux_ujy"], back["flux_ujy"]) and back["band"][5000] == "needs, quotes"


@needs_pyarrow
def test_threads_and_constant_columns_write_the_same_bytes(monkeypatch):
    """Chunks formatted in threads come out in order, and a column of one value (formatted
    once per chunk size) reads the same as when every value is formatted: the bytes equal
    those of one thread with no constant shortcut, and pandas' values."""
    monkeypatch.setattr(photometry, "CSV_CHUNK_ROWS", 700)
    n = 10_000
    rng = np.random.default_rng(3)
    df = photometry.normalize(
        pd.DataFrame({"mjd": 60000.0 + np.arange(n) / 7, "flux_ujy": rng.normal(0, 50, n),
                      "flux_err_ujy": np.full(n, 0.1), "band": ["ztfg"] * n}),
        product_id=7,
    )
    df["image_depth"] = 0.0
    df.loc[n - 1, "image_depth"] = -0.0  # 0.0 and -0.0: not one value
    df["x_text"] = "same"
    df.loc[n // 2, "x_text"] = None  # a missing text: not one value
    df["x_int"] = np.full(n, 2**40, dtype="int64")
    df["x_same"] = pd.Series(["ps1"] * n, dtype=object)
    constants = photometry._constant_columns(df, photometry._whole_float_columns(df))
    assert {"flux_err_ujy", "x_same", "zp", "product_id", "x_int"} <= set(constants)
    assert not {"image_depth", "x_text", "flux_ujy", "mjd"} & set(constants)

    def text(threads: int, shortcut: bool) -> bytes:
        monkeypatch.setattr(photometry, "CSV_THREADS", threads)
        if not shortcut:
            monkeypatch.setattr(photometry, "_constant_columns", lambda df, whole: {})
        buf = io.BytesIO()
        photometry.write_csv(df, buf, engine="arrow")
        return buf.getvalue()

    threaded = text(2, True)
    assert threaded == text(1, True) == text(1, False)
    lines = threaded.decode().split("\n")
    assert len(lines) == n + 2 and lines[-1] == ""
    mjd = [float(line.split(",")[0]) for line in lines[1:-1]]
    assert mjd == df["mjd"].tolist()  # every row once, in order
    assert lines[-2].split(",")[photometry.COLUMNS.index("zp")] == "23.9"
    buf = io.BytesIO()
    photometry.write_csv(df, buf, engine="pandas")
    buf.seek(0)
    back = photometry.read_table(io.BytesIO(threaded))
    ref = photometry.read_table(buf)
    for name in df.columns:
        assert same(ref[name], back[name]), name
    assert math.copysign(1, back["image_depth"].iloc[-1]) < 0 and back["x_text"].iloc[n // 2] is None


@needs_pyarrow
def test_a_failing_chunk_is_an_error_not_a_short_file(monkeypatch):
    """An error while formatting a chunk in a thread reaches the caller (the file is then
    not renamed into place by atomic_write)."""
    monkeypatch.setattr(photometry, "CSV_CHUNK_ROWS", 100)
    df = photometry.normalize(
        pd.DataFrame({"mjd": np.arange(2000, dtype="float64"), "flux_ujy": np.ones(2000),
                      "flux_err_ujy": np.ones(2000)}),
        product_id=1,
    )
    calls = []
    real = photometry._format_chunk

    def format_chunk(chunk, pool=None):
        calls.append(1)
        if len(calls) == 7:
            raise OSError(28, "No space left on device")
        return real(chunk, pool)

    monkeypatch.setattr(photometry, "_format_chunk", format_chunk)
    with pytest.raises(OSError, match="No space"):
        photometry.write_csv(df, io.BytesIO(), engine="arrow")
    monkeypatch.setattr(photometry, "_format_chunk", real)

    class Full(io.RawIOBase):  # the disk fills up under the writer thread
        writes = 0

        def writable(self):
            return True

        def write(self, b):
            Full.writes += 1
            if Full.writes > 5:
                raise OSError(28, "No space left on device")
            return len(b)

    with pytest.raises(OSError, match="No space"):
        photometry.write_csv(df, Full(), engine="arrow")
    assert Full.writes == 6  # nothing written after the failed write


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["none", "all", "some"])
def test_csv_with_flag_column_gives_the_bytes_of_the_table_with_it(tmp_path, monkeypatch, engine, kind):
    """photometry.csv plus a True/False column, copied line for line in small blocks (every
    block boundary inside a line), equals write_csv of the table with that column."""
    monkeypatch.setattr(photometry, "COPY_BLOCK", 97)
    n = 500
    df = photometry.normalize(
        pd.DataFrame({"mjd": 60000.0 + np.arange(n) / 7, "flux_ujy": np.arange(n) / 3.0,
                      "flux_err_ujy": np.ones(n), "band": ["ztfg"] * n}),
        product_id=1,
    )
    source = tmp_path / "photometry.csv"
    source.write_bytes(written(df, tmp_path, engine))
    flags = {"none": np.zeros(n, bool), "all": np.ones(n, bool), "some": np.arange(n) % 7 == 3}[kind]
    with_flags = df.copy()
    with_flags["masked"] = flags
    writer = photometry.csv_with_flag_column(source, list(df.columns), "masked", flags)
    assert writer is not None
    out = io.BytesIO()
    writer(out)
    assert out.getvalue() == written(with_flags, tmp_path, engine)


def test_csv_with_flag_column_refuses_what_it_cannot_copy_line_by_line(tmp_path):
    header = "a,b\n"
    cases = {
        "quoted": (header + '1,"x, y"\n', 1),
        "carriage return": (header + "1,x\r\n", 1),
        "no final line break": (header + "1,x", 1),
        "rows not flags": (header + "1,x\n2,y\n", 3),
        "header": ("a,c\n1,x\n", 1),
    }
    for label, (text, rows) in cases.items():
        path = tmp_path / "t.csv"
        path.write_text(text, newline="")
        assert photometry.csv_with_flag_column(path, ["a", "b"], "masked", np.zeros(rows, bool)) is None, label
    assert photometry.csv_with_flag_column(tmp_path / "gone.csv", ["a", "b"], "m", []) is None
    path.write_text(header)
    writer = photometry.csv_with_flag_column(path, ["a", "b"], "masked", [])
    out = io.BytesIO()
    writer(out)
    assert out.getvalue() == b"a,b,masked\n"


def test_read_table_keeps_one_text_object_per_distinct_text(tmp_path):
    """A text column read back holds one str per distinct text (survey, band, ... of 100,000
    rows: 8 bytes a row, not a str a row), with the values and None as written."""
    n = 3000
    df = photometry.normalize(
        pd.DataFrame({"mjd": 60000.0 + np.arange(n), "flux_ujy": np.ones(n), "flux_err_ujy": np.ones(n),
                      "band": ["ztfg", "ztfr", "ztfi"] * (n // 3),
                      "source_row_id": [str(10**12 + i) for i in range(n)]}),
        product_id=1,
    )
    df["survey"] = pd.Series(["ZTF"] * (n - 1) + [None], dtype=object)
    written(df, tmp_path, ENGINES[-1])
    back = photometry.read_table(tmp_path / f"t-{ENGINES[-1]}.csv")
    assert back["band"].dtype == object and back["band"].tolist() == df["band"].tolist()
    assert len({id(v) for v in back["band"]}) == 3
    assert len({id(v) for v in back["survey"].iloc[:-1]}) == 1 and back["survey"].iloc[-1] is None
    assert back["source_row_id"].tolist() == df["source_row_id"].tolist()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=1, max_size=20))
def test_any_float_reads_back_equal(values):
    df = photometry.normalize(
        pd.DataFrame({"mjd": np.arange(len(values), dtype="float64"), "flux_ujy": values,
                      "flux_err_ujy": values, "x_extra": values}),
        product_id=1,
    )
    for engine in ENGINES:
        buf = io.BytesIO()
        photometry.write_csv(df, buf, engine=engine)
        buf.seek(0)
        back = photometry.read_table(buf)
        for name in ("flux_ujy", "flux_err_ujy", "x_extra"):
            assert same(df[name], back[name]), (engine, name, values)


def test_table_just_written_is_not_read_back(tmp_path, monkeypatch):
    from stdq.store import atomic_write

    df = edge_table()
    path = tmp_path / "photometry.csv"
    atomic_write(path, lambda fh: photometry.write_table(df, fh))
    photometry.remember_written(path, df)
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: pytest.fail("read back"))
    assert photometry.read_table(path) is not df  # a shallow copy of it
    assert photometry.read_table(path)["flux_ujy"].equals(df["flux_ujy"])
    monkeypatch.undo()
    path.write_bytes(path.read_bytes() + b"")  # touched: read from the file again
    os.utime(path, ns=(1, 1))
    assert len(photometry.read_table(path)) == len(df)
    photometry.forget_written()


@needs_pyarrow
def test_parquet_round_trip(tmp_path):
    df = edge_table()
    path = tmp_path / "t.parquet"
    with open(path, "wb") as fh:
        photometry.write_table(df, fh, "parquet")
    back = photometry.read_parquet(path)
    assert list(back.columns) == list(df.columns)
    for name in df.columns:
        assert same(df[name], back[name]), name
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata[b"stdq"]
    assert b'"flux_ujy": "uJy"' in meta


# -- the CLI: -o -----------------------------------------------------------------------------


def EMULATORS():
    from stdq.testing.mast import MastCatalogsEmulator

    return [MastCatalogsEmulator()]


QUERY = ("query", "panstarrs", "--ra", "210.910674", "--dec", "54.311650")


def test_output_in_the_product_format_is_a_copy(stdq, tmp_path, monkeypatch):
    from stdq.cli import render
    from stdq.core import QueryResult

    monkeypatch.setattr(QueryResult, "table", property(lambda self: pytest.fail("table read back")))
    monkeypatch.setattr(render, "write_output", lambda *a: pytest.fail("-o written again"))
    out = tmp_path / "x.csv"
    result = stdq.run(*QUERY, "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    import json

    product_csv = json.loads(result.stdout)["path"]
    assert out.read_bytes() == Path(product_csv).read_bytes()
    assert os.stat(out).st_ino != os.stat(product_csv).st_ino  # a copy: editing it spares the product
    piped = stdq.run(*QUERY, "--force", "-o", "-")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines()[0].startswith(",".join(photometry.COLUMNS) + ",ps1_")


def test_output_in_another_format_converts_the_table(stdq, tmp_path, monkeypatch):
    from stdq.cli import render

    converted: list[str | None] = []
    real = render.write_output

    def write_output(table, out, fmt):
        converted.append(fmt)
        return real(table, out, fmt)

    monkeypatch.setattr(render, "write_output", write_output)
    out = tmp_path / "x.json"
    result = stdq.run(*QUERY, "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert converted == ["json"]
    assert out.read_text().startswith("[{")


@needs_pyarrow
def test_output_parquet(stdq, tmp_path):
    out = tmp_path / "x.parquet"
    result = stdq.run(*QUERY, "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    import json

    product_csv = json.loads(result.stdout)["path"]
    photometry.forget_written()
    back, ref = photometry.read_parquet(out), photometry.read_table(product_csv)
    assert len(back) == len(ref) > 0
    for name in ref.columns:
        assert same(ref[name], back[name]), name


def test_parquet_without_pyarrow_is_exit_3(stdq, tmp_path, monkeypatch):
    monkeypatch.setattr(photometry, "have_pyarrow", lambda: False)
    result = stdq.run(*QUERY, "-o", str(tmp_path / "x.parquet"))
    assert result.returncode == 3, result.stderr
    assert "pip install pyarrow" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.parquet").exists()
