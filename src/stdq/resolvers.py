"""Name resolvers: the plug-in base class and the two built-in remote resolvers.

A resolver is registered in the entry-point group ``stdq.resolvers`` under its
name (the word used in ``[resolver] order``) as "module:Class", a subclass of
:class:`NameResolver`. Built in: ``sesame`` (CDS Sesame) and ``mast`` (the MAST
name resolver). The ``local`` resolver (the targets table of ``stdq targets
add``) is not a plug-in: it is part of :class:`stdq.targets.Resolver`, which
asks the resolvers in turn and caches the answers of remote ones.

Stdlib only at import time; the HTTP layer is imported when a resolver runs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from stdq.errors import QueryFailed
from stdq.records import Target

if TYPE_CHECKING:
    from stdq.config import Settings
    from stdq.http import Client


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


# -- CDS Sesame ----------------------------------------------------------------------------

_SESAME_J = re.compile(r"^%J\s*([0-9.]+)\s*([+\-.0-9]+)", re.MULTILINE)
_SESAME_NAME = re.compile(r"^%I\.0\s+(.+?)\s*$", re.MULTILINE)


def parse_sesame(text: str) -> tuple[float, float, str | None] | None:
    """The first ``%J ra dec`` of a Sesame plain-text answer; None when nothing was found."""
    match = _SESAME_J.search(text)
    if not match:
        return None
    name = _SESAME_NAME.search(text)
    return float(match.group(1)), float(match.group(2)), (name.group(1) if name else None)


def looks_like_sesame(text: str) -> bool:
    """True for a Sesame plain-text answer (found or not): '#' lines, no HTML page."""
    head = text.lstrip()[:200].lower()
    if not head or head.startswith("<"):
        return False
    return any(line.startswith("#") for line in text.splitlines())


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
        from stdq.http import check_response

        url = f"{str(self.values['sesame_url']).rstrip('/')}/-oI/A?{quote(name.strip())}"
        with self.client() as client:
            response = client.get(url)
            check_response(response, "sesame")
            text = response.text
        if not looks_like_sesame(text):
            raise QueryFailed("sesame: the answer was not a Sesame answer")
        found = parse_sesame(text)
        if found is None:
            return None
        return Target(ra=found[0], dec=found[1], name=name.strip(), resolver=self.name, canonical=found[2])


# -- MAST ----------------------------------------------------------------------------------


def parse_mast_resolver(payload: Any) -> tuple[float, float, str | None] | None:
    """The first resolved coordinate of a MAST (SANTA) resolver JSON answer, or None."""
    if not isinstance(payload, dict):
        raise ValueError("not a JSON object")
    for entry in payload.get("resolvedCoordinate") or []:
        ra, dec = entry.get("ra"), entry.get("decl")
        if ra is None or dec is None:
            continue
        return float(ra), float(dec), entry.get("canonicalName")
    return None


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
        from stdq.http import check_response

        params = {"name": name.strip(), "outputFormat": "json", "resolveAll": "true"}
        with self.client() as client:
            response = client.get(str(self.values["mast_url"]), params=params)
            check_response(response, "mast-resolver")
            try:
                found = parse_mast_resolver(response.json())
            except ValueError:
                raise QueryFailed("mast-resolver: the answer was not the expected JSON") from None
        if found is None:
            return None
        return Target(ra=found[0], dec=found[1], name=name.strip(), resolver=self.name, canonical=found[2])
