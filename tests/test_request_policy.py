"""The request policy (stdq.http.RequestPolicy) and create-once (stdq.remote), with faults on demand.

Client rules run against httpx.MockTransport with an injected clock and sleep
(nothing really sleeps). The services run in this process against the emulators
(stdq.testing.faults arms a lost answer, a redirect to a second emulator origin,
a slow or endless body, an unusable Retry-After); the foreground command runs as
`stdq` where its exit code and timing are the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from conftest import FakeTime, assert_clean_error
from stdq.config import load_settings
from stdq.errors import QueryFailed, TemporaryFailure
from stdq.http import AmbiguousSend, Client, RequestPolicy, ResponseTooLarge, RetryInfo
from stdq.jobs.runner import build_service
from stdq.services.base import QueryContext
from stdq.store import Store
from stdq.targets import Target
from stdq.testing import zfps
from stdq.testing.atlas import TEST_PASSWORD, TEST_TOKEN, TEST_USERNAME
from stdq.testing.fakeserver import FakeServer, settings_toml

SN = Target(ra=210.910674, dec=54.31165, name="SN 2023ixf")
URL = "https://svc.example.org/api"


# -- the client, against MockTransport ---------------------------------------------------------




def mock_client(handler, *, fake: FakeTime | None = None, **kw) -> tuple[Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    fake = fake or FakeTime(1000.0)

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    kw.setdefault("max_retries", 3)
    client = Client("svc", timeout=5.0, transport=httpx.MockTransport(record), sleep=fake.sleep,
                    clock=fake.clock, **kw)
    return client, seen


def answers(*items):
    """A handler answering ITEMS in turn (an exception is raised), the last one for ever."""
    queue = list(items)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


@pytest.mark.parametrize("failure", [
    httpx.ReadTimeout("lost"), httpx.RemoteProtocolError("Server disconnected"),
    httpx.ReadError("reset"), httpx.WriteError("reset while sending"),
])
def test_a_post_is_never_sent_again_after_it_may_have_reached_the_server(failure):
    client, seen = mock_client(answers(failure, httpx.Response(201)))
    with pytest.raises(AmbiguousSend) as err:
        client.post(f"{URL}/queue/", data={"ra": "1"})
    assert len(seen) == 1 and err.value.exit_code == 75
    assert "not sent again" in err.value.message
    # a GET is repeated after the same failure
    client, seen = mock_client(answers(failure, httpx.Response(200)))
    assert client.get(URL).status_code == 200 and len(seen) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_post_answered_with_a_5xx_is_not_sent_again(status):
    client, seen = mock_client(answers(httpx.Response(status), httpx.Response(201)))
    with pytest.raises(AmbiguousSend, match=f"HTTP {status}"):
        client.post(f"{URL}/queue/")
    assert len(seen) == 1


def test_a_post_that_never_reached_the_server_or_was_throttled_is_retried():
    fake = FakeTime(1000.0)
    client, seen = mock_client(
        answers(httpx.ConnectError("refused"), httpx.Response(429, headers={"Retry-After": "3"}),
                httpx.Response(201)), fake=fake)
    assert client.post(f"{URL}/queue/").status_code == 201
    assert len(seen) == 3 and fake.sleeps[1] == 3.0


def test_a_repeatable_policy_lets_a_post_be_retried():
    client, seen = mock_client(answers(httpx.ReadTimeout("slow"), httpx.Response(200)))
    policy = RequestPolicy(repeatable=True)
    assert client.request("POST", f"{URL}/search", policy=policy).status_code == 200
    assert len(seen) == 2
    assert RequestPolicy.for_method("DELETE").may_repeat("DELETE")
    assert not RequestPolicy.for_method("POST").may_repeat("POST")


def test_the_deadline_bounds_the_whole_request_with_its_retries():
    fake = FakeTime(1000.0)

    def slow_503(request):
        fake.now += 4.0  # each try takes 4 s
        return httpx.Response(503)

    client, seen = mock_client(slow_503, fake=fake, deadline=10.0, max_retries=10)
    with pytest.raises(TemporaryFailure, match=r"deadline of 10 s") as err:
        client.get(URL)
    assert fake.now - 1000.0 <= 10.0 + 4.0  # never a try started after the deadline
    assert len(seen) <= 3 and err.value.exit_code == 75


def test_retries_are_reported_as_structured_records():
    reported: list[RetryInfo] = []
    client, _ = mock_client(answers(httpx.Response(503), httpx.Response(503), httpx.Response(200)),
                            on_retry=reported.append, max_retries=4)
    client.get(f"{URL}/x?api_key=s3cret")
    assert [(r.attempt, r.of, r.why) for r in reported] == [(1, 4, "HTTP 503"), (2, 4, "HTTP 503")]
    assert reported[0].service == "svc" and "api_key=***" in reported[0].url
    assert reported[1].text == f"svc: HTTP 503 at {URL}/x?api_key=***; retry 2/4"
    assert reported[1].message.endswith(f"in {reported[1].delay:.1f} s")


def test_a_context_shows_a_retry_with_its_wait(tmp_path):
    shown: list[tuple[str, float | None]] = []
    events: list[tuple[str, str]] = []
    ctx = QueryContext(store=None, settings=None, service_config=None,  # type: ignore[arg-type]
                       on_progress=lambda text, until=None: shown.append((text, until)),
                       on_event=lambda kind, msg: events.append((kind, msg)), clock=lambda: 5000.0)
    ctx.report_retry(RetryInfo("atlas", "HTTP 503", "https://h/queue/", 2, 4, 7.5))
    assert shown == [("atlas: HTTP 503 at https://h/queue/; retry 2/4", 5007.5)]
    assert events == [("retry", "atlas: HTTP 503 at https://h/queue/; retry 2/4 in 7.5 s")]


def test_max_bytes_stops_reading_a_long_answer():
    client, _ = mock_client(answers(httpx.Response(200, content=b"x" * 5000)), max_bytes=1000)
    with pytest.raises(ResponseTooLarge, match=r"larger than \[http\] max_bytes \(1000 bytes\)") as err:
        client.get(URL)
    assert err.value.exit_code == 1

    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield b"y" * 100

    client, _ = mock_client(lambda request: httpx.Response(200, content=endless()), max_bytes=1000)
    with pytest.raises(ResponseTooLarge):
        client.get(URL)
    assert len(pulled) <= 11  # streamed: read no further than the cap
    client, _ = mock_client(answers(httpx.Response(200, content=b"z" * 1000)), max_bytes=1000)
    assert client.get(URL).content == b"z" * 1000  # exactly the cap is fine


def redirect(status: int, location: str):
    return httpx.Response(status, headers={"Location": location})


@pytest.mark.parametrize("status", [307, 308])
def test_a_secret_body_is_never_redirected_to_another_origin(status):
    client, seen = mock_client(answers(redirect(status, "https://evil.example.net/steal"),
                                       httpx.Response(200)))
    policy = RequestPolicy(repeatable=False, secret_body=True)
    with pytest.raises(QueryFailed, match="another origin") as err:
        client.request("POST", f"{URL}/login", data={"password": "pw-123"}, policy=policy)
    assert [str(r.url) for r in seen] == [f"{URL}/login"]
    assert "pw-123" not in str(err.value)
    # the same origin is followed, body and all
    client, seen = mock_client(answers(redirect(status, f"{URL}/login2"), httpx.Response(200)))
    client.request("POST", f"{URL}/login", data={"password": "pw-123"}, policy=policy)
    assert [r.method for r in seen] == ["POST", "POST"] and b"pw-123" in seen[1].read()


def test_a_303_drops_the_body_and_may_go_elsewhere():
    client, seen = mock_client(answers(redirect(303, "https://cdn.example.net/done"),
                                       httpx.Response(200, text="ok")))
    policy = RequestPolicy(repeatable=False, secret_body=True)
    response = client.request("POST", f"{URL}/login", data={"password": "pw-123"}, policy=policy)
    assert response.text == "ok" and str(response.url) == "https://cdn.example.net/done"
    assert seen[1].method == "GET" and b"pw-123" not in seen[1].read()


# -- services in this process, against the emulators ---------------------------------------------


class Context(QueryContext):
    """A job context with a fake clock: sleeps are recorded and move the clock."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.now = time.time()
        self.sleeps: list[float] = []
        self.events: list[tuple[str, str]] = []
        self.shown: list[tuple[str, float | None]] = []
        self.on_event = lambda kind, msg: self.events.append((kind, msg))
        self.on_progress = lambda text, until=None: self.shown.append((text, until))
        self.clock = lambda: self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def with_http(text: str, line: str) -> str:
    """TEXT (a settings file) with LINE ("key = value") in its [http] table."""
    if not line:
        return text
    key = line.split("=")[0].strip()
    lines = [x for x in text.splitlines() if not x.startswith(f"{key} =")]
    at = lines.index("[http]") + 1
    return "\n".join([*lines[:at], line, *lines[at:]]) + "\n"


