"""examples/cron/nightly.sh against the emulators (issue 11 item 8): `stdq targets import` onto a
list, then `stdq update`; run once, a night added to the emulator, run again: the second run asks
ATLAS only for the new epochs (the request's mjd_min, from the emulator log), latest.csv grows by
exactly the new night's rows, no source_row_id twice; exit codes for cron."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, STDQ_BIN
from stdq.testing.atlas import AtlasEmulator
from stdq.testing.resolvers import MastResolverEmulator, SesameEmulator

SCRIPT = ROOT / "examples" / "cron" / "nightly.sh"
ANCHOR = 61000  # the emulator's last night, pinned: the same numbers every day

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def EMULATORS():  # noqa: N802 - read by conftest's fake_server
    atlas = AtlasEmulator()
    atlas.queue_seconds = atlas.run_seconds = 0.1
    atlas.queue_ahead = 0
    atlas.anchor_mjd = ANCHOR
    return [SesameEmulator(), MastResolverEmulator(), atlas]


def nightly(stdq, targets: Path, *args: str) -> subprocess.CompletedProcess:
    env = stdq.env
    env.update({"STDQ": str(STDQ_BIN), "STDQ_SERVICES": "atlas"})
    return subprocess.run(
        ["bash", str(SCRIPT), str(targets), *args], capture_output=True, text=True, env=env,
        cwd=stdq.tmp, timeout=180,
    )


def latest(stdq) -> dict[str, list[dict[str, str]]]:
    found = {}
    for path in sorted((stdq.data_dir / "products").rglob("latest.csv")):
        with path.open(newline="") as handle:
            found[path.parent.parent.name] = list(csv.DictReader(handle))
    return found


def posted_mjd_min(stdq) -> list[float]:
    forms = [r.body for r in stdq.server.log_of(emulator="atlas", method="POST")]
    return [float(dict(p.split("=", 1) for p in body.split("&"))["mjd_min"]) for body in forms]


def test_the_crontab_runs_the_script():
    crontab = (ROOT / "examples" / "cron" / "crontab").read_text()
    line = next(x for x in crontab.splitlines() if x.strip() and not x.startswith("#") and "nightly.sh" in x)
    assert line.split()[:5] == ["15", "7", "*", "*", "*"]
    assert "nightly.sh" in line and "watchlist.csv" in line


def test_the_example_watchlist_imports(stdq):
    result = stdq.run("targets", "import", str(ROOT / "examples" / "cron" / "targets.csv"), "--list", "x")
    assert result.returncode == 0, result.stderr
    assert "imported 3 target(s)" in result.stderr


@pytest.mark.slow
def test_a_night_added_is_fetched_alone_and_latest_grows(stdq):
    targets = stdq.tmp / "watchlist.csv"
    targets.write_text("name,ra,dec\nSN 2023ixf,,\nWatch 1,20.5,10.25\n", encoding="utf-8")
    first = nightly(stdq, targets)
    assert first.returncode == 0, first.stdout + first.stderr
    before = latest(stdq)
    assert len(before) == 2, before.keys()  # one latest.csv per target (service atlas)
    assert all(len(rows) > 100 for rows in before.values())
    # the data end last night (the pinned anchor): the newest epoch is that night's
    newest = max(float(r["mjd"]) for rows in before.values() for r in rows)
    assert ANCHOR < newest < ANCHOR + 1
    assert posted_mjd_min(stdq) == [57000.0, 57000.0]  # the whole history the first time

    httpx.post(stdq.server.base_url + "/_control/add_night").raise_for_status()
    second = nightly(stdq, targets)
    assert second.returncode == 0, second.stdout + second.stderr
    after = latest(stdq)
    asked = posted_mjd_min(stdq)[2:]
    assert len(asked) == 2
    for mjd_min in asked:  # only the new epochs: after the newest stored, minus <= 2 days overlap
        assert newest - 2.0 <= mjd_min <= newest
    for name, rows in after.items():
        ids = [r["source_row_id"] for r in rows]
        assert len(ids) == len(set(ids)), name  # no row twice
        assert len(rows) == len(before[name]) + 4, name  # exactly the new night's 4 exposures
        assert {r["source_row_id"] for r in before[name]} <= set(ids)
        assert max(float(r["mjd"]) for r in rows) > ANCHOR + 1

    # a third run with nothing new: exit 0, no new rows
    third = nightly(stdq, targets)
    assert third.returncode == 0, third.stdout + third.stderr
    assert {k: len(v) for k, v in latest(stdq).items()} == {k: len(v) for k, v in after.items()}


@pytest.mark.slow
def test_a_failed_job_exits_1_and_a_bad_line_is_skipped(stdq):
    targets = stdq.tmp / "watchlist.csv"
    targets.write_text("name,ra,dec\nWatch 2,30.5,10.25\nBad line,999,0\n", encoding="utf-8")
    stdq.server.emulator("atlas").error_msg = "Could not parse the result file"
    result = nightly(stdq, targets)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "line 3" in result.stderr  # reported with its line number, the others imported


def test_usage_errors_exit_2(stdq):
    assert nightly(stdq, stdq.tmp / "missing.csv").returncode == 2
    assert subprocess.run(["bash", str(SCRIPT)], capture_output=True).returncode == 2
