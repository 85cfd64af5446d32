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
                                                      400 "Zero records returned" when none
GET      ``/ztf/ops/forcedphot/lc/<nn>/forcedphotome  the light-curve file / the log file of a
         try_req<N>_lc.txt`` and ``..._log.txt``      finished request
=======  ===========================================  =========================================

Every path needs the public shared HTTP Basic credential ``ztffps`` /
``dontgocrazy!`` (else 401, as Apache answers); submission and listing also need
the personal ``email``/``userpass`` (:data:`TEST_EMAIL`, :data:`TEST_USERPASS`).

Known from the documentation and third-party clients: the endpoints, the shared
Basic credential, HTML answers, the listing's columns (``reqId, ra, dec, startJD,
endJD, created, started, ended, machine, exitcode, lightcurve``; ``ended`` empty
until the request is done; ``lightcurve`` a path below the host ending in
``forcedphotometry_req<N>_lc.txt``), a 400 "Zero records returned" for an empty
listing (third-party client), and the result-file format (comment lines with the
requested position, a ``# index, field, ...`` column line, space-separated rows,
``null`` for nulls, ``-99999`` sentinels, ``procstatus`` codes).

guess (not documented anywhere we could read):

- the wording of the submission answer (success: "... submitted ..."; errors:
  "Error: ..."), and that wrong personal credentials give a 200 page with error
  wording rather than a 401;
- that a new request is listed at once (the single-request status page is said to
  update hourly);
- the time format of ``created``/``started``/``ended`` (UTC, ``%Y-%m-%d %H:%M:%S.fff``),
  the ``machine`` names, and the directory layout under ``/ztf/ops/forcedphot/lc``;
- the log file's name (``..._log.txt`` beside the light curve) and its text, which
  here names the requesting e-mail address;
- that a position without data gives a light-curve file with its header only;
- the pending-request limit and its error text (:attr:`ZfpsEmulator.queue_limit`).

Knobs for tests: ``delay`` (seconds from submission until a request is done;
``math.inf`` = never, until :meth:`ZfpsEmulator.finish_now`), ``fail_next`` (the
next request ends with that exit code and no light curve), ``queue_limit``;
``fp_requests`` holds the requests, ``submissions`` records every accepted
submission (its form without the credentials) and ``status_queries`` counts
listing requests. HTTP faults come from the FakeServer.

Synthetic light curves (deterministic; :func:`light_curve_rows`): SN 2023ixf has
three fcqfids -- 7350521 (field 735, ccd 5, q 2, ZTF_g), 7350522 (ZTF_r) and
17680912 (field 1768, ccd 9, q 1, ZTF_r). 7350521 and 7350522 have 14 clean
baseline epochs (MJD 59810 + 13 i, i = 0..13) whose fluxes are ``offset + NOISE[i]``
DN with offset +35 (g, unc 10 DN) and -20 (r, unc 2 DN) -- baseline medians 35.5
and -19.5 DN -- plus one baseline epoch in g with ``scisigpix`` 31 (flagged);
17680912 has only 6 baseline epochs. Then the supernova (peak near MJD 60093),
rows with ``-99999``/``null`` fluxes and ``procstatus`` 56, 57 and "56,57", one
row with ``infobitssci`` 33554432 and one with ``sciinpseeing`` 5.6 pixels.
Transient errors are ``sqrt(unc0**2 + flux/2)`` DN, so the peak (the
highest-SNR epoch) is the brightest g epoch, MJD 60093.2088 (start of exposure).
NGC 3642 and M31 have a flat light curve in one fcqfid; "Empty Field" and any
other position, header-only files.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass, field
from html import escape

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

SHARED_USER = "ztffps"
SHARED_PASSWORD = "dontgocrazy!"
TEST_EMAIL = "fps-tester@example.org"
TEST_USERPASS = "zfps-Secret-47"
ZTF_START_JD = 2458194.5
LC_DIR = "/ztf/ops/forcedphot/lc"
LISTING_COLUMNS = ("reqId", "ra", "dec", "startJD", "endJD", "created", "started", "ended",
                   "machine", "exitcode", "lightcurve")
