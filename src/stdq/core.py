"""The library: one :class:`Stdq` over settings and a data directory, under every command.

>>> from stdq import Stdq
>>> with Stdq() as sdq:                                        # doctest: +SKIP
...     job = sdq.submit("atlas", "SN 2023ixf", mjd_min=60000)
...     sdq.wait([job.id])
...     result = sdq.result(job.id)
...     result.table, result.to_astropy()

Errors are the classes of :mod:`stdq.errors`, each with its exit code. Light at
import: settings, the database and the queue are stdlib; services, HTTP,
pandas and astropy are imported when a method needs them.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from stdq.errors import EXIT_FAILED, BadInput, QueryFailed, StdqError
from stdq.records import Check, Job, JobEvent, JobState, Outcome, Product, Target

if TYPE_CHECKING:
    import pandas as pd
    from astropy.table import Table

    from stdq.config import Settings
    from stdq.db import Database
    from stdq.jobs.queue import JobQueue
    from stdq.lightcurve import LightCurve
    from stdq.masks import Mask
    from stdq.registry import Registry
    from stdq.store import Store
    from stdq.waiting import WorkerKeeper


def _log_warning(text: str) -> None:
    """The "stdq" logger's warning: the default notice (logging imported on first use,
    so that a quick command such as `stdq jobs status` does not import it)."""
    import logging

    logging.getLogger("stdq").warning(text)

ProgressCallback = Callable[[str, "float | None"], None]


# -- results --------------------------------------------------------------------------------


@dataclass
class QueryResult:
    """A job that gave rows: the job, its products and their photometry (normalized schema)."""

    job: Job
    products: list[Product]
    _table: Any = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return int(self.job.rows or 0)

    @property
    def detections(self) -> int:
        return int(self.job.detections or 0)

    @property
    def path(self) -> Path | None:
        """photometry.csv of the first product."""
        return self.products[0].photometry_path if self.products else None

    @property
    def table(self) -> pd.DataFrame:
        """The products' photometry in one pandas DataFrame (read on first use)."""
        if self._table is None:
            import pandas as pd

            from stdq.photometry import read_table

            frames = [read_table(p.photometry_path) for p in self.products if p.state == "ready"]
            if not frames:
                raise QueryFailed(f"job {self.job.id}: its products have no photometry table")
            self._table = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        return self._table

    def to_astropy(self) -> Table:
        """The table as an astropy Table, with the units of the photometry columns."""
        from stdq import photometry

        photometry.quiet_astropy()
        from astropy.table import Table

        table = Table.from_pandas(self.table)
        for name, unit in photometry.UNITS.items():
            if name in table.colnames:
                table[name].unit = unit
        table.meta.update({"zpsys": "ab", "time_scale": "utc", "job_id": self.job.id,
                           "service": self.job.service})
        return table


class CancelTooLate(StdqError):
    """A cancel that lost the race with the job's end: it had already succeeded or
    failed (exit 1). ``job`` is the job as it ended."""

    exit_code = EXIT_FAILED

    def __init__(self, job: Job):
        how = "succeeded (no data)" if job.outcome is Outcome.NO_DATA else str(job.state)
        hint = (
            f"its result: stdq jobs result {job.id}" if job.state is JobState.SUCCEEDED
            else f"what happened: stdq jobs show {job.id}"
        )
        super().__init__(f"job {job.id} had already {how}", hint=hint)
        self.job = job


class Pruned(NamedTuple):
    """What ``prune_jobs`` deleted: finished jobs (with their events) and worker logs."""

    jobs: int
    logs: int


# -- the local targets table --------------------------------------------------------------


