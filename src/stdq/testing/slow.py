"""A slow remote-task service, to test the job queue before (and besides) ATLAS.

Three parts, all in this module because none of them is a real survey:

- :class:`SlowServiceEmulator` (name ``slow``, prefix ``/slow``): a remote task
  API shaped like ATLAS forced photometry, with a queue of ``slots`` tasks
  running at once and a per-task duration:

  ========  =======================  ==============================================
  method    path                     answer
  ========  =======================  ==============================================
  POST      ``/tasks``               JSON ``{"ra", "dec", "seconds"?, "mjd_min"?,
                                     "mjd_max"?}`` -> 201 ``{"id", "url", "status",
                                     "queue_position"}``; 400 for a bad target
  GET       ``/tasks/<id>``          ``{"id", "url", "status": queued|running|
                                     finished, "queue_position", "result_url",
                                     "rows", "error"}``; 404 once deleted
  GET       ``/tasks?key=K``        ``{"tasks": [...]}``: the live tasks submitted
                                     with ``"key": K`` (a create-once lookup)
  GET       ``/tasks/<id>/result.csv``  ``mjd,filter,flux_ujy,flux_err_ujy`` rows
  DELETE    ``/tasks/<id>``          204, empty body
  ========  =======================  ==============================================

  With ``api_key`` set, every request needs ``Authorization: Token <key>``
  (else 401 ``{"detail": ...}``). ``seconds`` defaults to ``default_seconds``.
  guess: none of this is a real service; the shapes follow ATLAS (docs/wire-formats.md 1.6).

- :class:`SlowService` (``supports_async``): submits, saves the task URL in the
  checkpoint before anything else, polls (resuming a saved task instead of
  submitting again), downloads, then deletes the remote task; ``cancel_remote``
  deletes it too.
- :class:`SlowProcessor` (data product type ``slow_photometry``).

The service is not registered by default. Settings that use it (the emulator's
``service_settings_lines`` give the ``class`` line; add :data:`SETTINGS_EXTRA`)::

    [services.slow]
    class = "stdq.testing.slow:SlowService"
    url = "http://127.0.0.1:PORT/slow"

    [data_processors]
    slow_photometry = "stdq.testing.slow:SlowProcessor"

Synthetic data (deterministic, from ``stdq.testing.sky``): "Empty Field" (and
anything within 2 arcsec of it) has no rows; any other position has
:data:`ROWS` rows, row ``i`` (0-based) being ``mjd = 60000 + 0.5 i``, filter
``g`` for even ``i`` and ``r`` for odd ``i``, ``flux_ujy = 50 (i + 1) - 100`` and
``flux_err_ujy = 10``; rows outside ``[mjd_min, mjd_max]`` are left out. A target
with ``dec < -85`` is refused with 400 (outside the emulated footprint).
"""

from __future__ import annotations

import heapq
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from stdq.processors.base import DataProcessor
from stdq.services.base import TIME_FIELDS, Field, QueryForm, SingleTargetDataService
from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

if TYPE_CHECKING:
    import pandas as pd

    from stdq.services.base import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

ROWS = 12
FLUX_ERR_UJY = 10.0
MIN_DEC = -85.0
SETTINGS_EXTRA = '\n[data_processors]\nslow_photometry = "stdq.testing.slow:SlowProcessor"\n'


def settings_extra(**tasks: Any) -> str:
    """TOML to append to ``settings_toml()``: the slow processor, and ``[tasks]`` keys."""
    text = SETTINGS_EXTRA
    if tasks:
        text += "\n[tasks]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in tasks.items())
    return text


def synthetic_rows(ra: float, dec: float, mjd_min: float | None = None, mjd_max: float | None = None):
    """The emulator's rows for a position: (mjd, filter, flux_ujy, flux_err_ujy)."""
    empty = sky.find("Empty Field")
    if empty is not None and sky.separation_deg(ra, dec, empty.ra, empty.dec) * 3600 < 2.0:
        return []
    rows = []
    for i in range(ROWS):
        mjd = 60000.0 + 0.5 * i
        if mjd_min is not None and mjd < mjd_min:
            continue
        if mjd_max is not None and mjd > mjd_max:
            continue
        rows.append((mjd, "g" if i % 2 == 0 else "r", 50.0 * (i + 1) - 100.0, FLUX_ERR_UJY))
    return rows


# -- the emulator ---------------------------------------------------------------------


@dataclass
class _Task:
    id: int
    ra: float
    dec: float
    seconds: float
    submitted: float
    mjd_min: float | None = None
    mjd_max: float | None = None
    deleted_at: float | None = None
    start: float | None = None  # set when it takes a slot
    key: str | None = None  # the client's idempotency key (GET /tasks?key=K finds it)

    @property
    def end(self) -> float:
        return (self.start or self.submitted) + self.seconds

    @property
    def busy_until(self) -> float:
        """When its slot is free again (early when it was deleted while running)."""
        return self.end if self.deleted_at is None else min(self.end, self.deleted_at)


