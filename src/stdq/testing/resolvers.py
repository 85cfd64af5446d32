"""Emulators of the name resolvers: CDS Sesame (plain text) and the MAST resolver (SANTA, JSON).

Both answer for the names of :mod:`stdq.testing.sky` (any alias, case and spacing
ignored). Wire formats: ``docs/wire-formats.md`` sections 4.1 and 2.1, and the
real answers ``realdata/sesame/ngc3642_all.txt`` and
``realdata/mast_panstarrs/resolver.json``. Faults (5xx, hang, html, ...) come from
the FakeServer, as for every emulator. These are resolvers, not services: they
have no ``service_name``; ``settings_toml`` points ``[resolver] sesame_url`` and
``mast_url`` at the emulators named "sesame" and "mast-resolver".
"""

from __future__ import annotations

import math
import re
import time
import zlib
from urllib.parse import unquote, urlsplit

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

# Simbad's short names of object types, for the `%C.0` line and MAST's objectType.
_OTYPES = {"SN": "SN*", "LIN": "LIN", "G": "G", "Field": "Unknown"}


def _stable_number(text: str, modulo: int) -> int:
    """A deterministic number from TEXT (Sesame's query id, Simbad's oid)."""
    return zlib.crc32(text.encode("utf-8")) % modulo


def sexagesimal(ra: float, dec: float) -> str:
    """``hh:mm:ss.ss +dd:mm:ss.s`` as on Sesame's ``%J`` line (11:22:18.01 +59:04:27.2).

    Truncated, not rounded, as in the real answers: 170.5750583 +59.0742417 is
    11:22:18.014 +59:04:27.27, shown as 11:22:18.01 +59:04:27.2.
    """
    centi = math.floor(ra / 15.0 * 3600 * 100 + 1e-6)  # hundredths of a second of time
    hh, rest = divmod(centi, 3600 * 100)
    mm, ss = divmod(rest, 60 * 100)
    sign = "-" if dec < 0 else "+"
    deci = math.floor(abs(dec) * 3600 * 10 + 1e-6)  # tenths of an arcsecond
    dd, rest = divmod(deci, 3600 * 10)
    dm, ds = divmod(rest, 60 * 10)
    return f"{hh % 24:02d}:{mm:02d}:{ss / 100:05.2f} {sign}{dd:02d}:{dm:02d}:{ds / 10:04.1f}"


def _done_line() -> str:
    # The trailer carries the server's time, e.g. "#====Done (2013-Feb-12,16:37:11z)====".
    return time.strftime("#====Done (%Y-%b-%d,%H:%M:%Sz)====", time.gmtime())


class SesameEmulator(Emulator):
    """CDS Sesame: ``GET {prefix}/-o<opts>/<dbs>?<url-quoted name>`` -> plain text.

    The answer for a known name follows the real NGC 3642 answer line by line:
    ``# <name>    #Q<id>``, ``#=S=Simbad (via url):    1``, ``%@ <oid>``,
    ``%I.0 <main id>``, ``%C.0 <type>``, ``%J <ra> <dec> = <hh:mm:ss.ss> <+dd:mm:ss.s>``,
    two blank lines, then ``#====Done (...)====``. Only the Simbad block is given,
    whatever the database letters (guess: the real service adds a block for each
    database that knows the name).
    """

    name = "sesame"
    prefix = "/sesame/cgi-bin/nph-sesame"

    _PATH = re.compile(r"^/-o([A-Za-z]*)/~?([SNVA]+)/?$")

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.text("Method Not Allowed", 405)
        match = self._PATH.match(request.path)
        if not match:
            # guess: an unknown path gets a plain 404
            return Response.text("Not Found", 404)
        options = match.group(1)
        query = unquote(urlsplit(request.full_path).query)
        if not query.strip():
            # guess: no name at all is answered like an unknown name
            return Response.text(self._nothing_found(query))
        obj = sky.find(query)
        if obj is None:
            return Response.text(self._nothing_found(query))
        return Response.text(self._found(query, obj, "I" in options))

    @staticmethod
    def _header(query: str) -> str:
        return f"# {query}    #Q{_stable_number(query, 10**8)}"

    def _found(self, query: str, obj: sky.SkyObject, identifiers: bool) -> str:
        lines = [
            self._header(query),
            "#=S=Simbad (via url):    1",
            f"%@ {_stable_number(obj.name, 10**7)}",
            f"%I.0 {obj.name}",
            f"%C.0 {_OTYPES.get(obj.otype, obj.otype)}",
            f"%J {obj.ra:.7f} {obj.dec:+.7f} = {sexagesimal(obj.ra, obj.dec)}",
        ]
        if identifiers:
            # guess: with the `I` option every other identifier comes on a `%I` line
            lines += [f"%I {alias}" for alias in obj.aliases]
        lines += ["", "", _done_line(), ""]
        return "\n".join(lines)

    def _nothing_found(self, query: str) -> str:
        # guess: the form quoted from a real answer in a third-party client's comment
        # (2016): the header, "#! *** Nothing found *** ", the trailer; HTTP 200.
        return "\n".join([self._header(query), "#! *** Nothing found *** ", _done_line(), ""])


class MastResolverEmulator(Emulator):
    """The MAST (SANTA) name resolver:
    ``GET {prefix}?name=<n>&outputFormat=json&resolveAll=true`` -> ``{"resolvedCoordinate": [...]}``.

    Entries have the keys of the real answer (searchString, resolver, cached,
    resolverTime, cacheDate, searchRadius, canonicalName, ra, decl, objectType):
    a SIMBAD entry, and with ``resolveAll=true`` a NED one after it (as in the
    real sample for "m1"). ``name`` may repeat.
    """

    name = "mast-resolver"
    prefix = "/mastresolver/Santa-war/query"

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD", "POST"):
            return Response.text("Method Not Allowed", 405)
        args = dict(request.query)
        if request.method == "POST":
            args.update(request.form())
        names = [n for n in args.get("name", []) if n.strip()]
        output = (args.get("outputFormat") or ["json"])[-1]
        resolve_all = (args.get("resolveAll") or ["false"])[-1].lower() == "true"
        if output.lower() != "json":
            # guess: only the JSON form is emulated
            return Response.text(f"outputFormat {output!r} is not supported here", 400)
        if not names:
            # guess: the real error for a missing name is not known
            return Response.json({"resolvedCoordinate": [], "status": "no name given"}, 400)
        entries: list[dict] = []
        for name in names:
            obj = sky.find(name)
            if obj is None:
                continue  # guess: an unknown name adds nothing to the list
            entries.append(self._entry(name, obj, "SIMBAD", obj.name))
            if resolve_all:
                entries.append(self._entry(name, obj, "NED", obj.name.upper()))
        return Response.json({"resolvedCoordinate": entries, "status": ""})

    @staticmethod
    def _entry(name: str, obj: sky.SkyObject, resolver: str, canonical: str) -> dict:
        entry = {
            "searchString": " ".join(name.split()).lower(),
            "resolver": resolver,
            "cached": resolver == "SIMBAD",
            "resolverTime": 290 + _stable_number(name + resolver, 20),
        }
        if resolver == "SIMBAD":
            entry["cacheDate"] = "Apr 29, 2025, 1:57:27 PM"
        entry.update(
            {
                "searchRadius": -1.0,
                "canonicalName": canonical,
                "ra": obj.ra,
                "decl": obj.dec,
                "objectType": _OTYPES.get(obj.otype, obj.otype),
            }
        )
        return entry
