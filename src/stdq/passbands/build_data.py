"""Rebuild stdq's passband files (``stdq/passbands/data/*.dat``) from the wheels they come from.

A maintenance script, never imported by stdq::

    pip download --no-deps -d /tmp/pkgs pyphot==2.1.1 speclite==1.0.0 snpy==2.7.4
    python -m stdq.passbands.build_data /tmp/pkgs/pyphot-2.1.1-py3-none-any.whl \
        /tmp/pkgs/speclite-1.0.0-py3-none-any.whl /tmp/pkgs/snpy-2.7.4.tar.gz

It reads the curves straight out of the two wheels (zip files) and SNooPy's source
archive (a tar.gz: SNooPy publishes no wheel) and writes one file per band. The only changes to a curve (data/NOTICE.md says the same):

1. units: wavelength to Angstrom (pyphot's ZTF and speclite's LSST curves are in nm);
   pyphot's ZTF and SNooPy's ATLAS throughputs are in percent and are divided by 100;
2. order: sorted by wavelength (pyphot's ZTF i is descending); a wavelength listed
   twice (620 in pyphot's ZTF g, a rounding to 0.1 nm) gets the mean of its values;
3. the three negative values of pyphot's ZTF i (at most 3e-16 percent) are set to 0;
4. the ends below 1e-4 of the peak are stripped, one point beyond them kept;
5. linear interpolation onto a 10 Angstrom grid (PS1 and Gaia are already on one).

It prints each band's effective wavelength (sncosmo's definition, the
transmission-weighted mean wavelength) before and after, which data/NOTICE.md quotes.
"""

from __future__ import annotations

import io
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
STEP_AA = 10.0
STRIP_BELOW = 1e-4  # of the peak, at both ends only


@dataclass(frozen=True)
class Source:
    """One curve: stdq's (sncosmo's) band name, the wheel, the file in it, units."""

    name: str
    wheel: str          # "pyphot", "speclite" or "snpy"
    member: str
    wave_unit_aa: float  # Angstrom per unit of the file's wavelength
    trans_scale: float   # multiply the throughput by this (percent -> fraction)
    description: str


PYPHOT = "pyphot/libs/ascii_sources/"
SPECLITE = "speclite/data/filters/"
SNPY = "snpy-2.7.4/snpy/filters/filters/ATLAS/ATLAS/"
SOURCES = (
    *(Source(f"ps1::{f}", "pyphot", f"{PYPHOT}PS1_{f}.csv", 1.0, 1.0, f"Pan-STARRS1 {f}") for f in "grizyw"),
    *(Source(f"ztf{f}", "pyphot", f"{PYPHOT}ZTF_{f}.csv", 10.0, 0.01, f"ZTF {f} (filter only)") for f in "gri"),
    *(Source(f"lsst{f}", "speclite", f"{SPECLITE}lsst2023-{f}.ecsv", 10.0, 1.0, f"LSST {f} (total, airmass 1.2)")
      for f in "ugrizy"),
    *(Source(f"gaia::{n}", "speclite", f"{SPECLITE}gaiadr3-{b}.ecsv", 1.0, 1.0, f"Gaia DR3 {b}")
      for n, b in (("g", "G"), ("gbp", "BP"), ("grp", "RP"))),
    # SNooPy's filters.dat: filter1 "ATgr" (ATLAS g+r: cyan), filter2 "ATri" (r+i: orange)
    Source("atlasc", "snpy", f"{SNPY}filter1", 1.0, 0.01, "ATLAS c (cyan)"),
    Source("atlaso", "snpy", f"{SNPY}filter2", 1.0, 0.01, "ATLAS o (orange)"),
)


def read_curve(text: str, member: str) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength, throughput) as written in the file (pyphot CSV or speclite ECSV)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        try:
            rows.append((float(parts[0]), float(parts[1])))
        except ValueError:
            continue  # the column names line
    data = np.array(rows, dtype="float64")
    if data.ndim != 2 or len(data) < 10:
        raise SystemExit(f"{member}: no curve read")
    return data[:, 0], data[:, 1]


