"""`stdq jobs ...`: the local background job queue.

Each command calls one :class:`stdq.Stdq` method and renders what it returns
(:mod:`stdq.cli.render`). ``list``, ``status``, ``show`` and ``logs`` only read
the queue (stdlib and click: no astropy, pandas or httpx), so they start fast.
Waiting (``wait``, ``cancel --wait``, ``logs -f``) is the library's one poll
loop; the live line of :mod:`stdq.cli.live` shows what it waits for.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import click

from stdq.cli import PluginGroup
from stdq.cli import render as show_
from stdq.cli.common import (
    emit_json,
    exit_with,
    get_state,
    json_option,
    message,
    output_options,
)
from stdq.errors import EXIT_TEMPORARY, BadInput, Interrupted, StdqError
from stdq.records import counted

if TYPE_CHECKING:
    from stdq.records import JobEvent

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}


def parse_duration(text: str) -> float:
    """'30d', '12h', '45m', '90s', '2w' (a bare number is days) -> seconds."""
    match = DURATION.match(text or "")
    if not match:
        raise BadInput(f"--older-than: {text!r} is not a duration (e.g. 30d, 12h, 45m)")
    return float(match.group(1)) * UNITS[match.group(2).lower()]


@click.group(cls=PluginGroup, short_help="The local background job queue.")
def jobs() -> None:
    """The local background job queue: every query is a job.

    \b
      stdq jobs list --state running
      stdq jobs wait 12 13 --timeout 3600 && stdq jobs result 12 -o out.csv
      stdq jobs worker --burst          # run what is queued, then exit (cron)

    Exit codes of `jobs wait`: 0 all succeeded, 1 any failed or cancelled, 75 timeout.
    """


# -- reading ----------------------------------------------------------------------------


@jobs.command("list")
@click.option("--state", "state_filter", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--service", help="Only jobs of this service.")
@click.option("--limit", type=click.IntRange(min=1), help="At most N jobs (newest first).")
@json_option
def list_jobs(state_filter: str | None, service: str | None, limit: int | None) -> None:
    """List jobs, newest first (all states unless --state)."""
    state = get_state()
    now = time.time()
    found = state.stdq.jobs(state=state_filter, service=service, limit=limit)
    if state.json:
        emit_json([j.to_json(now) for j in found])
    elif not found:
        message("no jobs" + (f" in state {state_filter}" if state_filter else ""))
    else:
        show_.jobs_table(found, now)


@jobs.command("status")
@click.argument("job_id", type=int, required=False)
@json_option
def status(job_id: int | None) -> None:
    """Jobs per state and the running ones, or one job's state."""
    state = get_state()
    now = time.time()
    if job_id is not None:
        job = state.stdq.job(job_id)
        if state.json:
            emit_json(job.to_json(now))
        else:
            show_.job_line(job, now)
        return
    summary = state.stdq.status()
    if state.json:
        emit_json(summary)
    else:
        show_.queue_status(summary)


@jobs.command("show")
@click.argument("job_id", type=int)
@json_option
def show(job_id: int) -> None:
    """Everything about one job, with its events."""
    state = get_state()
    job = state.stdq.job(job_id)
    events = state.stdq.events(job_id)
    now = time.time()
    if state.json:
        emit_json(job.to_json(now, events=events))
    else:
        show_.job_details(job, events, now)


@jobs.command("logs")
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until the job ends.")
@click.option("-n", "--lines", type=click.IntRange(min=1), help="Only the last N events.")
@json_option
def logs(job_id: int, follow: bool, lines: int | None) -> None:
    """A job's events; -f follows them until the job ends.

    One line per event: time, kind, message (with --json -f: one JSON object per line).
    """
    state = get_state()
    sdq = state.stdq
    sdq.job(job_id)  # exit 2 for an unknown id
    events = sdq.events(job_id, limit=lines)
    if state.json and not follow:
        emit_json([e.to_json() for e in events])
        return
    show_.events(events, state.json)
    if not follow:
        return
    from stdq.cli.live import wait_display

    try:
        with wait_display(state) as display:
            display.jobs([sdq.job(job_id)])

            def on_events(batch: list[JobEvent]) -> None:
                show_.events(batch, state.json, echo=display.echo)
                display.jobs([sdq.job(job_id)])  # the live line: what the job does now

            sdq.follow_events(job_id, after_id=events[-1].id if events else 0, on_events=on_events)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped following job {job_id}; it goes on") from None


# -- results and waiting ------------------------------------------------------------------


@jobs.command("result")
@click.argument("job_id", type=int)
@output_options()
@json_option
def result(job_id: int, output: str | None, fmt: str | None) -> None:
    """The result of a finished job: a summary, or the table with -o.

    Exit codes: 0 done, 5 no data, the job's own code when it failed,
    1 cancelled, 75 not finished yet.
    """
    from stdq.cli.query import show_result

    state = get_state()
    show_result(state, job_id, output, fmt)


