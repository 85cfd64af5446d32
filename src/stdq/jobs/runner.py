"""Run one claimed job: the same code path for workers and in-process queries.

The runner builds the service, gives it a context bound to the job row
(checkpoint, progress, events, cancellation, a lease heartbeat), processes the
products it returns, and ends the job in the state its outcome calls for:

- success -> succeeded (rows, detections, products);
- NoData -> succeeded with 0 rows and a note (``jobs result`` exits 5);
- TemporaryFailure -> queued again with backoff while attempts remain (worker
  jobs), else failed with exit code 75; Postponed (an account limit) -> queued again
  when it can go on, no attempt counted; Waiting (between two polls of a remote task)
  -> parked: queued with its checkpoint until the next poll is due, the same attempt;
- Cancelled because ``stdq jobs cancel`` asked -> the service cleans up
  remotely, then cancelled;
- the worker stopping (SIGTERM/SIGINT: ``stop_event``) while the service waits
  -> the job is released, queued again with its checkpoint (the remote task
  goes on and the next runner resumes it);
- the lease lost to another runner -> this runner stops without touching the job;
- Ctrl-C of an in-process query -> failed with exit code 130, its checkpoint
  kept: ``stdq jobs retry`` resumes it;
- any other error -> failed with its exit code. Messages are redacted.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stdq import errors
from stdq.errors import Cancelled, NoData, StdqError, TemporaryFailure
from stdq.http import redact
from stdq.jobs.queue import JobQueue, retry_delay
from stdq.records import Job, JobState, counted
from stdq.slots import Postponed, Waiting

if TYPE_CHECKING:
    from stdq.config import ServiceConfig, Settings
    from stdq.services.base import QueryContext, SingleTargetDataService
    from stdq.store import DataProduct, Store

log = logging.getLogger("stdq.jobs")

HEARTBEAT_MAX_INTERVAL = 5.0  # seconds between lease renewals (at most); also the cancel latency

ProgressCallback = Callable[[str, "float | None"], None]


class Heartbeat:
    """Renews a job's lease in a background thread and notices cancel requests."""

    def __init__(self, queue: JobQueue, job_id: int, owner: str, lease_seconds: float):
        self.job_id = job_id
        self.owner = owner
        self.lease_seconds = float(lease_seconds)
        self.data_dir = queue.data_dir
        self.clock = queue.db.clock
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    @property
    def interval(self) -> float:
        return max(0.2, min(HEARTBEAT_MAX_INTERVAL, self.lease_seconds / 3))

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from stdq.db import Database

        # its own Database: sqlite3 objects stay in the thread that made them
        database = Database(self.data_dir, clock=self.clock)
        queue = JobQueue(database)
        try:
            while not self._stop.wait(self.interval):
                try:
                    ours, cancel = queue.heartbeat(self.job_id, self.owner, self.lease_seconds)
                except Exception as exc:  # a locked or busy database: try again next beat
                    log.debug("heartbeat of job %s failed: %s", self.job_id, exc)
                    continue
                if cancel:
                    self.cancelled.set()
                if not ours:
                    self.lost.set()
                    self.cancelled.set()
                    return
        finally:
            database.close()


def build_service(settings: Settings, name: str) -> tuple[SingleTargetDataService, ServiceConfig]:
    """The service instance NAME and its merged settings, from the registry."""
    from stdq.registry import registry_for

    registry = registry_for(settings)
    config = registry.service_config(name)
    return registry.service(name), config


