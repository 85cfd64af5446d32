"""`stdq targets import` (CSV, TNS export, ECSV, plain names; bad lines with their numbers,
all or nothing unless --skip-bad), lists (`targets list --list`, `targets rm --list`)."""

from __future__ import annotations

import json

import pytest

from stdq.watchlist import parse

TNS_EXPORT = (
    '"ID","Name","RA","DEC","Obj. Type","Redshift","Host Name","Discovery Date (UT)"\n'
    '"130000","SN 2023ixf","14:03:38.562","+54:18:41.94","SN II","0.000804","M101","2023-05-19 17:27:15"\n'
    '"140000","AT 2024abc","25:00:00.000","+10:00:00.00","","","","2024-01-01 00:00:00"\n'
    '"140001","AT 2024xyz","10:00:00.000","-05:30:00.00","","","","2024-02-01 00:00:00"\n'
)

ECSV = """# %ECSV 1.0
# ---
# datatype:
# - {name: name, datatype: string}
# - {name: ra, unit: deg, datatype: float64}
# - {name: dec, unit: deg, datatype: float64}
# schema: astropy-2.0
name ra dec
"Star A" 10.5 20.25
"Star B" 11.0 -95.0
"Star C" 12.0 22.0
"""

NAMES = """# my watchlist
SN 2023ixf

NGC 3642
No Such Object 12345
"""


def imported(stdq, text: str, *args: str, code: int = 0) -> tuple[dict, str]:
    result = stdq.run("targets", "import", "-", *args, "--json", input=text)
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout), result.stderr


def names(stdq, *args: str) -> list[str]:
    result = stdq.run("targets", "list", *args, "--json")
    assert result.returncode == 0, result.stderr
    return [row["name"] for row in json.loads(result.stdout)]


def test_formats_are_told_apart():
    assert parse(TNS_EXPORT)[2] == "csv"
    assert parse(ECSV)[2] == "ecsv"
    assert parse(NAMES)[2] == "text"
    entries, bad, fmt = parse("name\nSN 2023ixf\n")
    assert fmt == "text" and [e.name for e in entries] == ["SN 2023ixf"]
    entries, bad, fmt = parse("ra,dec\n10,20\n1,2,3\n")
    assert fmt == "csv" and [(e.line, e.name, e.ra) for e in entries] == [(2, None, "10")]
    assert [(b.line, b.reason) for b in bad] == [(3, "3 fields where the header has 2")]


def test_tns_export_bad_line_numbered_and_nothing_imported(stdq):
    report, stderr = imported(stdq, TNS_EXPORT, "--list", "tns", code=2)
    assert [b["line"] for b in report["bad"]] == [3]
    assert "outside [0, 24) hours" in report["bad"][0]["reason"]
    assert "line 3:" in stderr and "nothing imported" in stderr
    assert report["done"] is False and report["imported"] == []
    assert names(stdq) == []
    # --skip-bad: the others, sexagesimal positions as given, on the list
    report, _ = imported(stdq, TNS_EXPORT, "--list", "tns", "--skip-bad")
    assert report["done"] is True and report["format"] == "csv"
    assert [r["name"] for r in report["imported"]] == ["SN 2023ixf", "AT 2024xyz"]
    xyz = report["imported"][1]
    assert xyz["ra"] == pytest.approx(150.0) and xyz["dec"] == pytest.approx(-5.5)
    assert names(stdq, "--list", "tns") == ["AT 2024xyz", "SN 2023ixf"]


def test_ecsv_bad_value_line_number(stdq):
    report, _ = imported(stdq, ECSV, code=2)
    assert [(b["line"], b["text"]) for b in report["bad"]] == [(10, "Star B,11.0,-95.0")]
    assert names(stdq) == []
    report, _ = imported(stdq, ECSV, "--skip-bad", "--list", "ecsv")
    assert report["format"] == "ecsv"
    assert names(stdq, "--list", "ecsv") == ["Star A", "Star C"]


def test_plain_names_are_resolved_and_unknown_ones_are_bad_lines(stdq):
    report, stderr = imported(stdq, NAMES, "--list", "n", code=2)
    assert [b["line"] for b in report["bad"]] == [5]
    assert "No Such Object" in report["bad"][0]["text"]
    assert names(stdq) == []
    report, _ = imported(stdq, NAMES, "--list", "n", "--skip-bad")
    assert [(r["name"], r["resolved"]) for r in report["imported"]] == [("SN 2023ixf", True), ("NGC 3642", True)]
    rows = json.loads(stdq.run("targets", "list", "--list", "n", "--json").stdout)
    assert {r["name"]: r["source"] for r in rows} == {"NGC 3642": "sesame", "SN 2023ixf": "sesame"}
    # resolved once: the second import asks no resolver (local table first)
    before = len(stdq.server.log_of(emulator="sesame"))
    imported(stdq, "SN 2023ixf\nNGC 3642\n", "--list", "other")
    assert len(stdq.server.log_of(emulator="sesame")) == before


def test_a_target_on_several_lists_and_rm_from_one(stdq):
    imported(stdq, "name,ra,dec\nA,10,20\nB,11,21\n", "--list", "one")
    imported(stdq, "name,ra,dec\nA,10,20\n", "--list", "two")
    rows = {r["name"]: r["lists"] for r in json.loads(stdq.run("targets", "list", "--json").stdout)}
    assert rows == {"A": ["one", "two"], "B": ["one"]}
    result = stdq.run("targets", "rm", "A", "--list", "one", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"removed": "A", "list": "one"}
    assert names(stdq, "--list", "one") == ["B"]
    assert names(stdq, "--list", "two") == ["A"] and "A" in names(stdq)  # the target stays
    assert stdq.run("targets", "rm", "A", "--list", "one").returncode == 2  # not on it any more
    assert stdq.run("targets", "list", "--list", "nope").returncode == 2
    # removing the target takes it off every list
    assert stdq.run("targets", "rm", "A").returncode == 0
    assert stdq.run("targets", "list", "--list", "two", "--json").returncode == 2  # list gone


def test_import_from_a_file_and_errors(stdq, tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("\ufeffName,RA,Dec\nX,1.5,2.5\n", encoding="utf-8")
    result = stdq.run("targets", "import", str(path))
    assert result.returncode == 0, result.stderr
    assert "imported 1 target" in result.stderr and names(stdq) == ["X"]
    assert stdq.run("targets", "import", str(tmp_path / "missing.csv")).returncode == 2
    assert stdq.run("targets", "import", "-", input="ra,x\n1,2\n").returncode == 2  # ra without dec
    assert stdq.run("targets", "import", "-", "--list", " ", input="X\n").returncode == 2


def test_update_of_a_list(stdq):
    imported(stdq, "name,ra,dec\nSN 2023ixf,210.910674,54.31165\n", "--list", "w")
    result = stdq.run("update", "--list", "w", "--services", "ztf", "--json")
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)
    assert item["target"] == "SN 2023ixf" and item["new_rows"] > 0
