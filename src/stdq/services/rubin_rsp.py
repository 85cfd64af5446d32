"""Rubin forced photometry and DIA detections from the Rubin Science Platform's TAP
service (data-rights holders).

One asynchronous TAP job (IVOA UWS 1.1) per table asked, as pyvo runs one
(``--kind forced``: ForcedSourceOnDiaObject, the default; ``detections``: DiaSource;
``both``: the forced job, then the detections job, one after the other, into one
product):

1. ``POST {url}/async`` with ``LANG=ADQL``, ``QUERY``, ``FORMAT`` (csv or votable) and
   ``RUNID=stdq-<job>-<key>``: the server answers 303 to the new job's URL. The POST is
   sent once (:func:`stdq.remote.create_once`); after a lost answer the job is looked
   for by its RUNID in the job list (``GET {url}/async``) before anything is sent again.
   The job URL is saved in the checkpoint (``job_url`` for the forced job,
   ``detections_job_url`` for the detections job): a killed worker resumes the same job.
2. ``POST {job}/phase`` with ``PHASE=RUN``; then ``GET {job}`` until the phase is
   final: PENDING (run again), QUEUED, EXECUTING (wait, ``poll_interval`` growing to
   ``max_poll_interval``), COMPLETED (fetch ``results/result``), ERROR (exit 1 with the
   job's ``errorSummary`` message), ABORTED (exit 1).
3. The result (the ``result`` href of the job, on the service's own origin only) is kept
   byte for byte (``rsp-result.csv``/``.xml`` forced, ``rsp-detections.csv``/``.xml``
   detections); then ``DELETE {job}``. A cancelled job deletes its remote jobs too.

The queries, each with the spatial constraint Qserv requires (``CONTAINS(POINT('ICRS',
ra, dec), CIRCLE('ICRS', ra, dec, r)) = 1``): ``ForcedSourceOnDiaObject`` joined with
``Visit`` (for ``expMidptMJD``, TAI) of the release; ``DiaSource`` (its own
``midpointMjdTai``, TAI).
The release: the ``release`` setting or ``--release``; by default the newest data
release the service lists in its VOSI tables (``GET {url}/tables``: schemas named
``dp<N>`` or ``dr<N>``, a ``dr`` newer than any ``dp``) -- guess: that the release
schemas are listed there under those names (DP1 is ``dp1``).

The token (``STDQ_RUBIN_RSP_TOKEN``, scope ``read:tap``) is sent as pyvo and the RSP
documentation send it, ``Authorization: Bearer <token>``, and only to the service's own
origin (stdq.http.make_host_auth).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, ClassVar

from stdq.errors import BadInput, ConfigError, NoData, QueryFailed, TemporaryFailure
from stdq.services.base import (
    ALL_OBJECTS_FIELD,
    TIME_FIELDS,
    Field,
    QueryForm,
    SingleTargetDataService,
    radius_field,
)
from stdq.services.rubin import FLUX_KIND_FIELD, KIND_FIELD

if TYPE_CHECKING:
    import httpx

    from stdq.http import Client
    from stdq.services.base import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

MAX_RADIUS_ARCSEC = 60.0
SUBMIT_SLOT = "rsp_submit"
RUNNING_PHASES = ("QUEUED", "EXECUTING", "HELD", "SUSPENDED", "UNKNOWN")
POLL_GROWTH = 1.5
CREATE_GRACE = 30.0
COLUMNS = (
    "fs.diaObjectId", "fs.coord_ra", "fs.coord_dec", "fs.visit", "fs.detector", "fs.band",
    "fs.psfFlux", "fs.psfFluxErr", "fs.psfFlux_flag", "fs.psfDiffFlux", "fs.psfDiffFluxErr",
    "fs.psfDiffFlux_flag", "fs.invalidPsfFlag", "fs.pixelFlags_bad", "fs.pixelFlags_cr",
    "fs.pixelFlags_edge", "fs.pixelFlags_interpolated", "fs.pixelFlags_nodata",
    "fs.pixelFlags_saturated", "fs.pixelFlags_suspect", "vis.expMidptMJD",
)
DETECTION_COLUMNS = (
    "ds.diaSourceId", "ds.diaObjectId", "ds.ra", "ds.dec", "ds.visit", "ds.detector", "ds.band",
    "ds.midpointMjdTai", "ds.psfFlux", "ds.psfFluxErr", "ds.psfFlux_flag", "ds.psfFlux_flag_edge",
    "ds.psfFlux_flag_noGoodPixels", "ds.scienceFlux", "ds.scienceFluxErr", "ds.pixelFlags_bad",
    "ds.pixelFlags_cr", "ds.pixelFlags_edge", "ds.pixelFlags_interpolated", "ds.pixelFlags_nodata",
    "ds.pixelFlags_saturated", "ds.pixelFlags_suspect",
)
RELEASE_NAME = re.compile(r"^(dp|dr)(\d+)$")
#: the TAP jobs of each --kind, in the order they run
PARTS = {"forced": ("forced",), "detections": ("detections",), "both": ("forced", "detections")}
#: the raw file of each part's result (without the extension)
RAW_NAMES = {"forced": "rsp-result", "detections": "rsp-detections"}
#: what each part asks, in messages
PART_TABLES = {"forced": "ForcedSourceOnDiaObject", "detections": "DiaSource"}


def key(part: str, name: str) -> str:
    """The checkpoint key of NAME for PART: the forced job's keys are unprefixed (as
    before --kind existed, so a job checkpointed then still resumes)."""
    return name if part == "forced" else f"{part}_{name}"


def slot(part: str) -> str:
    """The create-once slot of PART's submission."""
    return SUBMIT_SLOT if part == "forced" else f"{SUBMIT_SLOT}_{part}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def release_rank(name: str) -> tuple[int, int]:
    """Newer releases rank higher: every dr<N> above every dp<N>, then by N."""
    m = RELEASE_NAME.match(name)
    if not m:
        return (-1, -1)
    return (1 if m.group(1) == "dr" else 0, int(m.group(2)))


