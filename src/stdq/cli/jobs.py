"""`stdq jobs ...`: the local background job queue.

``list``, ``status``, ``show`` and ``logs`` read the SQLite queue only (stdlib
and click: no astropy, pandas or httpx), so they start fast.
"""

from __future__ import annotations

import re
import time
from typing import Any

import click

from stdq.cli.common import (
    emit_json,
    exit_with,
    fmt_time,
    message,
    output_options,
    plain_stderr,
    print_table,
    progress_printer,
)
from stdq.errors import BadInput, Interrupted
from stdq.jobs.queue import FINAL_STATES, STATES, JobQueue, is_abandoned, public

EXIT_OK, EXIT_FAILED, EXIT_TEMPORARY = 0, 1, 75
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}


def _state(ctx: click.Context, json_output: bool = False):
    state = ctx.find_root().obj
    if json_output:
        state.json = True
    return state


def _queue(state) -> JobQueue:
    """The job queue of the data dir (without opening a full session)."""
    if state._session is not None:
        return state.session.queue
    queue = getattr(state, "_jobs_queue", None)
    if queue is None:
        queue = JobQueue(state.settings.data_dir)
        state._jobs_queue = queue
        click.get_current_context().call_on_close(queue.close)
    return queue


json_flag = click.option(
    "--json", "json_output", is_flag=True, help="Machine-readable JSON on stdout (as stdq --json)."
)


def parse_duration(text: str) -> float:
    """'30d', '12h', '45m', '90s', '2w' (a bare number is days) -> seconds."""
    match = DURATION.match(text or "")
    if not match:
        raise BadInput(f"--older-than: {text!r} is not a duration (e.g. 30d, 12h, 45m)")
    return float(match.group(1)) * UNITS[match.group(2).lower()]


def target_label(target: dict[str, Any]) -> str:
    position = f"{float(target['ra']):.6f} {float(target['dec']):+.6f}"
    return f"{target['name']} ({position})" if target.get("name") else position


def elapsed(job: dict[str, Any], now: float | None = None) -> str:
    """Run time so far (running) or in all (ended), as H:MM:SS."""
    start = job.get("started_at")
    if not start:
        return ""
    end = job.get("finished_at") or (now or time.time())
    seconds = max(0, int(end - start))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def state_label(job: dict[str, Any], now: float | None = None) -> str:
    state = job["state"]
    if state == "running" and is_abandoned(job, now):
        return "running (runner gone)"
    if state == "queued" and (job.get("run_after") or 0) > (now or time.time()):
        return f"queued (retry after {fmt_time(job['run_after'])})"
    if state == "succeeded" and job.get("exit_code") == 5:
        return "succeeded (no data)"
    if state == "running" and job.get("cancel_requested"):
        return "running (cancelling)"
    return state


def outcome_text(job: dict[str, Any]) -> str:
    if job["state"] in ("failed",) or (job["state"] == "queued" and job.get("error")):
        return job.get("error") or ""
    if job["state"] in FINAL_STATES:
        return job.get("note") or ""
    return job.get("progress") or ("waiting for a worker" if job["state"] == "queued" else "")


@click.group(short_help="The local background job queue.")
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
@json_flag
@click.pass_context
def list_jobs(ctx, state_filter, service, limit, json_output) -> None:
    """List jobs, newest first (all states unless --state)."""
    state = _state(ctx, json_output)
    now = time.time()
    rows = _queue(state).list(state=state_filter, service=service, limit=limit)
    if state.json:
        emit_json([public(j, now) for j in rows])
        return
    if not rows:
        message("no jobs" + (f" in state {state_filter}" if state_filter else ""))
        return
    print_table(
        ["id", "state", "service", "target", "tries", "created", "time", "rows", "progress / outcome"],
        [
            (
                j["id"], state_label(j, now), j["service"], target_label(j["target"]),
                f"{j['attempts']}/{j['max_attempts']}", fmt_time(j["created_at"]), elapsed(j, now),
                "" if j.get("rows") is None else j["rows"], outcome_text(j),
            )
            for j in rows
        ],
    )


