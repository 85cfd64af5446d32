"""The Gaia Science Alerts light-curve service (subclass 1 and 2 of 3: service and query form).

How it queries (the public pages of https://gsaweb.ast.cam.ac.uk/alerts; formats
and the sources they were taken from: README.md and ``emulator.py``):

1. ``GET {url}/alerts.csv`` — the index of every alert (name, date, RaDeg,
   DecDeg, ...); the alert nearest the target within ``--radius`` is taken.
2. ``GET {url}/alert/<name>/lightcurve.csv`` — that alert's G light curve.

Both answers are kept byte for byte in the product (``raw/alerts.csv``,
``raw/lightcurve.csv``); the processor (``processor.py``) turns the light curve
into stdq's normalized table. The service is public: no credentials.

This module is imported by ``stdq query --help``: it imports nothing heavy at
module level (the CSV parsing is stdlib).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from stdq.errors import NoData, QueryFailed
from stdq.services.base import TIME_FIELDS, QueryForm, SingleTargetDataService, radius_field

if TYPE_CHECKING:
    from stdq.services.base import QueryContext
    from stdq.store import DataProduct
    from stdq.targets import Target

DEFAULT_URL = "https://gsaweb.ast.cam.ac.uk/alerts"
DEFAULT_RADIUS_ARCSEC = 2.0
MAX_RADIUS_ARCSEC = 60.0
INDEX_NAME = "alerts.csv"
LIGHTCURVE_NAME = "lightcurve.csv"


class GaiaAlertsForm(QueryForm):
    """The options of ``stdq query gaia-alerts``: a match radius and a time range.

    The service has no server-side time filter: ``--mjd-min/--mjd-max`` (or the
    dates) are applied by the processor, which counts the rows it leaves out.
    """

    fields = (radius_field(DEFAULT_RADIUS_ARCSEC, MAX_RADIUS_ARCSEC), *TIME_FIELDS)
    max_radius_arcsec = MAX_RADIUS_ARCSEC


@dataclass(frozen=True)
class Alert:
    """One row of the alerts index."""

    name: str
    ra: float
    dec: float
    date: str = ""
    alert_mag: str = ""
    historic_mag: str = ""
    historic_std: str = ""
    classification: str = ""
    published: str = ""
    comment: str = ""
    tns: str = ""


def separation_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Angular separation in arcsec (haversine, degrees in; stdlib only)."""
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    s = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((r2 - r1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(s)))) * 3600.0


def parse_alerts_index(text: str) -> tuple[list[Alert], int]:
    """The alerts of an ``alerts.csv`` answer, and how many rows could not be read.

    The header is ``#Name, Date, RaDeg, DecDeg, AlertMag, HistoricMag,
    HistoricStdDev, Class, Published, Comment, TNSid`` (spaces after the commas,
    "#" before Name); rows are plain CSV with the text fields quoted. Columns are
    found by name, so added columns do no harm. ValueError when the text is not
    such a file (an HTML error page, an empty body, a changed header).
    """
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    header = next(reader, None)
    if not header:
        raise ValueError("the alerts index is empty")
    names = [h.strip().lstrip("#").strip() for h in header]
    column = {n: i for i, n in enumerate(names)}
    missing = [n for n in ("Name", "RaDeg", "DecDeg") if n not in column]
    if missing:
        shown = ", ".join(names[:6])[:120]
        raise ValueError(f"the alerts index has no {', '.join(missing)} column (header: {shown})")

    def field(row: list[str], key: str) -> str:
        i = column.get(key)
        return row[i].strip() if i is not None and i < len(row) else ""

    alerts: list[Alert] = []
    bad = 0
    for row in reader:
        if not row or not any(cell.strip() for cell in row):
            continue
        try:
            ra, dec = float(field(row, "RaDeg")), float(field(row, "DecDeg"))
            if not (0 <= ra < 360 and -90 <= dec <= 90 and field(row, "Name")):
                raise ValueError
        except ValueError:
            bad += 1
            continue
        alerts.append(
            Alert(
                name=field(row, "Name"),
                ra=ra,
                dec=dec,
                date=field(row, "Date"),
                alert_mag=field(row, "AlertMag"),
                historic_mag=field(row, "HistoricMag"),
                historic_std=field(row, "HistoricStdDev"),
                classification=field(row, "Class"),
                published=field(row, "Published"),
                comment=field(row, "Comment"),
                tns=field(row, "TNSid"),
            )
        )
    if not alerts:
        raise ValueError("the alerts index lists no alert with a usable position")
    return alerts, bad


