"""`stdq targets`: the local targets table and name resolution (``Stdq.targets``, ``Stdq.resolve``)."""

from __future__ import annotations

from typing import Any

import click

from stdq.cli import PluginGroup
from stdq.cli.common import emit_json, fmt_time, get_state, json_option, message, print_table

COLUMNS = ("name", "ra", "dec", "ra_hms", "dec_dms", "source", "lists", "added")


def _row(entry: dict[str, Any], lists: dict[str, list[str]] | None = None) -> dict[str, Any]:
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
        "lists": (lists or {}).get(str(entry["name"]).casefold(), []),
        "created_at": iso_time(entry.get("created_at")),
        "created_at_unix": entry.get("created_at"),
    }


def _print_rows(rows: list[dict[str, Any]]) -> None:
    print_table(
        COLUMNS,
        [
            [r["name"], r["ra"], r["dec"], r["ra_hms"], r["dec_dms"], r["source"],
             ",".join(r.get("lists") or []), fmt_time(r["created_at_unix"])]
            for r in rows
        ],
    )


def _entry(sdq: Any, name: str) -> dict[str, Any]:
    """The stored row of local target NAME (BadInput, exit 2, when there is none)."""
    from stdq.watchlist import lists_of

    target = sdq.targets.get(name)
    for row in sdq.targets.rows():
        if row["name"] == target.name:
            return _row(row, lists_of(sdq.store))
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
      stdq targets import tns_search.csv --list nightly
      stdq targets list --list nightly

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


@targets.command("import")
@click.argument("file", metavar="FILE|-")
@click.option("--list", "list_name", metavar="NAME", help="Also put every target on this list.")
@click.option("--skip-bad", is_flag=True, help="Import the good lines even when some are bad.")
@json_option
def import_(file: str, list_name: str | None, skip_bad: bool) -> None:
    """Add the targets of FILE ('-' = stdin) to the local table (and to --list).

    FILE: CSV with a header naming `name` and/or `ra`,`dec` (decimal or
    sexagesimal; a TNS search export works as it is), ECSV, or plain text
    with one name per line. Names without coordinates are resolved (cached).
    A bad line (no such name, a position that does not parse, a short row)
    is reported with its line number and nothing is imported (exit 2) unless
    --skip-bad. Every resolver down: exit 75, nothing imported.
    """
    from stdq.errors import BadInput

    state = get_state()
    report = state.stdq.targets.import_file(file, list=list_name, skip_bad=skip_bad, warn=message)
    for bad in report.bad:
        message(f"line {bad.line}: {bad.reason} ({bad.text[:80]!r})")
    if state.json:
        emit_json(report.to_json())
    if not report.done:
        raise BadInput(
            f"{len(report.bad)} bad line{'s' if len(report.bad) != 1 else ''} in {file}; nothing imported",
            hint="fix them, or import the others with --skip-bad",
        )
    resolved = sum(1 for r in report.imported if r["resolved"])
    where = f" onto the list {report.list_name!r}" if report.list_name else ""
    skipped = f"; {len(report.bad)} bad line(s) skipped" if report.bad else ""
    message(
        f"imported {len(report.imported)} target(s){where} from {report.format}"
        f" ({resolved} resolved){skipped}"
    )


@targets.command("list")
@click.option("--list", "list_name", metavar="NAME", help="Only the targets on this list.")
@json_option
def list_(list_name: str | None) -> None:
    """The local targets, by name (only those on --list NAME when given)."""
    from stdq.watchlist import lists_of, members

    state = get_state()
    store = state.stdq.store
    on = lists_of(store)
    entries = members(store, list_name) if list_name else state.stdq.targets.rows()
    rows = [_row(entry, on) for entry in entries]
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
@click.option("--list", "list_name", metavar="NAME", help="Only take NAME off this list (the target stays).")
@json_option
def rm(name: str, list_name: str | None) -> None:
    """Remove a local target, and the cached resolution of its name (exit 2 when absent).

    With --list NAME, only take it off that list.
    """
    state = get_state()
    state.stdq.targets.remove(name, list=list_name)
    if state.json:
        emit_json({"removed": name.strip(), **({"list": list_name.strip()} if list_name else {})})
    elif list_name:
        message(f"removed {name.strip()!r} from the list {list_name.strip()!r}")
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
    from stdq.targets import sexagesimal

    state = get_state()
    sdq = state.stdq
    target = sdq.resolve(name, use_cache=not no_cache, warn=message)
    ra_hms, dec_dms = sexagesimal(target.ra, target.dec)
    result = {
        "name": target.name,
        "ra": target.ra,
        "dec": target.dec,
        "ra_hms": ra_hms,
        "dec_dms": dec_dms,
        "resolver": target.resolver,
        "canonical": target.canonical,
        "from_cache": sdq.resolved_from_cache,
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
