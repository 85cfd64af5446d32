"""ATLAS forced photometry (https://fallingstar-data.com/forcedphot): the full server protocol.

One query is one remote task (docs/wire-formats.md section 1):

1. ``POST queue/`` with ra, dec, mjd_min (always sent: the server's own default
   is only the last 30 days), mjd_max, use_reduced, send_email=false, the
   proper-motion fields when given, and a ``comment`` "stdq job N <key>". The
   POST is sent once (:func:`stdq.remote.create_once`): the key is saved in the
   checkpoint before the send; when the answer is lost (a reset, a timeout, a
   5xx, a killed process) the job looks for the key in the user's task list
   (newest first, following the list's ``next`` pages -- only on the service's
   own origin -- through the newest ``MAX_LIST_PAGES`` x 100 tasks; for up to 6
   poll intervals) and adopts the task it finds, and never sends again while the
   task may exist. The task URL is saved in the checkpoint at
   once; a restarted job resumes polling that task.
2. ``GET`` the task (``If-None-Match`` with its ETag; 304 = unchanged) until it
   has finished; the submission's answer is the first look. While the task is
   queued the wait follows its ``queuepos`` (:class:`QueueWaits`: half the time
   the position's fall predicts before the start, between ``poll_interval`` and
   ``max_poll_interval``); while it runs, ``poll_interval``. Queue position and
   state are the job's progress.
3. On finish: ``error_msg`` "No data returned" -> no data (exit 5); any other
   error -> failed with the server's text; else ``GET result_url`` (only from
   the service's own origin: another one fails, nothing fetched), check that
   it is an ATLAS result, keep it byte for byte, then ``DELETE`` the task (204).
   The server only archives a finished task (a later GET is a 404 "Page not
   found"); an unfinished one it removes (a JSON 404). A cancelled job deletes
   its remote task.

Every answer is checked before it is read (:func:`stdq.http.expect_format`): an
HTML page or an empty body where JSON or the result file was expected is a
temporary failure (exit 75) quoting the page's first line, at every step
(submission, poll, task list, download); after the submission it counts as a
lost answer (the task may exist: it is looked for). "No data" (exit 5) only when
the server says so in the task's own ``error_msg``.

Throttling: every request to the ATLAS host first takes a slot in a limiter
shared by all processes of the data directory (``writes_per_minute``,
``reads_per_minute`` in any ``rate_window`` seconds); a 429 is waited out as the
server says (Retry-After, or "Expected available in N second(s)."). The server's
queue-limit refusal ("too many queued tasks") is a temporary failure: exit 75 in
the foreground, retried later with backoff by a worker.

The token (``STDQ_ATLAS_API_KEY``, ``ATLAS_FORCED_PHOTOMETRY_API_KEY`` or
``api_key`` in the settings; ``stdq config atlas-login`` fetches one) is sent as
``Authorization: Token ...`` to the ATLAS origin only, and never shown.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, ClassVar

from stdq.errors import BadInput, ConfigError, NoData, QueryFailed, StdqError, TemporaryFailure
from stdq.services.base import Field, QueryForm, SingleTargetDataService

# json, logging, urllib.parse and stdq.records are imported where they are used:
# `stdq query atlas --help` imports this module for its options (tests/test_startup.py).

if TYPE_CHECKING:
    import httpx

    from stdq.config import Settings
    from stdq.http import Client
    from stdq.services.base import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

DEFAULT_MJD_MIN = 57000.0  # 2014-12-09: before ATLAS's first exposures, i.e. its whole history
NO_DATA_TEXT = "No data returned"
QUEUE_FULL = re.compile(r"too many queued tasks", re.IGNORECASE)
POLL_GROWTH = 1.5
QUEUE_FULL_RETRY = 600.0  # a worker tries a refused submission again after at least this
JSON_HEADERS = {"Accept": "application/json"}
SUBMIT_SLOT = "atlas_submit"  # the create-once record of the task submission (stdq.remote)
CREATE_GRACE_POLLS = 6  # after a lost answer, look for the task this many poll intervals ...
CREATE_GRACE_MAX = 60.0  # ... but at most this many seconds
LIST_PAGESIZE = 100  # the server's max_page_size
MAX_LIST_PAGES = 10  # the newest 1000 tasks are searched for a key
PAGE_NOT_FOUND = "Page not found"  # the body of the 404 of an archived task
TURN_HORIZON = 1.0  # a submission whose write slot frees within this waits for it in its thread
TURN_LEAD = 0.7  # a postponed submission comes back this long before its turn (its claim's time)


class AtlasQueryForm(QueryForm):
    """ATLAS options: time range, reduced (total-flux) images, proper motion, nightly stacking."""

    fields = (
        Field(
            "mjd_min",
            "float",
            help=f"earliest MJD (UTC) [default: {DEFAULT_MJD_MIN:g}, i.e. the full ATLAS history;"
            " the server alone would return only the last 30 days]",
            metavar="MJD",
        ),
        Field("mjd_max", "float", help="latest MJD (UTC) [default: now]", metavar="MJD"),
        Field("date_min", "date", help="earliest date, ISO 8601 UTC (instead of --mjd-min)", metavar="DATE"),
        Field("date_max", "date", help="latest date, ISO 8601 UTC (instead of --mjd-max)", metavar="DATE"),
        Field(
            "reduced",
            "bool",
            default=False,
            help="photometry on the reduced images (total flux of the target and its host) instead"
            " of the default difference images",
        ),
        Field(
            "radec_epoch",
            "float",
            help="epoch (decimal year) of --ra/--dec, needed with --pm-ra/--pm-dec",
            metavar="YEAR",
        ),
        Field("pm_ra", "float", help="proper motion in RA (mu_alpha* = mu_alpha cos dec), mas/yr", metavar="MAS_YR"),
        Field("pm_dec", "float", help="proper motion in Dec, mas/yr", metavar="MAS_YR"),
        Field(
            "stack",
            "choice",
            default="none",
            choices=("none", "nightly"),
            help="'nightly': one inverse-variance weighted point per night, filter and unit from"
            " the unflagged exposures (the raw file keeps every exposure)",
        ),
    )

    def clean(self) -> dict[str, Any]:
        out = super().clean()
        out.setdefault("mjd_min", DEFAULT_MJD_MIN)
        if "mjd_max" in out and out["mjd_min"] >= out["mjd_max"]:
            raise BadInput(
                f"the time range is empty: mjd_min {out['mjd_min']} is not before mjd_max"
                f" {out['mjd_max']}"
            )
        epoch = out.get("radec_epoch")
        if epoch is not None and not 1900.0 <= epoch <= 2100.0:
            raise BadInput(f"--radec-epoch {epoch:g} is not a plausible epoch (a year, e.g. 2016.0)")
        has_pm = out.get("pm_ra") is not None or out.get("pm_dec") is not None
        if has_pm and epoch is None:
            raise BadInput(
                "--pm-ra/--pm-dec need --radec-epoch, the epoch of the given position",
                hint="e.g. --radec-epoch 2016.0 for Gaia DR3 positions",
            )
        if epoch is not None and not has_pm:
            raise BadInput("--radec-epoch only matters with --pm-ra and --pm-dec")
        if has_pm:
            out.setdefault("pm_ra", 0.0)
            out.setdefault("pm_dec", 0.0)
        return out


def task_form(target: Target, params: dict[str, Any], comment: str) -> dict[str, str]:
    """The POST queue/ form for TARGET and the cleaned PARAMS (docs/wire-formats.md 1.3)."""
    form = {
        "ra": repr(float(target.ra)),
        "dec": repr(float(target.dec)),
        "mjd_min": repr(float(params.get("mjd_min", DEFAULT_MJD_MIN))),
        "use_reduced": "true" if params.get("reduced") else "false",
        "send_email": "false",
        "comment": comment,
    }
    if params.get("mjd_max") is not None:
        form["mjd_max"] = repr(float(params["mjd_max"]))
    if params.get("radec_epoch") is not None:
        form["radec_epoch_year"] = f"{float(params['radec_epoch']):.1f}"
        form["propermotion_ra"] = repr(float(params.get("pm_ra") or 0.0))
        form["propermotion_dec"] = repr(float(params.get("pm_dec") or 0.0))
    return form


def error_detail(response: httpx.Response) -> str:
    """The server's message in a DRF error body (detail / non_field_errors / field: [msg])."""
    try:
        data = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200]
    if isinstance(data, dict):
        parts = []
        for key, value in data.items():
            texts = value if isinstance(value, list) else [value]
            text = " ".join(str(t) for t in texts)
            parts.append(text if key in ("detail", "non_field_errors") else f"{key}: {text}")
        return "; ".join(parts)[:300]
    return str(data)[:300]


