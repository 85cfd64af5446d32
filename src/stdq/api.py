"""The library behind the commands: everything ``stdq query`` does, callable from a notebook.

>>> from stdq import api
>>> result = api.query("panstarrs", "SN 2023ixf")          # doctest: +SKIP
>>> result.table                                             # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stdq.config import Settings, load_settings
from stdq.errors import BadInput, NoData, QueryFailed
from stdq.jobs.queue import JobQueue, owner_id
from stdq.store import Store
from stdq.targets import Resolver, Target, parse_position

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class Session:
    """Settings plus the data directory's store and job queue."""

    settings: Settings
    store: Store
    queue: JobQueue

    @classmethod
    def open(cls, config: str | None = None, data_dir: str | None = None) -> Session:
        settings = load_settings(config, data_dir)
        store = Store(settings.data_dir)
        return cls(settings, store, JobQueue(settings.data_dir))

    def close(self) -> None:
        self.store.close()
        self.queue.close()


@dataclass
class PreparedQuery:
    service_name: str
    service_cls: Any
    target: Target
    params: dict[str, Any]


@dataclass
class QueryResult:
    """A finished job: its row, its products and the combined normalized table."""

    job: dict[str, Any]
    products: list[dict[str, Any]] = field(default_factory=list)
    table: Any = None

    @property
    def rows(self) -> int:
        return int(self.job.get("rows") or 0)


def service_class(session: Session, name: str):
    from stdq.registry import registry_for

    return registry_for(session.settings).service_class(name)


def resolve_target(
    session: Session,
    name: str | None,
    ra: Any = None,
    dec: Any = None,
    *,
    use_cache: bool = True,
    warn=None,
) -> Target:
    """A Target from --ra/--dec (the name, if any, kept as its label) or from NAME."""
    if ra is not None or dec is not None:
        ra_deg, dec_deg = parse_position(ra, dec)
        return Target(ra=ra_deg, dec=dec_deg, name=name.strip() if name else None)
    if not name:
        raise BadInput("give a target NAME, or --ra and --dec")
    return Resolver(session.settings, session.store, warn=warn).resolve(name, use_cache=use_cache)


def prepare_query(
    session: Session,
    service_name: str,
    name: str | None,
    ra: Any = None,
    dec: Any = None,
    params: dict[str, Any] | None = None,
    *,
    warn=None,
) -> PreparedQuery:
    """Validate the parameters (BadInput, exit 2) first, then resolve the target."""
    cls = service_class(session, service_name)
    cleaned = cls.form(params or {}).clean()
    target = resolve_target(session, name, ra, dec, warn=warn)
    return PreparedQuery(service_name, cls, target, cleaned)


def submit(
    session: Session, prepared: PreparedQuery, *, runner: str = "worker", force: bool = False
) -> tuple[dict[str, Any], bool]:
    """Queue the query as a job; (job, created)."""
    return session.queue.submit(
        prepared.service_name,
        prepared.target.as_dict(),
        prepared.params,
        runner=runner,
        max_attempts=session.settings.tasks.max_attempts,
        force=force,
    )


def run_inprocess(session: Session, job_id: int, on_progress=None) -> dict[str, Any]:
    """Claim JOB_ID for this process and run it here; returns the ended job row."""
    from stdq.jobs.runner import run_job

    owner = owner_id()
    job = session.queue.claim(
        owner, session.settings.tasks.lease_seconds, job_id=job_id, runner="inprocess"
    )
    if job is None:
        current = session.queue.require(job_id)
        raise BadInput(f"job {job_id} is {current['state']} and cannot be run here now")
    return run_job(
        job,
        settings=session.settings,
        store=session.store,
        queue=session.queue,
        owner=owner,
        on_progress=on_progress,
    )


def job_result(session: Session, job: dict[str, Any], *, load_table: bool = True) -> QueryResult:
    """The products and combined table of a finished job.

    Raises the job's own error for a failed job, and NoData for a job that
    succeeded with zero rows.
    """
    from stdq.errors import EXIT_NO_DATA, Cancelled, StdqError

    state = job["state"]
    if state == "failed":
        err = StdqError(job.get("error") or "the job failed")
        err.exit_code = job.get("exit_code") or 1
        raise err
    if state == "cancelled":
        raise Cancelled(f"job {job['id']} was cancelled")
    if state != "succeeded":
        raise BadInput(f"job {job['id']} is {state}; wait for it: stdq jobs wait {job['id']}")
    products = [row for pid in job["products"] if (row := session.store.product_row(pid))]
    if not job.get("rows") or job.get("exit_code") == EXIT_NO_DATA:
        raise NoData(f"job {job['id']}: {job.get('note') or 'no data for this target'}")
    result = QueryResult(job=job, products=products)
    if load_table:
        result.table = combined_table(products)
    return result


def combined_table(products: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    from stdq.photometry import read_table

    frames = [read_table(Path(p["path"]) / "photometry.csv") for p in products if p["state"] == "ready"]
    if not frames:
        raise QueryFailed("the job's products have no photometry table")
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def query(
    service: str,
    name: str | None = None,
    *,
    ra: Any = None,
    dec: Any = None,
    config: str | None = None,
    data_dir: str | None = None,
    force: bool = False,
    **params: Any,
) -> QueryResult:
    """Run one query in this process and return its result (the notebook path)."""
    session = Session.open(config, data_dir)
    try:
        prepared = prepare_query(session, service, name, ra, dec, params)
        job, created = submit(session, prepared, runner="inprocess", force=force)
        if created:
            job = run_inprocess(session, job["id"])
        return job_result(session, job)
    finally:
        session.close()
