"""`stdq products list [TARGET] | show ID | reprocess ID`: the stored data products.

A product is the raw answers of one query (kept byte for byte), the normalized
photometry.csv made from them and product.json (query, processor and cuts,
counts, left-out rows, sha256 of each raw file). ``reprocess`` runs the
processor again on the stored raw files, with the current settings (cuts such
as ``snr_threshold``): no query is sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from stdq.cli.common import emit_json, fmt_time, message, pass_state, print_table


@click.group(short_help="Stored data products.")
def products() -> None:
    """Stored data products: list them, show one, process one again."""


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["photometry"] = str(Path(row["path"]) / "photometry.csv")
    return out


@products.command("list")
@click.argument("target", required=False)
@click.option("--service", metavar="NAME", help="Only this service's products.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N products (newest first).")
@pass_state
def list_products(state, target: str | None, service: str | None, limit: int | None) -> None:
    """The products, newest first; only TARGET's when given (its name, or J<ra>+<dec>)."""
    store = state.session.store
    rows = store.list_products(target.strip() if target else None)
    if service:
        rows = [r for r in rows if r["service"] == service]
    if limit:
        rows = rows[:limit]
    if state.json:
        emit_json([_row_json(r) for r in rows])
        return
    if not rows:
        message("no products" + (f" for target {target!r}" if target else "") + "; make one with: stdq query")
        return
    print_table(
        ("id", "target", "service", "state", "rows", "detections", "left_out", "created", "path"),
        [
            (r["id"], r["target"], r["service"], r["state"], r["rows"], r["detections"],
             r["left_out"], fmt_time(r["created_at"]), r["path"])
            for r in rows
        ],
    )


def _require_row(store, product_id: int) -> dict[str, Any]:
    from stdq.errors import BadInput

    row = store.product_row(product_id)
    if row is None:
        raise BadInput(f"no product with id {product_id}", hint="list them: stdq products list")
    return row


def _read_meta(path: Path) -> tuple[dict[str, Any], str | None]:
    """product.json as a dict, and why it could not be read (None when fine or absent)."""
    if not path.is_file():
        return {}, None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {}, f"product.json cannot be read ({type(exc).__name__})"
    return (meta if isinstance(meta, dict) else {}), None


def product_details(store, product_id: int) -> dict[str, Any]:
    """The catalog row plus what product.json records, and a check of the raw files on disk."""
    from stdq.store import sha256_file

    row = _require_row(store, product_id)
    folder = Path(row["path"])
    meta, meta_problem = _read_meta(folder / "product.json")
    recorded = {r.get("name"): r for r in meta.get("raw_files") or [] if isinstance(r, dict)}
    raw_dir = folder / "raw"
    on_disk = sorted(p.name for p in raw_dir.iterdir() if not p.name.startswith(".")) if raw_dir.is_dir() else []
    raw_files = []
    for name in sorted(set(recorded) | set(on_disk), key=str):
        info = recorded.get(name, {})
        path = raw_dir / str(name)
        actual = sha256_file(path) if path.is_file() else None
        if actual is None:
            status = "missing"
        elif not info.get("sha256"):
            status = "not recorded"
        else:
            status = "ok" if actual == info["sha256"] else "changed"
        raw_files.append(
            {
                "name": name,
                "sha256": info.get("sha256") or actual,
                "sha256_on_disk": actual,
                "status": status,
                "bytes": path.stat().st_size if path.is_file() else info.get("bytes"),
                "url": info.get("url"),
                "content_type": info.get("content_type"),
                "path": str(path),
            }
        )
    return {
        "product": dict(row),
        "paths": {
            "directory": str(folder),
            "photometry": str(folder / "photometry.csv") if (folder / "photometry.csv").is_file() else None,
            "product_json": str(folder / "product.json") if (folder / "product.json").is_file() else None,
            "raw": str(raw_dir),
        },
        "target": meta.get("target"),
        "query": meta.get("query"),
        "service_info": meta.get("service_info"),
        "processor": meta.get("processor"),
        "counts": meta.get("counts"),
        "left_out": meta.get("left_out") or {},
        "service_notes": meta.get("service_notes") or {},
        "raw_files": raw_files,
        "error": row.get("error") or meta.get("error") or meta_problem,
    }


