"""Emulator of the ATLAS forced photometry server (docs/wire-formats.md section 1).

Mounted at ``/atlas/forcedphot``: the service URL is ``<server>/atlas/forcedphot``.

- ``POST api-token-auth/`` (form username, password) -> ``{"token": ...}``; the
  test account is TEST_USERNAME / TEST_PASSWORD with token TEST_TOKEN.
- Token (or Basic) authentication; a bad token is 401 on any call; writes need a
  user; only the owner may DELETE.
- ``POST queue/`` -> 201 with the full task (every field of docs/wire-formats.md 1.3,
  in order) and a ``Location`` header; 400 for bad fields; the queue-limit
  refusal ``{"non_field_errors": "ERROR: You have too many queued tasks (...)."}``
  when the user has ``max_user_tasks`` unstarted tasks.
- ``GET queue/<id>/`` with an ``ETag``; ``If-None-Match`` with it -> 304. A task
  waits ``queue_seconds`` in the queue (its ``queuepos`` counting down), runs
  ``run_seconds``, then has ``finishtimestamp`` and ``result_url``
  (``static/results/job%05d.txt``) or ``error_msg`` "No data returned" (the
  "Empty Field" target, or nothing in the time range). ``hold = True`` keeps
  every task queued. ``archive(id)`` archives a task as a DELETE of a finished one does.
  ``clock`` (default None: ``time.time``) is the emulator's time source; each
  ``Task`` keeps its ``created``/``started``/``finished`` times (``timeline(id)``);
  the server's request log (``FakeServer.requests``) has the time of each request.
- ``DELETE queue/<id>/`` -> 204 with an empty body. As the server's ``Task.delete``
  does it: a FINISHED task is only archived (its result file goes; a later GET is a
  404 whose body is the plain text "Page not found", served as text/html; a second
  DELETE answers 204 again); an UNFINISHED task is really removed (a later GET or
  DELETE is the JSON 404 ``{"detail": "No Task matches the given query."}``).
- ``GET queue/`` lists the user's own non-archived tasks with the server's
  CursorPagination (pagination.py): ``pagesize`` (default 6, at most 100),
  ``ordering`` ``-id`` (default) or ``id``, ``started=true|false``, and the page
  ``{"next", "previous", "pagefirsttaskposition", "taskcount", "results"}`` whose
  ``next``/``previous`` are absolute URLs (the request's own, ``cursor`` replaced)
  holding a base64 cursor (``o`` offset, ``r`` reverse, ``p`` position = a task id);
  a bad cursor is the JSON 404 ``{"detail": "Invalid cursor"}``. ``list_origin``
  makes the links name another origin (a misconfigured proxy). The list has an
  ``ETag`` for the user's whole task list; ``If-None-Match`` with it -> 304.
- Throttling per user, as DRF does it: ``write_limit`` writes and ``read_limit``
  reads in any ``throttle_window`` seconds; the 429 says "Request was throttled.
  Expected available in N seconds." (singular for 1) with ``Retry-After: N``.

Result files are generated deterministically from the target (stdq.testing.sky)
in the exact format of the real files: c/o/w filters, units 01a..04a and 05r,
four exposures a night, negative fluxes with negative m, some err != 0, some
large chi/N and duJy.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

TEST_USERNAME = "stdq-test"
TEST_PASSWORD = "correct horse battery staple"
TEST_TOKEN = hashlib.sha1(b"stdq atlas emulator test token").hexdigest()
OTHER_USERNAME = "someone-else"
OTHER_PASSWORD = "another password"
OTHER_TOKEN = hashlib.sha1(b"stdq atlas emulator other token").hexdigest()

HEADER = (
    "###MJD          m      dm   uJy   duJy F err chi/N     RA       Dec        x        y     maj"
    "  min   phi  apfit mag5sig Sky   Obs"
)
ROW_FORMAT = (
    "{mjd:.6f} {m:7.3f} {dm:6.3f} {ujy:5d} {dujy:4d} {f} {err:2d} {chi:6.2f} {ra:9.5f} {dec:9.5f}"
    " {x:8.2f} {y:8.2f} {maj:4.2f} {min:4.2f} {phi:5.1f} {apfit:6.3f} {mag5sig:5.2f} {sky:5.2f} {obs}"
)
# unit -> east longitude (deg) of the site: the Obs night is the local date at the night's end
UNITS = {"01a": -155.58, "02a": -156.26, "03a": 20.81, "04a": -70.77, "05r": -16.51}
UNIT_ORDER = ("01a", "02a", "03a", "04a", "05r")
TASK_FIELDS = (
    "url", "id", "user_id", "username", "timestamp", "mpc_name", "ra", "dec", "mjd_min", "mjd_max",
    "radec_epoch_year", "propermotion_ra", "propermotion_dec", "use_reduced", "finished",
    "result_url", "comment", "send_email", "callback_url", "starttimestamp", "finishtimestamp",
    "error_msg", "previewimage_url", "parent_task_id", "parent_task_url", "request_type",
    "pdfplot_url", "queuepos", "imagerequest_task_id", "imagerequest_url",
    "imagerequest_finished", "result_imagestack_url", "result_imagezip_url",
    "userqueuedtasks_on_submit", "waittime", "runtime", "attempt_count",
)
NO_DATA = "No data returned"
SN_2023IXF_EXPLOSION = 60082.8


def encode_cursor(offset: int, reverse: bool, position: int | None) -> str:
    """DRF CursorPagination.encode_cursor: base64 of the query string o=, r=, p=."""
    tokens: dict[str, str] = {}
    if offset:
        tokens["o"] = str(offset)
    if reverse:
        tokens["r"] = "1"
    if position is not None:
        tokens["p"] = str(position)
    return base64.b64encode(urlencode(tokens).encode("ascii")).decode("ascii")


def decode_cursor(text: str | None) -> tuple[int, bool, int | None]:
    """(offset, reverse, position) of a cursor (ValueError for a bad one; None: the first page)."""
    if not text:
        return 0, False, None
    try:
        tokens = dict(parse_qsl(base64.b64decode(text.encode("ascii"), validate=True).decode("ascii"),
                                keep_blank_values=True))
        offset = int(tokens.get("o", 0))
        reverse = bool(int(tokens.get("r", 0)))
        position = int(tokens["p"]) if "p" in tokens else None
    except (ValueError, UnicodeError, KeyError) as exc:
        raise ValueError("Invalid cursor") from exc
    if offset < 0:
        raise ValueError("Invalid cursor")
    return offset, reverse, position


def iso(ts: float | None, micro: bool = True) -> str | None:
    """DRF's rendering of a UTC datetime (``...Z``)."""
    if ts is None:
        return None
    when = datetime.fromtimestamp(ts, UTC)
    if not micro:
        when = when.replace(microsecond=0)
    return when.isoformat().replace("+00:00", "Z")


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