@jobs.command("status")
@click.argument("job_id", type=int, required=False)
@json_flag
@click.pass_context
def status(ctx, job_id, json_output) -> None:
    """Jobs per state and the running ones, or one job's state."""
    state = _state(ctx, json_output)
    queue = _queue(state)
    now = time.time()
    if job_id is not None:
        job = queue.require(job_id)
        if state.json:
            emit_json(public(job, now))
            return
        line = f"job {job['id']}: {state_label(job, now)}, {job['service']} {target_label(job['target'])}"
        line += f", attempt {job['attempts']}/{job['max_attempts']}"
        if job.get("started_at"):
            line += f", {elapsed(job, now)}"
        click.echo(line)
        text = outcome_text(job)
        if text:
            click.echo(f"  {text}")
        return
    from stdq.jobs.queue import live_workers

    counts = queue.counts()
    running = queue.running()
    workers = live_workers(queue.conn, state.settings.tasks.lease_seconds)
    if state.json:
        emit_json(
            {
                "counts": counts,
                "running": [public(j, now) for j in running],
                "workers": [
                    {k: w[k] for k in ("id", "pid", "host", "started_at", "heartbeat_at", "burst", "concurrency", "running", "log_path")}
                    for w in workers
                ],
            }
        )
        return
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))
    if workers:
        click.echo(
            f"{len(workers)} worker(s) alive: "
            + ", ".join(f"pid {w['pid']}{' (burst)' if w['burst'] else ''}" for w in workers)
        )
    else:
        click.echo("no worker alive" + (" (start one: stdq jobs worker)" if counts["queued"] else ""))
    if running:
        print_table(
            ["id", "service", "target", "tries", "time", "progress"],
            [
                (
                    j["id"], j["service"], target_label(j["target"]),
                    f"{j['attempts']}/{j['max_attempts']}", elapsed(j, now),
                    ("(runner gone) " if is_abandoned(j, now) else "") + (j.get("progress") or ""),
                )
                for j in running
            ],
        )


@jobs.command("show")
@click.argument("job_id", type=int)
@json_flag
@click.pass_context
def show(ctx, job_id, json_output) -> None:
    """Everything about one job, with its events."""
    state = _state(ctx, json_output)
    queue = _queue(state)
    job = queue.require(job_id)
    events = queue.events(job_id)
    now = time.time()
    if state.json:
        emit_json({**public(job, now), "events": events})
        return
    target = job["target"]
    fields = [
        ("job", job["id"]),
        ("state", state_label(job, now)),
        ("service", job["service"]),
        ("target", target_label(target)),
        ("params", ", ".join(f"{k}={v}" for k, v in job["params"].items()) or "-"),
        ("runner", job["runner"]),
        ("attempts", f"{job['attempts']} of {job['max_attempts']}"),
        ("created", fmt_time(job["created_at"])),
        ("started", fmt_time(job.get("started_at"))),
        ("finished", fmt_time(job.get("finished_at"))),
        ("time", elapsed(job, now)),
        ("progress", job.get("progress") or ""),
        ("rows", "" if job.get("rows") is None else f"{job['rows']} ({job.get('detections') or 0} detections)"),
        ("products", ", ".join(str(p) for p in job["products"])),
        ("note", job.get("note") or ""),
        ("error", job.get("error") or ""),
        ("exit code", "" if job.get("exit_code") is None else job["exit_code"]),
        ("checkpoint", ", ".join(f"{k}={v}" for k, v in job["checkpoint"].items())),
    ]
    for key, value in fields:
        if value not in ("", None):
            click.echo(f"{key + ':':<12}{value}")
    click.echo("events:")
    for event in events:
        click.echo(_event_line(event))


def _event_line(event: dict[str, Any]) -> str:
    text = event["message"].replace("\n", "\n    ")
    return f"  {fmt_time(event['ts'])}  {event['kind']:<10} {text}"


@jobs.command("logs")
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until the job ends.")
@click.option("-n", "--lines", type=click.IntRange(min=1), help="Only the last N events.")
@json_flag
@click.pass_context
def logs(ctx, job_id, follow, lines, json_output) -> None:
    """A job's events; -f follows them until the job ends.

    One line per event: time, kind, message.
    """
    import json

    state = _state(ctx, json_output)
    queue = _queue(state)
    queue.require(job_id)
    events = queue.events(job_id, last=lines)
    if state.json and not follow:
        emit_json(events)
        return

    def show(batch: list[dict[str, Any]]) -> None:
        for event in batch:
            click.echo(json.dumps(event) if state.json else _event_line(event).lstrip())

    show(events)
    if not follow:
        return
    last_id = events[-1]["id"] if events else 0
    try:
        while True:
            job = queue.require(job_id)
            batch = queue.events(job_id, after_id=last_id)
            show(batch)
            if batch:
                last_id = batch[-1]["id"]
            if job["state"] in FINAL_STATES:
                show(queue.events(job_id, after_id=last_id))
                return
            time.sleep(0.5)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped following job {job_id}; it goes on") from None


# -- results and waiting ------------------------------------------------------------------


