"""Time to normalize a large ATLAS result, relative to pandas' fastest read of the same file.

    python bench/atlas_parse.py [--rows 1000000] [--repeat 5] [--file PATH]

Writes a synthetic result file in the exact format of the real ones (the
emulator's header and row layout), then, in the same run and on the same file:

- pandas' fastest read: the best time of ``read_csv(sep=r"\\s+")`` and of
  ``read_csv(sep=" ", skipinitialspace=True)`` (best of --repeat runs;
  a variant counts only if it reads the file as the first does);
- stdq's normalization: ``AtlasProcessor.process`` (parse, flux, limits, flags,
  bands, telescopes, times) plus ``photometry.normalize`` (the fixed columns in
  order, sorted by mjd), best of --repeat runs, interleaved with the reads.

It prints both times and their ratio (goal: <= 3).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def write_result(path: Path, rows: int, seed: int = 1) -> None:
    """A synthetic ATLAS result of ROWS exposures in the real layout."""
    import numpy as np

    from stdq.testing.atlas import HEADER, ROW_FORMAT

    rng = np.random.default_rng(seed)
    nights = 57300 + np.arange(rows) // 4
    units = np.array(["01a", "02a", "03a", "04a", "05r"])[(np.arange(rows) // 4) % 5]
    filters = np.array(["o", "c"])[(np.arange(rows) // 20) % 2]
    mjd = nights + 0.3 + (np.arange(rows) % 4) * 0.012 + rng.uniform(0, 0.002, rows)
    dujy = rng.integers(8, 60, rows)
    ujy = np.round(rng.normal(40, 80, rows)).astype(int)
    chi = rng.uniform(0.5, 20, rows)
    err = (rng.uniform(0, 1, rows) < 0.03).astype(int)
    mag5 = rng.uniform(18.5, 19.9, rows)
    with open(path, "w", encoding="ascii") as fh:
        fh.write(HEADER + "\n")
        out = []
        for i in range(rows):
            f = ujy[i] if ujy[i] != 0 else 0.4
            m = (23.9 - 2.5 * np.log10(abs(f))) * (1 if f > 0 else -1)
            out.append(
                ROW_FORMAT.format(
                    mjd=mjd[i], m=m, dm=min(99.999, 1.0857 * dujy[i] / abs(f)), ujy=int(ujy[i]),
                    dujy=int(dujy[i]), f=filters[i], err=int(err[i]), chi=chi[i], ra=210.91067,
                    dec=54.31165, x=5000.0 + i % 997, y=4000.0 + i % 883, maj=2.1, min=2.0,
                    phi=12.5, apfit=-0.42, mag5sig=mag5[i], sky=20.5,
                    obs=f"{units[i]}{nights[i]}{filters[i]}{i % 10000:04d}{filters[i]}",
                )
            )
            if len(out) >= 100_000:
                fh.write("\n".join(out) + "\n")
                out = []
        if out:
            fh.write("\n".join(out) + "\n")


def best_of(repeat: int, fn):
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--file", help="use (or create) this result file")
    args = parser.parse_args(argv)

    import pandas as pd

    from stdq import photometry
    from stdq.processors.atlas import AtlasProcessor
    from stdq.store import DataProduct, RawFile

    tmp = tempfile.TemporaryDirectory(prefix="stdq-bench-")
    path = Path(args.file) if args.file else Path(tmp.name) / "job99999.txt"
    if not path.is_file():
        started = time.perf_counter()
        write_result(path, args.rows)
        print(f"wrote {path} ({args.rows:,} rows, {path.stat().st_size / 1e6:.0f} MB) in"
              f" {time.perf_counter() - started:.1f} s", file=sys.stderr)

    product = DataProduct(
        id=1, service="atlas", data_product_type="atlas_photometry",
        target={"ra": 210.910674, "dec": 54.311650}, params={"stack": "none"},
        path=Path(tmp.name),
    )
    product.raw_files = [RawFile(name=path.name, path=path, sha256="", bytes=path.stat().st_size)]
    processor = AtlasProcessor({})

    def normalize():
        product.left_out = {}
        return photometry.normalize(processor.process(product), product_id=1)

    variants = {
        'read_csv(sep=r"\\s+")': lambda: pd.read_csv(path, sep=r"\s+"),
        'read_csv(sep=" ", skipinitialspace=True)': lambda: pd.read_csv(
            path, sep=" ", skipinitialspace=True
        ),
    }
    reference = variants['read_csv(sep=r"\\s+")']()
    rows = len(reference)
    correct = {}
    for name, fn in variants.items():
        frame = fn()
        correct[name] = frame.shape == reference.shape and all(
            frame.iloc[:, i].equals(reference.iloc[:, i]) for i in range(frame.shape[1])
        )
        del frame
    del reference
    # interleaved rounds, best of each: a busy machine slows both sides alike
    reads = {name: float("inf") for name, ok in correct.items() if ok}
    seconds = float("inf")
    table = None
    for _ in range(args.repeat):
        for name in reads:
            took, frame = best_of(1, variants[name])
            reads[name] = min(reads[name], took)
            del frame
        table = None
        took, table = best_of(1, normalize)
        seconds = min(seconds, took)
    for name, ok in correct.items():
        shown = f"{reads[name]:.3f} s" if ok else "reads the file wrongly: not counted"
        print(f"pandas {name}: {shown}")
    fastest_name = min(reads, key=reads.get)
    fastest = reads[fastest_name]
    assert len(table) == rows, (len(table), rows)
    ratio = seconds / fastest
    print(f"stdq normalize ({len(table):,} rows, {table.shape[1]} columns): {seconds:.3f} s")
    print(f"pandas fastest read ({fastest_name}): {fastest:.3f} s")
    print(f"ratio normalize / fastest pandas read: {ratio:.2f} (goal <= 3)")
    tmp.cleanup()
    return 0 if ratio <= 3 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
