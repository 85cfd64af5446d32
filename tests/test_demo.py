"""`stdq demo`: the real query paths against the bundled emulators, every file printed."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from conftest import STDQ_BIN, run_in_process

SERVICES = {"panstarrs", "ztf", "atlas", "ztf-fps"}


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


@pytest.mark.slow
def test_demo_runs_every_builtin_service(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1"}
    result = subprocess.run(
        [str(STDQ_BIN), "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stderr
    check_files([Path(line) for line in result.stdout.splitlines() if line.strip()])
    # the ATLAS and ZTF forced-photometry jobs went through a background worker
    assert "queued as job" in result.stderr
    assert "atlas job" in result.stderr and "succeeded" in result.stderr


@pytest.mark.slow
def test_demo_json_before_and_after_the_command(tmp_path):
    """`stdq --json demo` used to ignore the flag: now both spellings print {"dir", "files"}."""
    env = {"HOME": str(tmp_path), "NO_COLOR": "1", "STDQ_CONFIG": None, "STDQ_DATA_DIR": None}
    before = run_in_process(["--json", "demo", "--dir", str(tmp_path / "a")], env=env, cwd=tmp_path)
    after = run_in_process(["demo", "--dir", str(tmp_path / "b"), "--json"], env=env, cwd=tmp_path)
    listings = []
    for result, folder in ((before, tmp_path / "a"), (after, tmp_path / "b")):
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert set(data) == {"dir", "files"} and data["dir"] == str(folder)
        files = [Path(p) for p in data["files"]]
        check_files(files)
        # product ids depend on which background job ended first: "#" for each
        listings.append(sorted(
            "/".join("#" if part.isdigit() else part for part in p.relative_to(folder).parts) for p in files
        ))
    assert listings[0] == listings[1]