class SlowServiceEmulator(Emulator):
    """The remote task API of the slow service (see the module docstring)."""

    name = "slow"
    prefix = "/slow"
    service_name = "slow"

    def __init__(self, *, default_seconds: float = 2.0, slots: int = 4, api_key: str | None = None):
        super().__init__()
        self.default_seconds = default_seconds
        self.slots = slots
        self.api_key = api_key
        self.tasks: dict[int, _Task] = {}
        self._pending: list[_Task] = []  # not started yet, in submission order
        self._slot_tasks: list[_Task | None] = []  # the last task of each slot
        self._next_id = 1

    def service_settings_lines(self) -> list[str]:
        return ['class = "stdq.testing.slow:SlowService"']

    @property
    def submissions(self) -> int:
        """How many tasks were ever submitted."""
        return self._next_id - 1

    # -- the queue model: ``slots`` tasks run at once, first come first served ----------
    def _slot_free(self) -> list[float]:
        while len(self._slot_tasks) < max(1, self.slots):
            self._slot_tasks.append(None)
        return [t.busy_until if t is not None else 0.0 for t in self._slot_tasks]

    def _advance(self, now: float) -> dict[int, float]:
        """Start the tasks whose turn came by NOW; the projected start of the others."""
        while self._pending:
            task = self._pending[0]
            free = self._slot_free()
            slot = min(range(len(free)), key=free.__getitem__)
            start = max(task.submitted, free[slot])
            if task.deleted_at is not None and task.deleted_at <= start:
                self._pending.pop(0)  # deleted before it started: it never takes a slot
                continue
            if start > now:
                break
            task.start = start
            self._slot_tasks[slot] = task
            self._pending.pop(0)
        projected: dict[int, float] = {}
        free = sorted(self._slot_free())
        for task in self._pending:
            if task.deleted_at is not None:
                continue
            start = max(task.submitted, heapq.heappop(free))
            projected[task.id] = start
            heapq.heappush(free, start + task.seconds)
        return projected

    def _status(self, task: _Task, now: float) -> dict[str, Any]:
        projected = self._advance(now)
        position = None
        if task.start is None:
            status = "queued"
            position = sum(1 for tid in projected if tid < task.id)
        elif now < task.end:
            status = "running"
        else:
            status = "finished"
        url = f"{self.base_url}/tasks/{task.id}"
        rows = synthetic_rows(task.ra, task.dec, task.mjd_min, task.mjd_max)
        return {
            "id": task.id,
            "url": url,
            "ra": task.ra,
            "dec": task.dec,
            "status": status,
            "queue_position": position,
            "result_url": f"{url}/result.csv" if status == "finished" else None,
            "rows": len(rows) if status == "finished" else None,
            "error": None,
        }

    # -- requests -----------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if self.api_key is not None:
            auth = request.header("authorization") or ""
            if auth != f"Token {self.api_key}":
                detail = "Invalid token." if auth else "Authentication credentials were not provided."
                return Response.json({"detail": detail}, 401, {"WWW-Authenticate": "Token"})
        now = time.time()
        with self.lock:
            if request.path.rstrip("/") == "/tasks" and request.method == "POST":
                return self._submit(request, now)
            if request.path.rstrip("/") == "/tasks" and request.method == "GET":
                key = request.arg("key")
                found = [self._status(t, now) for t in self.tasks.values()
                         if t.deleted_at is None and key is not None and t.key == key]
                return Response.json({"tasks": found})
            match = re.fullmatch(r"/tasks/(\d+)(/result\.csv)?/?", request.path)
            if not match:
                return Response.text("Not Found", 404)
            task = self.tasks.get(int(match.group(1)))
            if task is None or task.deleted_at is not None:
                return Response.json({"detail": "Not found."}, 404)
            if match.group(2):
                return self._result(task, now, request.method)
            if request.method == "DELETE":
                task.deleted_at = now
                return Response(204, b"", {})
            if request.method == "GET":
                return Response.json(self._status(task, now))
            return Response.json({"detail": f'Method "{request.method}" not allowed.'}, 405)

    def _submit(self, request: Request, now: float) -> Response:
        try:
            data = json.loads(request.body or b"{}")
            ra, dec = float(data["ra"]), float(data["dec"])
            seconds = float(data.get("seconds", self.default_seconds))
            mjd_min = None if data.get("mjd_min") is None else float(data["mjd_min"])
            mjd_max = None if data.get("mjd_max") is None else float(data["mjd_max"])
        except (ValueError, KeyError, TypeError):
            return Response.json({"non_field_errors": ["ra and dec (numbers) are required."]}, 400)
        if dec < MIN_DEC:
            return Response.json({"dec": [f"dec {dec} is outside the survey footprint (dec >= {MIN_DEC:g})."]}, 400)
        task = _Task(self._next_id, ra, dec, max(0.0, seconds), now, mjd_min, mjd_max)
        task.key = str(data["key"]) if data.get("key") is not None else None
        self._next_id += 1
        self.tasks[task.id] = task
        self._pending.append(task)
        body = self._status(task, now)
        return Response.json(body, 201, {"Location": body["url"]})

    def _result(self, task: _Task, now: float, method: str) -> Response:
        if method != "GET":
            return Response.json({"detail": f'Method "{method}" not allowed.'}, 405)
        if self._status(task, now)["status"] != "finished":
            return Response.json({"detail": "The task has not finished."}, 409)
        lines = ["mjd,filter,flux_ujy,flux_err_ujy"]
        for mjd, band, flux, err in synthetic_rows(task.ra, task.dec, task.mjd_min, task.mjd_max):
            lines.append(f"{mjd:.5f},{band},{flux:.3f},{err:.3f}")
        return Response.text("\n".join(lines) + "\n", content_type="text/csv; charset=utf-8")


