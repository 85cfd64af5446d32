"""`stdq update [NAME...] [--list NAME | --all]`: bring many light curves up to date
(``Stdq.update``; the planner and runner in :mod:`stdq.update`).

On a terminal a live table (target x service: state, new rows, new detections) on
stderr; piped, one line per finished item on stdout; ``--json`` an array of items.
Exit 0 when every job ended (new rows or none), 75 when any ended in a temporary
failure or waits for a retry, 1 when any failed, 3 for configuration.
"""

from __future__ import annotations

from typing import Any

import click

from stdq.cli.common import emit_json, exit_with, get_state, json_option, message, plain_stderr

COLUMNS = ("target", "service", "state", "new_rows", "new_detections", "rows_total", "job")
MAX_ROWS = 30  # a longer run shows its running items and the latest ended ones


def _cells(item: Any) -> list[str]:
    def num(value: Any) -> str:
        return "" if value is None else str(value)

    return [
        item.target.label, item.service, item.state, num(item.new_rows), num(item.new_detections),
        num(item.rows_total), num(item.job_id),
    ]


def _line(item: Any) -> str:
    """One finished item, for piped output (tab-separated)."""
    text = "\t".join(_cells(item))
    extra = f"\t{item.error}" if item.error else ""
    if item.hook == "failed":
        extra += f"\thook failed (see: stdq jobs logs {item.job_id})"
    return text + extra


class _Table:
    """The live table on stderr (rich Live), redrawn when an item changes."""

    def __init__(self) -> None:
        from rich.live import Live

        from stdq.cli.common import console

        self.items: list[Any] = []
        self.live = Live(console=console(stderr=True), refresh_per_second=4, transient=False)

    def render(self) -> Any:
        from rich.table import Table

        shown = self.items
        caption = None
        if len(shown) > MAX_ROWS:  # the unsettled ones, then the latest settled
            busy = sorted(
                (i for i in shown if not i.settled and i.state != "planned"),
                key=lambda i: i.state != "running",
            )
            done = [i for i in shown if i.settled]
            shown = (busy + done[-max(0, MAX_ROWS - len(busy)):])[:MAX_ROWS]
            caption = f"{len(done)} of {len(self.items)} done"
        table = Table(show_edge=False, header_style="bold", caption=caption)
        for col in COLUMNS:
            table.add_column(col)
        for item in shown:
            table.add_row(*_cells(item))
        return table

    def change(self, item: Any) -> None:
        if item not in self.items:
            self.items.append(item)
        self.live.update(self.render())


@click.command(short_help="Fetch only the new epochs of many targets.")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--list", "list_name", metavar="NAME", help="The targets of this list.")
@click.option("--all", "all_targets", is_flag=True, help="Every local target.")
@click.option("--services", metavar="S1,S2", help="Services to ask (default: those each target has products of).")
@click.option("--since", metavar="MJD|DATE", help="Ask from this epoch (MJD or ISO date), not from the newest stored one.")
@click.option("--background", is_flag=True, help="Submit the jobs, print them and return at once.")
@click.option("--format", "fmt", type=click.Choice(["csv", "ecsv"]), default="csv", show_default=True,
              help="latest.csv, and with ecsv also latest.ecsv (kept up to date from then on).")
@click.option("--on-new-detection", "hook", metavar="COMMAND",
              help="Run COMMAND (JSON on stdin) per target and service with new detections"
              " (default: [hooks] on_new_detection; '' none).")
@json_option
def update(
    names: tuple[str, ...], list_name: str | None, all_targets: bool, services: str | None,
    since: str | None, background: bool, fmt: str, hook: str | None,
) -> None:
    """Bring light curves up to date: one job per target and service, asking only for
    the epochs after the newest one stored (minus a short overlap; everything the
    first time).

    \b
      stdq targets import watchlist.csv --list nightly
      stdq update --list nightly --services atlas,ztf
      stdq update "SN 2023ixf" --since 2023-05-01

    Rows already stored (same source_row_id) are not counted as new. Each
    target and service keeps products/<target>/<service>/latest.csv, built from
    all its products. Exit 0 when every job ended (new rows or none), 75 when
    any ended in a temporary failure (or waits for a retry), 1 when any failed,
    3 for configuration.
    """
    from stdq.update import exit_code

    state = get_state()
    chosen = [s.strip() for s in services.split(",") if s.strip()] if services else None
    live = None if state.json or background or plain_stderr() else _Table()

    def changed(item: Any) -> None:
        if live is not None:
            live.change(item)
        elif item.settled and not state.json:
            click.echo(_line(item))

    if live is not None:
        with live.live:
            items = state.stdq.update(
                names, list=list_name, all=all_targets, services=chosen, since=since,
                background=background, on_new_detection=hook, ecsv=fmt == "ecsv", on_change=changed,
            )
    else:
        items = state.stdq.update(
            names, list=list_name, all=all_targets, services=chosen, since=since,
            background=background, on_new_detection=hook, ecsv=fmt == "ecsv", on_change=changed,
        )
    if state.json:
        emit_json([item.to_json() for item in items])
    elif background:
        for item in items:
            job = f"job {item.job_id}" if item.job_id is not None else "no job"  # unchanged: none needed
            click.echo(f"{item.target.label}\t{item.service}\t{job}\t{item.state}")
    for item in items:
        if item.error and (state.json or live is not None):  # piped, its line has it already
            message(f"{item.target.label} / {item.service}: {item.state}: {item.error}")
        if item.hook == "failed":
            message(
                f"warning: the on_new_detection hook failed for {item.target.label} / {item.service};"
                f" see: stdq jobs logs {item.job_id}"
            )
    if background:
        return
    code = exit_code(items)
    new = sum(item.new_rows or 0 for item in items)
    message(f"update: {len(items)} item(s), {new} new row(s)" + (f"; exit {code}" if code else ""))
    exit_with(code)
