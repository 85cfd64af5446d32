"""Benchmark: the whole path of a 1,000,000-row Pan-STARRS detection answer vs pandas + pyarrow.

Writes a detection CSV in the form the panstarrs service stores it (MAST's CSV:
a header line, then ``objID,detectID,filterID,obsTime,...`` rows, with a few
-999 sentinels) to a temporary folder, then measures side by side, alternating,
in one run:

- stdq, the whole path: the raw answer parsed (``PanstarrsProcessor.process``),
  the common value rule (``photometry.drop_bad_values``), ``photometry.normalize``,
  and the table written as photometry.csv (``photometry.write_table``) -- what
  ``processing.process_product`` does;
- the baseline: ``pandas.read_csv`` of the raw file plus ``pyarrow.csv.write_csv``
  of that same table (and, for information, of stdq's normalized table, which
  has more columns).

After one warm-up of each (not measured), medians of wall-clock and CPU time and
their ratios are printed (goal: whole path <= 3x the baseline; on a shared machine
the CPU ratio is the steadier figure), with each run's wall time, then, once each: the writers alone on the
normalized table (stdq's CSV writer with pyarrow, with pandas -- on 100,000 rows,
scaled -- pyarrow's write_csv, Parquet) and the peak memory of a fresh
subprocess doing the whole path and the baseline. pyarrow is needed for the
baseline (``pip install 'stdq[bench]'`` or ``pip install pyarrow``).

    python bench/process.py [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 3.0
PANDAS_WRITE_ROWS = 100_000


def write_detection_csv(path: Path, rows: int, seed: int = 1) -> None:
    """ROWS detections of one object, as MAST answers them (obsTime sorted, TAI)."""
    import numpy as np
    import pandas as pd

    from stdq.processors.panstarrs import DETECTION_COLUMNS

    rng = np.random.default_rng(seed)
    flux = rng.uniform(2e-5, 2e-3, rows).astype("float32")
    flux[rng.choice(rows, rows // 100, replace=False)] = -999.0  # sentinels, left out
    table = pd.DataFrame(
        {
            "objID": np.full(rows, 173142109106893051, dtype="int64"),
            "detectID": 1612345678900000000 + np.arange(rows, dtype="int64") * 7,
            "filterID": rng.integers(1, 6, rows),
            "obsTime": np.sort(rng.uniform(55197.0, 57750.0, rows)),
            "ra": 210.910674 + rng.normal(0, 1e-5, rows),
            "dec": 54.311650 + rng.normal(0, 1e-5, rows),
            "psfFlux": flux,
            "psfFluxErr": (np.abs(flux) * 0.01 + 2e-7).astype("float32"),
            "psfMajorFWHM": rng.uniform(1.0, 2.0, rows).astype("float32"),
            "psfMinorFWHM": rng.uniform(0.9, 1.8, rows).astype("float32"),
            "psfQfPerfect": rng.uniform(0.8, 1.0, rows).astype("float32"),
            "apFlux": (flux * 1.02).astype("float32"),
            "apFluxErr": (np.abs(flux) * 0.012 + 3e-7).astype("float32"),
            "infoFlag": rng.integers(0, 1 << 20, rows),
            "infoFlag2": rng.integers(0, 1 << 10, rows),
            "infoFlag3": rng.integers(0, 1 << 10, rows),
        },
        columns=list(DETECTION_COLUMNS),
    )
    try:  # pyarrow writes it ten times faster (the bench needs it anyway)
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        table.to_csv(path, index=False, lineterminator="\n")
    else:
        pacsv.write_csv(pa.Table.from_pandas(table, preserve_index=False), str(path),
                        pacsv.WriteOptions(quoting_style="none"))


def make_product(path: Path):
    """A DataProduct whose only raw file is PATH (a detection page)."""
    from stdq.store import DataProduct, RawFile

    product = DataProduct(
        id=1, service="panstarrs", data_product_type="panstarrs_photometry",
        target={"name": "bench", "ra": 210.910674, "dec": 54.311650},
        params={"release": "dr2", "table": "detection", "all_objects": True},
        path=path.parent,
    )
    product.raw_files = [RawFile(name=path.name, path=path, sha256="", bytes=path.stat().st_size)]
    return product


def normalize_once(path: Path):
    """Raw answer -> the normalized table, as processing.process_product makes it."""
    from stdq import photometry
    from stdq.processors.panstarrs import PanstarrsProcessor

    product = make_product(path)
    table = PanstarrsProcessor({}).process(product)
    table = photometry.drop_bad_values(table, None, product)
    return photometry.normalize(table, product_id=1), product


def whole_path(path: Path, out: Path):
    """The whole path: parsed, normalized, written as photometry.csv (with the C heap's
    free pages given back between the stages, as process_product does)."""
    from stdq import memory, photometry

    memory.release()
    table, product = normalize_once(path)
    memory.release()
    with open(out, "wb") as fh:
        photometry.write_table(table, fh, "csv")
    memory.release()
    return table, product


def baseline(path: Path, out: Path) -> None:
    """pandas read_csv of the raw file + pyarrow's write_csv of that table."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    df = pd.read_csv(path)
    pacsv.write_csv(pa.Table.from_pandas(df, preserve_index=False), str(out))


