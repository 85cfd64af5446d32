"""`stdq query --background` and `stdq jobs ...` through the installed command, against the slow emulator."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import time

import pytest

from conftest import STDQ_BIN, StdqRunner, assert_clean_error, stop_workers
from stdq.testing import slow
from stdq.testing.fakeserver import FakeServer

SN = ["SN 2023ixf", "--ra", "210.910674", "--dec", "54.311650"]
EMPTY = ["Empty Field", "--ra", "150.0", "--dec", "-30.0"]
BAD = ["--ra", "10", "--dec", "-88"]  # outside the emulator's footprint: 400


def configure(runner, **tasks):
    runner.write_settings(slow.settings_extra(**tasks))


def slow_runner(tmp_path, server) -> StdqRunner:
    """The installed `stdq` against a fresh data dir and the slow emulator only."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return StdqRunner(
        server=server, tmp=tmp_path, config_path=tmp_path / "config.toml", data_dir=tmp_path / "data"
    )


@pytest.fixture
def sq(tmp_path):
    """`stdq` with the slow service, short remote tasks and detached workers on demand."""
    server = FakeServer([slow.SlowServiceEmulator(default_seconds=0.2)]).start()
    runner = slow_runner(tmp_path, server)
    configure(runner, lease_seconds=3.0)
    try:
        yield runner
    finally:
        stop_workers(runner)
        server.stop()


def submit(runner, *args: str) -> int:
    result = runner.run("query", "slow", *args, "--background")
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip())


def show(runner, job_id: int) -> dict:
    result = runner.run("--json", "jobs", "show", str(job_id))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_background_prints_the_id_and_reuses_an_identical_job(sq):
    configure(sq, autostart_worker=False)
    first = sq.run("query", "slow", *SN, "--background")
    assert first.returncode == 0 and first.stdout.strip().isdigit()
    again = sq.run("--json", "query", "slow", *SN, "--background")
    assert json.loads(again.stdout) == {"job_id": int(first.stdout), "state": "queued"}
    assert "already queued" in again.stderr
    forced = sq.run("query", "slow", *SN, "--background", "--force")
    assert int(forced.stdout) == int(first.stdout) + 1
    other = sq.run("query", "slow", *SN, "--mjd-min", "60003", "--background")
    assert int(other.stdout) == int(first.stdout) + 2


def test_background_with_output_is_a_usage_error(sq):
    result = sq.run("query", "slow", *SN, "--background", "-o", "x.csv")
    assert "jobs result" in assert_clean_error(result, 2) + result.stderr
    assert not (sq.tmp / "x.csv").exists()
    listing = sq.run("--json", "jobs", "list")
    assert json.loads(listing.stdout) == []  # nothing was queued


def test_foreground_query_waits_for_the_worker(sq):
    result = sq.run("--json", "query", "slow", *SN)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["rows"] == 12 and info["detections"] == 10
    job = show(sq, info["job_id"])
    assert job["runner"] == "worker" and job["state"] == "succeeded"
    assert any(e["kind"] == "claimed" for e in job["events"])


def test_wait_exit_codes(sq):
    good = submit(sq, *SN)
    bad = submit(sq, *BAD)
    empty = submit(sq, *EMPTY)
    assert sq.run("jobs", "wait", str(good), str(empty), "--timeout", "60").returncode == 0
    both = sq.run("jobs", "wait", str(good), str(bad), "--timeout", "60")
    assert both.returncode == 1
    assert f"job {bad} failed (exit 1)" in both.stderr
    waited = json.loads(sq.run("--json", "jobs", "wait", str(good), str(bad)).stdout)
    assert [j["state"] for j in waited] == ["succeeded", "failed"]
    # timeout: a 60 s remote task, a 0.2 s wait
    long = submit(sq, *SN, "--seconds", "60")
    timed = sq.run("jobs", "wait", str(long), "--timeout", "0.2")
    assert timed.returncode == 75
    assert "timed out after 0.2 s" in timed.stderr
    # cancel: wait exits 1
    assert sq.run("jobs", "cancel", str(long), "--wait").returncode == 0
    cancelled = sq.run("jobs", "wait", str(long))
    assert cancelled.returncode == 1 and "cancelled" in cancelled.stderr
    unknown = sq.run("jobs", "wait", "999")
    assert_clean_error(unknown, 2)