def run_job(
    job: Job,
    *,
    settings: Settings,
    store: Store,
    queue: JobQueue,
    owner: str,
    on_progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
) -> Job:
    """Run the claimed JOB to its end; returns the job as it ended (or was released).

    STOP_EVENT (a worker shutting down) makes the service stop at its next
    cancellation check while it talks to the remote service; the job is then
    released with its checkpoint. Once the answer is in, processing finishes.
    ON_PROGRESS gets (text, wait_until) of each progress line.
    """
    job_id = job.id
    secrets: list[str] = []
    context: QueryContext | None = None
    service: SingleTargetDataService | None = None
    querying = {"now": False}
    heartbeat = Heartbeat(queue, job_id, owner, settings.tasks.lease_seconds)

    def cancelled() -> bool:
        if heartbeat.cancelled.is_set():
            return True
        return bool(stop_event is not None and stop_event.is_set() and querying["now"])

    with heartbeat:
        try:
            service, config = build_service(settings, job.service)
            secrets = config.secret_values()

            def progress(text: str, wait_until: float | None = None, *_: Any) -> None:
                text = redact(text, secrets)
                queue.set_progress(job_id, text, wait_until)
                if on_progress:
                    on_progress(text, wait_until)

            context = job_context(
                service, config, job, settings=settings, store=store, queue=queue,
                on_progress=progress, is_cancelled=cancelled,
            )
            if job.cancel_requested or queue.cancel_requested(job_id):
                raise Cancelled("the job was cancelled")
            if queue.last_event_kind(job_id) != "waiting":  # parked: its progress line stays
                progress("querying")
            querying["now"] = True
            products = service.query_service(job.target, dict(job.params), context)
            querying["now"] = False
            if heartbeat.cancelled.is_set():
                raise Cancelled("the job was cancelled")
            progress("processing")
            _process(job, products, settings, store, queue, owner, service, config)
        except NoData as exc:
            product_ids = list((context.checkpoint.get("products") or {}).values()) if context else []
            queue.finish(
                job_id, JobState.SUCCEEDED, owner=owner, rows=0, detections=0, products=product_ids,
                note=redact(f"no data: {exc.message}", secrets), exit_code=errors.EXIT_NO_DATA,
            )
        except Cancelled:
            _stopped(job, queue, owner, heartbeat, stop_event, service, context, secrets)
        except Waiting as exc:  # between two polls of its remote task: the thread is freed
            queue.park(
                job_id, owner, delay=float(exc.retry_after or 1.0), why=redact(exc.message, secrets)
            )
        except Postponed as exc:  # an account limit: queued again, no attempt counted
            queue.release(
                job_id, owner, delay=float(exc.retry_after or 1.0), why=redact(exc.message, secrets)
            )
        except TemporaryFailure as exc:
            message = redact(str(exc.message), secrets)
            fresh = queue.get(job_id) or job
            if job.runner == "worker" and fresh.attempts < fresh.max_attempts:
                delay = retry_delay(fresh.attempts, exc.retry_after)
                queue.requeue(job_id, owner=owner, delay=delay, error=message)
            else:
                if fresh.attempts > 1:
                    message += f" (after {fresh.attempts} attempts)"
                queue.finish(
                    job_id, JobState.FAILED, owner=owner, error=message,
                    exit_code=errors.EXIT_TEMPORARY,
                )
        except StdqError as exc:
            queue.finish(
                job_id, JobState.FAILED, owner=owner, error=redact(str(exc), secrets),
                exit_code=exc.exit_code,
            )
        except RecursionError:
            # a hostile answer nested too deeply for a JSON/XML reader: the answer's fault
            queue.finish(
                job_id, JobState.FAILED, owner=owner,
                error=f"{job.service}: an answer was nested too deeply to be read",
                exit_code=errors.EXIT_FAILED,
            )
        except Exception as exc:
            text = redact(traceback.format_exc(), secrets)
            queue.add_event(job_id, "traceback", text)
            queue.finish(
                job_id, JobState.FAILED, owner=owner,
                error=redact(f"internal error: {type(exc).__name__}: {exc}", secrets),
                exit_code=errors.EXIT_FAILED,
            )
        except KeyboardInterrupt:
            # An in-process query interrupted: the job ends as failed (130) with its
            # checkpoint kept, so `stdq jobs retry` resumes the remote task.
            queue.finish(
                job_id, JobState.FAILED, owner=owner,
                error=f"interrupted; resume it with: stdq jobs retry {job_id}",
                exit_code=errors.EXIT_INTERRUPTED,
            )
            raise
        finally:
            if context is not None:
                context.close()
            settle_products(store, queue, job_id)
    return queue.require(job_id)


def settle_products(store: Store, queue: JobQueue, job_id: int) -> None:
    """No product of an ended job stays 'pending': each is marked failed with the job's
    reason (a resumed job processes it again and makes it 'ready')."""
    try:
        ended = queue.get(job_id)
        if ended is None or not ended.final:
            return
        rows = store.conn.execute(
            "SELECT id FROM products WHERE job_id = ? AND state = 'pending'", (job_id,)
        ).fetchall()
        reason = (ended.error or ended.note or "").split("\n")[0] or (
            f"job {job_id} ended ({ended.state}) before the product was processed"
        )
        for row in rows:
            store.mark_product(int(row[0]), state="failed", error=reason)
    except Exception:  # the job's own end is recorded already; this is best effort
        log.warning("job %s: could not mark its unfinished products failed", job_id, exc_info=True)


