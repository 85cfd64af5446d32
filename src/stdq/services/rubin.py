"""Rubin (LSST) light curves through the public alert brokers: Fink, then ALeRCE.

No credentials. The service

1. cone-searches the broker around the target (``--radius``, default 1 arcsec):
   Fink ``GET {url}/api/v1/conesearch?ra=&dec=&radius=<arcsec>`` (one row per
   diaObjectId), ALeRCE ``GET {alerce_url}/object_api/list_objects?survey=lsst&ra=&dec=
   &radius=<arcsec>`` (``items``);
2. takes the diaObjectId nearest the target (every one with ``--all-objects``; the
   product's service notes list each with ``object_id`` and ``sep_arcsec``);
3. fetches its forced photometry and/or its detections (``--kind forced|detections|both``):
   Fink ``/api/v1/fp`` and ``/api/v1/sources`` (``diaObjectId=``, JSON), ALeRCE
   ``lightcurve_api/forced-photometry`` and ``lightcurve_api/detections``
   (``survey_id=lsst&oid=``).

Fink is asked first; when it fails (an HTTP error, an HTML page, an answer that is not
its JSON, after the client's retries) or has no object in the cone, ALeRCE is asked
(``--broker fink|alerce`` asks only that one). product.json's service notes say which
broker answered (``broker``) and why Fink was passed over (``fink_problem``). Every
answer is kept byte for byte; :mod:`stdq.processors.rubin` reads them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from stdq.errors import NoData, QueryFailed, StdqError, TemporaryFailure
from stdq.services.base import (
    ALL_OBJECTS_FIELD,
    TIME_FIELDS,
    Field,
    QueryForm,
    SingleTargetDataService,
    radius_field,
)

if TYPE_CHECKING:
    from stdq.http import Client
    from stdq.services.base import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

MAX_RADIUS_ARCSEC = 600.0
BROKERS = ("fink", "alerce")
KIND_FIELD = Field("kind", "choice", default="forced", choices=("forced", "detections", "both"),
                   help="forced photometry, the DIA detections, or both in one product")
FLUX_KIND_FIELD = Field(
    "flux_kind", "choice", default="difference", choices=("difference", "total", "both"),
    help="difference-image fluxes, direct-image (total) fluxes, or both as separate rows",
)


class RubinForm(QueryForm):
    """Options of ``stdq query rubin``."""

    max_radius_arcsec = MAX_RADIUS_ARCSEC
    fields = (
        radius_field(1.0, MAX_RADIUS_ARCSEC),
        KIND_FIELD,
        Field("broker", "choice", default="auto", choices=("auto", *BROKERS),
              help="auto: Fink, then ALeRCE when Fink fails or has no object; or only one"),
        FLUX_KIND_FIELD,
        *TIME_FIELDS,
        ALL_OBJECTS_FIELD,
    )


class Answer:
    """What one broker answered: the raw files and the objects of the cone."""

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.raws: list[tuple[str, bytes, str, str | None]] = []  # name, body, url, content type
        self.objects: list[tuple[str, float]] = []  # (diaObjectId, sep arcsec), nearest first
        self.selected: list[str] = []
        self.missing: list[str] = []  # light curves the broker answered 404 for

        self.rows = 0  # light-curve records received

    @property
    def photometry(self) -> bool:
        """Whether the light-curve answers hold any record."""
        return self.rows > 0


def _json(response: Any, service: str, what: str) -> Any:
    import json

    try:
        return json.loads(response.content)
    except RecursionError:
        raise QueryFailed(f"{service}: {what} is nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError):
        raise TemporaryFailure(
            f"{service}: {what} is not JSON: {response.text[:120]!r}; try again later"
        ) from None


def _sep(ra: Any, dec: Any, target: Target) -> float:
    from stdq.photometry import separation_arcsec

    try:
        return float(separation_arcsec(target.ra, target.dec, float(ra), float(dec)))
    except (TypeError, ValueError):
        return float("inf")


def _select(answer: Answer, ranked: dict[str, float], params: dict[str, Any]) -> bool:
    """Objects of the cone by separation, and the ones to fetch: the nearest, or all with
    --all-objects. False when the cone held none."""
    answer.objects = sorted(ranked.items(), key=lambda item: item[1])
    answer.selected = [o for o, _ in (answer.objects if params.get("all_objects") else answer.objects[:1])]
    return bool(answer.objects)


def _object_id(value: Any, what: str) -> str:
    from stdq.photometry import check_int64

    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise QueryFailed(f"rubin: {what} has no usable diaObjectId ({value!r})")
    check_int64([value], "diaObjectId")
    return str(value).strip()


class RubinService(SingleTargetDataService):
    """Rubin forced photometry and DIA detections from the Fink and ALeRCE brokers."""

    name = "rubin"
    title = "Rubin (LSST) light curves from the Fink and ALeRCE brokers"
    info_url = "https://api.lsst.fink-portal.org"
    data_product_type = "rubin_photometry"
    supports_async = False
    form = RubinForm
    default_url = "https://api.lsst.fink-portal.org"
    settings_defaults: ClassVar[dict[str, Any]] = {"alerce_url": "https://api-lsst.alerce.online"}
    settings_help: ClassVar[dict[str, str]] = {
        "url": "the Fink LSST API (asked first)",
        "alerce_url": "the ALeRCE multisurvey API (asked when Fink fails or has no object)",
    }
    secret_fields = ()
    version = "1"

    @property
    def alerce_url(self) -> str:
        return str(self.config.values.get("alerce_url") or self.settings_defaults["alerce_url"]).rstrip("/")

    # -- HTTP ------------------------------------------------------------------------------
    def _get(self, context: QueryContext, url: str, params: dict[str, Any], broker: str, step: str):
        from stdq.http import check_response, expect_format

        client = context.client
        context.check_cancelled()
        response = client.get(url, params=params)
        label = f"{self.name} ({broker})"
        if response.status_code == 404 and broker == "alerce":
            return response  # ALeRCE: an object it does not know
        check_response(response, label, client.secrets)
        expect_format(response, label, step, "JSON", secrets=client.secrets)
        return response

    def probe(self, client: Client) -> str:
        """stdq doctor: an empty Fink cone search (JSON) somewhere without objects."""
        from stdq.http import expect_format
        from stdq.services.base import probe_status

        response = client.get(f"{self.url}/api/v1/conesearch",
                              params={"ra": "0.0", "dec": "89.9", "radius": "0.1"})
        probe_status(response, self.name, client.secrets)
        expect_format(response, self.name, "the Fink cone search", "JSON", secrets=client.secrets)
        return f"HTTP {response.status_code}, the Fink cone search (JSON)"

    # -- the brokers ---------------------------------------------------------------------------
    def _fink(self, target: Target, params: dict[str, Any], context: QueryContext) -> Answer:
        answer = Answer("fink")
        base = f"{self.url}/api/v1"
        radius = float(params["radius"])
        context.progress("rubin: Fink cone search")
        response = self._get(context, f"{base}/conesearch", {
            "ra": repr(float(target.ra)), "dec": repr(float(target.dec)), "radius": repr(radius),
            "columns": "r:diaObjectId,r:ra,r:dec", "output-format": "json",
        }, "fink", "the Fink cone search")
        rows = _json(response, "rubin (fink)", "the Fink cone search")
        if not isinstance(rows, list):
            raise TemporaryFailure("rubin (fink): the cone search is not a list of records; try again later")
        answer.raws.append(("fink-conesearch.json", response.content,
                            context.client.safe_url(response.request.url), "application/json"))
        ranked: dict[str, float] = {}
        for row in rows:
            if not isinstance(row, dict):
                continue
            oid = _object_id(row.get("r:diaObjectId", row.get("diaObjectId")), "a Fink cone-search row")
            sep = _sep(row.get("r:ra", row.get("ra")), row.get("r:dec", row.get("dec")), target)
            ranked[oid] = min(sep, ranked.get(oid, float("inf")))
        if not _select(answer, ranked, params):
            return answer
        routes = {"forced": [("fp", "forced photometry")], "detections": [("sources", "detections")],
                  "both": [("fp", "forced photometry"), ("sources", "detections")]}[params["kind"]]
        for oid in answer.selected:
            for route, what in routes:
                context.progress(f"rubin: Fink {what} of diaObjectId {oid}")
                response = self._get(context, f"{base}/{route}", {"diaObjectId": oid, "output-format": "json"},
                                     "fink", f"the Fink {what} of {oid}")
                records = _json(response, "rubin (fink)", f"the Fink {what}")
                if not isinstance(records, list):
                    raise TemporaryFailure(f"rubin (fink): the {what} answer is not a list; try again later")
                answer.rows += len(records)
                answer.raws.append((f"fink-{'fp' if route == 'fp' else 'sources'}-{oid}.json", response.content,
                                    context.client.safe_url(response.request.url), "application/json"))
        return answer

    def _alerce(self, target: Target, params: dict[str, Any], context: QueryContext) -> Answer:
        answer = Answer("alerce")
        base = self.alerce_url
        radius = float(params["radius"])
        context.progress("rubin: ALeRCE cone search")
        response = self._get(context, f"{base}/object_api/list_objects", {
            "survey": "lsst", "ra": repr(float(target.ra)), "dec": repr(float(target.dec)),
            "radius": repr(radius), "page": 1, "page_size": 100,
        }, "alerce", "the ALeRCE object search")
        if response.status_code == 404:
            raise QueryFailed(f"rubin (alerce): HTTP 404 from {context.client.safe_url(response.request.url)}")
        data = _json(response, "rubin (alerce)", "the ALeRCE object search")
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise TemporaryFailure("rubin (alerce): the object search has no items list; try again later")
        answer.raws.append(("alerce-objects.json", response.content,
                            context.client.safe_url(response.request.url), "application/json"))
        ranked: dict[str, float] = {}
        for item in items:
            if not isinstance(item, dict):
                continue
            oid = _object_id(item.get("oid"), "an ALeRCE object")
            ranked[oid] = min(_sep(item.get("meanra"), item.get("meandec"), target), ranked.get(oid, float("inf")))
        if not _select(answer, ranked, params):
            return answer
        routes = {"forced": ["forced-photometry"], "detections": ["detections"],
                  "both": ["forced-photometry", "detections"]}[params["kind"]]
        for oid in answer.selected:
            for route in routes:
                what = route.replace("-", " ")
                context.progress(f"rubin: ALeRCE {what} of {oid}")
                response = self._get(context, f"{base}/lightcurve_api/{route}", {"survey_id": "lsst", "oid": oid},
                                     "alerce", f"the ALeRCE {what} of {oid}")
                if response.status_code == 404:  # ALeRCE does not know it after all: nothing kept
                    answer.missing.append(f"{route} of {oid}")
                    continue
                records = _json(response, "rubin (alerce)", f"the ALeRCE {what}")
                if not isinstance(records, list):
                    raise TemporaryFailure(f"rubin (alerce): the {what} answer is not a list; try again later")
                answer.rows += len(records)
                answer.raws.append((f"alerce-{route}-{oid}.json", response.content,
                                    context.client.safe_url(response.request.url), "application/json"))
        return answer

    # -- the query ---------------------------------------------------------------------------
    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        broker = params.get("broker", "auto")
        order = BROKERS if broker == "auto" else (broker,)
        position = f"RA {target.ra:.6f}, Dec {target.dec:+.6f}"
        where = f"{float(params['radius']):g} arcsec of " + (f"{target.name} ({position})" if target.name else position)
        problems: dict[str, str] = {}
        errors: list[StdqError] = []
        answer: Answer | None = None
        for name in order:
            try:
                found = self._fink(target, params, context) if name == "fink" else self._alerce(target, params, context)
            except (TemporaryFailure, QueryFailed) as exc:
                problems[name] = exc.message
                errors.append(exc)
                context.event("broker", f"{exc.message}" + ("; asking ALeRCE" if name == "fink" and
                                                           len(order) > 1 else ""))
                continue
            if not found.objects or not found.photometry:
                problems[name] = (f"no object within {where}" if not found.objects else
                                  f"no {params['kind']} photometry of {', '.join(found.selected)}")
                context.event("broker", f"rubin: {name}: {problems[name]}")
                continue
            answer = found
            break
        if answer is None:
            text = "; ".join(f"{'Fink' if k == 'fink' else 'ALeRCE'}: {v}" for k, v in problems.items())
            if not errors:
                raise NoData(f"no Rubin object within {where} ({text})")
            if any(isinstance(e, TemporaryFailure) for e in errors):
                raise TemporaryFailure(f"rubin: no broker answered ({text})", retry_after=None)
            raise QueryFailed(f"rubin: no broker answered ({text})")
        product = context.new_product(target, params)
        for name, body, url, ctype in answer.raws:
            product.add_raw(name, body, url=url, content_type=ctype)
        product.notes.update({
            "broker": answer.broker,
            "radius_arcsec": float(params["radius"]),
            "kind": params["kind"],
            "objects_in_cone": [{"object_id": o, "sep_arcsec": round(s, 4)} for o, s in answer.objects],
            "selected_objects": answer.selected,
        })
        if "fink" in problems and answer.broker != "fink":
            product.notes["fink_problem"] = problems["fink"]
        if answer.missing:
            product.notes["not_found"] = answer.missing
        return [product]
