"""The shape of an answer, to compare a real service with its emulator (``pytest -m live``).

One :class:`Request` per small real query: the same request is sent to the real
service (its default url) and to the emulator (a FakeServer), and the two
answers are reduced to a :class:`Shape` -- the status code, the media type and
named sets of names (CSV columns, JSON keys and the JSON types of record fields,
the line tags of a Sesame answer, the columns of the ZFPS listing's table, the
entries and CSV columns of a DataLink zip). :func:`differences` says where the
emulator drifted from the real service: a status or media type of its own,
names it serves that the real service does not (or, for ``exact`` parts, names
it lacks), and names stdq reads that either answer lacks. Values are never
compared: the emulator's sky is not the real one -- where an object must exist on
both sides (a Fink diaObjectId, a Gaia source id), the real service is asked for
one of its own (``real_params``, ids from the services' own test suites and
documentation) and the emulator for its own.

Stdlib and httpx (a test helper: never imported by stdq itself).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

Parts = dict[str, frozenset[str]]

# Where the real services are (the services' and resolvers' own defaults).
REAL_URLS = {
    "sesame": "https://cds.unistra.fr/cgi-bin/nph-sesame",
    "mast-resolver": "https://mastresolver.stsci.edu/Santa-war/query",
    "mast": "https://catalogs.mast.stsci.edu/api/v0.1/panstarrs",
    "irsa": "https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves",
    "atlas": "https://fallingstar-data.com/forcedphot",
    "zfps": "https://ztfweb.ipac.caltech.edu",
    "gaia": "https://gea.esac.esa.int",
    "fink": "https://api.lsst.fink-portal.org",
    "alerce-lsst": "https://api-lsst.alerce.online",
}

# Real objects to ask for (an emulator's ids are not in the real sky):
#: the Fink LSST cone-search test position (fink-object-api apps/routes/v1/lsst/conesearch/test.py)
FINK_CONE = (53.2514, -27.861)
#: the diaObjectId of fink-object-api's /api/v1/sources test (apps/routes/v1/lsst/sources/test.py)
FINK_OBJECT = "314003014107006318"
#: the LSST oid of alerce_client's light-curve integration tests (tests/integration/)
ALERCE_OBJECT = "169298433191444990"
#: a Gaia DR3 source with epoch photometry (the archive's DataLink examples)
GAIA_SOURCE = "4111834567779557376"

SN_2023IXF = (210.910674, 54.31165)  # in the footprint of every survey and of every emulator


@dataclass(frozen=True)
class Shape:
    """What an answer looks like, without its values."""

    status: int
    media_type: str
    parts: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def describe(self) -> str:
        inner = "; ".join(f"{k}: {', '.join(sorted(v)) or '-'}" for k, v in sorted(self.parts.items()))
        return f"HTTP {self.status} {self.media_type}" + (f" ({inner})" if inner else "")


# -- reducing an answer ---------------------------------------------------------------------


def media_type(response: httpx.Response) -> str:
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower()


def json_parts(value: Any, depth: int = 2) -> Parts:
    """The keys of a JSON value, DEPTH levels deep: ``keys`` of the top object (``[] keys``
    of a top array's objects), then ``K`` for the object under key K, ``K[]`` for the
    objects of the array under K, ``K.J`` deeper."""
    parts: dict[str, set[str]] = {}

    def walk(node: Any, name: str, level: int) -> None:
        if isinstance(node, dict):
            objects, label = [node], name
        elif isinstance(node, list):
            objects, label = [item for item in node if isinstance(item, dict)], name + "[]"
        else:
            return
        if not objects:
            return
        parts.setdefault({"": "keys", "[]": "[] keys"}.get(label, label), set()).update(
            key for obj in objects for key in obj
        )
        if level < depth:
            for obj in objects:
                for key, child in obj.items():
                    walk(child, f"{label}.{key}" if label else str(key), level + 1)

    walk(value, "", 1)
    return {k: frozenset(v) for k, v in parts.items()}


def csv_columns(text: str) -> frozenset[str]:
    """The column names of a CSV answer: its first line that is not blank or a # comment."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            return frozenset(c.strip().strip('"') for c in line.split(","))
    return frozenset()


def sesame_tags(text: str) -> frozenset[str]:
    """The line tags of a Sesame plain answer: ``#`` (the name line), ``#=S`` (a database
    that answered), ``#!`` (an error), ``#====`` (the end), ``%J``, ``%I.0``, ..."""
    tags = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("%"):
            tags.add(line.split()[0])
        elif line.startswith("#===="):
            tags.add("#====")
        elif line.startswith("#=") and len(line) > 2:
            tags.add("#=" + line[2])
        elif line.startswith("#!"):
            tags.add("#!")
        elif line.startswith("#"):
            tags.add("#")
        else:
            tags.add("(untagged)")
    return frozenset(tags)


def listing_parts(text: str) -> Parts:
    """The ZFPS status listing: the columns of its table, or that it said Zero records."""
    from stdq.services.html_table import TableParser

    parser = TableParser()
    parser.feed(text)
    parser.close()
    headers = parser.headers or (parser.rows[0] if parser.rows else [])
    if headers:
        return {"table columns": frozenset(headers)}
    if re.search(r"zero records", text, re.IGNORECASE):
        return {"page": frozenset({"Zero records returned"})}
    return {"page": frozenset({"no table"})}


def metadata_parts(value: Any) -> Parts:
    """A MAST metadata answer: the keys of its column descriptions and the column names."""
    parts = dict(json_parts(value))
    if isinstance(value, list):
        parts["columns"] = frozenset(str(c.get("name")) for c in value if isinstance(c, dict))
    return parts


def json_type(value: Any) -> str | None:
    """The JSON type of VALUE as a word (None for null): bool, int, float, str, list, object."""
    if value is None:
        return None
    for kind, word in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list")):
        if isinstance(value, kind):
            return word
    return "object"


def records_parts(value: Any) -> Parts:
    """A JSON answer of records (a list, or an object holding one under ``items``): its
    keys (:func:`json_parts`) and ``types``, one ``key=type`` per field and JSON type seen
    (nulls left aside), so that an id sent as text instead of a number is caught."""
    parts = dict(json_parts(value))
    records = value.get("items") if isinstance(value, dict) else value
    if isinstance(records, list):
        parts["types"] = frozenset(
            f"{key}={json_type(v)}" for r in records if isinstance(r, dict)
            for key, v in r.items() if v is not None
        )
    return parts


def zip_parts(content: bytes) -> Parts:
    """A DataLink zip: its entries' names (runs of 4 digits or more as N: ids do not count) and
    the columns of the CSV entries; a bare CSV answer: its columns."""
    import io
    import zipfile

    if content[:2] != b"PK":
        return {"columns": csv_columns(content.decode("utf-8", "replace"))}
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        return {"entries": frozenset({"(not a zip)"})}
    with archive:
        names = archive.namelist()
        columns: set[str] = set()
        for name in names:
            if name.lower().endswith(".csv"):
                with archive.open(name) as fh:
                    columns |= csv_columns(fh.read(65536).decode("utf-8", "replace"))
    return {"entries": frozenset(re.sub(r"\d{4,}", "N", n) for n in names), "columns": frozenset(columns)}


READERS: dict[str, Callable[[httpx.Response], Parts]] = {
    "json": lambda r: json_parts(_json(r)),
    "records": lambda r: records_parts(_json(r)),
    "zip": lambda r: zip_parts(r.content),
    "metadata": lambda r: metadata_parts(_json(r)),
    "csv": lambda r: {"columns": csv_columns(r.text)},
    "sesame": lambda r: {"line tags": sesame_tags(r.text)},
    "listing": lambda r: listing_parts(r.text),
    "none": lambda r: {},
}


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def shape_of(response: httpx.Response, kind: str) -> Shape:
    """RESPONSE reduced to its Shape, read as KIND (a key of :data:`READERS`)."""
    return Shape(response.status_code, media_type(response), READERS[kind](response))


# -- comparing -------------------------------------------------------------------------------


def differences(
    real: Shape,
    emulated: Shape,
    required: Mapping[str, frozenset[str] | set[str]] | None = None,
    exact: Sequence[str] = (),
) -> list[str]:
    """Where EMULATED differs from REAL, in words (empty when it does not).

    A status or media type of its own; in a part both answers have, names the
    emulator serves that the real service does not (and, for a part named in
    EXACT, names it lacks); REQUIRED names (stdq reads them) that either lacks.
    """
    found = []
    if real.status != emulated.status:
        found.append(f"status: the real service answered {real.status}, the emulator {emulated.status}")
    if real.media_type != emulated.media_type:
        found.append(
            f"media type: the real service sent {real.media_type or '-'}, the emulator"
            f" {emulated.media_type or '-'}"
        )
    for part in sorted(set(real.parts) & set(emulated.parts)):
        extra = emulated.parts[part] - real.parts[part]
        if extra:
            found.append(f"{part}: the emulator serves {', '.join(sorted(extra))}; the real service does not")
        lacking = real.parts[part] - emulated.parts[part]
        if part in exact and lacking:
            found.append(f"{part}: the real service serves {', '.join(sorted(lacking))}; the emulator does not")
    for part, names in sorted((required or {}).items()):
        for who, shape in (("the real answer", real), ("the emulator's answer", emulated)):
            missing = set(names) - shape.parts.get(part, frozenset())
            if missing:
                found.append(f"{part}: {who} lacks {', '.join(sorted(missing))}, which stdq reads")
    for part in sorted(set(real.parts) ^ set(emulated.parts)):
        if part in exact:
            who = "the real answer" if part in real.parts else "the emulator's answer"
            found.append(f"{part}: only {who} has it")
    return found


# -- the requests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One small query, sent alike to the real service and to its emulator.

    ``emulator``: the FakeServer emulator (and :data:`REAL_URLS` key); ``path`` and
    ``params`` are appended to the base url (``real_params``, when given, replace
    ``params`` for the real service: an object of its own sky); ``method`` GET, or POST
    with the params as a form (as stdq sends it); ``secrets``: the environment variables
    of the real service's credentials (all must be set, else the live test skips),
    mapped to where they go (``header:Authorization=Token {}``, ``param:email``).
    """

    name: str
    emulator: str
    kind: str
    path: str = ""
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # target -> env names
    basic: tuple[str, str] | None = None
    required: Mapping[str, frozenset[str]] = field(default_factory=dict)
    exact: tuple[str, ...] = ()
    real_params: Mapping[str, str] | None = None
    method: str = "GET"

    def secret_values(self, environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
        """{target: value} from ENVIRON, or None when one is missing."""
        values = {}
        for target, names in self.secrets.items():
            value = next((environ[n] for n in names if environ.get(n)), None)
            if value is None:
                return None
            values[target] = value
        return values

    def send(self, base_url: str, secrets: Mapping[str, str] | None = None,
             client: httpx.Client | None = None, *, real: bool = False) -> httpx.Response:
        """The request against BASE_URL with SECRETS in their places; the raw answer.
        REAL: to the real service (its ``real_params``, when given)."""
        params = dict(self.real_params if real and self.real_params is not None else self.params)
        headers = dict(self.headers)
        for target, value in (secrets or {}).items():
            where, _, name = target.partition(":")
            if where == "param":
                params[name] = value
            else:
                header, _, template = name.partition("=")
                headers[header] = template.format(value) if template else value
        url = base_url.rstrip("/") + self.path
        own = client is None
        client = client or httpx.Client(timeout=60.0, follow_redirects=False)
        try:
            if self.method == "POST":
                if self.basic is not None:
                    return client.post(url, data=params, headers=headers, auth=self.basic)
                return client.post(url, data=params, headers=headers)
            return client.get(url, params=params or None, headers=headers, auth=self.basic)
        finally:
            if own:
                client.close()


def _zfps_basic() -> tuple[str, str]:
    from stdq.services.ztf_fps import SHARED_BASIC

    return SHARED_BASIC


def _irsa_params() -> dict[str, str]:
    from stdq.records import Target
    from stdq.services.ztf import request_params

    where = Target(ra=SN_2023IXF[0], dec=SN_2023IXF[1])
    return dict(request_params(where, {"radius": 1.5, "mjd_min": 60083.0, "mjd_max": 60093.0}))


def requests() -> list[Request]:
    """The small queries of ``pytest -m live``: one or two per service and resolver."""
    ra, dec = SN_2023IXF
    return [
        Request(
            "sesame", "sesame", "sesame", path="/-oI/A?M31",
            required={"line tags": frozenset({"#", "%J"})},
        ),
        Request(
            "mast resolver", "mast-resolver", "json",
            params={"name": "M31", "outputFormat": "json", "resolveAll": "true"},
            required={"keys": frozenset({"resolvedCoordinate"}),
                      "resolvedCoordinate[]": frozenset({"ra", "decl", "canonicalName"})},
            exact=("keys",),
        ),
        Request(
            "panstarrs mean cone", "mast", "csv", path="/dr2/mean.csv",
            params={"ra": str(ra), "dec": str(dec), "radius": "0.0008", "nDetections.gte": "1",
                    "columns": "[objID,raMean,decMean,nDetections]", "pagesize": "5"},
            required={"columns": frozenset({"objID", "raMean", "decMean"})}, exact=("columns",),
        ),
        Request(
            "panstarrs detection metadata", "mast", "metadata", path="/dr2/detection/metadata",
            required={"columns": frozenset({"objID", "detectID", "filterID", "obsTime", "psfFlux",
                                            "psfFluxErr"}),
                      "[] keys": frozenset({"name"})},
        ),
        Request(
            "ztf light curve", "irsa", "csv", params=_irsa_params(),
            required={"columns": frozenset({"oid", "expid", "mjd", "mag", "magerr", "filtercode",
                                            "ra", "dec"})},
            exact=("columns",),
        ),
        Request(
            "atlas task list without a token", "atlas", "json", path="/queue/",
            params={"pagesize": "1"}, headers={"Accept": "application/json"},
            required={"keys": frozenset({"detail"})}, exact=("keys",),
        ),
        Request(
            "atlas task list", "atlas", "json", path="/queue/", params={"pagesize": "1"},
            headers={"Accept": "application/json"},
            secrets={"header:Authorization=Token {}": ("STDQ_ATLAS_API_KEY",
                                                      "ATLAS_FORCED_PHOTOMETRY_API_KEY")},
            required={"keys": frozenset({"results", "next"})}, exact=("keys",),
        ),
        Request(
            "zfps status listing", "zfps", "listing", path="/cgi-bin/getBatchForcedPhotometryRequests.cgi",
            params={"option": "All recent jobs", "action": "Query Database"},
            secrets={"param:email": ("STDQ_ZTF_FPS_EMAIL",), "param:userpass": ("STDQ_ZTF_FPS_USERPASS",)},
            basic=_zfps_basic(),
        ),
        Request(
            "gaia tap cone", "gaia", "csv", path="/tap-server/tap/sync",
            params={"REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": "csv", "QUERY": _gaia_cone()},
            required={"columns": frozenset({"source_id", "ra", "dec", "phot_g_mean_mag",
                                            "has_epoch_photometry", "dist"})},
            exact=("columns",),
        ),
        *_rubin_and_gaia_requests(),
    ]


def _rubin_and_gaia_requests() -> list[Request]:
    """Fink's cone search, sources and forced photometry; ALeRCE LSST's object search,
    detections and forced photometry; the Gaia DataLink epoch photometry -- each as the
    rubin and gaia services send them, with the fields their processors read."""
    from stdq.testing.fink import RUBIN_TARGET, TARGET_ID
    from stdq.testing.gaia import VARIABLE_ID

    fink_lc = {"output-format": "json"}
    lc_fields = {"visit", "detector", "midpointMjdTai", "psfFlux", "psfFluxErr", "band"}
    alerce_fields = frozenset({"oid", "measurement_id", "mjd", "band", "psfFlux", "psfFluxErr"})
    datalink = {"RETRIEVAL_TYPE": "EPOCH_PHOTOMETRY", "DATA_STRUCTURE": "INDIVIDUAL",
                "RELEASE": "Gaia DR3", "FORMAT": "csv", "VALID_DATA": "false", "USE_ZIP_ALWAYS": "true"}
    cone = {"columns": "r:diaObjectId,r:ra,r:dec", "output-format": "json", "radius": "5.0"}
    return [
        Request(
            "fink cone search", "fink", "records", path="/api/v1/conesearch",
            params={**cone, "ra": str(RUBIN_TARGET.ra), "dec": str(RUBIN_TARGET.dec)},
            real_params={**cone, "ra": str(FINK_CONE[0]), "dec": str(FINK_CONE[1])},
            required={"[] keys": frozenset({"r:diaObjectId", "r:ra", "r:dec"}),
                      "types": frozenset({"r:diaObjectId=int", "r:ra=float", "r:dec=float"})},
            exact=("[] keys",),
        ),
        Request(
            "fink sources", "fink", "records", path="/api/v1/sources",
            params={**fink_lc, "diaObjectId": str(TARGET_ID)},
            real_params={**fink_lc, "diaObjectId": FINK_OBJECT},
            required={"[] keys": frozenset({f"r:{k}" for k in {*lc_fields, "diaSourceId", "diaObjectId"}}),
                      "types": frozenset({"r:diaSourceId=int", "r:psfFlux=float", "r:band=str"})},
        ),
        Request(
            "fink forced photometry", "fink", "records", path="/api/v1/fp",
            params={**fink_lc, "diaObjectId": str(TARGET_ID)},
            real_params={**fink_lc, "diaObjectId": FINK_OBJECT},
            required={"[] keys": frozenset({f"r:{k}" for k in {*lc_fields, "diaObjectId"}}),
                      "types": frozenset({"r:visit=int", "r:psfFlux=float", "r:band=str"})},
        ),
        Request(
            "alerce lsst object search", "alerce-lsst", "records", path="/object_api/list_objects",
            params={"survey": "lsst", "ra": str(RUBIN_TARGET.ra), "dec": str(RUBIN_TARGET.dec),
                    "radius": "5.0", "page": "1", "page_size": "100"},
            real_params={"survey": "lsst", "ra": str(FINK_CONE[0]), "dec": str(FINK_CONE[1]),
                         "radius": "5.0", "page": "1", "page_size": "100"},
            required={"keys": frozenset({"items"}), "items[]": frozenset({"oid", "meanra", "meandec"})},
        ),
        Request(
            "alerce lsst detections", "alerce-lsst", "records", path="/lightcurve_api/detections",
            params={"survey_id": "lsst", "oid": str(TARGET_ID)},
            real_params={"survey_id": "lsst", "oid": ALERCE_OBJECT},
            required={"[] keys": alerce_fields, "types": frozenset({"psfFlux=float"})},
        ),
        Request(
            "alerce lsst forced photometry", "alerce-lsst", "records", path="/lightcurve_api/forced-photometry",
            params={"survey_id": "lsst", "oid": str(TARGET_ID)},
            real_params={"survey_id": "lsst", "oid": ALERCE_OBJECT},
            required={"[] keys": alerce_fields, "types": frozenset({"psfFlux=float"})},
        ),
        Request(
            "gaia datalink epoch photometry", "gaia", "zip", path="/data-server/data", method="POST",
            params={**datalink, "ID": str(VARIABLE_ID)}, real_params={**datalink, "ID": GAIA_SOURCE},
            required={"columns": frozenset({"source_id", "transit_id", "band", "time", "flux", "flux_error",
                                            "rejected_by_photometry", "rejected_by_variability"})},
        ),
    ]


def _gaia_cone() -> str:
    """The cone stdq's gaia service sends, 5" around the emulator's variable."""
    from stdq.services.gaia import GaiaService
    from stdq.testing.gaia import VARIABLE

    return GaiaService.cone_query("dr3", VARIABLE.ra, VARIABLE.dec, 5.0)


def emulator_secrets(request: Request) -> dict[str, str]:
    """The emulators' own test credentials in the places REQUEST puts secrets."""
    from stdq.testing.atlas import TEST_TOKEN
    from stdq.testing.zfps import TEST_EMAIL, TEST_USERPASS

    known = {
        "header:Authorization=Token {}": TEST_TOKEN,
        "param:email": TEST_EMAIL,
        "param:userpass": TEST_USERPASS,
    }
    return {target: known[target] for target in request.secrets}


def emulator_url(server: Any, request: Request) -> str:
    """The base url of REQUEST's emulator in a running FakeServer."""
    return str(server.url(request.emulator))


def compare(request: Request, real: httpx.Response, emulated: httpx.Response) -> list[str]:
    """The differences between the two answers to REQUEST (see :func:`differences`)."""
    return differences(
        shape_of(real, request.kind), shape_of(emulated, request.kind), request.required, request.exact
    )