def nearest_alert(alerts: list[Alert], ra: float, dec: float, radius: float) -> tuple[Alert, float] | None:
    """The alert nearest (RA, DEC) within RADIUS arcsec, with its separation; None if none."""
    best: tuple[Alert, float] | None = None
    for alert in alerts:
        if abs(alert.dec - dec) * 3600.0 > radius:
            continue  # cheap cut before the trigonometry
        sep = separation_arcsec(ra, dec, alert.ra, alert.dec)
        if sep <= radius and (best is None or sep < best[1]):
            best = (alert, sep)
    return best


class GaiaAlertsService(SingleTargetDataService):
    """Gaia Science Alerts: the G light curve of the alert nearest the target.

    Registered through the ``stdq.services`` entry point of this package (or a
    ``[services.NAME] class = "stdq_gaia_alerts.service:GaiaAlertsService"``
    table); its processor is registered for ``gaia_alerts_photometry``.
    """

    name = "gaia-alerts"
    title = "Gaia Science Alerts light curves (Gaia G)"
    info_url = "https://gsaweb.ast.cam.ac.uk/alerts/about"
    data_product_type = "gaia_alerts_photometry"
    supports_async = False  # two short GETs: run in the calling process
    form = GaiaAlertsForm
    default_url = DEFAULT_URL
    # its own keys are transport keys (url only); the conversion keys (ab_offset,
    # error_model) are declared by the processor, which uses them
    settings_help = {
        "url": "base URL of the alerts pages; {url}/alerts.csv and {url}/alert/NAME/lightcurve.csv",
    }
    secret_fields = ()  # a public service
    version = "1"

    def query_service(
        self, target: Target, params: dict[str, Any], context: QueryContext
    ) -> list[DataProduct]:
        from stdq.http import check_response, redact_url

        client = context.client
        radius = float(params.get("radius", DEFAULT_RADIUS_ARCSEC))

        index_url = f"{self.url}/{INDEX_NAME}"
        context.progress("reading the alerts index")
        index = client.get(index_url)
        check_response(index, self.name)
        try:
            alerts, unreadable = parse_alerts_index(index.text)
        except ValueError as exc:
            raise QueryFailed(f"{self.name}: {exc}", hint=f"the index was read from {index_url}") from None
        match = nearest_alert(alerts, target.ra, target.dec, radius)
        if match is None:
            raise NoData(f"no Gaia alert within {radius:g} arcsec of the target ({len(alerts)} alerts in the index)")
        alert, sep = match
        context.check_cancelled()

        product = context.new_product(target, params)
        product.add_raw(
            INDEX_NAME, index.content, url=redact_url(index_url),
            content_type=index.headers.get("Content-Type"),
        )
        lc_url = f"{self.url}/alert/{quote(alert.name, safe='')}/{LIGHTCURVE_NAME}"
        context.progress(f"reading the light curve of {alert.name}")
        answer = client.get(lc_url)
        if answer.status_code == 404:
            raise QueryFailed(
                f"{self.name}: the index lists {alert.name}, but its light curve is missing (HTTP 404)"
            )
        check_response(answer, self.name)
        product.add_raw(
            LIGHTCURVE_NAME, answer.content, url=redact_url(lc_url),
            content_type=answer.headers.get("Content-Type"),
        )
        product.notes["alert"] = {**asdict(alert), "sep_arcsec": round(sep, 4)}
        product.notes["index_rows"] = len(alerts)
        if unreadable:
            product.notes["index_rows_unreadable"] = unreadable
        context.event("alert", f"{alert.name} at {sep:.2f} arcsec from the target")
        return [product]
