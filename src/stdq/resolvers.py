"""Name resolvers: the plug-in base class and the two built-in remote resolvers.

A resolver is registered in the entry-point group ``stdq.resolvers`` under its
name (the word used in ``[resolver] order``) as "module:Class", a subclass of
:class:`NameResolver`. Built in: ``sesame`` (CDS Sesame) and ``mast`` (the MAST
name resolver); ``tns`` (stdq.resolvers_tns). The ``local`` resolver (the targets table of ``stdq targets
add``) is not a plug-in: it is part of :class:`stdq.targets.Resolver`, which
asks the resolvers in turn and caches the answers of remote ones.

Stdlib only at import time; the HTTP layer is imported when a resolver runs.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from stdq.errors import QueryFailed

if TYPE_CHECKING:
    from stdq.config import Settings
    from stdq.http import Client
    from stdq.records import Target


class NameResolver:
    """Base class of a remote name resolver: subclass it and implement :meth:`resolve`.

    ``settings_defaults`` declares the keys this resolver reads from the
    ``[resolver]`` table (e.g. ``sesame_url``) with their defaults, and
    ``settings_help`` their meaning; the registry checks their types. ``values``
    holds them merged with the file.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    settings_defaults: ClassVar[dict[str, Any]] = {}
    settings_help: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: Settings, values: dict[str, Any] | None = None, *, transport: Any = None):
        self.settings = settings
        self.values = {**self.settings_defaults, **(values or {})}
        self.transport = transport

    def client(self) -> Client:
        """An HTTP client with stdq's timeouts and retries (close it, or use ``with``)."""
        from stdq import http

        return http.make_client(self.name, self.settings.http, transport=self.transport)

    def resolve(self, name: str) -> Target | None:
        """NAME -> a Target (``resolver`` = this resolver's name), or None when unknown.

        Raise TemporaryFailure or QueryFailed when the service does not answer
        properly: the caller skips this resolver with a warning.
        """
        raise NotImplementedError

    probe_name: ClassVar[str] = "M31"  # what ``stdq doctor`` asks for

    def probe(self) -> str:
        """``stdq doctor``: resolve :attr:`probe_name` (one request); what it answered.
        Raises as :meth:`resolve` does."""
        found = self.resolve(self.probe_name)
        if found is None:
            return f"answers ({self.probe_name} not found)"
        return f"{self.probe_name} -> RA {found.ra:.6f}, Dec {found.dec:+.6f}"


# -- values of an answer -------------------------------------------------------------------

# A decimal number written out whole: ASCII digits, an optional sign, fraction and exponent
# (no "_", no "nan"/"inf", no trailing text: "12.5abc" is not 12.5).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?", re.ASCII)
_NAME_MAX = 200  # characters kept of a canonical name


