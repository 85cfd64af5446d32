"""The TNS resolver (issue 11 item 6): AT/SN names normalised to the TNS objname, resolved
through the TNS emulator when [resolver.tns] is configured (key from STDQ_TNS_API_KEY first),
the bot's tns_marker User-Agent, the rate-limit headers obeyed with an injected clock, and the
api key never in any output, log, or the resolver cache."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from conftest import FakeTime
from stdq import resolvers_tns
from stdq.config import load_settings
from stdq.errors import QueryFailed, TemporaryFailure
from stdq.registry import registry_for
from stdq.resolvers_tns import TnsResolver, parse_tns_object, tns_objname, user_agent
from stdq.testing.resolvers import MastResolverEmulator, SesameEmulator
from stdq.testing.tns import API_KEY, BOT_ID, BOT_NAME, TNS_ONLY, TnsEmulator

AT_RA, AT_DEC = TNS_ONLY["2024abc"][1:]


def EMULATORS():  # noqa: N802 - read by conftest's fake_server
    return [SesameEmulator(), MastResolverEmulator(), TnsEmulator()]


@pytest.fixture(autouse=True)
def fresh_windows():
    resolvers_tns._WINDOWS.clear()
    yield
    resolvers_tns._WINDOWS.clear()


def tns_table(fake_server, *, key: str | None = API_KEY) -> str:
    lines = ["", "[resolver.tns]", f'url = "{fake_server.url("tns")}"', f"bot_id = {BOT_ID}",
             f'bot_name = "{BOT_NAME}"']
    if key is not None:
        lines.append(f'api_key = "{key}"')
    return "\n".join(lines) + "\n"


def cache_text(stdq) -> str:
    path = stdq.data_dir / "stdq.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return repr(conn.execute("SELECT * FROM resolver_cache").fetchall())


@pytest.mark.parametrize(
    ("name", "objname"),
    [("AT 2024abc", "2024abc"), ("AT2024abc", "2024abc"), ("SN2023ixf", "2023ixf"),
     ("2023ixf", "2023ixf"), ("sn 2023IXF", "2023ixf"), (" TDE  2019qiz ", "2019qiz"),
     ("M31", None), ("NGC 3642", None), ("2024", None), ("Gaia24abc", None), ("AT 2024abcde", None)],
)
def test_names_normalised_to_the_tns_objname(name, objname):
    assert tns_objname(name) == objname


def test_user_agent_is_the_bot_marker():
    assert user_agent(12345, "my_bot") == 'tns_marker{"tns_id": 12345, "type": "bot", "name": "my_bot"}'


def test_resolve_at_2024abc_through_the_emulator(stdq, fake_server):
    """Sesame and MAST do not know AT 2024abc; TNS (configured: last in the default order) does."""
    stdq.write_settings(tns_table(fake_server))
    result = stdq.run("--json", "targets", "resolve", "AT 2024abc")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert (found["ra"], found["dec"]) == (AT_RA, AT_DEC)
    assert found["resolver"] == "tns" and found["canonical"] == "AT 2024abc"
    emulator = fake_server.emulator("tns")
    assert emulator.requests == [
        {"objname": "2024abc", "user_agent": user_agent(BOT_ID, BOT_NAME), "key_ok": True}
    ]
    # the form: api_key and data={"objname": ...}, POSTed to /api/get/object
    posts = [r for r in fake_server.log_of("tns") if r.method == "POST"]
    assert len(posts) == 1 and posts[0].path.endswith("/api/get/object")
    # cached: a second resolve asks nobody; the key is in no output and not in the cache
    again = stdq.run("--json", "targets", "resolve", "AT 2024abc")
    assert json.loads(again.stdout)["ra"] == AT_RA and len(emulator.requests) == 1
    for text in (result.stdout, result.stderr, again.stdout, again.stderr, cache_text(stdq)):
        assert API_KEY not in text


def test_the_key_from_the_environment_first(stdq, fake_server):
    stdq.write_settings(tns_table(fake_server, key="wrong-key-in-the-file"))
    result = stdq.run("--json", "targets", "resolve", "AT 2024abc", env={"STDQ_TNS_API_KEY": API_KEY})
    assert result.returncode == 0, result.stderr
    assert fake_server.emulator("tns").requests[-1]["key_ok"] is True


def test_without_the_table_tns_is_not_asked(stdq, fake_server):
    result = stdq.run("--json", "targets", "resolve", "AT 2024abc")
    assert result.returncode == 4, result.stderr
    assert "tns" not in result.stderr and fake_server.emulator("tns").requests == []


def test_config_show_masks_the_key(stdq, fake_server):
    stdq.write_settings(tns_table(fake_server))
    result = stdq.run("--json", "config", "show")
    assert result.returncode == 0, result.stderr
    assert API_KEY not in result.stdout and API_KEY not in result.stderr
    shown = json.loads(result.stdout)["resolver"]
    assert shown["order"][-1] == "tns" and shown["tns"]["api_key"] == "***"


def test_a_refused_key_is_a_warning_without_the_key(stdq, fake_server):
    stdq.write_settings(tns_table(fake_server, key="not-the-key-" + "x" * 20))
    result = stdq.run("--json", "targets", "resolve", "AT 2024abc")
    assert result.returncode == 4, result.stderr  # sesame/mast: not found; tns: refused (a warning)
    assert "resolver tns gave an unusable answer" in result.stderr and "HTTP 401" in result.stderr
    assert "not-the-key-" not in result.stderr


# -- rate limits, with an injected clock --------------------------------------------------------




def resolver_with(tmp_path: Path, emulator: TnsEmulator, clock: FakeTime, *, max_wait: float = 60) -> TnsResolver:
    """A TnsResolver talking to EMULATOR in this process (an httpx MockTransport), on CLOCK."""
    from stdq.testing.fakeserver import FakeServer

    server = FakeServer([emulator])  # not started: dispatch() answers in this thread

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        headers = {k.lower(): v for k, v in request.headers.items()}
        answer, _fault, _ = server.dispatch(request.method, path, headers, request.read())
        return httpx.Response(answer.status, content=answer.body, headers=answer.headers)

    config = tmp_path / "config.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[resolver.tns]\nurl = "http://tns.test/tns"\n'
        f'bot_id = {BOT_ID}\nbot_name = "{BOT_NAME}"\napi_key = "{API_KEY}"\nmax_wait = {max_wait}\n'
    )
    settings = load_settings(config)
    resolver = registry_for(settings).resolver("tns", transport=httpx.MockTransport(handler))
    assert isinstance(resolver, TnsResolver)
    resolver.clock = clock  # type: ignore[method-assign]
    resolver.sleep = clock.sleep  # type: ignore[method-assign]
    return resolver


def test_rate_limit_headers_are_obeyed(tmp_path):
    """3 requests a 60 s window: the 4th waits for the reset the headers announced, and the
    emulator never refuses one (no 429)."""
    clock = FakeTime(1_000_000.0)
    emulator = TnsEmulator(limit=3, window=60.0, clock=clock)
    resolver = resolver_with(tmp_path, emulator, clock)
    for _ in range(3):
        assert resolver.resolve("AT 2024abc").ra == AT_RA
    assert clock.sleeps == []
    assert resolver.resolve("SN 2023ixf").canonical == "SN 2023ixf"
    assert clock.sleeps == [60.0] and emulator.refused == 0 and len(emulator.requests) == 4


def test_a_429_is_waited_out(tmp_path):
    """Another process used the window (the resolver knew nothing of it): the 429's reset is
    waited, then the same request again."""
    clock = FakeTime(1_000_000.0)
    emulator = TnsEmulator(limit=1, window=30.0, clock=clock)
    emulator._rate()  # someone else's request
    resolver = resolver_with(tmp_path, emulator, clock)
    assert resolver.resolve("AT 2024abc").dec == AT_DEC
    assert emulator.refused == 1 and clock.sleeps == [30.0]


def test_a_reset_longer_than_max_wait_is_a_temporary_failure(tmp_path):
    clock = FakeTime(1_000_000.0)
    emulator = TnsEmulator(limit=1, window=3600.0, clock=clock)
    emulator._rate()
    resolver = resolver_with(tmp_path, emulator, clock, max_wait=60)
    with pytest.raises(TemporaryFailure) as caught:
        resolver.resolve("AT 2024abc")
    assert "429" in caught.value.message and API_KEY not in str(caught.value)
    assert clock.sleeps == []


def test_a_non_tns_name_makes_no_request(tmp_path):
    clock = FakeTime(1_000_000.0)
    emulator = TnsEmulator(clock=clock)
    resolver = resolver_with(tmp_path, emulator, clock)
    assert resolver.resolve("M31") is None and emulator.requests == []
    assert resolver.resolve("AT 2099zzz") is None and len(emulator.requests) == 1  # not found: 110


# -- the answer parser ------------------------------------------------------------------------------


def test_parse_answers():
    reply = {"objname": "2024abc", "name_prefix": "AT", "radeg": 150.5, "decdeg": -12.25}
    assert parse_tns_object({"data": {"reply": reply}}) == (150.5, -12.25, "AT 2024abc")
    assert parse_tns_object({"data": reply}) == (150.5, -12.25, "AT 2024abc")  # newer: no "reply"
    not_found = {"objname": {"110": {"message": "No results found.", "message_id": 110}}}
    assert parse_tns_object({"data": {"reply": not_found}}) is None
    assert parse_tns_object({"data": {"reply": []}}) is None
    for bad in ({"nodata": 1}, {"data": {"reply": {"radeg": "nan", "decdeg": 1}}},
                {"data": {"reply": {"radeg": 400, "decdeg": 1}}}, {"data": {"reply": {"x": 1}}}, []):
        with pytest.raises(QueryFailed):
            parse_tns_object(bad)


def test_remaining_exceeded_counts_as_zero(tmp_path):
    """TNS may write x-rate-limit-remaining: Exceeded; the next request waits for the reset."""
    clock = FakeTime(1_000_000.0)
    resolver = resolver_with(tmp_path, TnsEmulator(clock=clock), clock)
    resolver._remember_window({"x-rate-limit-remaining": "Exceeded", "x-rate-limit-reset": "12"})
    assert resolver.resolve("AT 2024abc").ra == AT_RA
    assert clock.sleeps == [12.0]