def run_service(tmp_path, server: FakeServer, name: str, *, checkpoint=None, extra: str = "",
                http: str = ""):
    config = tmp_path / "config.toml"
    config.write_text(with_http(settings_toml(server, extra), http))
    settings = load_settings(config, tmp_path / "data")
    service, service_config = build_service(settings, name)
    ctx = Context(store=Store(settings.data_dir), settings=settings, service_config=service_config,
                  data_product_type=service.data_product_type, checkpoint=dict(checkpoint or {}))
    ctx.client_factory = lambda: service.make_client(ctx)
    return service, ctx


@pytest.fixture
def atlas_server(fake_server):
    emulator = fake_server.emulator("atlas")
    emulator.queue_seconds = 0.0
    emulator.run_seconds = 0.0
    return fake_server, emulator


def atlas_posts(server: FakeServer):
    return server.log_of(emulator="atlas", method="POST", path=r"/queue/$")


@pytest.mark.parametrize("fault, options, http", [
    ("drop", {}, ""),  # the connection closes without an answer, after the task was made
    ("hang_after", {"seconds": 1.0}, "timeout = 0.2"),  # no answer before the read timeout
    ("truncate", {}, ""),  # the answer is cut
])
def test_atlas_post_lost_makes_one_task_and_deletes_it(tmp_path, atlas_server, fault, options, http):
    server, emulator = atlas_server
    server.add_fault(fault, r"/queue/$", method="POST", options=options)
    service, ctx = run_service(tmp_path, server, "atlas", http=http)
    (product,) = service.query_service(SN, {"mjd_min": 60000.0}, ctx)
    ctx.close()
    assert product.raw_files
    made = emulator.accepted_posts()
    print(f"{fault}: {len(atlas_posts(server))} POST, {len(made)} task(s) made,"
          f" {sum(t.deleted for t in made)} deleted")
    assert len(atlas_posts(server)) == 1 and len(made) == 1 and made[0].deleted