def safe_checkpoint(checkpoint: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """The checkpoint as saved: a secret a service put in it by mistake is masked."""
    import json

    text = json.dumps(checkpoint, sort_keys=True, default=str)
    masked = redact(text, secrets)
    return checkpoint if masked == text else dict(json.loads(masked))


def _process(
    job: Job,
    products: list[DataProduct],
    settings: Settings,
    store: Store,
    queue: JobQueue,
    owner: str,
    service: SingleTargetDataService,
    config: ServiceConfig,
) -> None:
    """Process the products of a finished query and end the job as succeeded."""
    from stdq.processing import process_product

    job_id = job.id
    params = dict(job.params)
    rows = detections = 0
    product_ids: list[int] = []
    left_notes: list[str] = []
    for product in products:
        result = process_product(
            settings,
            store,
            product,
            query={"service": job.service, "params": params, "job_id": job_id},
            service_info={"class": config.class_path, "version": service.version},
        )
        rows += result.rows
        detections += result.detections
        product_ids.append(result.product_id)
        left_notes += [f"{n} {reason}" for reason, n in result.left_out.items()]
    if rows == 0:
        note = "the service answered, but no usable rows remained"
        if left_notes:
            note += " (left out: " + "; ".join(left_notes) + ")"
        queue.finish(
            job_id, JobState.SUCCEEDED, owner=owner, rows=0, detections=0,
            products=product_ids, note=note, exit_code=errors.EXIT_NO_DATA,
        )
        return
    if detections:  # `stdq update`'s on_new_detection hook, before the job ends (never raises)
        from stdq.update import run_hook

        run_hook(settings, store, queue, job_id, product_ids)
    note = f"{counted(rows, 'row')}, {counted(detections, 'detection')}"
    if left_notes:
        note += "; left out: " + "; ".join(left_notes)
    queue.finish(
        job_id, JobState.SUCCEEDED, owner=owner, rows=rows, detections=detections,
        products=product_ids, note=note, exit_code=errors.EXIT_OK,
    )


def _stopped(
    job: Job,
    queue: JobQueue,
    owner: str,
    heartbeat: Heartbeat,
    stop_event: threading.Event | None,
    service: SingleTargetDataService | None,
    context: QueryContext | None,
    secrets: list[str],
) -> None:
    """The service stopped at a cancellation check: find out why and act on it."""
    job_id = job.id
    if queue.cancel_requested(job_id):
        if service is not None and context is not None:
            cleanup_remote(service, context, queue, job_id, secrets)
        queue.finish(job_id, JobState.CANCELLED, note="cancelled while running", exit_code=1)
    elif heartbeat.lost.is_set():
        log.warning("job %s: its lease was taken by another runner; this one stops", job_id)
    elif stop_event is not None and stop_event.is_set():
        queue.release(job_id, owner)
    else:  # a Cancelled raised by the service itself
        queue.finish(
            job_id, JobState.CANCELLED, owner=owner, note="cancelled by the service", exit_code=1
        )


def job_context(
    service: SingleTargetDataService,
    config: ServiceConfig,
    job: Job,
    *,
    settings: Settings,
    store: Store,
    queue: JobQueue,
    on_progress: Callable[..., None] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
) -> QueryContext:
    """The QueryContext of JOB: checkpoint, events and progress bound to its row, secrets redacted."""
    from stdq.services.base import QueryContext

    job_id = job.id
    secrets = config.secret_values()
    context = QueryContext(
        store=store,
        settings=settings,
        service_config=config,
        job_id=job_id,
        data_product_type=service.data_product_type,
        checkpoint=dict(job.checkpoint),
        on_checkpoint=lambda cp: queue.save_checkpoint(job_id, safe_checkpoint(cp, secrets)),
        on_progress=on_progress,
        is_cancelled=is_cancelled,
        on_event=lambda kind, msg: queue.add_event(job_id, kind, redact(msg, secrets)),
        may_postpone=job.runner == "worker",
    )
    context.client_factory = lambda: service.make_client(context)
    return context


def cleanup_remote(
    service: SingleTargetDataService,
    context: QueryContext,
    queue: JobQueue,
    job_id: int,
    secrets: list[str],
) -> None:
    """Best-effort remote cleanup of a cancelled job (the service's ``cancel_remote``)."""
    # the context may say "cancelled" already: let the cleanup's own requests through
    context.is_cancelled = None
    try:
        service.cancel_remote(dict(context.checkpoint), context)
    except Exception as exc:  # best effort; say so
        queue.add_event(job_id, "cancel", redact(f"remote cleanup failed: {exc}", secrets))


def cleanup_abandoned(settings: Settings, store: Store, queue: JobQueue, job: Job) -> None:
    """Remote cleanup of a job cancelled after its runner died (run by ``Stdq.cancel``)."""
    if not job.checkpoint:
        return
    secrets: list[str] = []
    context = None
    try:
        service, config = build_service(settings, job.service)
        secrets = config.secret_values()
        context = job_context(service, config, job, settings=settings, store=store, queue=queue)
        cleanup_remote(service, context, queue, job.id, secrets)
    except Exception as exc:  # best effort
        queue.add_event(job.id, "cancel", redact(f"remote cleanup failed: {exc}", secrets))
    finally:
        if context is not None:
            context.close()
