"""Helpers shared by the command modules: the state, `--json`, messages, tables, exits."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

from stdq.cli import AppState

F = TypeVar("F", bound=Callable[..., Any])

pass_state = click.make_pass_decorator(AppState)


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        state = ctx.find_root().obj
        if isinstance(state, AppState):
            state.json = True


def json_option(func: F) -> F:
    """`--json` after the command: the same output as `stdq --json COMMAND`.

    The flag only sets the global state's ``json``; the command reads ``state.json``.
    """
    return click.option(  # type: ignore[return-value]
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Machine-readable JSON on stdout (as stdq --json).",
    )(func)


def get_state(ctx: click.Context | None = None) -> AppState:
    """The global state of the running command."""
    ctx = ctx or click.get_current_context()
    state = ctx.find_root().obj
    if not isinstance(state, AppState):  # a command run outside `stdq` (tests)
        state = AppState(None, None, False, False)
        ctx.find_root().obj = state
    return state


def plain_stderr() -> bool:
    """No live display and no colour: stderr is not a terminal, or NO_COLOR is set."""
    return bool(os.environ.get("NO_COLOR")) or not sys.stderr.isatty()


def plain_stdout() -> bool:
    return bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()


def emit_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, default=str, allow_nan=False) if data is not None else "null")


def message(text: str) -> None:
    """A message for the user: stderr, never stdout."""
    click.echo(text, err=True)


def exit_with(code: int) -> None:
    raise click.exceptions.Exit(code)


def console(stderr: bool = False) -> Any:
    """A rich console (imported on demand), plain when not a terminal or NO_COLOR."""
    from rich.console import Console

    plain = plain_stderr() if stderr else plain_stdout()
    return Console(stderr=stderr, no_color=plain, highlight=False, soft_wrap=plain)


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_CONTROL = re.compile(r"[\\\x00-\x1f\x7f]")


def tsv_cell(text: str) -> str:
    """TEXT as one cell of tab-separated output: backslash, tab, newline and carriage
    return as ``\\\\ \\t \\n \\r``, other control characters as ``\\xNN`` (mysql --batch)."""
    return _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table on stdout: rich on a terminal, tab-separated text otherwise (one line per
    row: see :func:`tsv_cell`)."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if plain_stdout():
        click.echo("\t".join(tsv_cell(c) for c in columns))
        for row in cells:
            click.echo("\t".join(tsv_cell(c) for c in row))
        return
    from rich.table import Table

    table = Table(title=title, show_edge=False, header_style="bold")
    for col in columns:
        table.add_column(col)
    for row in cells:
        table.add_row(*row)
    console().print(table)


def fmt_time(ts: float | None) -> str:
    if not ts:
        return ""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def output_options(help_text: str = "Write the table here ('-' = stdout).") -> Callable[[F], F]:
    """The -o/--output and --format options of commands that write a photometry table."""

    def decorate(func: F) -> F:
        func = click.option(
            "--format", "fmt", type=click.Choice(["csv", "ecsv", "json", "parquet"]),
            help="Format for -o (default: from the file name, else csv).",
        )(func)
        return click.option("-o", "--output", metavar="PATH|-", help=help_text)(func)  # type: ignore[return-value]

    return decorate
