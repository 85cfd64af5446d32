"""The one HTTP client of stdq, and the request policy it applies.

Every service and resolver gets its client from :func:`make_client`. Each request
has a :class:`RequestPolicy`, known to the client:

- whether a send may be repeated. GET/HEAD/DELETE (and the other idempotent
  methods) are retried with exponential backoff and jitter on connection errors,
  timeouts, 5xx and 429 (honouring Retry-After and the ATLAS "Expected available
  in N seconds." text). A POST creates remote work: it is retried only when the
  server cannot have acted on it (the connection was never made, or a 429); after
  a send that may have reached the server (a reset after the bytes went out, a
  read timeout, a lost or cut answer, a 5xx) it raises :class:`AmbiguousSend` and
  is never sent again by this client (:mod:`stdq.remote` then looks for the task);
- an overall deadline (``[http] deadline``): the whole request -- its tries, the
  waits between them and the whole body, however slowly it comes -- on top of the
  per-read ``timeout``; passing it is a :class:`TemporaryFailure` (exit 75);
- a cap on the bytes read from one answer (``[http] max_bytes``): the body is
  streamed and never buffered past the cap (:class:`ResponseTooLarge`, exit 1);
- whether the body carries a secret: such a body is never re-sent to another
  origin on a 307/308 redirect (:class:`QueryFailed`, nothing sent there).

A Retry-After (or wait text) above ``MAX_HONOURED_WAIT``, negative, not a number,
NaN or infinite is never slept on nor stored: the try ends as a TemporaryFailure
with ``retry_after=None``, so the job's own backoff applies. Each retry is
reported to ``on_retry`` as a :class:`RetryInfo` (service, why, attempt k of n,
delay). Also: a ``stdq/<version>`` User-Agent, credentials sent only to their own
service's origin (:func:`make_host_auth`), and secrets redacted from every URL
and message shown to a user. Tests swap the network for ``httpx.MockTransport``
or an emulator on 127.0.0.1, and inject ``sleep`` and ``clock``.
"""

from __future__ import annotations

import base64
import email.utils
import io
import logging
import math
import random
import re
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from stdq import __version__
from stdq.errors import ConfigError, QueryFailed, TemporaryFailure

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("stdq.http")

USER_AGENT = f"stdq/{__version__}"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
BACKOFF_BASE = 0.5  # seconds; the n-th retry waits about BACKOFF_BASE * 2**n
BACKOFF_CAP = 60.0
MAX_HONOURED_WAIT = 600.0  # a server asking for a longer wait ends the try as temporary
DEFAULT_DEADLINE = 300.0
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
MAX_REDIRECTS = 10
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "PUT", "TRACE"})
SECRET_PARAMS = frozenset(
    {"token", "api_key", "apikey", "key", "password", "userpass", "passwd", "mast_token", "email"}
)
_CUT_SHORT = re.compile(r"received (\d+) bytes, expected (\d+)")
_AVAILABLE_IN = re.compile(r"available in (\S+) (second|seconds|minute|minutes)\b")


# -- redaction --------------------------------------------------------------------


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """TEXT with every secret value and every secret-looking URL parameter masked."""
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def redact_url(url: str, secrets: Iterable[str] = ()) -> str:
    """URL without user info and with secret query parameters masked."""
    try:
        parts = urlsplit(str(url))
        port = parts.port
    except ValueError:  # not a URL we can take apart: drop everything up to the host
        text = str(url)
        if "@" in text:
            scheme, _, rest = text.rpartition("://")
            text = (f"{scheme}://" if scheme else "") + rest.split("@", 1)[-1]
        return redact(text, secrets)
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address keeps its brackets
        netloc = f"[{netloc}]"
    if port:
        netloc += f":{port}"
    # mask the values of secret parameters; every other part of the query is kept as it was
    # (Sesame's query is a bare name, not key=value)
    query = []
    for part in parts.query.split("&") if parts.query else []:
        key, sep, _ = part.partition("=")
        if sep and unquote_plus(key).strip().lower() in SECRET_PARAMS:
            part = f"{key}=***"
        query.append(part)
    clean = urlunsplit((parts.scheme, netloc, parts.path, "&".join(query), parts.fragment))
    return redact(clean, secrets)


_SECRET_NAMES = "|".join(sorted(SECRET_PARAMS))
_SECRET_QUERY = re.compile(rf"([?&](?:{_SECRET_NAMES})=)[^&\s\"']*", re.IGNORECASE)


