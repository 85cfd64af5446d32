"""`stdq services list | show SERVICE`: the registered services, their options and settings keys.

Each command is one :class:`stdq.Stdq` call (``services()``, ``describe(name)``) over the
registry (:mod:`stdq.registry`): the built-in services, the
``stdq.services`` entry points of installed plug-ins, and ``[services.NAME]``
tables with a ``class``. A service whose module fails to import is listed with
its error instead of breaking the list.
"""

from __future__ import annotations

import json
from typing import Any

import click

from stdq.cli.common import emit_json, json_option, pass_state, print_table


@click.group(short_help="The survey services and their options.")
def services() -> None:
    """The survey services: which are registered, their options and settings keys."""


@services.command("list")
@json_option
@pass_state
def list_services(state) -> None:
    """Every registered service: name, title, background or not, URL, class.

    A service that cannot be loaded is listed with its error.
    """
    entries = state.stdq.services()
    if state.json:
        emit_json(entries)
        return
    rows = []
    for e in entries:
        title = e["title"] if not e["error"] else f"ERROR: {e['error']}"
        runs = "" if e["supports_async"] is None else ("yes" if e["supports_async"] else "no")
        rows.append((e["name"], title, runs, e["url"] or "", e["class"] or ""))
    print_table(("name", "title", "async", "url", "class"), rows)


def _value(value: Any) -> str:
    """A settings value as it would be written in TOML (near enough)."""
    if value is None:
        return "(none)"
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


@services.command("show")
@click.argument("service")
@json_option
@pass_state
def show_service(state, service: str) -> None:
    """One service: its options (from its query form), settings keys, defaults and secrets."""
    data = state.stdq.describe(service)
    if state.json:
        emit_json(data)
        return
    echo = click.echo
    echo(f"{data['name']}: {data['title']}")
    rows = [
        ("info", data["info_url"] or "-"),
        ("class", data["class"]),
        ("data product type", f"{data['data_product_type']} (processor: {data['processor'] or 'none registered'})"),
        ("runs", "in a background worker (supports_async)" if data["supports_async"] else "in the calling process"),
        ("url", data["url"] or "-"),
    ]
    for label, value in rows:
        echo(f"  {label + ':':<19}{value}")

    echo("")
    echo(f"Options (stdq query {service} [NAME] [--ra RA --dec DEC] ...):")
    if not data["options"]:
        echo("  (none besides the common ones)")
    for opt in data["options"]:
        kind = opt["type"] + (f" ({', '.join(opt['choices'])})" if opt["choices"] else "")
        default = "" if opt["default"] in (None, False) else f"  [default: {opt['default']}]"
        echo(f"  {opt['option']:<16} {kind:<7} {opt['help']}{default}")

    echo("")
    echo(f"Settings keys ([services.{service}] in {data['settings_file']}):")
    width = max((len(k) for k in data["settings"]), default=0)
    for key, spec in data["settings"].items():
        current = _value(spec["value"])
        note = "" if spec["value"] == spec["default"] else f"  (default {_value(spec['default'])})"
        echo(f"  {key:<{width}} = {current}{note}")
        if spec["help"]:
            echo(f"  {'':<{width}}   {spec['help']}")

    echo("")
    if not data["secrets"]:
        echo("Secrets: none (a public service)")
    else:
        echo("Secrets (from the environment first, then the settings file):")
        for fieldname, spec in data["secrets"].items():
            status = f"set, {spec['value']} (from {spec['source']})" if spec["set"] else "not set"
            echo(f"  {fieldname}: {status}; environment: {', '.join(spec['env'])}")
