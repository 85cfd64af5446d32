"""Survey passbands shipped with stdq, registered with sncosmo offline.

sncosmo knows the survey bands stdq writes (``ztfg``, ``ps1::g``, ``lsstr``,
``gaia::g`` ...) but downloads their transmission curves on first use. stdq ships
the curves of the bands in :data:`PASSBANDS` as package data (``data/*.dat``, from
pyphot 2.1.1, speclite 1.0.0 and SNooPy 2.7.4; sources, licences and the only changes
made to them in ``data/NOTICE.md``), and :func:`register_sncosmo` registers them
under sncosmo's own names with no network access, for names sncosmo has not
already loaded, leaving the rest of its registry alone.

ATLAS ``atlasw`` is not shipped (:data:`NOT_SHIPPED`): no curve with a licence that
allows it was found offline, and sncosmo has no such band.

numpy is imported only by :func:`load`; sncosmo only by :func:`register_sncosmo`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Passband:
    """One shipped curve: sncosmo's band name, its data file, where it comes from."""

    name: str
    file: str
    source: str


_PYPHOT = "pyphot 2.1.1 (MIT)"
_SPECLITE = "speclite 1.0.0 (BSD-3-Clause)"
_SNPY = "SNooPy 2.7.4 (MIT)"

#: The shipped curves by sncosmo band name (the names stdq's ``band`` column holds).
PASSBANDS: dict[str, Passband] = {p.name: p for p in (
    *(Passband(f"ps1::{f}", f"ps1_{f}.dat", f"{_PYPHOT}: PS1_{f}.csv, Pan-STARRS1 (Tonry et al. 2012)")
      for f in "grizyw"),
    *(Passband(f"ztf{f}", f"ztf{f}.dat", f"{_PYPHOT}: ZTF_{f}.csv, the ZTF {f} filter transmission only")
      for f in "gri"),
    *(Passband(f"lsst{f}", f"lsst{f}.dat", f"{_SPECLITE}: lsst2023-{f}.ecsv, lsst/throughputs 1.9 total_{f}")
      for f in "ugrizy"),
    *(Passband(f"gaia::{n}", f"gaia_{n}.dat", f"{_SPECLITE}: gaiadr3-{b}.ecsv, Gaia (E)DR3 passband (ESA)")
      for n, b in (("g", "G"), ("gbp", "BP"), ("grp", "RP"))),
    *(Passband(f"atlas{f}", f"atlas{f}.dat", f"{_SNPY}: filters/ATLAS/ATLAS/{file}, ATLAS {f} (Tonry et al. 2018)")
      for f, file in (("c", "filter1"), ("o", "filter2"))),
)}

#: Bands stdq writes but ships no curve for, and why.
NOT_SHIPPED: dict[str, str] = {
    "atlasw": "no ATLAS transmission curve with a licence that allows shipping it was found"
    " offline; sncosmo has no atlasw band",
}


def names() -> list[str]:
    """The band names stdq ships a curve for, in table order."""
    return list(PASSBANDS)


def load(name: str) -> tuple[Any, Any]:
    """(wavelength in Angstrom, transmission as a fraction) of the shipped band NAME, as
    numpy arrays; KeyError for a band stdq does not ship."""
    import numpy as np

    band = PASSBANDS[name]
    text = resources.files(__name__).joinpath("data", band.file).read_text(encoding="utf-8")
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    data = np.array(rows, dtype="float64")
    return data[:, 0], data[:, 1]


def _loaded(registry: Any, name: str) -> bool:
    """Whether sncosmo's registry already holds a built band NAME (registered by the user,
    or read by sncosmo in this process): a loader alone (a download to come) does not count."""
    instances = getattr(registry, "_instances", {})
    return any(key[0] == name for key in instances)


def register_sncosmo(bands: Iterable[str] | None = None) -> list[str]:
    """Register the shipped curves BANDS (default: all of :data:`PASSBANDS`) with sncosmo
    under those names, offline; returns the names registered.

    A name sncosmo has already loaded in this process (a band the user registered, or
    one sncosmo read from its cache) is left as it is. For a name that sncosmo only knows
    by its loader (which would download the curve) stdq's curve is registered in its
    place, for this process only; no other entry of sncosmo's registry is touched.
    KeyError for a band stdq does not ship (``atlasw``: see :data:`NOT_SHIPPED`).
    """
    import sncosmo

    wanted = list(PASSBANDS) if bands is None else [str(b).lower() for b in bands]
    for name in wanted:
        if name not in PASSBANDS:
            reason = NOT_SHIPPED.get(name, "not one of the bands stdq ships")
            raise KeyError(f"{name}: {reason}")
    registry = sncosmo.bandpasses._BANDPASSES
    done = []
    for name in wanted:
        if _loaded(registry, name):
            continue
        wave, trans = load(name)
        sncosmo.register(sncosmo.Bandpass(wave, trans, name=name), name, force=True)
        done.append(name)
    return done