class _RedactUrlFilter(logging.Filter):
    """Masks secret query parameters in log records (httpx logs full request URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted: leave it alone
            return True
        from stdq.config import mask_url_password

        masked = mask_url_password(_SECRET_QUERY.sub(r"\1***", text))  # and user:password@
        if masked != text:
            record.msg, record.args = masked, ()
        return True


_LOG_FILTER = _RedactUrlFilter()


def install_log_filter() -> None:
    """Redact secret URL parameters from httpx's and httpcore's log records."""
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _LOG_FILTER not in logger.filters:
            logger.addFilter(_LOG_FILTER)


# -- errors ---------------------------------------------------------------------------


class AmbiguousSend(TemporaryFailure):
    """A request that must not be repeated failed after it may have reached the server.

    The remote work may exist: look for it before any new send (:mod:`stdq.remote`).
    """


class ResponseTooLarge(QueryFailed):
    """An answer longer than the ``max_bytes`` of its request (exit 1)."""


class _Problem(Exception):
    """One try that got no complete answer: what went wrong, and whether the send may
    have reached the server."""

    def __init__(self, text: str, *, reached: bool, deadline: bool = False):
        super().__init__(text)
        self.text = text
        self.reached = reached
        self.deadline = deadline


# -- the policy -------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestPolicy:
    """How one request is sent.

    ``repeatable``: may be sent again after a send that may have reached the server
    (None: by method, GET/HEAD/DELETE/PUT/OPTIONS yes, POST/PATCH no).
    ``deadline``: seconds for the whole request, retries and body included (None:
    the client's ``[http] deadline``). ``max_bytes``: the most bytes read from the
    answer (None: the client's ``[http] max_bytes``). ``secret_body``: the body
    carries a secret (a password, personal credentials): never re-sent to another
    origin on a 307/308 redirect. ``final``: a response of a retried status (429,
    5xx) for which it returns True is returned to the caller at once (e.g. the
    ATLAS queue-full refusal, a 429 that waiting would not cure).
    """

    repeatable: bool | None = None
    deadline: float | None = None
    max_bytes: int | None = None
    secret_body: bool = False
    final: Callable[[httpx.Response], bool] | None = None

    @classmethod
    def for_method(cls, method: str) -> RequestPolicy:
        """The default policy of METHOD."""
        return cls(repeatable=method.upper() in REPEATABLE_METHODS)

    def may_repeat(self, method: str) -> bool:
        if self.repeatable is None:
            return method.upper() in REPEATABLE_METHODS
        return self.repeatable


CREATE_ONCE = RequestPolicy(repeatable=False)
"""A request that creates remote work (a task, a login): never re-sent after it may have
reached the server."""


@dataclass(frozen=True)
class RetryInfo:
    """One retry, as reported to ``on_retry``: SERVICE retries after WHY (at URL,
    redacted) for the ATTEMPT-th time of OF, in DELAY seconds."""

    service: str
    why: str
    url: str
    attempt: int
    of: int
    delay: float

    @property
    def text(self) -> str:
        """The live-line text: ``"atlas: HTTP 503 at <url>; retry 2/4"``."""
        return f"{self.service}: {self.why} at {self.url}; retry {self.attempt}/{self.of}"

    @property
    def message(self) -> str:
        """The log and job-event text (with the delay)."""
        return f"{self.text} in {self.delay:.1f} s"


# -- waits ------------------------------------------------------------------------


def retry_after_seconds(response: httpx.Response, now: float | None = None) -> float | None:
    """The wait the server asks for, as it says it (Retry-After in seconds or as an HTTP
    date, else the ATLAS text); None when it gives none. The value may be unusable
    (negative, NaN, infinite, huge): check it with :func:`honoured_wait`."""
    header = response.headers.get("Retry-After")
    if header is not None:
        text = header.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return math.nan
        if when is None or when.tzinfo is None:
            return math.nan
        # a date already past means "now"
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    try:
        body = response.text[:2000]
    except Exception:  # undecodable body: no hint
        return None
    match = _AVAILABLE_IN.search(body)
    if not match:
        return None
    try:
        value = float(match.group(1).rstrip(".,"))
    except ValueError:
        return math.nan
    return value * 60 if match.group(2).startswith("minute") else value


def honoured_wait(seconds: float) -> bool:
    """Whether a server's wait may become a sleep or a stored time: finite, 0..600 s."""
    return math.isfinite(seconds) and 0.0 <= seconds <= MAX_HONOURED_WAIT


def _wait_text(seconds: float) -> str:
    if math.isnan(seconds):
        return "an unreadable wait"
    if math.isinf(seconds):
        return "an endless wait"
    if seconds < 0:
        return f"a negative wait ({seconds:g} s)"
    return f"a wait of {seconds:.0f} s"


def backoff_delay(retry: int) -> float:
    """Exponential backoff with jitter for the RETRY-th retry (0-based)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2.0**retry))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


# -- origins and authentication bound to one host ------------------------------------------


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of URL: what "the same origin" compares."""
    parts = urlsplit(str(url))
    try:
        port = parts.port
    except ValueError:
        port = None
    port = port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


_origin = origin


def same_origin(url: str, other: str) -> bool:
    return origin(url) == origin(other)


def make_host_auth(
    service_url: str,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    basic: tuple[str, str] | None = None,
) -> httpx.Auth:
    """An ``httpx.Auth`` that adds credentials only to requests for SERVICE_URL's origin.

    Its ``bind(request)`` adds them to a request for that origin and takes them
    off any other request; :class:`Client` calls it for every request it sends,
    redirects included.
    """
    import httpx

    own_origin = origin(service_url)
    header_items = dict(headers or {})
    cookie_items = dict(cookies or {})
    if basic:
        token = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        header_items["Authorization"] = f"Basic {token}"

    class HostBoundAuth(httpx.Auth):
        def bind(self, request: httpx.Request) -> None:
            own = origin(str(request.url)) == own_origin
            for name, value in header_items.items():
                if own:
                    request.headers[name] = value
                else:
                    request.headers.pop(name, None)
            if cookie_items:
                kept = [
                    part.strip()
                    for part in request.headers.get("Cookie", "").split(";")
                    if part.strip() and part.split("=", 1)[0].strip() not in cookie_items
                ]
                if own:
                    kept += [f"{k}={v}" for k, v in cookie_items.items()]
                if kept:
                    request.headers["Cookie"] = "; ".join(kept)
                else:
                    request.headers.pop("Cookie", None)

        def auth_flow(
            self, request: httpx.Request
        ) -> Generator[httpx.Request, httpx.Response, None]:
            self.bind(request)
            yield request

    return HostBoundAuth()


# -- the client -------------------------------------------------------------------

_SSL_CONTEXT: Any = None


def shared_ssl_context() -> Any:
    """httpx's default SSL context, built once per process: loading the CA bundle
    takes ~20 ms, and a worker makes one client per job. SSLContext is thread-safe."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import httpx

        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


def _transports() -> dict[str, Any]:
    """httpx.Client arguments that build no SSL context for ``http://`` URLs: plain
    HTTP by a transport without certificates, ``https://`` by one that takes the shared
    context at its first request. With a proxy in the environment, httpx's own setup
    (which honours it) is kept."""
    import urllib.request

    import httpx

    if any(scheme != "no" for scheme in urllib.request.getproxies_environment()):
        return {"verify": shared_ssl_context()}

    class LazyTLSTransport(httpx.BaseTransport):
        """An HTTPTransport with the shared SSL context, made at its first request."""

        def __init__(self) -> None:
            self._real: httpx.HTTPTransport | None = None

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if self._real is None:
                self._real = httpx.HTTPTransport(verify=shared_ssl_context())
            return self._real.handle_request(request)

        def close(self) -> None:
            if self._real is not None:
                self._real.close()

    return {
        "transport": httpx.HTTPTransport(verify=False),  # plain http:// only (https is mounted)
        "mounts": {"https://": LazyTLSTransport()},
    }


class Client:
    """An httpx.Client with stdq's request policy; one per job, closed when done.

    ``request`` sends one request under its :class:`RequestPolicy` and returns the
    final response for any status it does not retry; the caller decides what it
    means. Retries spent, the deadline passed or a server's unusable wait raise
    :class:`TemporaryFailure` naming the service; a request that must not be
    repeated and may have reached the server raises :class:`AmbiguousSend`.
    """

    def __init__(
        self,
        service: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        deadline: float = DEFAULT_DEADLINE,
        max_bytes: int = DEFAULT_MAX_BYTES,
        auth: Any = None,
        secrets: Iterable[str] = (),
        transport: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        before_request: Callable[[str, str], None] | None = None,
        on_retry: Callable[[RetryInfo], None] | None = None,
        follow_redirects: bool = True,
    ):
        import httpx

        self.service = service
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.deadline = float(deadline)
        self.max_bytes = int(max_bytes)
        self.secrets = [s for s in secrets if s]
        self.follow_redirects = follow_redirects
        self._sleep = sleep
        self._clock = clock
        self._before_request = before_request
        self._on_retry = on_retry
        install_log_filter()
        hooks = [auth.bind] if callable(getattr(auth, "bind", None)) else []
        self.client = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            headers={"User-Agent": USER_AGENT},
            auth=auth,
            **({"transport": transport} if transport is not None else _transports()),
            follow_redirects=False,  # followed here, one hop at a time, under the policy
            event_hooks={"request": hooks},
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def safe_url(self, url: Any) -> str:
        return redact_url(str(url), self.secrets)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    # -- one request -------------------------------------------------------------------
    def request(
        self, method: str, url: str, *, policy: RequestPolicy | None = None, **kw: Any
    ) -> httpx.Response:
        """Send one request under POLICY (default: by method); the final response."""
        policy = policy or RequestPolicy.for_method(method)
        repeatable = policy.may_repeat(method)
        deadline = self.deadline if policy.deadline is None else float(policy.deadline)
        max_bytes = self.max_bytes if policy.max_bytes is None else int(policy.max_bytes)
        shown = self.safe_url(url)
        started = self._clock()
        queued = 0.0  # time spent waiting for a rate-limit slot: not the request's own
        tries = 0
        while True:
            if self._before_request:
                before = self._clock()
                self._before_request(method, str(url))
                queued += self._clock() - before
            end = started + queued + deadline
            wait: float | None = None
            try:
                response = self._send_once(method, url, policy, end, max_bytes, kw)
            except _Problem as problem:
                if problem.deadline:
                    failure = AmbiguousSend if problem.reached and not repeatable else TemporaryFailure
                    raise failure(
                        f"{self.service}: no complete answer from {shown} within the"
                        f" [http] deadline of {deadline:g} s; try again later",
                    ) from None
                if problem.reached and not repeatable:
                    raise self._ambiguous(problem.text, shown) from None
                why = problem.text
            else:
                status = response.status_code
                if status not in RETRY_STATUS or (policy.final and policy.final(response)):
                    return response
                why = "throttled (HTTP 429)" if status == 429 else f"HTTP {status}"
                if status != 429 and not repeatable:
                    # a 5xx may come after the server acted on the request
                    raise self._ambiguous(why, shown)
                asked = retry_after_seconds(response)
                if asked is not None and not honoured_wait(asked):
                    raise TemporaryFailure(
                        f"{self.service}: {why} at {shown}; the server asks for"
                        f" {_wait_text(asked)}: not honoured (stdq waits at most"
                        f" {MAX_HONOURED_WAIT:.0f} s in one request); try again later",
                        retry_after=None,
                    )
                wait = asked
            if tries >= self.max_retries:
                raise TemporaryFailure(
                    f"{self.service}: {why} at {shown} (gave up after"
                    f" {tries + 1} {'try' if tries == 0 else 'tries'});"
                    " try again later",
                    retry_after=wait,
                )
            delay = wait if wait is not None else backoff_delay(tries)
            if self._clock() + delay > end:
                raise TemporaryFailure(
                    f"{self.service}: {why} at {shown}; the next try would pass the"
                    f" [http] deadline of {deadline:g} s (gave up after {tries + 1}"
                    f" {'try' if tries == 0 else 'tries'});"
                    " try again later",
                    retry_after=wait,
                )
            info = RetryInfo(self.service, why, shown, tries + 1, self.max_retries, delay)
            log.info(info.message)
            if self._on_retry:
                self._on_retry(info)
            self._sleep(delay)
            tries += 1

    def _ambiguous(self, why: str, shown: str) -> AmbiguousSend:
        return AmbiguousSend(
            f"{self.service}: {why} at {shown} after the request was sent; it may have"
            " reached the server, so it is not sent again; try again later",
        )

    def _timeout(self, end: float) -> httpx.Timeout:
        import httpx

        left = end - self._clock()
        if left <= 0:
            raise _Problem("deadline passed", reached=False, deadline=True)
        return httpx.Timeout(min(self.timeout, left))

    def _send_once(
        self,
        method: str,
        url: str,
        policy: RequestPolicy,
        end: float,
        max_bytes: int,
        kw: dict[str, Any],
    ) -> httpx.Response:
        """One try: send (following redirects under POLICY) and read the whole body.

        Raises _Problem for a try without a complete answer, QueryFailed for a
        refused redirect, ResponseTooLarge past MAX_BYTES."""
        import httpx

        try:
            request = self.client.build_request(method, url, timeout=self._timeout(end), **kw)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise QueryFailed(f"{self.service}: not a URL stdq can fetch:"
                              f" {self.safe_url(url)} ({exc})") from None
        first_origin = origin(str(request.url))
        hops = 0
        while True:
            try:
                response = self.client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise _Problem(self._network_text(exc), reached=False) from None
            except httpx.UnsupportedProtocol:
                raise QueryFailed(f"{self.service}: not a URL stdq can fetch:"
                                  f" {self.safe_url(request.url)}") from None
            except (httpx.ProxyError, httpx.LocalProtocolError) as exc:
                raise _Problem(self._network_text(exc), reached=False) from None
            except httpx.TransportError as exc:  # read/write timeouts, resets, lost answers
                raise _Problem(self._network_text(exc), reached=True) from None
            next_request = response.next_request
            if next_request is None or not self.follow_redirects:
                break
            response.close()
            hops += 1
            target = self.safe_url(next_request.url)
            if hops > MAX_REDIRECTS:
                raise QueryFailed(f"{self.service}: more than {MAX_REDIRECTS} redirects from"
                                  f" {self.safe_url(url)}")
            keeps_body = next_request.method == request.method and method.upper() not in (
                "GET", "HEAD"
            )
            elsewhere = origin(str(next_request.url)) != first_origin
            if elsewhere and (
                (policy.secret_body and keeps_body)
                or self._carries_secret(next_request, keeps_body)
            ):
                raise QueryFailed(
                    f"{self.service}: the server redirected a request that carries credentials"
                    f" to another origin ({target}, HTTP {response.status_code}); not followed,"
                    " nothing was sent there",
                    hint=f"check the {self.service} url setting: stdq services show {self.service}",
                )
            next_request.extensions["timeout"] = self._timeout(end).as_dict()
            request = next_request
        self._read_body(response, end, max_bytes)
        return response

    def _carries_secret(self, request: httpx.Request, with_body: bool) -> bool:
        """Whether REQUEST's URL (or its body, when WITH_BODY) holds one of the secrets."""
        if not self.secrets:
            return False
        url = str(request.url)
        texts = [url, unquote_plus(url)]
        if with_body:
            try:
                body = request.read().decode("utf-8", "replace")
            except Exception:  # a streaming body: assume the worst
                return True
            texts += [body, unquote_plus(body)]
        return any(secret in text for secret in self.secrets if len(secret) >= 3 for text in texts)

    def _read_body(self, response: httpx.Response, end: float, max_bytes: int) -> None:
        """Stream the body into the response; never past MAX_BYTES nor the deadline END."""
        import httpx

        try:
            length = response.headers.get("Content-Length")
            if length and length.strip().isdigit() and int(length) > max_bytes:
                raise self._too_large(response, max_bytes)
            buffer = io.BytesIO()
            total = 0
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise self._too_large(response, max_bytes)
                buffer.write(chunk)
                if self._clock() > end:
                    raise _Problem("deadline passed", reached=True, deadline=True)
            response._content = buffer.getvalue()
        except httpx.TransportError as exc:
            raise _Problem(self._network_text(exc), reached=True) from None
        except httpx.DecodingError as exc:
            raise _Problem(f"an undecodable answer ({type(exc).__name__})", reached=True) from None
        finally:
            response.close()

    def _too_large(self, response: httpx.Response, max_bytes: int) -> ResponseTooLarge:
        return ResponseTooLarge(
            f"{self.service}: the answer from {self.safe_url(response.request.url)} is larger"
            f" than [http] max_bytes ({max_bytes} bytes); not read further",
            hint="raise [http] max_bytes if this answer is expected to be so large",
        )

    @staticmethod
    def _network_text(exc: Exception) -> str:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return "timed out"
        if isinstance(exc, httpx.RemoteProtocolError):
            # the connection closed before the body reached its Content-Length: never kept
            counts = _CUT_SHORT.search(str(exc))
            if counts:
                return f"an answer cut short ({counts[1]} of its {counts[2]} bytes)"
            if "complete message body" in str(exc):
                return "an answer cut short"
        return f"connection problem ({type(exc).__name__})"


def make_client(
    service: str,
    http_settings: Any,
    *,
    auth: Any = None,
    secrets: Iterable[str] = (),
    transport: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    before_request: Callable[[str, str], None] | None = None,
    on_retry: Callable[[RetryInfo], None] | None = None,
) -> Client:
    """The client for SERVICE with the [http] settings (timeout, max_retries, deadline,
    max_bytes)."""
    return Client(
        service,
        timeout=float(http_settings.timeout),
        max_retries=int(http_settings.max_retries),
        deadline=float(getattr(http_settings, "deadline", DEFAULT_DEADLINE)),
        max_bytes=int(getattr(http_settings, "max_bytes", DEFAULT_MAX_BYTES)),
        auth=auth,
        secrets=secrets,
        transport=transport,
        sleep=sleep,
        clock=clock,
        before_request=before_request,
        on_retry=on_retry,
    )


def check_response(response: httpx.Response, service: str, secrets: Iterable[str] = ()) -> None:
    """Raise the documented error for a final non-success response of SERVICE.

    401/403 -> ConfigError (exit 3, credentials refused); other 4xx and 5xx ->
    QueryFailed (exit 1). Messages hold no secret.
    """
    status = response.status_code
    if status < 400:
        return
    url = redact_url(str(response.request.url), secrets)
    detail = _short_detail(response, secrets)
    if status in (401, 403):
        raise ConfigError(
            f"{service}: credentials refused (HTTP {status}){detail}",
            hint=f"check the {service} credentials: stdq services show {service}",
        )
    raise QueryFailed(f"{service}: HTTP {status} from {url}{detail}")


def _short_detail(response: httpx.Response, secrets: Iterable[str]) -> str:
    ctype = response.headers.get("Content-Type", "")
    if "html" in ctype.lower():
        return " (an HTML error page)"
    try:
        text = response.text.strip()
    except Exception:
        return ""
    if not text:
        return ""
    text = " ".join(text.split())[:200]
    return f": {redact(text, secrets)}"


# -- malformed answers --------------------------------------------------------------

_HTML_START = ("<!doctype", "<html")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_QUOTE_CHARS = 120


def expect_format(
    response: httpx.Response,
    service: str,
    step: str,
    expected: str,
    *,
    secrets: Iterable[str] = (),
) -> None:
    """Raise TemporaryFailure (exit 75) when RESPONSE is not in the service's own format.

    An HTML page (Content-Type html, or a body starting with ``<!DOCTYPE``/``<html``)
    where EXPECTED is not html, or an empty (or all-blank) body, is the one
    classification of a malformed answer for every service and step: a proxy's
    error page, a maintenance page, a cut connection. The message says
    ``"<service>: <step> answered an HTML page where <expected> was expected:
    '<first non-empty line>'"`` (120 characters at most, secrets masked), then the
    page's title when it has one.
    "No data" is decided by the caller only from an answer in the expected format.
    """
    body = response.content or b""
    text = body.decode("utf-8", "replace").lstrip("\ufeff")
    if not text.strip():
        raise TemporaryFailure(
            f"{service}: {step} answered an empty body where {expected} was expected;"
            " try again later"
        )
    if "html" in expected.lower():
        return
    ctype = response.headers.get("Content-Type", "").lower()
    head = text.lstrip()[:16].lower()
    if "html" in ctype or head.startswith(_HTML_START):
        title = _TITLE.search(text[:20000])
        named = f" (title {first_line(title.group(1), secrets)!r})" if title and title.group(1).strip() else ""
        raise TemporaryFailure(
            f"{service}: {step} answered an HTML page where {expected} was expected:"
            f" {first_line(text, secrets)!r}{named}; try again later"
        )


def first_line(text: str, secrets: Iterable[str] = ()) -> str:
    """TEXT's first non-empty line, stripped, redacted, at most 120 characters."""
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            line = _SECRET_QUERY.sub(r"\1***", redact(line, secrets))
            return line if len(line) <= _QUOTE_CHARS else line[: _QUOTE_CHARS - 3] + "..."
    return ""
