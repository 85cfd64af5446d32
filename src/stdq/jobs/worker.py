"""Workers: processes that claim queued jobs and run them (``stdq jobs worker``).

A worker runs ``concurrency`` threads; each claims a job with a lease
(``[tasks] lease_seconds``), runs it through :func:`stdq.jobs.runner.run_job`
(the same code as an in-process query) and claims the next. Each thread has its
own database connections: sqlite3 objects never cross threads.

Live workers are rows of the ``workers`` table, renewed by a heartbeat; a row
whose heartbeat is older than the lease (or whose process on this host is gone)
is a dead worker.

- SIGTERM / SIGINT: stop claiming; a job whose service is waiting on the remote
  side is released at its next check (queued again with its checkpoint, so the
  next worker resumes the remote task); a job being processed finishes. The
  worker then exits 0. A second signal exits at once (the jobs' leases run out
  and another worker takes them up).
- ``--burst``: exit when no job is claimable *now* and none is running. A job
  queued again with backoff becomes due later: the next ``stdq query``,
  ``stdq jobs wait``, ``stdq jobs result`` or ``stdq jobs retry`` starts a
  worker for it (:func:`ensure_worker`), or a cron line running
  ``stdq jobs worker --burst`` does.

:func:`ensure_worker` spawns one detached burst worker (concurrency
:data:`AUTOSTART_CONCURRENCY`, new session, output to
``<data_dir>/logs/worker-<pid>.log``) when a job is claimable and no worker is
alive; an exclusive ``flock`` on ``<data_dir>/worker-spawn.lock`` keeps two
submitters from spawning two workers. No secret goes on the command line: the
worker inherits the environment.

Warm imports: when a thread claims a job, :func:`warm_imports` imports what
processing its result will need (numpy, pandas, the job's processor module) in a
background thread, once per process, while the job talks to the remote service:
a fresh worker no longer spends the first ~0.5 s after a result arrives importing
pandas, and the next job of the same worker finds them imported.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stdq.db import Database
from stdq.jobs.queue import JobQueue, owner_id, worker_id
from stdq.records import JobState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from stdq.config import Settings

log = logging.getLogger("stdq.worker")

IDLE_POLL = 1.0  # seconds between claims of an idle (non-burst) worker thread
LOOKER_WAIT = 0.5  # an idle thread that is not the pool's looker claims again after this at most
# Jobs an autostarted worker runs at once: remote services queue the work, so a
# worker mostly polls; one at a time would run a night's ATLAS queries in series.
AUTOSTART_CONCURRENCY = 4
LOCK_NAME = "worker-spawn.lock"
# imported ahead of a job's processing (warm_imports), before the job's processor module
WARM_MODULES = ("numpy", "pandas", "stdq.photometry", "stdq.processing")
WARM_IMPORTS = True  # off: every job imports them itself when its result is processed
_warmed: set[str] = set()
_warm_lock = threading.Lock()

def warm_imports(settings: Settings, service_name: str) -> threading.Thread | None:
    """Import, in a daemon thread, the modules the processing of a SERVICE_NAME job
    needs (WARM_MODULES, then its processor's module); each module once per process.

    Returns the thread, or None when there was nothing left to import. A module that
    fails to import is left for the job itself (which then reports the error)."""
    if not WARM_IMPORTS:
        return None
    modules = list(WARM_MODULES)
    try:
        from stdq.registry import registry_for

        registry = registry_for(settings)
        dptype = getattr(registry.service_class(service_name), "data_product_type", "")
        path = registry.processor_path(dptype) if dptype else None
    except Exception:  # the job itself says what is wrong with its service
        path = None
    if path:
        modules.append(path.partition(":")[0])
    with _warm_lock:
        todo = [name for name in modules if name not in _warmed and name not in sys.modules]
        _warmed.update(todo)
    if not todo:
        return None
    thread = threading.Thread(target=_import_all, args=(todo,), name="warm-imports", daemon=True)
    thread.start()
    return thread


def _import_all(modules: list[str]) -> None:
    started = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the job's own import of it reports the error
            log.debug("warm import of %s failed: %s", name, exc)
    log.debug("warm imports %s in %.2f s", ", ".join(modules), time.perf_counter() - started)


def logs_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "logs"


def _database(settings: Settings, clock: Callable[[], float] | None) -> Database:
    """A Database of its own for one thread (sqlite3 objects never cross threads)."""
    return Database(settings.data_dir, clock=clock or time.time)


# -- running --------------------------------------------------------------------------


class _Pool:
    """What the threads of one worker share."""

    def __init__(self, size: int = 1) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)  # idle threads wait on it (_idle)
        self.looker = False  # an idle thread watches the queue for the next due job
        self.size = size
        self.busy = 0  # threads claiming or running a job
        self.done = threading.Event()  # burst: nothing left


_POOLS: list[_Pool] = []  # the running workers of this process


def spare_threads() -> int:
    """Threads of this process's workers that wait for a job now (0 outside a worker): a job
    that would wait in its thread may keep it while another thread is free to take any job
    that becomes due (stdq.slots.park_rather_than_sleep)."""
    return sum(max(0, pool.size - pool.busy) for pool in list(_POOLS))


def _thread_main(
    settings: Settings, *, burst: bool, stop: threading.Event, pool: _Pool, name: str,
    clock: Callable[[], float] | None = None,
) -> None:
    from stdq.jobs.runner import run_job
    from stdq.store import Store

    database = _database(settings, clock)
    queue = JobQueue(database)
    store = Store(database)
    owner = f"{owner_id()}/{name}"
    lease = float(settings.tasks.lease_seconds)
    try:
        while not stop.is_set() and not pool.done.is_set():
            with pool.lock:
                pool.busy += 1
            job = None
            try:
                job = queue.claim(owner, lease)
            except Exception as exc:  # a database problem: say it, wait, try again
                log.warning("claiming a job failed: %s", exc)
            if job is None:
                _drain_deferred(settings, database, most=1000 if burst else 10)
                with pool.lock:
                    pool.busy -= 1
                    idle = pool.busy == 0
                if (burst and idle and not _claimable(queue) and not _postponed(database)
                        and not _deletes_left(database)):
                    pool.done.set()
                    with pool.cond:
                        pool.cond.notify_all()
                    break
                _idle(pool, queue, burst, stop)
                continue
            with pool.cond:  # idle threads take up the watch (two: jobs come due in bunches, and
                pool.cond.notify(2)  # each that claims one calls two more, so a bunch fans out)
            try:
                log.info("job %s (%s) claimed, attempt %s", job.id, job.service, job.attempts)
                warm_imports(settings, job.service)
                ended = run_job(
                    job, settings=settings, store=store, queue=queue, owner=owner, stop_event=stop
                )
                what = str(ended.state)
                if ended.state is JobState.QUEUED:
                    what = "released" if stop.is_set() else "queued again"
                detail = ended.error or ended.note or ""
                log.info("job %s %s%s", job.id, what, f": {detail}" if detail else "")
            except Exception as exc:  # run_job ends jobs itself; this is a bug or a dead database
                log.error("job %s: %s: %s", job.id, type(exc).__name__, exc)
            finally:
                _forget_written_tables()
                with pool.lock:
                    pool.busy -= 1
    finally:
        database.close()


def _idle(pool: _Pool, queue: JobQueue, burst: bool, stop: threading.Event) -> None:
    """Wait for work: one idle thread of the pool (the looker) waits until the next job is due
    and claims it; the others wait until a thread that has claimed one calls the next two (or
    LOOKER_WAIT passes), so a due job is not raced for by every idle thread (each claim would
    queue on the database's write lock ahead of the jobs' own writes), and a bunch of due jobs
    is taken up by a fan of threads rather than one after another."""
    with pool.cond:
        if pool.looker:
            pool.cond.wait(timeout=LOOKER_WAIT)
            return
        pool.looker = True
    try:
        stop.wait(_idle_wait(queue, burst))
    finally:
        with pool.cond:
            pool.looker = False


def _forget_written_tables() -> None:
    """Drop the table the job's processing kept for a later ``-o`` (a CLI process uses it; a
    worker does not, and must not hold the last job's table in memory while it waits)."""
    photometry = sys.modules.get("stdq.photometry")
    if photometry is not None:
        photometry.forget_written()


def _postponed(database: Database) -> bool:
    """Whether a job postponed by an account limit (stdq.slots) waits: a burst worker stays."""
    from stdq.slots import postponed_due

    return postponed_due(database) is not None


def _deletes_left(database: Database) -> bool:
    """Whether a deferred DELETE (stdq.slots) is still to be sent: a burst worker stays for it
    (one that failed DELETE_TRIES times is left for a later worker)."""
    from stdq.slots import DELETE_TRIES, has_deferred

    return has_deferred(database, retried_below=DELETE_TRIES)


def _drain_deferred(settings: Settings, database: Database, *, most: int) -> None:
    """An idle thread DELETEs remote tasks whose DELETE was deferred (stdq.slots; the ATLAS
    write budget), as many as the budget has room for now, when any wait; never raises."""
    from stdq.slots import has_deferred

    if not has_deferred(database):
        return
    try:
        from stdq.registry import registry_for

        service = registry_for(settings).service("atlas")
        drain = getattr(service, "drain_deferred", None)
        if drain is not None:
            done = drain(database, most=most)
            if done:
                log.info("deleted %d finished remote task(s) whose DELETE was deferred", done)
    except Exception as exc:  # best effort: the list stays for the next idle moment
        log.warning("deferred deletes: %s", exc)


def _claimable(queue: JobQueue) -> bool:
    try:
        return queue.runnable_now()
    except Exception:
        return True


def _idle_wait(queue: JobQueue, burst: bool) -> float:
    """How long an idle thread waits before it tries to claim again."""
    wait = 0.2 if burst else IDLE_POLL
    try:
        due = queue.next_due()
    except Exception:
        return wait
    if due is not None:
        wait = min(wait, max(0.05, due - queue.now()))
    return wait


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM/SIGINT: the first stops the worker cleanly, the second exits at once."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now; running jobs are taken up after their lease")
            os._exit(128 + signum)
        stop.set()
        log.warning(
            "stopping: no new jobs; jobs waiting on a remote service are released "
            "(a second signal exits at once)"
        )

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    return previous


