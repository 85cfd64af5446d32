"""`stdq demo`: the real query paths against the bundled emulators, every file printed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import STDQ_BIN


@pytest.mark.slow
def test_demo_runs_every_builtin_service(tmp_path):
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NO_COLOR": "1"}
    result = subprocess.run(
        [str(STDQ_BIN), "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stderr
    files = [Path(line) for line in result.stdout.splitlines() if line.strip()]
    assert files and all(p.is_file() for p in files)  # each line is a file that exists
    tables = {p.stem: p for p in files if p.parent.name == "tables"}
    assert set(tables) == {"panstarrs", "ztf", "atlas", "ztf-fps"}
    for service, path in tables.items():
        rows = list(csv.DictReader(path.open()))
        assert rows, service
        assert rows[0]["zp"] == "23.9"
    products = [p for p in files if p.name == "product.json"]
    services = {json.loads(p.read_text())["service"] for p in products}
    assert services == {"panstarrs", "ztf", "atlas", "ztf-fps"}
    # raw answers are kept beside each table
    assert any(p.parent.name == "raw" for p in files)
    # the ATLAS and ZTF forced-photometry jobs went through a background worker
    assert "queued as job" in result.stderr
