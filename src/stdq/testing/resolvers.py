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
from xml.sax.saxutils import escape

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


# Galaxies are in VizieR's tables (the real NGC 3642 answer has a VizieR block, and no NED
# line); anything else is not (the real Castor answer: VizieR and NED "#!" lines).
_IN_VIZIER = {"LIN", "G"}


def _vizier_position(ra: float, dec: float) -> str:
    """VizieR's short form of the position to 0.01 deg, as on its %J line:
    170.56 +59.08 -> ``11:22.2     +59:05`` (minutes of time to 0.1, arcminutes)."""
    minutes = round(ra, 2) / 15 * 60
    hours, minutes = divmod(minutes, 60)
    arcmin = round(abs(round(dec, 2)) * 60)
    degrees, arcmin = divmod(arcmin, 60)
    sign = "-" if dec < 0 else "+"
    return f"{int(hours):02d}:{minutes:04.1f}     {sign}{degrees:02d}:{arcmin:02d}"


class SesameEmulator(Emulator):
    """CDS Sesame: ``GET {prefix}/-o<opts>/<dbs>?<url-quoted name>`` -> plain text, or XML
    with ``x`` in the options.

    Plain, for a known name, the real answers line by line (``realdata/sesame``):
    ``# <name>\t#Q<id>``, then the Simbad block as in ``ngc3642_all.txt``
    (``#=S=Simbad (via url):    1``, ``%@ <oid>``, ``%I.0 <main id>``, ``%C.0 <type>``,
    ``%J <ra> <dec> = <hh:mm:ss.ss> <+dd:mm:ss.s>``). With ``A`` (all databases) the
    other databases follow: for a galaxy a VizieR block (``%J`` to 0.01 deg, ``%I.0
    {NGC} 3642``) as in ``ngc3642_all.txt``; for anything else the failure lines of
    ``castor_all_partial_failures.txt`` (``#!V=VizieR (local): No table found for: <name>``,
    ``#!N=NED: ...``). Three blank lines, then ``#====Done (...)====``.
    An unknown name: ``#! *** Nothing found *** `` (``ic12000_notfound_plain.txt``), or in
    XML ``<INFO>*** Nothing found ***</INFO>`` inside ``<Target>``
    (``hip123456_notfound_ox_V.xml``). Status 200 in every case.

    ``answers`` (name, case and spacing ignored -> body) overrides the answer for a name:
    how tests serve a hostile or broken answer.
    """

    name = "sesame"
    prefix = "/sesame/cgi-bin/nph-sesame"

    _PATH = re.compile(r"^/-o([A-Za-z]*)/~?([SNVA]+)/?$")

    def __init__(self, answers: dict[str, str | bytes] | None = None) -> None:
        super().__init__()
        self.answers = {sky._key(k): v for k, v in (answers or {}).items()}

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.text("Method Not Allowed", 405)
        match = self._PATH.match(request.path)
        if not match:
            # guess: an unknown path gets a plain 404
            return Response.text("Not Found", 404)
        options, databases = match.groups()
        query = unquote(urlsplit(request.full_path).query)
        override = self.answers.get(sky._key(query))
        if override is not None:
            return Response.text(override)
        xml = "x" in options
        obj = sky.find(query) if query.strip() else None  # guess: no name is an unknown name
        if xml:
            return Response.text(self._xml(query, databases, obj), content_type="text/xml")
        if obj is None:
            return Response.text(self._nothing_found(query))
        return Response.text(self._found(query, obj, "I" in options, "A" in databases))

    @staticmethod
    def _header(query: str) -> str:
        # the TAB between the name and the query id (SOURCES.md: a quote lost it)
        return f"# {query}\t#Q{_stable_number(query, 10**8)}"

    def _found(self, query: str, obj: sky.SkyObject, identifiers: bool, every_database: bool) -> str:
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
        if every_database:
            if obj.otype in _IN_VIZIER:
                catalog, _, number = obj.name.partition(" ")
                lines += [
                    "", "", "#=V=VizieR (local):    1",
                    f"%J {obj.ra:.2f} {obj.dec:+.2f} = {_vizier_position(obj.ra, obj.dec)}",
                    f"%I.0 {{{catalog}}} {number}" if number else f"%I.0 {obj.name}",
                ]
            else:
                lines += [
                    "", f"#!V=VizieR (local): No table found for: {query}",
                    "", "#!N=NED: ****object name not recognized by NED name interpreter",
                    f"#!N=NED: ***Not recognized by NED: {query}",
                ]
        lines += ["", "", "", _done_line()]
        return "\n".join(lines)

    def _nothing_found(self, query: str) -> str:
        # the real plain answer (2016): the header, "#! *** Nothing found *** ", the trailer
        return "\n".join([self._header(query), "#! *** Nothing found *** ", _done_line(), ""])

    def _xml(self, query: str, databases: str, obj: sky.SkyObject | None) -> str:
        """The ``-ox`` answer: the real not-found document, or (guess, after the schema in
        docs/wire-formats.md 4.1) one ``<Resolver>`` for Simbad with the position."""
        lines = [
            '<Sesame xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
            ' xsi:noNamespaceSchemaLocation="http://vizier.u-strasbg.fr/xml/sesame_4x.xsd">',
            f'<Target option="{escape(databases)}">',
            f"<name>{escape(query)}</name>",
            f"<!--  Q{_stable_number(query, 10**8)} #1  -->",
        ]
        if obj is None:
            lines.append("<INFO>*** Nothing found ***</INFO>")
        else:
            lines += [
                '<Resolver name="S=Simbad (via url)">',
                f"<oid>{_stable_number(obj.name, 10**7)}</oid>",
                f"<otype>{escape(_OTYPES.get(obj.otype, obj.otype))}</otype>",
                f"<jpos>{sexagesimal(obj.ra, obj.dec)}</jpos>",
                f"<jradeg>{obj.ra:.7f}</jradeg>",
                f"<jdedeg>{obj.dec:+.7f}</jdedeg>",
                f"<oname>{escape(obj.name)}</oname>",
                "</Resolver>",
            ]
        lines += ["</Target>", "</Sesame>", _done_line().replace("#", "<!-- - ", 1) + "  -->"]
        return "\n".join(lines)


class MastResolverEmulator(Emulator):
    """The MAST (SANTA) name resolver:
    ``GET {prefix}?name=<n>&outputFormat=json&resolveAll=true`` -> ``{"resolvedCoordinate": [...]}``.

    Entries have the keys of the real answer (searchString, resolver, cached,
    resolverTime, cacheDate, searchRadius, canonicalName, ra, decl, objectType):
    a SIMBAD entry, and with ``resolveAll=true`` a NED one after it (as in the
    real sample for "m1"). ``name`` may repeat. ``answers`` (name -> JSON data, or a
    str/bytes body) overrides the answer for a name.
    """

    name = "mast-resolver"
    prefix = "/mastresolver/Santa-war/query"

    def __init__(self, answers: dict[str, object] | None = None) -> None:
        super().__init__()
        # name (case and spacing ignored) -> the answer: JSON data, or a str/bytes body
        # served as it is (how tests serve a hostile or broken answer)
        self.answers = {sky._key(k): v for k, v in (answers or {}).items()}

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
        for name in names:
            override = self.answers.get(sky._key(name))
            if isinstance(override, (str, bytes)):
                return Response.text(override, content_type="application/json")
            if override is not None:
                return Response.json(override)
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