def test_atlas_post_answered_503_is_looked_for_not_sent_again(tmp_path, atlas_server):
    server, emulator = atlas_server
    server.add_fault("503", r"/queue/$", method="POST")  # answered before anything was made
    service, ctx = run_service(tmp_path, server, "atlas")
    with pytest.raises(TemporaryFailure, match="did not appear"):
        service.query_service(SN, {"mjd_min": 60000.0}, ctx)
    ctx.close()
    assert len(atlas_posts(server)) == 1 and not emulator.tasks


def test_atlas_post_lost_one_remote_task_per_job_none_left(tmp_path, atlas_server):
    """The issue's case: the server made the task, its answer was lost."""
    server, emulator = atlas_server
    server.add_fault("drop", r"/queue/$", method="POST")
    service, ctx = run_service(tmp_path, server, "atlas")
    service.query_service(SN, {"mjd_min": 60000.0}, ctx)
    ctx.close()
    tasks = emulator.accepted_posts()
    deletes = server.log_of(emulator="atlas", method="DELETE")
    print(f"ATLAS POST-lost: {len(atlas_posts(server))} POST, {len(tasks)} remote task,"
          f" {len(deletes)} DELETE, undeleted {[t.id for t in tasks if not t.deleted]}")
    assert len(atlas_posts(server)) == 1 and len(tasks) == 1
    assert all(t.deleted for t in tasks) and len(deletes) == 1
    assert tasks[0].comment.endswith(ctx.checkpoint["atlas_submit"]["key"])
    assert any("found the ATLAS task the failed send created" in msg for _, msg in ctx.events)


def test_atlas_lost_answer_without_a_task_ends_the_attempt_then_sends_once(tmp_path, atlas_server):
    server, emulator = atlas_server
    server.add_fault("drop", r"/queue/$", method="POST", options={"handle": False})
    service, ctx = run_service(tmp_path, server, "atlas")
    with pytest.raises(TemporaryFailure, match="did not appear") as err:
        service.query_service(SN, {"mjd_min": 60000.0}, ctx)
    assert err.value.retry_after is None
    assert not emulator.tasks and len(atlas_posts(server)) == 1
    assert ctx.checkpoint["atlas_submit"]["state"] == "unknown"
    looks = server.log_of(emulator="atlas", method="GET", path=r"/queue/\?pagesize=100")
    assert len(looks) >= 2 and sum(ctx.sleeps) == pytest.approx(0.6)  # 6 polls of 0.1 s, no real sleep
    assert any(until is not None for _, until in ctx.shown)
    ctx.close()
    # the next attempt looks again, finds nothing, sends once with the same key
    service, ctx = run_service(tmp_path, server, "atlas", checkpoint=ctx.checkpoint)
    service.query_service(SN, {"mjd_min": 60000.0}, ctx)
    ctx.close()
    tasks = emulator.accepted_posts()
    assert len(tasks) == 1 and tasks[0].deleted and len(atlas_posts(server)) == 2


