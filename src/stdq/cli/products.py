"""`stdq products list [TARGET] | show ID | reprocess ID`: the stored data products.

A product is the raw answers of one query (kept byte for byte), the normalized
photometry.csv made from them and product.json (query, processor and cuts,
counts, left-out rows, sha256 of each raw file). ``reprocess`` runs the
processor again on the stored raw files, with the current settings (cuts such
as ``snr_threshold``): no query is sent. Each command is one call of
:class:`stdq.Stdq` (``products``, ``product``, ``reprocess``) and its rendering.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from stdq.cli import PluginGroup
from stdq.cli.common import emit_json, fmt_time, get_state, json_option, message, print_table
from stdq.records import counted

if TYPE_CHECKING:
    from stdq.records import Product


@click.group(cls=PluginGroup, short_help="Stored data products.")
def products() -> None:
    """Stored data products: list them, show one, process one again."""


@products.command("list")
@click.argument("target", required=False)
@click.option("--service", metavar="NAME", help="Only this service's products.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N products (newest first).")
@json_option
def list_products(target: str | None, service: str | None, limit: int | None) -> None:
    """The products, newest first; only TARGET's when given (its name, or J<ra>+<dec>)."""
    state = get_state()
    found = state.stdq.products(target.strip() if target else None)
    found = [p for p in found if not service or p.service == service][:limit]
    if state.json:
        emit_json([p.to_json() for p in found])
        return
    if not found:
        message("no products" + (f" for target {target!r}" if target else "") + "; make one with: stdq query")
        return
    print_table(
        ("id", "target", "service", "state", "rows", "detections", "left_out", "created", "path"),
        [
            (p.id, p.target, p.service, p.state, p.rows, p.detections, p.left_out,
             fmt_time(p.created_at), p.path)
            for p in found
        ],
    )


@products.command("show")
@click.argument("product_id", metavar="ID", type=int)
@json_option
def show_product(product_id: int) -> None:
    """One product: query, counts, left-out rows and why, raw files with their sha256, paths."""
    state = get_state()
    data = state.stdq.product(product_id).details_json()
    if state.json:
        emit_json(data)
    else:
        print_details(data)


def print_details(data: dict[str, Any]) -> None:
    """`products show` as text, from the JSON it prints with --json."""
    echo = click.echo
    row = data["product"]
    echo(f"product {row['id']}: {row['service']}, {row['target']} "
         f"(RA {row['ra']:.6f}, Dec {row['dec']:+.6f}), {row['state']}")
    echo(f"  job: {row['job_id'] if row['job_id'] is not None else '-'}; "
         f"created {fmt_time(row['created_at_unix'])}; processed {fmt_time(row['processed_at_unix']) or '-'}")
    query = data["query"] or {}
    if query.get("params") is not None:
        echo(f"  query: {json.dumps(query['params'], sort_keys=True)}")
    processor = data["processor"] or {}
    if processor:
        echo(f"  processor: {processor.get('class')} v{processor.get('version')}; "
             f"cuts {json.dumps(processor.get('cuts') or {}, sort_keys=True)}")
    counts = data["counts"]
    if counts:
        echo(f"  {counted(counts.get('rows'), 'row')}, {counted(counts.get('detections'), 'detection')}, "
             f"flux kind: {', '.join(counts.get('flux_kind') or []) or '-'}")
        for band, c in (counts.get("bands") or {}).items():
            echo(f"    {band}: {counted(c['rows'], 'row')}, {counted(c['detections'], 'detection')}")
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
        status = "" if raw["status"] == "ok" else f"  [{str(raw['status']).upper()}]"
        echo(f"    {raw['name']}  {raw['bytes']} bytes  sha256 {raw['sha256']}{status}")
        if raw["url"]:
            echo(f"      from {raw['url']}")
    paths = data["paths"]
    echo(f"  directory: {paths['directory']}")
    echo(f"  table:     {paths['photometry'] or '(none)'}")
    echo(f"  metadata:  {paths['product_json'] or '(none)'}")


def _counts(product: Product) -> dict[str, Any]:
    return {"rows": product.rows, "detections": product.detections, "left_out": product.left_out}


def _reasons(product: Product) -> dict[str, Any]:
    """Why rows were left out, from product.json: {reason: count}."""
    return dict(product.meta.get("left_out") or {})


@products.command("reprocess")
@click.argument("product_id", metavar="ID", type=int)
@json_option
def reprocess_product(product_id: int) -> None:
    """Run the processor again on the stored raw files, with the current settings.

    Rewrites photometry.csv and product.json (atomically) and prints the new
    counts next to the old ones. Nothing is downloaded.
    """
    state = get_state()
    sdq = state.stdq
    before = _counts(sdq.product(product_id))
    product = sdq.reprocess(product_id)
    after = _counts(product)
    reasons = _reasons(product)
    if state.json:
        emit_json(
            {
                "product_id": product_id,
                **after,
                "left_out_reasons": reasons,
                "previous": before,
                "path": str(product.photometry_path),
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
    if reasons:
        click.echo("  left out: " + "; ".join(f"{n} {reason}" for reason, n in reasons.items()))
    click.echo(f"  table: {product.photometry_path}")


@products.command("rm")
@click.argument("product_id", metavar="ID", type=int)
@click.option("--force", is_flag=True, help="Remove it even when latest.csv loses rows no other product has.")
@json_option
def rm_product(product_id: int, force: bool) -> None:
    """Remove a product (its folder and catalog row); its latest.csv is rebuilt.

    Refused (exit 2) when the product holds rows of its target's latest.csv that
    no other product has, unless --force.
    """
    state = get_state()
    removed = state.stdq.remove_product(product_id, force=force)
    if state.json:
        emit_json({"removed": [removed.id]})
    else:
        message(f"removed product {removed.id} ({removed.target} / {removed.service})")


@products.command("prune")
@click.option("--older-than", "older_than", required=True, metavar="AGE", help="Age of the products to remove: 30d, 12h, 45m, 2w.")
@click.option("--keep-latest", is_flag=True, help="Keep the newest product of each target and service.")
@click.option("--force", is_flag=True, help="Remove also products holding rows no other product has.")
@json_option
def prune_products(older_than: str, keep_latest: bool, force: bool) -> None:
    """Remove products older than AGE, oldest first; latest.csv files are rebuilt.

    A product holding rows of its latest.csv that no remaining product has is
    kept, unless --force.
    """
    from stdq.cli.jobs import parse_duration

    state = get_state()
    removed = state.stdq.prune_products(parse_duration(older_than), keep_latest=keep_latest, force=force)
    if state.json:
        emit_json({"removed": [p.id for p in removed]})
    else:
        message(f"removed {counted(len(removed), 'product')}")
