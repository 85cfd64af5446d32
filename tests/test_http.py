"""stdq.http: retries, waits, temporary failures, host-bound credentials, User-Agent, redaction.

Unit tests run against httpx.MockTransport with a fake `sleep` that records the waits
asked for (nothing really sleeps); the last tests use the FakeServer's faults.
"""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

import stdq
from stdq.errors import ConfigError, QueryFailed, TemporaryFailure
from stdq.http import (
    BACKOFF_BASE,
    MAX_HONOURED_WAIT,
    Client,
    check_response,
    make_host_auth,
    redact,
    redact_url,
)

SERVICE_URL = "https://svc.example.org/api"
TOKEN = "tok-0123456789abcdef"


class Script:
    """A MockTransport handler answering from a list of responses (or exceptions), and recording."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def client_for(script: Script, *, max_retries: int = 3, auth=None, secrets=()) -> tuple[Client, list]:
    waits: list[float] = []
    client = Client(
        "svc",
        timeout=1.0,
        max_retries=max_retries,
        transport=httpx.MockTransport(script),
        sleep=waits.append,
        auth=auth,
        secrets=secrets,
    )
    return client, waits


# -- retries and waits ---------------------------------------------------------------------


def test_retries_500_then_succeeds():
    script = Script(httpx.Response(500, text="oops"), httpx.Response(502), httpx.Response(200, text="ok"))
    client, waits = client_for(script)
    response = client.get(f"{SERVICE_URL}/x")
    assert response.status_code == 200 and response.text == "ok"
    assert len(script.requests) == 3
    # backoff with jitter: retry n waits between half and all of BACKOFF_BASE * 2**n
    assert len(waits) == 2
    assert 0.25 <= waits[0] <= 0.5 and BACKOFF_BASE == 0.5
    assert 0.5 <= waits[1] <= 1.0


def test_429_retry_after_seconds():
    script = Script(httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200))
    client, waits = client_for(script)
    assert client.get(SERVICE_URL).status_code == 200
    assert waits == [2.0]


def test_429_retry_after_http_date():
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    script = Script(httpx.Response(429, headers={"Retry-After": when}), httpx.Response(200))
    client, waits = client_for(script)
    assert client.get(SERVICE_URL).status_code == 200
    # the date has whole seconds: the wait is 120 s less the sub-second part and the test's own time
    assert len(waits) == 1 and 115 <= waits[0] <= 120


@pytest.mark.parametrize(
    "detail, expected",
    [
        ("Request was throttled. Expected available in 37 seconds.", 37.0),
        ("Request was throttled. Expected available in 1 second.", 1.0),  # singular
        ("Request was throttled. Expected available in 2 minutes.", 120.0),
    ],
)
def test_429_wait_from_the_text(detail, expected):
    script = Script(httpx.Response(429, json={"detail": detail}), httpx.Response(200))
    client, waits = client_for(script)
    assert client.get(SERVICE_URL).status_code == 200
    assert waits == [expected]


def test_retries_spent_is_a_temporary_failure_naming_the_service():
    script = Script(httpx.Response(503))
    client, waits = client_for(script, max_retries=2)
    with pytest.raises(TemporaryFailure) as err:
        client.get(f"{SERVICE_URL}/x")
    assert err.value.exit_code == 75
    assert err.value.message.startswith("svc:")
    assert "HTTP 503" in err.value.message
    assert len(script.requests) == 3 and len(waits) == 2


@pytest.mark.parametrize(
    "header", [str(int(MAX_HONOURED_WAIT) + 100), "1e9", "inf", "-inf", "nan", "-5", "soon", ""]
)
@pytest.mark.parametrize("status", [429, 503])
def test_an_unusable_wait_ends_at_once_and_is_not_stored(header, status):
    script = Script(httpx.Response(status, headers={"Retry-After": header}))
    client, waits = client_for(script)
    with pytest.raises(TemporaryFailure) as err:
        client.get(SERVICE_URL)
    assert err.value.retry_after is None  # the job's own backoff applies
    assert "not honoured" in err.value.message
    assert waits == [] and len(script.requests) == 1


@pytest.mark.parametrize("detail", ["Expected available in 99999 seconds.", "Expected available in inf seconds."])
def test_an_unusable_wait_in_the_text_ends_at_once(detail):
    script = Script(httpx.Response(429, json={"detail": f"Request was throttled. {detail}"}))
    client, waits = client_for(script)
    with pytest.raises(TemporaryFailure) as err:
        client.get(SERVICE_URL)
    assert err.value.retry_after is None and waits == []


def test_a_past_http_date_means_now():
    when = email.utils.formatdate(time.time() - 120, usegmt=True)
    script = Script(httpx.Response(503, headers={"Retry-After": when}), httpx.Response(200))
    client, waits = client_for(script)
    assert client.get(SERVICE_URL).status_code == 200
    assert waits == [0.0]


def test_timeouts_are_retried():
    script = Script(httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), httpx.Response(200, text="ok"))
    client, waits = client_for(script)
    assert client.get(SERVICE_URL).text == "ok"
    assert len(waits) == 2

    script = Script(httpx.ReadTimeout("slow"))
    client, waits = client_for(script, max_retries=2)
    with pytest.raises(TemporaryFailure, match="svc: timed out"):
        client.get(SERVICE_URL)
    assert len(script.requests) == 3


def test_other_statuses_are_returned_without_retry():
    for status in (404, 400, 422, 401):
        script = Script(httpx.Response(status))
        client, waits = client_for(script)
        assert client.get(SERVICE_URL).status_code == status
        assert len(script.requests) == 1 and waits == []


def test_max_retries_zero_means_one_try():
    script = Script(httpx.Response(500))
    client, waits = client_for(script, max_retries=0)
    with pytest.raises(TemporaryFailure, match="gave up after 1 try\\)"):
        client.get(SERVICE_URL)
    assert len(script.requests) == 1 and waits == []


# -- check_response -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_config_error_without_the_token(status):
    request = httpx.Request("GET", f"{SERVICE_URL}/queue/?token={TOKEN}")
    response = httpx.Response(status, text=f'{{"detail": "Invalid token {TOKEN}."}}', request=request)
    with pytest.raises(ConfigError) as err:
        check_response(response, "svc", secrets=[TOKEN])
    assert err.value.exit_code == 3
    assert f"HTTP {status}" in err.value.message
    assert TOKEN not in str(err.value)


def test_other_errors_are_query_failures_without_secrets():
    request = httpx.Request("GET", f"{SERVICE_URL}/x?api_key={TOKEN}&ra=1")
    response = httpx.Response(404, text="no such thing", request=request)
    with pytest.raises(QueryFailed) as err:
        check_response(response, "svc")
    assert err.value.exit_code == 1
    assert TOKEN not in str(err.value) and "api_key=***" in err.value.message
    html = httpx.Response(500, text="<html>...</html>", headers={"Content-Type": "text/html"}, request=request)
    with pytest.raises(QueryFailed, match="an HTML error page"):
        check_response(html, "svc")
    check_response(httpx.Response(204, request=request), "svc")  # success: nothing raised


def test_temporary_failure_message_has_no_secret():
    script = Script(httpx.Response(500))
    client, _ = client_for(script, max_retries=1, secrets=[TOKEN])
    with pytest.raises(TemporaryFailure) as err:
        client.get(f"https://user:{TOKEN}@svc.example.org/x?userpass={TOKEN}&ra=1")
    assert TOKEN not in str(err.value)


# -- credentials only to their own host ----------------------------------------------------------


def redirect_to(location: str):
    return lambda request: httpx.Response(302, headers={"Location": location})


@pytest.mark.parametrize(
    "auth_kw, header",
    [
        ({"headers": {"X-Api-Key": TOKEN}}, "X-Api-Key"),
        ({"headers": {"Authorization": f"Token {TOKEN}"}}, "Authorization"),
        ({"cookies": {"session": TOKEN}}, "Cookie"),
        ({"basic": ("user", TOKEN)}, "Authorization"),
    ],
)
def test_credentials_go_only_to_the_service_origin(auth_kw, header):
    auth = make_host_auth(SERVICE_URL, **auth_kw)
    script = Script(
        redirect_to("https://svc.example.org/api/moved"),  # same origin: keeps them
        redirect_to("https://cdn.example.net/result.txt"),  # another host: none
        httpx.Response(200, text="data"),
        httpx.Response(200, text="direct"),
        httpx.Response(200, text="other port"),
        httpx.Response(200, text="http"),
    )
    client, _ = client_for(script, auth=auth)
    assert client.get(f"{SERVICE_URL}/queue/1/").text == "data"
    first, moved, elsewhere = script.requests
    assert TOKEN in first.headers.get(header, "") or "Basic" in first.headers.get(header, "")
    assert moved.headers.get(header) == first.headers.get(header)
    assert header not in elsewhere.headers
    # a result_url on another host, asked directly
    client.get("https://files.example.com/job01088.txt")
    # the same host on another port, or over plain http, is another origin
    client.get("https://svc.example.org:8443/api")
    client.get("http://svc.example.org/api")
    for request in script.requests[3:]:
        assert header not in request.headers, request.url
        assert TOKEN not in str(request.headers)


def test_host_bound_cookie_keeps_other_cookies():
    auth = make_host_auth(SERVICE_URL, cookies={"session": TOKEN})
    script = Script(httpx.Response(200))
    client, _ = client_for(script, auth=auth)
    client.get(SERVICE_URL, headers={"Cookie": "lang=en"})
    client.get("https://other.example.org/", headers={"Cookie": f"lang=en; session={TOKEN}"})
    assert script.requests[0].headers["Cookie"] == f"lang=en; session={TOKEN}"
    assert script.requests[1].headers["Cookie"] == "lang=en"


def test_user_agent():
    script = Script(httpx.Response(200))
    client, _ = client_for(script)
    client.get(SERVICE_URL)
    assert script.requests[0].headers["User-Agent"] == f"stdq/{stdq.__version__}"


# -- redaction ------------------------------------------------------------------------------------


def test_redact_url():
    url = f"https://me:{TOKEN}@svc.example.org:8443/api/x?ra=1.5&userpass=pw1&token={TOKEN}&api_key=k2&dec=-3"
    clean = redact_url(url)
    assert clean == "https://svc.example.org:8443/api/x?ra=1.5&userpass=***&token=***&api_key=***&dec=-3"
    assert redact_url("https://h.org/-oI/A?SN%202023ixf") == "https://h.org/-oI/A?SN%202023ixf"
    assert redact_url(f"https://h.org/x?q={TOKEN}", [TOKEN]) == "https://h.org/x?q=***"
    assert redact(f"failed for {TOKEN}!", [TOKEN]) == "failed for ***!"


# -- against the FakeServer -------------------------------------------------------------------------


def test_fakeserver_truncate_and_hang(fake_server):
    url = fake_server.url("sesame") + "/-oI/A?NGC%203642"
    waits: list[float] = []

    # a body cut short is retried, and the second answer is whole
    fake_server.add_fault("truncate", "nph-sesame", times=1)
    with Client("sesame", timeout=5, max_retries=2, sleep=waits.append) as client:
        response = client.get(url)
    assert response.status_code == 200 and "%J 170.5750583 +59.0742417" in response.text
    assert len(fake_server.log_of(emulator="sesame")) == 2 and len(waits) == 1

    # one hang longer than the timeout: retried, then answered
    fake_server.add_fault("hang", "nph-sesame", times=1, seconds=0.6)
    with Client("sesame", timeout=0.2, max_retries=2, sleep=waits.append) as client:
        response = client.get(url)
    assert response.status_code == 200 and "%J" in response.text
    # (the hung request is logged only when the server wakes up, so the log is not counted here)

    # hangs on every try: a temporary failure naming the service
    fake_server.add_fault("hang", "nph-sesame", times=3, seconds=0.6)
    with (
        Client("sesame", timeout=0.2, max_retries=2, sleep=waits.append) as client,
        pytest.raises(TemporaryFailure, match="sesame: timed out") as err,
    ):
        client.get(url)
    assert err.value.exit_code == 75


# -- expect_format: one classification of a malformed answer ------------------------------


def _answer(body: bytes, ctype: str = "text/plain") -> httpx.Response:
    return httpx.Response(200, content=body, headers={"Content-Type": ctype},
                          request=httpx.Request("GET", "https://svc.example/x"))


@pytest.mark.parametrize(
    "body, ctype",
    [
        (b"\n\n  <html><head><title>502 Bad Gateway</title></head></html>", "text/plain"),
        (b"<!DOCTYPE html>\n<html>maintenance</html>", "application/json"),
        (b"Service down for maintenance\n<p>back soon</p>", "text/html; charset=utf-8"),
    ],
)
def test_expect_format_an_html_page_is_temporary_quoting_its_first_line(body, ctype):
    from stdq.http import expect_format

    with pytest.raises(TemporaryFailure) as info:
        expect_format(_answer(body, ctype), "mast", "the catalog search", "JSON")
    first = next(line.strip() for line in body.decode().splitlines() if line.strip())
    assert info.value.exit_code == 75
    assert info.value.message.startswith(
        f"mast: the catalog search answered an HTML page where JSON was expected: {first!r}"
    )


@pytest.mark.parametrize("body", [b"", b"  \r\n\t\n"])
def test_expect_format_an_empty_body_is_temporary(body):
    from stdq.http import expect_format

    with pytest.raises(TemporaryFailure) as info:
        expect_format(_answer(body), "irsa", "the light-curve download", "a CSV table")
    assert "irsa: the light-curve download answered an empty body where a CSV table was expected" in (
        info.value.message
    )


def test_expect_format_accepts_the_expected_format_and_html_when_html_is_expected():
    from stdq.http import expect_format

    expect_format(_answer(b"ra,dec\n"), "irsa", "the light-curve download", "a CSV table")
    expect_format(_answer(b'{"data": []}', "application/json"), "mast", "the search", "JSON")
    expect_format(_answer(b"<html><table></table></html>", "text/html"), "zfps", "the listing",
                  "an HTML table")
    with pytest.raises(TemporaryFailure):
        expect_format(_answer(b"", "text/html"), "zfps", "the listing", "an HTML table")


def test_expect_format_quotes_at_most_120_characters_without_secrets():
    from stdq.http import expect_format

    line = "<html>" + "x" * 50 + " s3cr3t-token ?token=abc&x=1 " + "y" * 200
    with pytest.raises(TemporaryFailure) as info:
        expect_format(_answer(line.encode(), "text/html"), "atlas", "the task poll", "JSON",
                      secrets=["s3cr3t-token"])
    quoted = info.value.message.split("was expected: ", 1)[1].split("; try again")[0]
    import ast

    assert len(ast.literal_eval(quoted)) == 120
    assert "s3cr3t-token" not in info.value.message and "abc" not in info.value.message
    assert "***" in info.value.message


def test_an_answer_shorter_than_its_content_length_is_retried_then_temporary(fake_server):
    url = fake_server.url("sesame") + "/-oI/A?NGC%203642"
    fake_server.add_fault("truncate", "nph-sesame", times=5)
    waits: list[float] = []
    with (
        Client("sesame", timeout=5, max_retries=1, sleep=waits.append) as client,
        pytest.raises(TemporaryFailure) as err,
    ):
        client.get(url)
    assert err.value.exit_code == 75 and len(waits) == 1
    assert "sesame: an answer cut short (" in err.value.message
    assert "bytes) at " in err.value.message and "gave up after 2 tries" in err.value.message
    assert len(fake_server.log_of(emulator="sesame")) == 2
