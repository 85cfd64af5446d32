"""`stdq targets`: the local targets table and name resolution (``Stdq.targets``, ``Stdq.resolve``)."""

from __future__ import annotations

from typing import Any

import click

from stdq.cli import PluginGroup
from stdq.cli.common import emit_json, fmt_time, get_state, json_option, message, print_table

COLUMNS = ("name", "ra", "dec", "ra_hms", "dec_dms", "source", "added")


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one local target: its stored row with the sexagesimal position."""
    from stdq.records import iso_time
    from stdq.targets import sexagesimal

    ra_hms, dec_dms = sexagesimal(entry["ra"], entry["dec"])
    return {
        "name": entry["name"],
        "ra": entry["ra"],
        "dec": entry["dec"],
        "ra_hms": ra_hms,
        "dec_dms": dec_dms,
        "source": entry.get("source"),
        "created_at": iso_time(entry.get("created_at")),
        "created_at_unix": entry.get("created_at"),
    }


def _print_rows(rows: list[dict[str, Any]]) -> None:
    print_table(
        COLUMNS,
        [
            [r["name"], r["ra"], r["dec"], r["ra_hms"], r["dec_dms"], r["source"], fmt_time(r["created_at_unix"])]
            for r in rows
        ],
    )


def _entry(sdq: Any, name: str) -> dict[str, Any]:
    """The stored row of local target NAME (BadInput, exit 2, when there is none)."""
    target = sdq.targets.get(name)
    for row in sdq.targets.rows():
        if row["name"] == target.name:
            return _row(row)
    return _row({"name": target.name, "ra": target.ra, "dec": target.dec})


def _show(entry: dict[str, Any]) -> None:
    if get_state().json:
        emit_json(entry)
    else:
        _print_rows([entry])


@click.group(cls=PluginGroup, short_help="Named targets and name resolution.")
def targets() -> None:
    """Named targets (a local table asked first when a name is resolved) and name resolution.

    \b
      stdq targets add "My SN" --ra 14:03:38.56 --dec +54:18:41.9
      stdq targets add "SN 2023ixf"          # resolves the name, stores the answer
      stdq targets resolve "NGC 3642" --no-cache

    RA: decimal degrees or sexagesimal hours (14:03:38.56, "14 03 38.56",
    14h03m38.56s); Dec: decimal or sexagesimal degrees (+54:18:41.9, -00:30:00).
    A name unknown to the local table exits 2; a name no resolver knows exits 4;
    every remote resolver down exits 75.
    """


@targets.command("add")
@click.argument("name")
@click.option("--ra", metavar="RA", help="Right ascension: decimal degrees or sexagesimal hours.")
@click.option("--dec", metavar="DEC", help="Declination: decimal or sexagesimal degrees.")
@json_option
def add(name: str, ra: str | None, dec: str | None) -> None:
    """Store NAME with --ra/--dec, or, without them, with the coordinates it resolves to.

    An entry of the same name (case ignored) is replaced.
    """
    from stdq.errors import BadInput

    if not name.strip():
        raise BadInput("the target name is empty")
    sdq = get_state().stdq
    if ra is None and dec is None:
        found = sdq.resolve(name, warn=message)
        if found.resolver == "local":
            message(f"{name.strip()!r} is a local target already; unchanged (--ra/--dec change it)")
        else:
            sdq.targets.add(name, found.ra, found.dec, source=found.resolver)
    else:
        sdq.targets.add(name, ra, dec)
    _show(_entry(sdq, name))


@targets.command("list")
@json_option
def list_() -> None:
    """The local targets, by name."""
    state = get_state()
    rows = [_row(entry) for entry in state.stdq.targets.rows()]
    if state.json:
        emit_json(rows)
    else:
        _print_rows(rows)


@targets.command("show")
@click.argument("name")
@json_option
def show(name: str) -> None:
    """One local target (exit 2 when there is none of that name)."""
    _show(_entry(get_state().stdq, name))


@targets.command("rm")
@click.argument("name")
@json_option
def rm(name: str) -> None:
    """Remove a local target, and the cached resolution of its name (exit 2 when absent)."""
    state = get_state()
    state.stdq.targets.remove(name)
    if state.json:
        emit_json({"removed": name.strip()})
    else:
        message(f"removed {name.strip()!r}")


@targets.command("resolve")
@click.argument("name")
@click.option("--no-cache", is_flag=True, help="Ask the resolvers again, not the cache of earlier answers.")
@json_option
def resolve(name: str, no_cache: bool) -> None:
    """Resolve NAME as `stdq query` would: the resolvers of [resolver] order, in turn.

    Prints the name, the coordinates (degrees and sexagesimal), the resolver that
    answered and whether the answer came from the cache.
    """
    from stdq.targets import Resolver, sexagesimal

    state = get_state()
    sdq = state.stdq
    # Stdq.resolve's own resolver, kept to tell whether the answer came from the cache
    resolver = Resolver(sdq.settings, sdq.store, warn=message)
    target = resolver.resolve(name, use_cache=not no_cache)
    ra_hms, dec_dms = sexagesimal(target.ra, target.dec)
    result = {
        "name": target.name,
        "ra": target.ra,
        "dec": target.dec,
        "ra_hms": ra_hms,
        "dec_dms": dec_dms,
        "resolver": target.resolver,
        "canonical": target.canonical,
        "from_cache": resolver.last_from_cache,
    }
    if state.json:
        emit_json(result)
        return
    columns = ("name", "ra", "dec", "ra_hms", "dec_dms", "resolver", "canonical", "from_cache")
    print_table(
        columns,
        [[
            result["name"], result["ra"], result["dec"], ra_hms, dec_dms, result["resolver"],
            result["canonical"], "yes" if result["from_cache"] else "no",
        ]],
    )