@jobs.command("wait")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S", help="Give up after S seconds (exit 75).")
@json_option
def wait(job_ids: tuple[int, ...], timeout: float | None) -> None:
    """Wait until the jobs end.

    Exit codes: 0 every job succeeded (a no-data job too), 1 any failed or was
    cancelled (or ran in a process that died: resume it with `stdq jobs retry`),
    75 the timeout came first. Starts a worker when a job is due and none is alive.
    """
    from stdq.cli.live import wait_display
    from stdq.records import wait_exit_code

    state = get_state()
    ids = list(dict.fromkeys(job_ids))
    try:
        with wait_display(state) as display:
            ended = state.stdq.wait(ids, timeout=timeout, on_progress=display.jobs)
    except KeyboardInterrupt:
        raise Interrupted("stopped waiting; the jobs go on") from None
    now = time.time()
    if state.json:
        emit_json([j.to_json(now) for j in ended])
    for job in ended:
        message(show_.wait_line(job, now))
    code = wait_exit_code(ended, now)
    if code == EXIT_TEMPORARY:
        message(f"timed out after {timeout or 0:g} s; the jobs go on")
    exit_with(code)


# -- changing jobs --------------------------------------------------------------------------


@jobs.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--wait", "wait_end", is_flag=True, help="Wait until a running job has stopped.")
@json_option
def cancel(job_ids: tuple[int, ...], wait_end: bool) -> None:
    """Cancel jobs (queued: at once; running: at the next check).

    A running job's service deletes its remote task where it can.
    """
    from stdq.cli.live import wait_display
    from stdq.core import CancelTooLate

    state = get_state()
    sdq = state.stdq
    results = []
    too_late: list[CancelTooLate] = []
    for job_id in job_ids:
        before = sdq.job(job_id)  # exit 2 for an unknown id
        if str(before.state) == "cancelled":
            message(f"job {job_id} was already cancelled")
            results.append(before)
            continue
        try:
            job = sdq.cancel(job_id)
            if job.final:
                how = "before it ran" if str(before.state) == "queued" else "(its runner had stopped)"
                message(f"job {job_id} cancelled {how}")
            else:
                message(f"job {job_id}: cancel requested; it stops at its next check")
                if wait_end:
                    try:
                        with wait_display(state) as display:
                            (job,) = sdq.wait([job_id], on_progress=display.jobs)
                    except KeyboardInterrupt:
                        raise Interrupted(f"stopped waiting; job {job_id} stops at its next check") from None
                    if job.final and str(job.state) != "cancelled":
                        raise CancelTooLate(job)
                    message(f"job {job_id} {show_.state_label(job, time.time())}")
        except CancelTooLate as exc:  # it ended otherwise first
            too_late.append(exc)
            job = exc.job
        results.append(job)
    if state.json:
        now = time.time()
        emit_json([j.to_json(now) for j in results] if len(job_ids) > 1 else results[0].to_json(now))
    if len(too_late) == 1:
        raise too_late[0]
    if too_late:
        raise StdqError("; ".join(exc.message for exc in too_late))


@jobs.command("retry")
@click.argument("job_id", type=int)
@output_options("In-process job: also write the table here ('-' = stdout).")
@json_option
def retry(job_id: int, output: str | None, fmt: str | None) -> None:
    """Run a failed, cancelled or abandoned job again.

    It resumes from its checkpoint (e.g. a remote task still running).

    A worker job is queued again for a worker; a job that ran in a `stdq query`
    process (--sync, or a service without background support) runs here again.
    """
    from stdq.cli.query import run_here, show_result

    state = get_state()
    sdq = state.stdq
    if output and sdq.job(job_id).runner == "worker":
        raise BadInput("-o is for in-process jobs; collect this one with: stdq jobs result ID -o PATH")
    job = sdq.retry(job_id)
    if job.runner == "worker":
        message(f"job {job_id} queued again")
        show_.submitted(job, state.json)
        return
    message(f"job {job_id}: running it again here (from its checkpoint)")
    run_here(state, job_id)
    show_result(state, job_id, output, fmt)


@jobs.command("prune")
@click.option("--older-than", "older_than", default="30d", show_default=True, metavar="AGE", help="Age of finished jobs to delete: 30d, 12h, 45m, 2w.")
@json_option
def prune(older_than: str) -> None:
    """Delete old finished jobs, their events and old worker logs.

    Products stay in the data directory.
    """
    state = get_state()
    seconds = parse_duration(older_than)
    count, logs_removed = state.stdq.prune_jobs(seconds)
    if state.json:
        emit_json({"pruned": count, "logs_removed": logs_removed})
        return
    click.echo(f"pruned {counted(count, 'finished job')} older than {older_than}"
               + (f" and {counted(logs_removed, 'worker log')}" if logs_removed else ""))


# -- the worker -------------------------------------------------------------------------------


@jobs.command("worker")
@click.option("--burst", is_flag=True, help="Exit when no job is claimable (for cron).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True, help="Jobs run at once.")
def worker(burst: bool, concurrency: int) -> None:
    """Run queued jobs. SIGTERM/Ctrl-C: stop cleanly (a second one: at once)."""
    import logging
    import sys

    state = get_state()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name in ("stdq.worker", "stdq.jobs"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False
    exit_with(state.stdq.run_worker(burst=burst, concurrency=concurrency))

