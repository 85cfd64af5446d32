"""`stdq update`: bring the light curves of many targets up to date, one job per target
and service, each asking only for the epochs after the newest one stored.

- plan: the targets (names, a list, or all local targets) x the services (given, or those
  the target already has products of); for each, ``mjd_min`` = the newest stored epoch
  minus the service's overlap (:func:`overlap_days`, at most 2 days), or nothing the first
  time (the whole history). A service without time bounds is asked for everything; rows
  already stored are recognised by ``source_row_id`` all the same.
- submit: ``Stdq.submit`` (never a reused earlier result; an identical queued or running
  job is joined), and a row of ``update_jobs`` (its hook command).
- run: in-process jobs here, one after the other; worker jobs by the workers; each item
  settles when its job ends (or waits for a retry: "retrying", exit 75).
- the hook (``[hooks] on_new_detection``) is run by the job's runner once its products are
  processed, before the job ends (:func:`run_hook`).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stdq import errors
from stdq.errors import BadInput
from stdq.records import Job, JobState, Outcome, Target

if TYPE_CHECKING:
    from stdq.config import Settings
    from stdq.core import Stdq
    from stdq.jobs.queue import JobQueue
    from stdq.store import Store

#: Days asked again before the newest stored epoch, per service (late reductions,
#: rows stored out of order); at most MAX_OVERLAP_DAYS. Others: DEFAULT_OVERLAP_DAYS,
#: or their class attribute ``update_overlap_days``.
OVERLAP_DAYS: dict[str, float] = {
    "atlas": 1.0, "ztf": 2.0, "ztf-fps": 2.0, "panstarrs": 0.0, "rubin": 1.0, "rubin-rsp": 1.0,
}
DEFAULT_OVERLAP_DAYS = 1.0
MAX_OVERLAP_DAYS = 2.0
HOOK_TIMEOUT = 60.0
HOOK_OUTPUT_CHARS = 4000

# update_jobs.hook of the command of [hooks] on_new_detection (read from the settings)
SETTINGS_HOOK = "[hooks] on_new_detection"

# item states beyond the job states
NO_DATA = "no_data"
RETRYING = "retrying"
UNCHANGED = "unchanged"  # the service's update_unchanged hook: 0 new rows, no job, no request


@dataclass
class UpdateItem:
    """One target and service of an update run."""

    target: Target
    service: str
    folder: Path
    mjd_min: float | None = None
    job_id: int | None = None
    state: str = "planned"
    new_rows: int | None = None
    new_detections: int | None = None
    rows_total: int | None = None
    latest_path: str | None = None
    error: str | None = None
    exit_code: int | None = None
    hook: str | None = None  # "ran", "failed", "none" (no new detection), None: no hook

    @property
    def settled(self) -> bool:
        return self.state not in ("planned", "queued", "running")

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.label,
            "service": self.service,
            "job_id": self.job_id,
            "state": self.state,
            "new_rows": self.new_rows,
            "new_detections": self.new_detections,
            "rows_total": self.rows_total,
            "latest_path": self.latest_path,
            "mjd_min": self.mjd_min,
            "error": self.error,
            "hook": self.hook,
        }


def overlap_days(service: str, cls: Any = None) -> float:
    days = getattr(cls, "update_overlap_days", None) if cls is not None else None
    if days is None:
        days = OVERLAP_DAYS.get(service, DEFAULT_OVERLAP_DAYS)
    return max(0.0, min(float(days), MAX_OVERLAP_DAYS))


def parse_since(text: str | None) -> float | None:
    """--since: an MJD (a number) or an ISO 8601 date (UTC)."""
    if text is None:
        return None
    from stdq.services.base import date_to_mjd

    raw = text.strip()
    try:
        value = float(raw)
    except ValueError:
        value = date_to_mjd(raw)
    if not 0 < value < 100000:
        raise BadInput(f"--since {text!r} is not a plausible MJD or date")
    return round(value, 6)


def select_targets(
    sdq: Stdq, names: Sequence[str], list_name: str | None, all_targets: bool
) -> list[Target]:
    """The targets of a run: NAMES (resolved), LIST_NAME's, or every local target."""
    if sum(bool(x) for x in (names, list_name, all_targets)) != 1:
        raise BadInput("give target NAMEs, --list NAME or --all (one of them)")
    if all_targets:
        found = sdq.targets.list()
        if not found:
            raise BadInput("there are no local targets", hint="add some: stdq targets import FILE")
        return found
    if list_name:
        return sdq.targets.members(list_name)
    return [sdq.resolve(name) for name in dict.fromkeys(n.strip() for n in names)]


