"""An emulator of the Transient Name Server's ``POST /api/get/object``.

The request: form fields ``api_key`` and ``data`` (JSON ``{"objname": "2024abc"}``) and
a ``tns_marker{...}`` User-Agent. The answer, as read from public client code (the TOM
Toolkit's and other TNS harvesters: they take ``response["data"]["reply"]``):
``{"id_code": 200, "id_message": "OK", "data": {"reply": {"objname", "name_prefix",
"radeg", "decdeg", "ra", "dec", ...}}}``.

Guesses (no real answer is at hand): the exact set of reply fields beyond
objname/name_prefix/radeg/decdeg/ra/dec; the not-found reply
(``{"objname": {"110": {"message": "No results found.", "message_id": 110}}}``,
message id 110 as other clients test for); the refusals (401 for a wrong key or a
missing marker, JSON with id_code and id_message); the rate-limit headers
``x-rate-limit-limit``, ``x-rate-limit-remaining``, ``x-rate-limit-reset`` (seconds
until the window resets) on every answer, and 429 with them when the window is used up.

The objects: the sky's SN 2023ixf, and ``AT 2024abc``, a transient only TNS knows
(Sesame and MAST do not), at ``TNS_ONLY`` positions. ``requests`` logs what each
request asked (objname, User-Agent, whether the key was right) — never the key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response
from stdq.testing.resolvers import sexagesimal

API_KEY = "tns-emulator-key-0123456789abcdef"
BOT_ID = 12345
BOT_NAME = "stdq_test_bot"

# objname -> (prefix, ra, dec)
TNS_ONLY: dict[str, tuple[str, float, float]] = {"2024abc": ("AT", 150.123456, -12.345678)}


def _objects() -> dict[str, tuple[str, float, float]]:
    found = dict(TNS_ONLY)
    for obj in sky.TARGETS:
        for alias in (obj.name, *obj.aliases):
            parts = alias.split()
            if len(parts) == 2 and parts[0] in ("SN", "AT") and parts[1][:4].isdigit():
                found.setdefault(parts[1].lower(), (parts[0], obj.ra, obj.dec))
    return found


class TnsEmulator(Emulator):
    """TNS ``get/object`` with a per-window rate limit (LIMIT requests per WINDOW s)."""

    name = "tns"
    prefix = "/tns"

    def __init__(
        self, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.limit = limit
        self.window = window
        self.clock = clock
        self.objects = _objects()
        self.requests: list[dict[str, Any]] = []
        self.refused = 0  # answers 429
        self._window_start: float | None = None
        self._used = 0
        self._counter_lock = threading.Lock()

    def _rate(self) -> tuple[bool, dict[str, str]]:
        """Count one request; (allowed, the rate-limit headers)."""
        with self._counter_lock:
            now = self.clock()
            if self._window_start is None or now >= self._window_start + self.window:
                self._window_start, self._used = now, 0
            allowed = self._used < self.limit
            if allowed:
                self._used += 1
            reset = max(0.0, self._window_start + self.window - now)
            headers = {
                "x-rate-limit-limit": str(self.limit),
                "x-rate-limit-remaining": str(max(0, self.limit - self._used)),
                "x-rate-limit-reset": f"{reset:.0f}" if reset.is_integer() else f"{reset:.3f}",
            }
            return allowed, headers

    def handle(self, request: Request) -> Response:
        if request.path.rstrip("/") != "/api/get/object":
            return Response.json({"id_code": 404, "id_message": "Not found"}, 404)
        if request.method != "POST":
            return Response.json({"id_code": 405, "id_message": "Method not allowed"}, 405)
        form = request.form()
        agent = request.header("user-agent", "") or ""
        try:
            data = json.loads((form.get("data") or ["{}"])[-1])
        except ValueError:
            data = {}
        objname = str(data.get("objname", "")) if isinstance(data, dict) else ""
        key_ok = (form.get("api_key") or [""])[-1] == API_KEY
        self.requests.append({"objname": objname, "user_agent": agent, "key_ok": key_ok})
        allowed, headers = self._rate()
        if not allowed:
            self.refused += 1
            return Response.json({"id_code": 429, "id_message": "Too Many Requests"}, 429, headers)
        if not key_ok or not agent.startswith("tns_marker{"):
            return Response.json({"id_code": 401, "id_message": "Unauthorized"}, 401, headers)
        found = self.objects.get(objname.lower())
        if found is None:
            reply: dict[str, Any] = {
                "objname": {"110": {"message": "No results found.", "message_id": 110}}
            }
        else:
            prefix, ra, dec = found
            ra_text, dec_text = sexagesimal(ra, dec).split()
            reply = {
                "objname": objname.lower(),
                "name_prefix": prefix,
                "objid": 100000 + sum(map(ord, objname)),
                "ra": ra_text,
                "dec": dec_text,
                "radeg": ra,
                "decdeg": dec,
                "object_type": {"name": "SN II" if prefix == "SN" else None},
            }
        return Response.json(
            {"id_code": 200, "id_message": "OK", "data": {"received_data": data, "reply": reply}},
            headers=headers,
        )
