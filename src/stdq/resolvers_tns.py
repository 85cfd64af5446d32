"""The TNS resolver: names of new transients (``AT 2024abc``) from the Transient Name Server.

Registered in ``stdq.resolvers`` as ``tns``. It is asked only when configured: a
``[resolver.tns]`` table (``api_key``, ``bot_id``, ``bot_name``, ``url``) puts "tns"
at the end of the default ``[resolver] order`` (config.py); the api key comes from
``STDQ_TNS_API_KEY`` first, then the table. One request per name:
``POST {url}/api/get/object`` with the form fields ``api_key`` and
``data={"objname": ...}`` and the bot's User-Agent
``tns_marker{"tns_id": BOT_ID, "type": "bot", "name": "BOT_NAME"}``; the position is
the answer's ``radeg``/``decdeg``.

Rate limits: TNS answers with ``x-rate-limit-remaining`` and ``x-rate-limit-reset``
(seconds until the window resets). When a window is used up the next request waits
for its reset (through :attr:`TnsResolver.sleep`, clock :attr:`TnsResolver.clock`),
and a 429 is waited out the same way (at most ``max_wait`` seconds, then
TemporaryFailure). The state is kept per TNS URL in this process (``_WINDOWS``).

The api key is a secret: it is sent only in the form body, redacted from every
message, and never cached (the cache holds name, position and canonical name).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from stdq.errors import ConfigError, QueryFailed, TemporaryFailure
from stdq.resolvers import NameResolver, _position, clean_name

if TYPE_CHECKING:
    from stdq.config import Settings
    from stdq.records import Target

ENV_API_KEY = "STDQ_TNS_API_KEY"
DEFAULT_URL = "https://www.wis-tns.org"
TABLE_KEYS = ("api_key", "bot_id", "bot_name", "url", "max_wait")

# "AT 2024abc", "SN2023ixf", "at2024ABC", "2023ixf", "TDE 2019qiz": a prefix of letters,
# then the year (4 digits) and 1 to 4 letters. TNS object names are lower case.
_TNS_NAME = re.compile(r"(?:(?P<prefix>[A-Za-z]{2,4})\s*)?(?P<year>(?:19|20)\d\d)(?P<letters>[A-Za-z]{1,4})")

# url -> (remaining requests in the window, wall-clock time the window resets)
_WINDOWS: dict[str, tuple[int, float]] = {}


def tns_objname(name: str) -> str | None:
    """The TNS objname of NAME (``AT 2024abc`` -> ``2024abc``), or None when NAME is
    not a TNS designation (then no request is made)."""
    match = _TNS_NAME.fullmatch(" ".join(name.split()))
    if match is None:
        return None
    return f"{match['year']}{match['letters'].lower()}"


def user_agent(bot_id: object, bot_name: str) -> str:
    """The bot's marker TNS requires as User-Agent."""
    text = str(bot_id).strip()
    marker = {"tns_id": int(text) if text.isdigit() else text, "type": "bot", "name": str(bot_name)}
    return "tns_marker" + json.dumps(marker)


def parse_tns_object(payload: Any) -> tuple[float, float, str | None] | None:
    """(ra, dec, canonical name) of a ``get/object`` answer, or None when TNS has no
    such object (``id_code`` 200 with a reply of message id 110, or an empty reply).

    The object is ``data.reply`` (older answers) or ``data`` itself (newer ones).
    QueryFailed for anything else.
    """
    if not isinstance(payload, dict) or "data" not in payload:
        raise QueryFailed("tns: the answer is not a {\"data\": ...} object")
    data = payload["data"]
    reply = data.get("reply", data) if isinstance(data, dict) else data
    if reply in (None, [], {}):
        return None
    if not isinstance(reply, dict):
        raise QueryFailed("tns: the answer's reply is not an object")
    if "radeg" not in reply and "decdeg" not in reply:
        # {"objname": {"110": {"message": "No results found.", "message_id": 110}}}
        text = json.dumps(reply)[:300]
        if '"110"' in text or "No results" in text:
            return None
        raise QueryFailed("tns: the answer has no radeg/decdeg")
    ra, dec = _position(str(reply.get("radeg")), str(reply.get("decdeg")), "tns: radeg/decdeg")
    objname = clean_name(reply.get("objname"))
    prefix = clean_name(reply.get("name_prefix"))
    canonical = f"{prefix} {objname}" if prefix and objname else objname
    return ra, dec, canonical


