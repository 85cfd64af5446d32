"""A sliding-window rate limiter shared by every process of one data directory.

Servers such as ATLAS allow each user a number of requests in any window of
time (60 writes and 600 reads per 60 s). Several workers and foreground queries
can run at once, so the count must be shared: every request takes a slot in the
``limiter(scope, ts)`` table of the data directory's SQLite database, inside a
``BEGIN IMMEDIATE`` transaction, and waits while ``limit`` slots of its scope
already lie within the last ``window`` seconds. A burst up to the limit passes
at once. Stdlib only.

A slot is taken before the request is sent and *settled* when its answer arrives
(:meth:`RateLimiter.settle`, called by :meth:`ReadWriteLimiter.after_response`, an
httpx response hook): its time moves to the answer's arrival, which is after the
server counted the request. However long the request took to leave (a busy
machine, a thread waiting for the GIL), the next slot is then counted from a
moment no earlier than the server's own, so a burst a window later cannot find
the server's window still full. The window is widened only by a small ``margin``
(default 0.2% of the window, at least 0.05 s) for clock steps; a request whose
answer never came keeps the time it was taken at (a 429 that follows is waited
out by the HTTP client).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stdq.db import Database

STALE_SECONDS = 86_400.0  # rows older than this are removed, whatever their scope


class RateLimiter:
    """At most LIMIT events of SCOPE in any WINDOW seconds, across processes.

    DATABASE is the session's shared :class:`~stdq.db.Database` (or a data directory, for
    which the limiter opens its own). ``acquire()`` waits (through SLEEP, which may raise to
    cancel) until a slot is free, takes it and returns the seconds waited. A LIMIT of 0 or
    less means no limit. Time comes from CLOCK, by default the database's clock.
    """

    def __init__(
        self,
        database: Database | Path | str,
        scope: str,
        limit: int,
        window: float,
        *,
        margin: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] | None = None,
    ):
        self._shared = database if isinstance(database, Database) else None
        self._data_dir = Path(database.data_dir if isinstance(database, Database) else database)
        self._local = threading.local()  # an own Database per thread, when none is shared
        self.scope = scope
        self.limit = int(limit)
        self.window = float(window)
        self.margin = max(0.05, 0.002 * self.window) if margin is None else float(margin)
        self._sleep = sleep
        self._clock = clock or (self._shared.clock if self._shared else time.time)

    @property
    def db(self) -> Database:
        """The shared Database, or this thread's own one (sqlite3 connections stay in a thread)."""
        if self._shared is not None:
            return self._shared
        own: Database | None = getattr(self._local, "db", None)
        if own is None:
            own = self._local.db = Database(self._data_dir, clock=self._clock)
        return own

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def now(self) -> float:
        """The limiter's clock (the database's, unless one was given)."""
        return self._clock()

    @property
    def span(self) -> float:
        """The window the limiter counts in: the server's window plus the margin."""
        return self.window + self.margin

    def acquire(self) -> float:
        """Wait for a free slot and take it; returns the seconds waited."""
        if self.limit <= 0 or self.window <= 0:
            return 0.0
        if getattr(self._local, "prepaid", False):  # taken already by take_now()
            self._local.prepaid = False
            return 0.0
        waited = 0.0
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait

    def try_acquire(self) -> float:
        """Take a slot now if one is free (returns 0), else how long to wait for one."""
        with self.db.transaction() as conn:
            now = self._clock()
            conn.execute(
                "DELETE FROM limiter WHERE (scope = ? AND ts <= ?) OR ts < ?",
                (self.scope, now - self.span, now - STALE_SECONDS),
            )
            rows = conn.execute(
                "SELECT ts FROM limiter WHERE scope = ? AND ts > ? ORDER BY ts DESC LIMIT ?",
                (self.scope, now - self.span, self.limit),
            ).fetchall()
            if len(rows) < self.limit:
                cur = conn.execute("INSERT INTO limiter (scope, ts) VALUES (?, ?)", (self.scope, now))
                self._local.slot = (cur.lastrowid, now)  # settled when the answer arrives
                return 0.0
            # the LIMIT-th most recent slot must leave the window first
            return max(0.01, float(rows[-1][0]) + self.span - now)

    def take_now(self) -> bool:
        """Take a slot now if one is free (True) for this thread's next :meth:`acquire`, which
        then returns at once: the check and the taking are one transaction, so two threads that
        both saw a free slot never both count on it."""
        if self.limit <= 0 or self.window <= 0:
            return True
        if self.try_acquire() > 0:
            return False
        self._local.prepaid = True
        return True

    def settle(self) -> None:
        """The answer to the request of this thread's last slot has arrived: the slot counts
        from now (never earlier than it was taken). A no-op without an unsettled slot, or when
        the answer came within the margin (which covers that much already)."""
        slot = getattr(self._local, "slot", None)
        if slot is None:
            return
        self._local.slot = None
        rowid, taken = slot
        now = self._clock()
        if now - taken <= self.margin:
            return  # answered within the margin: the window's widening covers it, no write
        with self.db.transaction() as conn:
            conn.execute("UPDATE limiter SET ts = MAX(ts, ?) WHERE rowid = ?", (now, rowid))

    def free(self) -> int:
        """Slots free now (without taking one); a very large number when there is no limit."""
        if self.limit <= 0 or self.window <= 0:
            return 1 << 30
        return max(0, self.limit - self.in_window())

    def wait_time(self) -> float:
        """Seconds until a slot is free (0 when one is free now), without taking it."""
        if self.limit <= 0 or self.window <= 0:
            return 0.0
        now = self._clock()
        rows = self.db.conn.execute(
            "SELECT ts FROM limiter WHERE scope = ? AND ts > ? ORDER BY ts DESC LIMIT ?",
            (self.scope, now - self.span, self.limit),
        ).fetchall()
        if len(rows) < self.limit:
            return 0.0
        return max(0.01, float(rows[-1][0]) + self.span - now)

    def turns(self) -> Callable[[int], float]:
        """When (clock time) the K-th next slot frees (K = 0: the next one), if every slot is taken
        again as soon as it frees: the free slots now, then each slot in the window a span after
        it was taken, then the same a span later, and so on. What a line of waiting requests
        uses to come back just before its turn."""
        now = self._clock()
        if self.limit <= 0 or self.window <= 0:
            return lambda k: now
        rows = self.db.conn.execute(
            "SELECT ts FROM limiter WHERE scope = ? AND ts > ? ORDER BY ts DESC LIMIT ?",
            (self.scope, now - self.span, self.limit),
        ).fetchall()
        frees = sorted([now] * (self.limit - len(rows)) + [float(r[0]) + self.span for r in rows])
        limit, span = self.limit, self.span
        return lambda k: frees[k % limit] + span * (k // limit)

    def in_window(self) -> int:
        """How many slots of this scope lie within the window now (for tests and display)."""
        row = self.db.conn.execute(
            "SELECT COUNT(*) FROM limiter WHERE scope = ? AND ts > ?",
            (self.scope, self._clock() - self.span),
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close this thread's own database, if the limiter opened one."""
        own: Database | None = getattr(self._local, "db", None)
        if own is not None:
            own.close()
            self._local.db = None


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ReadWriteLimiter:
    """Two limiters, for writes (POST/PUT/PATCH/DELETE) and reads (everything else).

    Its :meth:`before_request` fits ``http.Client(before_request=...)`` and its
    :meth:`after_response` an httpx ``response`` event hook (:func:`settle_on_answer`);
    ON_WAIT, if given, hears of every wait longer than a second.
    """

    def __init__(
        self,
        writes: RateLimiter,
        reads: RateLimiter,
        *,
        applies_to: Callable[[str], bool] | None = None,
        on_wait: Callable[[str, float], None] | None = None,
    ):
        self.writes = writes
        self.reads = reads
        self.applies_to = applies_to
        self.on_wait = on_wait

    def before_request(self, method: str, url: str) -> None:
        if self.applies_to is not None and not self.applies_to(url):
            return
        kind = "write" if method.upper() in WRITE_METHODS else "read"
        limiter = self.writes if kind == "write" else self.reads
        waited = limiter.acquire()
        if waited > 1.0 and self.on_wait:
            self.on_wait(kind, waited)

    def after_response(self, response: object = None) -> None:
        """An answer arrived (an httpx ``response`` event hook): settle this thread's slot."""
        self.writes.settle()
        self.reads.settle()

    def close(self) -> None:
        self.writes.close()
        self.reads.close()


def settle_on_answer(client: Any, limiter: ReadWriteLimiter) -> None:
    """Settle LIMITER's slots when CLIENT's answers arrive: an httpx ``response`` event hook
    on the :class:`stdq.http.Client`'s httpx client (called in the requesting thread)."""
    inner = client.client
    hooks = dict(inner.event_hooks)
    hooks["response"] = [*hooks.get("response", []), limiter.after_response]
    inner.event_hooks = hooks
