"""examples/cron/nightly.sh against the slow emulator: submit, wait, collect, exit code."""

from __future__ import annotations

import csv
import shutil
import subprocess
from pathlib import Path

import pytest
from test_jobs_cli import configure, slow_runner

from conftest import ROOT, STDQ_BIN, stop_workers, wait_until
from stdq.testing import slow
from stdq.testing.fakeserver import FakeServer

SCRIPT = ROOT / "examples" / "cron" / "nightly.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture
def cron(tmp_path):
    server = FakeServer([slow.SlowServiceEmulator(default_seconds=0.2)]).start()
    runner = slow_runner(tmp_path, server)
    configure(runner, lease_seconds=3.0)  # autostart: the script needs no running worker
    try:
        yield runner
    finally:
        stop_workers(runner)
        server.stop()


def nightly(runner, lines: list[str], *extra: str, timeout_s: str = "60") -> subprocess.CompletedProcess:
    targets = runner.tmp / "targets.txt"
    targets.write_text("# tonight\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    env = runner.env
    env.update({"STDQ": str(STDQ_BIN), "STDQ_SERVICE": "slow", "LOOKBACK_DAYS": "", "WAIT_TIMEOUT": timeout_s})
    return subprocess.run(
        ["bash", str(SCRIPT), str(targets), str(runner.tmp / "out"), "--", *extra],
        capture_output=True, text=True, env=env, cwd=runner.tmp, timeout=180,
    )


def test_the_crontab_runs_the_script():
    crontab = (ROOT / "examples" / "cron" / "crontab").read_text()
    line = next(x for x in crontab.splitlines() if x.strip() and not x.startswith("#") and "nightly.sh" in x)
    assert line.split()[:5] == ["15", "7", "*", "*", "*"]


@pytest.mark.slow
def test_nightly_collects_tables_and_reports_failures(cron):
    result = nightly(
        cron,
        ["SN 2023ixf | 210.910674 | 54.311650", "Empty Field | 150.0 | -30.0", "Off footprint | 10 | -88"],
        "--seconds", "0.2",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OK      SN 2023ixf: job 1 -> ")
    assert lines[1] == "NODATA  Empty Field: job 2: no data"
    assert lines[2].startswith("FAILED  Off footprint: job 3 (exit 1): error: slow: HTTP 400")
    table = Path(cron.tmp / "out" / "SN_2023ixf.csv")
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 12 and sum(r["detected"] == "True" for r in rows) == 10
    assert not (cron.tmp / "out" / "Empty_Field.csv").exists()
    assert not list((cron.tmp / "out").glob(".*"))  # no temporary file left behind


@pytest.mark.slow
def test_nightly_all_good_exits_0_and_a_timeout_exits_75(cron):
    good = nightly(cron, ["SN 2023ixf | 210.910674 | 54.311650", "Empty Field | 150.0 | -30.0"])
    assert good.returncode == 0, good.stdout + good.stderr
    slow_night = nightly(cron, ["NGC 3642 | 170.5750583 | 59.0742417"], "--seconds", "60", timeout_s="0.3")
    assert slow_night.returncode == 75, slow_night.stdout + slow_night.stderr
    assert "WAITING NGC 3642: job 3 has not finished" in slow_night.stdout
    # run again: the identical query finds the running job instead of submitting a second one
    again = nightly(cron, ["NGC 3642 | 170.5750583 | 59.0742417"], "--seconds", "60", timeout_s="0.3")
    assert "job 3 has not finished" in again.stdout
    posts = lambda: len(cron.server.log_of(emulator="slow", method="POST"))  # noqa: E731
    wait_until(lambda: posts() >= 3, timeout=30, what="the worker to start job 3")
    assert posts() == 3


def test_usage_error_exits_2(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr
