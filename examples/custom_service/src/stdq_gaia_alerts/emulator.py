"""An emulator of the Gaia Science Alerts pages, for this package's own tests.

Mount it on stdq's test server and point the service at it::

    from stdq.testing.fakeserver import FakeServer, settings_toml
    server = FakeServer([GaiaAlertsEmulator()]).start()
    settings_toml(server)   # has [services.gaia-alerts] url = "http://127.0.0.1:PORT/gsaweb/alerts"

It answers ``GET {prefix}/alerts.csv`` and ``GET {prefix}/alert/<name>/lightcurve.csv``
(with or without a trailing slash). Formats, from public clients of the real
service (no real answer is stored in this repository):

- ``alerts.csv``: header ``#Name, Date, RaDeg, DecDeg, AlertMag, HistoricMag,
  HistoricStdDev, Class, Published, Comment, TNSid``, then rows such as
  ``Gaia21eeo,2021-09-07 02:07:38,111.55315,-39.30836,18.70,20.22,0.64,"unknown",2021-09-09 08:19:08,"~2 mag brightening in a faint Gaia source",AT2021yjn``
  — the sample in the tests of BHTOM-Team/bhtom2 (bhtom2/harvesters/gaia_alerts.py
  reads ``#Name`` and `` RaDeg`` with its leading space); SkyPortal
  (skyportal/handlers/api/catalog_services.py) reads ``#Name``, ``RaDeg``,
  ``DecDeg``, ``Date``; astrocats' Gaia import and the TOM Toolkit read it too.
- ``lightcurve.csv``: the alert's name, a header line, then ``date,JD,mag`` rows,
  the magnitude sometimes ``untrusted`` or ``null``. TOMToolkit/tom_base
  tom_alerts/brokers/gaia.py skips the first two lines, splits on commas and
  drops ``untrusted``/``null``; its tests (tom_alerts/tests/brokers/test_gaia.py)
  use ``Gaia20bph\\n#Date,JD,averagemag.\\n2014-08-01 00:05:24,2456870.504,19.48``;
  SkyPortal reads the columns ``JD(TCB)`` and ``averagemag``; the Date column is
  the JD written as a calendar date (a public client's test has
  ``2014-08-02 20:49:51,2456872.36795``).

Guesses (not documented anywhere we found): which header variant the live
service sends today (this emulator sends ``#Date,JD(TCB),averagemag`` and, for
one alert, the older ``#Date,JD,averagemag.``); the Content-Type of both files
(``text/csv``); a 404 with a short HTML page for an unknown alert; five decimals
for positions and magnitudes as in the samples.

The alerts are synthetic, deterministic, and placed at the targets of
:mod:`stdq.testing.sky`:

- ``Gaia23emu``: 0.5 arcsec east of SN 2023ixf; 7 epochs, one ``untrusted`` and
  one ``null`` (5 usable);
- ``Gaia23emv``: 7 arcsec north of SN 2023ixf (a neighbour, listed first, so
  "nearest" and "first in the file" differ);
- ``Gaia19emu``: 1.2 arcsec north of M31's nucleus, the older header, 3 epochs;
- ``Gaia20emu``: at NGC 3642, every epoch ``untrusted`` or ``null`` (no usable row);
- nothing near "Empty Field".
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from urllib.parse import unquote

from stdq.testing import sky
from stdq.testing.fakeserver import Emulator, Request, Response

INDEX_HEADER = (
    "#Name, Date, RaDeg, DecDeg, AlertMag, HistoricMag, HistoricStdDev, Class, Published, Comment, TNSid"
)
HEADER_CURRENT = "#Date,JD(TCB),averagemag"
HEADER_OLD = "#Date,JD,averagemag."
NOT_FOUND_PAGE = "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n"


@dataclass(frozen=True)
class EmulatedAlert:
    """One synthetic alert: where it is, its index fields, its light curve."""

    name: str
    target: str
    east_arcsec: float
    north_arcsec: float
    date: str
    alert_mag: str
    historic_mag: str
    historic_std: str
    classification: str
    published: str
    tns: str
    epochs: tuple[tuple[str, str], ...]  # (JD text, averagemag text)
    header: str = HEADER_CURRENT

    @property
    def position(self) -> tuple[float, float]:
        """RA, Dec as the index gives them: five decimals."""
        obj = sky.find(self.target)
        assert obj is not None, self.target
        ra, dec = sky.offset(obj.ra, obj.dec, self.east_arcsec, self.north_arcsec)
        return round(ra, 5), round(dec, 5)


ALERTS: tuple[EmulatedAlert, ...] = (
    EmulatedAlert(
        "Gaia23emv", "SN 2023ixf", 0.0, 7.0, "2023-06-02 11:20:31", "17.90", "18.05", "0.09",
        "unknown", "2023-06-04 09:12:40", "",
        (("2460097.97258", "17.90"), ("2460098.04645", "17.93")),
    ),
    EmulatedAlert(
        "Gaia23emu", "SN 2023ixf", 0.5, 0.0, "2023-05-20 02:49:08", "13.52", "20.31", "0.35",
        "SN II", "2023-05-21 10:02:11", "AT2023ixf",
        (
            ("2460084.61745", "13.52"),
            ("2460084.69132", "13.49"),
            ("2460095.22010", "untrusted"),
            ("2460110.84433", "14.02"),
            ("2460110.91820", "null"),
            ("2460140.55001", "15.10"),
            ("2460170.13370", "16.31"),
        ),
    ),
    EmulatedAlert(
        "Gaia20emu", "NGC 3642", 0.0, 0.0, "2020-03-11 17:03:52", "15.80", "16.95", "0.05",
        "AGN", "2020-03-13 08:45:00", "",
        (("2458920.21101", "untrusted"), ("2458920.28488", "null"), ("2458951.66320", "untrusted")),
    ),
    EmulatedAlert(
        "Gaia19emu", "M31", 0.0, 1.2, "2019-08-14 04:21:10", "16.02", "16.70", "0.12",
        "unknown", "2019-08-15 12:00:05", "",
        (("2458709.68137", "16.02"), ("2458709.75524", "16.05"), ("2458745.12311", "16.61")),
        header=HEADER_OLD,
    ),
)


def jd_to_date(jd_text: str) -> str:
    """The Date column: the JD written as ``YYYY-MM-DD HH:MM:SS`` (same time scale)."""
    seconds = round((float(jd_text) - 2440587.5) * 86400.0)
    return (_dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def index_csv(alerts: tuple[EmulatedAlert, ...] = ALERTS) -> str:
    lines = [INDEX_HEADER]
    for a in alerts:
        ra, dec = a.position
        comment = f"Synthetic alert near {a.target} (stdq emulator)"
        lines.append(
            f'{a.name},{a.date},{ra:.5f},{dec:.5f},{a.alert_mag},{a.historic_mag},{a.historic_std},'
            f'"{a.classification}",{a.published},"{comment}",{a.tns}'
        )
    return "\n".join(lines) + "\n"


def lightcurve_csv(alert: EmulatedAlert) -> str:
    lines = [alert.name, alert.header]
    lines += [f"{jd_to_date(jd)},{jd},{mag}" for jd, mag in alert.epochs]
    return "\n".join(lines) + "\n"


class GaiaAlertsEmulator(Emulator):
    """The two public files of the Gaia Science Alerts pages (see the module docstring)."""

    name = "gaia-alerts"
    prefix = "/gsaweb/alerts"
    service_name = "gaia-alerts"

    _LIGHTCURVE = re.compile(r"^/alert/([^/]+)/lightcurve\.csv/?$")

    def __init__(self, alerts: tuple[EmulatedAlert, ...] = ALERTS) -> None:
        super().__init__()
        self.alerts = {a.name: a for a in alerts}
        self._index = index_csv(alerts)

    def handle(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.text("Method Not Allowed", 405)
        if request.path in ("/alerts.csv", "/alerts.csv/"):
            return Response.text(self._index, content_type="text/csv; charset=utf-8")
        match = self._LIGHTCURVE.match(request.path)
        if match:
            alert = self.alerts.get(unquote(match.group(1)))
            if alert is not None:
                return Response.text(lightcurve_csv(alert), content_type="text/csv; charset=utf-8")
        return Response.text(NOT_FOUND_PAGE, 404, content_type="text/html; charset=utf-8")
