"""`stdq demo`: the real query paths against the bundled emulators, every file printed."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from conftest import STDQ_BIN, run_in_process

SERVICES = {"panstarrs", "ztf", "atlas", "ztf-fps", "rubin", "gaia"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_files(files: list[Path]) -> None:
    """Every built-in service wrote a table, a product.json and its raw answers."""
    assert files and all(p.is_file() for p in files)  # each line is a file that exists
    tables = {p.stem: p for p in files if p.parent.name == "tables"}
    assert set(tables) == SERVICES
    for service, path in tables.items():
        rows = list(csv.DictReader(path.open()))
        assert rows, service
        assert rows[0]["zp"] == "23.9"
    products = [p for p in files if p.name == "product.json"]
    assert {json.loads(p.read_text())["service"] for p in products} == SERVICES
    assert any(p.parent.name == "raw" for p in files)  # raw answers are kept beside each table
    # the merged light curve and a PNG plot of each target: SN 2023ixf from its four services
    # in ONE table, the Rubin target and the Gaia variable
    curves = {p.stem: p for p in files if p.parent.name == "lightcurves"}
    plots = {p.stem: p for p in files if p.parent.name == "plots"}
    assert set(curves) == set(plots) == {"SN_2023ixf", "J53.130000-28.100000", "J83.401125-2.317833"}
    for path in plots.values():
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 10_000
    ixf = list(csv.DictReader(curves["SN_2023ixf"].open()))
    # row counts per service equal each service's latest.csv
    latest = {p.parent.name: p for p in files if p.name == "latest.csv" and p.parent.parent.name == "SN_2023ixf"}
    assert set(latest) == {"atlas", "panstarrs", "ztf", "ztf-fps"}
    per_service = {s: sum(r["service"] == s for r in ixf) for s in latest}
    assert per_service == {s: len(list(csv.DictReader(p.open()))) for s, p in latest.items()}
    assert all(per_service.values())
    # never mixed: each row keeps its flux kind, difference from atlas/ztf-fps, total from panstarrs/ztf
    kinds = {(r["service"], r["flux_kind"]) for r in ixf}
    assert kinds == {("atlas", "difference"), ("ztf-fps", "difference"), ("panstarrs", "total"), ("ztf", "total")}
    mjd = [float(r["mjd"]) for r in ixf]
    assert mjd == sorted(mjd)
    assert {r["service"] for r in csv.DictReader(curves["J53.130000-28.100000"].open())} == {"rubin"}
    assert {r["survey"] for r in csv.DictReader(curves["J83.401125-2.317833"].open())} == {"Gaia"}


def listing(files: list[Path], folder: Path) -> list[str]:
    """The files relative to FOLDER, product ids as "#" (they depend on which background
    job ended first)."""
    return sorted(
        "/".join("#" if part.isdigit() else part for part in p.relative_to(folder).parts) for p in files
    )


@pytest.mark.slow
def test_demo_runs_every_builtin_service_and_says_so_in_json_too(tmp_path):
    """Each file on a line of its own; `stdq --json demo` (which used to ignore the flag)
    lists the same files as {"dir", "files"}."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1"}
    result = subprocess.run(
        [str(STDQ_BIN), "demo", "--dir", str(tmp_path / "text")],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stderr
    files = [Path(line) for line in result.stdout.splitlines() if line.strip()]
    check_files(files)
    # the ATLAS and ZTF forced-photometry jobs went through a background worker
    assert "queued as job" in result.stderr
    assert "atlas job" in result.stderr and "succeeded" in result.stderr

    in_process_env = {"HOME": str(tmp_path), "NO_COLOR": "1", "STDQ_CONFIG": None, "STDQ_DATA_DIR": None}
    folder = tmp_path / "json"
    as_json = run_in_process(["--json", "demo", "--dir", str(folder)], env=in_process_env, cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert set(data) == {"dir", "files"} and data["dir"] == str(folder)
    check_files([Path(p) for p in data["files"]])
    assert listing([Path(p) for p in data["files"]], folder) == listing(files, tmp_path / "text")