class TnsResolver(NameResolver):
    """The Transient Name Server (``get/object``), for AT/SN designations."""

    name = "tns"
    title = "Transient Name Server"
    probe_name = "2023ixf"
    settings_defaults: ClassVar[dict[str, Any]] = {"tns": {}}
    settings_help: ClassVar[dict[str, str]] = {
        "tns": "[resolver.tns] api_key (secret: prefer STDQ_TNS_API_KEY), bot_id, bot_name,"
        f" url (default {DEFAULT_URL}), max_wait (s, default 60)"
    }

    # time source and sleep of the rate-limit waits (tests inject their own)
    clock: Callable[[], float] = staticmethod(time.time)  # type: ignore[assignment]
    sleep: Callable[[float], None] = staticmethod(time.sleep)  # type: ignore[assignment]

    def __init__(self, settings: Settings, values: dict[str, Any] | None = None, *, transport: Any = None):
        super().__init__(settings, values, transport=transport)
        table = self.values.get("tns") or {}
        if not isinstance(table, dict):
            raise ConfigError("[resolver.tns] must be a table")
        unknown = sorted(set(table) - set(TABLE_KEYS))
        if unknown:
            raise ConfigError(
                f"[resolver.tns]: unknown key {unknown[0]!r}",
                hint=f"allowed keys there: {', '.join(TABLE_KEYS)}",
            )
        self.table = table
        self.url = str(table.get("url") or DEFAULT_URL).rstrip("/")
        self.max_wait = float(table.get("max_wait", 60.0))

    @property
    def api_key(self) -> str | None:
        """The api key: $STDQ_TNS_API_KEY, else [resolver.tns] api_key. Never print it."""
        return os.environ.get(ENV_API_KEY) or (str(self.table.get("api_key") or "") or None)

    def _wait_for_window(self) -> None:
        remaining, reset_at = _WINDOWS.get(self.url, (1, 0.0))
        if remaining > 0:
            return
        wait = reset_at - self.clock()
        if wait <= 0:
            return
        if wait > self.max_wait:
            raise TemporaryFailure(
                f"tns: the rate limit is used up for {wait:.0f} s more; try again later",
                retry_after=wait,
            )
        self.sleep(wait)

    def _remember_window(self, headers: Any) -> float | None:
        """Store the answer's rate-limit headers; the seconds until the reset, if given."""
        def number(key: str) -> float | None:
            text = str(headers.get(key) or "").strip()
            if key == "x-rate-limit-remaining" and text.lower() == "exceeded":
                return 0.0  # TNS writes "Exceeded" once the window is used up
            try:
                return float(text)
            except ValueError:
                return None

        remaining, reset = number("x-rate-limit-remaining"), number("x-rate-limit-reset")
        if reset is None:
            reset = number("retry-after")
        if remaining is not None:
            _WINDOWS[self.url] = (int(remaining), self.clock() + (reset or 0.0))
        return reset

    def resolve(self, name: str) -> Target | None:
        from stdq.http import RequestPolicy, check_response, expect_format

        objname = tns_objname(name)
        if objname is None:
            return None  # not a TNS designation: nothing to ask
        key = self.api_key
        if not key:
            raise QueryFailed(f"tns: no api key (set {ENV_API_KEY} or [resolver.tns] api_key)")
        bot_id, bot_name = self.table.get("bot_id"), self.table.get("bot_name")
        if bot_id in (None, "") or not bot_name:
            raise QueryFailed("tns: [resolver.tns] needs bot_id and bot_name (the bot's User-Agent)")
        form = {"api_key": key, "data": json.dumps({"objname": objname})}
        headers = {"User-Agent": user_agent(bot_id, str(bot_name))}
        policy = RequestPolicy(repeatable=True, final=lambda r: r.status_code == 429, secret_body=True)
        from stdq import http

        with http.make_client("tns", self.settings.http, secrets=[key], transport=self.transport) as client:
            for _attempt in range(4):
                self._wait_for_window()
                response = client.request(
                    "POST", f"{self.url}/api/get/object", policy=policy, data=form, headers=headers
                )
                reset = self._remember_window(response.headers)
                if response.status_code != 429:
                    break
                wait = 1.0 if reset is None else max(0.0, reset)
                if wait > self.max_wait:
                    raise TemporaryFailure(
                        f"tns: throttled (HTTP 429) for {wait:.0f} s; try again later", retry_after=wait
                    )
                _WINDOWS[self.url] = (0, self.clock() + wait)
            else:
                raise TemporaryFailure("tns: throttled (HTTP 429) after 4 tries; try again later")
            if response.status_code == 404:
                return None  # guess: an unknown objname may also come as a 404
            check_response(response, "tns", [key])
            expect_format(response, "tns", "the name lookup", "JSON", secrets=[key])
            try:
                payload = json.loads(response.content)
            except (ValueError, RecursionError):
                raise QueryFailed("tns: the answer was not the expected JSON") from None
        found = parse_tns_object(payload)
        if found is None:
            return None
        from stdq.records import Target  # here: checking the settings imports this module

        return Target(ra=found[0], dec=found[1], name=name.strip(), resolver=self.name, canonical=found[2])
