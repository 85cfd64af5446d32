"""`stdq mask` / `stdq unmask`: rows of a target's light curves set aside by hand
(``Stdq.mask`` / ``Stdq.unmask`` / ``Stdq.masks``), kept across re-fetches."""

from __future__ import annotations

import click

from stdq.cli.common import emit_json, get_state, json_option, message, print_table
from stdq.errors import BadInput

_ID_HELP = "SOURCE_ROW_ID is the source_row_id column of stdq lightcurve; SERVICE:ID names the service."


def _rows(found: list) -> list[list[str]]:
    return [[m.service, m.source_row_id, m.reason or "", m.to_json()["created_at"]] for m in found]


@click.command(short_help="Mask rows of a target's light curves (kept across re-fetches).")
@click.argument("target", metavar="TARGET")
@click.argument("ids", nargs=-1, metavar="[SOURCE_ROW_ID...]")
@click.option("--reason", metavar="TEXT", help="Why (shown by --list).")
@click.option("--service", metavar="NAME", help="The service of every id (else SERVICE:ID or found by id).")
@click.option("--list", "show", is_flag=True, help="List the target's masks.")
@json_option
def mask(target: str, ids: tuple[str, ...], reason: str | None, service: str | None, show: bool) -> None:
    """Mask rows of TARGET's light curves by their source_row_id: the rows stay
    stored, with masked = True in latest.csv, stdq lightcurve and stdq plot;
    --clean leaves them out. A mask names the row, so it holds when the same row
    comes back in a later fetch. An id found in two services must be written
    SERVICE:ID (or use --service).

    \b
      stdq mask "SN 2023ixf" 02a60123o0456c --reason "satellite trail"
      stdq mask "SN 2023ixf" ztf-fps:2384756 ztf:633207400004:2384756
      stdq mask "SN 2023ixf" --list
    """
    state = get_state()
    if show:
        if ids:
            raise BadInput("--list takes no SOURCE_ROW_ID", hint="stdq mask TARGET --list")
        found = state.stdq.masks(target, service)
        if state.json:
            emit_json([m.to_json() for m in found])
        else:
            print_table(["service", "source_row_id", "reason", "created_at"], _rows(found))
        return
    if not ids:
        raise BadInput("give the SOURCE_ROW_ID of each row to mask, or --list", hint=_ID_HELP)
    done = state.stdq.mask(target, ids, reason=reason, service=service)
    if state.json:
        emit_json([m.to_json() for m in done])
    else:
        for m in done:
            click.echo(f"{m.service}:{m.source_row_id}")
    message(f"masked {len(done)} row(s) of {target}")


@click.command(short_help="Unmask rows masked by stdq mask.")
@click.argument("target", metavar="TARGET")
@click.argument("ids", nargs=-1, required=True, metavar="SOURCE_ROW_ID...")
@click.option("--service", metavar="NAME", help="The service of every id (else SERVICE:ID or found by id).")
@json_option
def unmask(target: str, ids: tuple[str, ...], service: str | None) -> None:
    """Remove the masks of these rows of TARGET (as stdq mask names them). Exit 2,
    changing nothing, when one of them is not masked."""
    state = get_state()
    done = state.stdq.unmask(target, ids, service=service)
    if state.json:
        emit_json([m.to_json() for m in done])
    else:
        for m in done:
            click.echo(f"{m.service}:{m.source_row_id}")
    message(f"unmasked {len(done)} row(s) of {target}")
