"""The `stdq` command: global options and lazily imported command groups.

Only click is imported here; each command group's module is imported when that
group runs, and heavy libraries only inside the functions that need them.
"""

from __future__ import annotations

import importlib
import sys

import click

from stdq import __version__

# group name -> (module, attribute, short help)
COMMANDS = {
    "query": ("stdq.cli.query", "query", "Query a service for one target's photometry."),
    "jobs": ("stdq.cli.jobs", "jobs", "The local background job queue."),
    "targets": ("stdq.cli.targets", "targets", "Named targets and name resolution."),
    "products": ("stdq.cli.products", "products", "Stored data products."),
    "services": ("stdq.cli.services", "services", "The survey services and their options."),
    "config": ("stdq.cli.config", "config", "The settings file."),
    "demo": ("stdq.cli.demo", "demo", "Run the main query paths against bundled emulators."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when they are used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, short) for name, (_, _, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class AppState:
    """Global options, and the session opened on first use."""

    def __init__(self, config: str | None, data_dir: str | None, json_output: bool, verbose: bool):
        self.config = config
        self.data_dir = data_dir
        self.json = json_output
        self.verbose = verbose
        self._session = None
        self._settings = None

    @property
    def settings(self):
        if self._settings is None:
            from stdq.config import load_settings

            self._settings = load_settings(self.config, self.data_dir)
        return self._settings

    @property
    def session(self):
        if self._session is None:
            from stdq.api import Session
            from stdq.jobs.queue import JobQueue
            from stdq.store import Store

            settings = self.settings
            self._session = Session(settings, Store(settings.data_dir), JobQueue(settings.data_dir))
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 done, 1 failed, 2 bad input, 3 configuration/credentials, "
    "4 name not resolved, 5 no data, 75 temporary failure (try later), 130 interrupted.",
)
@click.option("--config", "config_path", metavar="PATH", help="Settings file (default: $STDQ_CONFIG or the platform's config folder).")
@click.option("--data-dir", metavar="PATH", help="Data directory (default: $STDQ_DATA_DIR, the settings, or the platform's data folder).")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Report retries, and show tracebacks on errors.")
@click.version_option(__version__, prog_name="stdq")
@click.pass_context
def cli(ctx: click.Context, config_path, data_dir, json_output, verbose) -> None:
    """Fetch photometry of one target from survey services.

    \b
      stdq query panstarrs "SN 2023ixf"
      stdq query atlas --ra 210.910674 --dec 54.311650 --mjd-min 60000
      id=$(stdq query atlas "SN 2023ixf" --background)
      stdq jobs wait "$id" && stdq jobs result "$id" -o sn2023ixf_atlas.csv
    """
    state = AppState(config_path, data_dir, json_output, verbose)
    ctx.obj = state
    ctx.call_on_close(state.close)
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning stdq errors into one clear message and an exit code."""
    from stdq.errors import EXIT_INTERRUPTED, StdqError

    verbose = any(a in ("-v", "--verbose") for a in (argv if argv is not None else sys.argv[1:]))
    try:
        code = cli.main(args=argv, prog_name="stdq", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except StdqError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(exc.hint, err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug: one line unless --verbose
        if verbose:
            raise
        click.echo(
            f"error: internal error ({type(exc).__name__}: {exc}); run with --verbose for details",
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