def plan(
    sdq: Stdq, targets: Sequence[Target], services: Sequence[str] | None, since: float | None
) -> list[UpdateItem]:
    """One item per target and service, with the mjd_min its job asks for."""
    from stdq.latest import folder_for, newest_mjd

    store = sdq.store
    registry = sdq.registry
    for name in services or ():
        if not registry.has_service(name):  # exit 2 before anything runs
            raise BadInput(
                f"--services: unknown service {name!r}",
                hint=f"known services: {', '.join(registry.service_names())}",
            )
    items: list[UpdateItem] = []
    for target in targets:
        names = list(services) if services else sorted({p.service for p in store.products(target.label)})
        for service in names:
            cls = registry.service_class(service)
            folder = folder_for(store, target.label, service)
            item = UpdateItem(target=target, service=service, folder=folder)
            if "mjd_min" in cls.form.field_names():
                if since is not None:
                    item.mjd_min = since
                else:
                    newest = newest_mjd(store, folder, service)
                    if newest is not None:
                        item.mjd_min = round(newest - overlap_days(service, cls), 6)
            _unchanged(store, item, cls)
            items.append(item)
    if not items:
        raise BadInput(
            "nothing to update: these targets have no products yet",
            hint="name the services: stdq update ... --services atlas,ztf",
        )
    return items


def _unchanged(store: Store, item: UpdateItem, cls: Any) -> None:
    """Settle ITEM as UNCHANGED (0 new rows, no job) when its service says asking again
    cannot bring a row its stored products lack (``update_unchanged``: a frozen release)."""
    from stdq.latest import LATEST_CSV, folder_products

    hook = getattr(cls, "update_unchanged", None)
    products = folder_products(store, item.folder, item.service) if hook else []
    reason = hook(item.target, products, item.mjd_min) if products and hook else None
    if not reason:
        return
    item.state, item.error, item.exit_code = UNCHANGED, None, 0
    item.new_rows = item.new_detections = 0
    path = item.folder / LATEST_CSV
    if path.is_file():
        item.latest_path, item.rows_total = str(path), _count_rows(path)


def submit(
    sdq: Stdq, items: Sequence[UpdateItem], hook: str | None, *, background: bool = False
) -> None:
    """Submit each item's job and record it in update_jobs (with the hook command).

    BACKGROUND: every job goes to a worker (an in-process job would wait for nobody).
    The hook of the settings is stored as :data:`SETTINGS_HOOK` (its command, which may
    hold a webhook's token, stays in the settings file), another one as given."""
    if hook and hook == sdq.settings.hooks.on_new_detection:
        hook = SETTINGS_HOOK
    for item in items:
        if item.state == UNCHANGED:  # settled by the plan: nothing to ask
            continue
        params: dict[str, Any] = {}
        if item.mjd_min is not None:
            params["mjd_min"] = item.mjd_min
        job = sdq.submit(
            item.service, item.target, reuse=False, runner="worker" if background else None, **params
        )
        item.job_id = job.id
        item.state = str(job.state)
        with sdq.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO update_jobs (job_id, target, service, hook, hook_state)"
                " VALUES (?, ?, ?, ?, ?)",
                (job.id, item.target.label, item.service, hook or None, "pending" if hook else None),
            )


