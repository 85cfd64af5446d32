"""Rendering what the library returns: jobs, events, query results, the table written with -o.

Every function takes records (:mod:`stdq.records`) or what a :class:`stdq.Stdq`
method returned, and prints; none asks the database or a service anything.
Tables and text go to stdout, messages to stderr (:func:`stdq.cli.common.message`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from stdq.cli.common import console, emit_json, fmt_time, message, plain_stdout, print_table
from stdq.records import counted

if TYPE_CHECKING:
    from stdq.core import QueryResult
    from stdq.records import Job, JobEvent, Product, Target


# -- jobs -------------------------------------------------------------------------------------


def target_label(target: Target) -> str:
    return _target_text(target.as_dict())


def elapsed(job: Job, now: float | None = None) -> str:
    """Run time so far (running) or in all (ended), as H:MM:SS."""
    return _clock(job.started_at, job.finished_at, now or time.time())


def state_label(job: Job, now: float | None = None) -> str:
    from stdq.records import JobState, Outcome

    now = time.time() if now is None else now
    if job.state is JobState.RUNNING and job.is_abandoned(now):
        return "running (runner gone)"
    if job.state is JobState.QUEUED and (job.run_after or 0) > now:
        return f"queued (retry after {fmt_time(job.run_after)})"
    if job.outcome is Outcome.NO_DATA:
        return "succeeded (no data)"
    if job.state is JobState.RUNNING and job.cancel_requested:
        return "running (cancelling)"
    return str(job.state)


def outcome_text(job: Job) -> str:
    from stdq.records import JobState

    if job.state is JobState.FAILED or (job.state is JobState.QUEUED and job.error):
        return job.error or ""
    if job.final:
        return job.note or ""
    return job.progress or ("waiting for a worker" if job.state is JobState.QUEUED else "")


def jobs_table(jobs: Sequence[Job], now: float) -> None:
    print_table(
        ["id", "state", "service", "target", "tries", "created", "time", "rows", "progress / outcome"],
        [
            (
                j.id, state_label(j, now), j.service, target_label(j.target),
                f"{j.attempts}/{j.max_attempts}", fmt_time(j.created_at), elapsed(j, now),
                "" if j.rows is None else j.rows, outcome_text(j),
            )
            for j in jobs
        ],
    )


def job_line(job: Job, now: float) -> None:
    """`jobs status ID`: one line, and what it does or how it ended."""
    line = f"job {job.id}: {state_label(job, now)}, {job.service} {target_label(job.target)}"
    line += f", attempt {job.attempts}/{job.max_attempts}"
    if job.started_at:
        line += f", {elapsed(job, now)}"
    click.echo(line)
    text = outcome_text(job)
    if text:
        click.echo(f"  {text}")


def queue_status(status: dict[str, Any]) -> None:
    """`jobs status`: counts per state, live workers, running jobs (``Stdq.status()``, as JSON)."""
    counts = status["counts"]
    workers = status["workers"]
    running = status["running"]
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()))
    if workers:
        click.echo(
            f"{counted(len(workers), 'worker')} alive: "
            + ", ".join(f"pid {w['pid']}{' (burst)' if w['burst'] else ''}" for w in workers)
        )
    else:
        click.echo("no worker alive" + (" (start one: stdq jobs worker)" if counts.get("queued") else ""))
    if running:
        print_table(
            ["id", "service", "target", "tries", "time", "progress"],
            [
                (
                    j["id"], j["service"], _target_text(j["target"]), f"{j['attempts']}/{j['max_attempts']}",
                    _clock(j.get("started_at_unix"), None, time.time()),
                    ("(runner gone) " if j.get("abandoned") else "") + (j.get("progress") or ""),
                )
                for j in running
            ],
        )


def _target_text(target: dict[str, Any]) -> str:
    position = f"{float(target['ra']):.6f} {float(target['dec']):+.6f}"
    return f"{target['name']} ({position})" if target.get("name") else position


def _clock(start: float | None, end: float | None, now: float) -> str:
    if not start:
        return ""
    seconds = max(0, int((end or now) - start))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def job_details(job: Job, events: Sequence[JobEvent], now: float) -> None:
    """`jobs show ID` as text."""
    fields = [
        ("job", job.id),
        ("state", state_label(job, now)),
        ("service", job.service),
        ("target", target_label(job.target)),
        ("params", ", ".join(f"{k}={v}" for k, v in job.params.items()) or "-"),
        ("runner", job.runner),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("created", fmt_time(job.created_at)),
        ("started", fmt_time(job.started_at)),
        ("finished", fmt_time(job.finished_at)),
        ("time", elapsed(job, now)),
        ("progress", job.progress or ""),
        ("rows", "" if job.rows is None else f"{job.rows} ({counted(job.detections, 'detection')})"),
        ("products", ", ".join(str(p) for p in job.products)),
        ("note", job.note or ""),
        ("error", job.error or ""),
        ("exit code", "" if job.exit_code is None else job.exit_code),
        ("checkpoint", ", ".join(f"{k}={v}" for k, v in job.checkpoint.items())),
    ]
    for key, value in fields:
        if value not in ("", None):
            text = str(value).replace("\n", "\n" + " " * 12)  # a multi-line note stays under its key
            click.echo(f"{key + ':':<12}{text}")
    click.echo("events:")
    for event in events:
        click.echo(event_line(event))


def event_line(event: JobEvent) -> str:
    text = event.message.replace("\n", "\n    ")
    return f"  {fmt_time(event.ts)}  {event.kind:<10} {text}"


def events(batch: Sequence[JobEvent], as_json: bool, echo: Any = click.echo) -> None:
    """`jobs logs`: one line per event (one JSON object per line with --json -f)."""
    for event in batch:
        echo(json.dumps(event.to_json()) if as_json else event_line(event).lstrip())


def wait_line(job: Job, now: float) -> str:
    """How one waited-for job stands when the wait ends (stderr)."""
    from stdq.records import JobState

    line = f"job {job.id} {state_label(job, now)}"
    if job.state is JobState.FAILED:
        line += f" (exit {job.exit_code}): {job.error or ''}"
    elif job.runner == "inprocess" and job.is_abandoned(now):
        line += f": its process stopped; resume it: stdq jobs retry {job.id}"
    elif job.final:
        line += f": {job.note or ''}"
    elif job.progress:
        line += f": {job.progress}"
    return line.rstrip(": ")


def submitted(job: Job, as_json: bool) -> None:
    """A job handed to a worker (`query --background`, `jobs retry`): its id, or {job_id, state}."""
    if as_json:
        emit_json({"job_id": job.id, "state": str(job.state)})
    else:
        click.echo(job.id)


# -- query results ------------------------------------------------------------------------------


def write_output(table: Any, out: str, fmt: str | None) -> str | None:
    """Write TABLE to OUT ('-' = stdout) as FMT (default: from OUT's suffix, else csv)."""
    from stdq import photometry
    from stdq.store import atomic_write

    if fmt is None:
        suffix = Path(out).suffix.lower().lstrip(".") if out != "-" else ""
        fmt = suffix if suffix in photometry.FORMATS else "csv"
    if out == "-":
        stream = sys.stdout.buffer
        photometry.write_table(table, stream, fmt)
        stream.flush()
        return None
    path = Path(out).expanduser()
    atomic_write(path, lambda fh: photometry.write_table(table, fh, fmt))
    return str(path)


def result_json(job: Job, products: Sequence[Product], output: str | None) -> dict[str, Any]:
    """The documented JSON of a finished foreground query."""
    first = products[0] if products else None
    return {
        "job_id": job.id,
        "state": str(job.state),
        "service": job.service,
        "target": job.target.as_dict(),
        "product_id": first.id if first else None,
        "rows": int(job.rows or 0),
        "detections": int(job.detections or 0),
        "path": str(first.photometry_path) if first else None,
        "output": output,
        "products": [
            {
                "id": p.id,
                "path": str(p.path),
                "rows": p.rows,
                "detections": p.detections,
                "left_out": p.left_out,
            }
            for p in products
        ],
        "note": job.note,
        "reused": bool(job.reused),
    }


def _meta(product: Product) -> dict[str, Any]:
    meta = getattr(product, "meta", None)
    if meta:
        return dict(meta)
    path = product.path / "product.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def summary(job: Job, products: Sequence[Product], output: str | None) -> None:
    """A human summary on stdout: object, rows, detections per band, span, left out, paths."""
    target = job.target
    label = target.name or "target"
    lines = [f"{job.service}: {label} (RA {target.ra:.6f}, Dec {target.dec:+.6f})"]
    band_rows = []
    for product in products:
        meta = _meta(product)
        counts = meta.get("counts") or {}
        objects = counts.get("objects") or []
        if objects:
            lines.append(f"  {'object' if len(objects) == 1 else 'objects'}: {', '.join(objects[:5])}{' ...' if len(objects) > 5 else ''}")
        lines.append(
            f"  {counted(counts.get('rows', product.rows), 'row')},"
            f" {counted(counts.get('detections', product.detections), 'detection')},"
            f" flux kind: {', '.join(counts.get('flux_kind') or []) or '-'}"
        )
        if counts.get("mjd_min") is not None:
            lines.append(f"  MJD {counts['mjd_min']:.5f} .. {counts['mjd_max']:.5f}")
        for band, c in (counts.get("bands") or {}).items():
            band_rows.append((band, c["rows"], c["detections"]))
        left = meta.get("left_out") or {}
        if left:
            lines.append("  left out: " + "; ".join(f"{n} {reason}" for reason, n in left.items()))
        lines.append(f"  table: {product.photometry_path}")
        lines.append(f"  raw:   {product.path / 'raw'}")
    if output:
        lines.append(f"  written: {output}")
    if plain_stdout():
        click.echo(lines[0])
        for band, n, d in band_rows:
            click.echo(f"  {band}: {counted(n, 'row')}, {counted(d, 'detection')}")
        for line in lines[1:]:
            click.echo(line)
        return
    from rich.table import Table

    con = console()
    con.print(f"[bold]{lines[0]}[/bold]")
    if band_rows:
        table = Table(show_edge=False, header_style="bold")
        for col in ("band", "rows", "detections"):
            table.add_column(col)
        for row in band_rows:
            table.add_row(*(str(v) for v in row))
        con.print(table)
    for line in lines[1:]:
        con.print(line)


def write_result(result: QueryResult, out: str, fmt: str | None) -> str | None:
    """RESULT's table to OUT: in the product's own format (CSV) photometry.csv is copied
    (or streamed to stdout) as it is, never read back and written again; another format
    is converted from the table (the one in memory when this process has just made it)."""
    import shutil

    from stdq import photometry

    if fmt is None:
        suffix = Path(out).suffix.lower().lstrip(".") if out != "-" else ""
        fmt = suffix if suffix in photometry.FORMATS else "csv"
    ready = [p for p in result.products if p.state == "ready"]
    if fmt != "csv" or len(ready) != 1 or not ready[0].photometry_path.is_file():
        return write_output(result.table, out, fmt)
    source = ready[0].photometry_path
    if out == "-":
        with open(source, "rb") as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
        return None
    path = Path(out).expanduser()
    photometry.copy_table_file(source, path)
    return str(path)


def query_result(result: QueryResult, out: str | None, fmt: str | None, as_json: bool) -> None:
    """A finished job with rows: the table to -o, then the summary or its JSON."""
    written = write_result(result, out, fmt) if out else None
    if out == "-":
        return
    if as_json:
        emit_json(result_json(result.job, result.products, written))
    else:
        summary(result.job, result.products, written)


def no_data(job: Job, products: Sequence[Product], text: str, as_json: bool, out: str | None) -> None:
    """A job that succeeded without rows: its JSON (rows 0) and why, on stderr."""
    if as_json and out != "-":
        emit_json(result_json(job, products, None))
    message(f"{job.service}: {text}")
