"""The one poll loop: waiting for jobs and following their events.

Used by ``Stdq.wait`` (a foreground ``stdq query``, ``jobs wait``,
``jobs cancel --wait``, the demo) and ``Stdq.follow_events`` (``jobs logs -f``).
It reads the queue, hands what it saw to a callback, and sleeps between looks
with a backoff from 0.05 s to at most 0.5 s (a callback can redraw a live line
at that pace). While a worker job waits, a worker is started every 2 s at most
when none is alive (a job queued again with backoff becomes due later); when
autostart is off and none runs, it says so once per job. Clock and sleep are
injectable. KeyboardInterrupt propagates: the caller decides what it means.
Stdlib only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from stdq.records import Job, JobEvent, JobState

if TYPE_CHECKING:
    from stdq.config import Settings
    from stdq.jobs.queue import JobQueue

FIRST_PAUSE = 0.05
MAX_PAUSE = 0.5
WORKER_CHECK_INTERVAL = 2.0  # seconds between two looks for a live worker

Clock = Callable[[], float]
Sleep = Callable[[float], None]


def poll(
    step: Callable[[], bool],
    *,
    timeout: float | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    first: float = FIRST_PAUSE,
    most: float = MAX_PAUSE,
) -> bool:
    """Call STEP until it returns True (then True) or TIMEOUT seconds pass (then False).

    STEP runs at once, then after pauses growing from FIRST by half each time up
    to MOST; no pause runs past the deadline.
    """
    deadline = None if timeout is None else clock() + max(0.0, timeout)
    pause = first
    while True:
        if step():
            return True
        if deadline is not None:
            left = deadline - clock()
            if left <= 0:
                return False
            sleep(min(pause, left))
        else:
            sleep(pause)
        pause = min(most, pause * 1.5)


class WorkerKeeper:
    """Starts a worker for waiting worker jobs when none is alive; says once when none comes."""

    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        *,
        notice: Callable[[str], None] | None = None,
        clock: Clock = time.monotonic,
        spawn: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.notice = notice or (lambda text: None)
        self.clock = clock
        self.spawn = spawn or self._ensure_worker
        self.next_check = clock()
        self.told: set[int] = set()

    def _ensure_worker(self) -> object:
        from stdq.jobs.worker import ensure_worker

        return ensure_worker(self.settings, self.queue)

    def check(self, pending: Sequence[Job]) -> None:
        """Look (every 2 s at most) whether PENDING worker jobs need a worker, and start one."""
        waiting = [j for j in pending if j.runner == "worker" and not j.final]
        if not waiting or self.clock() < self.next_check:
            return
        self.next_check = self.clock() + WORKER_CHECK_INTERVAL
        if self.settings.tasks.autostart_worker and self.queue.db.writable:
            try:
                self.spawn()
            except Exception as exc:  # the jobs are queued: say so, do not lose them
                self.notice(f"warning: could not start a worker ({exc}); run one: stdq jobs worker")
            return
        queued = [j for j in waiting if j.state is JobState.QUEUED and j.id not in self.told]
        if not queued:
            return
        try:
            alive = self.queue.live_workers(self.settings.tasks.lease_seconds)
        except Exception:
            return
        if alive:
            return
        for job in queued:
            self.told.add(job.id)
            self.notice(
                f"job {job.id} waits for a worker and none is running ([tasks]"
                " autostart_worker = false): start one with `stdq jobs worker`"
            )


def wait_jobs(
    queue: JobQueue,
    ids: Sequence[int],
    *,
    timeout: float | None = None,
    on_progress: Callable[[list[Job]], None] | None = None,
    keeper: WorkerKeeper | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> list[Job]:
    """Wait until every job of IDS has settled (ended, or an in-process job whose process
    died) or TIMEOUT passed; returns the jobs as last seen, in the order of IDS.

    ON_PROGRESS gets the jobs at each look; KEEPER starts workers for them.
    """
    ids = list(dict.fromkeys(ids))
    current = [queue.require(i) for i in ids]  # BadInput for an unknown id, before waiting

    def step() -> bool:
        nonlocal current
        now = queue.now()
        current = [queue.require(i) for i in ids]
        if on_progress is not None:
            on_progress(current)
        pending = [j for j in current if not j.settled(now)]
        if not pending:
            return True
        if keeper is not None:
            keeper.check(pending)
        return False

    poll(step, timeout=timeout, clock=clock, sleep=sleep)
    return current


def follow_events(
    queue: JobQueue,
    job_id: int,
    *,
    after_id: int = 0,
    on_events: Callable[[list[JobEvent]], None],
    timeout: float | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> Job:
    """Hand each new event of JOB_ID (after event AFTER_ID) to ON_EVENTS until the job
    settles (or TIMEOUT passes); returns the job as last seen."""
    last = after_id
    job = queue.require(job_id)

    def step() -> bool:
        nonlocal last, job
        job = queue.require(job_id)
        batch = queue.events(job_id, after_id=last)
        if batch:
            on_events(batch)
            last = batch[-1].id
        if job.settled(queue.now()):
            rest = queue.events(job_id, after_id=last)
            if rest:
                on_events(rest)
            return True
        return False

    poll(step, timeout=timeout, clock=clock, sleep=sleep)
    return job