# The documented column line of the result file (docs/wire-formats.md 3.2), to the byte.
RESULT_COLUMNS = (
    "index, field, ccdid, qid, filter, pid, infobitssci, sciinpseeing, scibckgnd, scisigpix, "
    "zpmaginpsci, zpmaginpsciunc, zpmaginpscirms, clrcoeff, clrcoeffunc, ncalmatches, exptime, "
    "adpctdif1, adpctdif2, diffmaglim, zpdiff, programid, jd, rfid, forcediffimflux, "
    "forcediffimfluxunc, forcediffimsnr, forcediffimchisq, forcediffimfluxap, forcediffimfluxunap, "
    "forcediffimsnrap, aperturecorr, dnearestrefsrc, nearestrefmag, nearestrefmagunc, "
    "nearestrefchi, nearestrefsharp, refjdstart, refjdend, procstatus"
)
# Baseline noise pattern (DN); sorted it is -6 -5 -4 -3 -2 -1 0 1 1 2 3 4 5 6: median 0.5.
NOISE = (3.0, -5.0, 1.0, 4.0, -2.0, 0.0, 6.0, -4.0, 2.0, -1.0, -3.0, 5.0, -6.0, 1.0)
BASELINE_MJDS = tuple(59810.0 + 13.0 * i for i in range(14))


@dataclass
class Epoch:
    """One row of a result file (values as they will be written)."""

    field: int
    ccdid: int
    qid: int
    filter: str
    mjd: float  # start of exposure
    flux: float | None  # forcediffimflux (DN); None -> "null"
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
    rows.append(Epoch(735, 5, 2, "ZTF_g", 59899.2214, 75.0, 10.0, 26.31, scisigpix=31.0))
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
    # unusable rows: sentinels and processing codes
    rows.append(Epoch(735, 5, 2, "ZTF_g", 60095.1954, -99999.0, -99999.0, 26.30, procstatus="56"))
    rows.append(Epoch(735, 5, 2, "ZTF_r", 60095.2377, None, None, 26.20))
    rows.append(Epoch(735, 5, 2, "ZTF_g", 60099.2010, 150000.0, 300.0, 26.31, procstatus="57"))
    rows.append(Epoch(735, 5, 2, "ZTF_r", 60099.2421, 120000.0, 240.0, 26.19, procstatus="56,57"))
    rows.sort(key=lambda e: e.mjd)
    return rows


def _flat_epochs(field_: int, ccdid: int, qid: int, flux: float) -> list[Epoch]:
    return [Epoch(field_, ccdid, qid, "ZTF_r", 59000.2 + 3.0 * i, flux + NOISE[i], 9.0, 26.2,
                  rfid=field_ * 1000000 + 120000 + ccdid * 100 + qid * 10 + 2)
            for i in range(5)]


def light_curve_rows(ra: float, dec: float) -> list[Epoch]:
    """The emulated epochs at a position (within 2 arcsec of a sky target), else none."""
    for name, make in (
        ("SN 2023ixf", _sn_epochs),
        ("NGC 3642", lambda: _flat_epochs(686, 4, 1, 850.0)),
        ("M31", lambda: _flat_epochs(695, 11, 4, 2400.0)),
    ):
        obj = sky.find(name)
        if obj is not None and sky.separation_deg(ra, dec, obj.ra, obj.dec) * 3600 < 2.0:
            return make()
    return []


def _fmt(value: float | None, digits: int) -> str:
    return "null" if value is None else f"{value:.{digits}f}"


