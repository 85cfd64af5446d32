"""The ZTF forced-photometry service (ZFPS): difference-image forced photometry at any position.

A slow, asynchronous remote request with personal credentials (docs/wire-formats.md
3.2). The job:

1. reads the status listing once and remembers the ids of earlier requests with
   the same position and JD range (the submission answers with no request id, so
   "ours" is the matching request that was not there before);
2. saves the checkpoint ``zfps_state = "submitting"`` with the request's ra, dec,
   jdstart, jdend and those ids, *then* submits ONCE (:func:`stdq.remote.create_once`:
   never re-sent after a send that may have reached the server; after a lost
   answer the listing is searched for up to 6 poll intervals), then saves
   ``"submitted"``;
3. polls the status listing -- every ``poll_interval`` seconds at first, the wait
   growing by half each time up to ``max_poll_interval`` -- until our request has
   ended: its ``exitcode`` (or ``lightcurve``) is filled in (at most ``max_wait``
   seconds per run);
4. an exit code 63 or 65 is no data (exit 5), 64 or 255 a failure (exit 1)
   (:func:`stdq.processors.ztf_fps.request_error`); otherwise (0, or a warning
   56..62) it downloads the light-curve file and its log file, kept as raw files.

The status listing (docs/wire-formats.md 3.2, as SkyPortal's client reads it): an
HTML table read by column name (``reqId, ra, dec, startJD, endJD, exitcode,
lightcurve``); "Zero records returned" means nothing is listed yet (a new request
may take a while to appear); "Error: database is busy; try again a minute later."
is waited out -- 60 s, then half as long again each time, up to BUSY_TRIES times
-- and then a temporary failure (exit 75). Every answer is first checked with
:func:`stdq.http.expect_format`: an empty body (or, for the light-curve file, an
HTML page) is a temporary failure (exit 75) quoting the page's first line; so is
a listing page that is none of the above (no table: a proxy's or maintenance
page).

A worker that restarts resumes from the checkpoint: after "submitted" it only
polls; in the "submitting" state (killed between saving and the answer) it first
looks in the listing for a new matching request and submits only if none is there.
A light-curve path naming another origin is not fetched (QueryFailed).

Submission: ``POST {url}/cgi-bin/batchfp.py/submit`` (the batch form, with one
position). Chosen over the single-request ``GET requestForcedPhotometry.cgi``
because the status listing we poll, ``getBatchForcedPhotometryRequests.cgi``,
lists batch requests (IPAC's own single-request example polls a different page),
and because the personal credentials then travel in the POST body instead of a
URL. The listing is a GET whose query string holds ``email`` and ``userpass``:
every URL that is kept or shown goes through ``http.redact_url``, and httpx's own
request log lines are redacted too.

Credentials: ``email`` and ``userpass`` from ``STDQ_ZTF_FPS_EMAIL`` /
``STDQ_ZTF_FPS_USERPASS`` or the settings file; every request also carries the
public, documented shared HTTP Basic credential ``ztffps``/``dontgocrazy!``, sent
only to the service's own host.

guess: the answers' wording. A submission or listing page with error wording is
a failure: about the e-mail/password -> exit 3; about a limit of pending
requests -> exit 75 (the remote queue is full); otherwise exit 1. A page saying
the service is unavailable (maintenance) -> exit 75 quoting its first line; an
empty submission answer may have been accepted (it is looked for in the listing,
:mod:`stdq.remote`). Any other submission answer is taken as accepted (the real
success wording is unknown); the status listing then confirms the request. ZFPS has no
cancel call that we know of, so a cancelled job leaves its remote request to
finish on its own.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, ClassVar

from stdq.errors import BadInput, ConfigError, NoData, QueryFailed, TemporaryFailure
from stdq.services.base import TIME_FIELDS, Field, QueryForm, SingleTargetDataService

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from stdq.http import Client
    from stdq.services.base import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

SUBMIT_PATH = "/cgi-bin/batchfp.py/submit"
LISTING_PATH = "/cgi-bin/getBatchForcedPhotometryRequests.cgi"
# The public shared HTTP Basic credential of ZFPS (documented; not a personal secret).
SHARED_BASIC = ("ztffps", "dontgocrazy!")
ZTF_START_JD = 2458194.5  # 2018-03-17, the start of ZTF survey operations (guess: the service's own default)
MJD_TO_JD = 2400000.5
POSITION_TOL_DEG = 1e-5
JD_TOL = 1e-4
SUBMIT_SLOT = "zfps_submit"  # the create-once record of the submission (stdq.remote)
CREATE_GRACE_POLLS = 6  # after a lost answer, look for the request this many poll intervals ...
CREATE_GRACE_MAX = 300.0  # ... but at most this many seconds
LISTING_GRACE = 7200.0  # seconds a submitted request may stay unlisted before the job gives up
POLL_GROWTH = 1.5
BUSY_WAIT = 60.0  # "Error: database is busy; try again a minute later."
BUSY_GROWTH = 1.5
BUSY_TRIES = 5  # busy answers in a row before the attempt ends (exit 75): about 13 minutes

_ERROR_WORDS = re.compile(
    r"\b(error|invalid|incorrect|not valid|not authori[sz]ed|not registered|denied|failed|refused)\b",
    re.IGNORECASE,
)
_CREDENTIAL_WORDS = re.compile(r"e-?mail|user ?pass|password|credential|account|regist", re.IGNORECASE)
_LIMIT_WORDS = re.compile(r"\blimit\b|exceed|too many|queue (is )?full", re.IGNORECASE)
_ZERO_RECORDS = re.compile(r"zero records", re.IGNORECASE)
_BUSY = re.compile(r"database is busy", re.IGNORECASE)
BUSY_TEXT = "Error: database is busy; try again a minute later."
_UNAVAILABLE_WORDS = re.compile(
    r"unavailable|maintenance|temporarily|try again later|overloaded", re.IGNORECASE
)


class ZtfFpsForm(QueryForm):
    """Time range and the optional baseline correction (done by the processor)."""

    fields = (
        *TIME_FIELDS,
        Field("baseline", "choice", default="none", choices=("none", "auto"),
              help="baseline correction per fcqfid: none, or auto (epochs more than "
                   "baseline_pre_peak_days before the highest-SNR epoch)"),
        Field("baseline_before", "float", metavar="MJD",
              help="baseline correction from the epochs before this MJD (instead of --baseline auto)"),
    )

    def clean(self) -> dict[str, Any]:
        out = super().clean()
        before = out.get("baseline_before")
        if before is not None:
            if out.get("baseline") == "auto":
                raise BadInput("give --baseline auto or --baseline-before MJD, not both")
            if not (0 < before < 100000):
                raise BadInput(f"--baseline-before {before:g} is not a plausible MJD")
            out["baseline"] = "before"
        return out


def parse_listing(html: str) -> list[dict[str, str]] | None:
    """The status listing's rows as dicts keyed by column name (``<th>`` cells, or the
    first row when there are none); None when there is no table with a ``reqId`` column."""
    from stdq.services.html_table import TableParser

    parser = TableParser()
    parser.feed(html)
    parser.close()
    headers, rows = parser.headers, parser.rows
    if not headers and rows:
        headers, rows = rows[0], rows[1:]
    if "reqId" not in headers:
        return None
    return [dict(zip(headers, row, strict=False)) for row in rows]


def _float(value: Any) -> float | None:
    try:
        return float(str(value).strip())
    except (TypeError, ValueError):
        return None


def matches(row: dict[str, str], request: dict[str, Any]) -> bool:
    """Whether a listing row is a request for REQUEST's position and JD range."""
    pairs = (("ra", "ra", POSITION_TOL_DEG), ("dec", "dec", POSITION_TOL_DEG),
             ("startJD", "jdstart", JD_TOL), ("endJD", "jdend", JD_TOL))
    for column, key, tol in pairs:
        value = _float(row.get(column))
        if value is None or abs(value - float(request[key])) > tol:
            return False
    return True


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _quote(body: bytes, secrets: list[str]) -> str:
    """A page for a message as :func:`stdq.http.expect_format` quotes one: its first
    non-empty line, then its title when it has one (120 characters each, secrets masked)."""
    from stdq.http import first_line

    text = body.decode("utf-8", "replace").lstrip("\ufeff")
    title = _TITLE.search(text[:20000])
    named = f" (title {first_line(title.group(1), secrets)!r})" if title and title.group(1).strip() else ""
    return f"{first_line(text, secrets)!r}{named}"


