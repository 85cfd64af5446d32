"""Benchmark: merging a 1,000,000-row light curve (``Stdq.lightcurve``) vs pandas read_csv.

Builds a data directory with one target and four services (ATLAS and ZFPS difference
fluxes, ZTF and PS1 total fluxes), ROWS rows in all, each service's rows in one
product with its latest.csv (:mod:`stdq.latest`), then measures, each in a fresh
subprocess so that peak memory (ru_maxrss) is its own, in one run:

- stdq: ``Stdq(...).lightcurve(target, flux_kind="both")`` -- reading every latest.csv
  with its dtypes, the masks, the merge, the sort and the summary;
- plot: the same merge, then ``stdq.plot.plot_table`` of all ROWS to a PNG (magnitude
  view; both flux kinds are in, so two panels, difference rows above and total rows
  below: matplotlib, markers and error bars; needs the
  ``plot`` extra; left out with ``--no-plot``);
- the baseline: ``pandas.read_csv`` of the same latest.csv files and ``pandas.concat``.

Medians of wall time over RUNS, and each one's peak RSS, are printed with the ratio.

    python bench/lightcurve.py [--rows 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = "BENCH 1"
SERVICES = {  # service: (survey, band, flux_kind)
    "atlas": ("ATLAS", "atlaso", "difference"),
    "ztf-fps": ("ZTF", "ztfr", "difference"),
    "ztf": ("ZTF", "ztfg", "total"),
    "panstarrs": ("PS1", "ps1::r", "total"),
}


def build(data_dir: Path, rows: int, seed: int = 1) -> list[Path]:
    """DATA_DIR with TARGET's four products and their latest.csv; returns the latest.csv paths."""
    import numpy as np
    import pandas as pd

    from stdq import latest, photometry
    from stdq.core import Stdq

    config = data_dir / "config.toml"
    config.write_text("", encoding="utf-8")
    rng = np.random.default_rng(seed)
    per = rows // len(SERVICES)
    paths = []
    with Stdq(config, data_dir) as sdq:
        for i, (service, (survey, band, kind)) in enumerate(SERVICES.items()):
            product = sdq.store.create_product(
                service=service, data_product_type=f"{service}_photometry",
                target={"name": TARGET, "ra": 210.9, "dec": 54.3}, params={},
            )
            flux = rng.normal(100.0, 50.0, per)
            err = rng.uniform(1.0, 10.0, per)
            detected = flux / err >= 3
            table = photometry.normalize(pd.DataFrame({
                "mjd": np.sort(rng.uniform(58000.0, 61000.0, per)),
                "survey": survey, "telescope": survey, "instrument": survey, "filter": band[-1],
                "band": band, "flux_ujy": flux, "flux_err_ujy": err, "detected": detected,
                "magnitude": np.where(detected & (flux > 0), 23.9 - 2.5 * np.log10(np.abs(flux)), np.nan),
                "flux_kind": kind, "quality_flag": rng.choice([0, 0, 0, 4], per),
                "source_row_id": [f"{i}-{n}" for n in range(per)],
            }), product_id=product.id)
            product.path.mkdir(parents=True, exist_ok=True)
            with product.photometry_path.open("wb") as fh:
                photometry.write_table(table, fh, "csv")
            sdq.store.mark_product(product.id, state="ready", rows=per, detections=int(detected.sum()))
            made = latest.rebuild(sdq.store, product.path.parent, service)
            assert made.path is not None
            paths.append(made.path)
    return paths


CHILD = r"""
import json, resource, sys, time
mode, data_dir, paths = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
import pandas as pd
if mode == "stdq":
    from stdq.core import Stdq
    import stdq.lightcurve
    start = time.perf_counter()
    with Stdq(data_dir + "/config.toml", data_dir) as sdq:
        lc = sdq.lightcurve("BENCH 1", flux_kind="both")
        lc.summary()
        rows = lc.rows
elif mode == "plot":
    from stdq.core import Stdq
    from stdq.plot import plot_table
    import matplotlib.figure
    start = time.perf_counter()
    with Stdq(data_dir + "/config.toml", data_dir) as sdq:
        lc = sdq.lightcurve("BENCH 1", flux_kind="both")
        info = plot_table(lc.table, data_dir + "/bench.png", view="mag", name="BENCH 1")
        rows = info.drawn
else:
    start = time.perf_counter()
    rows = len(pd.concat([pd.read_csv(p) for p in paths], ignore_index=True))
wall = time.perf_counter() - start
print(json.dumps({"rows": rows, "wall": wall,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(mode: str, data_dir: Path, paths: list[Path]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(data_dir), json.dumps([str(p) for p in paths])],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-plot", action="store_true", help="leave out the plot measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stdq-bench-lc-") as tmp:
        data_dir = Path(tmp)
        paths = build(data_dir, args.rows)
        results: dict[str, list[dict]] = {"stdq": [], "pandas": []}
        if not args.no_plot:
            results["plot"] = []
        for _ in range(args.runs):  # alternating, so that a busy moment hits both
            for mode in results:
                results[mode].append(measure(mode, data_dir, paths))
    for mode, runs in results.items():
        walls = [r["wall"] for r in runs]
        print(f"{mode:7s} rows {runs[0]['rows']:>9,}  median {statistics.median(walls):6.2f} s"
              f"  runs {' '.join(f'{w:.2f}' for w in walls)}  peak RSS {max(r['peak_mib'] for r in runs):7.1f} MiB")
    ratio = statistics.median(r["wall"] for r in results["stdq"]) / statistics.median(
        r["wall"] for r in results["pandas"])
    print(f"stdq lightcurve / pandas read_csv: {ratio:.2f}x")
    if results.get("plot"):
        ratio = statistics.median(r["wall"] for r in results["plot"]) / statistics.median(
            r["wall"] for r in results["pandas"])
        print(f"stdq lightcurve + plot (PNG) / pandas read_csv: {ratio:.2f}x")


if __name__ == "__main__":
    main()
