"""Create remote work once: the one helper of every request that makes a remote task.

A POST that creates a task (an ATLAS ``queue/`` submission, a ZFPS request, a
login) must never be sent twice for one job, yet its answer can be lost after the
server acted on it. :func:`create_once`:

1. keeps a record in the job's checkpoint under SLOT -- an idempotency key and
   the state of the send -- saved BEFORE anything is sent;
2. when the record says an earlier send may have reached the server (a killed
   process, an ambiguous failure), first looks for the task carrying the key and
   adopts it when found; a look that fails ends the attempt (never a blind send);
3. sends once (the HTTP client never re-sends a create-once request, see
   :class:`stdq.http.RequestPolicy`);
4. after an ambiguous failure (:class:`stdq.http.AmbiguousSend`) looks for the
   task every LOOK_EVERY seconds for GRACE seconds; when it does not appear the
   attempt ends as a TemporaryFailure (``retry_after=None``: the job's backoff)
   and the next attempt looks again before it sends anything.

The caller gives ``send(key)`` (one send with the key in the request, e.g. the
ATLAS comment ``stdq job N <key>``; returns the created task, raises
AmbiguousSend when the answer was lost) and ``find(key)`` (the task carrying the
key, or None; raises TemporaryFailure when it could not look).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from stdq.errors import StdqError, TemporaryFailure
from stdq.http import AmbiguousSend

T = TypeVar("T")

SENDING = "sending"  # saved before the send: an earlier run may have sent it
UNKNOWN = "unknown"  # the send failed after it may have reached the server
CREATED = "created"  # the task exists and the caller has adopted it
REFUSED = "refused"  # the server answered: nothing was created


class Context(Protocol):
    """What create_once needs of a QueryContext."""

    checkpoint: dict[str, Any]

    @property
    def clock(self) -> Callable[[], float]: ...

    def save_checkpoint(self, **updates: Any) -> None: ...

    def event(self, kind: str, message: str) -> None: ...

    def progress(self, text: str, wait_until: float | None = None) -> None: ...

    def sleep(self, seconds: float) -> None: ...

    def check_cancelled(self) -> None: ...


def record(context: Context, slot: str) -> dict[str, Any] | None:
    """The create-once record of SLOT in the checkpoint (key, state, sent_at), if any."""
    value = context.checkpoint.get(slot)
    return dict(value) if isinstance(value, dict) and value.get("key") else None


def pending_key(context: Context, slot: str) -> str | None:
    """The key of a send that may have created a task nobody adopted (for cleanup)."""
    rec = record(context, slot)
    if rec is not None and rec.get("state") in (SENDING, UNKNOWN):
        return str(rec["key"])
    return None


def forget(context: Context, slot: str) -> None:
    """Drop SLOT's record: the next create_once makes a new task with a new key."""
    context.save_checkpoint(**{slot: None})


def new_key() -> str:
    """A fresh idempotency key (12 hex digits)."""
    return secrets.token_hex(6)


def create_once(
    context: Context,
    *,
    slot: str,
    send: Callable[[str], T],
    find: Callable[[str], T | None],
    service: str,
    what: str,
    grace: float,
    look_every: float,
) -> tuple[T, bool]:
    """The task of this job, created at most once: ``(task, found)``.

    FOUND is True when the task was found by its key (an earlier send created it)
    rather than taken from the answer to our own send. WHAT names the task in
    messages ("the ATLAS task").
    """
    rec = record(context, slot)
    if rec is not None and rec.get("state") in (SENDING, UNKNOWN, CREATED):
        key = str(rec["key"])
        found = find(key)  # a failed look raises: never send while it may exist
        if found is not None:
            _save(context, slot, key, CREATED)
            context.event("remote", f"{service}: found {what} an earlier send created (key {key});"
                                    " not sending again")
            return found, True
    else:
        key = str(rec["key"]) if rec is not None else new_key()
    _save(context, slot, key, SENDING)
    try:
        task = send(key)
    except AmbiguousSend as exc:
        _save(context, slot, key, UNKNOWN)
        context.event("remote", f"{exc.message}; looking for {what} (key {key})")
        found = _look(context, find, key, service=service, what=what, grace=grace,
                      look_every=look_every)
        if found is not None:
            _save(context, slot, key, CREATED)
            context.event("remote", f"{service}: found {what} the failed send created (key {key})")
            return found, True
        cause = exc.message.removesuffix("; try again later")
        raise TemporaryFailure(
            f"{cause}; {what} did not appear within {grace:g} s: the next attempt looks for"
            " it again before sending anything",
            retry_after=None,
        ) from None
    except StdqError:
        # the server answered "no" (or was never reached): nothing was created
        _save(context, slot, key, REFUSED)
        raise
    _save(context, slot, key, CREATED)
    return task, False


def _look(
    context: Context,
    find: Callable[[str], T | None],
    key: str,
    *,
    service: str,
    what: str,
    grace: float,
    look_every: float,
) -> T | None:
    """FIND(KEY) now and every LOOK_EVERY seconds until GRACE has passed; failed looks
    count as "not found yet"."""
    end = context.clock() + max(0.0, grace)
    while True:
        context.check_cancelled()
        try:
            found = find(key)
        except TemporaryFailure:
            found = None
        if found is not None:
            return found
        now = context.clock()
        if now >= end - 1e-6:
            return None
        wait = min(look_every, end - now)
        context.progress(f"{service}: looking for {what} the lost answer may have created",
                         wait_until=now + wait)
        context.sleep(wait)


def _save(context: Context, slot: str, key: str, state: str) -> None:
    context.save_checkpoint(**{slot: {"key": key, "state": state, "at": context.clock()}})
