"""`stdq demo [--dir PATH]`: run the main query paths against the bundled emulators."""

from __future__ import annotations

import click

from stdq.cli.common import emit_json, get_state, json_option


@click.command(short_help="Run the main query paths against bundled emulators.")
@click.option("--dir", "directory", metavar="PATH", help="Folder for the demo's data (default: a new temporary folder, left in place).")
@json_option
def demo(directory: str | None) -> None:
    """Start the survey emulators on 127.0.0.1 and query them with the real code.

    Queries SN 2023ixf from Pan-STARRS, ZTF, ATLAS and ZTF forced photometry, a
    Rubin target and a Gaia variable, then writes each target's merged light
    curve and its PNG plot (with matplotlib installed).

    No network is needed. Every file written is printed on a line of its own
    (with --json: {"dir": ..., "files": [...]}); progress goes to stderr.
    """
    from stdq.cli.live import WaitDisplay
    from stdq.demo import run_demo

    state = get_state()
    with WaitDisplay(state.verbose) as display:
        # piped, the demo says each change of its jobs itself: no second line for them
        result = run_demo(directory, say=display.message, on_progress=display.jobs if display.live_wanted else None)
    if state.json:
        emit_json(result.to_json())
        return
    for path in result.files:
        click.echo(str(path))