def parse_number(text: str) -> float | None:
    """TEXT as a finite float if the whole of it is a decimal number, else None."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def position_problem(ra: object, dec: object) -> str | None:
    """Why (RA, DEC) is not a usable position in degrees, or None when it is.

    Usable: two finite real numbers (not bools), RA in [0, 360), Dec in [-90, 90].
    """
    for label, value in (("RA", ra), ("Dec", dec)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{label} {value!r} is not a number"
        try:
            number = float(value)
        except OverflowError:
            return f"{label} {value!r} is not a finite number"
        if not math.isfinite(number):
            return f"{label} {value!r} is not a finite number"
    assert isinstance(ra, (int, float)) and isinstance(dec, (int, float))
    if not 0 <= float(ra) < 360:
        return f"RA {ra!r} is outside [0, 360) degrees"
    if not -90 <= float(dec) <= 90:
        return f"Dec {dec!r} is outside [-90, 90] degrees"
    return None


def clean_name(text: object) -> str | None:
    """A name fit to store and print: control and format characters dropped, any
    whitespace one space, at most 200 characters; None when nothing is left."""
    if not isinstance(text, str):
        return None
    kept = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char)[0] != "C":
            kept.append(char)
    name = " ".join("".join(kept).split())[:_NAME_MAX].strip()
    return name or None


def _position(ra_text: str, dec_text: str, where: str) -> tuple[float, float]:
    """Two numbers of an answer -> (ra, dec); QueryFailed naming WHERE when unusable."""
    ra, dec = parse_number(ra_text), parse_number(dec_text)
    if ra is None or dec is None:
        raise QueryFailed(f"{where}: {_quote(ra_text)} {_quote(dec_text)} is not a position in degrees")
    problem = position_problem(ra, dec)
    if problem:
        raise QueryFailed(f"{where}: {problem}")
    return ra + 0.0, dec + 0.0  # -0.0 -> 0.0


def _quote(text: str, limit: int = 40) -> str:
    return repr(clean_name(text[:limit]) or text[:limit])


# -- CDS Sesame ----------------------------------------------------------------------------

def parse_sesame(text: str) -> tuple[float, float, str | None] | None:
    """(ra, dec, canonical name) of a Sesame answer (plain text, or XML from ``-ox``).

    Plain: the first database block (``#=S=Simbad ...``) with a ``%J ra dec`` line gives
    the position, that block's ``%I.0`` line the name; in all-databases mode a database
    that does not know the name adds a ``#!<db>: <message>`` line instead of a block.
    None when no database found it and the answer says so (``#!`` lines, e.g.
    ``#! *** Nothing found ***``). QueryFailed for any ``%J`` line that is not two whole
    finite numbers in range, or an answer with neither a position nor a ``#!`` line.
    """
    if text.lstrip("\ufeff \t\r\n").startswith("<"):
        return parse_sesame_xml(text)
    blocks: list[list[Any]] = [[None, None]]  # [position, name] of each database block
    said_not_found = False
    for line in text.splitlines():
        if line.startswith("#="):  # "#=S=Simbad (via url):    1": a database found it
            blocks.append([None, None])
            continue
        if line.startswith("#!"):  # "#! *** Nothing found ***", "#!N=NED: ...": one did not
            said_not_found = True
            continue
        tokens = line.split()
        if not tokens:
            continue
        block = blocks[-1]
        if tokens[0] == "%J":
            if len(tokens) < 3:
                raise QueryFailed(f"sesame: a %J line without two numbers: {_quote(line)}")
            position = _position(tokens[1], tokens[2], "sesame: the %J line")
            if block[0] is None:
                block[0] = position
        elif tokens[0] == "%I.0" and block[1] is None:
            block[1] = clean_name(line[len("%I.0"):])
    for position, name in blocks:
        if position is not None:
            return position[0], position[1], name
    if said_not_found:
        return None
    raise QueryFailed("sesame: the answer has neither a position (%J) nor 'Nothing found'")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_sesame_xml(text: str) -> tuple[float, float, str | None] | None:
    """(ra, dec, canonical name) of a Sesame XML answer (``-ox``), None when not found.

    ``<Resolver>`` elements with ``<jradeg>``/``<jdedeg>`` hold positions (the first one
    is used, its ``<oname>`` is the name); a ``<Target>`` with no position and an
    ``<INFO>`` (``*** Nothing found ***``) is not found. QueryFailed for malformed XML,
    a DOCTYPE (no entities are expanded), or an unusable number.
    """
    import xml.etree.ElementTree as ElementTree

    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise QueryFailed("sesame: the XML answer declares a DOCTYPE (refused)")
    try:
        root = ElementTree.fromstring(text)
    except (ElementTree.ParseError, ValueError) as exc:
        raise QueryFailed(f"sesame: the XML answer does not parse ({exc})") from None
    if _local(root.tag) != "Sesame":
        raise QueryFailed(f"sesame: the XML answer is not a <Sesame> document ({_quote(root.tag)})")
    found: tuple[float, float, str | None] | None = None
    said_not_found = False
    for target in (e for e in root.iter() if _local(e.tag) == "Target"):
        for element in target.iter():
            tag = _local(element.tag)
            if tag == "INFO":
                said_not_found = True
            elif tag == "Resolver":
                values = {_local(child.tag): (child.text or "") for child in element}
                if "jradeg" not in values and "jdedeg" not in values:
                    continue
                position = _position(
                    values.get("jradeg", ""), values.get("jdedeg", ""), "sesame: <jradeg>/<jdedeg>"
                )
                if found is None:
                    found = (position[0], position[1], clean_name(values.get("oname")))
    if found is None and not said_not_found:
        raise QueryFailed("sesame: the XML answer has neither a position nor 'Nothing found'")
    return found


def looks_like_sesame(text: str) -> bool:
    """True for a Sesame answer (found or not): plain text whose first line is a ``#``
    line, or a ``<Sesame>`` XML document; False for an HTML page or anything else."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<"):
        head = stripped[:300]
        return "<Sesame" in head and "<html" not in head.lower()
    return stripped.startswith("#")


class SesameResolver(NameResolver):
    """CDS Sesame (Simbad, NED, VizieR), plain-text answers."""

    name = "sesame"
    title = "CDS Sesame"
    settings_defaults: ClassVar[dict[str, Any]] = {
        "sesame_url": "https://cds.unistra.fr/cgi-bin/nph-sesame"
    }
    settings_help: ClassVar[dict[str, str]] = {
        "sesame_url": "CDS Sesame (plain-text answers); the resolver appends /-oI/A?NAME"
    }

    def resolve(self, name: str) -> Target | None:
        from stdq.http import check_response, expect_format

        url = f"{str(self.values['sesame_url']).rstrip('/')}/-oI/A?{quote(name.strip())}"
        with self.client() as client:
            response = client.get(url)
            check_response(response, "sesame")
            expect_format(response, "sesame", "the name lookup", "a Sesame answer")
            text = response.text
        if not looks_like_sesame(text):
            first = next((line for line in text.splitlines() if line.strip()), "")
            raise QueryFailed(f"sesame: the answer was not a Sesame answer: {_quote(first, 120)}")
        found = parse_sesame(text)
        if found is None:
            return None
        from stdq.records import Target  # here: checking the settings imports this module

        return Target(ra=found[0], dec=found[1], name=name.strip(), resolver=self.name, canonical=found[2])


# -- MAST ----------------------------------------------------------------------------------


def _mast_number(value: object, key: str) -> float:
    if isinstance(value, str):
        number = parse_number(value)
        if number is None:
            raise QueryFailed(f"mast-resolver: {key} {_quote(value)} is not a number")
        return number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise QueryFailed(f"mast-resolver: {key} {_quote(repr(value))} is not a number")
    try:
        return float(value)
    except OverflowError:
        raise QueryFailed(f"mast-resolver: {key} is not a finite number") from None


def parse_mast_resolver(payload: Any) -> tuple[float, float, str | None] | None:
    """(ra, dec, canonical name) of the first entry of a MAST (SANTA) resolver answer
    (``{"resolvedCoordinate": [{"ra", "decl", "canonicalName", ...}, ...]}``).

    None for an empty (or null) list. QueryFailed when the answer is not that object,
    or when any entry has a position that is not two finite numbers in range.
    """
    if not isinstance(payload, dict) or "resolvedCoordinate" not in payload:
        raise QueryFailed("mast-resolver: the answer is not a {\"resolvedCoordinate\": [...]} object")
    entries = payload["resolvedCoordinate"]
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise QueryFailed("mast-resolver: resolvedCoordinate is not a list")
    found: tuple[float, float, str | None] | None = None
    for entry in entries:
        if not isinstance(entry, dict):
            raise QueryFailed("mast-resolver: an entry of resolvedCoordinate is not an object")
        ra, dec = entry.get("ra"), entry.get("decl")
        if ra is None and dec is None:
            continue
        ra_deg, dec_deg = _mast_number(ra, "ra"), _mast_number(dec, "decl")
        problem = position_problem(ra_deg, dec_deg)
        if problem:
            raise QueryFailed(f"mast-resolver: {problem}")
        if found is None:
            found = (ra_deg + 0.0, dec_deg + 0.0, clean_name(entry.get("canonicalName")))
    return found


class MastResolver(NameResolver):
    """The MAST (SANTA) name resolver, JSON answers."""

    name = "mast"
    title = "MAST name resolver"
    settings_defaults: ClassVar[dict[str, Any]] = {
        "mast_url": "https://mastresolver.stsci.edu/Santa-war/query"
    }
    settings_help: ClassVar[dict[str, str]] = {
        "mast_url": "the MAST (SANTA) name resolver (JSON answers)"
    }

    def client(self) -> Client:
        from stdq import http

        return http.make_client("mast-resolver", self.settings.http, transport=self.transport)

    def resolve(self, name: str) -> Target | None:
        from stdq.http import check_response, expect_format

        params = {"name": name.strip(), "outputFormat": "json", "resolveAll": "true"}
        with self.client() as client:
            response = client.get(str(self.values["mast_url"]), params=params)
            check_response(response, "mast-resolver")
            expect_format(response, "mast-resolver", "the name lookup", "JSON")
            try:
                payload = json.loads(response.content)
            except (ValueError, RecursionError):
                raise QueryFailed("mast-resolver: the answer was not the expected JSON") from None
        found = parse_mast_resolver(payload)
        if found is None:
            return None
        from stdq.records import Target  # here: checking the settings imports this module

        return Target(ra=found[0], dec=found[1], name=name.strip(), resolver=self.name, canonical=found[2])