def test_atlas_cancel_while_the_answer_is_unknown_deletes_the_task(tmp_path, atlas_server):
    server, emulator = atlas_server
    service, ctx = run_service(tmp_path, server, "atlas")
    ctx.save_checkpoint(atlas_submit={"key": "feedbeef0001", "state": "unknown", "at": 0})
    made = httpx.post(f"{emulator.base_url}/queue/", headers={"Authorization": f"Token {TEST_TOKEN}"},
                           data={"ra": SN.ra, "dec": SN.dec, "comment": "stdq job 0 feedbeef0001"})
    assert made.status_code == 201
    service.cancel_remote(dict(ctx.checkpoint), ctx)
    ctx.close()
    assert all(t.deleted for t in emulator.tasks.values()) and len(emulator.tasks) == 1


def test_atlas_result_url_on_another_origin_is_not_fetched(tmp_path, atlas_server):
    server, emulator = atlas_server
    emulator.result_base = f"http://localhost:{server.port}{emulator.prefix}"
    service, ctx = run_service(tmp_path, server, "atlas")
    with pytest.raises(QueryFailed, match="another origin") as err:
        service.query_service(SN, {"mjd_min": 60000.0}, ctx)
    ctx.close()
    assert not server.log_of(emulator="atlas", path="static/results")
    assert TEST_TOKEN not in str(err.value)


@pytest.mark.parametrize("value", ["1e9", "inf", "-5", "nan", "soon"])
def test_an_unusable_retry_after_ends_the_attempt_unstored(tmp_path, atlas_server, value):
    server, emulator = atlas_server
    server.add_fault("retry_after", r"/queue/", options={"value": value, "status": 429}, times=50)
    service, ctx = run_service(tmp_path, server, "atlas")
    started = time.monotonic()
    with pytest.raises(TemporaryFailure) as err:
        service.query_service(SN, {"mjd_min": 60000.0}, ctx)
    ctx.close()
    assert err.value.retry_after is None and ctx.sleeps == []
    assert time.monotonic() - started < 5
    assert not emulator.tasks


# -- ZFPS ------------------------------------------------------------------------------------------


def zfps_posts(server: FakeServer):
    return server.log_of(emulator="zfps", method="POST", path="batchfp.py/submit")


@pytest.mark.parametrize("fault, options, http", [
    ("drop", {}, ""),
    ("hang_after", {"seconds": 1.0}, "timeout = 0.2"),
    ("truncate", {}, ""),
])
def test_zfps_post_lost_makes_one_request(tmp_path, fake_server, fault, options, http):
    emulator = fake_server.emulator("zfps")
    emulator.delay = 0.0
    fake_server.add_fault(fault, "batchfp.py/submit", method="POST", options=options)
    service, ctx = run_service(tmp_path, fake_server, "ztf-fps", http=http)
    (product,) = service.query_service(SN, {"baseline": "none"}, ctx)
    ctx.close()
    print(f"ZFPS POST-lost ({fault}): {len(zfps_posts(fake_server))} POST,"
          f" {len(emulator.fp_requests)} remote request(s)")
    assert len(zfps_posts(fake_server)) == 1 and len(emulator.fp_requests) == 1
    assert ctx.checkpoint["zfps_reqid"] == str(emulator.fp_requests[0].req_id)
    assert product.raw_files


def test_zfps_secret_body_is_not_redirected_to_another_origin(tmp_path, fake_server):
    other = FakeServer([zfps.ZfpsEmulator()]).start()
    try:
        fake_server.add_fault("redirect", "batchfp.py/submit", method="POST",
                              options={"location": other.base_url, "status": 307})
        service, ctx = run_service(tmp_path, fake_server, "ztf-fps")
        with pytest.raises(QueryFailed, match="another origin") as err:
            service.query_service(SN, {"baseline": "none"}, ctx)
        ctx.close()
        assert other.requests == []  # the second origin never saw the account
        assert zfps.TEST_USERPASS not in str(err.value) and zfps.TEST_EMAIL not in str(err.value)
        assert not fake_server.emulator("zfps").fp_requests
    finally:
        other.stop()


