"""`stdq plot TARGET`: the merged light curve drawn as PNG, PDF, SVG or HTML (``Stdq.plot``).

The drawing is :mod:`stdq.plot` (matplotlib; plotly for HTML); the rows are those of
`stdq lightcurve` (``Stdq.lightcurve``). docs/commands.md "stdq plot" is the contract.
"""

from __future__ import annotations

import sys

import click

from stdq.cli.common import emit_json, get_state, json_option, message


@click.command(short_help="Draw a target's merged light curve (PNG, PDF, SVG, HTML).")
@click.argument("target")
@click.option("-o", "--output", metavar="FILE", help="FILE.png, .pdf, .svg or .html ('-' = PNG on stdout); default TARGET.png here.")
@click.option("--mag/--flux", "mag", default=None,
              help="Magnitude view (AB, inverted axis) or flux view (µJy, zero line); default: flux for difference photometry, else magnitudes.")
@click.option("--t0", metavar="MJD|DATE", help="Top axis in days since this epoch (MJD or ISO date) instead of the calendar date.")
@click.option("--services", metavar="S1,S2", help="Only these services (default: every service with a light curve of TARGET).")
@click.option("--clean", is_flag=True, help="Leave out flagged rows (quality_flag != 0); masked rows are never drawn.")
@click.option("--flux-kind", type=click.Choice(["difference", "total", "both"]), default=None,
              help="As stdq lightcurve (default: difference when any service gave difference fluxes); both: two panels, difference fluxes above total magnitudes.")
@json_option
def plot(target: str, output: str | None, mag: bool | None, t0: str | None, services: str | None, clean: bool,
         flux_kind: str | None) -> None:
    """Draw TARGET's merged light curve (the rows of `stdq lightcurve TARGET`).

    Colour by band, marker by survey; non-detections are open down-triangles;
    flagged rows hollow and grey; stacked bins larger. Prints the file's path
    (with --json: {"path", "view", "format", "drawn", "masked", "flagged",
    "not_drawable"}). Needs matplotlib (pip install 'stdq[plot]'), and plotly
    for HTML (pip install 'stdq[html]'): exit 3 without them.

    \b
    Examples:
      stdq plot "SN 2023ixf"
      stdq plot "SN 2023ixf" --mag -o ixf.pdf --t0 2023-05-19
      stdq plot "SN 2023ixf" --services atlas,ztf-fps --clean -o ixf.html
      stdq plot "SN 2023ixf" --flux-kind both -o ixf-all.png
    """
    import tempfile
    from pathlib import Path

    from stdq.plot import plot_target

    state = get_state()
    view = None if mag is None else ("mag" if mag else "flux")
    chosen = [s.strip() for s in services.split(",") if s.strip()] if services else None
    if output == "-":
        if sys.stdout.isatty():
            raise click.UsageError("-o -: stdout is a terminal; give a file name (-o FILE.png)")
        with tempfile.TemporaryDirectory(prefix="stdq-plot-") as tmp:
            info = plot_target(state.stdq, target, Path(tmp) / "plot.png", view=view, t0=t0,
                               services=chosen, clean=clean, flux_kind=flux_kind)
            sys.stdout.buffer.write(info.path.read_bytes())
            sys.stdout.flush()
        message(f"{info.drawn} rows drawn ({info.view} view)")
        return
    info = plot_target(state.stdq, target, output, view=view, t0=t0, services=chosen, clean=clean,
                       flux_kind=flux_kind)
    if state.json:
        emit_json(info.to_json())
        return
    click.echo(str(info.path))
    left = [f"{n} {what}" for n, what in ((info.masked, "masked"), (info.not_drawable, "without a value to draw")) if n]
    message(f"{info.drawn} rows drawn ({info.view} view)" + (f"; left out: {', '.join(left)}" if left else ""))