def model_flux(ra: float, dec: float, mjd: float, band: str, reduced: bool) -> float:
    """The emulator's sky: true flux in uJy of whatever is at (RA, Dec) at MJD."""
    target, host = None, 300.0
    for obj in sky.TARGETS:
        if sky.separation_deg(ra, dec, obj.ra, obj.dec) * 3600 < 60:
            target = obj.name
    flux = 0.0
    if target == "SN 2023ixf":
        host = 2500.0
        t = mjd - SN_2023IXF_EXPLOSION
        if t > 0:
            scale = {"c": 1.25, "o": 1.0, "w": 1.1}.get(band, 1.0)
            flux = scale * 30000.0 * (1 - math.exp(-t / 3.0)) * math.exp(-t / 60.0)
    elif target == "NGC 3642":
        host = 4000.0
        flux = 60.0 * math.sin(2 * math.pi * (mjd - 60000.0) / 97.0)
    elif target == "M31":
        host = 90000.0
    return flux + (host if reduced else 0.0)


def has_data(ra: float, dec: float) -> bool:
    """False for the "Empty Field" (no survey has data there)."""
    empty = sky.find("Empty Field")
    return not (empty and sky.separation_deg(ra, dec, empty.ra, empty.dec) * 3600 < 60)


def result_rows(
    ra: float,
    dec: float,
    mjd_min: float | None,
    mjd_max: float | None,
    reduced: bool,
    *,
    first_night: int = 60000,
    last_night: int = 60300,
    cadence: int = 3,
    recent_nights: int = 0,
    anchor_mjd: int | None = None,
    recent_first: int | None = None,
) -> list[str]:
    """The rows of a result file (without the header), deterministic, sorted by MJD.

    The history: every CADENCE-th night FIRST_NIGHT..LAST_NIGHT (the hand-checked values);
    then every night from RECENT_FIRST (default: RECENT_NIGHTS nights before) to ANCHOR_MJD.
    """
    if not has_data(ra, dec):
        return []
    rows: list[tuple[float, str]] = []
    counter = 0
    # (index, night, base of the row counter): the history counts rows in order; a recent
    # night's rows depend on that night only (the same rows whatever nights follow)
    plan: list[tuple[int, int, int | None]] = [
        (i, night, None) for i, night in enumerate(range(first_night, last_night + 1, cadence))
    ]
    if recent_nights > 0 and anchor_mjd is not None:
        first_recent = anchor_mjd - recent_nights + 1 if recent_first is None else recent_first
        plan += [(n, n, 4 * n) for n in range(max(first_recent, last_night + 1), anchor_mjd + 1)]
    for i, night, base in plan:
        unit = UNIT_ORDER[i % len(UNIT_ORDER)]
        phase = (i // len(UNIT_ORDER)) % 2
        band = ("w" if phase == 0 else "o") if unit == "05r" else ("o" if phase == 0 else "c")
        for k in range(4):
            rng = random.Random(_seed(round(ra, 5), round(dec, 5), night, k, reduced))
            local = night - 0.05 + 0.012 * k + rng.uniform(0, 0.002)
            mjd = round(local - UNITS[unit] / 360.0, 6)
            if (mjd_min is not None and mjd < mjd_min) or (mjd_max is not None and mjd > mjd_max):
                continue
            counter = counter + 1 if base is None else base + k + 1
            truth = model_flux(ra, dec, mjd, band, reduced)
            dujy = max(1, round(math.sqrt(14.0**2 + (0.03 * truth) ** 2)))
            err = 1 if counter % 23 == 5 else 0
            chi = rng.uniform(0.7, 3.0)
            if counter % 17 == 3:
                chi = rng.uniform(30.0, 60.0)
            if counter % 29 == 7:
                dujy = rng.randint(200, 400)
            measured = truth + rng.gauss(0.0, 1.0) * dujy
            ujy = round(measured)
            if abs(measured) < 0.05:
                m, dm = 0.0, 99.999
            else:
                m = math.copysign(23.9 - 2.5 * math.log10(abs(measured)), measured)
                dm = min(99.999, 1.0857 * dujy / abs(measured))
            obs = f"{unit}{night}{band}{(100 + 37 * i + 7 * k) % 10000:04d}{band}"
            line = ROW_FORMAT.format(
                mjd=mjd, m=m, dm=dm, ujy=ujy, dujy=dujy, f=band, err=err, chi=chi,
                ra=ra, dec=dec, x=rng.uniform(100, 10500), y=rng.uniform(100, 10500),
                maj=rng.uniform(1.8, 2.9), min=rng.uniform(1.7, 2.5), phi=rng.uniform(-89, 89),
                apfit=rng.uniform(-0.52, -0.35), mag5sig=rng.uniform(18.8, 19.8),
                sky=rng.uniform(19.3, 21.8), obs=obs,
            )
            rows.append((mjd, line))
    rows.sort(key=lambda r: r[0])
    return [line for _, line in rows]


def result_text(ra, dec, mjd_min, mjd_max, reduced, **kw: Any) -> str:
    """A whole result file: the header line and the rows (only the header when empty)."""
    return "\n".join([HEADER, *result_rows(ra, dec, mjd_min, mjd_max, reduced, **kw)]) + "\n"


@dataclass
class Task:
    id: int
    user: str
    created: float
    ra: float | None
    dec: float | None
    mjd_min: float | None
    mjd_max: float | None
    radec_epoch_year: str | None = None
    propermotion_ra: float | None = None
    propermotion_dec: float | None = None
    use_reduced: bool = False
    send_email: bool = True
    comment: str | None = None
    callback_url: str | None = None
    mpc_name: str | None = None
    userqueued_on_submit: int = 0
    started: float | None = None
    finished: float | None = None
    error_msg: str | None = None
    result: str | None = None
    archived: bool = False  # a finished task its owner deleted: kept, hidden, 404 "Page not found"
    removed: bool = False  # an unfinished task its owner deleted: gone (JSON 404)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def deleted(self) -> bool:
        """Whether its owner's DELETE was accepted (archived when finished, else removed)."""
        return self.archived or self.removed


class AtlasEmulator(sky.RecentNights, Emulator):
    """The ATLAS forced photometry server (see the module docstring)."""

    name = "atlas"
    service_name = "atlas"
    prefix = "/atlas/forcedphot"

    def __init__(self, *, anchor_mjd: int | None = None, recent_nights: int | None = None) -> None:
        super().__init__()
        self.users = {
            TEST_USERNAME: {"id": 7, "password": TEST_PASSWORD, "token": TEST_TOKEN},
            OTHER_USERNAME: {"id": 8, "password": OTHER_PASSWORD, "token": OTHER_TOKEN},
        }
        self.tasks: dict[int, Task] = {}
        self.next_id = 1001
        self.queue_seconds = 1.0
        self.run_seconds = 1.0
        self.queue_ahead = 3  # other users' tasks ahead of a new task, draining over queue_seconds
        self.hold = False  # keep every task queued
        self.write_limit = 60
        self.read_limit = 600
        self.throttle_window = 60.0
        self.max_user_tasks = 500
        self.queue_full_status = 400
        self.error_msg: str | None = None  # force this error_msg on every finishing task
        self.result_base: str | None = None  # serve result_url from another base URL
        self.list_origin: str | None = None  # the task list's next/previous links on this origin
        self.nights = {"first_night": 60000, "last_night": 60300, "cadence": 3}
        self.init_recent(recent_nights, anchor_mjd)  # data up to the present (sky.RecentNights)
        self.settings_overrides: dict[str, Any] = {}
        self._history: dict[tuple[str, str], list[float]] = {}
        self.lock = threading.RLock()
        # the emulator's time (unix seconds); tests inject a fake clock here
        self.clock: Callable[[], float] | None = None

    def now(self) -> float:
        return self.clock() if self.clock is not None else time.time()

    def result_file(
        self, ra: float, dec: float, mjd_min: float | None, mjd_max: float | None, reduced: bool
    ) -> str:
        """The result file this emulator makes now for a task of these fields."""
        return result_text(
            ra, dec, mjd_min, mjd_max, reduced, **self.nights,
            recent_nights=self.recent_nights, anchor_mjd=self.last_night(),
            recent_first=self.recent_first,
        )

    # -- settings for stdq -------------------------------------------------------------
    @property
    def demo_settings(self) -> dict[str, Any]:
        """What `stdq demo` adds to [services.atlas]: the test token and short polls."""
        return {"api_key": TEST_TOKEN, "poll_interval": 0.3, "max_poll_interval": 1.0}

    def service_settings_lines(self) -> list[str]:
        """Extra [services.atlas] lines of fakeserver.settings_toml (tests)."""
        values: dict[str, Any] = {
            "api_key": TEST_TOKEN, "poll_interval": 0.1, "max_poll_interval": 0.5,
            **self.settings_overrides,
        }
        return [f"{key} = {json.dumps(value)}" for key, value in values.items()]

    # -- helpers ----------------------------------------------------------------------
    def task_url(self, task_id: int) -> str:
        return f"{self.base_url}/queue/{task_id}/"

    def result_url(self, task_id: int) -> str:
        return f"{self.result_base or self.base_url}/static/results/job{task_id:05d}.txt"

    def archive(self, task_id: int) -> None:
        """What the owner's DELETE of a finished task does: hidden, its result file gone."""
        with self.lock:
            task = self.tasks[task_id]
            task.archived = True
            task.result = None

    def timeline(self, task_id: int) -> dict[str, Any]:
        """When task TASK_ID was created, started and finished (the emulator's clock)."""
        with self.lock:
            task = self.tasks[task_id]
            return {"created": task.created, "started": task.started, "finished": task.finished}

    def accepted_posts(self) -> list[Task]:
        with self.lock:
            return sorted(self.tasks.values(), key=lambda t: t.id)

    def _advance(self, now: float) -> None:
        """Start and finish tasks whose time has come (frozen once reached)."""
        for task in sorted(self.tasks.values(), key=lambda t: t.id):
            if task.removed or task.archived:
                continue
            if task.started is None and not self.hold and now >= task.created + self.queue_seconds:
                task.started = min(now, task.created + self.queue_seconds)
            if (
                task.started is not None
                and task.finished is None
                and now >= task.started + self.run_seconds
            ):
                task.finished = min(now, task.started + self.run_seconds)
                self._produce(task)

    def _produce(self, task: Task) -> None:
        if self.error_msg:
            task.error_msg = self.error_msg
            return
        if task.ra is None or task.dec is None:  # a task queued by MPC name: no file we can make
            task.error_msg = NO_DATA
            return
        text = self.result_file(task.ra, task.dec, task.mjd_min, task.mjd_max, task.use_reduced)
        task.result = text
        if text.count("\n") <= 1:
            task.error_msg = NO_DATA  # the file holds only its header

    def _queuepos(self, task: Task, now: float) -> int | None:
        if task.finished is not None:
            return None
        if task.started is not None:
            return 0
        ahead = sum(
            1 for t in self.tasks.values()
            if t.id < task.id and t.started is None and not t.removed
        )
        if self.hold or self.queue_seconds <= 0:
            fraction = 1.0 if self.hold else 0.0
        else:
            fraction = max(0.0, task.created + self.queue_seconds - now) / self.queue_seconds
        return ahead + math.ceil(self.queue_ahead * fraction)

    def serialize(self, task: Task, now: float) -> dict[str, Any]:
        user = self.users[task.user]
        done = task.finished is not None
        ok = done and not task.error_msg
        data = {
            "url": self.task_url(task.id),
            "id": task.id,
            "user_id": user["id"],
            "username": task.user,
            "timestamp": iso(task.created, micro=False),
            "mpc_name": task.mpc_name,
            "ra": task.ra,
            "dec": task.dec,
            "mjd_min": task.mjd_min,
            "mjd_max": task.mjd_max,
            "radec_epoch_year": task.radec_epoch_year,
            "propermotion_ra": task.propermotion_ra,
            "propermotion_dec": task.propermotion_dec,
            "use_reduced": task.use_reduced,
            "finished": done,
            "result_url": self.result_url(task.id) if ok else None,
            "comment": task.comment,
            "send_email": task.send_email,
            "callback_url": task.callback_url,
            "starttimestamp": iso(task.started),
            "finishtimestamp": iso(task.finished),
            "error_msg": task.error_msg,
            "previewimage_url": None,
            "parent_task_id": None,
            "parent_task_url": None,
            "request_type": "FP",
            "pdfplot_url": f"{self.base_url}/queue/{task.id}/plot.pdf" if ok else None,
            "queuepos": self._queuepos(task, now),
            "imagerequest_task_id": None,
            "imagerequest_url": None,
            "imagerequest_finished": None,
            "result_imagestack_url": None,
            "result_imagezip_url": None,
            "userqueuedtasks_on_submit": task.userqueued_on_submit,
            "waittime": round(task.started - task.created, 1) if task.started else None,
            "runtime": round(task.finished - task.started, 1) if task.finished and task.started else None,
            "attempt_count": 1 if task.started else 0,
        }
        return {key: data[key] for key in TASK_FIELDS}

    # -- auth and throttling ------------------------------------------------------------
    def _authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        header = request.header("authorization") or ""
        if not header:
            return None, None
        kind, _, value = header.partition(" ")
        if kind.lower() == "token":
            for name, user in self.users.items():
                if value.strip() == user["token"]:
                    return name, None
            return None, self._error(401, {"detail": "Invalid token."}, auth=True)
        if kind.lower() == "basic":
            try:
                username, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                username = password = ""
            account = self.users.get(username)
            if account and account["password"] == password:
                return username, None
            return None, self._error(401, {"detail": "Invalid username/password."}, auth=True)
        return None, None

    @staticmethod
    def _error(status: int, body: dict[str, Any], auth: bool = False) -> Response:
        headers = {"WWW-Authenticate": 'Basic realm="api"'} if auth else {}  # guess: Basic is first
        return Response.json(body, status, headers=headers)

    def _throttle(self, who: str, scope: str, now: float) -> Response | None:
        """DRF ScopedRateThrottle: history of successful requests in the window."""
        limit = self.write_limit if scope == "write" else self.read_limit
        if limit <= 0:
            return None
        window = float(self.throttle_window)
        history = self._history.setdefault((who, scope), [])
        while history and history[-1] <= now - window:
            history.pop()
        if len(history) >= limit:
            remaining = window - (now - history[-1])
            available = limit - len(history) + 1
            wait = remaining / available if available > 0 else remaining
            seconds = max(1, math.ceil(wait))
            unit = "second" if seconds == 1 else "seconds"
            return Response.json(
                {"detail": f"Request was throttled. Expected available in {seconds} {unit}."},
                429,
                headers={"Retry-After": str(seconds)},
            )
        history.insert(0, now)
        return None

    # -- dispatch -----------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        with self.lock:
            now = self.now()
            self._advance(now)
            path = request.path
            method = request.method.upper()
            if path == "/api-token-auth/":
                return self._token_auth(request) if method == "POST" else self._not_allowed(method)
            match = re.fullmatch(r"/static/results/job(\d+)\.txt", path)
            if match:
                return self._result_file(int(match.group(1)))
            match = re.fullmatch(r"/queue/(\d+)/data\.txt", path)
            if match:
                task = self.tasks.get(int(match.group(1)))
                if task is None or task.removed or task.result is None:
                    return Response.text("Page not found", 404, "text/html; charset=utf-8")
                return Response.text(task.result)
            detail = re.fullmatch(r"/queue/(\d+)/", path)
            if path not in ("/queue/", "/queue") and not detail:
                return Response.text("<h1>Not Found</h1>", 404, "text/html; charset=utf-8")
            user, failure = self._authenticate(request)
            if failure is not None:
                return failure
            scope = "read" if method in ("GET", "HEAD", "OPTIONS") else "write"
            if detail is None:
                if method in ("GET", "HEAD"):
                    if user is None:
                        return self._error(403, {"detail": "Authentication credentials were not provided."})
                    throttled = self._throttle(user, scope, now)
                    return throttled or self._list(request, user, now)
                if method == "POST":
                    if user is None:
                        return self._error(
                            401, {"detail": "Authentication credentials were not provided."}, auth=True
                        )
                    throttled = self._throttle(user, scope, now)
                    return throttled or self._create(request, user, now)
                return self._not_allowed(method)
            task = self.tasks.get(int(detail.group(1)))
            if task is None or task.removed:
                throttled = self._throttle(user or f"anon:{request.header('host')}", scope, now)
                return throttled or Response.json({"detail": "No Task matches the given query."}, 404)
            throttled = self._throttle(user or "anon", scope, now)
            if throttled is not None:
                return throttled
            if method in ("GET", "HEAD"):
                if task.archived:
                    return Response.text("Page not found", 404, "text/html; charset=utf-8")
                body = json.dumps(self.serialize(task, now)).encode()
                etag = '"' + hashlib.md5(body).hexdigest() + '"'
                if request.header("if-none-match") == etag:
                    return Response(304, b"", {"ETag": etag})
                return Response(200, body, {"Content-Type": "application/json", "ETag": etag})
            if method == "DELETE":
                if user is None:
                    return self._error(401, {"detail": "Authentication credentials were not provided."}, auth=True)
                if user != task.user:
                    return self._error(403, {"detail": "You must be the owner of this object."})
                if task.finished is not None:
                    self.archive(task.id)  # models.py Task.delete: finished tasks are archived
                else:
                    task.removed = True
                return Response(204, b"", {})
            return self._not_allowed(method)

    @staticmethod
    def _not_allowed(method: str) -> Response:
        return Response.json({"detail": f'Method "{method}" not allowed.'}, 405)

    def _token_auth(self, request: Request) -> Response:
        form = request.form()
        username = (form.get("username") or [""])[-1]
        password = (form.get("password") or [""])[-1]
        missing = {k: ["This field is required."] for k, v in (("username", username), ("password", password)) if not v}
        if missing:
            return Response.json(missing, 400)
        user = self.users.get(username)
        if not user or user["password"] != password:
            return Response.json({"non_field_errors": ["Unable to log in with provided credentials."]}, 400)
        return Response.json({"token": user["token"]})

    def _result_file(self, task_id: int) -> Response:
        task = self.tasks.get(task_id)
        if task is None or task.removed or task.result is None or task.error_msg:
            return Response.text("<h1>Not Found</h1>", 404, "text/html; charset=utf-8")
        return Response.text(task.result)

    def _list(self, request: Request, user: str, now: float) -> Response:
        """The user's own non-archived tasks, one cursor page (pagination.py TaskPagination)."""
        own = [t for t in self.tasks.values() if t.user == user and not t.deleted]
        started = (request.arg("started") or "").strip().lower()  # filters.py TaskFilter
        if started in ("true", "false"):
            own = [t for t in own if (t.started is not None) == (started == "true")]
        etag = '"' + hashlib.md5(repr(sorted(
            (t.id, t.started, t.finished) for t in own)).encode()).hexdigest() + '"'
        if request.header("if-none-match") == etag:
            return Response(304, b"", {"ETag": etag})
        try:
            pagesize = max(1, min(100, int(request.arg("pagesize", "6") or 6)))
        except ValueError:
            pagesize = 6
        descending = (request.arg("ordering") or "-id").strip() != "id"
        try:
            offset, reverse, position = decode_cursor(request.arg("cursor"))
        except ValueError:
            return Response.json({"detail": "Invalid cursor"}, 404)
        # the scan order: the ordering, or its reverse for a reverse cursor
        scan_desc = descending != reverse
        ordered = sorted(own, key=lambda t: t.id, reverse=scan_desc)
        if position is not None:
            ordered = [t for t in ordered if (t.id < position if scan_desc else t.id > position)]
        window = ordered[offset: offset + pagesize + 1]
        page = window[:pagesize]
        has_following = len(window) > len(page)
        if reverse:
            page.reverse()
            has_next = position is not None or offset > 0
            has_previous = has_following
        else:
            has_next = has_following
            has_previous = position is not None or offset > 0
        # tasks shown before this page (the page's first task's position in the whole list)
        if reverse:
            before = [t for t in own if (t.id > position if descending else t.id < position)] if (
                position is not None) else own
            first_position = max(0, len(before) - offset - len(page))
        else:
            first_position = offset + (sum(
                1 for t in own if (t.id >= position if descending else t.id <= position)
            ) if position is not None else 0)
        next_link = previous_link = None
        if has_next and page:
            next_link = self._page_link(request, encode_cursor(0, False, page[-1].id))
        if has_previous:
            if first_position <= pagesize:  # near the top: the link without a cursor
                previous_link = self._page_link(request, None)
            elif page:
                previous_link = self._page_link(request, encode_cursor(0, True, page[0].id))
        body = {
            "next": next_link,
            "previous": previous_link,
            "pagefirsttaskposition": first_position,
            "taskcount": len(own),
            "results": [self.serialize(t, now) for t in page],
        }
        return Response.json(body, headers={"ETag": etag})

    def _page_link(self, request: Request, cursor: str | None) -> str:
        """The request's own absolute URL with its ``cursor`` replaced (DRF replace_query_param)."""
        parts = urlsplit(request.full_path)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "cursor"]
        if cursor is not None:
            query.append(("cursor", cursor))
        assert self.server is not None
        origin = (self.list_origin or self.server.base_url).rstrip("/")
        return origin + parts.path + ("?" + urlencode(query) if query else "")

    def _create(self, request: Request, user: str, now: float) -> Response:
        try:
            form = {k: v[-1] for k, v in request.form().items()}
        except ValueError:
            return Response.json({"detail": "JSON parse error"}, 400)
        unstarted = sum(
            1 for t in self.tasks.values()
            if t.user == user and t.started is None and not t.deleted
        )
        if unstarted + 1 > self.max_user_tasks:
            message = (
                f"ERROR: You have too many queued tasks ({unstarted} queued"
                f" + 1 requested > {self.max_user_tasks})."
            )
            return Response.json({"non_field_errors": message}, self.queue_full_status)
        errors: dict[str, list[str]] = {}

        def number(name: str) -> float | None:
            text = form.get(name)
            if text in (None, "", "null", "None"):
                return None
            try:
                value = float(text)
            except ValueError:
                errors[name] = ["A valid number is required."]
                return None
            if not math.isfinite(value):
                errors[name] = [f"{name} must be a finite floating-point number."]
                return None
            return value

        def boolean(name: str, default: bool) -> bool:
            text = str(form.get(name, "")).strip().lower()
            if text in ("true", "1", "on", "yes"):
                return True
            if text in ("false", "0", "off", "no"):
                return False
            return default

        ra, dec = number("ra"), number("dec")
        if "mjd_min" in form:
            mjd_min = number("mjd_min")
        else:
            mjd_min = round(now / 86400.0 + 40587.0 - 30.0, 5)  # the server's default: 30 days ago
        mjd_max = number("mjd_max")
        pm_ra, pm_dec = number("propermotion_ra"), number("propermotion_dec")
        epoch = form.get("radec_epoch_year") or None
        if ra is None and dec is None and not form.get("mpc_name"):
            errors.setdefault("non_field_errors", []).append(
                "Either an mpc_name or (ra, dec) must be specified."
            )
        elif ra is not None and dec is None:
            errors["dec"] = ["ra was set but dec is missing."]
        elif dec is not None and ra is None:
            errors["ra"] = ["dec was set but ra is missing."]
        if mjd_max is not None and mjd_max <= 0:
            errors["mjd_max"] = ["mjd_max must be a positive MJD."]
        elif mjd_max is not None and mjd_min is not None and mjd_max <= mjd_min:
            errors["mjd_max"] = [f"mjd_max must be greater than mjd_min ({mjd_min} was applied)."]
        if errors:
            return Response.json(errors, 400)
        task = Task(
            id=self.next_id,
            user=user,
            created=now,
            ra=ra,
            dec=dec,
            mjd_min=mjd_min,
            mjd_max=mjd_max,
            radec_epoch_year=f"{float(epoch):.1f}" if epoch else None,
            propermotion_ra=pm_ra,
            propermotion_dec=pm_dec,
            use_reduced=boolean("use_reduced", False),
            send_email=boolean("send_email", True),
            comment=form.get("comment") or None,
            callback_url=form.get("callback_url") or None,
            userqueued_on_submit=unstarted,
        )
        self.next_id += 1
        self.tasks[task.id] = task
        body = self.serialize(task, now)
        return Response.json(body, 201, headers={"Location": body["url"]})