def read_member(archive: Path, member: str) -> str:
    """The text of MEMBER in ARCHIVE, a wheel (zip) or a source archive (tar.gz)."""
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            fh = tf.extractfile(member)
            if fh is None:
                raise SystemExit(f"{archive}: {member} is not a file")
            return fh.read().decode("utf-8")
    with zipfile.ZipFile(archive) as zf:
        return io.TextIOWrapper(zf.open(member), encoding="utf-8").read()


def wave_eff(wave: np.ndarray, trans: np.ndarray) -> float:
    """sncosmo's Bandpass.wave_eff: the transmission-weighted mean wavelength."""
    return float(np.trapezoid(wave * trans, wave) / np.trapezoid(trans, wave))


def clean(src: Source, wave: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Steps 1-3 of the module docstring: Angstrom, fraction, sorted, duplicates averaged,
    negatives set to 0. Also counts what was changed."""
    wave = wave * src.wave_unit_aa
    trans = trans * src.trans_scale
    order = np.argsort(wave, kind="stable")
    wave, trans = wave[order], trans[order]
    unique, inverse, counts = np.unique(wave, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=trans) / counts
    negative = int((means < 0).sum())
    return unique, np.clip(means, 0.0, None), {"duplicates": int((counts > 1).sum()), "negative": negative}


def resample(wave: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 4-5: strip the ends below STRIP_BELOW of the peak (one point kept beyond),
    then interpolate linearly onto the 10 Angstrom grid inside that range."""
    above = np.flatnonzero(trans >= STRIP_BELOW * trans.max())
    lo, hi = max(above[0] - 1, 0), min(above[-1] + 1, len(wave) - 1)
    start = np.ceil(wave[lo] / STEP_AA) * STEP_AA
    stop = np.floor(wave[hi] / STEP_AA) * STEP_AA
    grid = np.arange(start, stop + STEP_AA / 2, STEP_AA)
    return grid, np.interp(grid, wave, trans)


def header(src: Source, version: str, licence: str, changes: dict[str, int], before: float, after: float) -> str:
    lines = [
        f"stdq passband {src.name}: {src.description}",
        f"from {src.wheel} {version} ({licence}), file {src.member}; see NOTICE.md in this folder",
        "changes: Angstrom; transmission as a fraction; sorted; linear interpolation onto a 10 A grid;"
        f" ends below {STRIP_BELOW:g} of the peak stripped",
    ]
    if changes["duplicates"]:
        lines.append(f"  {changes['duplicates']} wavelengths listed twice: the mean of their values")
    if changes["negative"]:
        lines.append(f"  {changes['negative']} negative values set to 0")
    lines.append(f"effective wavelength {after:.1f} A (the file in {src.wheel}: {before:.1f} A)")
    lines.append("wavelength_aa transmission")
    return "".join(f"# {line}\n" for line in lines)


def build(wheels: dict[str, Path]) -> None:
    versions = {"pyphot": "2.1.1", "speclite": "1.0.0", "snpy": "2.7.4"}
    licences = {"pyphot": "MIT", "speclite": "BSD-3-Clause", "snpy": "MIT"}
    DATA.mkdir(exist_ok=True)
    for src in SOURCES:
        text = read_member(wheels[src.wheel], src.member)
        wave, trans, changes = clean(src, *read_curve(text, src.member))
        grid, values = resample(wave, trans)
        before, after = wave_eff(wave, trans), wave_eff(grid, values)
        body = "".join(f"{w:.0f} {t:.6g}\n" for w, t in zip(grid, values, strict=True))
        path = DATA / f"{src.name.replace('::', '_')}.dat"
        path.write_text(header(src, versions[src.wheel], licences[src.wheel], changes, before, after) + body,
                        encoding="utf-8")
        print(f"{src.name:10s} {len(grid):5d} points {grid[0]:7.0f}-{grid[-1]:7.0f} A  wave_eff"
              f" {before:8.1f} -> {after:8.1f} A ({(after - before) / before:+.2e})  {path.stat().st_size} bytes")


def main(argv: list[str]) -> int:
    wheels: dict[str, Path] = {}
    for arg in argv:
        name = Path(arg).name.split("-")[0]
        wheels[name] = Path(arg)
    if set(wheels) != {"pyphot", "speclite", "snpy"}:
        print(__doc__)
        return 2
    build(wheels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