def result_file(req: ZfpsRequest) -> bytes:
    """The light-curve file of a finished request."""
    lines = [
        "# ZTF forced psf-fit photometry output",
        f"# Requested input R.A. = {req.ra:.6f} degrees",
        f"# Requested input Dec. = {req.dec:.6f} degrees",
        f"# Requested JD start = {req.jdstart:.6f} days",
        f"# Requested JD end = {req.jdend:.6f} days",
        "# Authenticated program IDs = 1",
        "#",
        "# Column definitions: see the ZFPS user guide (Masci et al. 2023)",
        "#",
        f"# {RESULT_COLUMNS}",
        "#",
    ]
    index = 0
    for e in light_curve_rows(req.ra, req.dec):
        jd = e.mjd + 2400000.5
        if not (req.jdstart <= jd <= req.jdend):
            continue
        snr = None if e.flux is None or e.unc in (None, 0) or e.flux == -99999 else e.flux / e.unc
        pid = 2300000000000 + int(round((e.mjd - 59000) * 1000)) * 100 + e.ccdid * 4 + e.qid
        values = [
            str(index), str(e.field), str(e.ccdid), str(e.qid), e.filter, str(pid),
            str(e.infobitssci), f"{e.seeing:.4f}", "142.8812", f"{e.scisigpix:.4f}",
            f"{e.zpdiff + 0.0021:.5f}", "0.00001", "0.02834", "-0.04511", "0.00002", "812", "30",
            "-0.00121", "0.00087", f"{e.diffmaglim:.3f}", f"{e.zpdiff:.6f}", "1", f"{jd:.6f}",
            str(e.rfid), _fmt(e.flux, 4), _fmt(e.unc, 4), _fmt(snr, 4), "1.0213",
            _fmt(None if e.flux is None else e.flux * 0.98, 4), _fmt(e.unc, 4),
            _fmt(None if snr is None else snr * 0.97, 4), "1.0112", "0.312", "14.2017", "0.0150",
            "0.98", "0.012", "2458256.712311", "2458376.665012", e.procstatus,
        ]
        lines.append(" ".join(values))
        index += 1
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
    events: list[str] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return f"{LC_DIR}/{self.req_id % 100:02d}/forcedphotometry_req{self.req_id:08d}"


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


class ZfpsEmulator(Emulator):
    """The ZFPS batch submission, status listing and result/log files."""

    name = "zfps"
    service_name = "ztf-fps"
    prefix = "/ztfweb"

    def __init__(self, delay: float = 1.0, queue_limit: int = 15000):
        super().__init__()
        self.delay = delay
        self.queue_limit = queue_limit
        self.fail_next: int | None = None
        self.accounts = {TEST_EMAIL: TEST_USERPASS}
        self.fp_requests: list[ZfpsRequest] = []
        self.submissions: list[dict[str, str]] = []  # the form of every accepted submission
        self.status_queries = 0
        self._next_id = 15270

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
            for ra, dec in zip(ras, decs, strict=True):
                exitcode = 0
                if self.fail_next is not None:
                    exitcode, self.fail_next = self.fail_next, None
                self.fp_requests.append(ZfpsRequest(
                    req_id=self._next_id, email=form["email"], ra=ra, dec=dec, jdstart=jdstart,
                    jdend=jdend, created=now, ready_at=now + self.delay, exitcode=exitcode,
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
        if not self._account_ok(request.arg("email"), request.arg("userpass")):
            return self._page("Error: email address and/or user password not valid")
        option = request.arg("option", "All recent jobs")
        now = time.time()
        with self.lock:
            mine = [r for r in self.fp_requests if r.email == request.arg("email")]
        if option == "Pending jobs":
            mine = [r for r in mine if r.ready_at > now]
        if not mine:
            return Response.text("Zero records returned\n", 400, "text/html; charset=utf-8")
        cells = ["<tr>" + "".join(f"<th>{c}</th>" for c in LISTING_COLUMNS) + "</tr>"]
        for r in mine:
            started = r.created + min(0.2, (r.ready_at - r.created) / 2)
            done = r.ready_at <= now
            lc = f"{r.stem}_lc.txt" if done and r.exitcode == 0 else ""
            values = [
                str(r.req_id), f"{r.ra:.7f}", f"{r.dec:.7f}", f"{r.jdstart:.6f}", f"{r.jdend:.6f}",
                _stamp(r.created), _stamp(started) if started <= now else "",
                _stamp(r.ready_at) if done else "", "ztfops12" if started <= now else "",
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
        if found is None or found.ready_at > time.time() or found.exitcode != 0:
            return Response.text("<html><body><h1>Not Found</h1></body></html>", 404, "text/html")
        if path == f"{found.stem}_lc.txt":
            return Response.text(result_file(found), 200, "text/plain")
        if path == f"{found.stem}_log.txt":
            rows = sum(1 for line in result_file(found).splitlines() if not line.startswith(b"#"))
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
