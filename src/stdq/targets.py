"""Targets: coordinate parsing, the local targets table, and name resolution with its cache.

The remote resolvers are plug-ins (:mod:`stdq.resolvers`, entry-point group
``stdq.resolvers``), asked in the order of ``[resolver] order``.

Stdlib only at import time; resolvers import the HTTP layer when they run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stdq.errors import BadInput, QueryFailed, ResolveError, StdqError, TemporaryFailure
from stdq.records import Target
from stdq.resolvers import (
    clean_name,
    looks_like_sesame,
    parse_mast_resolver,
    parse_sesame,
    parse_sesame_xml,
    position_problem,
)

__all__ = [
    "Resolver", "Target", "add_target", "cache_key", "list_targets", "looks_like_sesame",
    "parse_dec", "parse_mast_resolver", "parse_position", "parse_ra", "parse_sesame", "parse_sesame_xml",
    "remove_target", "sexagesimal", "target_key",
]

if TYPE_CHECKING:
    from stdq.config import Settings
    from stdq.store import Store


# -- coordinates ------------------------------------------------------------------

# A decimal number written out whole: ASCII digits only (no "_", no "nan"/"inf").
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_SECONDS = r"\d{1,2}(?:\.\d*)?"
# "14:03:38.56", "+54:18", "14 03 38.56", "-05 23 12"
_COLONS = re.compile(rf"([+-]?)(\d{{1,3}}):(\d{{1,2}})(?::({_SECONDS}))?", re.ASCII)
_SPACES = re.compile(rf"([+-]?)\s*(\d{{1,3}})\s+(\d{{1,2}})(?:\s+({_SECONDS}))?", re.ASCII)
# "14h03m38.56s", "14h 03m 38.56", "14h03", "54d18m41.9s", "54°18'41.9\"" (the unit letter
# says hours or degrees; minutes m or ', seconds s or ")
_UNITS = re.compile(
    rf"([+-]?)\s*(\d{{1,3}})\s*([hd\u00b0])\s*(\d{{1,2}})"
    rf"(?:\s*([m'])(?:\s*({_SECONDS})\s*([s\"])?)?)?",
    re.ASCII | re.IGNORECASE,
)


class _Sexagesimal:
    """One sexagesimal value: sign, the leading number, minutes, seconds, and its unit
    ("h" hours, "d" degrees, "" for colons or spaces: hours for RA, degrees for Dec)."""

    def __init__(self, negative: bool, lead: int, minutes: int, seconds: float, unit: str):
        self.negative, self.lead, self.minutes, self.seconds, self.unit = (
            negative, lead, minutes, seconds, unit,
        )

    @property
    def magnitude(self) -> float:
        return self.lead + self.minutes / 60 + self.seconds / 3600


def _parse_sexagesimal(text: str) -> _Sexagesimal | None:
    """TEXT in one of the sexagesimal forms, or None (minutes and seconds below 60)."""
    unit = ""
    match = _COLONS.fullmatch(text) or _SPACES.fullmatch(text)
    if match:
        sign, lead, minutes, seconds = match.groups()
    else:
        match = _UNITS.fullmatch(text)
        if not match:
            return None
        sign, lead, letter, minutes, minute_mark, seconds, second_mark = match.groups()
        unit = "h" if letter.lower() == "h" else "d"
        if unit == "h" and ((minute_mark or "m").lower() != "m" or (second_mark or "s").lower() != "s"):
            return None  # hours take m and s, not ' and "
    value = _Sexagesimal(sign == "-", int(lead), int(minutes), float(seconds or 0), unit)
    if value.minutes >= 60 or value.seconds >= 60:
        return None
    return value


def _show(raw: str) -> str:
    """RAW quoted for a message, at most 60 characters."""
    return repr(raw if len(raw) <= 60 else raw[:57] + "...")


def _decimal(raw: str, option: str) -> float | None:
    """RAW as a finite decimal number, None if it is not written as one; BadInput for
    a number with '_' or one that is not finite ('nan', 'inf', '1e999')."""
    if _DECIMAL.fullmatch(raw):
        value = float(raw)
        if not math.isfinite(value):
            raise BadInput(f"{option} {_show(raw)} is not a finite number")
        return value
    if "_" in raw:
        raise BadInput(f"{option} {_show(raw)}: write numbers without '_'")
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value):
        raise BadInput(f"{option} {_show(raw)} is not a finite number")
    return None  # float() takes forms (non-ASCII digits, ...) that are not accepted here


def parse_ra(text: str | float, option: str = "--ra") -> float:
    """RA in degrees from decimal degrees, or sexagesimal: hours with colons, spaces or
    ``h`` ("14:03:38.56", "14 03 38.56", "14h03m38.56s"), degrees with ``d`` or a degree
    sign ("210d54m38.4s"). BadInput (exit 2) naming OPTION otherwise, or when outside
    [0, 360) degrees."""
    raw = str(text).strip()
    value = _decimal(raw, option)
    if value is None:
        parsed = _parse_sexagesimal(raw)
        if parsed is None:
            raise BadInput(
                f"{option} {_show(raw)} is neither decimal degrees nor sexagesimal"
                " (hours 14:03:38.56 or 14h03m38.56s; degrees 210d54m38.4s)"
            )
        if parsed.negative:
            raise BadInput(f"{option} {_show(raw)} is negative: RA is in [0, 360) degrees")
        if parsed.unit == "d":
            value = parsed.magnitude
        else:
            if parsed.lead >= 24:
                raise BadInput(
                    f"{option} {_show(raw)} is outside [0, 24) hours (sexagesimal RA with"
                    " colons, spaces or h is in hours; write 210d54m38s for degrees)"
                )
            value = parsed.magnitude * 15.0
    if not 0 <= value < 360:
        raise BadInput(f"{option} {_show(raw)} is outside [0, 360) degrees")
    return value + 0.0  # -0.0 -> 0.0


def parse_dec(text: str | float, option: str = "--dec") -> float:
    """Dec in degrees from decimal degrees, or sexagesimal degrees ("+54:18:41.9",
    "-05 23 12", "54d18m41.9s"; never hours: "+54h18m" is BadInput). BadInput (exit 2)
    naming OPTION otherwise, or when outside [-90, 90] degrees."""
    raw = str(text).strip()
    value = _decimal(raw, option)
    if value is None:
        parsed = _parse_sexagesimal(raw)
        if parsed is None:
            raise BadInput(
                f"{option} {_show(raw)} is neither decimal degrees nor sexagesimal degrees"
                " (+54:18:41.9, 54d18m41.9s)"
            )
        if parsed.unit == "h":
            raise BadInput(f"{option} {_show(raw)}: 'h' (hours) is for RA only; Dec is in degrees")
        value = -parsed.magnitude if parsed.negative else parsed.magnitude
    if not -90 <= value <= 90:
        raise BadInput(f"{option} {_show(raw)} is outside [-90, 90] degrees")
    return value + 0.0


def sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    """(``hh:mm:ss.ss``, ``+dd:mm:ss.s``) for display, rounded."""
    centi = round(ra / 15.0 * 360000) % (24 * 360000)  # hundredths of a second of time
    hh, rest = divmod(centi, 360000)
    mm, ss = divmod(rest, 6000)
    deci = round(abs(dec) * 36000)  # tenths of an arcsecond
    dd, rest = divmod(deci, 36000)
    dm, ds = divmod(rest, 600)
    sign = "-" if dec < 0 and deci else "+"
    return f"{hh:02d}:{mm:02d}:{ss / 100:05.2f}", f"{sign}{dd:02d}:{dm:02d}:{ds / 10:04.1f}"


def parse_position(ra: Any, dec: Any) -> tuple[float, float]:
    """(--ra, --dec) -> degrees; BadInput (exit 2) naming the value for half a pair."""
    if ra is None and dec is not None:
        raise BadInput(f"--dec {str(dec).strip()!r} was given without --ra: give both, or neither")
    if dec is None and ra is not None:
        raise BadInput(f"--ra {str(ra).strip()!r} was given without --dec: give both, or neither")
    return parse_ra(ra), parse_dec(dec)


# -- resolvers --------------------------------------------------------------------

def cache_key(name: str) -> str:
    return " ".join(name.split()).casefold()


class Resolver:
    """Resolves names with the configured resolvers, through the SQLite cache."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        warn: Callable[[str], None] | None = None,
        transport: Any = None,
    ):
        self.settings = settings
        self.store = store
        self.warn = warn or (lambda message: None)
        self.transport = transport
        self.last_from_cache = False  # whether the last resolve() answer came from the cache

    # local targets table -------------------------------------------------------------
    def local(self, name: str) -> Target | None:
        row = self.store.conn.execute(
            "SELECT name, ra, dec FROM targets WHERE name = ?", (name.strip(),)
        ).fetchone()
        if row is None:
            return None
        return Target(ra=row["ra"], dec=row["dec"], name=row["name"], resolver="local")

    def cached(self, name: str) -> Target | None:
        """The cached answer for NAME (None when absent, or when its position is unusable)."""
        row = self.store.conn.execute(
            "SELECT * FROM resolver_cache WHERE key = ?", (cache_key(name),)
        ).fetchone()
        if row is None or position_problem(row["ra"], row["dec"]) is not None:
            return None
        return Target(
            ra=float(row["ra"]),
            dec=float(row["dec"]),
            name=name.strip(),
            resolver=row["resolver"],
            canonical=clean_name(row["canonical"]),
        )

    def remember(self, name: str, target: Target) -> None:
        """Cache TARGET as the answer for NAME; skipped on a read-only data directory, and
        a failed write is a warning only (the name was resolved all the same)."""
        database = self.store.db
        if not database.writable:
            return
        try:
            with database.transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO resolver_cache (key, name, resolver, ra, dec, canonical,"
                    " resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        cache_key(name),
                        name.strip(),
                        target.resolver,
                        target.ra,
                        target.dec,
                        target.canonical,
                        database.clock(),
                    ),
                )
        except StdqError as exc:
            self.warn(f"warning: the answer for {name.strip()!r} was not cached ({exc.message})")

    # remote resolvers (plug-ins of the stdq.resolvers group) ---------------------------
    def remote(self, resolver: str, name: str) -> Target | None:
        """Ask the remote resolver RESOLVER (a registered NameResolver) for NAME.

        Its answer is checked: a position that is not two finite numbers with RA in
        [0, 360) and Dec in [-90, 90] is QueryFailed; the canonical name loses its
        control characters.
        """
        from stdq.registry import registry_for

        plugin = registry_for(self.settings).resolver(resolver, transport=self.transport)
        found = plugin.resolve(name)
        if found is None:
            return None
        if not isinstance(found, Target):
            raise QueryFailed(f"{resolver}: the resolver answered {type(found).__name__}, not a Target")
        problem = position_problem(found.ra, found.dec)
        if problem:
            raise QueryFailed(f"{resolver}: {problem}")
        return Target(
            ra=float(found.ra) + 0.0,
            dec=float(found.dec) + 0.0,
            name=found.name,
            resolver=found.resolver or resolver,
            canonical=clean_name(found.canonical),
        )

    def sesame(self, name: str) -> Target | None:
        return self.remote("sesame", name)

    def mast(self, name: str) -> Target | None:
        return self.remote("mast", name)

    def resolve(self, name: str, *, use_cache: bool = True) -> Target:
        """NAME -> Target, trying the resolvers of [resolver] order in turn.

        The local targets table is asked where "local" stands in the order; the
        cache of earlier remote answers (unless USE_CACHE is false) just before
        the first remote resolver, and only for answers of a resolver still in
        the order. A remote resolver that fails (down, an error status, an answer
        that is not its format, or a position that is not finite and in range) is
        skipped with a warning and nothing of it is cached.
        ResolveError (exit 4) naming every resolver tried when none knows the name;
        TemporaryFailure (exit 75) when every remote resolver asked failed.
        """
        if not name or not name.strip():
            raise BadInput("the target name is empty")
        self.last_from_cache = False
        order = self.settings.resolver.order
        tried: list[str] = []
        down: list[str] = []
        cache_checked = not use_cache
        for resolver in order:
            if resolver == "local":
                tried.append("local targets")
                found = self.local(name)
                if found:
                    return found
                continue
            if not cache_checked:
                cache_checked = True
                found = self.cached(name)
                if found and found.resolver in order:
                    self.last_from_cache = True
                    return found
            tried.append(resolver)
            try:
                found = self.remote(resolver, name)
            except TemporaryFailure as exc:
                down.append(resolver)
                self.warn(f"warning: resolver {resolver} is not answering ({exc.message}); skipping it")
                continue
            except StdqError as exc:
                down.append(resolver)
                self.warn(f"warning: resolver {resolver} gave an unusable answer ({exc.message}); skipping it")
                continue
            except Exception as exc:  # a resolver plug-in's own bug: that resolver failed
                down.append(resolver)
                self.warn(
                    f"warning: resolver {resolver} failed ({type(exc).__name__}: {exc}); skipping it"
                )
                continue
            if found:
                self.remember(name, found)
                return found
        remote = [t for t in tried if t != "local targets"]
        if down and len(down) == len(remote):
            raise TemporaryFailure(
                f"could not resolve {name!r}: resolver(s) {', '.join(down)} did not answer usably",
                hint="try again later, or give --ra and --dec",
            )
        note = f"; {', '.join(down)} did not answer usably" if down else ""
        raise ResolveError(
            f"no resolver knows {name!r} (tried: {', '.join(tried)}{note})",
            hint="check the name, or give --ra and --dec (or: stdq targets add NAME --ra RA --dec DEC)",
        )


# -- local targets table ----------------------------------------------------------------


def add_target(store: Store, name: str, ra: float, dec: float, source: str = "user") -> Target:
    if not name.strip():
        raise BadInput("the target name is empty")
    with store.db.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO targets (name, ra, dec, source, created_at) VALUES (?, ?, ?, ?, ?)",
            (name.strip(), ra, dec, source, store.db.clock()),
        )
    return Target(ra=ra, dec=dec, name=name.strip(), resolver="local")


def list_targets(store: Store) -> list[dict[str, Any]]:
    return [dict(r) for r in store.conn.execute("SELECT * FROM targets ORDER BY name")]


def remove_target(store: Store, name: str) -> bool:
    with store.db.transaction() as conn:
        cur = conn.execute("DELETE FROM targets WHERE name = ?", (name.strip(),))
        conn.execute("DELETE FROM resolver_cache WHERE key = ?", (cache_key(name),))
    return cur.rowcount > 0


def target_key(target: Target) -> str:
    """Coordinates to 1e-6 degree: part of a job's idempotency key."""
    return json.dumps([round(target.ra, 6), round(target.dec, 6)])