def run_worker(
    settings: Settings,
    *,
    burst: bool = False,
    concurrency: int = 1,
    stop_event: threading.Event | None = None,
    clock: Callable[[], float] | None = None,
) -> int:
    """Run jobs until stopped (or, with BURST, until nothing is claimable); returns 0."""
    concurrency = max(1, int(concurrency))
    stop = stop_event or threading.Event()
    previous = _install_signals(stop)
    database = _database(settings, clock)
    queue = JobQueue(database)
    queue.db.require_writable("run a worker")
    pid = os.getpid()
    lease = float(settings.tasks.lease_seconds)
    beat_stop = threading.Event()
    pool = _Pool(concurrency)
    _POOLS.append(pool)

    def beat() -> None:
        beat_db = _database(settings, clock)
        beat_queue = JobQueue(beat_db)
        try:
            while not beat_stop.wait(max(0.2, min(5.0, lease / 3))):
                with contextlib.suppress(Exception):
                    beat_queue.register_worker(
                        pid, burst=burst, concurrency=concurrency, running=pool.busy
                    )
        finally:
            beat_db.close()

    log.info(
        "worker %s started (%s, concurrency %d, data dir %s)",
        worker_id(), "burst" if burst else "until stopped", concurrency, settings.data_dir,
    )
    try:
        queue.register_worker(pid, burst=burst, concurrency=concurrency)
        beater = threading.Thread(target=beat, name="worker-heartbeat", daemon=True)
        beater.start()
        while True:
            pool.done.clear()
            threads = [
                threading.Thread(
                    target=_thread_main,
                    args=(settings,),
                    kwargs={
                        "burst": burst, "stop": stop, "pool": pool, "name": f"t{i}", "clock": clock,
                    },
                    name=f"worker-{i}",
                    daemon=True,
                )
                for i in range(concurrency)
            ]
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.5)
            if stop.is_set() or not burst:
                break
            # Burst: leave the table, then look once more, so a job queued while we
            # were deciding to exit is not stranded (its submitter saw us alive).
            beat_stop.set()
            beater.join(timeout=5)
            queue.unregister_worker(pid)
            if not queue.runnable_now():
                break
            queue.register_worker(pid, burst=burst, concurrency=concurrency)
            beat_stop.clear()
            beater = threading.Thread(target=beat, name="worker-heartbeat", daemon=True)
            beater.start()
    finally:
        beat_stop.set()
        with contextlib.suppress(ValueError):
            _POOLS.remove(pool)
        with contextlib.suppress(Exception):
            queue.unregister_worker(pid)
        database.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("worker %s stopped", worker_id())
    return 0