def listed_releases(xml: bytes) -> list[str]:
    """The release schemas of a VOSI tables document, oldest first."""
    import xml.etree.ElementTree as ET  # here: `stdq query rubin-rsp --help` needs no XML

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise TemporaryFailure(f"rubin-rsp: the table listing is not XML ({exc}); try again later") from None
    names = set()
    for node in root.iter():
        if _local(node.tag) == "schema":
            for child in node:
                if _local(child.tag) == "name" and child.text and RELEASE_NAME.match(child.text.strip()):
                    names.add(child.text.strip())
    return sorted(names, key=release_rank)


def adql(release: str, ra: float, dec: float, radius_arcsec: float, part: str = "forced") -> str:
    """The query of PART: forced photometry on DIA objects in the cone with the visits'
    mid-times, or the DIA sources (detections) in the cone."""
    if part == "detections":
        return (
            f"SELECT {', '.join(DETECTION_COLUMNS)} "
            f"FROM {release}.DiaSource AS ds "
            f"WHERE CONTAINS(POINT('ICRS', ds.ra, ds.dec), "
            f"CIRCLE('ICRS', {ra!r}, {dec!r}, {radius_arcsec / 3600.0!r})) = 1"
        )
    return (
        f"SELECT {', '.join(COLUMNS)} "
        f"FROM {release}.ForcedSourceOnDiaObject AS fs "
        f"JOIN {release}.Visit AS vis ON vis.visit = fs.visit "
        f"WHERE CONTAINS(POINT('ICRS', fs.coord_ra, fs.coord_dec), "
        f"CIRCLE('ICRS', {ra!r}, {dec!r}, {radius_arcsec / 3600.0!r})) = 1"
    )


