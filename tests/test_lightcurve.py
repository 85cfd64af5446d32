"""`stdq lightcurve` against the emulators: one table from the latest light curve of the
four services of SN 2023ixf (row counts per service, no difference/total mixing, sorted
times, provenance), Parquet, --since/--clean, and the summary hand-checked on a
constructed light curve."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stdq import lightcurve, photometry
from stdq.records import Target

SN = "SN 2023ixf"
SERVICES = ("atlas", "panstarrs", "ztf", "ztf-fps")


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def fetched(stdq):
    """SN 2023ixf fetched from the four services (one update)."""
    result = stdq.run("update", SN, "--services", ",".join(SERVICES), "--json")
    assert result.returncode == 0, result.stderr
    items = {item["service"]: item for item in json.loads(result.stdout)}
    assert set(items) == set(SERVICES)
    return items


def run_json(stdq, *args: str, code: int = 0) -> dict:
    result = stdq.run("lightcurve", *args, "--json")
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def test_merged_table_from_four_services(stdq, fetched, tmp_path):
    latest = {s: read_csv(fetched[s]["latest_path"]) for s in SERVICES}
    kinds = {s: {r["flux_kind"] for r in rows} for s, rows in latest.items()}
    assert kinds == {"atlas": {"difference"}, "ztf-fps": {"difference"}, "ztf": {"total"},
                     "panstarrs": {"total"}}
    out = tmp_path / "sn.csv"
    doc = run_json(stdq, SN, "-o", str(out))
    assert doc["flux_kind"] == "difference"  # a service gave difference fluxes
    rows = read_csv(out)
    # row counts per service equal each latest light curve; the total-flux services left aside
    assert doc["services"] == {"atlas": len(latest["atlas"]), "ztf-fps": len(latest["ztf-fps"])}
    assert {r["service"] for r in rows} == {"atlas", "ztf-fps"} and len(rows) == doc["rows"]
    aside = {(e["service"], e["flux_kind"]): e["rows"] for e in doc["left_aside"]}
    assert aside == {("panstarrs", "total"): len(latest["panstarrs"]), ("ztf", "total"): len(latest["ztf"])}
    assert {r["flux_kind"] for r in rows} == {"difference"}
    mjd = [float(r["mjd"]) for r in rows]
    assert mjd == sorted(mjd)
    assert list(rows[0])[: len(photometry.COLUMNS)] == photometry.COLUMNS
    assert list(rows[0])[len(photometry.COLUMNS):] == ["service", "masked"]
    # every row keeps its identity: the same (service, source_row_id) rows as latest.csv
    for service in ("atlas", "ztf-fps"):
        mine = {(r["source_row_id"], r["product_id"], r["band"], r["quality_flag"]) for r in rows
                if r["service"] == service}
        theirs = {(r["source_row_id"], r["product_id"], r["band"], r["quality_flag"]) for r in latest[service]}
        assert mine == theirs

    # total fluxes on request; both keeps all four services, each row saying its kind
    total = run_json(stdq, SN, "--flux-kind", "total")
    assert total["services"] == {"panstarrs": len(latest["panstarrs"]), "ztf": len(latest["ztf"])}
    both = run_json(stdq, SN, "--flux-kind", "both")
    assert both["services"] == {s: len(latest[s]) for s in SERVICES} and both["left_aside"] == []
    only = run_json(stdq, SN, "--services", "ztf-fps")
    assert only["services"] == {"ztf-fps": len(latest["ztf-fps"])}


def test_plot_of_both_kinds_from_the_four_services(stdq, fetched):
    """`stdq plot --flux-kind both`: every row of `lightcurve --flux-kind both` drawn (none
    masked here) in two panels, as PNG, PDF, SVG and one HTML page with no network."""
    pytest.importorskip("plotly")
    assert stdq.run("lightcurve", SN, "--flux-kind", "both", "-o", "all.csv").returncode == 0
    rows = len(read_csv(stdq.tmp / "all.csv"))
    assert rows == sum(int(f["rows_total"]) for f in fetched.values())
    magic = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml", "html": b"<html"}
    for fmt, start in magic.items():
        result = stdq.run("plot", SN, "--flux-kind", "both", "-o", f"all.{fmt}", "--json")
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert (info["view"], info["format"], info["masked"]) == ("flux+mag", fmt, 0)
        assert info["drawn"] + info["not_drawable"] == rows and info["drawn"] > 0
        data = Path(info["path"]).read_bytes()
        assert start in data[:200] and len(data) > 10_000
    page = (stdq.tmp / "all.html").read_text(encoding="utf-8")
    assert "<script src" not in page.replace("'", '"').lower() and '"type":"date"' in page.replace(" ", "")
    default = json.loads(stdq.run("plot", SN, "-o", "diff.png", "--json").stdout)
    assert default["view"] == "flux"  # difference only by default: total fluxes left aside


def test_ecsv_carries_units_and_provenance_and_parquet_reads_back(stdq, fetched, tmp_path):
    from astropy.table import Table

    out = tmp_path / "sn.ecsv"
    assert stdq.run("lightcurve", SN, "-o", str(out)).returncode == 0
    table = Table.read(out, format="ascii.ecsv")
    assert str(table["flux_ujy"].unit) == "uJy" and str(table["mjd"].unit) == "d"
    prov = {p["product_id"]: p for p in table.meta["provenance"]}
    assert {p["service"] for p in prov.values()} == {"atlas", "ztf-fps"}
    products = json.loads(stdq.run("products", "list", SN, "--json").stdout)
    for product in products:
        if product["service"] not in ("atlas", "ztf-fps"):
            assert product["id"] not in prov
            continue
        meta = json.loads((Path(product["path"]) / "product.json").read_text())
        entry = prov[product["id"]]
        assert entry["raw_files"] == [{"name": r["name"], "sha256": r["sha256"]} for r in meta["raw_files"]]
        assert entry["cuts"] == meta["processor"]["cuts"] and entry["query"] == meta["query"]
        assert entry["fetched_at"].endswith("Z")
    pytest.importorskip("pyarrow")
    pq = tmp_path / "sn.parquet"
    assert stdq.run("lightcurve", SN, "-o", str(pq)).returncode == 0
    back = photometry.read_parquet(pq)
    assert len(back) == len(table) and list(back.columns) == list(table.colnames)
    assert back["mjd"].is_monotonic_increasing


def test_since_and_clean_are_counted_as_left_aside(stdq, fetched):
    full = run_json(stdq, SN)
    since = run_json(stdq, SN, "--since", "2023-05-19")
    assert all(e["why"].startswith("before --since") for e in since["left_aside"]
               if "flux_kind" not in e)
    early = sum(e["rows"] for e in since["left_aside"] if e["why"].startswith("before"))
    assert since["rows"] + early == full["rows"] and early > 0
    clean = run_json(stdq, SN, "--clean")
    flagged = sum(e["rows"] for e in clean["left_aside"] if "quality_flag" in e["why"])
    assert flagged == full["summary"]["flagged"] > 0 and clean["summary"]["flagged"] == 0
    assert clean["rows"] + flagged == full["rows"]


def test_no_light_curve_is_exit_5_and_an_unknown_service_exit_2(stdq, fetched):
    from conftest import assert_clean_error

    assert stdq.run("targets", "add", "Empty", "--ra", "10", "--dec", "20").returncode == 0
    result = stdq.run("lightcurve", "Empty")
    assert_clean_error(result, 5)
    assert "Empty has no light curve yet" in result.stderr
    result = stdq.run("lightcurve", "Empty", "--services", "ztf")
    assert_clean_error(result, 5)
    assert "no light curve from ztf" in result.stderr
    assert_clean_error(stdq.run("lightcurve", SN, "--services", "nosuch"), 2)
    assert_clean_error(stdq.run("lightcurve", SN, "--since", "yesterday"), 2)


# -- the summary, hand-checked ---------------------------------------------------------------


def constructed() -> pd.DataFrame:
    """Two bands. ztfr: limits at 100 (19.5) and 102 (19.8), detections at 104 (18.0), 106
    (17.2 peak), 110 (17.9), a masked brighter point at 107 (15.0), a flagged one at 108
    (16.0), a later limit at 112. ztfg: only limits."""
    r = [
        (100.0, False, np.nan, 19.5, 0, False), (102.0, False, np.nan, 19.8, 0, False),
        (104.0, True, 18.0, np.nan, 0, False), (106.0, True, 17.2, np.nan, 0, False),
        (107.0, True, 15.0, np.nan, 0, True), (108.0, True, 16.0, np.nan, 4, False),
        (110.0, True, 17.9, np.nan, 0, False), (112.0, False, np.nan, 20.1, 0, False),
    ]
    rows = [dict(mjd=m, band="ztfr", survey="ZTF", detected=d, magnitude=mag, magnitude_error=0.05 if d else np.nan,
                 limit=lim, quality_flag=q, masked=mk, flux_ujy=1.0, flux_err_ujy=0.1, flux_kind="difference",
                 service="ztf-fps", source_row_id=f"r{m}") for m, d, mag, lim, q, mk in r]
    rows += [dict(mjd=m, band="ztfg", survey="ZTF", detected=False, magnitude=np.nan, magnitude_error=np.nan,
                  limit=lim, quality_flag=0, masked=False, flux_ujy=0.1, flux_err_ujy=0.1, flux_kind="difference",
                  service="ztf-fps", source_row_id=f"g{m}") for m, lim in ((101.0, 20.0), (103.0, 20.5))]
    return photometry.normalize(pd.DataFrame(rows))


def test_summary_values_hand_checked():
    summary = lightcurve.summarize(constructed(), target=Target(ra=1.0, dec=2.0, name="T"),
                                   flux_kind="difference")
    r = summary["bands"]["ztfr"]
    assert r["points"] == 8 and r["detections"] == 3  # the masked and flagged ones give no detection
    assert r["first_detection"] == {"mjd": 104.0, "magnitude": 18.0}
    assert r["last_detection"] == {"mjd": 110.0, "magnitude": 17.9}
    assert r["last_nondetection_before_first"] == {"mjd": 102.0, "limit": 19.8}
    assert r["peak"] == {"magnitude": 17.2, "magnitude_error": 0.05, "mjd": 106.0}
    g = summary["bands"]["ztfg"]
    assert g["detections"] == 0 and g["first_detection"] is None and g["peak"] is None
    assert g["last_limit"] == {"mjd": 103.0, "limit": 20.5}
    assert summary["surveys"] == ["ZTF"] and summary["rows"] == 10
    assert summary["mjd_first"] == 100.0 and summary["mjd_last"] == 112.0 and summary["days"] == 12.0
    assert summary["masked"] == 1 and summary["flagged"] == 1
    assert summary["target"]["name"] == "T"


def test_summary_on_the_command_line(stdq, fetched):
    result = stdq.run("lightcurve", SN, "--summary")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("target\tSN 2023ixf")
    header = lines.index(next(line for line in lines if line.startswith("band\t")))
    bands = {line.split("\t")[0] for line in lines[header + 1:]}
    doc = run_json(stdq, SN)
    assert bands == set(doc["summary"]["bands"]) and "atlaso" in bands