# -- spawning -------------------------------------------------------------------------


@contextlib.contextmanager
def _spawn_lock(data_dir: Path) -> Iterator[None]:
    """An exclusive lock on a file of the data dir (no-op where flock does not exist)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    path = Path(data_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def worker_command(settings: Settings) -> list[str]:
    """The command line of a detached burst worker for these settings (no secrets)."""
    cmd = [sys.executable, "-m", "stdq", "--data-dir", str(settings.data_dir)]
    if settings.file_exists:
        cmd += ["--config", str(settings.path)]
    return [*cmd, "jobs", "worker", "--burst", "--concurrency", str(AUTOSTART_CONCURRENCY)]


def spawn_worker(settings: Settings) -> tuple[int, Path]:
    """Start a detached burst worker; returns its pid and log file."""
    folder = logs_dir(settings.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".worker-spawn-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(tmp, "ab") as out:
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(
                subprocess, "CREATE_NEW_PROCESS_GROUP", 0
            )
        proc = subprocess.Popen(
            worker_command(settings),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            close_fds=True,
            **kwargs,
        )
    path = folder / f"worker-{proc.pid}.log"
    os.replace(tmp, path)
    return proc.pid, path


def ensure_worker(settings: Settings, queue: JobQueue | None = None) -> int | None:
    """Spawn a detached burst worker when a job is claimable and no worker is alive.

    Returns the new worker's pid, or None when none was needed (or autostart is off).
    QUEUE: the caller's (its Database and clock); else one is opened for this call.
    """
    if not settings.tasks.autostart_worker or settings.tasks.backend != "database":
        return None
    own = queue is None
    queue = queue or JobQueue(settings.data_dir)
    try:
        if not queue.runnable_now():
            return None
        with _spawn_lock(settings.data_dir):
            if queue.live_workers(settings.tasks.lease_seconds):
                return None
            pid, path = spawn_worker(settings)
            # Registered by us before the lock is released: the next submitter sees it.
            queue.register_worker(
                pid, burst=True, concurrency=AUTOSTART_CONCURRENCY, log_path=str(path)
            )
            log.info("started worker %s (log: %s)", pid, path)
            return pid
    finally:
        if own:
            queue.close()
