"""`stdq config`: where the settings file is, what is in effect, a commented starter file.

Plug-ins add subcommands to this group through the ``stdq.commands`` entry
points, named ``config.SUB``; the ATLAS service registers ``config.atlas-login``
(:mod:`stdq.services.atlas_login`) that way.
"""

from __future__ import annotations

import json
from typing import Any

import click

from stdq.cli import PluginGroup
from stdq.cli.common import emit_json, json_option, message, pass_state


@click.group(cls=PluginGroup, short_help="The settings file.")
def config() -> None:
    """The settings file: its path, the merged settings in effect, a commented starter file.

    The file is --config PATH, else $STDQ_CONFIG, else the platform's config
    folder (see `stdq config path`). A file that is not valid TOML, an unknown
    key, a value of the wrong type, or a service class that does not import
    exits 3 with one line naming the file and the key.
    """


@config.command("path")
@json_option
@pass_state
def path(state) -> None:
    """Print the path of the settings file (it may not exist yet)."""
    from stdq.config import config_path

    where = config_path(state.config)
    if state.json:
        emit_json({"path": str(where), "exists": where.is_file()})
        return
    click.echo(str(where))
    if not where.is_file():
        message("(no file there yet: defaults apply; `stdq config init` writes one)")


@config.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing settings file.")
@json_option
@pass_state
def init(state, force: bool) -> None:
    """Write a commented settings file (mode 0600) where `stdq config path` says.

    Every setting in it is commented out and shows its default. An existing
    file is kept: without --force this exits 2 (bad usage: add --force to
    replace it) and changes nothing. Prints the path written.
    """
    from stdq.config import config_path, write_private_file
    from stdq.config_template import template_text
    from stdq.errors import BadInput, ConfigError

    where = config_path(state.config)
    existed = where.exists()
    if existed and not force:
        raise BadInput(
            f"{where} exists already; not overwritten",
            hint="`stdq config init --force` replaces it with a fresh commented file",
        )
    if where.is_dir():
        raise ConfigError(f"{where} is a folder, not a settings file")
    try:
        write_private_file(where, template_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be written ({exc.strerror or exc})") from None
    if state.json:
        emit_json({"path": str(where), "overwritten": existed})
        return
    click.echo(str(where))
    message(
        f"{'overwrote' if existed else 'wrote'} {where} (mode 0600): every setting is"
        " commented out at its default; uncomment a line to change it"
    )


@config.command("show")
@json_option
@pass_state
def show(state) -> None:
    """The merged settings (defaults, file, environment) with secrets masked."""
    from stdq.registry import registry_for

    shown = registry_for(state.settings).display_dict()
    if state.json:
        emit_json(shown)
        return
    click.echo(render(shown))


def _value(value: Any) -> str:
    """A value written as TOML would write it (strings, numbers, booleans, lists)."""
    return json.dumps(value, default=str, ensure_ascii=False)


def _table(lines: list[str], header: str, table: dict[str, Any]) -> None:
    lines += ["", f"[{header}]"]
    if "error" in table and len(table) == 1:
        lines.append(f"# error: {table['error']}")
        return
    for key, value in table.items():
        if value is None:
            lines.append(f"# {key}: not set")
        else:
            lines.append(f"{key} = {_value(value)}")


def render(shown: dict[str, Any]) -> str:
    """The display dict of Registry.display_dict as TOML-like text."""
    lines = [f"# settings file: {shown['config_file']}", f"data_dir = {_value(shown['data_dir'])}"]
    for section in ("tasks", "hooks", "http", "resolver"):
        if section in shown:
            _table(lines, section, shown[section])
    for name, table in shown["services"].items():
        key = name if name.replace("-", "").replace("_", "").isalnum() else _value(name)
        _table(lines, f"services.{key}", table)
    for section in ("data_product_types", "data_processors"):
        if shown[section]:
            _table(lines, section, shown[section])
    return "\n".join(lines)
