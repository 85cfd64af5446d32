"""Helpers shared by the command modules: state, JSON, messages, tables, exits."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click

from stdq.cli import AppState

pass_state = click.make_pass_decorator(AppState)


def plain_stderr() -> bool:
    """No live display and no colour: stderr is not a terminal, or NO_COLOR is set."""
    return bool(os.environ.get("NO_COLOR")) or not sys.stderr.isatty()


def plain_stdout() -> bool:
    return bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, allow_nan=False) if data is not None else "null")


def message(text: str) -> None:
    """A message for the user: stderr, never stdout."""
    click.echo(text, err=True)


def exit_with(code: int) -> None:
    raise click.exceptions.Exit(code)


def console(stderr: bool = False):
    """A rich console (imported on demand), plain when not a terminal or NO_COLOR."""
    from rich.console import Console

    plain = plain_stderr() if stderr else plain_stdout()
    return Console(stderr=stderr, no_color=plain, highlight=False, soft_wrap=plain)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table on stdout: rich on a terminal, tab-separated text otherwise."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    if plain_stdout():
        click.echo("\t".join(columns))
        for row in rows:
            click.echo("\t".join(row))
        return
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console().print(table)


def fmt_time(ts: float | None) -> str:
    if not ts:
        return ""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def progress_printer():
    """A callback printing progress lines on stderr when they change (terminal only)."""
    last = {"text": None}

    def show(text: str) -> None:
        if text != last["text"]:
            last["text"] = text
            if not plain_stderr():
                message(f"… {text}")

    return show


def output_options(help_text: str = "Write the table here ('-' = stdout)."):
    """The -o/--output and --format options of commands that write a photometry table."""

    def decorate(func):
        func = click.option(
            "--format", "fmt", type=click.Choice(["csv", "ecsv", "json"]),
            help="Format for -o (default: from the file name, else csv).",
        )(func)
        return click.option("-o", "--output", metavar="PATH|-", help=help_text)(func)

    return decorate