@jobs.command("result")
@click.argument("job_id", type=int)
@output_options()
@json_flag
@click.pass_context
def result(ctx, job_id, output, fmt, json_output) -> None:
    """The result of a finished job: a summary, or the table with -o.

    Exit codes: 0 done, 5 no data, the job's own code when it failed,
    1 cancelled, 75 not finished yet.
    """
    from stdq.cli.render import finish_job_output
    from stdq.errors import StdqError, TemporaryFailure

    state = _state(ctx, json_output)
    job = state.session.queue.require(job_id)
    if job["state"] not in FINAL_STATES:
        if job["state"] == "running" and is_abandoned(job) and job["runner"] == "inprocess":
            raise StdqError(
                f"job {job_id} was being run by a process that stopped",
                hint=f"resume it: stdq jobs retry {job_id}",
            )
        _autostart(state)
        raise TemporaryFailure(
            f"job {job_id} is {job['state']}: no result yet",
            hint=f"wait for it: stdq jobs wait {job_id} && stdq jobs result {job_id}",
        )
    exit_with(finish_job_output(state, job, output, fmt))


def _autostart(state) -> None:
    """Start a worker for claimable jobs if none is alive (never fails the command)."""
    try:
        from stdq.jobs.worker import ensure_worker

        ensure_worker(state.settings)
    except Exception as exc:  # a worker that cannot start must not hide the answer
        message(f"warning: could not start a worker: {exc}")


def _settled(job: dict[str, Any], now: float) -> bool:
    """Ended, or an in-process job whose process is gone (it waits for `jobs retry`)."""
    if job["state"] in FINAL_STATES:
        return True
    return job["runner"] == "inprocess" and is_abandoned(job, now)


@jobs.command("wait")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S", help="Give up after S seconds (exit 75).")
@json_flag
@click.pass_context
def wait(ctx, job_ids, timeout, json_output) -> None:
    """Wait until the jobs end.

    Exit codes: 0 every job succeeded (a no-data job too), 1 any failed or was
    cancelled (or ran in a process that died: resume it with `stdq jobs retry`),
    75 the timeout came first. Starts a worker when a job is due and none is alive.
    """
    state = _state(ctx, json_output)
    queue = _queue(state)
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        queue.require(job_id)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    live = _live_display()
    next_spawn_check = 0.0
    pause = 0.1
    timed_out = False
    try:
        while True:
            now = time.time()
            current = [queue.require(i) for i in ids]
            pending = [j for j in current if not _settled(j, now)]
            if not pending:
                break
            if time.monotonic() >= next_spawn_check:
                if any(j["runner"] == "worker" for j in pending):
                    _autostart(state)
                next_spawn_check = time.monotonic() + 2.0
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            if live is not None:
                from rich.text import Text

                counts: dict[str, int] = {}
                for j in pending:
                    counts[j["state"]] = counts.get(j["state"], 0) + 1
                spent = int(time.monotonic() - started)
                text = f"waiting for {len(pending)} of {len(ids)} job(s): " + ", ".join(
                    f"{n} {s}" for s, n in counts.items()
                )
                if len(pending) == 1:
                    text += f" — {pending[0].get('progress') or 'waiting for a worker'}"
                live.update(Text(f"{text} ({spent // 60}:{spent % 60:02d})"))
            time.sleep(pause)
            pause = min(1.0, pause * 1.5)
    except KeyboardInterrupt:
        raise Interrupted("stopped waiting; the jobs go on") from None
    finally:
        if live is not None:
            live.stop()
    now = time.time()
    # failed, cancelled, or an in-process job whose process is gone (it will not end by itself)
    failed = [j for j in current if _settled(j, now) and j["state"] != "succeeded"]
    if state.json:
        emit_json([public(j, now) for j in current])
    for job in current:
        message(_wait_line(job, now))
    if failed:
        exit_with(EXIT_FAILED)
    if timed_out:
        message(f"timed out after {timeout:g} s; the jobs go on")
        exit_with(EXIT_TEMPORARY)


def _wait_line(job: dict[str, Any], now: float) -> str:
    line = f"job {job['id']} {state_label(job, now)}"
    if job["state"] == "failed":
        line += f" (exit {job.get('exit_code')}): {job.get('error') or ''}"
    elif job["state"] == "running" and job["runner"] == "inprocess" and is_abandoned(job, now):
        line += f": its process stopped; resume it: stdq jobs retry {job['id']}"
    elif job["state"] in FINAL_STATES:
        line += f": {job.get('note') or ''}"
    elif job.get("progress"):
        line += f": {job['progress']}"
    return line.rstrip(": ")


def _live_display():
    """A transient one-line display on a terminal's stderr (None when plain)."""
    if plain_stderr():
        return None
    from rich.live import Live
    from rich.text import Text

    from stdq.cli.common import console

    live = Live(Text(""), console=console(stderr=True), transient=True)
    live.start()
    return live


# -- changing jobs --------------------------------------------------------------------------