# -- the service ------------------------------------------------------------------------


class SlowForm(QueryForm):
    fields = (
        *TIME_FIELDS,
        Field("seconds", "float", help="how long the emulated remote task runs (seconds)", metavar="S"),
    )

    def clean(self) -> dict[str, Any]:
        out = super().clean()
        if out.get("seconds") is not None and out["seconds"] < 0:
            from stdq.errors import BadInput

            raise BadInput(f"--seconds must be >= 0, not {out['seconds']:g}")
        return out


class SlowService(SingleTargetDataService):
    """A remote-task service with a configurable duration (the emulator's API)."""

    name: ClassVar[str] = "slow"
    title: ClassVar[str] = "Slow remote-task emulator (tests and benchmarks)"
    info_url: ClassVar[str] = ""
    data_product_type: ClassVar[str] = "slow_photometry"
    supports_async: ClassVar[bool] = True
    form: ClassVar[type[QueryForm]] = SlowForm
    default_url: ClassVar[str] = "http://127.0.0.1:8765/slow"
    settings_defaults: ClassVar[dict[str, Any]] = {
        "poll_interval": 0.2,
        "max_poll_interval": 2.0,
        "snr_threshold": 3.0,
    }
    settings_help: ClassVar[dict[str, str]] = {
        "poll_interval": "first wait between polls of the remote task, seconds",
        "max_poll_interval": "the wait grows up to this while the task is queued or running",
        "snr_threshold": "snr >= this is a detection",
    }
    secret_fields: ClassVar[tuple[str, ...]] = ("api_key",)

    def http_auth(self) -> Any:
        key = self.config.secret("api_key")
        if not key:
            return None
        from stdq.http import make_host_auth

        return make_host_auth(self.url, headers={"Authorization": f"Token {key}"})

    def _check(self, response, context: QueryContext) -> None:
        from stdq.http import check_response

        check_response(response, self.name, self.config.secret_values())

    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        from stdq.errors import NoData, QueryFailed, TemporaryFailure

        client = context.client
        checkpoint = context.checkpoint
        if checkpoint.get("downloaded"):
            product = context.new_product(target, params)
            if product.raw_files:
                context.event("resume", "the answer was already downloaded; processing it")
                return self._finish(product, context)
        task_url = checkpoint.get("task_url")
        if task_url:
            context.event("resume", f"resuming remote task {task_url}")
        else:
            task_url = self._submit(target, params, context)
        wait = float(self.config.get("poll_interval", 0.2))
        longest = float(self.config.get("max_poll_interval", 2.0))
        while True:
            context.check_cancelled()
            response = client.get(task_url)
            if response.status_code == 404:
                context.checkpoint.pop("task_url", None)
                context.save_checkpoint()
                raise TemporaryFailure(
                    f"{self.name}: the remote task {task_url} no longer exists; it will be submitted again"
                )
            self._check(response, context)
            status = response.json()
            if status.get("status") == "finished":
                break
            if status.get("status") == "queued":
                position = status.get("queue_position")
                context.progress(f"remote task queued (position {position})")
            else:
                context.progress("remote task running")
            context.sleep(wait)
            wait = min(longest, wait * 1.5)
        if status.get("error"):
            raise QueryFailed(f"{self.name}: the remote task failed: {status['error']}")
        context.progress("downloading the result")
        product = context.new_product(target, params)
        response = client.get(status["result_url"])
        self._check(response, context)
        product.add_raw(
            "result.csv",
            response.content,
            url=client.safe_url(status["result_url"]),
            content_type=response.headers.get("Content-Type"),
        )
        context.save_checkpoint(downloaded=True)
        self._delete(task_url, context)
        if status.get("rows") == 0:
            raise NoData(f"{self.name} has no data for this target")
        return self._finish(product, context)

    def _submit(self, target: Target, params: dict[str, Any], context: QueryContext) -> str:
        """POST the task once (stdq.remote.create_once: its key, then GET /tasks?key=)."""
        from stdq import remote
        from stdq.http import CREATE_ONCE

        client = context.client

        def send(key: str) -> dict[str, Any]:
            body: dict[str, Any] = {"ra": target.ra, "dec": target.dec, "key": key}
            for name in ("seconds", "mjd_min", "mjd_max"):
                if params.get(name) is not None:
                    body[name] = params[name]
            context.progress("submitting the remote task")
            response = client.request("POST", f"{self.url}/tasks", json=body, policy=CREATE_ONCE)
            self._check(response, context)
            return dict(response.json())

        def find(key: str) -> dict[str, Any] | None:
            response = client.get(f"{self.url}/tasks", params={"key": key})
            self._check(response, context)
            tasks = response.json().get("tasks") or []
            return dict(tasks[0]) if tasks else None

        poll = max(0.05, float(self.config.get("poll_interval", 0.2)))
        task, found = remote.create_once(
            context, slot="slow_submit", send=send, find=find, service=self.name,
            what="the remote task", grace=2 * poll, look_every=poll,
        )
        task_url = str(task["url"])
        context.save_checkpoint(task_url=task_url)
        how = "found (an earlier send made it)" if found else "submitted"
        context.event("remote", f"{how} remote task {task_url}")
        return task_url

    def _finish(self, product: DataProduct, context: QueryContext) -> list[DataProduct]:
        from stdq.errors import NoData

        text = product.raw("result.csv").path.read_text(encoding="utf-8")
        if len([line for line in text.splitlines() if line.strip()]) <= 1:
            raise NoData(f"{self.name} has no data for this target")
        return [product]

    def _delete(self, task_url: str, context: QueryContext) -> None:
        """DELETE the remote task (best effort) and remember it is gone."""
        try:
            response = context.client.delete(task_url)
        except Exception as exc:  # the data is safe; say so and go on
            context.event("remote", f"could not delete remote task {task_url}: {exc}")
            return
        if response.status_code in (200, 204, 404):
            context.event("remote", f"deleted remote task {task_url}")
            context.checkpoint.pop("task_url", None)
            context.save_checkpoint(remote_deleted=True)
        else:
            context.event("remote", f"deleting remote task {task_url}: HTTP {response.status_code}")

    def cancel_remote(self, checkpoint: dict[str, Any], context: QueryContext) -> None:
        task_url = checkpoint.get("task_url")
        if task_url and not checkpoint.get("remote_deleted"):
            self._delete(task_url, context)


