"""Emulator of the ZTF forced-photometry service (ZFPS), docs/wire-formats.md 3.2.

Mounted at ``/ztfweb`` (the service's ``url``; it appends the real paths):

=======  ===========================================  =========================================
method   path                                         answer
=======  ===========================================  =========================================
POST     ``/cgi-bin/batchfp.py/submit``               form ``ra``, ``dec`` (numbers or JSON
                                                      lists), ``jdstart``, ``jdend``, ``email``,
                                                      ``userpass`` -> 200 HTML, success or error
                                                      wording
GET      ``/cgi-bin/getBatchForcedPhotometryRequests  ``email``, ``userpass``, ``option=All
         .cgi``                                       recent jobs``, ``action=Query Database``
                                                      -> 200 HTML table of the user's requests;
                                                      "Zero records returned" when none is
                                                      listed (yet); "Error: database is busy;
                                                      try again a minute later." on demand
GET      ``/ztf/ops/forcedphot/lc/<m>/<k>/req<N>/     the light-curve file / the log file of a
         cksum<hex>/<stem>_lc.txt`` and ``_log.txt``  finished request
=======  ===========================================  =========================================

Every path needs the public shared HTTP Basic credential ``ztffps`` /
``dontgocrazy!`` (else 401, as Apache answers); submission and listing also need
the personal ``email``/``userpass`` (:data:`TEST_EMAIL`, :data:`TEST_USERPASS`).

From the real files (../shared/realdata/zfps, read by tests/test_zfps_realdata.py,
never copied here) -- served to the byte in their layout:

- the light-curve file of the batch service (``batchfp_req<10 digits>_lc.txt``, the
  default, :data:`BATCH`: ``forcedphotometry_trim_cforcepsfaper_threads.pl, v5.9``)
  and of a single request (``forcedphotometry_req<8 digits>_lc.txt``, ``file_format
  = "single"``: ``forcedphotometry_trim.pl, v3.8``): the header comment block as the
  real files have it (requested position and JD range as Perl prints numbers, the
  column definitions, the batch file's ``(1..4)`` and the single file's ``(0..3)``
  and ``Rerence``), ``# Order of columns below:``, the column line `` sindex,
  field, ...`` (batch) or `` index, field, ...`` (single) without ``#``, a ``#``
  line, rows that start with a space, and the last line ``# ---...END...---``;
- missing values: in batch files ``-99999.000000`` in the eight forced-photometry
  columns and ``null`` in the five nearest-reference ones; in single files ``null``
  in all thirteen; the nearest-reference columns are null when procstatus has 57;
- numbers: ``%g`` for image values, ``%.15g`` for single-file fluxes and the
  nearest-reference values (float32, as the real files show), ``%.11f`` fluxes and
  ``%.6f`` errors, SNRs, chi2 in batch files, ``30.`` exptime;
- procstatus a comma list (``56,57``, ``57,61``).

From third-party clients (SkyPortal's ZTF forced-photometry code): the listing is
an HTML table read by column name, columns ``reqId, ra, dec, startJD, endJD,
exitcode, lightcurve`` (:data:`LISTING_COLUMNS`; ``exitcode`` and ``lightcurve``
empty until the request ends; ``lightcurve`` a path below the host); "Zero
records returned" when nothing is listed yet; "Error: database is busy; try
again a minute later." asks to back off; the exit-code table (0 success; 56..62
warnings; 63 no records; 64 catastrophic; 65 end JD before survey start; 255
database error).

guess (not documented anywhere we could read):

- the wording of the submission answer (success: "... submitted ..."; errors:
  "Error: ..."), and that wrong personal credentials give a 200 page with error
  wording rather than a 401;
- the HTTP status of "Zero records returned" (400) and of the busy page
  (:attr:`ZfpsEmulator.busy_status`, 200);
- the directory layout under ``/ztf/ops/forcedphot/lc`` for batch requests (the
  single-request one, ``<m>/<k>/req<N>/cksum<hex>/``, is seen in a public log);
- the log file's name (``..._log.txt`` beside the light curve) and its text, which
  here names the requesting e-mail address;
- that a request with no epochs ends with exit code 63 and one whose end JD is
  before the survey start (2458194.5) with 65, both without a light curve; 64 and
  255 (:attr:`ZfpsEmulator.fail_next`) too;
- the pending-request limit and its error text (:attr:`ZfpsEmulator.queue_limit`).

Knobs for tests: ``delay`` (seconds from submission until a request is done;
``math.inf`` = never, until :meth:`ZfpsEmulator.finish_now`), ``fail_next`` (the
next request ends with that exit code: 56..62 with its light curve, 63 64 65 255
without), ``file_format`` ("batch" or "single"), ``listing_lag`` (a new request
appears in the listing only after that many more listing queries: "Zero records
returned" meanwhile), ``busy_next`` (the next that many listing queries answer
that the database is busy), ``queue_limit``; ``fp_requests`` holds the requests,
``submissions`` records every accepted submission (its form without the
credentials) and ``status_queries`` counts listing requests. HTTP faults come
from the FakeServer.

Synthetic light curves (deterministic; :func:`light_curve_rows`): SN 2023ixf has
three fcqfids -- 7350521 (field 735, ccd 5, q 2, ZTF_g), 7350522 (ZTF_r) and
17680912 (field 1768, ccd 9, q 1, ZTF_r). 7350521 and 7350522 have 14 clean
baseline epochs (MJD 59810 + 13 i, i = 0..13) whose fluxes are ``offset + NOISE[i]``
DN with offset +35 (g, unc 10 DN) and -20 (r, unc 2 DN) -- baseline medians 35.5
and -19.5 DN -- plus one baseline epoch in g with ``scisigpix`` 31.04 (flagged);
17680912 has only 6 baseline epochs. Then the supernova (peak near MJD 60093),
rows without a flux (procstatus 61 and ``57,61``, as in the real batch file), rows
with a flux and procstatus 57 and ``56,57``, one row with ``infobitssci`` 33554432
and one with ``sciinpseeing`` 5.6 pixels. Transient errors are ``sqrt(unc0**2 +
flux/2)`` DN, so the peak (the highest-SNR epoch) is the brightest g epoch, MJD
60093.2088 (start of exposure). NGC 3642 and M31 have a flat light curve in one
fcqfid; "Empty Field" and any other position, none (exit code 63).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from dataclasses import dataclass, field
from html import escape

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

SHARED_USER = "ztffps"
SHARED_PASSWORD = "dontgocrazy!"
TEST_EMAIL = "fps-tester@example.org"
TEST_USERPASS = "zfps-Secret-47"
ZTF_START_JD = 2458194.5  # 2018-03-17: the service's survey start (codes 62, 65)
LC_DIR = "/ztf/ops/forcedphot/lc"
BATCH, SINGLE = "batch", "single"
LISTING_COLUMNS = ("reqId", "ra", "dec", "startJD", "endJD", "exitcode", "lightcurve")
ZERO_RECORDS = "Zero records returned"
BUSY_TEXT = "Error: database is busy; try again a minute later."
EXIT_CODES = {
    0: "success", 56: "bad or NaN pixels", 57: 'no reference source within 5"',
    58: "reference PSF catalog missing", 59: "suspect uncertainties", 60: "PSF size not odd",
    61: "cutout off the image", 62: "start JD reset to survey start", 63: "no records",
    64: "catastrophic", 65: "end JD before survey start", 255: "database error",
}
NO_FILE_CODES = frozenset({63, 64, 65, 255})  # a request ending so has no light curve (guess)
SENTINEL = "-99999.000000"

# -- the light-curve file's layout, as the real files have it ------------------------------------
RULE = "# " + "-" * 66
END_LINE = "# " + "-" * 30 + "END" + "-" * 33
COLUMNS = (
    "field", "ccdid", "qid", "filter", "pid", "infobitssci", "sciinpseeing", "scibckgnd", "scisigpix",
    "zpmaginpsci", "zpmaginpsciunc", "zpmaginpscirms", "clrcoeff", "clrcoeffunc", "ncalmatches",
    "exptime", "adpctdif1", "adpctdif2", "diffmaglim", "zpdiff", "programid", "jd", "rfid",
    "forcediffimflux", "forcediffimfluxunc", "forcediffimsnr", "forcediffimchisq",
    "forcediffimfluxap", "forcediffimfluxuncap", "forcediffimsnrap", "aperturecorr",
    "dnearestrefsrc", "nearestrefmag", "nearestrefmagunc", "nearestrefchi", "nearestrefsharp",
    "refjdstart", "refjdend", "procstatus",
)
_DEFINITIONS = {
    "field": "ZTF Field identifier",
    "ccdid": "CCD identifier (1..16)",
    "qid": "Quadrant (CCD-amplifier) identifier ({qids})",
    "filter": "Filter string: ZTF_g, ZTF_r, ZTF_i",
    "pid": "processed image Operations DB identifier",
    "infobitssci": "processing summary/QA bits for sci image",
    "sciinpseeing": "Effective FWHM of sci image [pixels]",
    "scibckgnd": "Background level in sci image [DN]",
    "scisigpix": "Robust sigma per pixel in sci image [DN]",
    "zpmaginpsci": "Photometric zeropoint for sci image [mag]",
    "zpmaginpsciunc": "1-sigma uncertainty in zpmaginpsci [mag]",
    "zpmaginpscirms": "RMS (deviation from average) in difference between instrumental mags and PS1"
                      " calibrators [mag]",
    "clrcoeff": "Linear color coefficient from calibration; for ZTF_g,r,i, PS1 color used is g-r, g-r,"
                " r-i respectively",
    "clrcoeffunc": "1-sigma uncertainty in clrcoeff",
    "ncalmatches": "Number of PS1 calibrators used in initial calibration of sci image",
    "exptime": "Integration time for sci image [sec]",
    "adpctdif1": "Full sci image astrometric RMS along R.A. with respect to Gaia1 [arcsec]",
    "adpctdif2": "Full sci image astrometric RMS along Dec. with respect to Gaia1 [arcsec]",
    "diffmaglim": "Magnitude limit in difference image [mag]",
    "zpdiff": "Photometric zeropoint for difference image [mag]",
    "programid": "Program identifier [0=engineering; 1=public; 2=private; 3=Caltech time]",
    "jd": "Julian Date at start of exposure [days]",
    "rfid": "{reference} image Operations DB identifier",
    "forcediffimflux": "Forced difference image PSF-fit flux [DN]",
    "forcediffimfluxunc": "1-sigma uncertainty in forcediffimflux [DN]",
    "forcediffimsnr": "Signal-to-noise ratio for forcediffimflux measurement",
    "forcediffimchisq": "Reduced chi-square in PSF-fit",
    "forcediffimfluxap": "Forced difference image aperture flux using a fixed 9-pixel diameter"
                         " aperture [DN]",
    "forcediffimfluxuncap": "1-sigma uncertainty in forcediffimfluxap [DN]",
    "forcediffimsnrap": "Signal-to-noise ratio for forcediffimfluxap measurement",
    "aperturecorr": "Aperture (curve-of-growth) correction factor that was applied to"
                    " forcediffimfluxap measurement",
    "dnearestrefsrc": "Distance to nearest ref image source if found within 5 arcsec [arcsec]",
    "nearestrefmag": "Magnitude of nearest ref image source [mag]",
    "nearestrefmagunc": "1-sigma uncertainty in nearestrefmag [mag]",
    "nearestrefchi": "Chi parameter for nearestrefmag measurement (ratio: RMS in PSF-fit residuals /"
                     " expected RMS from priors)",
    "nearestrefsharp": "Sharp parameter for nearestrefmag measurement (~0 => PSF like; >>0 => extended;"
                       " <<0 => pixel spike or hard edge)",
    "refjdstart": "JD of earliest sci image used for ref image [days]",
    "refjdend": "JD of latest sci image used for ref image [days]",
    "procstatus": "Per-epoch processing status codes (0 => no warnings); {procstatus}",
}
# what differs between the two kinds of file (the real files show these, word for word)
_FORMATS: dict[str, dict[str, str | None]] = {
    BATCH: {
        "generator": "forcedphotometry_trim_cforcepsfaper_threads.pl, v5.9",
        "counter": "sindex", "qids": "1..4", "reference": "Reference",
        "procstatus": "if non-zero, which is abnormal, see documentation.",
        "documentation": None,
        "stem": "batchfp_req{:010d}",
    },
    SINGLE: {
        "generator": "forcedphotometry_trim.pl, v3.8",
        "counter": "index", "qids": "0..3", "reference": "Rerence",
        "procstatus": "if non-zero, see accompanying log file and document link below",
        "documentation": "https://irsa.ipac.caltech.edu/data/ZTF/docs/forcedphot.pdf",
        "stem": "forcedphotometry_req{:08d}",
    },
}
FORCED = ("forcediffimflux", "forcediffimfluxunc", "forcediffimsnr", "forcediffimchisq",
          "forcediffimfluxap", "forcediffimfluxuncap", "forcediffimsnrap", "aperturecorr")
NEAREST = ("dnearestrefsrc", "nearestrefmag", "nearestrefmagunc", "nearestrefchi", "nearestrefsharp")

# Baseline noise pattern (DN); sorted it is -6 -5 -4 -3 -2 -1 0 1 1 2 3 4 5 6: median 0.5.
NOISE = (3.0, -5.0, 1.0, 4.0, -2.0, 0.0, 6.0, -4.0, 2.0, -1.0, -3.0, 5.0, -6.0, 1.0)
BASELINE_MJDS = tuple(59810.0 + 13.0 * i for i in range(14))


def column_line(file_format: str = BATCH) -> str:
    """The column line of a light-curve file (no ``#``; a leading space)."""
    return " " + ", ".join((str(_FORMATS[file_format]["counter"]), *COLUMNS))


def _perl(value: float) -> str:
    """A number as Perl prints it (``%.15g``)."""
    return f"{value:.15g}"


def header_lines(file_format: str, ra: float, dec: float, jdstart: float, jdend: float,
                 generated: float) -> list[str]:
    """The comment block of a light-curve file, up to its ``#`` line after the column line."""
    fmt = _FORMATS[file_format]
    when = time.gmtime(generated)
    lines = [
        RULE,
        f"# Generated by {fmt['generator']} on {time.strftime('%Y-%m-%d', when)} at"
        f" {time.strftime('%H:%M:%S', when)}",
        "#",
        f"# Requested input R.A. = {_perl(ra)} degrees",
        f"# Requested input Dec. = {_perl(dec)} degrees",
        f"# Requested JD start = {_perl(jdstart)} days",
        f"# Requested JD end = {_perl(jdend)} days",
        "# Authenticated program IDs = 1",
        "#",
        "# Column definitions:",
        f"# {fmt['counter']} = sequential counter",
    ]
    for name in COLUMNS:
        lines.append(f"# {name} = " + _DEFINITIONS[name].format(**fmt))
    if fmt["documentation"]:
        lines += ["#", f"# Documentation: {fmt['documentation']}", "#"]
    lines += [RULE, "# Order of columns below:", column_line(file_format), "#"]
    return lines


@dataclass
class Epoch:
    """One row of a result file (values as they will be written)."""

    field: int
    ccdid: int
    qid: int
    filter: str
    mjd: float  # start of exposure
    flux: float | None  # forcediffimflux (DN); None -> no measurement (-99999 / null)
    unc: float | None
    zpdiff: float
    procstatus: str = "0"
    infobitssci: int = 0
    scisigpix: float = 6.2
    seeing: float = 2.1
    diffmaglim: float = 20.6
    rfid: int = 735120221


def _unc(floor: float, flux: float) -> float:
    """A flux error growing with the source's photon noise: sqrt(floor**2 + flux/2) DN."""
    return round(math.sqrt(floor**2 + max(flux, 0.0) / 2.0), 4)


def _sn_epochs() -> list[Epoch]:
    rows: list[Epoch] = []
    # fcqfid 7350521 (g): baseline offset +35 DN, unc 10 DN
    for i, mjd in enumerate(BASELINE_MJDS):
        rows.append(Epoch(735, 5, 2, "ZTF_g", mjd + 0.1812, 35.0 + NOISE[i], 10.0,
                          26.30 + 0.01 * (i % 3), diffmaglim=20.7 - 0.02 * (i % 4)))
    rows.append(Epoch(735, 5, 2, "ZTF_g", 59899.2214, 75.0, 10.0, 26.31, scisigpix=31.04))
    # fcqfid 7350522 (r): baseline offset -20 DN, unc 2 DN (errors too small: chi2 > 1)
    for i, mjd in enumerate(BASELINE_MJDS):
        rows.append(Epoch(735, 5, 2, "ZTF_r", mjd + 0.2233, -20.0 + NOISE[i], 2.0,
                          26.20 - 0.01 * (i % 2), diffmaglim=20.5 - 0.02 * (i % 3)))
    # fcqfid 17680912 (r, secondary field): only 6 baseline epochs
    for i in range(6):
        rows.append(Epoch(1768, 9, 1, "ZTF_r", 59850.0 + 25.0 * i + 0.3011, 12.0 + NOISE[i], 8.0,
                          26.15, rfid=1768120912))
    # the supernova (magnitudes -> DN through each row's zpdiff, plus the baseline offset)
    g_curve = ((60082.3104, None), (60084.2015, 16.50), (60086.2102, 14.20), (60088.1897, 13.30),
               (60090.2411, 12.95), (60093.2088, 12.80), (60097.1900, 12.85), (60102.2013, 13.00),
               (60109.1755, 13.20), (60119.2210, 13.50), (60129.1893, 13.80))
    for i, (mjd, mag) in enumerate(g_curve):
        zp = 26.30 + 0.01 * (i % 3)
        flux = 35.0 + (2.0 if mag is None else 10 ** (0.4 * (zp - mag)))
        unc = 10.0 if mag is None else _unc(10.0, flux)
        rows.append(Epoch(735, 5, 2, "ZTF_g", mjd, round(flux, 4), unc, zp,
                          infobitssci=33554432 if i == 7 else 0))
    r_curve = ((60084.2391, 16.10), (60086.2488, 14.00), (60088.2271, 13.15), (60090.2801, 12.85),
               (60093.2466, 12.70), (60097.2312, 12.72), (60102.2400, 12.85), (60109.2133, 13.00),
               (60119.2607, 13.25), (60129.2288, 13.55))
    for i, (mjd, mag) in enumerate(r_curve):
        zp = 26.20 - 0.01 * (i % 2)
        flux = -20.0 + 10 ** (0.4 * (zp - mag))
        rows.append(Epoch(735, 5, 2, "ZTF_r", mjd, round(flux, 4), _unc(2.0, flux), zp,
                          seeing=5.6 if i == 5 else 2.1))
    for mjd, mag in ((60087.3001, 13.55), (60091.2998, 12.90), (60095.3107, 12.75),
                     (60099.2889, 12.80), (60105.3012, 12.95)):
        flux = 10 ** (0.4 * (26.15 - mag))
        rows.append(Epoch(1768, 9, 1, "ZTF_r", mjd, round(12.0 + flux, 4), _unc(8.0, flux), 26.15,
                          rfid=1768120912))
    # no measurement (as in the real batch file: 61, "57,61"), and warnings with a flux
    rows.append(Epoch(735, 5, 2, "ZTF_g", 60095.1954, None, None, 26.30, procstatus="61"))
    rows.append(Epoch(735, 5, 2, "ZTF_r", 60095.2377, None, None, 26.20, procstatus="57,61"))
    rows.append(Epoch(735, 5, 2, "ZTF_g", 60099.2010, 150000.0, 300.0, 26.31, procstatus="57"))
    rows.append(Epoch(735, 5, 2, "ZTF_r", 60099.2421, 120000.0, 240.0, 26.19, procstatus="56,57"))
    rows.sort(key=lambda e: e.mjd)
    return rows


def _flat_epochs(field_: int, ccdid: int, qid: int, flux: float) -> list[Epoch]:
    return [Epoch(field_, ccdid, qid, "ZTF_r", 59000.2 + 3.0 * i, flux + NOISE[i], 9.0, 26.2,
                  rfid=field_ * 1000000 + 120000 + ccdid * 100 + qid * 10 + 2)
            for i in range(5)]


def _recent_epochs(field_: int, ccdid: int, qid: int, flux: float, zp: float, rfid: int,
                   nights: range) -> list[Epoch]:
    """One i epoch a night (Palomar: 0.33 d after the MJD of the night's date), each from its
    night alone (the same values whatever nights follow); a band of their own (fcqfid ...3), so
    the hand-checked g and r baselines stay as they were."""
    return [Epoch(field_, ccdid, qid, "ZTF_i", night + 0.3307, flux + NOISE[night % len(NOISE)], 9.0,
                  zp, rfid=rfid) for night in nights]


def light_curve_rows(ra: float, dec: float, recent: tuple[int, int] | None = None) -> list[Epoch]:
    """The emulated epochs at a position (within 2 arcsec of a sky target), else none.

    RECENT (first night, last night): one more epoch on each of those nights (after the
    hand-checked history), as the emulator adds for data up to the present.
    """
    for name, make, late in (
        ("SN 2023ixf", _sn_epochs, (735, 5, 2, -20.0 + 60.0, 26.20, 735120221)),
        ("NGC 3642", lambda: _flat_epochs(686, 4, 1, 850.0), (686, 4, 1, 850.0, 26.2, 686120412)),
        ("M31", lambda: _flat_epochs(695, 11, 4, 2400.0), (695, 11, 4, 2400.0, 26.2, 695121142)),
    ):
        obj = sky.find(name)
        if obj is not None and sky.separation_deg(ra, dec, obj.ra, obj.dec) * 3600 < 2.0:
            rows = make()
            if recent is not None:
                rows += _recent_epochs(*late, range(max(recent[0], 60200), recent[1] + 1))
            return rows
    return []


def _f32(value: float) -> str:
    """A float32 value printed as the real files print the nearest-reference columns."""
    return f"{struct.unpack('f', struct.pack('f', value))[0]:.15g}"


def epoch_values(e: Epoch, index: int, file_format: str) -> list[str]:
    """The 40 values of one row, as text."""
    batch = file_format == BATCH
    jd = e.mjd + 2400000.5
    pid = 2300000000000 + int(round((e.mjd - 59000) * 1000)) * 100 + e.ccdid * 4 + e.qid
    if e.flux is None or e.unc is None:
        forced = [SENTINEL if batch else "null"] * len(FORCED)
    else:
        snr = e.flux / e.unc
        flux_text = (lambda v: f"{v:.11f}") if batch else _perl
        small = (lambda v: f"{v:.6f}") if batch else _perl
        forced = [flux_text(e.flux), small(e.unc), small(snr), small(1.0213),
                  flux_text(e.flux * 0.98), small(e.unc * 1.41), small(snr * 0.97 / 1.41),
                  small(1.0112)]
    if "57" in e.procstatus.split(","):
        nearest = ["null"] * len(NEAREST)  # no reference source within 5 arcsec
    else:
        nearest = [_f32(v) for v in (0.312, 14.2017, 0.0150, 0.98, 0.012)]
    return [
        str(index), str(e.field), str(e.ccdid), str(e.qid), e.filter, str(pid), str(e.infobitssci),
        f"{e.seeing:g}", "142.881", f"{e.scisigpix:g}", f"{e.zpdiff + 0.0021:g}", "1.01981e-05",
        "0.0283398", "-0.0451077", "2.0828e-05", "812", "30.", "0.051472", "0.050411",
        f"{e.diffmaglim:g}", f"{e.zpdiff:g}", "1", _perl(jd), str(e.rfid), *forced, *nearest,
        "2458256.712311", "2458376.665012", e.procstatus,
    ]


def result_file(req: ZfpsRequest) -> bytes:
    """The light-curve file of a finished request (in the request's ``file_format``)."""
    lines = header_lines(req.file_format, req.ra, req.dec, req.jdstart, req.jdend, req.ready_at)
    index = 0
    for e in light_curve_rows(req.ra, req.dec, req.recent):
        jd = e.mjd + 2400000.5
        if not (req.jdstart <= jd <= req.jdend):
            continue
        lines.append(" " + " ".join(epoch_values(e, index, req.file_format)))
        index += 1
    lines.append(END_LINE)
    return ("\n".join(lines) + "\n").encode()


@dataclass
class ZfpsRequest:
    """One submitted request as the service keeps it."""

    req_id: int
    email: str
    ra: float
    dec: float
    jdstart: float
    jdend: float
    created: float
    ready_at: float
    exitcode: int = 0
    file_format: str = BATCH
    listed_at: int = 0  # the listing query from which it is listed
    events: list[str] = field(default_factory=list)
    recent: tuple[int, int] | None = None  # the nights of recent data when it was submitted

    @property
    def name(self) -> str:
        """The file name stem: ``batchfp_req0000015270`` or ``forcedphotometry_req00015270``."""
        return str(_FORMATS[self.file_format]["stem"]).format(self.req_id)

    @property
    def stem(self) -> str:
        """The files' path without ``_lc.txt`` / ``_log.txt``."""
        cksum = hashlib.md5(f"{self.name}:{self.email}".encode()).hexdigest()
        return (f"{LC_DIR}/{self.req_id // 1000000}/{self.req_id // 1000 % 1000}/req{self.req_id}/"
                f"cksum{cksum}/{self.name}")

    @property
    def has_file(self) -> bool:
        return self.exitcode not in NO_FILE_CODES


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


class ZfpsEmulator(sky.RecentNights, Emulator):
    """The ZFPS batch submission, status listing and result/log files."""

    name = "zfps"
    service_name = "ztf-fps"
    prefix = "/ztfweb"

    def __init__(self, delay: float = 1.0, queue_limit: int = 15000, *,
                 anchor_mjd: int | None = None, recent_nights: int | None = None):
        super().__init__()
        self.delay = delay
        self.queue_limit = queue_limit
        self.fail_next: int | None = None
        self.file_format = BATCH
        self.listing_lag = 0
        self.busy_next = 0
        self.busy_status = 200
        self.accounts = {TEST_EMAIL: TEST_USERPASS}
        self.fp_requests: list[ZfpsRequest] = []
        self.submissions: list[dict[str, str]] = []  # the form of every accepted submission
        self.status_queries = 0
        self._next_id = 15270
        self.init_recent(recent_nights, anchor_mjd)  # data up to the present (sky.RecentNights)

    # what `stdq demo` adds to [services.ztf-fps] (the same as service_settings_lines)
    demo_settings = {"poll_interval": 0.2, "max_poll_interval": 1.0, "email": TEST_EMAIL,
                     "userpass": TEST_USERPASS}

    def service_settings_lines(self) -> list[str]:
        """Settings for [services.ztf-fps]: short polls and the emulator's test account."""
        return [
            "poll_interval = 0.2",
            "max_poll_interval = 1.0",
            f'email = "{TEST_EMAIL}"',
            f'userpass = "{TEST_USERPASS}"',
        ]

    # -- knobs ---------------------------------------------------------------------------
    def finish_now(self) -> None:
        """Every pending request is done from now on."""
        with self.lock:
            now = time.time()
            for req in self.fp_requests:
                req.ready_at = min(req.ready_at, now)

    # -- dispatch ------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if not self._shared_auth_ok(request):
            return Response.text(
                "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n"
                "<title>401 Unauthorized</title>\n</head><body>\n<h1>Unauthorized</h1>\n"
                "<p>This server could not verify that you are authorized to access the document"
                " requested.</p>\n</body></html>\n",
                401, "text/html; charset=iso-8859-1",
                headers={"WWW-Authenticate": 'Basic realm="ZTF Forced Photometry Service"'},
            )
        path = request.path
        if path == "/cgi-bin/batchfp.py/submit" and request.method == "POST":
            return self._submit(request)
        if path == "/cgi-bin/getBatchForcedPhotometryRequests.cgi" and request.method == "GET":
            return self._listing(request)
        if path.startswith(LC_DIR + "/") and request.method == "GET":
            return self._file(path)
        return Response.text("<html><body><h1>Not Found</h1></body></html>", 404, "text/html")

    @staticmethod
    def _shared_auth_ok(request: Request) -> bool:
        header = request.header("authorization") or ""
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == (SHARED_USER, SHARED_PASSWORD)

    @staticmethod
    def _page(text: str, status: int = 200) -> Response:
        body = (
            "<html><head><title>ZTF Forced Photometry Service</title></head><body>\n"
            f"<p>{escape(text)}</p>\n</body></html>\n"
        )
        return Response.text(body, status, "text/html; charset=utf-8")

    def _account_ok(self, email: str | None, userpass: str | None) -> bool:
        return bool(email) and self.accounts.get(email or "") == userpass

    # -- submission ----------------------------------------------------------------------
    def _submit(self, request: Request) -> Response:
        form = {k: v[-1] for k, v in request.form().items()}
        if not self._account_ok(form.get("email"), form.get("userpass")):
            # guess: a 200 page with error wording
            return self._page("Error: email address and/or user password not valid;"
                              " register at ztfweb.ipac.caltech.edu")
        try:
            ras = _number_list(form.get("ra"))
            decs = _number_list(form.get("dec"))
            jdstart = float(form["jdstart"]) if form.get("jdstart") else ZTF_START_JD
            jdend = float(form["jdend"]) if form.get("jdend") else 2440587.5 + time.time() / 86400
        except (TypeError, ValueError):
            return self._page("Error: ra, dec, jdstart and jdend must be numbers")
        if not ras or len(ras) != len(decs):
            return self._page("Error: ra and dec must hold the same number of positions")
        if any(not (0 <= r < 360) for r in ras) or any(not (-90 <= d <= 90) for d in decs):
            return self._page("Error: position out of range")
        if jdstart >= jdend:
            return self._page("Error: jdstart must be before jdend")
        with self.lock:
            pending = [r for r in self.fp_requests if r.email == form["email"] and r.ready_at > time.time()]
            if len(pending) + len(ras) > self.queue_limit:
                return self._page(
                    f"Error: number of pending requests would exceed the limit of {self.queue_limit};"
                    " try again later"
                )
            now = time.time()
            recent = self.recent()
            for ra, dec in zip(ras, decs, strict=True):
                if self.fail_next is not None:
                    exitcode, self.fail_next = self.fail_next, None
                elif jdend < ZTF_START_JD:
                    exitcode = 65
                elif not any(jdstart <= e.mjd + 2400000.5 <= jdend
                             for e in light_curve_rows(ra, dec, recent)):
                    exitcode = 63
                else:
                    exitcode = 0
                self.fp_requests.append(ZfpsRequest(
                    req_id=self._next_id, email=form["email"], ra=ra, dec=dec, jdstart=jdstart,
                    jdend=jdend, created=now, ready_at=now + self.delay, exitcode=exitcode,
                    file_format=self.file_format, listed_at=self.status_queries + self.listing_lag,
                    recent=recent,
                ))
                self._next_id += 1
            self.submissions.append({k: v for k, v in form.items() if k not in ("email", "userpass")})
        return self._page(
            f"Submitted {len(ras)} position(s) to the ZTF forced-photometry queue. You will be"
            " notified by e-mail; the status of your requests is on the status page."
        )

    # -- status listing ------------------------------------------------------------------
    def _listing(self, request: Request) -> Response:
        with self.lock:
            self.status_queries += 1
            query = self.status_queries
            busy = self.busy_next > 0
            if busy:
                self.busy_next -= 1
        if not self._account_ok(request.arg("email"), request.arg("userpass")):
            return self._page("Error: email address and/or user password not valid")
        if busy:
            return self._page(BUSY_TEXT, self.busy_status)
        option = request.arg("option", "All recent jobs")
        now = time.time()
        with self.lock:
            mine = [r for r in self.fp_requests
                    if r.email == request.arg("email") and r.listed_at < query]
        if option == "Pending jobs":
            mine = [r for r in mine if r.ready_at > now]
        if not mine:
            return Response.text(ZERO_RECORDS + "\n", 400, "text/html; charset=utf-8")
        cells = ["<tr>" + "".join(f"<th>{c}</th>" for c in LISTING_COLUMNS) + "</tr>"]
        for r in mine:
            done = r.ready_at <= now
            lc = f"{r.stem}_lc.txt" if done and r.has_file else ""
            values = [
                str(r.req_id), f"{r.ra:.7f}", f"{r.dec:.7f}", f"{r.jdstart:.6f}", f"{r.jdend:.6f}",
                str(r.exitcode) if done else "", lc,
            ]
            cells.append("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in values) + "</tr>")
        body = (
            "<html><head><title>ZTF Forced Photometry: recent batch requests</title></head><body>\n"
            f"<h3>{escape(option or '')}</h3>\n<table border=\"1\">\n" + "\n".join(cells) + "\n</table>\n"
            "</body></html>\n"
        )
        return Response.text(body, 200, "text/html; charset=utf-8")

    # -- files ---------------------------------------------------------------------------
    def _file(self, path: str) -> Response:
        with self.lock:
            found = next((r for r in self.fp_requests if path.startswith(r.stem)), None)
        if found is None or found.ready_at > time.time() or not found.has_file:
            return Response.text("<html><body><h1>Not Found</h1></body></html>", 404, "text/html")
        if path == f"{found.stem}_lc.txt":
            return Response.text(result_file(found), 200, "text/plain")
        if path == f"{found.stem}_log.txt":
            rows = sum(1 for line in result_file(found).splitlines() if not line.startswith(b"#")) - 1
            log = (
                f"forcedphot request {found.req_id:08d} submitted by {found.email}\n"
                f"input: ra={found.ra:.7f} dec={found.dec:.7f} jdstart={found.jdstart:.6f}"
                f" jdend={found.jdend:.6f}\n"
                f"started: {_stamp(found.created)}\n"
                f"epochs with forced photometry: {rows}\n"
                f"ended: {_stamp(found.ready_at)}; exit code {found.exitcode}\n"
            )
            return Response.text(log, 200, "text/plain")
        return Response.text("<html><body><h1>Not Found</h1></body></html>", 404, "text/html")


def _number_list(text: str | None) -> list[float]:
    """A number or a JSON list of numbers (the batch form accepts both)."""
    if text is None or not text.strip():
        raise ValueError("missing")
    value = json.loads(text)
    values = value if isinstance(value, list) else [value]
    out = [float(v) for v in values]
    if any(not math.isfinite(v) for v in out):
        raise ValueError("not finite")
    return out
