"""Rendering a finished job: the summary, its JSON, and the table written with -o."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from stdq.cli.common import console, emit_json, message, plain_stdout


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


def result_json(job: dict[str, Any], products: list[dict[str, Any]], output: str | None) -> dict[str, Any]:
    """The documented JSON of a finished foreground query."""
    first = products[0] if products else None
    return {
        "job_id": job["id"],
        "state": job["state"],
        "service": job["service"],
        "target": job["target"],
        "product_id": first["id"] if first else None,
        "rows": int(job.get("rows") or 0),
        "detections": int(job.get("detections") or 0),
        "path": str(Path(first["path"]) / "photometry.csv") if first else None,
        "output": output,
        "products": [
            {
                "id": p["id"],
                "path": p["path"],
                "rows": p["rows"],
                "detections": p["detections"],
                "left_out": p["left_out"],
            }
            for p in products
        ],
        "note": job.get("note"),
    }


def print_summary(job: dict[str, Any], products: list[dict[str, Any]], output: str | None) -> None:
    """A human summary on stdout: object, rows, detections per band, span, left out, paths."""
    import json

    target = job["target"]
    label = target.get("name") or "target"
    lines = [f"{job['service']}: {label} (RA {target['ra']:.6f}, Dec {target['dec']:+.6f})"]
    band_rows = []
    for product in products:
        meta_path = Path(product["path"]) / "product.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        counts = meta.get("counts") or {}
        objects = counts.get("objects") or []
        if objects:
            lines.append(f"  object(s): {', '.join(objects[:5])}{' ...' if len(objects) > 5 else ''}")
        lines.append(
            f"  {counts.get('rows', product['rows'])} rows, {counts.get('detections', product['detections'])}"
            f" detections, flux kind: {', '.join(counts.get('flux_kind') or []) or '-'}"
        )
        if counts.get("mjd_min") is not None:
            lines.append(f"  MJD {counts['mjd_min']:.5f} .. {counts['mjd_max']:.5f}")
        for band, c in (counts.get("bands") or {}).items():
            band_rows.append((band, c["rows"], c["detections"]))
        left = meta.get("left_out") or {}
        if left:
            lines.append(
                "  left out: " + "; ".join(f"{n} {reason}" for reason, n in left.items())
            )
        lines.append(f"  table: {Path(product['path']) / 'photometry.csv'}")
        lines.append(f"  raw:   {Path(product['path']) / 'raw'}")
    if output:
        lines.append(f"  written: {output}")
    if plain_stdout():
        click.echo(lines[0])
        for band, n, d in band_rows:
            click.echo(f"  {band}: {n} rows, {d} detections")
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


def finish_job_output(state, job: dict[str, Any], out: str | None, fmt: str | None) -> int:
    """Write/print the result of a finished job; returns the exit code."""
    from stdq import api
    from stdq.errors import NoData

    session = state.session
    try:
        result = api.job_result(session, job, load_table=out is not None)
    except NoData as exc:
        if state.json and out != "-":
            products = [p for pid in job["products"] if (p := session.store.product_row(pid))]
            emit_json(result_json(job, products, None))
        message(f"{job['service']}: {exc.message}")
        return exc.exit_code
    written = write_output(result.table, out, fmt) if out else None
    if out == "-":
        return 0
    if state.json:
        emit_json(result_json(job, result.products, written))
    else:
        print_summary(job, result.products, written)
    return 0