def test_cancel_queued_and_running(sq):
    configure(sq, autostart_worker=False, lease_seconds=1.5)
    queued = submit(sq, *SN)
    result = sq.run("jobs", "cancel", str(queued))
    assert result.returncode == 0 and "cancelled before it ran" in result.stderr
    assert show(sq, queued)["state"] == "cancelled"
    again = sq.run("jobs", "cancel", str(queued))
    assert again.returncode == 0 and "already cancelled" in again.stderr

    running = submit(sq, *SN, "--seconds", "60")
    with open(sq.tmp / "worker.log", "w") as log:
        worker = sq.popen("jobs", "worker", stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not show(sq, running)["checkpoint"].get("task_url"):
            assert time.monotonic() < deadline, "the worker never submitted the remote task"
            time.sleep(0.1)
        result = sq.run("--json", "jobs", "cancel", str(running), "--wait")
        assert result.returncode == 0, result.stderr
        assert "stops at its next check" in result.stderr
        assert json.loads(result.stdout)["state"] == "cancelled"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    deletes = sq.server.log_of(emulator="slow", method="DELETE")
    assert [d.path for d in deletes] == ["/slow/tasks/1"]  # the remote task was deleted
    done = submit(sq, *EMPTY)
    sq.run("jobs", "worker", "--burst")
    refused = sq.run("jobs", "cancel", str(done))
    assert f"job {done} had already succeeded (no data)" in refused.stderr
    assert_clean_error(refused, 1)


def test_result_exit_codes_and_output(sq):
    configure(sq, autostart_worker=False)
    good = submit(sq, *SN)
    empty = submit(sq, *EMPTY)
    bad = submit(sq, *BAD)
    not_yet = sq.run("jobs", "result", str(good))
    assert "jobs wait" in assert_clean_error(not_yet, 75) + not_yet.stderr
    assert sq.run("jobs", "worker", "--burst").returncode == 0
    assert sq.run("jobs", "result", str(empty)).returncode == 5
    failed = sq.run("jobs", "result", str(bad))
    assert "footprint" in assert_clean_error(failed, 1) + failed.stderr
    out = sq.run("jobs", "result", str(good), "-o", "-")
    assert out.returncode == 0
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 12 and sum(r["detected"] == "True" for r in rows) == 10
    # row i = 3: flux 50 * 4 - 100 = 100 uJy, err 10 -> snr 10, AB 23.9 - 2.5 log10(100) = 18.9
    assert float(rows[3]["flux_ujy"]) == 100.0 and float(rows[3]["magnitude"]) == pytest.approx(18.9)
    written = sq.run("jobs", "result", str(good), "-o", "table.json")
    assert written.returncode == 0 and len(json.loads((sq.tmp / "table.json").read_text())) == 12


def test_show_list_status_logs(sq):
    configure(sq, autostart_worker=False)
    a = submit(sq, *SN)
    b = submit(sq, *EMPTY)
    listing = json.loads(sq.run("--json", "jobs", "list").stdout)
    assert [j["id"] for j in listing] == [b, a]  # newest first
    for key in ("id", "state", "service", "target", "params", "attempts", "progress", "error", "rows", "products"):
        assert key in listing[0]
    assert "events" not in listing[0]
    status = json.loads(sq.run("jobs", "status", "--json").stdout)
    assert status["counts"]["queued"] == 2 and status["running"] == [] and status["workers"] == []
    assert sq.run("jobs", "worker", "--burst").returncode == 0
    assert [j["id"] for j in json.loads(sq.run("jobs", "list", "--json", "--state", "succeeded", "--limit", "1").stdout)] == [b]
    assert json.loads(sq.run("jobs", "list", "--json", "--service", "atlas").stdout) == []
    one = json.loads(sq.run("--json", "jobs", "status", str(a)).stdout)
    assert one["state"] == "succeeded" and one["rows"] == 12
    text = sq.run("jobs", "status", str(b)).stdout
    assert f"job {b}: succeeded (no data)" in text
    full = show(sq, a)
    kinds = [e["kind"] for e in full["events"]]
    assert kinds[0] == "submitted" and kinds[-1] == "succeeded" and "remote" in kinds
    logs = sq.run("jobs", "logs", str(a))
    assert "submitted remote task" in logs.stdout and "deleted remote task" in logs.stdout
    tail = sq.run("jobs", "logs", str(a), "-n", "1")
    assert tail.stdout.strip().splitlines() == [logs.stdout.strip().splitlines()[-1]]
    human = sq.run("jobs", "list")
    assert "SN 2023ixf" in human.stdout and human.returncode == 0
    assert_clean_error(sq.run("jobs", "show", "77"), 2)


def test_logs_follow_ends_with_the_job(sq):
    job = submit(sq, *SN, "--seconds", "1")
    result = sq.run("jobs", "logs", str(job), "-f", timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip().splitlines()[-1].split()[2] == "succeeded"


def test_retry_of_a_failed_worker_job(sq):
    configure(sq, autostart_worker=False)
    sq.server.emulator("slow").api_key = "k-1234567"
    job = submit(sq, *SN)
    sq.run("jobs", "worker", "--burst")
    failed = show(sq, job)
    assert (failed["state"], failed["exit_code"]) == ("failed", 3)
    assert_clean_error(sq.run("jobs", "wait", str(job)), 1)
    sq.server.emulator("slow").api_key = None
    retried = sq.run("--json", "jobs", "retry", str(job))
    assert json.loads(retried.stdout) == {"job_id": job, "state": "queued"}
    sq.run("jobs", "worker", "--burst")
    assert show(sq, job)["state"] == "succeeded"
    refused = sq.run("jobs", "retry", str(job))
    assert "can be retried" in assert_clean_error(refused, 2)


def test_prune(sq):
    configure(sq, autostart_worker=False)
    job = submit(sq, *EMPTY)
    sq.run("jobs", "worker", "--burst")
    keep = sq.run("--json", "jobs", "prune", "--older-than", "30d")
    assert json.loads(keep.stdout)["pruned"] == 0
    gone = sq.run("--json", "jobs", "prune", "--older-than", "0s")  # ended before now
    assert json.loads(gone.stdout)["pruned"] == 1
    assert_clean_error(sq.run("jobs", "show", str(job)), 2)
    assert_clean_error(sq.run("jobs", "prune", "--older-than", "soon"), 2)


HEAVY_PROBE = """
import json, sys
from stdq.cli import main
try:
    main({args!r})
except SystemExit:
    pass
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {{'astropy', 'pandas', 'numpy', 'httpx'}})), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["jobs", "status"], ["jobs", "list"], ["jobs", "show", "1"], ["jobs", "logs", "1"]])
def test_reading_commands_import_nothing_heavy(sq, args):
    import subprocess
    import sys

    configure(sq, autostart_worker=False)
    submit(sq, *SN)
    probe = subprocess.run(
        [sys.executable, "-c", HEAVY_PROBE.format(args=args)],
        capture_output=True, text=True, env=sq.env, timeout=60,
    )
    assert json.loads(probe.stderr.strip().splitlines()[-1]) == []


def test_wait_starts_a_worker_for_a_job_due_again(sq):
    """A burst worker exits when the only job waits for its backoff; `jobs wait` starts one again."""
    # the poll of the remote task fails 3 times (max_retries 2): attempt 1 ends as a temporary failure
    sq.server.add_fault("503", r"/slow/tasks/1$", method="GET", times=3)
    job = submit(sq, *SN)
    deadline = time.monotonic() + 60
    while True:
        status = json.loads(sq.run("--json", "jobs", "status").stdout)
        current = show(sq, job)
        if current["state"] == "queued" and current["attempts"] == 1 and not status["workers"]:
            break
        assert time.monotonic() < deadline, (current, status)
        time.sleep(0.2)
    assert "HTTP 503" in current["error"]
    assert current["run_after_unix"] - time.time() > 20  # due 30 s after attempt 1
    conn = sqlite3.connect(sq.data_dir / "stdq.sqlite3")
    with conn:
        conn.execute("UPDATE jobs SET run_after = 0 WHERE id = ?", (job,))  # as 30 s later
    conn.close()
    result = sq.run("jobs", "wait", str(job), "--timeout", "60")
    assert result.returncode == 0, result.stderr
    done = show(sq, job)
    assert (done["state"], done["attempts"]) == ("succeeded", 2)
    assert len(sq.server.log_of(emulator="slow", method="POST")) == 1  # attempt 2 resumed the task


def test_foreground_query_says_when_no_worker_will_come(sq):
    """autostart_worker = false and no worker: the waiting query says so, then finishes
    once a worker is started."""
    import subprocess

    configure(sq, autostart_worker=False)
    proc = sq.popen("query", "slow", *SN, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 30
        while "stdq jobs worker" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        assert "none is running" in line and "stdq jobs worker" in line
        assert sq.run("jobs", "worker", "--burst").returncode == 0
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "rows" in out


# -- the wait display (no terminal needed: the line is a function of the jobs and the clock) --


def make_job(**fields):
    from stdq.records import Job, JobState, Target

    values = dict(
        id=7, service="atlas", target=Target(210.910674, 54.31165, "SN 2023ixf"), params={},
        runner="worker", state=JobState.RUNNING, attempts=1, max_attempts=5, created_at=1000.0,
        updated_at=1000.0, started_at=1000.0, finished_at=None, run_after=0.0, lease_owner=None,
        lease_expires=None, cancel_requested=False, progress=None, wait_until=None, checkpoint={},
        products=(), rows=None, detections=None, note=None, error=None, exit_code=None,
    )
    values.update(fields)
    return Job(**values)


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_live_line_shows_a_retry_with_seconds_left_and_the_time_spent():
    from stdq.cli.live import WaitDisplay

    clock = Clock()
    display = WaitDisplay(live=False, clock=clock, say=lambda text: None)
    clock.now += 45
    job = make_job(progress="atlas: HTTP 503 at http://127.0.0.1/queue/; retry 2/4", wait_until=clock.now + 2.4)
    display.jobs([job])
    assert display.line() == (
        "job 7 running: atlas: HTTP 503 at http://127.0.0.1/queue/; retry 2/4 (3 s left) · 0:45"
    )
    clock.now += 3  # the wait is over: no seconds left any more, the clock goes on
    assert display.line() == "job 7 running: atlas: HTTP 503 at http://127.0.0.1/queue/; retry 2/4 · 0:48"


def test_the_live_line_of_queued_jobs_and_of_several():
    from stdq.cli.live import jobs_text
    from stdq.records import JobState

    now = 2000.0
    fresh = make_job(state=JobState.QUEUED, started_at=None)
    assert jobs_text([fresh], now) == ("job 7 queued: waiting for a worker", None)
    again = make_job(state=JobState.QUEUED, error="atlas: HTTP 503 (retries used up)", run_after=now + 30)
    assert jobs_text([again], now) == ("job 7 queued: queued again after: atlas: HTTP 503 (retries used up)", now + 30)
    done = make_job(id=8, state=JobState.SUCCEEDED, rows=3)
    text, until = jobs_text([fresh, make_job(id=9), done], now)
    assert text == "waiting for 2 of 3 jobs: 1 queued, 1 running" and until is None


def test_in_process_progress_is_shown_piped_only_with_verbose():
    from stdq.cli.live import WaitDisplay

    said: list[str] = []
    clock = Clock()
    quiet = WaitDisplay(verbose=False, live=False, clock=clock, say=said.append)
    quiet.progress("panstarrs: HTTP 503 at http://127.0.0.1/x; retry 1/4", wait_until=clock.now + 1)
    assert said == []
    loud = WaitDisplay(verbose=True, live=False, clock=clock, say=said.append)
    loud.progress("panstarrs: HTTP 503 at http://127.0.0.1/x; retry 1/4", wait_until=clock.now + 1)
    loud.progress("panstarrs: HTTP 503 at http://127.0.0.1/x; retry 1/4", wait_until=clock.now + 1)
    loud.progress("panstarrs: 120 detections")
    assert said == ["panstarrs: HTTP 503 at http://127.0.0.1/x; retry 1/4 (1 s left)", "panstarrs: 120 detections"]


def run_on_a_terminal(runner, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """`stdq ARGS` with stderr on a pseudo-terminal (200 columns): (code, stdout, what the terminal got)."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import subprocess
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = {k: v for k, v in runner.env.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    proc = subprocess.Popen([str(STDQ_BIN), *args], stdout=subprocess.PIPE, stderr=slave, env=env, cwd=runner.tmp)
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the process closed its end
                    break
                if not chunk:
                    break
                screen += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, out.decode(), screen.decode("utf-8", "replace")


def test_a_foreground_in_process_query_shows_its_retries_on_a_terminal(sq):
    """The 155 s with nothing on the screen: on a terminal the live line says what the
    in-process query waits for (service, why, attempt k of n, seconds left) and the time spent."""
    configure(sq, autostart_worker=False)
    sq.server.add_fault("503", r"/slow/tasks/1$", method="GET", times=2)
    code, out, screen = run_on_a_terminal(sq, "query", "slow", *SN, "--sync")
    assert code == 0, screen
    assert "rows" in out
    assert "slow: HTTP 503 at http://127.0.0.1" in screen and "/slow/tasks/1; retry 1/" in screen
    assert "s left)" in screen and "· 0:0" in screen
    piped = sq.run_process("query", "slow", *SN, "--sync", "--force")  # piped: no live line
    assert piped.returncode == 0 and "retry" not in piped.stderr


def test_a_worker_job_waited_for_on_a_terminal_shows_its_progress(sq):
    configure(sq, lease_seconds=3.0)
    code, out, screen = run_on_a_terminal(sq, "query", "slow", *SN, "--seconds", "1")
    assert code == 0, screen
    assert "job 1 " in screen and "· 0:0" in screen  # the job, what it does, the time spent


def test_logs_follow_on_a_terminal_keeps_the_events_on_stdout(sq):
    """The live line of `jobs logs -f` is on stderr; the events stay on stdout (piped here)."""
    job = submit(sq, *SN, "--seconds", "1")
    code, out, screen = run_on_a_terminal(sq, "jobs", "logs", str(job), "-f")
    assert code == 0, screen
    lines = out.strip().splitlines()
    assert lines[0].split()[2] == "submitted" and lines[-1].split()[2] == "succeeded"
    assert f"job {job} " in screen and "· 0:0" in screen and "submitted" not in screen


def test_piped_waits_report_progress_only_with_verbose(sq):
    quiet_job = submit(sq, *SN, "--seconds", "0.5")
    quiet = sq.run("jobs", "wait", str(quiet_job))
    assert quiet.returncode == 0 and "remote task running" not in quiet.stderr
    loud_job = submit(sq, *SN, "--seconds", "0.5", "--force")
    loud = sq.run("-v", "jobs", "wait", str(loud_job))
    assert loud.returncode == 0
    assert f"job {loud_job} running: remote task running" in loud.stderr
    assert loud.stderr.count("remote task running") == 1  # a line when the text changes, not per look


# -- issue 9: a cancel that comes too late, piped tables, JSON times, counted words --------


ISO_UTC = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"


def claimed_here(runner, job_id: int):
    """Claim JOB_ID for this test process (a live owner with a long lease): the test plays
    its runner. Returns (queue, owner)."""
    from stdq.jobs.queue import JobQueue, owner_id

    queue = JobQueue(runner.data_dir)
    owner = owner_id()
    assert queue.claim(owner, 60.0, job_id=job_id).state.value == "running"
    return queue, owner


def test_a_cancel_that_loses_the_race_with_the_end_says_so_and_exits_1(sq):
    import threading

    from stdq.jobs.queue import JobQueue

    configure(sq, autostart_worker=False)
    job_id = submit(sq, *SN)
    queue, owner = claimed_here(sq, job_id)
    queue.close()
    finished = threading.Event()

    def runner_ends_first() -> None:
        """The runner sees the cancel too late: it ends the job as succeeded."""
        with JobQueue(sq.data_dir) as own:
            deadline = time.monotonic() + 20
            while not own.cancel_requested(job_id) and time.monotonic() < deadline:
                time.sleep(0.02)
            own.finish(job_id, "succeeded", owner=owner, rows=3, detections=2, products=[],
                       note="3 rows, 2 detections", exit_code=0)
        finished.set()

    thread = threading.Thread(target=runner_ends_first, daemon=True)
    thread.start()
    result = sq.run("--json", "jobs", "cancel", str(job_id), "--wait", timeout=30)
    thread.join(20)
    assert finished.is_set()
    assert "stops at its next check" in result.stderr
    assert f"job {job_id} had already succeeded" in assert_clean_error(result, 1) + result.stderr
    assert json.loads(result.stdout)["state"] == "succeeded"  # the job as it is
    # the same answer once it has ended, and for several ids the code of the worst
    again = sq.run("jobs", "cancel", str(job_id))
    assert f"error: job {job_id} had already succeeded" in again.stderr and again.returncode == 1
    queued = submit(sq, *EMPTY)
    both = sq.run("--json", "jobs", "cancel", str(queued), str(job_id))
    assert both.returncode == 1 and f"job {queued} cancelled before it ran" in both.stderr
    assert [j["state"] for j in json.loads(both.stdout)] == ["cancelled", "succeeded"]


def test_multi_line_notes_and_errors_keep_jobs_list_one_line_per_row(sq):
    configure(sq, autostart_worker=False)
    ok, bad = submit(sq, *SN), submit(sq, *EMPTY)
    queue, owner = claimed_here(sq, ok)
    with queue:
        queue.finish(ok, "succeeded", owner=owner, rows=2, detections=1, products=[],
                     note="2 rows\nsecond\tline \\ here", exit_code=0)
        queue.claim(owner, 60.0, job_id=bad)
        queue.finish(bad, "failed", owner=owner, error="slow: it broke\nhint: try again\x1b[31m",
                     exit_code=1)
    listing = sq.run("jobs", "list")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 3  # the header and one line per job
    assert all(len(line.split("\t")) == 9 for line in lines)
    assert lines[1].split("\t")[-1] == "slow: it broke\\nhint: try again\\x1b[31m"
    assert lines[2].split("\t")[-1] == "2 rows\\nsecond\\tline \\\\ here"
    assert "\x1b" not in listing.stdout
    shown = sq.run("jobs", "show", str(ok)).stdout  # text for people: continuation lines indented
    assert "note:       2 rows\n            second\tline" in shown


def test_json_times_are_iso_8601_utc_with_unix_twins(sq):
    import re
    from datetime import datetime

    from stdq.jobs.queue import JobQueue

    configure(sq, autostart_worker=False)
    job_id = submit(sq, *SN)
    assert sq.run("jobs", "worker", "--burst").returncode == 0
    job = show(sq, job_id)
    for key in ("created_at", "updated_at", "started_at", "finished_at"):
        assert re.match(ISO_UTC, job[key]), (key, job[key])
        unix = job[f"{key}_unix"]
        assert isinstance(unix, float)
        assert datetime.fromisoformat(job[key]).timestamp() == int(unix)
    assert job["created_at_unix"] <= job["started_at_unix"] <= job["finished_at_unix"]
    assert job["run_after"] is None and job["run_after_unix"] == 0.0
    assert job["lease_expires"] is None and job["lease_expires_unix"] is None
    assert job["wait_until"] is None and "wait_until_unix" in job
    for event in job["events"]:
        assert re.match(ISO_UTC, event["ts"]) and isinstance(event["ts_unix"], float)
    logs = json.loads(sq.run("--json", "jobs", "logs", str(job_id)).stdout)
    assert logs == job["events"]
    (product,) = json.loads(sq.run("--json", "products", "list").stdout)
    assert re.match(ISO_UTC, product["created_at"]) and re.match(ISO_UTC, product["processed_at"])
    assert product["processed_at_unix"] >= product["created_at_unix"]
    details = json.loads(sq.run("--json", "products", "show", str(product["id"])).stdout)
    assert details["product"]["created_at"] == product["created_at"]
    assert "created" in sq.run("products", "show", str(product["id"])).stdout
    import os

    with JobQueue(sq.data_dir) as queue:  # this process as a live worker, for `jobs status`
        queue.register_worker(os.getpid(), burst=True, concurrency=2)
        try:
            status = json.loads(sq.run("--json", "jobs", "status").stdout)
        finally:
            queue.unregister_worker(os.getpid())
    (worker,) = status["workers"]
    assert re.match(ISO_UTC, worker["started_at"]) and re.match(ISO_UTC, worker["heartbeat_at"])
    assert isinstance(worker["heartbeat_at_unix"], float)
    added = json.loads(sq.run("--json", "targets", "add", "Somewhere", "--ra", "10", "--dec", "20").stdout)
    assert re.match(ISO_UTC, added["created_at"]) and isinstance(added["created_at_unix"], float)


def test_messages_count_in_words():
    from click.testing import CliRunner

    from stdq.cli import render
    from stdq.records import JobState, counted

    assert [counted(n, "row") for n in (0, 1, 2)] == ["0 rows", "1 row", "2 rows"]
    assert counted(None, "detection") == "0 detections"
    import click

    @click.command()
    def details() -> None:
        job = make_job(state=JobState.SUCCEEDED, rows=1, detections=1, finished_at=1001.0)
        render.job_details(job, [], 2000.0)
        render.queue_status({"counts": {"queued": 0}, "running": [],
                             "workers": [{"pid": 5, "burst": False}]})

    out = CliRunner().invoke(details).output
    assert "rows:       1 (1 detection)" in out and "1 worker alive: pid 5" in out


def test_library_cancel_with_wait_that_loses_the_race_raises_cancel_too_late(sq):
    import threading

    from stdq import Stdq
    from stdq.core import CancelTooLate
    from stdq.jobs.queue import JobQueue

    configure(sq, autostart_worker=False)
    job_id = submit(sq, *SN)
    queue, owner = claimed_here(sq, job_id)
    queue.close()

    def runner_fails_first() -> None:
        with JobQueue(sq.data_dir) as own:
            while not own.cancel_requested(job_id):
                time.sleep(0.02)
            own.finish(job_id, "failed", owner=owner, error="slow: broke first", exit_code=1)

    thread = threading.Thread(target=runner_fails_first, daemon=True)
    thread.start()
    with Stdq(sq.config_path, sq.data_dir) as sdq, pytest.raises(CancelTooLate) as late:
        sdq.cancel(job_id, wait=True)
    thread.join(10)
    assert late.value.exit_code == 1 and late.value.job.state.value == "failed"
    assert late.value.message == f"job {job_id} had already failed"
    assert late.value.hint == f"what happened: stdq jobs show {job_id}"
