"""Regenerate docs/demo-lightcurve.png (shown in README.md) from the demo's own data.

Usage (from the repository root, with the `plot` extra installed)::

    python docs/make_demo_plot.py            # rewrite docs/demo-lightcurve.png
    python docs/make_demo_plot.py --keep DIR  # also keep the demo's folder in DIR

It runs ``stdq demo`` (``stdq.demo.run_demo``: the emulators on 127.0.0.1, no
network) in a temporary folder and copies the PNG plot of SN 2023ixf's merged
light curve that the demo wrote — one table from its four services, difference
fluxes above and total magnitudes below — so the picture in the README is exactly
what ``stdq demo`` and ``stdq plot "SN 2023ixf" --flux-kind both`` draw today. The emulators make ATLAS
and ZFPS data up to the present, so the right edge of the plot moves with the
date it was made.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "demo-lightcurve.png"


def make(output: Path = OUTPUT, keep: Path | None = None) -> Path:
    """Run the demo and copy its SN 2023ixf plot to OUTPUT; returns OUTPUT."""
    from stdq.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="stdq-demo-plot-") as tmp:
        folder = keep or Path(tmp)
        result = run_demo(folder, say=lambda text: print(text, file=sys.stderr))
        png = result.dir / "plots" / "SN_2023ixf.png"
        if not png.is_file():
            raise SystemExit(f"the demo wrote no {png.name} (is matplotlib installed? pip install 'stdq[plot]')")
        shutil.copyfile(png, output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run the demo in this folder and leave it there")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help="where to write the PNG")
    args = parser.parse_args(argv)
    print(make(args.output, args.keep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