def test_zfps_listing_with_the_account_in_its_url_is_not_redirected_elsewhere(tmp_path, fake_server):
    other = FakeServer([zfps.ZfpsEmulator()]).start()
    try:  # a 302 whose Location repeats the query (email, userpass) on another origin
        fake_server.add_fault("redirect", "getBatchForcedPhotometryRequests", method="GET",
                              options={"location": other.base_url, "status": 302})
        service, ctx = run_service(tmp_path, fake_server, "ztf-fps")
        with pytest.raises(QueryFailed, match="another origin"):
            service.query_service(SN, {"baseline": "none"}, ctx)
        ctx.close()
        assert other.requests == []
    finally:
        other.stop()


def test_a_secret_in_a_redirect_url_is_not_sent_to_another_origin():
    client, seen = mock_client(answers(redirect(302, "https://evil.example.net/x?t=tok-SECRET-1"),
                                       httpx.Response(200)), secrets=["tok-SECRET-1"])
    with pytest.raises(QueryFailed, match="another origin") as err:
        client.get(f"{URL}/x")
    assert len(seen) == 1 and "tok-SECRET-1" not in str(err.value)
    client, seen = mock_client(answers(redirect(302, "https://cdn.example.net/x"),
                                       httpx.Response(200)), secrets=["tok-SECRET-1"])
    assert client.get(f"{URL}/x?t=tok-SECRET-1").status_code == 200 and len(seen) == 2


# -- atlas-login -------------------------------------------------------------------------------------


def login_settings(tmp_path, server):
    config = tmp_path / "config.toml"
    config.write_text(settings_toml(server))
    return load_settings(config, tmp_path / "data")


@pytest.mark.parametrize("status", [307, 308])
def test_atlas_login_password_is_not_redirected_to_another_origin(tmp_path, fake_server, status):
    from stdq.services.atlas import obtain_token

    other = FakeServer().start()
    try:
        fake_server.add_fault("redirect", "api-token-auth", method="POST",
                              options={"location": other.base_url, "status": status})
        with pytest.raises(QueryFailed, match="another origin") as err:
            obtain_token(login_settings(tmp_path, fake_server), TEST_USERNAME, TEST_PASSWORD)
        assert other.requests == [] and TEST_PASSWORD not in str(err.value)
    finally:
        other.stop()


def test_atlas_login_token_from_another_origin_is_not_kept(tmp_path, fake_server):
    from stdq.services.atlas import obtain_token

    other = FakeServer().start()
    try:
        # a 303 turns the POST into a GET elsewhere (no password sent); that answer is refused
        other.add_fault("retry_after", ".*", options={"status": 200, "value": "0"})
        fake_server.add_fault("redirect", "api-token-auth", method="POST",
                              options={"location": other.base_url, "status": 303})
        with pytest.raises(QueryFailed, match="token is not stored"):
            obtain_token(login_settings(tmp_path, fake_server), TEST_USERNAME, TEST_PASSWORD)
        assert all(TEST_PASSWORD not in r.body for r in other.requests)
    finally:
        other.stop()


def test_atlas_login_is_sent_once(tmp_path, fake_server):
    from stdq.services.atlas import obtain_token

    fake_server.add_fault("drop", "api-token-auth", method="POST")
    with pytest.raises(TemporaryFailure):
        obtain_token(login_settings(tmp_path, fake_server), TEST_USERNAME, TEST_PASSWORD)
    assert len(fake_server.log_of(emulator="atlas", path="api-token-auth")) == 1
    assert obtain_token(login_settings(tmp_path, fake_server), TEST_USERNAME, TEST_PASSWORD) == TEST_TOKEN


# -- slow and endless bodies ----------------------------------------------------------------------------


def test_slow_body_ends_at_the_deadline(fake_server):
    fake_server.add_fault("slow_body", "nph-sesame", options={"interval": 0.1})
    url = fake_server.url("sesame") + "/-oI/A?NGC%203642"
    started = time.monotonic()
    with Client("sesame", timeout=5, max_retries=2, deadline=0.5, sleep=lambda s: None) as client, \
            pytest.raises(TemporaryFailure, match=r"within the \[http\] deadline of 0.5 s"):
        client.get(url)
    assert time.monotonic() - started < 0.5 + 1.0


