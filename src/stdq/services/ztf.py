"""ZTF data-release light curves from IRSA's ``nph_light_curves`` API (fast, synchronous).

One GET per query (docs/wire-formats.md 3.1): ``POS=CIRCLE ra dec r`` with r in
degrees (the API allows (0, 0.1667] degrees, so ``--radius`` is at most 600
arcsec, checked before any request), ``BANDNAME`` from ``--bands``, ``TIME=mjd1
mjd2`` from the time options (an open bound is sent as ``-Inf``/``Inf``, which
the API documents; whether IRSA accepts a one-sided range is inferred from that,
not verified), ``BAD_CATFLAGS_MASK``, ``COLLECTION`` from ``--release`` (IRSA's
latest release when absent) and ``FORMAT=CSV``.

The answer is checked before a product is created: a 400 or a CSV without the
documented columns fail the query (exit 1) and leave no product behind; an HTML
page instead of CSV or an empty body is a temporary failure (exit 75, quoting the
page's first line: stdq.http.expect_format); a CSV with only its header line --
IRSA's own way of saying "nothing there" -- means no data (exit 5).
A valid answer is kept byte for byte as ``raw/lightcurve.csv``.
"""

from __future__ import annotations

import re
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

RAW_NAME = "lightcurve.csv"
MAX_RADIUS_ARCSEC = 600.0  # the API's 0.1667 degree (600.12 arcsec)
# Columns the processor cannot do without (the API documents 24; all are expected).
REQUIRED_COLUMNS = frozenset(
    {"oid", "expid", "mjd", "mag", "magerr", "catflags", "filtercode", "ra", "dec",
     "field", "ccdid", "qid", "limitmag"}
)
_RELEASE = re.compile(r"ztf_dr\d+")


class ZtfLightCurveForm(QueryForm):
    """Cone, bands, time range, catflags mask, data release, all objects."""

    max_radius_arcsec: ClassVar[float | None] = MAX_RADIUS_ARCSEC
    fields = (
        radius_field(1.5, MAX_RADIUS_ARCSEC),
        Field("bands", "choices", choices=("g", "r", "i"),
              help="ZTF filters to fetch, a comma list of g,r,i (default: all)", metavar="g,r,i"),
        *TIME_FIELDS,
        Field("bad_catflags_mask", "int", default=32768,
              help="IRSA drops epochs whose catflags share a bit with this mask (0 keeps all)",
              metavar="MASK"),
        Field("release", "str",
              help="data release, e.g. ztf_dr23 (default: IRSA's latest; IRSA serves the 5 most recent)",
              metavar="ztf_drN"),
        ALL_OBJECTS_FIELD,
    )

    def clean(self) -> dict[str, Any]:
        out = super().clean()
        release = out.get("release")
        if release is not None:
            release = release.strip().lower()
            if not _RELEASE.fullmatch(release):
                raise BadInput(f"--release: {out['release']!r} is not a ZTF data release (e.g. ztf_dr23)")
            out["release"] = release
        mask = out.get("bad_catflags_mask")
        if mask is not None and not (0 <= mask <= 65535):
            raise BadInput(f"--bad-catflags-mask must be between 0 and 65535 (catflags has 16 bits), not {mask}")
        return out


def _number(value: float) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".")


def request_params(target: Target, params: dict[str, Any]) -> list[tuple[str, str]]:
    """The query-string parameters of the IRSA request for TARGET and cleaned PARAMS."""
    radius_deg = float(params.get("radius", 1.5)) / 3600.0
    out = [("POS", f"CIRCLE {_number(target.ra)} {_number(target.dec)} {_number(radius_deg)}")]
    if params.get("bands"):
        out.append(("BANDNAME", str(params["bands"])))
    lo, hi = params.get("mjd_min"), params.get("mjd_max")
    if lo is not None or hi is not None:
        out.append(("TIME", f"{_number(lo) if lo is not None else '-Inf'} "
                            f"{_number(hi) if hi is not None else 'Inf'}"))
    if params.get("bad_catflags_mask") is not None:
        out.append(("BAD_CATFLAGS_MASK", str(int(params["bad_catflags_mask"]))))
    if params.get("release"):
        out.append(("COLLECTION", str(params["release"])))
    out.append(("FORMAT", "CSV"))
    return out