def _page_text(body: bytes, limit: int = 200) -> str:
    """The text of an HTML (or plain) answer on one line, without its <title> and tags."""
    text = body.decode("utf-8", "replace")
    text = re.sub(r"<(script|style|title)\b.*?</\1>", " ", text, flags=re.IGNORECASE | re.DOTALL)
    text = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return text[:limit] + ("..." if len(text) > limit else "")


class ZtfForcedPhotometryService(SingleTargetDataService):
    """ZTF forced photometry on difference images at the target's position (Masci et al. 2023)."""

    name = "ztf-fps"
    title = "ZTF forced photometry service (ZFPS, personal account)"
    info_url = "https://irsa.ipac.caltech.edu/data/ZTF/docs/ztf_zfps_userguide.pdf"
    data_product_type = "ztf_fps_photometry"
    supports_async = True
    form = ZtfFpsForm
    default_url = "https://ztfweb.ipac.caltech.edu"
    settings_defaults: ClassVar[dict[str, Any]] = {
        "poll_interval": 30.0,
        "max_poll_interval": 600.0,
        "max_wait": 259200.0,
        "max_pending": 100,
        "batch_size": 500,
        "batch_window": 10.0,
    }
    settings_ranges: ClassVar[dict[str, str]] = {
        "max_pending": ">= 0", "batch_size": "1..500", "batch_window": ">= 0"
    }
    settings_help: ClassVar[dict[str, str]] = {
        "poll_interval": "first wait between polls of the status listing, seconds",
        "max_poll_interval": "the wait grows by half each poll up to this, seconds",
        "max_wait": "a run that has waited this long for the request fails (jobs retry resumes it)",
        "max_pending": "at most this many requests submitted and not yet ended, across every worker"
        " (0 = no limit of stdq's own)",
        "batch_size": "at most this many positions in one batch submission of several jobs (1 = no"
        " batches)",
        "batch_window": "a batch is sent this many seconds after its latest job joined (or when"
        " full; at most 10 windows after it opened)",
    }
    secret_fields: ClassVar[tuple[str, ...]] = ("email", "userpass")
    secret_env: ClassVar[dict[str, tuple[str, ...]]] = {}
    version = "1"

    # -- HTTP ------------------------------------------------------------------------------
    def http_auth(self) -> Any:
        from stdq.http import make_host_auth

        return make_host_auth(self.url, basic=SHARED_BASIC)

    def make_client(self, context: QueryContext) -> Client:
        return super().make_client(context)

    def _credentials(self) -> dict[str, str]:
        """The personal ZFPS account; ConfigError (exit 3) naming where to set what is missing."""
        from stdq.config import env_var_name

        missing = [f for f in self.secret_fields if not self.config.secret(f)]
        if missing:
            names = " and ".join(env_var_name(self.name, f) for f in missing)
            raise ConfigError(
                f"ztf-fps: no ZFPS {' and '.join(missing)} configured: set {names}, or "
                f"{' and '.join(missing)} in [services.ztf-fps] of {self.settings.path}",
                hint="ZFPS needs a personal account: https://ztfweb.ipac.caltech.edu/cgi-bin/requestForcedPhotometry.cgi",
            )
        return {f: str(self.config.secret(f)) for f in self.secret_fields}

    def _fail_from_page(self, response: httpx.Response, what: str, client: Client) -> None:
        """Raise the documented error when a ZFPS page carries error wording."""
        text = client.redact(_page_text(response.content))
        if _UNAVAILABLE_WORDS.search(text) and not _ERROR_WORDS.search(text):
            raise TemporaryFailure(f"ztf-fps: the {what} answered a page saying ZFPS is unavailable:"
                                   f" {_quote(response.content, client.secrets)}; try again later")
        if _LIMIT_WORDS.search(text):
            raise TemporaryFailure(f"ztf-fps: ZFPS refused the {what} (its queue is full; try again"
                                   f" later): {text}")
        if _CREDENTIAL_WORDS.search(text):
            raise ConfigError(
                f"ztf-fps: ZFPS refused the credentials ({what}): {text} -- check STDQ_ZTF_FPS_EMAIL"
                " and STDQ_ZTF_FPS_USERPASS (or email/userpass in [services.ztf-fps])"
            )
        raise QueryFailed(f"ztf-fps: ZFPS refused the {what}: {text}")

    def _check(self, response: httpx.Response, what: str, client: Client) -> None:
        from stdq.http import check_response

        if response.status_code in (401, 403):
            raise ConfigError(
                f"ztf-fps: ZFPS refused the shared HTTP login (HTTP {response.status_code}) for the"
                f" {what}; check the service url: stdq services show ztf-fps"
            )
        check_response(response, self.name, client.secrets)

    # -- the remote request ------------------------------------------------------------------
    def listing(self, context: QueryContext, creds: dict[str, str]) -> list[dict[str, str]]:
        """Our account's recent requests from the status listing ([] when "Zero records
        returned"); a busy database is waited out (BUSY_WAIT, growing), BUSY_TRIES times."""
        wait = BUSY_WAIT
        for busy in range(1, BUSY_TRIES + 1):
            rows = self._listing_once(context, creds)
            if rows is not None:
                return rows
            if busy == BUSY_TRIES:
                break
            context.event("busy", f"the ZFPS status listing: database is busy; retry {busy}/"
                                  f"{BUSY_TRIES - 1} in {wait:g} s")
            context.progress(f"ztf-fps: the ZFPS database is busy; retry {busy}/{BUSY_TRIES - 1}",
                             wait_until=context.clock() + wait)
            context.sleep(wait)
            wait *= BUSY_GROWTH
        raise TemporaryFailure(
            f"ztf-fps: the ZFPS status listing answered {BUSY_TRIES} times in a row"
            f" {BUSY_TEXT!r}; try again later",
            retry_after=BUSY_WAIT,
        )

    def _listing_once(self, context: QueryContext, creds: dict[str, str]) -> list[dict[str, str]] | None:
        """One read of the status listing: its rows, or None when the database is busy."""
        from stdq.http import expect_format

        client = context.client
        step = "the status listing"
        response = client.get(
            self.url + LISTING_PATH,
            params={**creds, "option": "All recent jobs", "action": "Query Database"},
        )
        head = response.text[:4000] if response.content else ""
        if _BUSY.search(head):
            return None
        if _ZERO_RECORDS.search(head) and response.status_code < 500:
            return []
        self._check(response, "status query", client)
        expect_format(response, self.name, step, "an HTML table of requests", secrets=client.secrets)
        rows = parse_listing(response.text)
        if rows is None:
            page = _page_text(response.content, 500)
            if _ERROR_WORDS.search(page) or _UNAVAILABLE_WORDS.search(page):
                self._fail_from_page(response, "status query", client)
            raise TemporaryFailure(
                f"ztf-fps: {step} answered a page without its table of requests:"
                f" {_quote(response.content, client.secrets)}; try again later"
            )
        return rows

    def submit(self, context: QueryContext, creds: dict[str, str],
               request: dict[str, Any]) -> dict[str, str]:
        """Send the submission ONCE (its body carries the account: never to another
        origin); {} when accepted (ZFPS answers with no request id). A lost or empty
        answer raises AmbiguousSend: the request may exist."""
        return self.submit_positions(context, creds, [request])

    def submit_positions(self, context: QueryContext, creds: dict[str, str],
                         requests: list[dict[str, Any]]) -> dict[str, str]:
        """:meth:`submit` for several positions (one JD range: the first request's) at once."""
        import json

        from stdq.http import AmbiguousSend, RequestPolicy, expect_format

        client = context.client
        request = requests[0]
        form = {
            "ra": json.dumps([r["ra"] for r in requests]),
            "dec": json.dumps([r["dec"] for r in requests]),
            "jdstart": json.dumps(request["jdstart"]),
            "jdend": json.dumps(request["jdend"]),
            **creds,
        }
        context.check_cancelled()
        context.progress("submitting the request to ZFPS")
        response = client.request("POST", self.url + SUBMIT_PATH, data=form,
                                  policy=RequestPolicy(repeatable=False, secret_body=True))
        self._check(response, "submission", client)
        try:
            expect_format(response, self.name, "the submission", "an HTML page", secrets=client.secrets)
        except TemporaryFailure as exc:  # an empty answer: the request may have been accepted
            raise AmbiguousSend(exc.message) from None
        page = _page_text(response.content, 1000)
        if not page:
            raise AmbiguousSend("ztf-fps: the submission answered a page without text where an HTML"
                                " page was expected; try again later")
        if _ERROR_WORDS.search(page) or _UNAVAILABLE_WORDS.search(page):
            self._fail_from_page(response, "submission", client)
        where = (f"ra {request['ra']}, dec {request['dec']}" if len(requests) == 1
                 else f"{len(requests)} positions")
        context.event("submitted", f"ZFPS request submitted: {where},"
                                   f" JD {request['jdstart']} .. {request['jdend']}")
        return {}

    @staticmethod
    def _ours(rows: list[dict[str, str]], request: dict[str, Any], known: list[str],
              req_id: str | None) -> dict[str, str] | None:
        """Our request among the listing ROWS (by its id once known, else the new matching one)."""
        if req_id:
            return next((r for r in rows if r.get("reqId", "").strip() == req_id), None)
        new = [r for r in rows if matches(r, request) and r.get("reqId", "").strip() not in known]
        new.sort(key=lambda r: (_float(r.get("reqId")) or 0.0))
        return new[0] if new else None

    @staticmethod
    def ended(row: dict[str, str]) -> bool:
        """Whether a listing row is of a request that has ended (its exit code or light curve is
        filled in; an ``ended`` time too, where the listing has one)."""
        return any(row.get(c, "").strip() for c in ("exitcode", "lightcurve", "ended"))

    @staticmethod
    def new_request(target: Target, params: dict[str, Any]) -> dict[str, Any]:
        """What identifies the request: position and JD range (jdend 'now' when open)."""
        mjd_min, mjd_max = params.get("mjd_min"), params.get("mjd_max")
        jdstart = ZTF_START_JD if mjd_min is None else float(mjd_min) + MJD_TO_JD
        jdend = (time.time() / 86400.0 + 2440587.5) if mjd_max is None else float(mjd_max) + MJD_TO_JD
        return {
            "ra": round(float(target.ra), 7),
            "dec": round(float(target.dec), 7),
            "jdstart": round(jdstart, 6),
            "jdend": round(jdend, 6),
        }

    def probe(self, client: Client) -> str:
        """stdq doctor: the account's status listing (an HTML table, or "Zero records").
        Without the account only the shared login and an answer are checked."""
        from stdq.http import expect_format
        from stdq.records import counted
        from stdq.services.base import probe_status

        creds = {f: str(self.config.secret(f)) for f in self.secret_fields if self.config.secret(f)}
        response = client.get(self.url + LISTING_PATH, params={
            **creds, "option": "All recent jobs", "action": "Query Database"})
        zero = bool(_ZERO_RECORDS.search(response.text[:2000]))
        if _BUSY.search(response.text[:4000]):
            raise TemporaryFailure(f"ztf-fps: the status listing answered {BUSY_TEXT!r}; try again later")
        if response.status_code == 400 and zero:
            return "HTTP 400, the status listing: Zero records returned"
        self._check(response, "status query", client)  # the shared login
        probe_status(response, self.name, client.secrets)
        expect_format(response, self.name, "the status listing", "an HTML page", secrets=client.secrets)
        if len(creds) < len(self.secret_fields):
            return f"HTTP {response.status_code} (no account given: the listing was not read)"
        rows = parse_listing(response.text)
        if rows is None and not zero:
            self._fail_from_page(response, "status query", client)
        return f"HTTP {response.status_code}, the status listing ({counted(len(rows or []), 'request')})"

    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        creds = self._credentials()
        cp = context.checkpoint
        state = cp.get("zfps_state")
        if state == "downloaded" and (cp.get("products") or {}).get("main"):
            product = context.new_product(target, params)
            product.notes.setdefault("zfps", {"request_id": cp.get("zfps_reqid"),
                                              "request": dict(cp.get("zfps_request") or {})})
            return [product]
        try:
            if state == "batched":
                self._batch_step(context, creds)
            elif state is None and self._batching(target, params, context):
                self._join_batch(target, params, context, creds)
            elif state in (None, "submitting"):
                if state is None:
                    self._take_pending_slot(context)
                self._create(target, params, context, creds)
            elif not cp.get("zfps_interval"):  # a job parked between two looks goes on quietly
                context.event("resumed", f"resuming ZFPS request {cp.get('zfps_reqid') or '(not yet listed)'}")
            row = self._wait(context, creds)
            self._give_back_slot(context)  # the request has ended: no longer pending
            return [self._download(target, params, context, row)]
        except Exception:
            if context.checkpoint.get("zfps_state") is None:
                self._give_back_slot(context)  # never submitted
            raise

    # -- batches of several jobs (stdq.batches; docs/settings.md [services.ztf-fps]) ---------
    def _board(self, context: QueryContext) -> Any:
        from stdq.batches import BatchBoard

        return BatchBoard(context.store.db, f"ztf-fps:{self.url}:{self.config.secret('email') or ''}")

    @staticmethod
    def _batch_key(request: dict[str, Any], params: dict[str, Any]) -> str:
        end = "open" if params.get("mjd_max") is None else f"{request['jdend']:.6f}"
        return f"{request['jdstart']:.6f}:{end}"

    def _batching(self, target: Target, params: dict[str, Any], context: QueryContext) -> bool:
        """A worker's job joins a batch when batch_size > 1 and another job could share it."""
        from stdq.slots import waiting_submissions

        if not context.may_postpone or context.job_id is None or int(self.config.values["batch_size"]) <= 1:
            return False
        if waiting_submissions(context.store.db, self.name, "zfps_state") > 1:
            return True
        key = self._batch_key(self.new_request(target, params), params)
        row = context.store.db.conn.execute(
            "SELECT 1 FROM batches WHERE scope = ? AND key = ? AND state = 'open' LIMIT 1",
            (self._board(context).scope, key),
        ).fetchone()
        return row is not None

    def _join_batch(self, target: Target, params: dict[str, Any], context: QueryContext,
                    creds: dict[str, str]) -> None:
        request = self.new_request(target, params)
        board = self._board(context)
        batch, _leader = board.join(self._batch_key(request, params), int(context.job_id or 0), request,
                                    int(self.config.values["batch_size"]), {"jdend": request["jdend"]})
        request["jdend"] = batch.info.get("jdend", request["jdend"])  # one JD range per batch
        context.save_checkpoint(zfps_state="batched", zfps_batch=batch.id, zfps_request=request)
        self._batch_step(context, creds)

    def _batch_step(self, context: QueryContext, creds: dict[str, str]) -> None:
        """Go on with the job's batch: a member waits (postponed) until the leader has sent it;
        the leader (postponed too meanwhile) sends it when it is full or batch_window seconds
        after its latest member joined (at most MAX_OPEN_WINDOWS windows after it opened),
        submitting every position once. Returns with the job's checkpoint "submitted"."""
        from stdq.batches import FAILED, MAX_OPEN_WINDOWS, OPEN, SENDING, SENT
        from stdq.slots import Postponed

        board = self._board(context)
        cp = context.checkpoint
        job_id = int(context.job_id or 0)
        window = float(self.config.values["batch_window"])
        batch = board.get(int(cp["zfps_batch"]))
        if batch is None or batch.state == FAILED or (batch.leader != job_id and batch.state != SENT
                                                      and board.leader_gone(batch)):
            if batch is not None and batch.state != FAILED:
                board.set_state(batch.id, FAILED)
            context.save_checkpoint(zfps_state=None, zfps_batch=None)
            raise Postponed("ztf-fps: the batch's first job ended before sending it; joining another",
                            retry_after=0.1)
        if batch.state == SENT:
            known = (batch.info.get("known") or {}).get(str(job_id), [])
            context.save_checkpoint(zfps_state="submitted", zfps_known=list(known),
                                    zfps_submitted_at=batch.sent_at or time.time())
            context.event("submitted", f"ZFPS batch {batch.id} was submitted by job {batch.leader}")
            return
        latest = batch.opened_at + MAX_OPEN_WINDOWS * window  # sent by then at the latest
        if batch.leader != job_id:
            # the leader makes the members due when it has sent the batch (wake_members); until
            # then a member looks again only now and then (its leader may have ended)
            raise Postponed(f"ztf-fps: in ZFPS batch {batch.id}; waiting for job {batch.leader} to submit it",
                            retry_after=max(0.1, min(latest - time.time(), 3 * window) + 0.5))
        size = int(self.config.values["batch_size"])
        if batch.state == OPEN:
            context.progress(f"ZFPS batch {batch.id}: waiting for other jobs to join"
                             f" ({window:g} s after the latest)")
            until = min(latest, (board.last_join(batch.id) or batch.opened_at) + window)
            if board.count(batch.id) < size and time.time() < until:
                # not in its thread: the leader comes back when the batch may be sent
                raise Postponed(f"ztf-fps: ZFPS batch {batch.id} waits for other jobs to join",
                                retry_after=max(0.05, until - time.time()))
            board.set_state(batch.id, SENDING)  # closed: later jobs open a new batch
        self._take_pending_slot(context)  # the batch is one request of the account
        members = board.members(batch.id)
        jdend = float(batch.info.get("jdend", cp["zfps_request"]["jdend"]))
        requests = [{**r, "jdend": jdend} for _, r in members]
        info = dict(batch.info)
        if "known" not in info:
            rows = self.listing(context, creds)
            info["known"] = {
                str(j): sorted({row.get("reqId", "").strip() for row in rows if matches(row, r)})
                for (j, _), r in zip(members, requests, strict=True)
            }
            board.set_state(batch.id, SENDING, info=info)
        mine = dict(cp["zfps_request"])
        known = list(info["known"].get(str(job_id), []))
        row, found = self._create_once(context, creds, lambda: self.submit_positions(context, creds, requests),
                                       mine, known, "the ZFPS batch request")
        board.set_state(batch.id, SENT)
        board.wake_members(batch.id)
        context.event("submitted", f"ZFPS batch {batch.id}: {len(requests)} position(s) in one submission")
        updates: dict[str, Any] = {"zfps_state": "submitted", "zfps_known": known,
                                   "zfps_submitted_at": time.time()}
        if found and row.get("reqId"):
            updates["zfps_reqid"] = row.get("reqId", "").strip()
        context.save_checkpoint(**updates)

    # -- account limits (docs/settings.md, [services.ztf-fps] max_pending) -----------------
    def _slots(self, context: QueryContext) -> Any:
        from stdq.slots import SlotPool

        scope = f"ztf-fps:{self.url}:{self.config.secret('email') or ''}:pending"
        return SlotPool(context.store.db, scope, int(self.config.values["max_pending"]))

    def _take_pending_slot(self, context: QueryContext) -> None:
        """Wait (in-process) or postpone (a worker's job) while max_pending requests are pending."""
        from stdq.slots import Postponed

        if context.job_id is None:
            return
        look = max(0.05, float(self.config.values["poll_interval"]))
        while not self._slots(context).take(int(context.job_id)):
            why = (f"ztf-fps: {self.config.values['max_pending']} ZFPS requests of this account are"
                   " pending (max_pending)")
            if context.may_postpone:
                raise Postponed(why, retry_after=look)
            context.progress(why, wait_until=time.time() + look)
            context.sleep(look)

    def _give_back_slot(self, context: QueryContext) -> None:
        from stdq.errors import StdqError

        if context.job_id is None:
            return
        try:
            self._slots(context).give_back(int(context.job_id))
        except StdqError:  # the next take frees the slot of an ended job
            return

    def _create_once(self, context: QueryContext, creds: dict[str, str], send: Callable[[], Any],
                     request: dict[str, Any], known: list[str], what: str) -> Any:
        """remote.create_once of a submission (SEND) whose request, having no id in the answer,
        is found as the new row of the listing matching REQUEST, not among KNOWN."""
        from stdq import remote

        look_every = max(0.05, float(self.config.values["poll_interval"]))
        return remote.create_once(
            context,
            slot=SUBMIT_SLOT,
            send=lambda key: send(),
            find=lambda key: self._ours(self.listing(context, creds), request, known, None),
            service=self.name,
            what=what,
            grace=min(CREATE_GRACE_MAX, CREATE_GRACE_POLLS * look_every),
            look_every=look_every,
        )

    def _create(self, target: Target, params: dict[str, Any], context: QueryContext,
                creds: dict[str, str]) -> None:
        """Submit the request once (stdq.remote.create_once).

        ZFPS answers a submission with no request id: before the first send the
        listing's matching requests are remembered, and "ours" is the new matching
        one -- looked for after a lost answer, or on a restart after a send."""

        cp = context.checkpoint
        if cp.get("zfps_state") is None:
            request = self.new_request(target, params)
            context.progress("reading the ZFPS status listing")
            known = sorted({r.get("reqId", "").strip() for r in self.listing(context, creds)
                            if matches(r, request)})
            context.save_checkpoint(zfps_state="submitting", zfps_request=request, zfps_known=known,
                                    zfps_submitting_at=time.time())
        request = dict(cp["zfps_request"])
        known = list(cp.get("zfps_known") or [])
        row, found = self._create_once(context, creds, lambda: self.submit(context, creds, request),
                                       request, known, "the ZFPS request")
        if found:
            req_id = row.get("reqId", "").strip()
            context.event("resumed", f"found ZFPS request {req_id}, submitted by an earlier send;"
                                     " not submitting again")
            context.save_checkpoint(zfps_state="submitted", zfps_reqid=req_id,
                                    zfps_submitted_at=cp.get("zfps_submitting_at") or time.time())
        else:
            context.save_checkpoint(zfps_state="submitted", zfps_submitted_at=time.time())

    def _wait(self, context: QueryContext, creds: dict[str, str]) -> dict[str, str]:
        """Poll the listing until our request has ended; its row. A worker's job waits
        between two looks parked, as ATLAS's does (stdq.slots.park_rather_than_sleep)."""
        values = self.config.values
        first = max(0.05, float(values["poll_interval"]))
        max_interval = max(first, float(values["max_poll_interval"]))
        max_wait = float(values["max_wait"])
        kept = context.checkpoint.get("zfps_interval")  # a parked job goes on from its last wait
        interval = min(max_interval, max(first, float(kept))) if isinstance(kept, (int, float)) else first
        started = float(context.checkpoint.get("zfps_submitted_at") or time.time())
        last_status = None
        while True:
            context.check_cancelled()
            cp = context.checkpoint
            request = cp["zfps_request"]
            rows = self.listing(context, creds)
            mine = self._ours(rows, request, list(cp.get("zfps_known") or []), cp.get("zfps_reqid"))
            if mine is None:
                if cp.get("zfps_reqid"):
                    raise QueryFailed(
                        f"ztf-fps: ZFPS request {cp['zfps_reqid']} is no longer in the status listing"
                        " (requests are listed for 30 days)"
                    )
                waited = time.time() - float(cp.get("zfps_submitted_at") or time.time())
                if waited > LISTING_GRACE:
                    raise QueryFailed(
                        f"ztf-fps: the request submitted {waited / 3600:.1f} h ago is not in the"
                        " ZFPS status listing"
                    )
                status = "submitted; not listed yet"
            else:
                req_id = mine.get("reqId", "").strip()
                if req_id and cp.get("zfps_reqid") != req_id:
                    context.save_checkpoint(zfps_reqid=req_id)
                if self.ended(mine):
                    context.event("ended", f"ZFPS request {req_id} ended (exit code "
                                           f"{mine.get('exitcode', '').strip() or '?'})")
                    return mine
                running = mine.get("started", "").strip()  # not in every listing
                status = f"ZFPS request {req_id} " + ("running" if running else "not finished")
            if status != last_status:
                context.progress(status)
                last_status = status
            if time.time() - started > max_wait:
                label = f"ZFPS request {cp['zfps_reqid']}" if cp.get("zfps_reqid") else "the ZFPS request"
                raise QueryFailed(
                    f"ztf-fps: {label} has not finished after {max_wait / 3600:.1f} h; its checkpoint"
                    f" is kept: stdq jobs retry {context.job_id} polls it again"
                )
            grown = min(max_interval, interval * POLL_GROWTH)
            if context.may_postpone and context.job_id is not None and self._park(context, interval):
                from stdq.slots import Waiting

                # not in its thread: queued until the next look, which goes on from here
                context.save_checkpoint(zfps_interval=grown)
                raise Waiting(f"ztf-fps: {status}; polling again", retry_after=interval)
            context.sleep(interval)
            interval = grown

    @staticmethod
    def _park(context: QueryContext, seconds: float) -> bool:
        from stdq.jobs.worker import spare_threads
        from stdq.slots import park_rather_than_sleep

        return park_rather_than_sleep(context.store.db, seconds, spare_threads())

    def _download(self, target: Target, params: dict[str, Any], context: QueryContext,
                  row: dict[str, str]) -> DataProduct:
        from stdq.http import expect_format, same_origin
        from stdq.processors.ztf_fps import request_error

        client = context.client
        req_id = row.get("reqId", "").strip()
        exitcode = row.get("exitcode", "").strip()
        path = row.get("lightcurve", "").strip()
        error = request_error(exitcode, f"ZFPS request {req_id}", kind="exit code") if exitcode else None
        if error is not None:  # 63/65: no data (exit 5); 64/255: failed (exit 1)
            raise error
        if not path:
            if exitcode in ("", "0"):
                raise NoData(f"ztf-fps: ZFPS request {req_id} ended without a light-curve file")
            raise QueryFailed(
                f"ztf-fps: ZFPS request {req_id} ended with exit code {client.redact(exitcode)[:40]}"
                " and no light curve"
            )
        lc_url = path if path.startswith(("http://", "https://")) else self.url + "/" + path.lstrip("/")
        if not same_origin(lc_url, self.url):
            raise QueryFailed(
                f"ztf-fps: ZFPS request {req_id} names its light curve on another origin"
                f" ({client.safe_url(lc_url)}); stdq fetches files only from the service's own"
                f" origin ({self.url}); nothing was fetched"
            )
        context.progress(f"downloading the light curve of ZFPS request {req_id}")
        response = client.get(lc_url)
        self._check(response, "light-curve download", client)
        expect_format(response, self.name, f"the light-curve download of ZFPS request {req_id}",
                      "a ZFPS light-curve file", secrets=client.secrets)
        data = response.content
        product = context.new_product(target, params)
        secrets = client.secrets
        lc_name = lc_url.rsplit("/", 1)[-1] or f"forcedphotometry_req{req_id}_lc.txt"
        redacted = self._keep(product, lc_name, data, client.safe_url(lc_url),
                              response.headers.get("Content-Type"), secrets)
        log_name = None
        if lc_url.endswith("_lc.txt"):
            log_url = lc_url[: -len("_lc.txt")] + "_log.txt"  # guess: the log sits beside the light curve
            log_response = client.get(log_url)
            log_problem = None
            if log_response.status_code != 200:
                log_problem = f"not available (HTTP {log_response.status_code})"
            else:
                try:
                    expect_format(log_response, self.name, "the log download", "a ZFPS log file",
                                  secrets=client.secrets)
                except TemporaryFailure as exc:  # the log is not needed: said, not kept
                    log_problem = f"not kept: {exc.message}"
            if log_problem is None:
                log_name = log_url.rsplit("/", 1)[-1]
                redacted += self._keep(product, log_name, log_response.content,
                                       client.safe_url(log_url),
                                       log_response.headers.get("Content-Type"), secrets)
            else:
                context.event("log", f"the ZFPS log file was {log_problem}")
        product.notes["zfps"] = {
            "request_id": req_id,
            "exitcode": exitcode,
            "request": dict(context.checkpoint.get("zfps_request") or {}),
            # times where the listing has them (not in the columns SkyPortal reads)
            **{k: row[k].strip() for k in ("created", "ended") if row.get(k, "").strip()},
            "light_curve_file": lc_name,
            "log_file": log_name,
        }
        if redacted:
            product.notes["redacted"] = redacted
        context.save_checkpoint(zfps_state="downloaded")
        return product

    @staticmethod
    def _keep(product: DataProduct, name: str, data: bytes, url: str, content_type: str | None,
              secrets: list[str]) -> list[str]:
        """Keep DATA as raw/NAME; a credential inside it is masked first (the raw file's
        record says ``redacted``) and said so in the returned notes."""
        raw = product.add_raw(name, data, url=url, content_type=content_type, secrets=secrets)
        return [f"{name}: a credential of the account was replaced by ***"] if raw.redacted else []

    def cancel_remote(self, checkpoint: dict[str, Any], context: QueryContext) -> None:
        if checkpoint.get("zfps_state") in ("submitting", "submitted"):
            context.event("cancel", "ZFPS has no cancel request; the remote request finishes on its own")