def test_foreground_query_with_a_one_byte_per_second_body_exits_75(stdq):
    """`stdq query` against an answer of 1 byte/s ends within deadline + 10 s with exit 75."""
    stdq.config_path.write_text(with_http(stdq.config_path.read_text(), "deadline = 1.5"))
    stdq.server.add_fault("slow_body", "/nph-sesame|/irsa", options={"interval": 1.0}, times=20)
    started = time.monotonic()
    result = stdq.run("query", "ztf", "--ra", "210.910674", "--dec", "54.311650", timeout=60)
    took = time.monotonic() - started
    print(f"1 byte/s body: exit {result.returncode} after {took:.1f} s (deadline 1.5 s)")
    assert_clean_error(result, 75)
    assert "deadline" in result.stderr
    assert took < 1.5 + 10




def test_endless_body_is_a_clear_error_and_memory_stays_bounded(stdq):
    cap = 64 * 1024 * 1024
    stdq.config_path.write_text(with_http(stdq.config_path.read_text(), f"max_bytes = {cap}"))
    stdq.server.add_fault("endless", "/irsa", times=20)
    result = subprocess.run(
        [sys.executable, "-m", "stdq.testing.peak_rss", "query", "ztf", "--ra", "210.910674", "--dec",
         "54.311650"], capture_output=True, text=True, env=stdq.env, cwd=stdq.tmp, timeout=120)
    peak_line = [line for line in result.stderr.splitlines() if line.startswith("peak RSS")]
    print(f"endless body (max_bytes {cap >> 20} MiB): exit {result.returncode}, {peak_line}")
    assert result.returncode == 1, result.stderr
    assert "max_bytes" in result.stderr and "Traceback" not in result.stderr
    peak_mib = float(peak_line[0].split()[2])
    assert peak_mib < 1024


# -- Retry-After 1e9 / inf in the foreground -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e9", "inf"])
def test_foreground_query_with_a_huge_retry_after_exits_75_and_jobs_list_works(stdq, value):
    stdq.server.add_fault("retry_after", r"/queue/", options={"value": value, "status": 429}, times=50)
    started = time.monotonic()
    result = stdq.run("query", "atlas", "--ra", "210.910674", "--dec", "54.311650", "--sync")
    took = time.monotonic() - started
    print(f"Retry-After {value}: exit {result.returncode} after {took:.1f} s")
    assert_clean_error(result, 75)
    assert took < 30
    listed = stdq.run("--json", "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert jobs and all(isinstance(job, dict) for job in (jobs if isinstance(jobs, list) else jobs["jobs"]))
    shown = stdq.run("--json", "jobs", "show", "1")
    assert shown.returncode == 0, shown.stderr
    assert "1e9" not in shown.stdout and "inf" not in json.dumps(json.loads(shown.stdout).get("run_after"))


def test_slow_service_post_lost_makes_one_task(tmp_path, fake_server):
    from stdq.testing.slow import SlowServiceEmulator, settings_extra

    emulator = fake_server.mount(SlowServiceEmulator())
    emulator.default_seconds = 0.0
    fake_server.add_fault("drop", r"/slow/tasks$", method="POST")
    service, ctx = run_service(tmp_path, fake_server, "slow", extra=settings_extra())
    (product,) = service.query_service(SN, {}, ctx)
    ctx.close()
    assert emulator.submissions == 1 and product.raw_files
    assert all(t.deleted_at is not None for t in emulator.tasks.values())


def test_a_job_shows_its_retries_with_seconds_left(stdq, recorded_waits):
    """A retry is the job's progress (service, why, attempt k of n) with its wait_until."""
    from stdq import Stdq

    stdq.server.emulator("atlas").queue_seconds = 0.0
    stdq.server.add_fault("503", r"/queue/\d+/$", method="GET", times=1)
    shown: list[tuple[str, float | None]] = []
    with Stdq(stdq.config_path, stdq.data_dir) as s:
        job = s.submit("atlas", ra=SN.ra, dec=SN.dec, runner="inprocess")
        before = time.time()
        ended = s.run(job.id, on_progress=lambda text, until=None: shown.append((text, until)))
        events = [e.message for e in s.events(job.id) if e.kind == "retry"]
    assert ended.state == "succeeded"
    retries = [(text, until) for text, until in shown if "retry 1/" in text]
    assert retries, shown
    text, until = retries[0]
    assert text.startswith("atlas: HTTP 503 at ") and text.endswith("; retry 1/2")
    assert until is not None and before < until <= time.time() + 60
    assert events and events[0].startswith(text) and recorded_waits