@products.command("show")
@click.argument("product_id", metavar="ID", type=int)
@pass_state
def show_product(state, product_id: int) -> None:
    """One product: query, counts, left-out rows and why, raw files with their sha256, paths."""
    data = product_details(state.session.store, product_id)
    if state.json:
        emit_json(data)
        return
    echo = click.echo
    row = data["product"]
    echo(f"product {row['id']}: {row['service']}, {row['target']} "
         f"(RA {row['ra']:.6f}, Dec {row['dec']:+.6f}), {row['state']}")
    echo(f"  job: {row['job_id'] if row['job_id'] is not None else '-'}; "
         f"created {fmt_time(row['created_at'])}; processed {fmt_time(row['processed_at']) or '-'}")
    query = data["query"] or {}
    if query.get("params") is not None:
        echo(f"  query: {json.dumps(query['params'], sort_keys=True)}")
    processor = data["processor"] or {}
    if processor:
        echo(f"  processor: {processor.get('class')} v{processor.get('version')}; "
             f"cuts {json.dumps(processor.get('cuts') or {}, sort_keys=True)}")
    counts = data["counts"]
    if counts:
        echo(f"  {counts.get('rows')} rows, {counts.get('detections')} detections, "
             f"flux kind: {', '.join(counts.get('flux_kind') or []) or '-'}")
        for band, c in (counts.get("bands") or {}).items():
            echo(f"    {band}: {c['rows']} rows, {c['detections']} detections")
        if counts.get("mjd_min") is not None:
            echo(f"  MJD {counts['mjd_min']:.5f} .. {counts['mjd_max']:.5f}")
    if data["left_out"]:
        echo("  left out: " + "; ".join(f"{n} {reason}" for reason, n in data["left_out"].items()))
    if data["error"]:
        echo(f"  error: {data['error']}")
    echo("  raw files:")
    if not data["raw_files"]:
        echo("    (none)")
    for raw in data["raw_files"]:
        status = "" if raw["status"] == "ok" else f"  [{raw['status'].upper()}]"
        echo(f"    {raw['name']}  {raw['bytes']} bytes  sha256 {raw['sha256']}{status}")
        if raw["url"]:
            echo(f"      from {raw['url']}")
    paths = data["paths"]
    echo(f"  directory: {paths['directory']}")
    echo(f"  table:     {paths['photometry'] or '(none)'}")
    echo(f"  metadata:  {paths['product_json'] or '(none)'}")


@products.command("reprocess")
@click.argument("product_id", metavar="ID", type=int)
@pass_state
def reprocess_product(state, product_id: int) -> None:
    """Run the processor again on the stored raw files, with the current settings.

    Rewrites photometry.csv and product.json (atomically) and prints the new
    counts next to the old ones. Nothing is downloaded.
    """
    from stdq.errors import BadInput, QueryFailed
    from stdq.processing import process_product

    session = state.session
    store = session.store
    row = _require_row(store, product_id)
    if row["state"] == "pending" and row["job_id"] is not None:
        job = session.queue.get(row["job_id"])
        if job and job["state"] in ("queued", "running"):
            raise BadInput(
                f"product {product_id} is still being written by job {job['id']} ({job['state']})",
                hint=f"wait for it: stdq jobs wait {job['id']}",
            )
    missing = [r["name"] for r in product_details(store, product_id)["raw_files"] if r["status"] == "missing"]
    if missing:
        raise QueryFailed(
            f"product {product_id}: raw file(s) {', '.join(map(str, missing))} missing from {row['path']}/raw",
            hint="the product cannot be processed again; query the service again",
        )
    product = store.load_product(product_id)
    if not product.raw_files:
        raise QueryFailed(f"product {product_id} has no raw files to process")
    before = {"rows": row["rows"], "detections": row["detections"], "left_out": row["left_out"]}
    result = process_product(session.settings, store, product)
    after = {"rows": result.rows, "detections": result.detections, "left_out": sum(result.left_out.values())}
    if state.json:
        emit_json(
            {
                "product_id": product_id,
                **after,
                "left_out_reasons": result.left_out,
                "previous": before,
                "path": result.path,
            }
        )
        return

    def change(key: str, label: str) -> str:
        old = before[key]
        was = "" if old == after[key] else f" (was {'-' if old is None else old})"
        return f"{after[key]} {label}{was}"

    click.echo(
        f"product {product_id} reprocessed: {change('rows', 'rows')}, "
        f"{change('detections', 'detections')}, {change('left_out', 'left out')}"
    )
    if result.left_out:
        click.echo("  left out: " + "; ".join(f"{n} {reason}" for reason, n in result.left_out.items()))
    click.echo(f"  table: {result.path}")
