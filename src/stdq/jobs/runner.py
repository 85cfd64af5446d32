"""Run one claimed job: the same code path for workers and in-process queries.

The runner builds the service, gives it a context bound to the job row
(checkpoint, progress, events, cancellation, a lease heartbeat), processes the
products it returns, and ends the job in the state its outcome calls for:

- success -> succeeded (rows, detections, products);
- NoData -> succeeded with 0 rows and a note (``jobs result`` exits 5);
- TemporaryFailure -> queued again with backoff while attempts remain (worker
  jobs), else failed with exit code 75;
- Cancelled -> the service cleans up remotely, then cancelled;
- any other error -> failed with its exit code. Messages are redacted.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import TYPE_CHECKING, Any

from stdq import errors
from stdq.errors import Cancelled, NoData, StdqError, TemporaryFailure
from stdq.http import redact
from stdq.jobs.queue import JobQueue, retry_delay

if TYPE_CHECKING:
    from stdq.config import Settings
    from stdq.store import Store

log = logging.getLogger("stdq.jobs")


class Heartbeat:
    """Renews a job's lease in a background thread and notices cancel requests."""

    def __init__(self, queue: JobQueue, job_id: int, owner: str, lease_seconds: float):
        self.job_id = job_id
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.data_dir = queue.data_dir
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        queue = JobQueue(self.data_dir)  # its own connection: sqlite3 objects stay in one thread
        interval = max(0.2, self.lease_seconds / 3)
        try:
            while not self._stop.wait(interval):
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
            queue.close()


def build_service(settings: Settings, name: str):
    """The service instance NAME, from its merged settings."""
    from stdq import plugins

    config = settings.service(name)
    cls = plugins.load_class(config.class_path, where=f"[services.{name}] class")
    return cls(config, settings), config


def run_job(
    job: dict[str, Any],
    *,
    settings: Settings,
    store: Store,
    queue: JobQueue,
    owner: str,
    on_progress=None,
) -> dict[str, Any]:
    """Run the claimed JOB to its end; returns the job row as it ended."""
    from stdq.processing import process_product
    from stdq.services.base import QueryContext
    from stdq.targets import Target

    job_id = job["id"]
    secrets: list[str] = []
    context = None
    heartbeat = Heartbeat(queue, job_id, owner, settings.tasks.lease_seconds)
    with heartbeat:
        try:
            service, config = build_service(settings, job["service"])
            secrets = config.secret_values()

            def progress(text: str) -> None:
                text = redact(text, secrets)
                queue.set_progress(job_id, text)
                if on_progress:
                    on_progress(text)

            context = QueryContext(
                store=store,
                settings=settings,
                service_config=config,
                job_id=job_id,
                data_product_type=service.data_product_type,
                checkpoint=dict(job.get("checkpoint") or {}),
                on_checkpoint=lambda cp: queue.save_checkpoint(job_id, cp),
                on_progress=progress,
                is_cancelled=heartbeat.cancelled.is_set,
                on_event=lambda kind, msg: queue.add_event(job_id, kind, redact(msg, secrets)),
            )
            context.client_factory = lambda: service.make_client(context)
            if queue.cancel_requested(job_id):
                raise Cancelled("the job was cancelled")
            target = Target.from_dict(job["target"])
            params = dict(job["params"])
            progress("querying")
            products = service.query_service(target, params, context)
            context.check_cancelled()
            progress("processing")
            rows = detections = 0
            product_ids: list[int] = []
            left_notes: list[str] = []
            for product in products:
                result = process_product(
                    settings,
                    store,
                    product,
                    query={"service": job["service"], "params": params, "job_id": job_id},
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
                    job_id, "succeeded", owner=owner, rows=0, detections=0,
                    products=product_ids, note=note, exit_code=errors.EXIT_NO_DATA,
                )
            else:
                note = f"{rows} rows, {detections} detections"
                if left_notes:
                    note += "; left out: " + "; ".join(left_notes)
                queue.finish(
                    job_id, "succeeded", owner=owner, rows=rows, detections=detections,
                    products=product_ids, note=note, exit_code=errors.EXIT_OK,
                )
        except NoData as exc:
            product_ids = list((context.checkpoint.get("products") or {}).values()) if context else []
            queue.finish(
                job_id, "succeeded", owner=owner, rows=0, detections=0, products=product_ids,
                note=redact(f"no data: {exc.message}", secrets), exit_code=errors.EXIT_NO_DATA,
            )
        except Cancelled:
            if context is not None:
                try:
                    service.cancel_remote(dict(context.checkpoint), context)
                except Exception as exc:  # best effort; say so
                    queue.add_event(job_id, "cancel", redact(f"remote cleanup failed: {exc}", secrets))
            if heartbeat.lost.is_set() and not queue.cancel_requested(job_id):
                log.warning("job %s: lease lost to another runner; stopping", job_id)
            else:
                queue.finish(job_id, "cancelled", note="cancelled while running", exit_code=1)
        except TemporaryFailure as exc:
            message = redact(str(exc.message), secrets)
            fresh = queue.get(job_id) or job
            if job.get("runner") == "worker" and fresh["attempts"] < fresh["max_attempts"]:
                delay = retry_delay(fresh["attempts"], exc.retry_after)
                queue.requeue(job_id, owner=owner, delay=delay, error=message)
            else:
                queue.finish(
                    job_id, "failed", owner=owner, error=message, exit_code=errors.EXIT_TEMPORARY
                )
        except StdqError as exc:
            queue.finish(
                job_id, "failed", owner=owner, error=redact(str(exc), secrets),
                exit_code=exc.exit_code,
            )
        except Exception as exc:
            text = redact(traceback.format_exc(), secrets)
            queue.add_event(job_id, "traceback", text)
            queue.finish(
                job_id, "failed", owner=owner,
                error=redact(f"internal error: {type(exc).__name__}: {exc}", secrets),
                exit_code=errors.EXIT_FAILED,
            )
        except KeyboardInterrupt:
            # In-process query interrupted: leave the job running with its checkpoint;
            # its lease runs out and `stdq jobs retry` resumes it.
            queue.add_event(job_id, "interrupted", "interrupted; resume with: stdq jobs retry")
            raise
        finally:
            if context is not None:
                context.close()
    return queue.require(job_id)