def timed(func, *args) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = func(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux: VmHWM of /proc/self/status (per process image; ``ru_maxrss`` would
    carry over the parent's peak across fork+exec). Elsewhere: ru_maxrss.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child(mode: str, path: Path) -> None:
    """Run one MODE ('whole' or 'baseline') and print the peak RSS in bytes as JSON."""
    import pandas as pd  # noqa: F401  (imports counted in the baseline)
    import pyarrow.csv  # noqa: F401

    from stdq import photometry  # noqa: F401
    from stdq.processors import panstarrs  # noqa: F401

    before = peak_rss_bytes()
    out = path.with_name(f"out-{mode}.csv")
    if mode == "baseline":
        baseline(path, out)
    else:
        whole_path(path, out)
    print(json.dumps({"peak": peak_rss_bytes(), "after_imports": before}))


def peak_memory(mode: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def runs_text(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return 0

    from stdq import photometry

    if not photometry.have_pyarrow():
        print("the baseline needs pyarrow: pip install pyarrow (or pip install 'stdq[bench]')")
        return 2
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with tempfile.TemporaryDirectory(prefix="stdq-bench-") as tmp:
        path = Path(tmp) / "detection-173142109106893051-p001.csv"
        started = time.perf_counter()
        write_detection_csv(path, args.rows)
        print(f"rows: {args.rows:,}  raw file: {path.stat().st_size / 1e6:.1f} MB "
              f"(made in {time.perf_counter() - started:.1f} s)")
        out = Path(tmp) / "photometry.csv"
        base_out = Path(tmp) / "baseline.csv"

        stdq_runs: list[tuple[float, float]] = []
        base_runs: list[tuple[float, float]] = []
        table = product = None
        # warm-up, not measured: the raw file in the page cache, both outputs' pages once,
        # the byte code and the time tables (the first pair ran up to 2x slower than the rest)
        baseline(path, base_out)
        whole_path(path, out)
        for _ in range(args.runs):
            wall, cpu, _r = timed(baseline, path, base_out)
            base_runs.append((wall, cpu))
            table = product = None
            wall, cpu, (table, product) = timed(whole_path, path, out)
            stdq_runs.append((wall, cpu))
        b_wall = statistics.median(t[0] for t in base_runs)
        b_cpu = statistics.median(t[1] for t in base_runs)
        s_wall = statistics.median(t[0] for t in stdq_runs)
        s_cpu = statistics.median(t[1] for t in stdq_runs)
        ratio, cpu_ratio = s_wall / b_wall, s_cpu / b_cpu
        print(f"baseline (read_csv + pyarrow write_csv): median {b_wall:.2f} s wall, {b_cpu:.2f} s CPU"
              f"  (wall runs: {runs_text([t[0] for t in base_runs])})")
        print(f"stdq whole path (parse, normalize, write): median {s_wall:.2f} s wall, {s_cpu:.2f} s CPU"
              f"  (wall runs: {runs_text([t[0] for t in stdq_runs])})")
        print(f"ratio whole path / baseline: {ratio:.2f} wall, {cpu_ratio:.2f} CPU  "
              f"(goal <= {GOAL:g}: {'met' if ratio <= GOAL else 'NOT met'}; "
              f"spread of the pair ratios: {runs_text(sorted(s[0] / b[0] for s, b in zip(stdq_runs, base_runs, strict=True)))})")
        assert table is not None and product is not None
        print(f"normalized rows: {len(table):,} x {len(table.columns)} columns; "
              f"left out: {dict(product.left_out)}; photometry.csv {out.stat().st_size / 1e6:.1f} MB")

        # the writers alone, on the normalized table (once each, for information)
        def write_stdq(t):
            with open(out, "wb") as fh:
                photometry.write_csv(t, fh, engine="arrow")

        def write_arrow_plain(t):
            pacsv.write_csv(pa.Table.from_pandas(t, preserve_index=False), str(base_out))

        def write_parquet(t):
            with open(Path(tmp) / "p.parquet", "wb") as fh:
                photometry.write_table(t, fh, "parquet")

        small = table.iloc[:PANDAS_WRITE_ROWS]

        def write_pandas_small(t):
            photometry.write_csv(small, io.BytesIO(), engine="pandas")

        scale = len(table) / max(1, len(small))
        for label, func, k in (
            ("stdq CSV writer (pyarrow)", write_stdq, 1.0),
            ("pyarrow write_csv (from_pandas)", write_arrow_plain, 1.0),
            ("stdq Parquet", write_parquet, 1.0),
            (f"stdq CSV writer without pyarrow (pandas; {len(small):,} rows, scaled)", write_pandas_small, scale),
        ):
            wall, cpu, _r = timed(func, table)
            print(f"  write {label}: {wall * k:.2f} s wall, {cpu * k:.2f} s CPU")
        del table

        for mode in ("whole", "baseline"):
            mem = peak_memory(mode, path)
            print(f"peak memory ({mode}, fresh subprocess): {mem['peak'] / 2**20:.0f} MiB "
                  f"(of which {mem['after_imports'] / 2**20:.0f} MiB after imports)")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
