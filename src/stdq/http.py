"""The one HTTP client factory of stdq.

Every service and resolver gets its client from :func:`make_client`: explicit
timeouts, per-request retries with exponential backoff and jitter on connection
errors, timeouts, 5xx and 429 (honouring Retry-After and the ATLAS "Expected
available in N seconds." text), a ``stdq/<version>`` User-Agent, credentials
sent only to their own service's host, and secrets redacted from every URL and
message shown to a user. Tests swap the network for ``httpx.MockTransport`` or
an emulator on 127.0.0.1 through the ``transport`` argument or the service URL.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
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
MAX_HONOURED_WAIT = 600.0  # a server asking for a longer wait ends the request as temporary
SECRET_PARAMS = frozenset(
    {"token", "api_key", "apikey", "key", "password", "userpass", "passwd", "mast_token", "email"}
)
_AVAILABLE_IN = re.compile(r"available in (\d+(?:\.\d+)?) (second|seconds|minute|minutes)\b")


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
        masked = _SECRET_QUERY.sub(r"\1***", text)
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


# -- waits ------------------------------------------------------------------------


def retry_after_seconds(response: httpx.Response) -> float | None:
    """How long the server asks us to wait: Retry-After (seconds or HTTP date), else its text."""
    header = response.headers.get("Retry-After")
    if header:
        header = header.strip()
        try:
            return max(0.0, float(header))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    try:
        text = response.text[:2000]
    except Exception:  # undecodable body: no hint
        return None
    match = _AVAILABLE_IN.search(text)
    if match:
        value = float(match.group(1))
        return value * 60 if match.group(2).startswith("minute") else value
    return None


def backoff_delay(retry: int) -> float:
    """Exponential backoff with jitter for the RETRY-th retry (0-based)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2**retry))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


# -- authentication bound to one host --------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def make_host_auth(
    service_url: str,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
    basic: tuple[str, str] | None = None,
):
    """An ``httpx.Auth`` that adds credentials only to requests for SERVICE_URL's origin.

    Its ``bind(request)`` adds them to a request for that origin and takes them
    off any other request; :class:`Client` calls it for every request it sends,
    redirects included (httpx runs an Auth only on the first request of a
    redirect chain and copies custom headers to the next hop, whatever its host).
    """
    import httpx

    origin = _origin(service_url)
    header_items = dict(headers or {})
    cookie_items = dict(cookies or {})
    if basic:
        token = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        header_items["Authorization"] = f"Basic {token}"

    class HostBoundAuth(httpx.Auth):
        def bind(self, request: httpx.Request) -> None:
            own = _origin(str(request.url)) == origin
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

        def auth_flow(self, request: httpx.Request):
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



class Client:
    """An httpx.Client with stdq's retry policy; one per job, closed when done.

    ``request`` retries one request up to ``max_retries`` times and raises
    :class:`TemporaryFailure` naming the service when they are spent. Any other
    status is returned to the caller, who decides what it means.
    """

    def __init__(
        self,
        service: str,
        *,
        timeout: float = 30.0,
        max_retries: int = 4,
        auth: Any = None,
        secrets: Iterable[str] = (),
        transport: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        before_request: Callable[[str, str], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
        follow_redirects: bool = True,
    ):
        import httpx

        self.service = service
        self.max_retries = max_retries
        self.secrets = [s for s in secrets if s]
        self._sleep = sleep
        self._before_request = before_request
        self._on_retry = on_retry
        self._httpx = httpx
        install_log_filter()
        hooks = [auth.bind] if callable(getattr(auth, "bind", None)) else []
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT},
            verify=shared_ssl_context(),
            auth=auth,
            transport=transport,
            follow_redirects=follow_redirects,
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

    def _try(self, method: str, url: str, **kw: Any) -> tuple[httpx.Response | None, str]:
        """One try through the before_request hook (a rate limiter): (response, "") or
        (None, what went wrong on the network)."""
        httpx = self._httpx
        if self._before_request:
            self._before_request(method, str(url))
        try:
            response = self.client.request(method, url, **kw)
            response.read()
        except httpx.TimeoutException:
            return None, "timed out"
        except httpx.TransportError as exc:
            return None, f"connection problem ({type(exc).__name__})"
        return response, ""

    def send_once(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One try, no retry (for requests that must not be repeated blindly, such as a
        POST that creates a remote task): any status is returned; a network failure is
        TemporaryFailure."""
        response, problem = self._try(method, url, **kw)
        if response is None:
            raise TemporaryFailure(
                f"{self.service}: {problem} at {self.safe_url(url)}", hint="try again later"
            )
        return response

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """Send one request, retrying temporary failures; the final response is returned."""
        retry = 0
        while True:
            wait: float | None = None
            response, problem = self._try(method, url, **kw)
            if response is not None:
                if response.status_code not in RETRY_STATUS:
                    return response
                problem = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    problem = "throttled (HTTP 429)"
                wait = retry_after_seconds(response)
                if wait is not None and wait > MAX_HONOURED_WAIT:
                    raise TemporaryFailure(
                        f"{self.service}: {problem}; the server asks to wait {wait:.0f} s",
                        hint="try again later",
                        retry_after=wait,
                    )
            if retry >= self.max_retries:
                raise TemporaryFailure(
                    f"{self.service}: {problem} at {self.safe_url(url)} "
                    f"(gave up after {retry + 1} tries)",
                    hint="try again later",
                    retry_after=wait,
                )
            delay = wait if wait is not None else backoff_delay(retry)
            message = (
                f"{self.service}: {problem} at {self.safe_url(url)}; "
                f"retry {retry + 1}/{self.max_retries} in {delay:.1f} s"
            )
            log.info(message)
            if self._on_retry:
                self._on_retry(message)
            self._sleep(delay)
            retry += 1


def make_client(
    service: str,
    http_settings: Any,
    *,
    auth: Any = None,
    secrets: Iterable[str] = (),
    transport: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    before_request: Callable[[str, str], None] | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> Client:
    """The client for SERVICE with the [http] settings (timeout, max_retries)."""
    return Client(
        service,
        timeout=float(http_settings.timeout),
        max_retries=int(http_settings.max_retries),
        auth=auth,
        secrets=secrets,
        transport=transport,
        sleep=sleep,
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
