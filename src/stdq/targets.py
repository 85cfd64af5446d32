"""Targets: coordinate parsing, the local targets table, and name resolution with its cache.

The remote resolvers are plug-ins (:mod:`stdq.resolvers`, entry-point group
``stdq.resolvers``), asked in the order of ``[resolver] order``.

Stdlib only at import time; resolvers import the HTTP layer when they run.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stdq import db
from stdq.errors import BadInput, ResolveError, StdqError, TemporaryFailure
from stdq.records import Target
from stdq.resolvers import looks_like_sesame, parse_mast_resolver, parse_sesame

__all__ = [
    "Resolver", "Target", "add_target", "cache_key", "list_targets", "looks_like_sesame",
    "parse_dec", "parse_mast_resolver", "parse_position", "parse_ra", "parse_sesame",
    "remove_target", "sexagesimal", "target_key",
]

if TYPE_CHECKING:
    from stdq.config import Settings
    from stdq.store import Store


# -- coordinates ------------------------------------------------------------------

_SEXA = re.compile(
    r"^\s*([+-])?\s*(\d{1,3})[\s:hd°]\s*(\d{1,2})(?:[\s:m']\s*(\d{1,2}(?:\.\d*)?))?\s*[s\"]?\s*$",
    re.IGNORECASE,
)


def _sexagesimal(text: str) -> tuple[float, bool] | None:
    m = _SEXA.match(text)
    if not m:
        return None
    sign, a, b, c = m.groups()
    minutes, seconds = float(b), float(c or 0)
    if minutes >= 60 or seconds >= 60:
        return None
    value = float(a) + minutes / 60 + seconds / 3600
    return (-value if sign == "-" else value), sign == "-"


def parse_ra(text: str | float) -> float:
    """RA in decimal degrees, or sexagesimal hours ("14:03:38.56", "14h03m38.56s")."""
    raw = str(text).strip()
    try:
        value = float(raw)
    except ValueError:
        parsed = _sexagesimal(raw)
        if parsed is None or parsed[1]:
            raise BadInput(
                f"RA {raw!r} is neither decimal degrees nor sexagesimal hours (14:03:38.56)"
            ) from None
        if parsed[0] >= 24:
            raise BadInput(f"RA {raw!r} is outside [0, 24) hours (sexagesimal RA is in hours)") from None
        value = parsed[0] * 15.0
    if not math.isfinite(value) or not 0 <= value < 360:
        raise BadInput(f"RA {raw!r} is outside [0, 360) degrees")
    return value


def parse_dec(text: str | float) -> float:
    """Dec in decimal degrees, or sexagesimal degrees ("+54:18:41.9", "-05 23 12")."""
    raw = str(text).strip()
    try:
        value = float(raw)
    except ValueError:
        parsed = _sexagesimal(raw)
        if parsed is None:
            raise BadInput(
                f"Dec {raw!r} is neither decimal degrees nor sexagesimal degrees (+54:18:41.9)"
            ) from None
        value = parsed[0]
    if not math.isfinite(value) or not -90 <= value <= 90:
        raise BadInput(f"Dec {raw!r} is outside [-90, 90] degrees")
    return value


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
        row = self.store.conn.execute(
            "SELECT * FROM resolver_cache WHERE key = ?", (cache_key(name),)
        ).fetchone()
        if row is None:
            return None
        return Target(
            ra=row["ra"],
            dec=row["dec"],
            name=name.strip(),
            resolver=row["resolver"],
            canonical=row["canonical"],
        )

    def remember(self, name: str, target: Target) -> None:
        with db.transaction(self.store.conn) as conn:
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
                    time.time(),
                ),
            )

    # remote resolvers (plug-ins of the stdq.resolvers group) ---------------------------
    def remote(self, resolver: str, name: str) -> Target | None:
        """Ask the remote resolver RESOLVER (a registered NameResolver) for NAME."""
        from stdq.registry import registry_for

        plugin = registry_for(self.settings).resolver(resolver, transport=self.transport)
        return plugin.resolve(name)

    def sesame(self, name: str) -> Target | None:
        return self.remote("sesame", name)

    def mast(self, name: str) -> Target | None:
        return self.remote("mast", name)

    def resolve(self, name: str, *, use_cache: bool = True) -> Target:
        """NAME -> Target, trying the resolvers of [resolver] order in turn.

        The local targets table is asked where "local" stands in the order; the
        cache of earlier remote answers (unless USE_CACHE is false) just before
        the first remote resolver, and only for answers of a resolver still in
        the order. A remote resolver that is down (temporary failure, error
        status, an answer that is not its format) is skipped with a warning.
        ResolveError (exit 4) naming every resolver tried when none knows the name;
        TemporaryFailure (exit 75) when every remote resolver asked was down.
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
            except StdqError as exc:
                down.append(resolver)
                self.warn(f"warning: resolver {resolver} is not answering ({exc.message}); skipping it")
                continue
            if found:
                self.remember(name, found)
                return found
        remote = [t for t in tried if t != "local targets"]
        if down and len(down) == len(remote):
            raise TemporaryFailure(
                f"could not resolve {name!r}: resolver(s) {', '.join(down)} did not answer",
                hint="try again later, or give --ra and --dec",
            )
        note = f"; {', '.join(down)} did not answer" if down else ""
        raise ResolveError(
            f"no resolver knows {name!r} (tried: {', '.join(tried)}{note})",
            hint="check the name, or give --ra and --dec (or: stdq targets add NAME --ra RA --dec DEC)",
        )


# -- local targets table ----------------------------------------------------------------


def add_target(store: Store, name: str, ra: float, dec: float, source: str = "user") -> Target:
    if not name.strip():
        raise BadInput("the target name is empty")
    with db.transaction(store.conn) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO targets (name, ra, dec, source, created_at) VALUES (?, ?, ?, ?, ?)",
            (name.strip(), ra, dec, source, time.time()),
        )
    return Target(ra=ra, dec=dec, name=name.strip(), resolver="local")


def list_targets(store: Store) -> list[dict[str, Any]]:
    return [dict(r) for r in store.conn.execute("SELECT * FROM targets ORDER BY name")]


def remove_target(store: Store, name: str) -> bool:
    with db.transaction(store.conn) as conn:
        cur = conn.execute("DELETE FROM targets WHERE name = ?", (name.strip(),))
        conn.execute("DELETE FROM resolver_cache WHERE key = ?", (cache_key(name),))
    return cur.rowcount > 0


def target_key(target: Target) -> str:
    """Coordinates to 1e-6 degree: part of a job's idempotency key."""
    return json.dumps([round(target.ra, 6), round(target.dec, 6)])
