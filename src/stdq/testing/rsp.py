"""Emulator of the Rubin Science Platform's TAP service (``data.lsst.cloud/api/tap``):
VOSI tables and asynchronous UWS 1.1 jobs, with the token every request needs.

Mounted at ``/rsp/api/tap``. Routes::

    GET    /tables                       VOSI tableset (schemas dp02_dc2_catalogs, dp1)
    POST   /async                        LANG, QUERY, FORMAT (csv|votable), RUNID, [PHASE=RUN]
                                         -> 303 to /async/<id> (phase PENDING)
    GET    /async                        the job list (uws:jobs, jobref with phase and runId)
    GET    /async/<id>                   the job (uws:job: phase, errorSummary, results)
    GET    /async/<id>/phase             the phase as text
    POST   /async/<id>/phase             PHASE=RUN | ABORT
    GET    /async/<id>/results/result    the result (CSV or VOTable)
    DELETE /async/<id>                   (or POST ACTION=DELETE) -> 303 to /async

Every request needs ``Authorization: Bearer <TEST_TOKEN>`` (401 otherwise). A job
runs ``queue_seconds`` QUEUED then ``run_seconds`` EXECUTING after RUN; ``hold``
keeps it EXECUTING; ``fail_with`` (a message) ends the next jobs in ERROR with that
message in the errorSummary. The query must be the ``ForcedSourceOnDiaObject`` /
``Visit`` join or the ``DiaSource`` select stdq writes, with a ``CONTAINS(POINT(...),
CIRCLE(...)) = 1`` constraint (without one the job ends in ERROR, as Qserv refuses
unconstrained queries); the selected columns are checked against the DP1 schema
(lsst/dp1_lsst_io). DiaSource rows are the sky's DIA detections (the transient's,
``pixelFlags_saturated`` and ``psfFlux_flag`` set on one each), at the object's position.

guess: the wording of the error messages; that DELETE answers 303 to the job list;
that the job list shows runId; the schema names of the listing.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from stdq.testing.fakeserver import Emulator, Request, Response
from stdq.testing.fink import cone, rubin_sky

TEST_TOKEN = "rsp-test-token-9f2c41d07be3"  # noqa: S105 - the emulator's own test token
UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
SCHEMAS = ("dp02_dc2_catalogs", "dp1")
FS_COLUMNS = {
    "diaObjectId", "coord_ra", "coord_dec", "visit", "detector", "band", "psfFlux", "psfFluxErr",
    "psfFlux_flag", "psfDiffFlux", "psfDiffFluxErr", "psfDiffFlux_flag", "invalidPsfFlag",
    "pixelFlags_bad", "pixelFlags_cr", "pixelFlags_crCenter", "pixelFlags_edge", "pixelFlags_interpolated",
    "pixelFlags_interpolatedCenter", "pixelFlags_nodata", "pixelFlags_saturated", "pixelFlags_saturatedCenter",
    "pixelFlags_suspect", "pixelFlags_suspectCenter", "diff_PixelFlags_nodataCenter", "forcedSourceOnDiaObjectId",
}
VISIT_COLUMNS = {"visit", "band", "expMidptMJD", "expTime", "obsStartMJD", "ra", "dec"}
DS_COLUMNS = {
    "diaSourceId", "diaObjectId", "ssObjectId", "visit", "detector", "band", "midpointMjdTai", "ra", "dec",
    "raErr", "decErr", "coord_ra", "coord_dec", "psfFlux", "psfFluxErr", "psfFlux_flag", "psfFlux_flag_edge",
    "psfFlux_flag_noGoodPixels", "scienceFlux", "scienceFluxErr", "apFlux", "apFluxErr", "snr", "reliability",
    "extendedness", "pixelFlags_bad", "pixelFlags_cr", "pixelFlags_crCenter", "pixelFlags_edge",
    "pixelFlags_interpolated", "pixelFlags_interpolatedCenter", "pixelFlags_nodata", "pixelFlags_nodataCenter",
    "pixelFlags_saturated", "pixelFlags_saturatedCenter", "pixelFlags_suspect", "pixelFlags_suspectCenter",
}
CIRCLE = re.compile(
    r"CONTAINS\s*\(\s*POINT\s*\(\s*'ICRS'\s*,\s*[\w.]+\s*,\s*[\w.]+\s*\)\s*,\s*CIRCLE\s*\(\s*'ICRS'\s*,"
    r"\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*\)\s*\)\s*=\s*1", re.IGNORECASE)


@dataclass
class Job:
    id: str
    query: str
    fmt: str
    runid: str
    created: float
    phase: str = "PENDING"
    started: float | None = None
    error: str | None = None
    deleted: bool = False
    result: bytes = b""
    events: list[str] = field(default_factory=list)


class RspTapEmulator(Emulator):
    """The RSP TAP service: tables, async UWS jobs (see the module docstring)."""

    name = "rsp"
    prefix = "/rsp/api/tap"
    service_name = "rubin-rsp"

    def __init__(self, now: float | None = None) -> None:
        super().__init__()
        self.objects = rubin_sky(now)
        self.jobs: dict[str, Job] = {}
        self.queue_seconds = 0.05
        self.run_seconds = 0.1
        self.hold = False
        self.fail_with: str | None = None
        self._ids = itertools.count(1)

    def service_settings_lines(self) -> list[str]:
        """Settings for [services.rubin-rsp]: short polls and the emulator's test token."""
        return ["poll_interval = 0.05", "max_poll_interval = 0.2", f'token = "{TEST_TOKEN}"']

    # -- answers -----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.header("authorization") != f"Bearer {TEST_TOKEN}":
            return Response.text("Unauthorized: a token with the read:tap scope is required", 401,
                                 headers={"WWW-Authenticate": 'Bearer realm="tap"'})
        path = request.path.rstrip("/")
        with self.lock:
            if path == "/tables" and request.method == "GET":
                return self._tables()
            if path == "/async":
                if request.method == "POST":
                    return self._create(request)
                return self._list()
            m = re.fullmatch(r"/async/([^/]+)(/phase|/results/result|/error)?", path)
            if m is None:
                return Response.text("Not Found", 404)
            job = self.jobs.get(m.group(1))
            if job is None or job.deleted:
                return Response.text(f"Job {m.group(1)} not found", 404)
            self._advance(job)
            sub = m.group(2) or ""
            if sub == "" and (request.method == "DELETE" or (
                    request.method == "POST" and _form(request).get("ACTION") == "DELETE")):
                job.deleted = True
                job.events.append("deleted")
                return Response(303, b"", {"Location": f"{self.base_url}/async"})
            if sub == "" and request.method == "GET":
                return Response.text(self._job_xml(job), 200, "text/xml")
            if sub == "/phase":
                if request.method == "GET":
                    return Response.text(job.phase, 200)
                phase = _form(request).get("PHASE", "").upper()
                if phase == "RUN" and job.phase == "PENDING":
                    self._run(job)
                elif phase == "ABORT" and job.phase in ("PENDING", "QUEUED", "EXECUTING"):
                    job.phase = "ABORTED"
                elif phase not in ("RUN", "ABORT"):
                    return Response.text(f"bad PHASE {phase!r}", 400)
                return Response(303, b"", {"Location": f"{self.base_url}/async/{job.id}"})
            if sub == "/results/result":
                if job.phase != "COMPLETED":
                    return Response.text(f"Job {job.id} has no result (phase {job.phase})", 404)
                ctype = "application/x-votable+xml" if job.fmt == "votable" else "text/csv"
                return Response.text(job.result, 200, ctype)
            if sub == "/error":
                return Response.text(job.error or "", 200)
        return Response.text("Method not allowed", 405)

    def _tables(self) -> Response:
        schemas = "".join(
            f"<schema><name>{name}</name><table><name>{name}.ForcedSourceOnDiaObject</name></table>"
            f"<table><name>{name}.DiaSource</name></table>"
            f"<table><name>{name}.Visit</name></table></schema>" for name in SCHEMAS)
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<vosi:tableset xmlns:vosi='
               f'"http://www.ivoa.net/xml/VOSITables/v1.0">{schemas}</vosi:tableset>\n')
        return Response.text(xml, 200, "text/xml")

    def _create(self, request: Request) -> Response:
        form = _form(request)
        if form.get("LANG", "").upper() != "ADQL" or not form.get("QUERY"):
            return Response.text("LANG=ADQL and QUERY are required", 400)
        fmt = form.get("FORMAT", "votable").lower()
        fmt = "csv" if fmt in ("csv", "text/csv") else "votable"
        job = Job(id=f"q{next(self._ids):04d}x{int(time.time() * 1000) % 100000:05d}", query=form["QUERY"],
                  fmt=fmt, runid=form.get("RUNID", ""), created=time.time())
        self.jobs[job.id] = job
        if form.get("PHASE", "").upper() == "RUN":
            self._run(job)
        return Response(303, b"", {"Location": f"{self.base_url}/async/{job.id}"})

    def _list(self) -> Response:
        refs = "".join(
            f'<uws:jobref id="{j.id}" xlink:href="{self.base_url}/async/{j.id}"><uws:phase>{j.phase}'
            f"</uws:phase><uws:runId>{j.runid}</uws:runId></uws:jobref>"
            for j in self.jobs.values() if not j.deleted)
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:jobs xmlns:uws="{UWS}" xmlns:xlink="{XLINK}">'
               f"{refs}</uws:jobs>\n")
        return Response.text(xml, 200, "text/xml")

    def _job_xml(self, job: Job) -> str:
        parts = [f"<uws:jobId>{job.id}</uws:jobId>", f"<uws:runId>{job.runid}</uws:runId>",
                 "<uws:ownerId>stdq-test</uws:ownerId>", f"<uws:phase>{job.phase}</uws:phase>"]
        if job.phase == "COMPLETED":
            parts.append(f'<uws:results><uws:result id="result" xlink:href="{self.base_url}/async/{job.id}'
                         '/results/result"/></uws:results>')
        if job.phase == "ERROR":
            parts.append(f'<uws:errorSummary type="fatal" hasDetail="true"><uws:message>{_esc(job.error or "")}'
                         "</uws:message></uws:errorSummary>")
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:job xmlns:uws="{UWS}" xmlns:xlink="{XLINK}">'
                + "".join(parts) + "</uws:job>\n")

    # -- the job's life ------------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        job.phase = "QUEUED"
        job.started = time.time()
        job.events.append("run")

    def _advance(self, job: Job) -> None:
        if job.phase not in ("QUEUED", "EXECUTING") or job.started is None:
            return
        age = time.time() - job.started
        if age < self.queue_seconds:
            return
        job.phase = "EXECUTING"
        if self.hold or age < self.queue_seconds + self.run_seconds:
            return
        if self.fail_with:
            job.phase, job.error = "ERROR", self.fail_with
            return
        try:
            job.result = self._execute(job)
            job.phase = "COMPLETED"
        except ValueError as exc:
            job.phase, job.error = "ERROR", str(exc)

    def _execute(self, job: Job) -> bytes:
        """The rows of the job's query (ValueError: the job's error message)."""
        query = " ".join(job.query.split())
        m = re.match(r"SELECT (.+?) FROM (\w+)\.ForcedSourceOnDiaObject AS fs JOIN (\w+)\.Visit AS vis"
                     r" ON vis\.visit = fs\.visit WHERE (.+)$", query, re.IGNORECASE)
        detections = re.match(r"SELECT (.+?) FROM (\w+)\.DiaSource AS ds WHERE (.+)$", query, re.IGNORECASE)
        if m is None and detections is None:
            raise ValueError("UsageFault: the emulator runs only the ForcedSourceOnDiaObject/Visit join"
                             " and the DiaSource select")
        if detections is not None:
            schema, where, known = detections.group(2), detections.group(3), {"ds": DS_COLUMNS}
            selected, table_name = detections.group(1), "DiaSource"
        else:
            assert m is not None
            schema, where, known = m.group(2), m.group(4), {"fs": FS_COLUMNS, "vis": VISIT_COLUMNS}
            selected, table_name = m.group(1), "ForcedSourceOnDiaObject"
            if m.group(3) != schema:
                raise ValueError(f"Table '{m.group(3)}.Visit' is not in the schema of the join")
        if schema not in SCHEMAS:
            raise ValueError(f"Table '{schema}.{table_name}' does not exist")
        circle = CIRCLE.search(where)
        if circle is None:
            raise ValueError("Query processing error: QI=?: Failed to instrument query: Query must"
                             " contain a spatial constraint (CONTAINS ... CIRCLE)")
        columns = []
        for item in selected.split(","):
            table, _, column = item.strip().partition(".")
            if column not in known.get(table, set()):
                raise ValueError(f"Column '{item.strip()}' does not exist")
            columns.append((table, column))
        ra, dec, radius = (float(v) for v in circle.groups())
        rows = []
        if detections is not None:
            for obj, _ in cone(self.objects, ra, dec, radius * 3600.0):
                for source_id, meas in obj.sources:
                    record: dict[str, Any] = {
                        "diaSourceId": source_id, "diaObjectId": obj.dia_object_id, "ra": obj.ra,
                        "dec": obj.dec, "visit": meas.visit, "detector": meas.detector, "band": meas.band,
                        "midpointMjdTai": meas.tai, "psfFlux": meas.diff, "psfFluxErr": meas.diff_err,
                        "scienceFlux": meas.total, "scienceFluxErr": meas.total_err,
                        **meas.flags,
                    }
                    rows.append([record.get(c, False if "_flag" in c or "Flags" in c else None)
                                 for _, c in columns])
            return self._encode(job, [c for _, c in columns], rows)
        for obj, _ in cone(self.objects, ra, dec, radius * 3600.0):
            for j, meas in enumerate(obj.forced):
                values = {
                    ("fs", "diaObjectId"): obj.dia_object_id, ("fs", "coord_ra"): obj.ra,
                    ("fs", "coord_dec"): obj.dec, ("fs", "visit"): meas.visit, ("fs", "detector"): meas.detector,
                    ("fs", "band"): meas.band, ("fs", "psfFlux"): meas.total, ("fs", "psfFluxErr"): meas.total_err,
                    ("fs", "psfDiffFlux"): meas.diff, ("fs", "psfDiffFluxErr"): meas.diff_err,
                    ("fs", "pixelFlags_saturated"): j == 5 and obj is self.objects[0],
                    ("fs", "psfDiffFlux_flag"): j == 7 and obj is self.objects[0],
                    ("vis", "visit"): meas.visit, ("vis", "band"): meas.band,
                    ("vis", "expMidptMJD"): meas.tai,
                }
                rows.append([values.get(c, False if c[1].endswith(("flag", "Flag")) or "Flags" in c[1] else None)
                             for c in columns])
        return self._encode(job, [c for _, c in columns], rows)

    @staticmethod
    def _encode(job: Job, names: list[str], rows: list[list[Any]]) -> bytes:
        """ROWS as the job's FORMAT: CSV (booleans lower case, nulls empty) or a VOTable."""
        if job.fmt == "csv":
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(names)
            for row in rows:
                writer.writerow(["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in row])
            return out.getvalue().encode()
        return _votable(names, rows)


def _form(request: Request) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _votable(names: list[str], rows: list[list[Any]]) -> bytes:
    """A TABLEDATA VOTable of ROWS (types from the first non-null values)."""
    def kind(i: int) -> str:
        for row in rows:
            v = row[i]
            if isinstance(v, bool):
                return 'datatype="boolean"'
            if isinstance(v, int):
                return 'datatype="long"'
            if isinstance(v, float):
                return 'datatype="double"'
            if isinstance(v, str):
                return 'datatype="char" arraysize="*"'
        return 'datatype="double"'

    fields = "".join(f'<FIELD name="{n}" {kind(i)}/>' for i, n in enumerate(names))
    body = "".join("<TR>" + "".join(
        f"<TD>{'' if v is None else str(v).lower() if isinstance(v, bool) else _esc(str(v))}</TD>" for v in row)
        + "</TR>" for row in rows)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.4" '
            'xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE type="results"><TABLE>'
            f"{fields}<DATA><TABLEDATA>{body}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>\n").encode()