def page_text(body: bytes, limit: int = 200) -> str:
    """A short one-line text of an answer: the HTML title or its text without tags."""
    text = body.decode("utf-8", "replace")
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title and title.group(1).strip():
        text = title.group(1)
    else:
        text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.IGNORECASE | re.DOTALL)
        text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


class ZtfLightCurveService(SingleTargetDataService):
    """ZTF DR light curves (catalogue PSF photometry on the science images) from IRSA."""

    name = "ztf"
    title = "ZTF light curves from IRSA (data releases)"
    info_url = "https://irsa.ipac.caltech.edu/docs/program_interface/ztf_lightcurve_api.html"
    data_product_type = "ztf_photometry"
    supports_async = False
    form = ZtfLightCurveForm
    default_url = "https://irsa.ipac.caltech.edu/cgi-bin/ZTF/nph_light_curves"
    settings_defaults: ClassVar[dict[str, Any]] = {}
    settings_help: ClassVar[dict[str, str]] = {"url": "the IRSA ZTF light-curve API"}
    secret_fields: ClassVar[tuple[str, ...]] = ()
    version = "1"

    def probe(self, client: Client) -> str:
        """stdq doctor: a one-day, 1.5-arcsecond light-curve query (CSV, maybe no rows)."""
        from stdq.http import expect_format
        from stdq.records import Target
        from stdq.services.base import probe_status

        where = Target(ra=210.910674, dec=54.31165)  # SN 2023ixf, in the ZTF footprint
        params = request_params(where, {"radius": 1.5, "mjd_min": 60083.0, "mjd_max": 60084.0})
        response = client.get(self.url, params=params)
        probe_status(response, self.name, client.secrets)
        expect_format(response, self.name, "a small light-curve query", "CSV")
        lines = [line for line in response.text.splitlines() if line.strip()]
        columns = {c.strip() for c in lines[0].split(",")}
        missing = sorted({"oid", "mjd", "mag", "magerr", "filtercode"} - columns)
        if missing:
            raise QueryFailed(f"{self.name}: the light-curve CSV lacks the columns {', '.join(missing)}")
        from stdq.records import counted

        return f"HTTP {response.status_code}, light-curve CSV ({counted(len(lines) - 1, 'row')})"

    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        context.progress("asking IRSA for ZTF light curves")
        client = context.client
        response = client.get(self.url, params=request_params(target, params))
        body = self.check_answer(response, context)
        lines = [line for line in body.decode("utf-8", "replace").splitlines() if line.strip()]
        if len(lines) < 2:
            raise NoData(
                f"ztf: IRSA has no ZTF light-curve rows within {params.get('radius', 1.5):g} arcsec"
                " of the target (the answer is the CSV header alone)"
            )
        product = context.new_product(target, params)
        product.add_raw(
            RAW_NAME,
            body,
            url=client.safe_url(response.url),
            content_type=response.headers.get("Content-Type"),
        )
        from stdq.records import counted

        context.progress(f"IRSA answered with {counted(len(lines) - 1, 'row')}")
        return [product]

    def check_answer(self, response: httpx.Response, context: QueryContext) -> bytes:
        """The CSV body of a valid answer; QueryFailed/ConfigError otherwise (no product made)."""
        from stdq.http import check_response, expect_format

        status = response.status_code
        body = response.content
        if status == 400:
            detail = page_text(body) or "no explanation given"
            raise QueryFailed(f"ztf: IRSA refused the query (HTTP 400): {detail}")
        check_response(response, self.name)
        expect_format(response, self.name, "the IRSA light-curve query", "CSV")
        first = body.decode("utf-8", "replace").lstrip().splitlines()[0]
        columns = {c.strip() for c in first.split(",")}
        missing = REQUIRED_COLUMNS - columns
        if missing:
            raise QueryFailed(
                f"ztf: IRSA's answer is not the expected CSV (missing columns: "
                f"{', '.join(sorted(missing))}; first line: {first[:80]!r})"
            )
        return body
