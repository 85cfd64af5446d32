"""Pan-STARRS1 DR1/DR2 through the MAST catalogs API (docs/wire-formats.md section 2).

Default: a light curve from DR2. The service

1. cone-searches the ``mean`` table around the target (``ra``, ``dec``,
   ``radius`` in degrees; ``nDetections.gt=<min_detections - 1>``, i.e. the STScI
   example's ``nDetections.gt=1`` by default: objects seen once tend to be
   artifacts);
2. takes the object nearest the target (every object with ``--all-objects``);
3. pages through its rows of the ``detection`` table (``objID=``,
   ``sort_by=obsTime``, ``pagesize``/``page``) until a page comes back shorter
   than asked.

``--table mean`` stops after step 2: the product is the mean-table photometry.
DR1 has only the mean table, so it is the default there and asking DR1 for
detections is bad input (exit 2).

Time bounds (``--mjd-min`` etc., UTC) select detections: they are converted to
TAI (the scale of ``obsTime``) with ERFA's leap-second table and sent as
``obsTime.gte``/``obsTime.lte``, and the processor checks them again after its
own TAI -> UTC conversion. They do not apply to the mean table (averages).

Answers are requested as **CSV**: it is what the STScI examples use, it is about
half the size of the JSON form for the same rows, pandas reads it with its C
parser straight into typed columns, and 64-bit ids (objID, detectID) are read
as exact int64 -- a JSON reader would have to keep them as strings to be safe.
Every answer is kept byte for byte (``mean-pNNN.csv``,
``detection-<objID>-pNNN.csv``) with its redacted URL; the processor reads them
(and JSON answers too).

A MAST token is optional (public data needs none): when ``MAST_API_TOKEN`` (or
``STDQ_PANSTARRS_API_KEY``) is set it is sent the way astroquery sends it, as the
``mast_token`` cookie (astroquery/mast/auth.py), and only to the service's host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from stdq.errors import BadInput, NoData, QueryFailed
from stdq.services.base import (
    ALL_OBJECTS_FIELD,
    TIME_FIELDS,
    Field,
    QueryForm,
    SingleTargetDataService,
    radius_field,
)

if TYPE_CHECKING:
    import httpx
    import pandas as pd

    from stdq.http import Client
    from stdq.services.base import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

MAX_RADIUS_ARCSEC = 1800.0  # MAST limits cones to 0.5 degree
MAX_PAGES = 10_000  # a service ignoring `page` would otherwise page forever


class PanstarrsForm(QueryForm):
    """Options of ``stdq query panstarrs``."""

    max_radius_arcsec = MAX_RADIUS_ARCSEC
    fields = (
        radius_field(2.0, MAX_RADIUS_ARCSEC),
        Field("release", "choice", default="dr2", choices=("dr1", "dr2"),
              help="data release (DR1 has only the mean table)"),
        Field("table", "choice", choices=("detection", "mean"),
              help="detection: a light curve (default for dr2); mean: mean photometry per filter "
              "(default and only choice for dr1)"),
        *TIME_FIELDS,
        Field("min_detections", "int", default=2,
              help="only objects with at least this many detections (removes one-detection artifacts)",
              metavar="N"),
        ALL_OBJECTS_FIELD,
    )

    def clean(self) -> dict[str, Any]:
        out = super().clean()
        release = out["release"]
        table = out.get("table") or ("detection" if release == "dr2" else "mean")
        if release == "dr1" and table == "detection":
            raise BadInput(
                "DR1 has no detection table (no single-epoch light curves)",
                hint="use --release dr2 for detections, or --table mean for DR1 mean photometry",
            )
        out["table"] = table
        if out["min_detections"] < 1:
            raise BadInput(f"--min-detections must be at least 1, not {out['min_detections']}")
        if table == "mean" and ("mjd_min" in out or "mjd_max" in out):
            raise BadInput(
                "time bounds select detections; the mean table holds averages over all epochs",
                hint="drop --mjd-min/--mjd-max/--date-min/--date-max, or use --table detection",
            )
        return out


class PanstarrsService(SingleTargetDataService):
    """Pan-STARRS1 light curves (DR2 detections) or mean photometry, from MAST."""

    name = "panstarrs"
    title = "Pan-STARRS1 DR2 detections / DR1-DR2 mean photometry (MAST catalogs)"
    info_url = "https://catalogs.mast.stsci.edu/docs/panstarrs.html"
    data_product_type = "panstarrs_photometry"
    supports_async = False
    form = PanstarrsForm
    default_url = "https://catalogs.mast.stsci.edu/api/v0.1/panstarrs"
    settings_defaults: ClassVar[dict[str, Any]] = {"pagesize": 50000}
    settings_help: ClassVar[dict[str, str]] = {
        "url": "the MAST catalogs API for Pan-STARRS",
        "pagesize": "rows asked per page of a MAST answer (pages are fetched until one is short)",
    }
    secret_fields = ("api_key",)
    secret_env: ClassVar[dict[str, tuple[str, ...]]] = {"api_key": ("MAST_API_TOKEN",)}
    optional_secrets = ("api_key",)  # a MAST token only for proprietary data
    version = "1"

    # -- HTTP ------------------------------------------------------------------------------
    def http_auth(self) -> Any:
        token = self.config.secret("api_key")
        if not token:
            return None
        from stdq.http import make_host_auth

        return make_host_auth(self.url, cookies={"mast_token": token})

    @property
    def pagesize(self) -> int:
        value = int(self.config["pagesize"])
        if value < 1:
            from stdq.errors import ConfigError

            raise ConfigError(f"{self.settings.path}: [services.panstarrs] pagesize must be >= 1")
        return value

    def table_url(self, release: str, table: str) -> str:
        return f"{self.url}/{release}/{table}.csv"

    def _get(
        self, context: QueryContext, url: str, params: dict[str, Any],
        step: str = "the MAST request",
    ) -> httpx.Response:
        """One answer that must be CSV: HTTP errors are QueryFailed (4xx) or temporary
        (5xx); an HTML page (MAST's maintenance page) or an empty body is temporary
        (exit 75, stdq.http.expect_format): MAST's own "nothing" is the header line."""
        from stdq.http import check_response, expect_format

        client = context.client
        response = client.get(url, params=params)
        if response.status_code == 422:
            self._explain_422(context, response, url, params)
        check_response(response, self.name, client.secrets)
        expect_format(response, self.name, step, "CSV", secrets=client.secrets)
        return response

    def _explain_422(self, context: QueryContext, response, url: str, params: dict[str, Any]) -> None:
        """On 422, name the requested columns the table's metadata does not know (if any)."""
        from stdq.processors.panstarrs import parse_metadata, unknown_columns

        wanted = [c for c in str(params.get("columns", "")).strip("[]").split(",") if c]
        if not wanted:
            return
        try:
            meta = context.client.get(url.removesuffix(".csv") + "/metadata")
            if meta.status_code != 200:
                return
            unknown = unknown_columns(parse_metadata(meta.content), wanted)
        except Exception:  # the explanation is a bonus; the 422 itself is reported below
            return
        if unknown:
            raise QueryFailed(
                f"{self.name}: HTTP 422 from {context.client.safe_url(response.request.url)}: "
                f"the table has no column(s) {', '.join(unknown)}"
            )

    def _fetch_pages(
        self, context: QueryContext, url: str, params: dict[str, Any], kind: str, label: str,
        step: str,
    ) -> list[tuple[bytes, str, pd.DataFrame]]:
        """Every page of one query: [(body, redacted url, parsed table)], until a page is
        short. Each page is parsed once, by the processor's own reader
        (``parse_answer``): the table is handed on to the processor (``keep_parsed``)."""
        from stdq.processors.panstarrs import (
            DETECTION_COLUMNS,
            DETECTION_REQUIRED,
            MEAN_REQUIRED,
            parse_answer,
            read_mast_csv,
        )

        pagesize = self.pagesize
        pages: list[tuple[bytes, str, pd.DataFrame]] = []
        seen: set[bytes] = set()
        for page in range(1, MAX_PAGES + 1):
            context.check_cancelled()
            context.progress(f"{label}: page {page}" if page > 1 else label)
            response = self._get(context, url, {**params, "pagesize": pagesize, "page": page},
                                 step if page == 1 else f"{step} (page {page})")
            body = response.content
            try:
                table = parse_answer(body, kind)
            except QueryFailed:
                if kind != "detection":
                    raise
                # a value the processor refuses (an infoFlag beyond int64 ...): the rows are
                # counted leniently, the page is kept, and the processor fails the product
                # with the reason (the product is recorded, not lost)
                table = read_mast_csv(body, int_columns=("filterID",), wanted=DETECTION_COLUMNS)
                table.attrs["stdq_lenient"] = True
            rows = len(table)
            required = DETECTION_REQUIRED if kind == "detection" else MEAN_REQUIRED
            missing = [c for c in required if c not in table.columns]
            if rows and missing:
                raise QueryFailed(
                    f"{self.name}: the {kind} answer is not the expected table "
                    f"(no column {', '.join(missing)})"
                )
            if rows and body in seen:
                raise QueryFailed(f"{self.name}: the service sent page {page} twice; it ignores paging")
            seen.add(body)
            pages.append((body, context.client.safe_url(response.request.url), table))
            if rows < pagesize:
                return pages
        raise QueryFailed(f"{self.name}: more than {MAX_PAGES} pages of {pagesize} rows; narrow the query")

    def probe(self, client: Client) -> str:
        """stdq doctor: the column list of dr2/detection (a small JSON answer)."""
        import json

        from stdq.http import expect_format
        from stdq.services.base import probe_status

        response = client.get(f"{self.url}/dr2/detection/metadata")
        probe_status(response, self.name, client.secrets)
        expect_format(response, self.name, "the dr2/detection metadata", "JSON", secrets=client.secrets)
        try:
            names = {str(c["name"]) for c in json.loads(response.content)}
        except (ValueError, TypeError, KeyError, RecursionError):
            raise QueryFailed(f"{self.name}: the dr2/detection metadata is not a list of columns") from None
        missing = sorted({"objID", "detectID", "filterID", "obsTime", "psfFlux", "psfFluxErr"} - names)
        if missing:
            raise QueryFailed(f"{self.name}: dr2/detection lacks the columns {', '.join(missing)}")
        return f"HTTP {response.status_code}, dr2/detection metadata (JSON, {len(names)} columns)"

    # -- the query ---------------------------------------------------------------------------
    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        import pandas as pd

        from stdq.processors.panstarrs import (
            DETECTION_COLUMNS,
            MEAN_COLUMNS,
            keep_parsed,
            object_separations,
        )

        release, table = params["release"], params["table"]
        radius = float(params["radius"])
        min_det = int(params["min_detections"])
        cone = {
            "ra": repr(float(target.ra)),
            "dec": repr(float(target.dec)),
            "radius": repr(radius / 3600.0),
            "columns": "[" + ",".join(MEAN_COLUMNS) + "]",
            "nDetections.gt": str(min_det - 1),
            "sort_by": "objID",
        }
        mean_pages = self._fetch_pages(
            context, self.table_url(release, "mean"), cone, "mean",
            f"cone search of the {release.upper()} mean table",
            f"the cone search of the {release.upper()} mean table",
        )
        objects = pd.concat(
            [table for _, _, table in mean_pages if len(table)] or [pd.DataFrame()],
            ignore_index=True,
        )
        position = f"RA {target.ra:.6f}, Dec {target.dec:+.6f}"
        where = f"{radius:g} arcsec of " + (f"{target.name} ({position})" if target.name else position)
        if not len(objects):
            raise NoData(
                f"no Pan-STARRS {release.upper()} object with nDetections > {min_det - 1} within {where}"
            )
        ranked = object_separations(objects, target.as_dict())
        selected = ranked if params.get("all_objects") else ranked[:1]
        notes: dict[str, Any] = {
            "release": release,
            "table": table,
            "format": "csv",
            "radius_arcsec": radius,
            "min_detections": min_det,
            "pagesize": self.pagesize,
            "objects_in_cone": [{"object_id": o, "sep_arcsec": round(s, 4)} for o, s in ranked],
            "selected_objects": [o for o, _ in selected],
        }
        raws: list[tuple[str, bytes, str, pd.DataFrame]] = [
            (f"mean-p{i:03d}.csv", body, url, parsed)
            for i, (body, url, parsed) in enumerate(mean_pages, 1)
        ]
        if table == "detection":
            det_params: dict[str, Any] = {
                "columns": "[" + ",".join(DETECTION_COLUMNS) + "]",
                "sort_by": "obsTime",
            }
            bounds = utc_bounds_to_tai(params.get("mjd_min"), params.get("mjd_max"))
            if bounds[0] is not None:
                det_params["obsTime.gte"] = repr(bounds[0])
            if bounds[1] is not None:
                det_params["obsTime.lte"] = repr(bounds[1])
            if bounds != (None, None):
                notes["obstime_tai_bounds"] = list(bounds)
            total = 0
            for k, (object_id, sep) in enumerate(selected, 1):
                label = f"detections of object {object_id} ({sep:.2f} arcsec)"
                if len(selected) > 1:
                    label += f" [{k}/{len(selected)}]"
                pages = self._fetch_pages(
                    context, self.table_url(release, "detection"),
                    {"objID": object_id, **det_params}, "detection", label,
                    f"the detection query of object {object_id}",
                )
                total += sum(len(parsed) for _, _, parsed in pages)
                raws += [
                    (f"detection-{object_id}-p{i:03d}.csv", body, url, parsed)
                    for i, (body, url, parsed) in enumerate(pages, 1)
                ]
            if total == 0:
                span = ""
                if bounds != (None, None):
                    span = f" between MJD {params.get('mjd_min', '-')} and {params.get('mjd_max', '-')}"
                raise NoData(
                    f"Pan-STARRS {release.upper()} object {selected[0][0]} (nearest within {where}) "
                    f"has no detections{span}"
                )
            notes["detection_rows"] = total
        product = context.new_product(target, params)
        for name, body, url, parsed in raws:
            raw = product.add_raw(name, body, url=url, content_type="text/csv")
            if not parsed.attrs.get("stdq_lenient"):
                keep_parsed(raw, parsed)  # the processor reads it from memory (parsed once)
        product.notes.update(notes)
        return [product]


def utc_bounds_to_tai(mjd_min: float | None, mjd_max: float | None) -> tuple[float | None, float | None]:
    """UTC MJD bounds -> TAI MJD (the scale of obsTime), with ERFA's leap-second table
    (``photometry.utc_to_tai_mjd``; astropy is not imported)."""
    values = [v for v in (mjd_min, mjd_max) if v is not None]
    if not values:
        return None, None
    from stdq.photometry import utc_to_tai_mjd

    converted = iter(utc_to_tai_mjd([float(v) for v in values]).tolist())
    return (
        next(converted) if mjd_min is not None else None,
        next(converted) if mjd_max is not None else None,
    )