class TargetCatalog:
    """The local targets table (asked first when a name is resolved)."""

    def __init__(self, owner: Stdq):
        self._owner = owner

    def add(self, name: str, ra: float | str, dec: float | str, *, source: str = "user") -> Target:
        """Store NAME at (RA, DEC) — degrees or sexagesimal; a same-named entry is replaced."""
        from stdq.targets import add_target, parse_position

        if not name or not name.strip():
            raise BadInput("the target name is empty")
        ra_deg, dec_deg = parse_position(ra, dec)
        self._owner.db.require_writable("add a target")
        return add_target(self._owner.store, name, ra_deg, dec_deg, source=source)

    def list(self) -> list[Target]:
        from stdq.targets import list_targets

        return [
            Target(ra=r["ra"], dec=r["dec"], name=r["name"], resolver="local")
            for r in list_targets(self._owner.store)
        ]

    def rows(self) -> builtins.list[dict[str, Any]]:
        """The table's rows as stored (name, ra, dec, source, created_at)."""
        from stdq.targets import list_targets

        return list_targets(self._owner.store)

    def get(self, name: str) -> Target:
        """The local target NAME (case ignored); BadInput (exit 2) when there is none."""
        row = self._owner.store.conn.execute(
            "SELECT name, ra, dec FROM targets WHERE name = ?", (name.strip(),)
        ).fetchone()
        if row is None:
            raise BadInput(
                f"no local target called {name.strip()!r}",
                hint="list them with: stdq targets list (resolve a name with: stdq targets resolve NAME)",
            )
        return Target(ra=row["ra"], dec=row["dec"], name=row["name"], resolver="local")

    def remove(self, name: str, *, list: str | None = None) -> None:
        """Remove NAME and its cached resolution (and take it off every list); with LIST,
        only take it off that list. BadInput (exit 2) when there is none."""
        from stdq.targets import remove_target
        from stdq.watchlist import forget_everywhere, remove_from_list

        self._owner.db.require_writable("remove a target")
        if list is not None:  # off that list only; the local target stays
            remove_from_list(self._owner.store, list, name)
            return
        if not remove_target(self._owner.store, name):
            raise BadInput(
                f"no local target called {name.strip()!r}", hint="list them with: stdq targets list"
            )
        forget_everywhere(self._owner.store, name)

    def import_file(
        self,
        source: str | Path | Any,
        *,
        list: str | None = None,
        skip_bad: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> Any:
        """Import a target file (a path, "-" for stdin, or an open text file): CSV with a
        header (name and/or ra, dec; a TNS export), ECSV, or one name per line. Names
        without coordinates are resolved. Returns a :class:`stdq.watchlist.ImportReport`;
        with bad lines and not SKIP_BAD nothing is imported (its ``done`` is False)."""
        import sys

        from stdq.watchlist import import_text

        if hasattr(source, "read"):
            text = source.read()
        elif str(source) == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(source).read_text(encoding="utf-8-sig")
            except FileNotFoundError:
                raise BadInput(f"{source}: no such file") from None
            except (OSError, UnicodeDecodeError) as exc:
                raise BadInput(f"{source}: cannot be read ({exc})") from None
        if isinstance(text, bytes):
            text = text.decode("utf-8-sig", errors="replace")
        return import_text(
            self._owner, text, list_name=list, skip_bad=skip_bad, warn=warn or self._owner.notice
        )

    def lists(self) -> builtins.list[str]:
        """The names of the target lists."""
        from stdq.watchlist import list_names

        return list_names(self._owner.store)

    def members(self, list: str) -> builtins.list[Target]:
        """The local targets on LIST, by name (BadInput, exit 2, for an unknown list)."""
        from stdq.watchlist import members

        return [
            Target(ra=r["ra"], dec=r["dec"], name=r["name"], resolver="local")
            for r in members(self._owner.store, list)
        ]


# -- the library object ---------------------------------------------------------------------


class Stdq:
    """Settings + data directory: queries, jobs, products and targets.

    CONFIG: the settings file (default: $STDQ_CONFIG or the platform's folder);
    DATA_DIR: the data directory (default: $STDQ_DATA_DIR, the settings, or the
    platform's). CLOCK: the time source of the database (tests inject one).
    ``notice`` receives what a wait has to say (no worker, a worker that cannot
    start); by default the "stdq" logger's warnings.
    """

    def __init__(
        self,
        config: str | Path | None = None,
        data_dir: str | Path | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ):
        from stdq.registry import load_settings

        self.settings: Settings = load_settings(
            str(config) if config is not None else None,
            str(data_dir) if data_dir is not None else None,
        )
        self.data_dir: Path = Path(self.settings.data_dir)
        self.clock: Callable[[], float] = clock or time.time
        self.notice: Callable[[str], None] = _log_warning
        self.monotonic: Callable[[], float] = time.monotonic  # the poll loop's clock and sleep
        self.sleep: Callable[[float], None] = time.sleep
        self._db: Database | None = None
        self._store: Store | None = None
        self._queue: JobQueue | None = None
        self.targets = TargetCatalog(self)
        self.resolved_from_cache = False  # set by resolve()

    # -- parts ----------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        from stdq.registry import registry_for

        return registry_for(self.settings)

    @property
    def db(self) -> Database:
        """The one Database of this session (shared by the store, the queue, the limiter)."""
        if self._db is None:
            from stdq.db import Database

            self._db = Database(self.data_dir, clock=self.clock)
        return self._db

    @property
    def store(self) -> Store:
        if self._store is None:
            from stdq.store import Store

            self._store = Store(self.db)
        return self._store

    @property
    def queue(self) -> JobQueue:
        if self._queue is None:
            from stdq.jobs.queue import JobQueue

            self._queue = JobQueue(self.db)
        return self._queue

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db = self._store = self._queue = None

    def __enter__(self) -> Stdq:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- targets ------------------------------------------------------------------------------
    def resolve(
        self,
        name: str | None,
        ra: Any = None,
        dec: Any = None,
        *,
        use_cache: bool = True,
        warn: Callable[[str], None] | None = None,
    ) -> Target:
        """A Target from RA/DEC (NAME, if any, kept as its label) or by resolving NAME.

        ResolveError (exit 4) when no resolver knows it; TemporaryFailure (75) when
        every remote resolver is down; BadInput (2) for bad coordinates.
        ``resolved_from_cache`` tells afterwards whether the answer came from the cache.
        """
        from stdq.targets import Resolver, parse_position

        self.resolved_from_cache = False
        if ra is not None or dec is not None:
            ra_deg, dec_deg = parse_position(ra, dec)
            return Target(ra=ra_deg, dec=dec_deg, name=name.strip() if name else None)
        if not name:
            raise BadInput("give a target NAME, or --ra and --dec")
        resolver = Resolver(self.settings, self.store, warn=warn or self.notice)
        target = resolver.resolve(name, use_cache=use_cache)
        self.resolved_from_cache = bool(resolver.last_from_cache)
        return target

    def _target(self, target: str | Target | None, ra: Any, dec: Any) -> Target:
        if isinstance(target, Target):
            if ra is not None or dec is not None:
                raise BadInput("give a Target, or ra and dec, not both")
            return target
        return self.resolve(target, ra, dec)

    # -- queries and jobs -------------------------------------------------------------------
    def submit(
        self,
        service: str,
        target: str | Target | None = None,
        *,
        ra: Any = None,
        dec: Any = None,
        force: bool = False,
        runner: str | None = None,
        reuse: bool | None = None,
        **params: Any,
    ) -> Job:
        """Queue a query as a job (parameters checked first, then the target resolved).

        RUNNER None: "worker" for a service that supports background runs when
        ``[tasks] backend = "database"``, else "inprocess" (run it with :meth:`run`).
        An identical queued or running job is returned instead (``reused``) unless
        FORCE; so is an identical job that succeeded less than ``[tasks] reuse_seconds``
        ago (its products still stored), unless FORCE or REUSE is False. A worker is
        started for a worker job when ``autostart_worker``.
        """
        cls = self.registry.service_class(service)
        cleaned = cls.form(params).clean()
        immediate = self.settings.tasks.backend == "immediate"
        if runner is None:
            runner = "worker" if cls.supports_async and not immediate else "inprocess"
        elif runner not in ("worker", "inprocess"):
            raise BadInput(f"runner {runner!r}: use 'worker' or 'inprocess'")
        if runner == "worker" and immediate:
            raise BadInput(
                '[tasks] backend = "immediate" runs queries in the calling process; '
                'a background job needs backend "database"'
            )
        where = self._target(target, ra, dec)
        if not force and (reuse if reuse is not None else True):
            earlier = self._recent_success(service, where, cleaned)
            if earlier is not None:
                return earlier
        job = self.queue.submit(
            service, where, cleaned, runner=runner,
            max_attempts=self.settings.tasks.max_attempts, force=force,
        )
        if job.runner == "worker":
            self._autostart()
        return job

    def _recent_success(self, service: str, target: Target, cleaned: dict[str, Any]) -> Job | None:
        """An identical job (service, position, options and target name) that succeeded
        less than reuse_seconds ago with its products still ready, marked ``reused``; None
        when there is none (or reuse is off)."""
        import dataclasses

        from stdq.jobs.queue import idempotency_key

        seconds = self.settings.tasks.reuse_seconds
        if seconds <= 0:
            return None
        key = idempotency_key(service, target.ra, target.dec, dict(cleaned))
        rows = self.db.conn.execute(
            "SELECT * FROM jobs WHERE idem_key = ? AND state = 'succeeded' AND finished_at >= ?"
            " ORDER BY finished_at DESC, id DESC LIMIT 5",
            (key, self.clock() - seconds),
        ).fetchall()
        name = (target.name or "").strip().casefold()
        for row in rows:
            job = Job.from_row(row)
            if (job.target.name or "").strip().casefold() != name:
                continue  # the same sky, another name: its products are filed elsewhere
            products = [self.store.get_product(pid) for pid in job.products]
            if all(p is not None and p.state == "ready" for p in products):
                return dataclasses.replace(job, reused=True)
        return None

    def run(self, job_id: int, on_progress: ProgressCallback | None = None) -> Job:
        """Claim in-process job JOB_ID and run it here to its end; returns the ended job.

        BadInput when it cannot be claimed now (it runs elsewhere, or has ended).
        ON_PROGRESS gets (text, wait_until) of each progress line.
        """
        from stdq.jobs.queue import owner_id
        from stdq.jobs.runner import run_job

        owner = owner_id()
        job = self.queue.claim(
            owner, self.settings.tasks.lease_seconds, job_id=job_id, runner="inprocess"
        )
        if job is None:
            current = self.queue.require(job_id)
            raise BadInput(f"job {job_id} is {current.state} and cannot be run here now")
        return run_job(
            job, settings=self.settings, store=self.store, queue=self.queue, owner=owner,
            on_progress=on_progress,
        )

    def query(
        self,
        service: str,
        target: str | Target | None = None,
        *,
        ra: Any = None,
        dec: Any = None,
        force: bool = False,
        on_progress: ProgressCallback | None = None,
        **params: Any,
    ) -> QueryResult:
        """Run one query in this process and return its result (raises the job's error).

        An identical job already running elsewhere is waited for instead; an identical
        one that succeeded less than ``[tasks] reuse_seconds`` ago is returned with no
        request (``result.job.reused``) unless FORCE.
        """
        job = self.submit(
            service, target, ra=ra, dec=dec, force=force, runner="inprocess", **params
        )
        now = self.clock()
        if job.runner == "inprocess" and (
            job.state is JobState.QUEUED or job.is_abandoned(now)
        ):
            self.run(job.id, on_progress=on_progress)
        elif not job.final:
            self.wait([job.id])
        result = self.result(job.id)
        if job.reused and job.final:  # an earlier identical success: no request was sent
            import dataclasses

            result.job = dataclasses.replace(result.job, reused=True)
        return result

    def _keeper(self) -> WorkerKeeper:
        from stdq.waiting import WorkerKeeper

        return WorkerKeeper(self.settings, self.queue, notice=self.notice, clock=self.monotonic)

    def wait(
        self,
        ids: Sequence[int],
        timeout: float | None = None,
        on_progress: Callable[[list[Job]], None] | None = None,
    ) -> list[Job]:
        """Wait until the jobs end (or, in-process, lose their process) or TIMEOUT passes;
        returns them as last seen. Starts a worker when one is needed; never sleeps more
        than 0.5 s at once; KeyboardInterrupt propagates."""
        from stdq.waiting import wait_jobs

        return wait_jobs(
            self.queue, ids, timeout=timeout, on_progress=on_progress, keeper=self._keeper(),
            clock=self.monotonic, sleep=self.sleep,
        )

    def follow_events(
        self,
        job_id: int,
        after_id: int = 0,
        on_events: Callable[[list[JobEvent]], None] = lambda batch: None,
        timeout: float | None = None,
    ) -> Job:
        """Hand the job's new events to ON_EVENTS until it ends (``jobs logs -f``)."""
        from stdq.waiting import follow_events

        return follow_events(
            self.queue, job_id, after_id=after_id, on_events=on_events, timeout=timeout,
            clock=self.monotonic, sleep=self.sleep,
        )

    def result(self, job_id: int) -> QueryResult:
        """The products and table of a job that gave rows.

        Otherwise raises the job's own exception (:meth:`Job.error_exception`):
        NoData (5), its failure's class and code, Cancelled (1), TemporaryFailure
        (75) while it has not ended (a worker is started for it when needed).
        """
        job = self.queue.require(job_id)
        if job.outcome is Outcome.ROWS:
            products = [p for pid in job.products if (p := self.store.get_product(pid))]
            return QueryResult(job=job, products=products)
        if not job.final and job.runner == "worker":
            self._autostart()
        raise job.error_exception(self.clock())

    def cancel(self, job_id: int, *, wait: bool = False) -> Job:
        """Cancel a job: a queued one at once, a running one at its next check (WAIT:
        until it has stopped). The remote task is deleted where the service can; for a
        job whose runner died, here. A job cancelled before is returned as it is.

        CancelTooLate (exit 1, "job N had already succeeded") when the job ended
        otherwise: before the call, or (WAIT) before its runner saw the cancel.
        """
        from stdq.jobs.runner import cleanup_abandoned

        job, what = self.queue.request_cancel(job_id)
        if what == "cancelled":
            if job.checkpoint:
                cleanup_abandoned(self.settings, self.store, self.queue, job)
                job = self.queue.require(job_id)
        elif what == "requested" and wait:
            (job,) = self.wait([job_id])
        if job.final and job.state is not JobState.CANCELLED:
            raise CancelTooLate(job)
        return job

    def retry(self, job_id: int) -> Job:
        """Queue a failed, cancelled or abandoned job again (from its checkpoint).

        A worker job goes to a worker (started when needed); run an in-process one
        with :meth:`run`.
        """
        job = self.queue.retry(job_id)
        if job.runner == "worker":
            self._autostart()
        return job

    def jobs(
        self, state: JobState | str | None = None, service: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs, newest first."""
        return self.queue.list(state=state, service=service, limit=limit)

    def job(self, job_id: int) -> Job:
        """One job; BadInput (exit 2) for an unknown id."""
        return self.queue.require(job_id)

    def events(self, job_id: int, limit: int | None = None) -> list[JobEvent]:
        """The job's events, oldest first (only the last LIMIT when given)."""
        self.queue.require(job_id)
        return self.queue.events(job_id, last=limit)

    def status(self) -> dict[str, Any]:
        """``jobs status --json``: jobs per state, the running ones, the live workers."""
        from stdq.jobs.queue import WORKER_KEYS
        from stdq.records import WORKER_TIMES, with_times

        now = self.clock()
        workers = self.queue.live_workers(self.settings.tasks.lease_seconds)
        return {
            "counts": self.queue.counts(),
            "running": [j.to_json(now) for j in self.queue.running()],
            "workers": [
                with_times({k: w.get(k) for k in WORKER_KEYS}, WORKER_TIMES) for w in workers
            ],
        }

    def prune_jobs(self, older_than_seconds: float) -> Pruned:
        """Delete jobs that ended longer ago than that (with their events) and worker
        logs as old; products stay."""
        count = self.queue.prune(older_than_seconds)
        return Pruned(count, self._prune_worker_logs(older_than_seconds))

    def _prune_worker_logs(self, seconds: float) -> int:
        from stdq.jobs.worker import logs_dir

        folder = logs_dir(self.data_dir)
        if not folder.is_dir():
            return 0
        cutoff = self.clock() - seconds
        removed = 0
        for path in folder.glob("worker-*.log"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def run_worker(self, burst: bool = False, concurrency: int = 1) -> int:
        """Run queued jobs in this process (``stdq jobs worker``); returns the exit code."""
        from stdq.jobs.worker import run_worker

        return run_worker(
            self.settings, burst=burst, concurrency=concurrency,
            clock=self.clock if self.clock is not time.time else None,
        )

    def _autostart(self) -> None:
        """Start a worker for claimable jobs if none is alive (never fails the caller)."""
        if not self.settings.tasks.autostart_worker or not self.db.writable:
            return
        try:
            from stdq.jobs.worker import ensure_worker

            ensure_worker(self.settings, self.queue)
        except Exception as exc:  # the job is queued: say so, do not lose its id
            self.notice(f"warning: could not start a worker ({exc}); run one: stdq jobs worker")

    # -- products ---------------------------------------------------------------------------
    def products(
        self, target: str | None = None, *, service: str | None = None, limit: int | None = None
    ) -> list[Product]:
        """Catalog rows, newest first; only TARGET's (its name, or J<ra>+<dec>, case ignored)
        and SERVICE's when given; at most LIMIT."""
        return self.store.products(target.strip() if target else None, service=service, limit=limit)

    def product(self, product_id: int) -> Product:
        """One product, with product.json and each raw file checked against its sha256
        (``raw_files[i].status``, ``problems``); BadInput (exit 2) for an unknown id."""
        return self.store.inspect_product(product_id)

    def reprocess(self, product_id: int) -> Product:
        """Run the processor again on the stored raw files with the current settings.

        Nothing is downloaded; photometry.csv and product.json are rewritten. BadInput
        while a job still writes the product; QueryFailed when raw files are missing.
        """
        from stdq.processing import process_product

        product = self.product(product_id)
        if product.state == "pending" and product.job_id is not None:
            job = self.queue.get(product.job_id)
            if job is not None and not job.final:
                raise BadInput(
                    f"product {product_id} is still being written by job {job.id} ({job.state})",
                    hint=f"wait for it: stdq jobs wait {job.id}",
                )
        missing = [r.name for r in product.raw_files if r.status == "missing"]
        if missing:
            raise QueryFailed(
                f"product {product_id}: {'raw file' if len(missing) == 1 else 'raw files'}"
                f" {', '.join(missing)} missing from {product.path}/raw",
                hint="the product cannot be processed again; query the service again",
            )
        self.db.require_writable("reprocess a product")
        loaded = self.store.load_product(product_id)
        if not loaded.raw_files:
            raise QueryFailed(f"product {product_id} has no raw files to process")
        process_product(self.settings, self.store, loaded)
        return self.product(product_id)

    def remove_product(self, product_id: int, *, force: bool = False) -> Product:
        """Delete a product (its folder and catalog row) and rebuild its latest.csv.

        Refused (BadInput, exit 2) while a job still writes it, or, unless FORCE, when
        it holds rows of latest.csv that no other product of its target and service has.
        """
        from stdq.latest import folder_products, needed_rows, remove_product

        product = self.store.require_product(product_id)
        self.db.require_writable("remove a product")
        if product.state == "pending" and product.job_id is not None:
            job = self.queue.get(product.job_id)
            if job is not None and not job.final:
                raise BadInput(f"product {product_id} is still being written by job {job.id}")
        if not force:
            others = folder_products(self.store, Path(product.path).parent, product.service)
            lost = needed_rows(self.store, product, others)
            if lost:
                raise BadInput(
                    f"product {product_id} holds {lost} row(s) of the latest light curve of"
                    f" {product.target} / {product.service} that no other product has",
                    hint=f"remove it all the same: stdq products rm {product_id} --force",
                )
        remove_product(self.store, product)
        return product

    def prune_products(
        self, older_than_seconds: float, *, keep_latest: bool = False, force: bool = False
    ) -> builtins.list[Product]:
        """Remove products older than that, oldest first; returns the removed ones.

        Unless FORCE, a product is kept when it holds rows of its latest.csv that no
        remaining product has; KEEP_LATEST also keeps the newest product of each target
        and service.
        """
        from stdq.latest import folder_products, needed_rows, remove_product

        self.db.require_writable("prune products")
        cutoff = self.clock() - older_than_seconds
        old = sorted(
            (p for p in self.store.products() if p.created_at < cutoff
             and (p.state != "pending" or p.job_id is None
                  or (j := self.queue.get(p.job_id)) is None or j.final)),
            key=lambda p: p.id,
        )
        newest: dict[tuple[str, str], int] = {}
        for p in self.store.products():
            key = (str(Path(p.path).parent), p.service)
            newest[key] = max(newest.get(key, 0), p.id)
        removed: builtins.list[Product] = []
        for product in old:
            key = (str(Path(product.path).parent), product.service)
            if keep_latest and newest.get(key) == product.id:
                continue
            if not force:
                others = folder_products(self.store, Path(product.path).parent, product.service)
                if needed_rows(self.store, product, others):
                    continue
            remove_product(self.store, product)
            removed.append(product)
        return removed

    def latest(self, target: str | Target, service: str) -> Path | None:
        """products/<target>/<service>/latest.csv of TARGET (a name, or a Target) and
        SERVICE, rebuilt when missing or behind its products; None when there is no ready
        product."""
        from stdq.latest import current, folder_for

        label = target.label if isinstance(target, Target) else target.strip()
        return current(self.store, folder_for(self.store, label, service), service)

    def update(
        self,
        targets: Sequence[str] = (),
        *,
        list: str | None = None,
        all: bool = False,
        services: Sequence[str] | None = None,
        since: float | str | None = None,
        background: bool = False,
        on_new_detection: str | None = None,
        ecsv: bool = False,
        on_change: Callable[[Any], None] | None = None,
    ) -> builtins.list[Any]:
        """``stdq update``: one job per target and service asking only for epochs after the
        newest stored one (:mod:`stdq.update`); returns the UpdateItems (settled unless
        BACKGROUND). ON_NEW_DETECTION: the hook command (default ``[hooks]``; "" none)."""
        from stdq import update as upd

        chosen = upd.select_targets(self, targets, list, all)
        bound = upd.parse_since(str(since)) if since is not None else None
        items = upd.plan(self, chosen, services, bound)
        hook = self.settings.hooks.on_new_detection if on_new_detection is None else on_new_detection
        self.db.require_writable("update targets")
        upd.submit(self, items, hook or None, background=background)
        if background:
            return items
        upd.run_items(self, items, on_change=on_change or (lambda item: None), ecsv=ecsv)
        return items

    # -- the merged light curve and masks (stdq.lightcurve, stdq.masks) -------------------

    def _stored_target(self, target: str | Target) -> Target:
        """TARGET as its products name it: a Target as is; a name of stored products (case
        ignored) from their catalog row, with no resolver asked; else resolved."""
        if isinstance(target, Target):
            return target
        name = target.strip()
        found = self.store.products(name, limit=1)
        if found:
            return Target(ra=found[0].ra, dec=found[0].dec, name=found[0].target)
        return self.resolve(name)

    def lightcurve(
        self,
        target: str | Target,
        services: Sequence[str] | None = None,
        flux_kind: str | None = None,
        clean: bool = False,
        since: float | str | None = None,
    ) -> LightCurve:
        """``stdq lightcurve``: the merged LightCurve (:mod:`stdq.lightcurve`) of TARGET from
        the latest light curve of every service (or SERVICES); ``.table`` is a DataFrame,
        ``.summary()``, ``.left_aside``, ``.provenance``."""
        from stdq import lightcurve

        return lightcurve.build(self, self._stored_target(target), services=services,
                                flux_kind=flux_kind, clean=clean, since=since)

    def _row_keys(self, target: Target) -> dict[str, set[str]]:
        from stdq import lightcurve, masks
        from stdq.latest import row_keys

        keys: dict[str, set[str]] = {}
        for service in lightcurve.target_services(self, target):
            table = lightcurve.latest_table(self, target, service)
            keys[service] = set(row_keys(table)) if len(table) else set()
        for mask in masks.masks(self.db, target.label):
            keys.setdefault(mask.service, set()).add(mask.source_row_id)
        return keys

    def _rebuild_latest(self, target: Target, services: Sequence[str]) -> None:
        from stdq.latest import folder_for, rebuild

        for service in sorted(set(services)):
            folder = folder_for(self.store, target.label, service)
            if folder.is_dir():
                rebuild(self.store, folder, service)

    def mask(
        self, target: str | Target, ids: Sequence[str], *, reason: str | None = None,
        service: str | None = None,
    ) -> builtins.list[Mask]:
        """Mask rows of TARGET's light curves by source_row_id (``SERVICE:ID`` or SERVICE
        when an id is in two services); kept for the same row in later fetches. Returns
        the Masks; latest.csv of each service concerned is rebuilt (its masked column)."""
        from stdq import masks

        tgt = self._stored_target(target)
        pairs = masks.resolve_ids(ids, tgt.label, self._row_keys(tgt), service=service)
        done = masks.add(self.db, tgt.label, pairs, reason)
        self._rebuild_latest(tgt, [s for s, _ in pairs])
        return done

    def unmask(
        self, target: str | Target, ids: Sequence[str], *, service: str | None = None
    ) -> builtins.list[Mask]:
        """Remove masks of TARGET (as mask() names them); returns the removed Masks."""
        from stdq import masks

        tgt = self._stored_target(target)
        pairs = masks.resolve_ids(ids, tgt.label, self._row_keys(tgt), service=service)
        done = masks.remove(self.db, tgt.label, pairs)
        self._rebuild_latest(tgt, [s for s, _ in pairs])
        return done

    def masks(self, target: str | Target, service: str | None = None) -> builtins.list[Mask]:
        """TARGET's masks (stdq.masks.Mask: service, source_row_id, reason, created_at)."""
        from stdq import masks

        return masks.masks(self.db, self._stored_target(target).label, service)

    def plot(
        self,
        target: str | Target,
        path: str | Path | None = None,
        view: str | None = None,
        t0: str | float | None = None,
        services: Sequence[str] | None = None,
        clean: bool = False,
        flux_kind: str | None = None,
    ) -> Path:
        """``stdq plot``: draw TARGET's merged light curve (:meth:`lightcurve`) into PATH
        (.png/.pdf/.svg/.html; default TARGET.png in the current folder); VIEW "flux" or
        "mag" (default: flux for difference photometry); T0 an MJD or ISO date for the top
        axis; FLUX_KIND as :meth:`lightcurve` ("both": difference fluxes above, total
        magnitudes below). ConfigError (exit 3) without matplotlib (plotly for HTML). See
        :mod:`stdq.plot`."""
        from stdq.plot import plot_target

        return plot_target(self, target, path, view=view, t0=t0, services=services, clean=clean,
                           flux_kind=flux_kind).path

    # -- services ---------------------------------------------------------------------------
    def doctor(self, *, probes: bool = True) -> list[Check]:
        """``stdq doctor``: the settings file, the data directory, each service's
        credentials (never shown) and one cheap request per service and resolver
        (PROBES False: none). Nothing is written. The exit code of the checks:
        :func:`stdq.records.doctor_exit_code` (0, 3 configuration, 75 unreachable)."""
        from stdq.doctor import run_checks

        return run_checks(self.settings, self.registry, probes=probes)

    def services(self) -> list[dict[str, Any]]:
        """``services list --json``: one entry per service."""
        return self.registry.entries()

    def describe(self, name: str) -> dict[str, Any]:
        """``services show --json``: a service's options, settings keys, defaults, secrets."""
        return self.registry.describe(name)


def query(
    service: str,
    target: str | Target | None = None,
    *,
    config: str | Path | None = None,
    data_dir: str | Path | None = None,
    **kw: Any,
) -> QueryResult:
    """One query in this process, in one call: ``stdq.query("panstarrs", "SN 2023ixf")``."""
    with Stdq(config, data_dir) as sdq:
        result = sdq.query(service, target, **kw)
        result.table  # noqa: B018 - read the table while the session is open
        return result