def is_queue_full(response: httpx.Response) -> bool:
    """The server's refusal to queue more tasks for this user (recognised by its text)."""
    if response.status_code not in (400, 429, 503):
        return False
    try:
        data = response.json()
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    value = data.get("non_field_errors", data.get("detail"))
    texts = value if isinstance(value, list) else [value]
    return any(isinstance(t, str) and QUEUE_FULL.search(t) for t in texts)


def _submit_policy() -> Any:
    from stdq.http import RequestPolicy

    # sent once; the queue-full refusal (a 400 or 429 by its text) comes back at once
    return RequestPolicy(repeatable=False, final=is_queue_full)


def looks_like_result(data: bytes) -> bool:
    """An ATLAS result starts with its header line (``###MJD`` / ``##MJD``), not HTML."""
    head = data[:4096].lstrip()
    if head[:1] != b"#":
        return False
    first = head.split(b"\n", 1)[0].lstrip(b"#").split()
    return bool(first) and first[0] == b"MJD"


def task_gone(response: httpx.Response) -> str | None:
    """Which of the server's two 404s of a task RESPONSE is: the plain text "Page not
    found" of an archived task (deleted after it finished) or the JSON
    ``{"detail": ...}`` of a removed one (deleted before it finished, or never there);
    None for any other 404 (not the server's answer)."""
    try:
        text = response.text.strip()
    except Exception:  # undecodable: not the server's text
        return None
    if text == PAGE_NOT_FOUND:
        return "archived: it was deleted after it finished"
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return "deleted before it finished"
    return None


