"""Faults of the request layer, on demand, for every emulator of the FakeServer.

Armed like the FakeServer's own faults (``server.add_fault(kind, path, method=...,
times=..., options={...})`` or ``POST /_control/fault``); each answers instead of
(or after) the emulator's own answer:

- ``drop``: the emulator handles the request (a POST creates its task), then the
  connection is closed without an answer -- the answer is lost (with
  ``options={"handle": False}`` the emulator never sees the request: nothing made);
- ``hang_after``: the emulator handles the request, then nothing is sent for
  ``seconds`` (a read timeout for the client) and the connection is closed;
- ``redirect``: ``options["status"]`` (default 307) to ``options["location"]``
  (with the request's own path and query appended unless ``keep_path`` is false),
  without asking the emulator: e.g. to a second FakeServer on another port, which
  is another origin;
- ``slow_body``: the emulator's answer, its headers at once and its body one byte
  every ``options["interval"]`` seconds (default 1.0);
- ``endless``: 200 with no Content-Length and a body that never ends (64 KiB
  chunks of ``options["fill"]``, default ``"0"``) until the client closes;
- ``retry_after``: ``options["status"]`` (default 429) with ``Retry-After:
  options["value"]`` as given (``"1e9"``, ``"inf"``, ``"-5"``, ``"soon"``), and the
  emulator does nothing.

(The FakeServer itself has ``429``, ``5xx``, ``hang`` (before the emulator acts),
``html`` (an HTML error page), ``truncate`` (half the real body) and ``empty``.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from stdq.testing.fakeserver import Fault, Request, Response

KINDS = frozenset({"drop", "hang_after", "redirect", "slow_body", "endless", "retry_after"})
ENDLESS_LIMIT_SECONDS = 60.0  # an endless body stops anyway after this (a client that never closes)
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def answer(fault: Fault, request: Request, handle: Callable[[Request], Response]) -> Response:
    """The answer of FAULT to REQUEST (HANDLE is the emulator's own handler)."""
    options: dict[str, Any] = dict(getattr(fault, "options", None) or {})
    kind = fault.kind
    if kind == "redirect":
        location = str(options["location"])
        if options.get("keep_path", True):
            location = location.rstrip("/") + request.full_path
        status = int(options.get("status", 307))
        return Response(status, b"", {"Location": location, "Content-Length": "0"})
    if kind == "retry_after":
        status = int(options.get("status", 429))
        value = str(options.get("value", "1e9"))
        body = json.dumps({"detail": "Request was throttled."}).encode()
        return Response(status, body, {"Content-Type": "application/json", "Retry-After": value})
    if kind == "endless":
        fill = str(options.get("fill", "0")).encode() or b"0"
        chunk = (fill * (65536 // len(fill) + 1))[:65536]
        headers = {"Content-Type": str(options.get("content_type", "text/plain"))}
        return Response(200, b"", headers, writer=_endless(chunk, headers))
    if kind == "drop" and not options.get("handle", True):
        return Response(0, b"", {}, writer=_drop)  # lost before the emulator saw it
    real = handle(request)
    if kind == "drop":
        return Response(real.status, real.body, real.headers, writer=_drop)
    if kind == "hang_after":
        seconds = float(options.get("seconds", fault.seconds))
        return Response(real.status, real.body, real.headers, writer=_hang(seconds))
    if kind == "slow_body":
        interval = float(options.get("interval", 1.0))
        return Response(real.status, real.body, real.headers, writer=_slow(real, interval))
    raise ValueError(f"unknown fault kind {kind!r}")


def _drop(handler: Any) -> None:
    handler.close_connection = True


def _hang(seconds: float) -> Callable[[Any], None]:
    def write(handler: Any) -> None:
        time.sleep(seconds)
        handler.close_connection = True

    return write


def _slow(real: Response, interval: float) -> Callable[[Any], None]:
    def write(handler: Any) -> None:
        handler.close_connection = True
        try:
            handler.send_response(real.status)
            for name, value in real.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(real.body)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.flush()
            for i in range(len(real.body)):
                handler.wfile.write(real.body[i : i + 1])
                handler.wfile.flush()
                time.sleep(interval)
        except _CLIENT_GONE:
            return

    return write


def _endless(chunk: bytes, headers: dict[str, str]) -> Callable[[Any], None]:
    def write(handler: Any) -> None:
        handler.close_connection = True
        stop = time.monotonic() + ENDLESS_LIMIT_SECONDS
        try:
            handler.send_response(200)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Connection", "close")
            handler.end_headers()
            while time.monotonic() < stop:
                handler.wfile.write(chunk)
        except _CLIENT_GONE:
            return

    return write