@jobs.command("cancel")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--wait", "wait_end", is_flag=True, help="Wait until a running job has stopped.")
@json_flag
@click.pass_context
def cancel(ctx, job_ids, wait_end, json_output) -> None:
    """Cancel jobs (queued: at once; running: at the next check).

    A running job's service deletes its remote task where it can.
    """
    from stdq.jobs.runner import cleanup_abandoned

    state = _state(ctx, json_output)
    queue = _queue(state)
    results = []
    problems = []
    for job_id in job_ids:
        before = queue.require(job_id)
        job, outcome = queue.request_cancel(job_id)
        if outcome == "cancelled":
            if job.get("checkpoint"):
                session = state.session
                cleanup_abandoned(state.settings, session.store, session.queue, job)
                job = queue.require(job_id)
            how = "before it ran" if before["state"] == "queued" else "(its runner had stopped)"
            message(f"job {job_id} cancelled {how}")
        elif outcome == "requested":
            message(f"job {job_id}: cancel requested; it stops at its next check")
            if wait_end:
                job = _wait_until_final(queue, job_id)
                message(f"job {job_id} {job['state']}")
        elif job["state"] == "cancelled":
            message(f"job {job_id} was already cancelled")
        else:
            problems.append(f"job {job_id} already {job['state']}; nothing to cancel")
        results.append(job)
    if state.json:
        now = time.time()
        emit_json([public(j, now) for j in results] if len(job_ids) > 1 else public(results[0], now))
    if problems:
        raise BadInput("; ".join(problems))


def _wait_until_final(queue: JobQueue, job_id: int) -> dict[str, Any]:
    try:
        while True:
            job = queue.require(job_id)
            if _settled(job, time.time()):
                return job
            time.sleep(0.2)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped waiting; job {job_id} stops at its next check") from None


@jobs.command("retry")
@click.argument("job_id", type=int)
@output_options("In-process job: also write the table here ('-' = stdout).")
@json_flag
@click.pass_context
def retry(ctx, job_id, output, fmt, json_output) -> None:
    """Run a failed, cancelled or abandoned job again.

    It resumes from its checkpoint (e.g. a remote task still running).

    A worker job is queued again for a worker; a job that ran in a `stdq query`
    process (--sync, or a service without background support) runs here again.
    """
    state = _state(ctx, json_output)
    session = state.session
    job = session.queue.retry(job_id)
    if job["runner"] == "worker":
        if output:
            raise BadInput("-o is for in-process jobs; collect this one with: stdq jobs result ID -o PATH")
        _autostart(state)
        message(f"job {job_id} queued again")
        if state.json:
            emit_json({"job_id": job_id, "state": job["state"]})
        else:
            click.echo(job_id)
        return
    from stdq import api
    from stdq.cli.render import finish_job_output
    from stdq.errors import StdqError

    message(f"job {job_id}: running it again here (from its checkpoint)")
    try:
        job = api.run_inprocess(session, job_id, on_progress=progress_printer())
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted job {job_id}", hint=f"resume it: stdq jobs retry {job_id}"
        ) from None
    if job["state"] != "succeeded":
        err = StdqError(job.get("error") or f"job {job_id} {job['state']}")
        err.exit_code = job.get("exit_code") or 1
        raise err
    exit_with(finish_job_output(state, job, output, fmt))


@jobs.command("prune")
@click.option("--older-than", "older_than", default="30d", show_default=True, metavar="AGE", help="Age of finished jobs to delete: 30d, 12h, 45m, 2w.")
@json_flag
@click.pass_context
def prune(ctx, older_than, json_output) -> None:
    """Delete old finished jobs, their events and old worker logs.

    Products stay in the data directory.
    """
    state = _state(ctx, json_output)
    seconds = parse_duration(older_than)
    count = _queue(state).prune(seconds)
    logs_removed = _prune_worker_logs(state.settings.data_dir, seconds)
    if state.json:
        emit_json({"pruned": count, "logs_removed": logs_removed})
        return
    click.echo(f"pruned {count} finished job(s) older than {older_than}"
               + (f" and {logs_removed} worker log(s)" if logs_removed else ""))


def _prune_worker_logs(data_dir, seconds: float) -> int:
    from stdq.jobs.worker import logs_dir

    folder = logs_dir(data_dir)
    if not folder.is_dir():
        return 0
    cutoff = time.time() - seconds
    removed = 0
    for path in folder.glob("worker-*.log"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


# -- the worker -------------------------------------------------------------------------------


@jobs.command("worker")
@click.option("--burst", is_flag=True, help="Exit when no job is claimable (for cron).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True, help="Jobs run at once.")
@click.pass_context
def worker(ctx, burst, concurrency) -> None:
    """Run queued jobs. SIGTERM/Ctrl-C: stop cleanly (a second one: at once)."""
    import logging
    import sys

    from stdq.jobs.worker import run_worker

    state = _state(ctx)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name in ("stdq.worker", "stdq.jobs"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        logger.propagate = False
    exit_with(run_worker(state.settings, burst=burst, concurrency=concurrency))
