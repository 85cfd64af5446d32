"""`stdq lightcurve TARGET`: the merged light curve of one target (``Stdq.lightcurve``).

The table goes to ``-o PATH`` (``-`` or no -o: stdout) in ``--format``; ``--summary``
prints the per-band summary instead (the table then only with -o); ``--json`` prints
the counts, what was left aside and the summary (docs/json.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from stdq.cli.common import emit_json, get_state, json_option, message


def _counts(lc: Any) -> dict[str, int]:
    table = lc.table
    return {s: int((table["service"] == s).sum()) for s in lc.services if (table["service"] == s).any()}


def _aside_text(entry: dict[str, Any]) -> str:
    who = entry.get("service") or entry.get("band") or "?"
    return f"{who} {entry['rows']} ({entry['why']})"


def _print_summary(summary: dict[str, Any]) -> None:
    def mjd(value: Any) -> str:
        return "" if value is None else f"{value:.3f}"

    def mag(value: Any) -> str:
        return "" if value is None else f"{value:.2f}"

    echo = click.echo
    echo(f"target\t{summary['target']['name'] or ''}\tra {summary['target']['ra']}\tdec {summary['target']['dec']}")
    echo(f"surveys\t{', '.join(summary['surveys'])}\tflux kind {summary['flux_kind']}")
    echo(f"span\tMJD {mjd(summary['mjd_first'])} .. {mjd(summary['mjd_last'])}"
         f"\t{(summary['days'] or 0):.1f} days\t{summary['rows']} rows\t{summary['masked']} masked"
         f"\t{summary['flagged']} flagged")
    echo("\t".join(["band", "points", "detections", "first_det", "last_det", "last_nondet_before",
                    "limit", "peak_mag", "peak_mjd"]))
    for band, b in summary["bands"].items():
        first, last = b["first_detection"] or {}, b["last_detection"] or {}
        before, peak = b["last_nondetection_before_first"] or {}, b["peak"] or {}
        echo("\t".join([band, str(b["points"]), str(b["detections"]), mjd(first.get("mjd")),
                        mjd(last.get("mjd")), mjd(before.get("mjd")), mag(before.get("limit")),
                        mag(peak.get("magnitude")), mjd(peak.get("mjd"))]))


@click.command(short_help="One target's merged light curve from every service.")
@click.argument("target", metavar="TARGET")
@click.option("--services", metavar="S1,S2", help="Only these services (default: every service with a product).")
@click.option("--flux-kind", type=click.Choice(["difference", "total", "both"]),
              help="Keep these fluxes (default: difference when any service gave difference fluxes, else total).")
@click.option("--clean", is_flag=True, help="Only rows with quality_flag 0 that are not masked.")
@click.option("--since", metavar="MJD|DATE", help="Only rows from this epoch on (MJD or ISO date).")
@click.option("--summary", "show_summary", is_flag=True,
              help="Print the per-band summary (first/last detection, peak, ...) instead of the table.")
@click.option("-o", "--output", metavar="PATH|-", help="Write the table here ('-' = stdout, the default without --summary/--json).")
@click.option("--format", "fmt", type=click.Choice(["csv", "ecsv", "json", "parquet", "sncosmo", "tom", "skyportal"]),
              help="Format of the table (default: from the file name, else csv).")
@json_option
def lightcurve(
    target: str, services: str | None, flux_kind: str | None, clean: bool, since: str | None,
    show_summary: bool, output: str | None, fmt: str | None,
) -> None:
    """Merge the latest light curve of every service for TARGET into one table, in
    the normalized schema, sorted by time, each row keeping its survey, band,
    flux_kind, quality_flag, product_id, source_row_id, service and masked.

    \b
      stdq lightcurve "SN 2023ixf" -o sn2023ixf.ecsv
      stdq lightcurve "SN 2023ixf" --summary
      stdq lightcurve "SN 2023ixf" --clean --format sncosmo -o sn.dat

    Difference and total fluxes are never mixed silently: --flux-kind defaults
    to difference when any service gave difference fluxes, and what was left
    aside is said on stderr (and in --json). ECSV and Parquet carry units and
    the provenance of every product. Exit 5 when the target has no light curve.
    """
    from stdq import lightcurve as lcmod

    state = get_state()
    chosen = [s.strip() for s in services.split(",") if s.strip()] if services else None
    fmt_name = lcmod.format_for(output, fmt)
    if fmt_name == "parquet":
        from stdq.photometry import require_pyarrow

        require_pyarrow("writing Parquet (--format parquet)")
    lc = state.stdq.lightcurve(target, services=chosen, flux_kind=flux_kind, clean=clean, since=since)
    written: str | None = None
    to_stdout = output == "-" or (output is None and not show_summary and not state.json)
    if to_stdout:
        stream = sys.stdout.buffer
        lcmod.write(lc, stream, fmt_name)
        stream.flush()
    elif output:
        from stdq.store import atomic_write

        path = Path(output).expanduser()
        if path.exists() and not path.is_file():  # /dev/null, a FIFO: written into, never replaced
            with path.open("wb") as fh:
                lcmod.write(lc, fh, fmt_name)
        else:
            atomic_write(path, lambda fh: lcmod.write(lc, fh, fmt_name))
        written = str(path)
    summary = lc.summary()
    if state.json and not to_stdout:
        emit_json({
            "target": lc.target.as_dict(),
            "flux_kind": lc.flux_kind,
            "rows": lc.rows,
            "services": _counts(lc),
            "left_aside": lc.left_aside,
            "output": written,
            "format": fmt_name if written else None,
            "summary": summary,
        })
    elif show_summary:
        _print_summary(summary)
    counts = ", ".join(f"{s} {n}" for s, n in _counts(lc).items()) or "none"
    text = f"lightcurve: {lc.rows} row(s), {lc.flux_kind} fluxes ({counts})"
    if lc.left_aside:
        text += "; left aside: " + "; ".join(_aside_text(e) for e in lc.left_aside)
    if written:
        text += f"; written to {written}"
    message(text)