def _origin(url: str) -> tuple[str, str, int | None]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class QueueWaits:
    """The waits between polls of one task, from what the polls saw.

    Running: ``shortest`` (``poll_interval``). Queued at a known ``queuepos`` P:
    the seconds per position S are measured from the position's fall (between
    the first two changes seen, or from the first look to the first change; the
    moment of a change is taken half-way between the two polls around it);
    before any change, S is the time already spent at P. The start is expected
    in P*S minus the time since the last change (counted from the poll before
    it: an early estimate); the wait is HEAD_FRACTION of that, clamped to
    [``shortest``, ``longest``]. Far back the waits are long; as the start
    nears they halve down to ``shortest``, so the start (and so the finish of a
    task that runs longer than one interval) is seen at most about one
    ``shortest`` late. Without a position, the wait grows x1.5 up to
    ``longest``. A position that rises starts the measurement again.
    """

    HEAD_FRACTION = 0.5

    def __init__(self, shortest: float, longest: float) -> None:
        self.shortest = shortest
        self.longest = max(shortest, longest)
        self._first: tuple[float, int] | None = None  # (time, position) of the first look
        self._last: tuple[float, int] | None = None
        self._changes: list[tuple[float, float, int]] = []  # (poll before, poll after, new position)
        self._blind = shortest  # the growing wait without a position

    def state(self) -> dict[str, Any]:
        """What the polls saw so far, as JSON (kept in the checkpoint of a parked job)."""
        return {"first": self._first, "last": self._last, "changes": self._changes,
                "blind": self._blind}

    @classmethod
    def restored(cls, shortest: float, longest: float, state: Any) -> QueueWaits:
        """A QueueWaits that goes on from STATE (:meth:`state`); a fresh one for anything else."""
        waits = cls(shortest, longest)
        if not isinstance(state, dict):
            return waits
        try:
            first, last = state.get("first"), state.get("last")
            waits._first = (float(first[0]), int(first[1])) if first else None
            waits._last = (float(last[0]), int(last[1])) if last else None
            waits._changes = [(float(a), float(b), int(p)) for a, b, p in state.get("changes") or []]
            waits._blind = min(waits.longest, max(shortest, float(state.get("blind") or shortest)))
        except (TypeError, ValueError, IndexError):
            return cls(shortest, longest)
        return waits

    def running(self) -> float:
        return self.shortest

    def queued(self, now: float, position: int | None) -> float:
        """The wait after a look at NOW that saw the task queued at POSITION."""
        if position is None:
            wait, self._blind = self._blind, min(self.longest, self._blind * POLL_GROWTH)
            return wait
        if self._first is None or self._last is None or position > self._last[1]:
            self._first, self._changes = (now, position), []
        elif position < self._last[1]:
            self._changes.append((self._last[0], now, position))
        self._last = (now, position)
        eta = position * self._seconds_per_position(now)
        if self._changes:
            eta -= now - self._changes[-1][0]
        return min(self.longest, max(self.shortest, self.HEAD_FRACTION * eta))

    def _seconds_per_position(self, now: float) -> float:
        assert self._first is not None
        if not self._changes:
            return now - self._first[0]
        before, after, position = self._changes[-1]
        if len(self._changes) >= 2:
            before0, after0, position0 = self._changes[0]
            start, fallen = (before0 + after0) / 2, position0 - position
        else:
            start, fallen = self._first[0], self._first[1] - position
        return max(0.0, ((before + after) / 2 - start) / max(1, fallen))