# -- the processor --------------------------------------------------------------------


class SlowProcessor(DataProcessor):
    """result.csv of the slow service -> the normalized table."""

    data_product_type: ClassVar[str] = "slow_photometry"
    version: ClassVar[str] = "1"
    limit_nsigma = 3.0

    def cuts(self) -> dict[str, Any]:
        return {"snr_threshold": self._snr_threshold(), "limit_nsigma": self.limit_nsigma}

    def _snr_threshold(self) -> float:
        return float(self.setting("snr_threshold", 3.0))

    def process(self, product: DataProduct) -> pd.DataFrame:
        import io

        import pandas as pd

        from stdq.photometry import empty_table, fill_detections

        raw = product.raw("result.csv").path.read_bytes()
        df = pd.read_csv(io.BytesIO(raw))
        if df.empty:
            return empty_table()
        out = pd.DataFrame(
            {
                "mjd": df["mjd"].astype("float64"),
                "survey": "SLOW",
                "telescope": "EMU",
                "instrument": "EMU",
                "filter": df["filter"].astype(str),
                "band": "slow" + df["filter"].astype(str),
                "flux_ujy": df["flux_ujy"].astype("float64"),
                "flux_err_ujy": df["flux_err_ujy"].astype("float64"),
                "flux_kind": "difference",
                "ra": float(product.target["ra"]),
                "dec": float(product.target["dec"]),
                "sep_arcsec": 0.0,
                "source_row_id": [f"{product.id}:{i}" for i in range(len(df))],
            }
        )
        return fill_detections(out, self._snr_threshold(), self.limit_nsigma)