def parse_job(xml: bytes) -> dict[str, Any]:
    """A UWS job document -> {jobId, runId, phase, error, results: {id: href}}."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise TemporaryFailure(f"rubin-rsp: the UWS job is not XML ({exc}); try again later") from None
    job: dict[str, Any] = {"results": {}, "error": None}
    for node in root.iter():
        name = _local(node.tag)
        if name in ("jobId", "runId", "phase") and node.text:
            job[name] = node.text.strip()
        elif name == "errorSummary":
            message = next((c.text for c in node if _local(c.tag) == "message" and c.text), None)
            job["error"] = (message or "").strip() or "no message"
        elif name == "result":
            href = next((v for k, v in node.attrib.items() if _local(k) == "href"), None)
            if href:
                job["results"][node.attrib.get("id", "result")] = href
    if "phase" not in job:
        raise TemporaryFailure("rubin-rsp: the UWS job document has no phase; try again later")
    return job


class RubinRspForm(QueryForm):
    """Options of ``stdq query rubin-rsp``."""

    max_radius_arcsec = MAX_RADIUS_ARCSEC
    fields = (
        radius_field(1.0, MAX_RADIUS_ARCSEC),
        Field("release", "str", help="data release schema, e.g. dp1 (default: the release setting,"
              " else the newest the service lists)", metavar="NAME"),
        KIND_FIELD,
        FLUX_KIND_FIELD,
        *TIME_FIELDS,
        ALL_OBJECTS_FIELD,
    )

    def clean(self) -> dict[str, Any]:
        out = super().clean()
        release = out.get("release")
        if release is not None and not RELEASE_NAME.match(release):
            raise BadInput(f"--release {release!r} is not a release name (dp1, dr1, ...)")
        return out


class RubinRspService(SingleTargetDataService):
    """Rubin DIA forced photometry and detections from the Science Platform's TAP service
    (one async UWS job per table)."""

    name = "rubin-rsp"
    title = "Rubin Science Platform TAP (token): forced photometry, detections"
    info_url = "https://dp1.lsst.io"
    data_product_type = "rubin_photometry"
    supports_async = True
    form = RubinRspForm
    default_url = "https://data.lsst.cloud/api/tap"
    settings_defaults: ClassVar[dict[str, Any]] = {
        "release": "",
        "result_format": "csv",
        "poll_interval": 2.0,
        "max_poll_interval": 30.0,
        "job_timeout": 7200.0,
    }
    settings_help: ClassVar[dict[str, str]] = {
        "url": "the TAP service of the Rubin Science Platform",
        "release": "the data release schema (dp1, ...); empty: the newest the service lists",
        "result_format": "csv or votable: the FORMAT asked of the TAP job",
        "poll_interval": "first wait between polls of the UWS job, seconds",
        "max_poll_interval": "the wait grows up to this, seconds",
        "job_timeout": "give up (and delete the remote job) when it has not finished after this many seconds",
    }
    secret_fields = ("token",)
    secret_env: ClassVar[dict[str, tuple[str, ...]]] = {}
    version = "1"

    # -- HTTP ------------------------------------------------------------------------------
    def http_auth(self) -> Any:
        token = self.config.secret("token")
        if not token:
            return None
        from stdq.http import make_host_auth

        return make_host_auth(self.url, headers={"Authorization": f"Bearer {token}"})

    def make_client(self, context: QueryContext, *, cancellable: bool = True) -> Client:
        from stdq import http

        return http.make_client(
            self.name, self.settings.http, auth=self.http_auth(), secrets=self.config.secret_values(),
            sleep=context.sleep if cancellable else time.sleep, on_retry=context.report_retry,
        )

    def _check(self, response: httpx.Response, step: str, expected: str) -> None:
        from stdq import http

        secrets = self.config.secret_values()
        if response.status_code in (401, 403):
            raise ConfigError(
                f"rubin-rsp: the service refused the token (HTTP {response.status_code}) at {step};"
                " check STDQ_RUBIN_RSP_TOKEN (a token with the read:tap scope)"
            )
        http.check_response(response, self.name, secrets)
        http.expect_format(response, self.name, step, expected, secrets=secrets)

    def _own(self, url: str, what: str) -> str:
        from stdq import http

        if not http.same_origin(url, self.url):
            shown = http.redact_url(url, self.config.secret_values())
            raise QueryFailed(
                f"rubin-rsp: {what} is on another origin ({shown}); stdq sends the token and"
                f" fetches only from the service's own origin ({self.url}); nothing was fetched"
            )
        return url

    def _format(self) -> str:
        """The result_format setting: csv or votable (ConfigError, exit 3, otherwise)."""
        value = str(self.config.values.get("result_format") or "csv").strip().lower()
        if value not in ("csv", "votable"):
            raise ConfigError(f"{self.settings.path}: [services.rubin-rsp] result_format must be"
                              f" csv or votable, not {value!r}")
        return value

    def _require_token(self) -> None:
        if not self.config.secret("token"):
            raise ConfigError(
                "rubin-rsp: no token configured; set STDQ_RUBIN_RSP_TOKEN (an RSP access token"
                " with the read:tap scope), or token in [services.rubin-rsp] of the settings file"
            )

    def probe(self, client: Client) -> str:
        """stdq doctor: the VOSI table listing (XML) and its release schemas."""
        from stdq.services.base import probe_status

        response = client.get(f"{self.url}/tables")
        probe_status(response, self.name, client.secrets)
        self._check(response, "the table listing", "XML")
        return f"HTTP {response.status_code}, releases {', '.join(listed_releases(response.content)) or 'none'}"

    # -- the query ---------------------------------------------------------------------------
    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        self._require_token()
        self._format()
        cp = context.checkpoint
        parts = PARTS[str(params.get("kind") or "forced")]
        for part in parts:  # one job after the other; a resumed job skips the parts done
            if cp.get(key(part, "downloaded")):
                product = context.new_product(target, {**params, "release": cp.get("release")})
                if any(r.name.startswith(RAW_NAMES[part] + ".") for r in product.raw_files):
                    if not cp.get(key(part, "deleted")):
                        self._delete(context, part)
                    continue
            if not cp.get(key(part, "job_url")):
                release = cp.get("release") or self._release(params, context)
                self._submit(target, params, str(release), context, part)
            job = self._run_and_wait(context, part)
            self._finish(job, target, {**params, "release": cp.get("release")}, context, part)
        params = {**params, "release": cp.get("release")}
        product = context.new_product(target, params)
        # from the checkpoint: what an earlier attempt of a resumed job did is there too
        # (None: a result downloaded by a version that did not count it: not taken as empty)
        counts = {p: None if cp.get(key(p, "rows")) is None else int(cp[key(p, "rows")]) for p in parts}
        product.notes.update({
            "release": params["release"], "radius_arcsec": float(params["radius"]), "kind": params["kind"],
            "tap_jobs": {p: cp.get(key(p, "job_url")) for p in parts}, "result_rows": counts,
            "remote_jobs_deleted": {p: bool(cp.get(key(p, "deleted"))) for p in parts},
        })
        if all(n == 0 for n in counts.values()):
            position = f"RA {target.ra:.6f}, Dec {target.dec:+.6f}"
            asked = " or ".join({"forced": "DIA forced photometry", "detections": "DIA detection"}[p]
                                for p in parts)
            raise NoData(f"no {asked} within {float(params['radius']):g} arcsec of {position}"
                         f" in {params.get('release')}")
        return [product]

    def _release(self, params: dict[str, Any], context: QueryContext) -> str:
        """The release to query: --release, the setting, or the newest listed; checked."""
        asked = params.get("release") or str(self.config.values.get("release") or "").strip()
        context.progress("rubin-rsp: reading the table listing")
        response = context.client.get(f"{self.url}/tables")
        self._check(response, "the table listing", "XML")
        known = listed_releases(response.content)
        if asked:
            if known and asked not in known:
                raise BadInput(f"rubin-rsp: release {asked!r} is not listed by the service"
                               f" (it lists: {', '.join(known)})")
            release = asked
        elif known:
            release = known[-1]
        else:
            raise QueryFailed("rubin-rsp: the service lists no data release (dp<N>/dr<N> schema);"
                              " set the release setting")
        context.save_checkpoint(release=release)
        return release

    def _submit(self, target: Target, params: dict[str, Any], release: str, context: QueryContext,
                part: str) -> None:
        from stdq import http, remote

        client = context.client
        fmt = self._format()
        query = adql(release, float(target.ra), float(target.dec), float(params["radius"]), part)
        table = PART_TABLES[part]

        def send(idem: str) -> str:
            context.check_cancelled()
            context.progress(f"rubin-rsp: submitting the TAP job ({table})")
            response = client.request("POST", f"{self.url}/async", policy=http.CREATE_ONCE, data={
                "LANG": "ADQL", "QUERY": query, "FORMAT": fmt, "RUNID": f"stdq-{context.job_id or 0}-{idem}",
            })
            if response.status_code >= 400:
                self._check(response, "the job submission", "XML")
            try:
                self._check(response, "the job submission", "a UWS job (XML)")
                job = parse_job(response.content)
            except TemporaryFailure as exc:
                raise http.AmbiguousSend(exc.message) from None
            url = str(response.request.url)
            if not re.search(r"/async/[^/]+$", url):
                url = f"{self.url}/async/{job.get('jobId', '')}"
            return self._own(url, "the new job")

        url, found = remote.create_once(
            context, slot=slot(part), send=send, find=lambda idem: self._find(client, idem, context),
            service=self.name, what=f"the TAP job ({table})", grace=CREATE_GRACE,
            look_every=max(0.05, float(self.config.values["poll_interval"])),
        )
        context.save_checkpoint(**{key(part, "job_url"): url, key(part, "submitted_at"): context.clock()})
        context.event("task", f"rubin-rsp: TAP job ({table}) {'found' if found else 'submitted'}: {url}")

    def _find(self, client: Client, idem: str, context: QueryContext) -> str | None:
        """The URL of this job's UWS job (by its RUNID) in the job list, or None."""
        response = client.get(f"{self.url}/async")
        if response.status_code != 200:
            self._check(response, "the job list", "XML")
            raise TemporaryFailure(f"rubin-rsp: HTTP {response.status_code} reading the job list")
        self._check(response, "the job list", "XML")
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(response.content)
        except ET.ParseError:
            raise TemporaryFailure("rubin-rsp: the job list is not XML; try again later") from None
        runid = f"stdq-{context.job_id or 0}-{idem}"
        for ref in root.iter():
            if _local(ref.tag) != "jobref":
                continue
            run = next((c.text for c in ref if _local(c.tag) == "runId"), None)
            if (run or "").strip() == runid:
                href = next((v for k, v in ref.attrib.items() if _local(k) == "href"), None)
                return self._own(href or f"{self.url}/async/{ref.attrib.get('id')}", "the job")
        return None

    def _run_and_wait(self, context: QueryContext, part: str) -> dict[str, Any]:
        """Start PART's job (PHASE=RUN) while it is PENDING, then poll until it is final."""
        client = context.client
        cp = context.checkpoint
        url = cp[key(part, "job_url")]
        values = self.config.values
        first = max(0.01, float(values["poll_interval"]))
        longest = max(first, float(values["max_poll_interval"]))
        timeout = float(values["job_timeout"])
        started = float(cp.get(key(part, "submitted_at")) or context.clock())
        interval = first
        while True:
            context.check_cancelled()
            response = client.get(url)
            if response.status_code == 404:
                context.save_checkpoint(**{key(part, "job_url"): None, key(part, "lost_job"): url,
                                           slot(part): None})
                raise QueryFailed(f"rubin-rsp: the TAP job {url} no longer exists on the server;"
                                  f" `stdq jobs retry {context.job_id}` submits the query again")
            self._check(response, "the job poll", "a UWS job (XML)")
            job = parse_job(response.content)
            phase = job["phase"].upper()
            if phase == "PENDING":
                context.progress("rubin-rsp: starting the TAP job")
                from stdq.http import RequestPolicy

                # PHASE=RUN of a job already running changes nothing: safe to send again
                run = client.request("POST", f"{url}/phase", policy=RequestPolicy(repeatable=True),
                                     data={"PHASE": "RUN"})
                self._check(run, "the job start", "a UWS job (XML)")
                continue
            if phase in ("COMPLETED", "ERROR", "ABORTED", "ARCHIVED"):
                return job
            if context.clock() - started > timeout:
                self._delete(context, part)
                raise QueryFailed(f"rubin-rsp: the TAP job did not finish within {timeout:g} s"
                                  " (job_timeout); it was deleted")
            context.progress(f"rubin-rsp: TAP job {job.get('jobId', '')} ({PART_TABLES[part]}) {phase}",
                             wait_until=context.clock() + interval)
            context.sleep(interval)
            interval = min(longest, interval * POLL_GROWTH)

    def _finish(self, job: dict[str, Any], target: Target, params: dict[str, Any],
                context: QueryContext, part: str) -> None:
        """PART's final job: its result kept in the product (rows counted), the job deleted;
        ERROR / ABORTED: deleted, QueryFailed."""
        from stdq import http

        phase = job["phase"].upper()
        url = context.checkpoint[key(part, "job_url")]
        if phase == "ERROR":
            self._delete(context, part)
            raise QueryFailed(f"rubin-rsp: the TAP job ({PART_TABLES[part]}) failed:"
                              f" {http.redact(str(job['error']), self.config.secret_values())}")
        if phase in ("ABORTED", "ARCHIVED"):
            self._delete(context, part)
            context.save_checkpoint(**{key(part, "job_url"): None, slot(part): None})
            raise QueryFailed(f"rubin-rsp: the TAP job was {phase.lower()} on the server; nothing was"
                              f" fetched; `stdq jobs retry {context.job_id}` submits the query again")
        href = job["results"].get("result") or next(iter(job["results"].values()), None) or f"{url}/results/result"
        href = self._own(str(href), "the job's result")
        context.progress(f"rubin-rsp: fetching the result ({PART_TABLES[part]})")
        response = context.client.get(href)
        fmt = self._format()
        self._check(response, "the result download", "a VOTable" if fmt == "votable" else "a CSV table")
        data = response.content
        if fmt == "csv":
            lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
            if lines and "diaObjectId" not in lines[0]:
                raise TemporaryFailure(f"rubin-rsp: the result is not the asked table: {lines[0][:120]!r};"
                                       " try again later")
            rows = max(0, len(lines) - 1)
        else:
            rows = data.count(b"<TR")
        product = context.new_product(target, params)
        name = RAW_NAMES[part] + (".xml" if fmt == "votable" else ".csv")
        product.add_raw(name, data, url=context.client.safe_url(href),
                        content_type=response.headers.get("Content-Type"))
        context.save_checkpoint(**{key(part, "downloaded"): True, key(part, "rows"): rows})
        self._delete(context, part)

    def _delete(self, context: QueryContext, part: str, client: Client | None = None) -> bool:
        """DELETE PART's UWS job (best effort); noted in the checkpoint."""
        url = context.checkpoint.get(key(part, "job_url"))
        done = key(part, "deleted")
        if not url or context.checkpoint.get(done):
            return bool(context.checkpoint.get(done))
        client = client or context.client
        try:
            response = client.delete(url)
            ok = response.status_code < 400 or response.status_code == 404
            detail = f"HTTP {response.status_code}"
        except TemporaryFailure as exc:
            ok, detail = False, exc.message
        context.event("task", f"rubin-rsp: TAP job {url} deleted" if ok
                      else f"rubin-rsp: could not delete the TAP job {url} ({detail})")
        context.save_checkpoint(**{done: ok})
        return ok

    def cancel_remote(self, checkpoint: dict[str, Any], context: QueryContext) -> None:
        """Delete the remote jobs of a cancelled job (its own client: not cancellable)."""
        if not self.config.secret("token"):
            return
        client = self.make_client(context, cancellable=False)
        try:
            for part in PARTS["both"]:
                if checkpoint.get(key(part, "deleted")):
                    continue
                if not checkpoint.get(key(part, "job_url")):
                    from stdq import remote

                    idem = remote.pending_key(context, slot(part))
                    found = self._find(client, idem, context) if idem else None
                    if found is None:
                        continue
                    context.save_checkpoint(**{key(part, "job_url"): found})
                self._delete(context, part, client)
        finally:
            client.close()
