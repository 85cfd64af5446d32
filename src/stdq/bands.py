"""The one fixed table of band colours and survey markers used by every plot.

Colours come from two colour-blind-safe palettes, Okabe & Ito (2008) and Paul
Tol's "muted" scheme (https://personal.sron.nl/~pault/), chosen by band so that
the same filter letter has the same colour in every survey (ZTF r, PS1 r and
LSST r are all vermillion). Marker shapes tell surveys apart, so two bands of
close colour (ATLAS o and ZTF r) still differ in greyscale. A band missing from
the table gets the colour of the nearest effective wavelength (:func:`band_colour`).

Stdlib only: the CLI and ``stdq.plot`` read it before matplotlib is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Okabe-Ito and Tol muted colours
PURPLE = "#CC79A7"   # Okabe-Ito reddish purple
INDIGO = "#332288"   # Tol indigo
BLUE = "#0072B2"     # Okabe-Ito blue
SKY = "#56B4E9"      # Okabe-Ito sky blue
GREEN = "#009E73"    # Okabe-Ito bluish green
OLIVE = "#999933"    # Tol olive
ORANGE = "#E69F00"   # Okabe-Ito orange
VERMILLION = "#D55E00"  # Okabe-Ito vermillion
WINE = "#882255"     # Tol wine
BLACK = "#000000"
BROWN = "#661100"    # Tol dark (wine-brown)
FLAGGED = "#9A9A9A"  # flagged points: hollow and this grey (never a band colour)


@dataclass(frozen=True)
class Band:
    """One band: its sncosmo name, the label in a legend, its colour and effective wavelength (nm)."""

    name: str
    label: str
    colour: str
    wavelength_nm: float


# The fixed table: sncosmo band name -> Band. Effective wavelengths are the
# published ones, rounded (SVO filter service; ATLAS Tonry et al. 2018; Gaia
# Riello et al. 2021); they only place unknown bands between these.
BANDS: dict[str, Band] = {b.name: b for b in (
    Band("ztfg", "g", GREEN, 480.0),
    Band("ztfr", "r", VERMILLION, 640.0),
    Band("ztfi", "i", WINE, 790.0),
    Band("atlasc", "c", SKY, 530.0),
    Band("atlaso", "o", ORANGE, 680.0),
    Band("atlasw", "w", OLIVE, 600.0),
    Band("ps1::g", "g", GREEN, 481.0),
    Band("ps1::r", "r", VERMILLION, 617.0),
    Band("ps1::i", "i", WINE, 752.0),
    Band("ps1::z", "z", BLACK, 866.0),
    Band("ps1::y", "y", BROWN, 962.0),
    Band("lsstu", "u", PURPLE, 368.0),
    Band("lsstg", "g", GREEN, 478.0),
    Band("lsstr", "r", VERMILLION, 622.0),
    Band("lssti", "i", WINE, 754.0),
    Band("lsstz", "z", BLACK, 869.0),
    Band("lssty", "y", BROWN, 971.0),
    Band("gaia::g", "G", INDIGO, 622.0),
    Band("gaia::gbp", "BP", BLUE, 511.0),
    Band("gaia::grp", "RP", WINE, 777.0),
)}

# Other spellings of the Gaia bands (sncosmo's own names are gaia::g, gaia::gbp,
# gaia::grp, which stdq's processors write; another table may use these).
for _alias, _name in (("gaiag", "gaia::g"), ("gaiabp", "gaia::gbp"), ("gaiarp", "gaia::grp"),
                      ("gaia::bp", "gaia::gbp"), ("gaia::rp", "gaia::grp"), ("gaia_g", "gaia::g"),
                      ("gaia_bp", "gaia::gbp"), ("gaia_rp", "gaia::grp")):
    BANDS[_alias] = BANDS[_name]

# Colour anchors by effective wavelength, for bands not in the table.
_ANCHORS: tuple[tuple[float, str], ...] = (
    (360.0, PURPLE), (440.0, BLUE), (480.0, GREEN), (530.0, SKY), (560.0, OLIVE),
    (640.0, VERMILLION), (680.0, ORANGE), (790.0, WINE), (870.0, BLACK), (970.0, BROWN),
)

# Typical effective wavelengths of a filter letter (Johnson-Cousins, SDSS, 2MASS),
# for a band such as "sdssg", "bessellv" or "2massj" that is not in the table.
_LETTER_NM = {"u": 360.0, "b": 440.0, "g": 480.0, "v": 550.0, "r": 640.0, "i": 780.0,
              "z": 870.0, "y": 970.0, "j": 1240.0, "h": 1650.0, "k": 2160.0, "ks": 2160.0}

# Marker shape by survey (matplotlib codes); "v" is kept for upper limits.
MARKERS: dict[str, str] = {
    "ZTF": "o",      # circle
    "ATLAS": "s",    # square
    "PS1": "D",      # diamond
    "LSST": "p",     # pentagon
    "Rubin": "p",
    "Gaia": "h",     # hexagon
}
OTHER_MARKER = "P"   # filled plus, any other survey
LIMIT_MARKER = "v"   # open down-triangle: a non-detection / upper limit


def survey_marker(survey: str) -> str:
    """The marker shape of SURVEY (``P`` for a survey not in the table)."""
    return MARKERS.get(str(survey), OTHER_MARKER)


def wavelength_colour(nm: float) -> str:
    """The palette colour whose anchor wavelength is nearest NM."""
    return min(_ANCHORS, key=lambda anchor: abs(anchor[0] - nm))[1]


def band_wavelength(name: str) -> float | None:
    """Effective wavelength (nm) of band NAME: the table, a band sncosmo already has
    loaded in this process (never a download), or the usual value of its filter letter."""
    band = BANDS.get(str(name).lower())
    if band is not None:
        return band.wavelength_nm
    wave = _sncosmo_wavelength(str(name))
    if wave is not None:
        return wave
    match = re.search(r"(ks|[ubgvrizyjhk])$", str(name).lower())
    return _LETTER_NM[match.group(1)] if match else None


def band_colour(name: str) -> str:
    """The colour of band NAME: the fixed table, else by effective wavelength, else black."""
    band = BANDS.get(str(name).lower())
    if band is not None:
        return band.colour
    wave = band_wavelength(name)
    return wavelength_colour(wave) if wave is not None else BLACK


def band_label(name: str) -> str:
    """The short label of band NAME in a legend ("g", "o", "BP"; the name itself otherwise)."""
    band = BANDS.get(str(name).lower())
    return band.label if band is not None else str(name)


def _sncosmo_wavelength(name: str) -> float | None:
    """wave_eff (nm) of a band sncosmo has already built in this process; never loads one
    (loading may download its transmission curve)."""
    import sys

    sncosmo = sys.modules.get("sncosmo")
    if sncosmo is None:
        return None
    try:
        registry = sncosmo.bandpasses._BANDPASSES  # a Registry: built instances only
        for (key, _version), instance in getattr(registry, "_instances", {}).items():
            if key == name.lower():
                return float(instance.wave_eff) / 10.0
    except Exception:  # noqa: BLE001 - an internal layout we only peek at
        return None
    return None