class AtlasForcedPhotometryService(SingleTargetDataService):
    """ATLAS forced photometry: a remote task queued, polled, downloaded and deleted."""

    name = "atlas"
    title = "ATLAS forced photometry (difference or reduced images)"
    info_url = "https://fallingstar-data.com/forcedphot/"
    data_product_type = "atlas_photometry"
    supports_async = True
    form = AtlasQueryForm
    default_url = "https://fallingstar-data.com/forcedphot"
    version = "1"
    secret_fields = ("api_key",)
    secret_env = {"api_key": ("ATLAS_FORCED_PHOTOMETRY_API_KEY",)}
    settings_defaults: ClassVar[dict[str, Any]] = {
        "poll_interval": 3.0,
        "max_poll_interval": 30.0,
        "task_timeout": 172800.0,
        "writes_per_minute": 60,
        "reads_per_minute": 600,
        "rate_window": 60.0,
        "max_queued": 100,
    }
    settings_ranges: ClassVar[dict[str, str]] = {"max_queued": "0..500"}
    settings_help: ClassVar[dict[str, str]] = {
        "url": "the forced photometry server",
        "poll_interval": "wait between polls while the task runs (and the shortest while it is"
        " queued), seconds",
        "max_poll_interval": "the longest wait between polls while the task is queued, seconds",
        "task_timeout": "give up (and delete the remote task) when it has not finished after"
        " this many seconds",
        "writes_per_minute": "POST/DELETE requests allowed in any rate_window (server: 60;"
        " 0 = no limit)",
        "reads_per_minute": "GET requests allowed in any rate_window (server: 600; 0 = no limit)",
        "rate_window": "seconds the two limits count in (server: 60); shared by all processes",
        "max_queued": "at most this many tasks submitted and not yet started, across every worker"
        " (server: 500; 0 = no limit of stdq's own)",
    }

    # -- HTTP ---------------------------------------------------------------------
    def http_auth(self) -> Any:
        from stdq import http

        token = self.config.secret("api_key")
        if not token:
            return None
        cached = getattr(self, "_auth", None)
        if cached is None or cached[0] != (token, self.url):  # made once: each job's client uses it
            cached = ((token, self.url),
                      http.make_host_auth(self.url, headers={"Authorization": f"Token {token}"}))
            self._auth = cached
        return cached[1]

    def rate_limiter(self, sleep, on_wait=None, database=None):
        """The limiter shared by every process using this data directory and server; it uses
        DATABASE (the job's own connection) when given, else opens its own."""
        from stdq.limiter import RateLimiter, ReadWriteLimiter

        values = self.config.values
        origin = _origin(self.url)
        scope = f"atlas:{origin[0]}://{origin[1]}:{origin[2]}"
        window = float(values["rate_window"])
        data_dir = database if database is not None else self.settings.data_dir
        writes = RateLimiter(
            data_dir, scope + ":write", int(values["writes_per_minute"]), window, sleep=sleep
        )
        reads = RateLimiter(
            data_dir, scope + ":read", int(values["reads_per_minute"]), window, sleep=sleep
        )
        return ReadWriteLimiter(
            writes, reads, applies_to=lambda url: _origin(url) == origin, on_wait=on_wait
        )

    def make_client(self, context: QueryContext, *, cancellable: bool = True) -> Client:
        """The job's client: token for the ATLAS origin only, the shared rate limiter."""
        from stdq import http
        from stdq.limiter import settle_on_answer

        sleep = context.sleep if cancellable else time.sleep
        limiter = self.rate_limiter(
            sleep,
            on_wait=lambda kind, s: context.event(
                "throttle", f"waited {s:.1f} s for the shared ATLAS {kind} rate limit"
            ),
            database=context.store.db,
        )
        client = http.make_client(
            self.name,
            self.settings.http,
            auth=self.http_auth(),
            secrets=self.config.secret_values(),
            sleep=sleep,
            before_request=limiter.before_request,
            on_retry=context.report_retry,
        )
        settle_on_answer(client, limiter)  # a slot counts from its answer's arrival
        setattr(client, "atlas_limiter", limiter)  # noqa: B010 (_before_submit takes its slot)
        return client

    def _check(self, response: httpx.Response) -> None:
        """401/403 -> ConfigError (exit 3) without the token; other errors -> QueryFailed."""
        from stdq import http

        if response.status_code in (401, 403):
            detail = http.redact(error_detail(response), self.config.secret_values())
            raise ConfigError(
                f"atlas: the server refused the credentials (HTTP {response.status_code}:"
                f" {detail}); check STDQ_ATLAS_API_KEY / ATLAS_FORCED_PHOTOMETRY_API_KEY, or"
                " get a new token with: stdq config atlas-login"
            )
        http.check_response(response, self.name, self.config.secret_values())

    def probe(self, client: Client) -> str:
        """stdq doctor: the first page of the task list (one task), JSON. Without a token
        ATLAS's JSON refusal shows it answers (the credentials line says the rest)."""
        from stdq.services.base import probe_status

        response = client.get(f"{self.url}/queue/", params={"pagesize": 1}, headers=JSON_HEADERS)
        self._expect(response, "the task list", "JSON")
        if response.status_code in (401, 403) and not self.config.secret("api_key"):
            return f"HTTP {response.status_code} without a token (JSON): ATLAS answers"
        probe_status(response, self.name, client.secrets)
        data = self._json(response, "the task list")
        if not isinstance(data.get("results"), list):
            raise QueryFailed("atlas: the task list has no results list")
        from stdq.records import counted

        return f"HTTP {response.status_code}, the task list (JSON, {counted(data.get('count'), 'task')})"

    # -- the query ----------------------------------------------------------------
    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        if not self.config.secret("api_key"):
            # the whole advice in the message: a job keeps its error's message only
            raise ConfigError(
                "atlas: no API token configured; set STDQ_ATLAS_API_KEY or"
                " ATLAS_FORCED_PHOTOMETRY_API_KEY, or run: stdq config atlas-login"
            )
        cp = context.checkpoint
        if cp.get("downloaded"):
            product = context.new_product(target, params)
            if product.raw_files:
                if not cp.get("deleted"):
                    self._delete_task(context, product)
                return [product]
        seen = None
        try:
            if not cp.get("task_url"):
                self._before_submit(context)
                seen = self._submit(target, params, context)
            task = self._poll(context, seen)
            return self._finish(task, target, params, context)
        finally:
            if not context.checkpoint.get("task_url") or context.checkpoint.get("downloaded"):
                self._give_back_slot(context)  # never submitted, lost, or done

    # -- account limits (docs/settings.md, [services.atlas]) --------------------------------
    def _scope(self) -> str:
        origin = _origin(self.url)
        return f"atlas:{origin[0]}://{origin[1]}:{origin[2]}"

    def _slots(self, context: QueryContext) -> Any:
        from stdq.slots import SlotPool

        limit = min(500, int(self.config.values["max_queued"]))
        return SlotPool(context.store.db, self._scope() + ":queued", limit)

    def _give_back_slot(self, context: QueryContext) -> None:
        if context.job_id is None or context.checkpoint.get("slot_given_back"):
            return
        try:
            self._slots(context).give_back(int(context.job_id))
        except StdqError:  # a read-only or busy database: the next take frees it
            return

    def _before_submit(self, context: QueryContext) -> None:
        """Wait (in-process) or postpone (a worker's job) until a submission may go: fewer than
        max_queued of the account's tasks unstarted, and (a worker's job) its write slot taken.

        A worker's job takes a write slot that is free now (the check and the taking in one
        transaction, right before the POST, which uses it: :meth:`stdq.limiter.RateLimiter.
        take_now`). When none is, it waits in line, first come first served: with A
        submissions of the account before it (lower job ids, not yet on their way), its turn
        is when the (A+1)-th next write slot frees (:meth:`stdq.limiter.RateLimiter.turns`). A
        turn more than TURN_HORIZON away postpones the job -- and gives every job in line its
        own turn, in one transaction -- to come back TURN_LEAD before it; a nearer one is
        slept for in the thread, then the slot is taken (or the turn counted again). An
        in-process query waits in the HTTP client's limiter."""
        from stdq.slots import Postponed

        look = max(0.05, float(self.config.values["poll_interval"]))
        while context.job_id is not None and not self._slots(context).take(int(context.job_id)):
            limit = min(500, int(self.config.values["max_queued"]))
            why = f"atlas: {limit} ATLAS tasks of this account are waiting to start (max_queued)"
            if context.may_postpone:
                raise Postponed(why, retry_after=look)
            context.progress(why, wait_until=context.clock() + look)
            context.sleep(look)
            context.check_cancelled()
        self._write_turn(context, take=False)

    def _write_turn(self, context: QueryContext, *, take: bool) -> None:
        """A worker's job: postpone it (its turn over TURN_HORIZON away) or sleep until its turn;
        with TAKE, also take the write slot (the POST then uses it). Without TAKE, return as
        soon as a slot is free or the turn is near (the slot is taken right before the POST,
        so nothing is written between its taking and the send)."""
        from stdq.slots import Postponed

        while True:
            context.check_cancelled()
            limiter = getattr(context.client, "atlas_limiter", None)
            if not context.may_postpone or context.job_id is None or limiter is None:
                return
            writes = limiter.writes
            if writes.limit <= 0 or (writes.take_now() if take else writes.free() > 0):
                return
            from stdq.slots import postpone_line, submissions_ahead

            database = context.store.db
            turn_at = writes.turns()
            ahead = submissions_ahead(database, self.name, int(context.job_id), sending=SUBMIT_SLOT)
            start = turn_at(ahead) - writes.now()
            if start > TURN_HORIZON:
                postpone_line(database, self.name, turn_at, TURN_LEAD, sending=SUBMIT_SLOT)
                raise Postponed(
                    f"atlas: the ATLAS write budget is used up; {ahead} submission(s) before"
                    f" this one; its turn in {start:.1f} s",
                    retry_after=start - TURN_LEAD,
                )
            if not take:
                return
            context.sleep(max(0.01, start))  # its own turn, not with every waiter for the next

    def _delete_or_defer(self, context: QueryContext, product: DataProduct | None) -> None:
        """DELETE a finished task now when the write budget has room after every waiting
        submission; else keep its URL in deferred_deletes for an idle worker."""
        from stdq.slots import DeferredDeletes, waiting_submissions

        url = context.checkpoint.get("task_url")
        if not url:
            return
        limiter = self.rate_limiter(time.sleep, database=context.store.db)
        try:
            database = context.store.db
            # a write free now beyond every waiting submission: the job never waits for it
            room = limiter.writes.free() > waiting_submissions(database, self.name)
        finally:
            limiter.close()
        if room:
            self._delete_task(context, product)
            self.drain_deferred(context.store.db, client=context.client, most=5)
            return
        DeferredDeletes(context.store.db, self._scope()).add(str(url), context.job_id)
        context.save_checkpoint(deleted="deferred")
        context.event(
            "task",
            f"ATLAS task {context.checkpoint.get('task_id')} finished: its DELETE waits until the"
            " write budget has room (deferred_deletes)",
        )
        if product is not None:
            product.notes["remote_task_deleted"] = "deferred"

    def drain_deferred(self, database: Any, *, client: Client | None = None, most: int = 1000) -> int:
        """DELETE deferred finished tasks while the write budget has room now after every
        waiting submission (a thread never waits in the limiter for one: an idle worker asks
        again later); returns how many were deleted."""
        from stdq import http
        from stdq.limiter import settle_on_answer
        from stdq.slots import DeferredDeletes, waiting_submissions

        deferred = DeferredDeletes(database, self._scope())
        if not deferred.pending():
            return 0
        limiter = self.rate_limiter(time.sleep, database=database)
        own = client is None
        if client is None:
            client = http.make_client(
                self.name, self.settings.http, auth=self.http_auth(),
                secrets=self.config.secret_values(), before_request=limiter.before_request,
            )
            settle_on_answer(client, limiter)

        def room() -> bool:  # a write free now beyond every waiting submission: never a wait
            return limiter.writes.free() > waiting_submissions(database, self.name)

        def delete(url: str) -> bool:
            assert client is not None
            response = client.delete(url, headers=JSON_HEADERS)
            return response.status_code < 400 or response.status_code == 404

        try:
            return deferred.drain(delete, room, most=most)
        finally:
            limiter.close()
            if own:
                client.close()

    def _submit(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> dict[str, Any]:
        """POST the task once (stdq.remote.create_once) and checkpoint its URL.

        The comment "stdq job N <key>" carries the idempotency key saved before the
        send: after a lost answer, the task is looked for in the user's task list."""
        from stdq import http, remote

        client = context.client
        queue_url = f"{self.url}/queue/"

        def send(key: str) -> dict[str, Any]:
            context.check_cancelled()
            context.progress("submitting the ATLAS task")
            self._write_turn(context, take=True)  # nothing sent: a Postponed here is safe
            form = task_form(target, params, f"stdq job {context.job_id or 0} {key}")
            response = client.request(
                "POST", queue_url, policy=_submit_policy(), data=form, headers=JSON_HEADERS
            )
            if response.status_code < 300:
                try:
                    self._expect(response, "the task submission", "JSON")
                except TemporaryFailure as exc:
                    # an answer that is not the server's: the task may have been made
                    raise http.AmbiguousSend(exc.message) from None
            if response.status_code == 201:
                try:
                    return self._json(response, "the new task")
                except QueryFailed:
                    # created, but its answer is unreadable: look for it
                    raise http.AmbiguousSend(
                        "atlas: the answer to the task submission is not the task (HTTP 201)"
                    ) from None
            if is_queue_full(response):
                raise TemporaryFailure(
                    f"atlas: the ATLAS queue is full for this account"
                    f" ({error_detail(response)}); try again later, when some of your"
                    " ATLAS tasks have run",
                    retry_after=QUEUE_FULL_RETRY,
                )
            self._check(response)
            raise QueryFailed(
                f"atlas: unexpected HTTP {response.status_code} to the task submission"
            )

        look_every = max(0.05, float(self.config.values["poll_interval"]))
        task, found = remote.create_once(
            context,
            slot=SUBMIT_SLOT,
            send=send,
            find=lambda key: self._find_own_task(client, key),
            service=self.name,
            what="the ATLAS task",
            grace=min(CREATE_GRACE_MAX, CREATE_GRACE_POLLS * look_every),
            look_every=look_every,
        )
        self._adopt(task, context, "found on the server, created by an earlier send" if found
                    else "submitted")
        return task

    def _adopt(self, task: dict[str, Any], context: QueryContext, how: str) -> None:
        """Checkpoint the task's URL and id: from now on this job only polls it."""
        try:
            task_id = int(task["id"])
        except (KeyError, TypeError, ValueError):
            raise QueryFailed("atlas: the server's answer to the submission has no task id") from None
        url = str(task.get("url") or "")
        if not url or _origin(url) != _origin(self.url):
            url = f"{self.url}/queue/{task_id}/"  # keep the token on the configured origin
        context.save_checkpoint(task_url=url, task_id=task_id, submitted_at=context.clock())
        context.event("task", f"ATLAS task {task_id} {how}: {url}")

    def _find_own_task(self, client: Client, key: str) -> dict[str, Any] | None:
        """The user's task whose comment carries KEY, or None when it is not there.

        The list is read newest first (``ordering=-id``) and its ``next`` pages
        (absolute URLs with a cursor) are followed, only on the service's own
        origin, through the newest MAX_LIST_PAGES x LIST_PAGESIZE tasks.
        TemporaryFailure when the list could not be read (then nothing may be sent:
        the task may exist); QueryFailed for a ``next`` page on another origin."""
        from stdq import http

        url: str | None = f"{self.url}/queue/"
        params: dict[str, Any] | None = {"pagesize": LIST_PAGESIZE, "ordering": "-id"}
        for page in range(1, MAX_LIST_PAGES + 1):
            assert url is not None
            response = client.get(url, params=params, headers=JSON_HEADERS)
            if response.status_code != 200:
                self._check(response)
                raise TemporaryFailure(
                    f"atlas: HTTP {response.status_code} reading the task list; try again later"
                )
            self._expect(response, "the task list" if page == 1 else f"page {page} of the task list",
                         "JSON")
            try:
                data = response.json()
            except ValueError:
                raise TemporaryFailure("atlas: the task list is not JSON; try again later") from None
            results = data.get("results", []) if isinstance(data, dict) else data
            if not isinstance(results, list):
                raise TemporaryFailure("atlas: the task list has no results; try again later")
            for task in results:
                comment = str(task.get("comment") or "") if isinstance(task, dict) else ""
                if comment.split()[-1:] == [key]:
                    return task if isinstance(task, dict) else None
            following = data.get("next") if isinstance(data, dict) else None
            if not following:
                return None
            if not isinstance(following, str):
                raise TemporaryFailure("atlas: the task list's next page is not a URL; try again later")
            if not http.same_origin(following, self.url):
                shown = http.redact_url(str(following), self.config.secret_values())
                raise QueryFailed(
                    f"atlas: the task list names its next page on another origin ({shown});"
                    f" stdq reads the list only from the service's own origin ({self.url})",
                    hint="check the atlas url setting (http or https, host): stdq services show atlas",
                )
            url, params = following, None  # the cursor is in the URL
        import logging

        logging.getLogger("stdq.atlas").info(
            "atlas: key %s not among the newest %d tasks", key, MAX_LIST_PAGES * LIST_PAGESIZE
        )
        return None

    def _expect(self, response: httpx.Response, step: str, expected: str) -> None:
        """expect_format for this service (the token masked in the quoted line)."""
        from stdq import http

        http.expect_format(response, self.name, step, expected, secrets=self.config.secret_values())

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise QueryFailed(f"atlas: {what} is not the expected JSON object")
        return data

    def _poll(self, context: QueryContext, seen: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET the task until it has finished; returns its final JSON.

        SEEN: the task as the submission answered it (the first look: the first
        GET waits one interval); None when resuming (the first GET is at once).
        A worker's job does not wait in its thread between two polls: it is parked
        (:class:`stdq.slots.Waiting`) with what the polls saw (ETag, the task, the
        queue's fall) in its checkpoint, and goes on from there when the next poll is due."""
        client = context.client
        cp = context.checkpoint
        url, task_id = cp["task_url"], cp.get("task_id")
        values = self.config.values
        first = max(0.05, float(values["poll_interval"]))
        longest = max(first, float(values["max_poll_interval"]))
        timeout = float(values["task_timeout"])
        started = float(cp.get("submitted_at") or context.clock())
        saved = cp.get("poll")
        kept: dict[str, Any] = saved if isinstance(saved, dict) else {}
        waits = QueueWaits.restored(first, longest, kept.get("waits"))
        etag: str | None = kept.get("etag") if isinstance(kept.get("etag"), str) else None
        task: dict[str, Any] | None = kept.get("task") if isinstance(kept.get("task"), dict) else None
        failures = int(kept.get("failures") or 0)

        def pause(seconds: float, why: str) -> None:
            """Wait SECONDS before the next poll: parked (a worker's job, when its thread can
            serve another job: stdq.slots.park_rather_than_sleep) or in this thread."""
            if context.may_postpone and context.job_id is not None and self._park(context, seconds):
                from stdq.slots import Waiting

                context.save_checkpoint(poll={"etag": etag, "task": task, "failures": failures,
                                              "waits": waits.state()})
                raise Waiting(f"atlas: {why}; polling again", retry_after=seconds)
            context.sleep(seconds)

        if seen is not None and not seen.get("finishtimestamp"):
            pause(self._next_wait(seen, waits, task_id, context), f"ATLAS task {task_id} submitted")
        while True:
            context.check_cancelled()
            headers = dict(JSON_HEADERS)
            if etag and task is not None:
                headers["If-None-Match"] = etag
            try:
                response = client.get(url, headers=headers)
                if response.status_code == 200:
                    self._expect(response, f"the poll of ATLAS task {task_id}", "JSON")
            except TemporaryFailure as exc:
                # the remote task lives on: keep this job (and its claim) and poll again
                failures += 1
                if failures > 5:
                    raise
                delay = max(first, exc.retry_after or 0.0, min(longest, 30.0))
                context.event("retry", f"{exc.message}; polling again in {delay:.0f} s")
                context.progress(f"atlas: polling ATLAS task {task_id} failed ({failures}/5);"
                                 " polling again", wait_until=context.clock() + delay)
                pause(delay, f"polling ATLAS task {task_id} failed ({failures}/5)")
                continue
            failures = 0
            if response.status_code == 304 and task is not None:
                pass
            elif response.status_code == 200:
                task = self._json(response, f"ATLAS task {task_id}")
                etag = response.headers.get("ETag")
                if task.get("starttimestamp") or task.get("finishtimestamp"):
                    self._give_back_slot(context)  # started: no longer one of the max_queued
                    context.checkpoint["slot_given_back"] = True
            elif response.status_code == 404:
                how = task_gone(response)
                if how is None:  # not one of the server's two 404s (a proxy's page): keep the task
                    from stdq import http

                    raise TemporaryFailure(
                        f"atlas: the poll of ATLAS task {task_id} answered HTTP 404 with a page"
                        f" that is not the server's: {http.first_line(response.text)!r}; the task"
                        " is kept; try again later"
                    )
                context.save_checkpoint(task_url=None, task_id=None, lost_task=url, poll=None,
                                        **{SUBMIT_SLOT: None})
                raise QueryFailed(
                    f"atlas: ATLAS task {task_id} no longer exists on the server ({how});"
                    f" nothing was downloaded; `stdq jobs retry {context.job_id}` submits the"
                    " query again"
                )
            else:
                self._check(response)
                raise QueryFailed(f"atlas: unexpected HTTP {response.status_code} polling task {task_id}")
            if task.get("finishtimestamp"):
                context.checkpoint.pop("poll", None)  # saved with the next checkpoint
                return task
            if context.clock() - started > timeout:
                self._delete_task(context, None)
                raise QueryFailed(
                    f"atlas: ATLAS task {task_id} did not finish within {timeout / 3600:.3g} h"
                    " (task_timeout); it was deleted"
                )
            where = "running" if task.get("starttimestamp") else "queued"
            pause(self._next_wait(task, waits, task_id, context), f"ATLAS task {task_id} {where}")

    @staticmethod
    def _park(context: QueryContext, seconds: float) -> bool:
        from stdq.jobs.worker import spare_threads
        from stdq.slots import park_rather_than_sleep

        return park_rather_than_sleep(context.store.db, seconds, spare_threads())

    @staticmethod
    def _next_wait(
        task: dict[str, Any], waits: QueueWaits, task_id: Any, context: QueryContext
    ) -> float:
        """Report the task's state as the job's progress; the wait before the next poll."""
        now = context.clock()
        if task.get("starttimestamp"):
            context.progress(f"ATLAS task {task_id} running")
            return waits.running()
        position = task.get("queuepos")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            position = None
        where = f", position {position}" if position is not None else ""
        context.progress(f"ATLAS task {task_id} queued{where}")
        return waits.queued(now, position)

    def _finish(
        self, task: dict[str, Any], target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        """Check error_msg, download the result, keep it, delete the remote task."""
        from stdq import http

        client = context.client
        task_id = context.checkpoint.get("task_id")
        error = str(task.get("error_msg") or "").strip()
        if error:
            if error.lower().startswith(NO_DATA_TEXT.lower()):
                self._delete_task(context, None)
                raise NoData(
                    f"ATLAS has no photometry at this position in {mjd_range_text(params)}"
                    f" (the server said {error!r})"
                )
            raise QueryFailed(
                f"atlas: ATLAS task {task_id} failed on the server: {error} (the task is kept"
                f" there: {context.checkpoint.get('task_url')})"
            )
        result_url = task.get("result_url")
        if not result_url:
            raise QueryFailed(f"atlas: ATLAS task {task_id} finished without a result_url")
        if _origin(str(result_url)) != _origin(self.url):
            raise QueryFailed(
                f"atlas: ATLAS task {task_id} names its result on another origin"
                f" ({http.redact_url(str(result_url), self.config.secret_values())}); stdq"
                f" fetches results only from the service's own origin ({self.url}); nothing"
                " was fetched"
            )
        context.progress(f"ATLAS task {task_id} finished; downloading the result")
        response = client.get(str(result_url))
        if response.status_code != 200:
            self._check(response)
            raise QueryFailed(f"atlas: HTTP {response.status_code} downloading the result")
        self._expect(response, f"the result download of ATLAS task {task_id}",
                     "an ATLAS result file")
        data = response.content
        if not looks_like_result(data):
            raise TemporaryFailure(
                f"atlas: the result of ATLAS task {task_id} is not an ATLAS result (no ATLAS"
                f" header line: {http.first_line(data.decode('utf-8', 'replace'))!r});"
                " try again later"
            )
        product = context.new_product(target, params)
        from urllib.parse import urlsplit

        name = urlsplit(str(result_url)).path.rsplit("/", 1)[-1]
        if not re.fullmatch(r"[A-Za-z0-9_.-]+\.txt", name or ""):
            name = f"job{int(task_id or 0):05d}.txt"
        product.add_raw(
            name,
            data,
            url=http.redact_url(str(result_url), self.config.secret_values()),
            content_type=response.headers.get("Content-Type"),
        )
        product.notes.update(self._task_notes(task, context))
        context.save_checkpoint(downloaded=True)
        self._delete_or_defer(context, product)
        return [product]

    def _task_notes(self, task: dict[str, Any], context: QueryContext) -> dict[str, Any]:
        keep = (
            "id", "url", "timestamp", "starttimestamp", "finishtimestamp", "mjd_min", "mjd_max",
            "use_reduced", "radec_epoch_year", "propermotion_ra", "propermotion_dec", "waittime",
            "runtime", "attempt_count",
        )
        info = {k: task.get(k) for k in keep if k in task}
        info["url"] = context.checkpoint.get("task_url")
        import json

        return {"atlas_task": json.loads(json.dumps(info, default=str))}

    def _delete_task(self, context: QueryContext, product: DataProduct | None) -> bool:
        """DELETE the remote task (best effort); note it in the checkpoint and product."""
        cp = context.checkpoint
        url, task_id = cp.get("task_url"), cp.get("task_id")
        if not url:
            return False
        context.progress(f"deleting ATLAS task {task_id}")
        try:
            response = context.client.delete(url, headers=JSON_HEADERS)
            ok = response.status_code < 400 or response.status_code == 404
            detail = f"HTTP {response.status_code}"
        except TemporaryFailure as exc:
            ok, detail = False, exc.message
        if ok:
            context.event("task", f"ATLAS task {task_id} deleted on the server")
        else:
            context.event(
                "task", f"could not delete ATLAS task {task_id} ({detail}); the data are kept"
            )
        context.save_checkpoint(deleted=ok)
        if product is not None:
            product.notes["remote_task_deleted"] = ok
        return ok

    def cancel_remote(self, checkpoint: dict[str, Any], context: QueryContext) -> None:
        """Delete the remote task of a cancelled job (its own client: not cancellable)."""
        from stdq import remote

        url = checkpoint.get("task_url")
        if checkpoint.get("deleted"):
            return
        client = self.make_client(context, cancellable=False)
        try:
            key = remote.pending_key(context, SUBMIT_SLOT) if not url else None
            if key:  # cancelled while a submission's answer was unknown: the task may exist
                task = self._find_own_task(client, key)
                if task is not None:
                    self._adopt(task, context, "found on the server (cancelled job)")
                    url = context.checkpoint.get("task_url")
            if not url:
                return
            response = client.delete(url, headers=JSON_HEADERS)
        finally:
            client.close()
        task_id = context.checkpoint.get("task_id", checkpoint.get("task_id"))
        if response.status_code < 400 or response.status_code == 404:
            context.event("task", f"ATLAS task {task_id} deleted on the server")
            context.save_checkpoint(deleted=True)
        else:
            context.event(
                "task",
                f"could not delete ATLAS task {task_id} (HTTP {response.status_code})",
            )


# -- stdq config atlas-login (the command: stdq.services.atlas_login) ---------------------------------------------------------------


def obtain_token(settings: Settings, username: str, password: str) -> str:
    """Exchange USERNAME and PASSWORD for an API token at the server's api-token-auth/."""
    from stdq import http
    from stdq.registry import registry_for

    config = registry_for(settings).service_config("atlas")
    url = config.url.rstrip("/") + "/api-token-auth/"
    hidden = [password, *config.secret_values()]
    client = http.make_client("atlas", settings.http, secrets=hidden)
    # the body carries the password: sent once, never to another origin on a redirect
    policy = http.RequestPolicy(repeatable=False, secret_body=True)
    try:
        response = client.request(
            "POST", url, policy=policy, data={"username": username, "password": password},
            headers=JSON_HEADERS,
        )
    finally:
        client.close()
    if not http.same_origin(str(response.url), config.url):
        raise QueryFailed(
            f"atlas: the login was answered from another origin"
            f" ({http.redact_url(str(response.url), hidden)}); its token is not stored",
            hint=f"check the atlas url setting ({config.url})",
        )
    if response.status_code == 400:
        detail = http.redact(error_detail(response), hidden)
        raise ConfigError(
            f"atlas: the server refused the username or password ({detail})",
            hint=f"check them at {config.url.rstrip('/')}/ (log in on the web page)",
        )
    http.check_response(response, "atlas", hidden)
    http.expect_format(response, "atlas", "the login", "JSON", secrets=hidden)
    try:
        token = response.json().get("token")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token.strip():
        raise QueryFailed("atlas: the server's answer to the login holds no token")
    return token.strip()


def save_token(settings: Settings, token: str) -> None:
    """Store TOKEN as [services.atlas] api_key in the settings file (mode 0600)."""
    from stdq.config import set_service_value

    set_service_value(settings.path, "atlas", "api_key", token)


def env_token_source() -> str | None:
    """The environment variable that would override a token in the file, if one is set."""
    import os

    for var in ("STDQ_ATLAS_API_KEY", "ATLAS_FORCED_PHOTOMETRY_API_KEY"):
        if os.environ.get(var):
            return var
    return None


def mjd_range_text(params: dict[str, Any]) -> str:
    """'MJD a..b' of cleaned PARAMS, for messages."""
    lo = params.get("mjd_min", DEFAULT_MJD_MIN)
    hi = params.get("mjd_max")
    return f"MJD {lo:g}..{hi:g}" if hi is not None else f"MJD {lo:g}..now"
