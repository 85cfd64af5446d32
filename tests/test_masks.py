"""`stdq mask` / `unmask`: masks stored by (target, service, source_row_id), shown in
latest.csv's and lightcurve's `masked` column, left out by --clean, kept when the same
row comes back in a later update; ids ambiguous across services."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from conftest import assert_clean_error
from stdq import masks
from stdq.errors import BadInput
from stdq.testing import irsa

SN = "SN 2023ixf"


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def add_night(monkeypatch, mjd: float) -> None:
    """The emulated sky gains one epoch of the target's zg and zr objects at MJD."""
    objects = list(irsa.SKY_OBJECTS)
    for index, mag in zip((0, 1), (12.70, 12.60), strict=True):
        obj = objects[index]
        expid = obj.epochs[-1][0] + 50_000
        objects[index] = dataclasses.replace(obj, epochs=(*obj.epochs, (expid, mjd, mag, 0.012, 0)))
    monkeypatch.setattr(irsa, "SKY_OBJECTS", objects)


def update(stdq, *args: str) -> dict:
    result = stdq.run("update", SN, "--services", "ztf", *args, "--json")
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)
    return item


def test_a_masked_row_that_comes_back_in_a_later_update_stays_masked(stdq, monkeypatch):
    first = update(stdq)
    rows = read_csv(first["latest_path"])
    assert {r["masked"] for r in rows} == {"False"}
    newest = max(rows, key=lambda r: float(r["mjd"]))  # inside the next fetch's overlap
    row_id = newest["source_row_id"]
    result = stdq.run("mask", SN, row_id, "--reason", "cosmic ray", "--json")
    assert result.returncode == 0, result.stderr
    (made,) = json.loads(result.stdout)
    assert made["service"] == "ztf" and made["source_row_id"] == row_id and made["reason"] == "cosmic ray"
    masked = {r["source_row_id"]: r["masked"] for r in read_csv(first["latest_path"])}
    assert masked[row_id] == "True" and list(masked.values()).count("True") == 1

    add_night(monkeypatch, 60105.2)
    second = update(stdq)
    assert second["new_rows"] == 2
    again = {r["source_row_id"]: r for r in read_csv(second["latest_path"])}
    # the row came back in the new product (newest wins) and is still masked
    new_product = json.loads(stdq.run("products", "list", SN, "--json").stdout)[0]
    came_back = read_csv(Path(new_product["path"]) / "photometry.csv")
    assert row_id in {r["source_row_id"] for r in came_back}
    assert again[row_id]["product_id"] == str(new_product["id"])
    assert again[row_id]["masked"] == "True"
    assert [r["masked"] for r in again.values()].count("True") == 1

    lc = json.loads(stdq.run("lightcurve", SN, "--json").stdout)
    assert lc["summary"]["masked"] == 1
    out = stdq.tmp / "clean.csv"
    clean = json.loads(stdq.run("lightcurve", SN, "--clean", "-o", str(out), "--json").stdout)
    assert row_id not in {r["source_row_id"] for r in read_csv(out)}
    assert {"service": "ztf", "rows": 1, "why": "masked (--clean)"} in clean["left_aside"]

    listed = json.loads(stdq.run("mask", SN, "--list", "--json").stdout)
    assert [(m["service"], m["source_row_id"], m["reason"]) for m in listed] == [("ztf", row_id, "cosmic ray")]
    assert listed[0]["created_at"].endswith("Z") and isinstance(listed[0]["created_at_unix"], float)

    assert stdq.run("unmask", SN, f"ztf:{row_id}").returncode == 0
    assert json.loads(stdq.run("mask", SN, "--list", "--json").stdout) == []
    assert "True" not in {r["masked"] for r in read_csv(second["latest_path"])}
    # unmasking a row that is not masked changes nothing: exit 2
    assert_clean_error(stdq.run("unmask", SN, row_id), 2)


def test_unknown_ids_and_bad_arguments_are_exit_2(stdq):
    update(stdq)
    result = stdq.run("mask", SN, "nope")
    assert_clean_error(result, 2)
    assert "no row 'nope' in the light curves of SN 2023ixf" in result.stderr
    assert_clean_error(stdq.run("mask", SN), 2)
    assert_clean_error(stdq.run("mask", SN, "x", "--list"), 2)
    assert_clean_error(stdq.run("mask", SN, "atlas:123"), 2)  # no atlas light curve


def test_ids_ambiguous_across_services_need_the_service():
    rows = {"ztf": {"123", "633207400004:2384756"}, "ztf-fps": {"123", "9"}}
    with pytest.raises(BadInput, match="ztf and ztf-fps: say which"):
        masks.resolve_ids(["123"], "T", rows)
    assert masks.resolve_ids(["ztf-fps:123"], "T", rows) == [("ztf-fps", "123")]
    assert masks.resolve_ids(["123"], "T", rows, service="ztf") == [("ztf", "123")]
    # a ZTF id holds a colon itself: its head is no service name
    assert masks.resolve_ids(["633207400004:2384756", "9"], "T", rows) == [
        ("ztf", "633207400004:2384756"), ("ztf-fps", "9")]
    assert masks.resolve_ids(["ztf:633207400004:2384756"], "T", rows) == [("ztf", "633207400004:2384756")]
