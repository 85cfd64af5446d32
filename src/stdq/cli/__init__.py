"""The `stdq` command: global options, lazily imported command groups, plugin commands.

Only click is imported here; each command group's module is imported when that
group runs, and heavy libraries only inside the functions that need them. Every
command parses its arguments, calls one method of :class:`stdq.Stdq` (opened on
first use by :class:`AppState`) and renders what it returns.

Plugins add commands through the ``stdq.commands`` entry points (see
``stdq.registry``): a plain name adds a top-level command, ``GROUP.SUB`` a
subcommand of an existing group (``config.atlas-login``). The built-in
commands are found without looking at entry points; the entry points are read
once, when a listing (``--help``) or an unknown name asks for them.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
from typing import Any

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
    "doctor": ("stdq.cli.doctor", "doctor", "Check settings, data directory, credentials and services."),
    "update": ("stdq.cli.update", "update", "Fetch only the new epochs of many targets."),
    "lightcurve": ("stdq.cli.lightcurve", "lightcurve", "One target's merged light curve from every service."),
    "mask": ("stdq.cli.mask", "mask", "Mask rows of a target's light curves (kept across re-fetches)."),
    "unmask": ("stdq.cli.mask", "unmask", "Unmask rows masked by stdq mask."),
    "plot": ("stdq.cli.plot", "plot", "Draw a target's merged light curve (PNG, PDF, SVG, HTML)."),
}


_OWN_METADATA = re.compile(r"^stdq(-[^-]+)?\.(dist|egg)-info$")


@functools.cache
def _other_distributions_declare_commands() -> bool:
    """Whether a distribution other than stdq may declare ``stdq.commands`` entry points.

    A quick look at the ``entry_points.txt`` of every distribution on sys.path
    (about 1 ms), so that ``stdq --help`` in an installation without plugin
    commands never reads the entry points (importlib.metadata costs more than the
    whole start-up budget). Anything it cannot read counts as "maybe".
    """
    for entry in sys.path:
        try:
            listing = os.scandir(entry or ".")
        except FileNotFoundError:
            continue
        except OSError:  # a zip file or an unreadable folder: let the registry read it
            return True
        with listing:
            for item in listing:
                if not item.name.endswith((".dist-info", ".egg-info")) or _OWN_METADATA.match(item.name):
                    continue
                try:
                    with open(os.path.join(item.path, "entry_points.txt"), encoding="utf-8") as fh:
                        if "stdq.commands" in fh.read():
                            return True
                except FileNotFoundError:
                    continue
                except OSError:
                    return True
    return False


def top_level_plugin_commands() -> dict[str, str]:
    """{name: "module:attr"} of the top-level commands plugins add.

    stdq's own registered commands are all subcommands of a group (the built-in
    top-level commands are :data:`COMMANDS`), so without another distribution
    declaring commands the registry is not even imported.
    """
    if not _other_distributions_declare_commands():
        return {}
    from stdq.registry import top_level_commands

    return top_level_commands()


def plugin_subcommands(group: str) -> dict[str, str]:
    """{sub: "module:attr"} of the subcommands of GROUP: stdq's own (``config.atlas-login``)
    and, when another distribution may declare some, the plugins' (entry points, read once)."""
    from stdq.registry import subcommands

    return subcommands(group, scan=_other_distributions_declare_commands())


def load_command(name: str, target: str) -> click.Command:
    """The click command a plugin registered as "module:attr"; ConfigError when it is not one."""
    from stdq.errors import ConfigError
    from stdq.registry import load_command as load

    command = load(name, target)
    if not isinstance(command, click.Command):
        raise ConfigError(f"the command {name!r} ({target}) is not a click command")
    return command


class PluginGroup(click.Group):
    """A command group to which plugins may add subcommands (entry point name "GROUP.SUB")."""

    def _plugin_subcommands(self, ctx: click.Context) -> dict[str, str]:
        return {
            sub: target for sub, target in plugin_subcommands(str(self.name)).items()
            if sub not in self.commands
        }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *sorted(self._plugin_subcommands(ctx))]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        target = self._plugin_subcommands(ctx).get(name)
        return load_command(f"{self.name} {name}", target) if target else None


