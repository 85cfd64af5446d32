"""`stdq demo [--dir PATH]`: run the main query paths against the bundled emulators."""

from __future__ import annotations

import click

from stdq.cli.common import message


@click.command(short_help="Run the main query paths against bundled emulators.")
@click.option("--dir", "directory", metavar="PATH", help="Folder for the demo's data (default: a new temporary folder, left in place).")
def demo(directory: str | None) -> None:
    """Start the survey emulators on 127.0.0.1 and query them with the real code.

    No network is needed. Every file written is printed on a line of its own;
    progress goes to stderr.
    """
    from stdq.demo import run_demo

    for path in run_demo(directory, say=message):
        click.echo(str(path))