def settle(sdq: Stdq, item: UpdateItem, job: Job, *, ecsv: bool = False) -> None:
    """Fill ITEM from its ended (or retry-waiting) JOB: state, new rows, totals, the hook."""
    from stdq.latest import current, new_rows

    now = sdq.clock()
    if not job.settled(now):
        item.state = RETRYING
        item.error = (job.error or "").split("\n")[0] or None
        item.exit_code = errors.EXIT_TEMPORARY
        return
    outcome = job.outcome
    if outcome in (Outcome.ROWS, Outcome.NO_DATA):
        item.state = str(JobState.SUCCEEDED) if outcome is Outcome.ROWS else NO_DATA
        item.exit_code = 0
        table = new_rows(sdq.store, item.folder, item.service, job.products)
        item.new_rows = int(len(table))
        item.new_detections = int(table["detected"].astype(bool).sum()) if len(table) else 0
    else:
        item.state = str(job.state) if outcome is not Outcome.TEMPORARY else "temporary"
        item.error = (job.error or job.note or "").split("\n")[0] or None
        item.exit_code = job.exit_code or errors.EXIT_FAILED
        if outcome is None:  # an in-process job whose process died: resumable
            item.state, item.exit_code = "abandoned", errors.EXIT_FAILED
    # latest.csv as its worker left it (merged), rebuilt only when behind its products (a
    # worker killed in between) or, the first time --format ecsv is asked, for latest.ecsv
    path = current(sdq.store, item.folder, item.service, ecsv=ecsv)
    if path is not None and path.is_file():
        item.latest_path = str(path)
        item.rows_total = _count_rows(path)
    row = sdq.store.conn.execute(
        "SELECT hook, hook_state FROM update_jobs WHERE job_id = ?", (job.id,)
    ).fetchone()
    if row is not None and row["hook"]:
        item.hook = row["hook_state"] if row["hook_state"] != "pending" else None


def _count_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def run_items(
    sdq: Stdq,
    items: Sequence[UpdateItem],
    *,
    on_change: Callable[[UpdateItem], None] = lambda item: None,
    ecsv: bool = False,
    poll: float = 0.5,
) -> None:
    """Run the in-process jobs here, wait for the worker jobs; ON_CHANGE(item) when an item
    starts or settles."""
    by_job = {item.job_id: item for item in items if item.job_id is not None}
    pending = dict(by_job)
    for item in items:  # every row of the live table from the start
        on_change(item)
    # an item whose job ended already (joined from an earlier run) settles at once
    for job_id, item in list(pending.items()):
        job = sdq.job(job_id)
        if job.final:
            settle(sdq, item, job, ecsv=ecsv)
            on_change(item)
            pending.pop(job_id)
    for job_id, item in list(pending.items()):
        job = sdq.job(job_id)
        if job.runner != "inprocess" or job.state is not JobState.QUEUED:
            continue
        item.state = "running"
        on_change(item)
        try:
            job = sdq.run(job_id)
        except BadInput:  # another process took it: wait for it below
            continue
        settle(sdq, item, job, ecsv=ecsv)
        on_change(item)
        pending.pop(job_id)
    if not pending:
        return

    def progress(jobs: list[Job]) -> None:
        now = sdq.clock()
        for job in jobs:
            item = pending.get(job.id)
            if item is None:
                continue
            waiting_retry = (
                job.state is JobState.QUEUED and job.attempts > 0 and job.run_after > now + poll
            )
            if job.settled(now) or waiting_retry:
                settle(sdq, item, job, ecsv=ecsv)
                on_change(item)
                pending.pop(job.id)
            elif str(job.state) != item.state:
                item.state = str(job.state)
                on_change(item)
        if not pending:
            raise _AllSettled

    # the one poll loop (one worker keeper: a missing worker is said once), left as soon
    # as every item has settled or waits for a retry
    with contextlib.suppress(_AllSettled):
        sdq.wait(list(pending), on_progress=progress)


