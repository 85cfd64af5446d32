"""`stdq services list | show SERVICE`: the registered services, their options and settings keys.

Services come from the ``stdq.services`` entry points (built-in and installed
plug-ins) and from ``[services.NAME]`` tables with a ``class``. A service whose
module fails to import is listed with its error instead of breaking the list.
"""

from __future__ import annotations

import json
from typing import Any

import click

from stdq.cli.common import emit_json, pass_state, print_table


@click.group(short_help="The survey services and their options.")
def services() -> None:
    """The survey services: which are registered, their options and settings keys."""


def _load(settings, name: str):
    """(ServiceConfig, class) of service NAME; ConfigError when it cannot be loaded."""
    from stdq import plugins
    from stdq.errors import ConfigError

    config = settings.service(name)
    try:
        cls = plugins.load_class(config.class_path, where=f"service {name!r}")
    except ConfigError:
        raise
    except Exception as exc:  # the module raised while it was imported
        raise ConfigError(
            f"service {name!r}: importing {config.class_path!r} failed ({type(exc).__name__}: {exc})"
        ) from None
    return config, cls


def service_entries(settings) -> list[dict[str, Any]]:
    """One dict per service: name, title, async, url, class, data product type, error."""
    from stdq import plugins

    entries = []
    registered = plugins.service_entry_points()
    for name in settings.service_names():
        table = settings.services_raw.get(name, {})
        entry: dict[str, Any] = {
            "name": name,
            "title": None,
            "supports_async": None,
            "url": table.get("url"),
            "class": table.get("class") or registered.get(name),
            "registered_by": "settings" if table.get("class") else "entry point",
            "data_product_type": None,
            "error": None,
        }
        try:
            config, cls = _load(settings, name)
        except Exception as exc:  # one broken service must not hide the others
            entry["error"] = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        else:
            entry.update(
                title=getattr(cls, "title", "") or name,
                supports_async=bool(getattr(cls, "supports_async", False)),
                url=config.url,
                data_product_type=getattr(cls, "data_product_type", "") or None,
            )
        entries.append(entry)
    return entries


@services.command("list")
@pass_state
def list_services(state) -> None:
    """Every registered service: name, title, background or not, URL, class.

    A service that cannot be loaded is listed with its error.
    """
    entries = service_entries(state.settings)
    if state.json:
        emit_json(entries)
        return
    rows = []
    for e in entries:
        title = e["title"] if not e["error"] else f"ERROR: {e['error']}"
        runs = "" if e["supports_async"] is None else ("yes" if e["supports_async"] else "no")
        rows.append((e["name"], title, runs, e["url"] or "", e["class"] or ""))
    print_table(("name", "title", "async", "url", "class"), rows)


def describe_service(settings, name: str) -> dict[str, Any]:
    """The documented description of one service, merged with its current settings."""
    from stdq.config import MASK, env_var_name

    config, cls = _load(settings, name)
    info = cls.describe()
    secret_fields = tuple(config.secret_fields)
    keys: dict[str, Any] = {}
    for key, spec in info["settings"].items():
        if key in secret_fields:
            continue
        keys[key] = {"default": spec["default"], "value": config.values.get(key), "help": spec["help"]}
    for key, value in config.values.items():  # keys the class does not describe (none expected)
        if key not in keys and key not in secret_fields:
            keys[key] = {"default": None, "value": value, "help": ""}
    conventional = getattr(cls, "secret_env", {}) or {}
    secrets = {}
    for fieldname in secret_fields:
        is_set = bool(config.secret(fieldname))
        secrets[fieldname] = {
            "set": is_set,
            "value": MASK if is_set else None,
            "source": config.secret_sources.get(fieldname) if is_set else None,
            "env": [env_var_name(name, fieldname), *conventional.get(fieldname, ())],
        }
    dptype = info["data_product_type"]
    return {
        "name": name,
        "title": info["title"],
        "info_url": info["info_url"],
        "class": config.class_path,
        "data_product_type": dptype,
        "data_product_title": settings.data_product_types.get(dptype),
        "processor": settings.processor_path(dptype) if dptype else None,
        "supports_async": info["supports_async"],
        "url": config.url,
        "options": info["options"],
        "settings": keys,
        "secrets": secrets,
        "settings_file": str(settings.path),
    }


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
@pass_state
def show_service(state, service: str) -> None:
    """One service: its options (from its query form), settings keys, defaults and secrets."""
    data = describe_service(state.settings, service)
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
