"""Gaia epoch photometry (G, BP, RP) from the Gaia archive at ESAC: TAP cone -> DataLink.

Two steps, both public (no credentials; docs/gaia.md, docs/wire-formats.md):

1. A synchronous TAP query (``POST <url>/tap-server/tap/sync``, ``REQUEST=doQuery``,
   ``LANG=ADQL``, ``FORMAT=csv`` or ``votable``) of ``gaiadr3.gaia_source`` in a
   cone (default radius 1"): ``source_id, ra, dec, phot_g_mean_mag,
   has_epoch_photometry``. The source nearest the target among those with
   ``has_epoch_photometry`` is selected (every such source with ``--all-objects``);
   every source of the cone is listed in product.json (``objects_in_cone``).
2. DataLink (``POST <url>/data-server/data``) with ``RETRIEVAL_TYPE=EPOCH_PHOTOMETRY``,
   ``DATA_STRUCTURE=INDIVIDUAL`` (COMBINED is never asked: the archive answers it
   with HTTP 500), ``RELEASE=Gaia DR3``, ``FORMAT=csv``/``votable``,
   ``VALID_DATA=false`` (every transit, rejected ones too: the processor flags them)
   and ``USE_ZIP_ALWAYS=true`` (one zip, one file per source, as astroquery asks),
   the ids comma-separated, at most ``batch_size`` (the archive's limit, 5000) per
   call. Each answer is kept byte for byte (``epochs-NNN.zip``).

Both are read-only requests, sent as POST (the id list of a batch is too long for
a URL): they are marked repeatable, so a 429/5xx or a lost answer is retried like
a GET. An HTML page or an empty body is temporary (exit 75); a TAP error document
(VOTable ``QUERY_STATUS`` ERROR) is QueryFailed (exit 1) quoting it.

``--release dr3`` is the default; ``dr4`` queries ``gaiadr4.gaia_source`` and
``RELEASE=Gaia DR4`` and works once the archive serves them (until then the TAP
error is reported: "the Gaia archive does not serve DR4 yet"). Any other release
is bad input (exit 2) listing the known ones.
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

    from stdq.http import Client
    from stdq.services.base import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

MAX_RADIUS_ARCSEC = 120.0
DATALINK_MAX_IDS = 5000  # the archive's limit per DataLink call
MAX_LISTED = 1000  # sources of the cone listed in product.json (all are in cone.csv)
# release -> (the TAP table of sources, the DataLink RELEASE value)
RELEASES: dict[str, tuple[str, str]] = {
    "dr3": ("gaiadr3.gaia_source", "Gaia DR3"),
    "dr4": ("gaiadr4.gaia_source", "Gaia DR4"),
}
#: the observed span of each release, MJD (UTC), a day wider on each side than published:
#: DR3 2014-07-25 10:30 to 2017-05-28 08:44 UTC (Gaia Collaboration, Vallenari et al. 2023);
#: DR4 2014-07-25 to 2020-01-20 (the DR4 announcement). A published release never changes.
RELEASE_SPANS: dict[str, tuple[float, float]] = {"dr3": (56862.0, 57902.0), "dr4": (56862.0, 58869.0)}
FORMATS = ("csv", "votable")
TAP_PATH = "/tap-server/tap/sync"
DATALINK_PATH = "/data-server/data"


class GaiaForm(QueryForm):
    """Options of ``stdq query gaia``."""

    max_radius_arcsec = MAX_RADIUS_ARCSEC
    fields = (
        radius_field(1.0, MAX_RADIUS_ARCSEC),
        Field("release", "choice", default="dr3", choices=tuple(RELEASES),
              help="data release (dr4: once the Gaia archive serves it)"),
        *TIME_FIELDS,
        ALL_OBJECTS_FIELD,
    )

    def clean(self) -> dict[str, Any]:
        release = self.data.get("release")
        if isinstance(release, str):
            word = release.strip().lower().replace("gaia", "").replace(" ", "")
            if word not in RELEASES:
                raise BadInput(
                    f"--release: {release!r} is not a Gaia release stdq knows "
                    f"(known: {', '.join(RELEASES)})"
                )
            self.data["release"] = word
        return super().clean()


class GaiaService(SingleTargetDataService):
    """Gaia DR3 epoch photometry (G, BP, RP) of the nearest source with epochs."""

    name = "gaia"
    title = "Gaia DR3 epoch photometry G/BP/RP (Gaia archive TAP + DataLink)"
    info_url = "https://www.cosmos.esa.int/web/gaia-users/archive/datalink-products"
    data_product_type = "gaia_photometry"
    supports_async = False
    form = GaiaForm
    default_url = "https://gea.esac.esa.int"
    settings_defaults: ClassVar[dict[str, Any]] = {"format": "csv", "batch_size": DATALINK_MAX_IDS}
    settings_help: ClassVar[dict[str, str]] = {
        "url": "the Gaia archive (TAP at /tap-server/tap/sync, DataLink at /data-server/data)",
        "format": "answer format asked of TAP and DataLink: csv or votable",
        "batch_size": "source ids per DataLink call (the archive takes at most 5000)",
    }
    settings_ranges: ClassVar[dict[str, str]] = {"batch_size": "1..5000"}
    secret_fields: ClassVar[tuple[str, ...]] = ()
    version = "1"

    # -- settings ----------------------------------------------------------------------------
    @property
    def answer_format(self) -> str:
        value = str(self.config["format"]).strip().lower()
        if value not in FORMATS:
            from stdq.errors import ConfigError

            raise ConfigError(
                f"{self.settings.path}: [services.gaia] format must be one of {', '.join(FORMATS)}, "
                f"not {value!r}"
            )
        return value

    @property
    def batch_size(self) -> int:
        value = int(self.config["batch_size"])
        if not 1 <= value <= DATALINK_MAX_IDS:
            from stdq.errors import ConfigError

            raise ConfigError(f"{self.settings.path}: [services.gaia] batch_size must be 1..5000")
        return value

    # -- HTTP ---------------------------------------------------------------------------------
    def _post(self, context: QueryContext, path: str, data: dict[str, str], step: str,
              expected: str) -> httpx.Response:
        from stdq.http import RequestPolicy, check_response, expect_format

        client = context.client
        response = client.post(self.url + path, data=data, policy=RequestPolicy(repeatable=True))
        if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 429):
            from stdq.processors.gaia import votable_error_text

            error = votable_error_text(response.content)
            if error is not None:
                raise QueryFailed(f"{self.name}: {step} failed (HTTP {response.status_code}): "
                                  f"{client.redact(error)}")
        check_response(response, self.name, client.secrets)
        expect_format(response, self.name, step, expected, secrets=client.secrets)
        return response

    def probe(self, client: Client) -> str:
        """stdq doctor: a TAP query of one row of gaiadr3.gaia_source."""
        from stdq.http import RequestPolicy, expect_format
        from stdq.services.base import probe_status

        response = client.post(self.url + TAP_PATH, data={
            "REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": "csv",
            "QUERY": "SELECT TOP 1 source_id FROM gaiadr3.gaia_source",
        }, policy=RequestPolicy(repeatable=True))
        probe_status(response, self.name, client.secrets)
        expect_format(response, self.name, "the TAP probe", "a CSV table", secrets=client.secrets)
        if not response.content.lstrip().lower().startswith(b"source_id"):
            raise QueryFailed(f"{self.name}: the TAP probe answered no source_id column")
        return f"HTTP {response.status_code}, TAP sync (CSV)"

    # -- stdq update -----------------------------------------------------------------------------
    @classmethod
    def update_unchanged(cls, target: Target, products: list[Any], mjd_min: float | None) -> str | None:
        """A Gaia release is frozen once published: the update's question (the default
        release and radius, from MJD_MIN on) has nothing to add when a stored product of
        that release covers the span from MJD_MIN to the release's end (no mjd_min after
        it, no mjd_max before the end) for a source within the default radius of TARGET's
        position. Then: the reason (no request); else None (ask)."""
        import json

        from stdq.photometry import separation_arcsec

        defaults = {f.name: f.default for f in GaiaForm.fields}
        release, radius = str(defaults["release"]), float(defaults["radius"])
        start, end = RELEASE_SPANS[release]
        asked_from = start if mjd_min is None else float(mjd_min)
        for product in reversed(products):
            try:
                meta = json.loads((product.path / "product.json").read_text())
            except (OSError, ValueError):
                continue
            params = (meta.get("query") or {}).get("params") or {}
            notes = meta.get("service_notes") or {}
            lo, hi = params.get("mjd_min"), params.get("mjd_max")
            if params.get("release") != release or not product.rows:
                continue
            if (lo is not None and float(lo) > asked_from) or (hi is not None and float(hi) < end):
                continue  # the stored product left out part of what the update asks
            selected = {str(s) for s in notes.get("selected_objects") or ()}
            for source in notes.get("objects_in_cone") or ():
                if str(source.get("source_id")) not in selected:
                    continue
                sep = float(separation_arcsec(float(target.ra), float(target.dec),
                                              float(source["ra"]), float(source["dec"])))
                if sep <= radius:
                    return (f"Gaia {release.upper()} is a frozen release: product {product.id} holds the"
                            f" epochs of source {source['source_id']} ({sep:.2f} arcsec); nothing new"
                            " to ask (stdq query gaia --force fetches it again)")
        return None

    # -- the query -----------------------------------------------------------------------------
    @staticmethod
    def cone_query(release: str, ra: float, dec: float, radius_arcsec: float) -> str:
        """The ADQL of the cone search (RA, DEC in degrees, the radius in arcsec)."""
        table = RELEASES[release][0]
        point = f"POINT('ICRS', {ra!r}, {dec!r})"
        return (
            "SELECT source_id, ra, dec, phot_g_mean_mag, has_epoch_photometry, "
            f"DISTANCE(POINT('ICRS', ra, dec), {point}) AS dist "
            f"FROM {table} "
            f"WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra!r}, {dec!r}, "
            f"{radius_arcsec / 3600.0!r}))"
        )

    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        from stdq.processors.gaia import (
            ranked_sources,
            read_table,
            select_sources,
            votable_error_text,
        )

        release = params["release"]
        radius = float(params["radius"])
        fmt = self.answer_format
        batch = self.batch_size
        label = release.upper()
        start, end = RELEASE_SPANS[release]
        lo, hi = params.get("mjd_min"), params.get("mjd_max")
        if (lo is not None and float(lo) > end) or (hi is not None and float(hi) < start):
            raise NoData(  # a frozen release has no epoch there: nothing to ask
                f"Gaia {label} has epochs between MJD {start:g} and {end:g} only; the asked time range"
                f" (MJD {'' if lo is None else f'{float(lo):g}'}..{'' if hi is None else f'{float(hi):g}'})"
                " is outside it; nothing was asked"
            )
        context.progress(f"cone search of Gaia {label} ({radius:g} arcsec)")
        try:
            response = self._post(
                context, TAP_PATH,
                {"REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": fmt,
                 "QUERY": self.cone_query(release, float(target.ra), float(target.dec), radius)},
                "the TAP cone search", "a CSV table" if fmt == "csv" else "a VOTable",
            )
        except QueryFailed as exc:
            if release != "dr3" and RELEASES[release][0] in exc.message:
                raise QueryFailed(
                    f"{self.name}: the Gaia archive does not serve {label} yet ({exc.message})",
                    hint="use --release dr3",
                ) from None
            raise
        cone_body = response.content
        error = votable_error_text(cone_body)
        if error is not None:
            raise QueryFailed(f"{self.name}: the TAP cone search failed: {context.client.redact(error)}")
        ranked = ranked_sources(read_table(cone_body, "the TAP cone search answer"),
                                float(target.ra), float(target.dec))
        position = f"RA {target.ra:.6f}, Dec {target.dec:+.6f}"
        where = f"{radius:g} arcsec of " + (f"{target.name} ({position})" if target.name else position)
        if not ranked:
            raise NoData(f"no Gaia {label} source within {where}")
        selected = select_sources(ranked, bool(params.get("all_objects")))
        if not selected:
            nearest = ranked[0]
            raise NoData(
                f"no Gaia {label} source with epoch photometry within {where} "
                f"({len(ranked)} source(s) without; nearest {nearest['source_id']} at "
                f"{nearest['sep_arcsec']} arcsec)"
            )
        cone_name = "cone.csv" if fmt == "csv" else "cone.vot"
        raws: list[tuple[str, bytes, str, str | None]] = [
            (cone_name, cone_body, context.client.safe_url(response.request.url),
             response.headers.get("Content-Type"))
        ]
        ids = [s["source_id"] for s in selected]
        batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
        total = 0
        for k, chunk in enumerate(batches, 1):
            context.check_cancelled()
            what = f"epoch photometry of {len(chunk)} source(s)" if len(chunk) > 1 else \
                f"epoch photometry of source {chunk[0]} ({selected[0]['sep_arcsec']} arcsec)"
            if len(batches) > 1:
                what += f" [call {k}/{len(batches)}]"
            context.progress(what)
            answer = self._post(
                context, DATALINK_PATH,
                {"RETRIEVAL_TYPE": "EPOCH_PHOTOMETRY", "ID": ",".join(chunk),
                 "DATA_STRUCTURE": "INDIVIDUAL", "RELEASE": RELEASES[release][1],
                 "FORMAT": fmt, "VALID_DATA": "false", "USE_ZIP_ALWAYS": "true"},
                f"the DataLink request{f' {k}/{len(batches)}' if len(batches) > 1 else ''}",
                "a zip of epoch photometry files",
            )
            body = answer.content
            total += _count_epochs(body)
            ext = "zip" if body[:2] == b"PK" else ("csv" if fmt == "csv" else "vot")
            raws.append((f"epochs-{k:03d}.{ext}", body, context.client.safe_url(answer.request.url),
                         answer.headers.get("Content-Type")))
        if total == 0:
            raise NoData(
                f"Gaia {label} source {ids[0]} (nearest with epoch photometry within {where}) "
                "has no epochs in the DataLink answer"
            )
        product = context.new_product(target, params)
        for name, body, url, ctype in raws:
            product.add_raw(name, body, url=url, content_type=ctype)
        product.notes.update({
            "release": release,
            "format": fmt,
            "radius_arcsec": radius,
            "datalink_calls": len(batches),
            "datalink_batch_size": batch,
            "data_structure": "INDIVIDUAL",
            "epoch_rows": total,
            "objects_in_cone": ranked[:MAX_LISTED],
            "objects_in_cone_count": len(ranked),
            "selected_objects": ids,
        })
        return [product]


def _count_epochs(body: bytes) -> int:
    """Epoch rows in one DataLink answer (QueryFailed when it is not one)."""
    from stdq.processors.gaia import read_epochs

    return len(read_epochs(body))