class LazyGroup(click.Group):
    """The top-level group: built-in groups imported only when used, plus plugin commands."""

    def _plugins(self, ctx: click.Context) -> dict[str, str]:
        return {name: target for name, target in top_level_plugin_commands().items() if name not in COMMANDS}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *sorted(self._plugins(ctx))]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS:
            module_name, attr, _ = COMMANDS[name]
            command: click.Command = getattr(importlib.import_module(module_name), attr)
            return command
        target = self._plugins(ctx).get(name)
        return load_command(name, target) if target else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, short) for name, (_, _, short) in COMMANDS.items()]
        from stdq.errors import StdqError

        for name, target in sorted(self._plugins(ctx).items()):
            try:
                rows.append((name, load_command(name, target).get_short_help_str(limit=60)))
            except StdqError as exc:
                rows.append((name, f"(unavailable: {exc.message})"))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _notice(text: str) -> None:
    click.echo(text, err=True)


class AppState:
    """Global options, and the library object (:class:`stdq.Stdq`) opened on first use."""

    def __init__(self, config: str | None, data_dir: str | None, json_output: bool, verbose: bool):
        self.config = config
        self.data_dir = data_dir
        self.json = json_output
        self.verbose = verbose
        self._stdq: Any = None

    @property
    def stdq(self) -> Any:
        """The one :class:`stdq.Stdq` of this run (settings + data directory)."""
        if self._stdq is None:
            from stdq.core import Stdq

            self._stdq = Stdq(self.config, self.data_dir)
            self._stdq.notice = _notice  # what the library has to say: stderr
        return self._stdq

    @property
    def settings(self) -> Any:
        """The settings in effect: those of the run's one Stdq."""
        return self.stdq.settings

    def close(self) -> None:
        if self._stdq is not None:
            self._stdq.close()


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 done, 1 failed, 2 bad input, 3 configuration/credentials, "
    "4 name not resolved, 5 no data, 75 temporary failure (try later), 130 interrupted.",
)
@click.option("--config", "config_path", metavar="PATH", help="Settings file (default: $STDQ_CONFIG or the platform's config folder).")
@click.option("--data-dir", metavar="PATH", help="Data directory (default: $STDQ_DATA_DIR, the settings, or the platform's data folder).")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON on stdout (also accepted after the command).")
@click.option("-v", "--verbose", is_flag=True, help="Report retries, and show tracebacks on errors.")
@click.version_option(__version__, prog_name="stdq")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, data_dir: str | None, json_output: bool, verbose: bool) -> None:
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
    if verbose or "logging" in sys.modules:
        configure_logging(verbose)
    # Else nothing imports logging for a quick command (--help, jobs status): should a
    # module log a warning later, logging's last-resort handler writes it to stderr as
    # the same "%(message)s" line, and INFO records are dropped as at level WARNING.


def configure_logging(verbose: bool) -> None:
    """Log records on stderr, one message a line: INFO and up with --verbose, else WARNING
    and up (httpx's request lines only with --verbose). Called once more changes nothing."""
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def help_width(max_width: int = 80) -> int:
    """The width click gives help text: click.formatting.FORCED_WIDTH when set, else the
    terminal's columns (as shutil.get_terminal_size finds them: $COLUMNS, else stdout's
    terminal, else 80), at most MAX_WIDTH, less 2, at least 50. The same number as
    click's HelpFormatter computes, without importing shutil (and with it bz2, lzma
    and zlib) in every `--help`."""
    from click import formatting

    if formatting.FORCED_WIDTH is not None:
        return formatting.FORCED_WIDTH
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return max(min(columns, max_width) - 2, 50)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; stdq errors become one clear message and their exit code (returned)."""
    from stdq.errors import EXIT_INTERRUPTED, StdqError

    verbose = any(a in ("-v", "--verbose") for a in (argv if argv is not None else sys.argv[1:]))
    try:
        # the help width is given (inherited by every subcommand's context): click would
        # import shutil to find it
        code = cli.main(args=argv, prog_name="stdq", standalone_mode=False, terminal_width=help_width())
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except StdqError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(exc.hint, err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: one line unless --verbose
        if verbose:
            raise
        click.echo(
            f"error: internal error ({type(exc).__name__}: {exc}); run with --verbose for details",
            err=True,
        )
        return 1
    return code if isinstance(code, int) else 0


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and exit with its code."""
    sys.exit(run(argv))
