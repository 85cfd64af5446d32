"""Benchmark: normalizing a 1,000,000-row Pan-STARRS detection table vs pandas' read_csv.

Writes a detection CSV in the form the panstarrs service stores it (MAST's CSV:
a header line, then ``objID,detectID,filterID,obsTime,...`` rows, with a few
-999 sentinels) to a temporary folder, then measures side by side, in one run:

- pandas: ``pandas.read_csv(path)`` of that file (all defaults);
- stdq: ``PanstarrsProcessor.process(product)`` + ``photometry.normalize`` -- the
  whole path from the raw file to the normalized table in memory (what
  ``stdq products reprocess`` does before writing photometry.csv).

Each is run ``--runs`` times, alternately; the medians of wall-clock time and
their ratio are printed (goal: <= 3), with the CPU-time medians beside them (on
a shared machine the CPU ratio is the steadier figure). Peak memory is the peak
resident set size of a fresh subprocess doing one normalization (and of one
doing only read_csv). Writing photometry.csv is timed once, for information.

    python bench/process.py [--rows 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 3.0


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
    table.to_csv(path, index=False, lineterminator="\n")


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
    from stdq import photometry
    from stdq.processors.panstarrs import PanstarrsProcessor

    product = make_product(path)
    return photometry.normalize(PanstarrsProcessor({}).process(product), product_id=1), product


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
    """Run one MODE ('normalize' or 'read_csv') and print the peak RSS in bytes as JSON."""
    import pandas as pd

    from stdq import photometry  # noqa: F401  (imports counted in the baseline)
    from stdq.processors import panstarrs  # noqa: F401

    before = peak_rss_bytes()
    if mode == "read_csv":
        pd.read_csv(path)
    else:
        normalize_once(path)
    print(json.dumps({"peak": peak_rss_bytes(), "after_imports": before}))


def peak_memory(mode: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return 0

    import pandas as pd

    from stdq import photometry

    with tempfile.TemporaryDirectory(prefix="stdq-bench-") as tmp:
        path = Path(tmp) / "detection-173142109106893051-p001.csv"
        started = time.perf_counter()
        write_detection_csv(path, args.rows)
        print(f"rows: {args.rows:,}  file: {path.stat().st_size / 1e6:.1f} MB "
              f"(written in {time.perf_counter() - started:.1f} s)")

        read_times: list[tuple[float, float]] = []
        norm_times: list[tuple[float, float]] = []
        table = product = None
        for _ in range(args.runs):
            wall, cpu = time.perf_counter(), time.process_time()
            pd.read_csv(path)
            read_times.append((time.perf_counter() - wall, time.process_time() - cpu))
            table = product = None
            wall, cpu = time.perf_counter(), time.process_time()
            table, product = normalize_once(path)
            norm_times.append((time.perf_counter() - wall, time.process_time() - cpu))
        read_wall = statistics.median(t[0] for t in read_times)
        norm_wall = statistics.median(t[0] for t in norm_times)
        read_cpu = statistics.median(t[1] for t in read_times)
        norm_cpu = statistics.median(t[1] for t in norm_times)
        ratio = norm_wall / read_wall
        print(f"pandas read_csv:  median {read_wall:.3f} s wall, {read_cpu:.3f} s CPU  "
              f"(wall runs: {', '.join(f'{t[0]:.3f}' for t in read_times)})")
        print(f"stdq normalize:   median {norm_wall:.3f} s wall, {norm_cpu:.3f} s CPU  "
              f"(wall runs: {', '.join(f'{t[0]:.3f}' for t in norm_times)})")
        print(f"ratio normalize / read_csv: {ratio:.2f} wall, {norm_cpu / read_cpu:.2f} CPU  "
              f"(goal <= {GOAL:g}: {'met' if ratio <= GOAL else 'NOT met'})")
        assert table is not None and product is not None
        print(f"normalized rows: {len(table):,}; left out: {dict(product.left_out)}")

        out = Path(tmp) / "photometry.csv"
        t0 = time.perf_counter()
        with open(out, "wb") as fh:
            photometry.write_table(table, fh, "csv")
        print(f"(for information) writing photometry.csv: {time.perf_counter() - t0:.2f} s, "
              f"{out.stat().st_size / 1e6:.1f} MB")
        del table

        for mode in ("normalize", "read_csv"):
            mem = peak_memory(mode, path)
            print(f"peak memory ({mode}, subprocess maxrss): {mem['peak'] / 2**20:.0f} MiB "
                  f"(of which {mem['after_imports'] / 2**20:.0f} MiB after imports)")
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
