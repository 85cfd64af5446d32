"""One HTTP server on 127.0.0.1 hosting the survey emulators, with faults on demand.

Each emulator (a subclass of :class:`Emulator`) is mounted under its own path
prefix; services and resolvers are pointed at ``server.url(name)`` through their
``url`` settings. Every request is logged (``server.requests``, or
``GET /_control/log``), and faults can be armed from Python
(``server.add_fault(...)``) or over HTTP (``POST /_control/fault``), so tests
that run the real ``stdq`` command in a subprocess can use them too.

Run it standalone: ``python -m stdq.testing.fakeserver --port 8765 --settings emulators.toml``
(every registered emulator, including those of installed plug-ins; the settings file
points their services at them).

Fault kinds (answered instead of the emulator's own answer, ``times`` times):

- ``429``: status 429 with ``Retry-After: <retry_after>`` and a DRF-style body
  ``{"detail": "Request was throttled. Expected available in N seconds."}``;
- ``500`` / ``502`` / ``503`` / ``504``: that status with a short text body;
- ``hang``: sleep ``seconds`` before answering normally (a timeout for the client);
- ``html``: 200 with an HTML error page instead of the real answer;
- ``truncate``: the real answer cut in half, with the full Content-Length, then
  the connection closed;
- ``empty``: 200 with an empty body.

More kinds (a lost answer after the emulator acted, a redirect to another origin, a
slow or endless body, an unusable Retry-After) are in :mod:`stdq.testing.faults`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
    b"<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your"
    b" request due to maintenance downtime or capacity problems.</p></body></html>\n"
)


@dataclass
class Request:
    """One request as an emulator sees it."""

    method: str
    path: str  # below the emulator's prefix, e.g. "/dr2/mean.csv"
    full_path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    server: FakeServer | None = None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def form(self) -> dict[str, list[str]]:
        ctype = self.headers.get("content-type", "")
        if "application/json" in ctype:
            data = json.loads(self.body or b"{}")
            return {k: [v if isinstance(v, str) else json.dumps(v)] for k, v in data.items()}
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # writes the whole answer itself, given the request handler (stdq.testing.faults:
    # a lost, slow or endless answer); the log still shows STATUS
    writer: Any = None

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(
            status,
            json.dumps(data).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    @classmethod
    def text(
        cls, text: str | bytes, status: int = 200, content_type: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = text.encode() if isinstance(text, str) else text
        return cls(status, body, {"Content-Type": content_type, **(headers or {})})


class Emulator:
    """Base class of one emulated service: mounted at ``prefix``; ``handle`` answers."""

    name = ""
    prefix = ""

    def __init__(self) -> None:
        self.server: FakeServer | None = None
        self.lock = threading.RLock()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url + self.prefix

    def handle(self, request: Request) -> Response:
        raise NotImplementedError


@dataclass
class Fault:
    kind: str
    path: str = ".*"  # regex searched in the full path (with query string)
    method: str | None = None
    times: int = 1
    retry_after: int | None = 1
    seconds: float = 5.0
    body: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # for stdq.testing.faults kinds

    def matches(self, method: str, full_path: str) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.path, full_path) is not None


@dataclass
class LoggedRequest:
    time: float
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: str
    status: int = 0
    emulator: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Server(ThreadingHTTPServer):
    # a listen backlog like a real server's (the default 5 made bursts of new connections --
    # dozens of worker threads at once -- wait for SYN retries, 1 s and 3 s, or be reset)
    request_queue_size = 128


class FakeServer:
    """The emulators behind one ThreadingHTTPServer on 127.0.0.1."""

    def __init__(self, emulators: list[Emulator] | None = None, port: int = 0, host: str = "127.0.0.1"):
        self.emulators: list[Emulator] = []
        self.faults: list[Fault] = []
        self.requests: list[LoggedRequest] = []
        self.lock = threading.RLock()
        self.host = host
        self._httpd = _Server((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.handle_error = _report_error  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None
        for emulator in emulators if emulators is not None else default_emulators():
            self.mount(emulator)

    # -- set-up ---------------------------------------------------------------------
    def mount(self, emulator: Emulator) -> Emulator:
        emulator.server = self
        self.emulators.append(emulator)
        self.emulators.sort(key=lambda e: len(e.prefix), reverse=True)
        return emulator

    def emulator(self, name: str) -> Emulator:
        for emulator in self.emulators:
            if emulator.name == name:
                return emulator
        raise KeyError(name)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, name: str) -> str:
        """The base URL of emulator NAME (what a service's `url` setting should be)."""
        return self.emulator(name).base_url

    def start(self) -> FakeServer:
        # a short poll interval: stop() (socketserver's shutdown) waits up to one interval
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fakeserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and the log ------------------------------------------------------------
    def add_fault(self, kind: str, path: str = ".*", **kw: Any) -> Fault:
        fault = Fault(kind=kind, path=path, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, method: str, full_path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.matches(method, full_path):
                    fault.times -= 1
                    return fault
        return None

    def log_of(self, emulator: str | None = None, method: str | None = None, path: str | None = None):
        with self.lock:
            return [
                r
                for r in self.requests
                if (emulator is None or r.emulator == emulator)
                and (method is None or r.method == method)
                and (path is None or re.search(path, r.path))
            ]

    # -- dispatch -------------------------------------------------------------------------
    def dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[Response, Fault | None, str]:
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query, keep_blank_values=True)
        if parts.path.startswith("/_control/"):
            return self._control(method, parts.path, body), None, "_control"
        emulator = next((e for e in self.emulators if parts.path.startswith(e.prefix)), None)
        fault = self.take_fault(method, raw_path)
        if emulator is None:
            return Response.text("Not Found", 404), fault, ""
        request = Request(
            method=method,
            path=parts.path[len(emulator.prefix):] or "/",
            full_path=raw_path,
            query=query,
            headers=headers,
            body=body,
            server=self,
        )
        if fault is not None:
            from stdq.testing import faults

            if fault.kind in faults.KINDS:
                return faults.answer(fault, request, emulator.handle), fault, emulator.name
        if fault is not None and fault.kind not in ("hang", "truncate"):
            return self._fault_response(fault), fault, emulator.name
        if fault is not None and fault.kind == "hang":
            time.sleep(fault.seconds)
        try:
            response = emulator.handle(request)
        except Exception as exc:  # an emulator bug shows as a 500 with its text
            response = Response.text(f"emulator error: {type(exc).__name__}: {exc}", 500)
        return response, fault, emulator.name

    @staticmethod
    def _fault_response(fault: Fault) -> Response:
        if fault.kind == "429":
            wait = fault.retry_after if fault.retry_after is not None else 1
            unit = "second" if wait == 1 else "seconds"
            body = fault.body or json.dumps(
                {"detail": f"Request was throttled. Expected available in {wait} {unit}."}
            )
            headers = {"Content-Type": "application/json"}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(wait)
            return Response(429, body.encode(), headers)
        if fault.kind in ("500", "502", "503", "504"):
            return Response.text(fault.body or "Internal Server Error", int(fault.kind))
        if fault.kind == "html":
            return Response.text(HTML_ERROR_PAGE, 200, "text/html; charset=utf-8")
        if fault.kind == "empty":
            return Response.text(b"", 200)
        return Response.text(f"unknown fault {fault.kind}", 500)

    def _control(self, method: str, path: str, body: bytes) -> Response:
        if path == "/_control/fault" and method == "POST":
            spec = json.loads(body or b"{}")
            self.add_fault(**spec)
            return Response.json({"ok": True})
        if path == "/_control/faults" and method == "DELETE":
            self.clear_faults()
            return Response.json({"ok": True})
        if path == "/_control/log":
            with self.lock:
                return Response.json([r.as_dict() for r in self.requests])
        if path == "/_control/urls":
            return Response.json({e.name: e.base_url for e in self.emulators})
        if path == "/_control/add_night" and method == "POST":
            # one more night of epochs in every emulator that makes data up to the present
            nights = {e.name: e.add_night() for e in self.emulators if hasattr(e, "add_night")}
            return Response.json({"ok": True, "nights": nights})
        return Response.text("unknown control path", 404)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "stdq-fakeserver/1"
            # headers and body go out in two writes: without TCP_NODELAY, Nagle's
            # algorithm and delayed ACKs add ~40 ms to many keep-alive answers
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                entry = LoggedRequest(
                    time=time.time(),
                    method=self.command,
                    path=self.path,
                    query=parse_qs(urlsplit(self.path).query, keep_blank_values=True),
                    headers=headers,
                    body=body.decode("utf-8", "replace"),
                )
                response, fault, emulator = server.dispatch(self.command, self.path, headers, body)
                entry.status = response.status
                entry.emulator = emulator
                if emulator != "_control":
                    with server.lock:
                        server.requests.append(entry)
                if response.writer is not None:
                    response.writer(self)
                    return
                payload = response.body
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                if fault is not None and fault.kind == "truncate":
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.end_headers()
                if self.command != "HEAD" and payload:
                    self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _serve

        return Handler


def default_emulators() -> list[Emulator]:
    """One instance of every registered emulator: stdq's own and those of installed plug-ins
    (entry-point group ``stdq.emulators``, see :mod:`stdq.registry`).

    Test-only emulators (``stdq.testing.slow``) are not registered: tests mount them.
    """
    from stdq.registry import emulator_factories

    return [factory() for factory in emulator_factories()]


def _report_error(request: Any, client_address: Any) -> None:
    """A client that went away (after a fault's cut or late answer) is normal; any other
    error goes to the process's own stderr, never into a stream a test has captured."""
    if isinstance(sys.exc_info()[1], ConnectionError):
        return
    traceback.print_exc(file=sys.__stderr__)


def settings_toml(server: FakeServer, extra: str = "") -> str:
    """A settings file pointing every built-in service and resolver at SERVER."""
    names = {e.name for e in server.emulators}
    lines = ["[http]", "timeout = 5", "max_retries = 2", "", "[resolver]"]
    if "sesame" in names:
        lines.append(f'sesame_url = "{server.url("sesame")}"')
    if "mast-resolver" in names:
        lines.append(f'mast_url = "{server.url("mast-resolver")}"')
    for emulator in server.emulators:
        service = getattr(emulator, "service_name", None)
        if service:
            lines += ["", f"[services.{service}]", f'url = "{emulator.base_url}"']
            lines += getattr(emulator, "service_settings_lines", lambda: [])()
    return "\n".join(lines) + "\n" + extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="stdq's survey emulators on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--settings", metavar="PATH", help="also write a stdq settings file pointing at the emulators")
    args = parser.parse_args(argv)
    server = FakeServer(port=args.port).start()
    if args.settings:  # it holds the emulators' test credentials: 0600 like any settings file
        from pathlib import Path

        from stdq.config import write_private_file

        write_private_file(Path(args.settings), settings_toml(server))
    for emulator in server.emulators:
        print(f"{emulator.name}: {emulator.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