class _AllSettled(Exception):
    """Every item of a wait has settled (ends Stdq.wait early)."""


def exit_code(items: Sequence[UpdateItem]) -> int:
    """0 every job ended (rows or none); 3 configuration; 1 any failed; 75 any temporary."""
    codes = {item.exit_code for item in items if item.exit_code}
    if errors.EXIT_CONFIG in codes:
        return errors.EXIT_CONFIG
    if codes - {errors.EXIT_TEMPORARY, errors.EXIT_NO_DATA}:
        return errors.EXIT_FAILED
    if errors.EXIT_TEMPORARY in codes:
        return errors.EXIT_TEMPORARY
    return errors.EXIT_OK


# -- the hook (run by the job's runner) ----------------------------------------------------


def run_hook(
    settings: Settings, store: Store, queue: JobQueue, job_id: int, product_ids: Sequence[int]
) -> None:
    """Run the update's on_new_detection command for JOB_ID when its products brought new
    detections: JSON on stdin, output and status to the job's events. Never raises."""
    try:
        row = store.conn.execute(
            "SELECT * FROM update_jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        if row is None or not row["hook"] or row["hook_state"] != "pending":
            return
        state = _run_hook(settings, store, queue, job_id, row, product_ids)
    except Exception as exc:  # the hook never fails the job
        queue.add_event(job_id, "hook", f"on_new_detection not run: {type(exc).__name__}: {exc}")
        state = "failed"
    try:
        with store.db.transaction() as conn:
            conn.execute("UPDATE update_jobs SET hook_state = ? WHERE job_id = ?", (state, job_id))
    except Exception:  # best effort
        pass


def _run_hook(
    settings: Settings, store: Store, queue: JobQueue, job_id: int, row: Any, product_ids: Sequence[int]
) -> str:
    from stdq.latest import LATEST_CSV, folder_for, new_rows

    service = row["service"]
    folder = folder_for(store, row["target"], service)
    table = new_rows(store, folder, service, product_ids)
    detections = table[table["detected"].astype(bool)] if len(table) else table
    if not len(detections):
        return "none"
    payload = {
        "target": row["target"],
        "service": service,
        "job_id": job_id,
        "new_detections": [
            {
                "mjd": _num(r["mjd"]), "band": r["band"], "magnitude": _num(r["magnitude"]),
                "magnitude_error": _num(r["magnitude_error"]), "flux_ujy": _num(r["flux_ujy"]),
                "flux_err_ujy": _num(r["flux_err_ujy"]), "source_row_id": r["source_row_id"],
            }
            for r in detections.to_dict("records")
        ],
        "latest_path": str(folder / LATEST_CSV),
    }
    command = row["hook"]
    if command == SETTINGS_HOOK:
        command = settings.hooks.on_new_detection
        if not command:
            return "none"
    try:
        done = subprocess.run(
            command, shell=True, input=json.dumps(payload) + "\n", capture_output=True, text=True,
            timeout=HOOK_TIMEOUT, cwd=str(store.data_dir), errors="replace",
        )
    except subprocess.TimeoutExpired:
        queue.add_event(job_id, "hook", f"on_new_detection ran longer than {HOOK_TIMEOUT:g} s: stopped")
        return "failed"
    except OSError as exc:
        queue.add_event(job_id, "hook", f"on_new_detection could not start: {exc}")
        return "failed"
    for name, text in (("stdout", done.stdout), ("stderr", done.stderr)):
        if text.strip():
            queue.add_event(job_id, "hook", f"{name}: {text.strip()[:HOOK_OUTPUT_CHARS]}")
    count = len(payload["new_detections"])
    if done.returncode != 0:
        queue.add_event(
            job_id, "hook", f"on_new_detection failed (exit status {done.returncode}) for {count} new detection(s)"
        )
        return "failed"
    queue.add_event(job_id, "hook", f"on_new_detection ran for {count} new detection(s)")
    return "ran"


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None
