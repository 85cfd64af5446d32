"""`stdq targets`: the local targets table and name resolution (a thin layer over stdq.targets)."""

from __future__ import annotations

from typing import Any

import click

from stdq.cli.common import emit_json, fmt_time, message, pass_state, print_table

COLUMNS = ("name", "ra", "dec", "ra_hms", "dec_dms", "source", "added")


def _row(entry: dict[str, Any]) -> dict[str, Any]:
    from stdq.targets import sexagesimal

    ra_hms, dec_dms = sexagesimal(entry["ra"], entry["dec"])
    return {
        "name": entry["name"],
        "ra": entry["ra"],
        "dec": entry["dec"],
        "ra_hms": ra_hms,
        "dec_dms": dec_dms,
        "source": entry.get("source"),
        "created_at": entry.get("created_at"),
    }


def _print_rows(state, rows: list[dict[str, Any]]) -> None:
    if state.json:
        emit_json(rows)
        return
    print_table(
        COLUMNS,
        [
            [r["name"], r["ra"], r["dec"], r["ra_hms"], r["dec_dms"], r["source"], fmt_time(r["created_at"])]
            for r in rows
        ],
    )


def _local_entry(session, name: str) -> dict[str, Any]:
    from stdq.errors import BadInput

    row = session.store.conn.execute(
        "SELECT * FROM targets WHERE name = ?", (name.strip(),)
    ).fetchone()
    if row is None:
        raise BadInput(
            f"no local target called {name.strip()!r}",
            hint="list them with: stdq targets list (resolve a name with: stdq targets resolve NAME)",
        )
    return dict(row)


@click.group(short_help="Named targets and name resolution.")
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
@pass_state
def add(state, name: str, ra: str | None, dec: str | None) -> None:
    """Store NAME with --ra/--dec, or, without them, with the coordinates it resolves to.

    An entry of the same name (case ignored) is replaced.
    """
    from stdq.errors import BadInput
    from stdq.targets import Resolver, add_target, parse_position

    if not name.strip():
        raise BadInput("the target name is empty")
    session = state.session
    if ra is None and dec is None:
        found = Resolver(session.settings, session.store, warn=message).resolve(name)
        ra_deg, dec_deg, source = found.ra, found.dec, found.resolver
    else:
        ra_deg, dec_deg = parse_position(ra, dec)
        source = "user"
    if source == "local":
        message(f"{name.strip()!r} is a local target already; unchanged (--ra/--dec change it)")
    else:
        add_target(session.store, name, ra_deg, dec_deg, source=source)
    entry = _row(_local_entry(session, name))
    if state.json:
        emit_json(entry)
    else:
        _print_rows(state, [entry])


@targets.command("list")
@pass_state
def list_(state) -> None:
    """The local targets, by name."""
    from stdq.targets import list_targets

    _print_rows(state, [_row(entry) for entry in list_targets(state.session.store)])


@targets.command("show")
@click.argument("name")
@pass_state
def show(state, name: str) -> None:
    """One local target (exit 2 when there is none of that name)."""
    entry = _row(_local_entry(state.session, name))
    if state.json:
        emit_json(entry)
    else:
        _print_rows(state, [entry])


@targets.command("rm")
@click.argument("name")
@pass_state
def rm(state, name: str) -> None:
    """Remove a local target, and the cached resolution of its name (exit 2 when absent)."""
    from stdq.errors import BadInput
    from stdq.targets import remove_target

    if not remove_target(state.session.store, name):
        raise BadInput(
            f"no local target called {name.strip()!r}", hint="list them with: stdq targets list"
        )
    if state.json:
        emit_json({"removed": name.strip()})
    else:
        message(f"removed {name.strip()!r}")


@targets.command("resolve")
@click.argument("name")
@click.option("--no-cache", is_flag=True, help="Ask the resolvers again, not the cache of earlier answers.")
@pass_state
def resolve(state, name: str, no_cache: bool) -> None:
    """Resolve NAME as `stdq query` would: the resolvers of [resolver] order, in turn.

    Prints the name, the coordinates (degrees and sexagesimal), the resolver that
    answered and whether the answer came from the cache.
    """
    from stdq.targets import Resolver, sexagesimal

    session = state.session
    resolver = Resolver(session.settings, session.store, warn=message)
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
