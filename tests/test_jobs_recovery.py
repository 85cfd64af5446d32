"""Jobs survive crashes: SIGKILLed workers and queries, SIGTERM, Ctrl-C, many submitters at once, no secrets."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass

import pytest
from test_jobs_cli import SN, configure, slow_runner, submit

from conftest import stop_workers, wait_until
from stdq.errors import StdqError
from stdq.jobs.queue import JobQueue
from stdq.records import Job, JobEvent, JobState
from stdq.testing import slow
from stdq.testing.fakeserver import FakeServer


@pytest.fixture
def server():
    srv = FakeServer([slow.SlowServiceEmulator(default_seconds=0.2)]).start()
    yield srv
    srv.stop()


@pytest.fixture
def sq(tmp_path, server):
    runner = slow_runner(tmp_path, server)
    configure(runner, autostart_worker=False, lease_seconds=2.0)
    try:
        yield runner
    finally:
        stop_workers(runner)


@dataclass
class Seen:
    """A job as the test reads it from the data directory, with its events."""

    job: Job
    events: list[JobEvent]

    def __getattr__(self, name: str):
        return getattr(self.job, name)


def db_job(runner, job_id: int) -> Seen:
    """The job and its events, read from the data directory (no stdq process in between)."""
    with JobQueue(runner.data_dir) as queue:
        return Seen(queue.require(job_id), queue.events(job_id))


def wait_for_checkpoint(runner, job_id: int, key: str = "task_url", timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = db_job(runner, job_id)
        except (sqlite3.Error, StdqError):  # the database or the job is not there yet
            job = None
        if job and job.checkpoint.get(key):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never saved {key} in its checkpoint")


def posts(server) -> list:
    return server.log_of(emulator="slow", method="POST")


@pytest.mark.slow
def test_sigkilled_worker_job_is_resumed_after_the_lease(sq, server):
    job_id = submit(sq, *SN, "--seconds", "3")
    worker = sq.popen("jobs", "worker", stderr=subprocess.DEVNULL)
    before = wait_for_checkpoint(sq, job_id)
    worker.kill()  # SIGKILL in the middle of the remote task
    worker.wait()
    assert before.state is JobState.RUNNING and before.attempts == 1
    # nobody may take it while the lease (2 s) runs; a new worker takes it up after
    lease_expires = db_job(sq, job_id).lease_expires
    probe = JobQueue(sq.data_dir)
    if time.time() < lease_expires - 0.2:
        assert not probe.runnable_now()
    wait_until(probe.runnable_now, timeout=15, what="the lease to run out")
    assert time.time() >= lease_expires  # claimable only once the lease ran out
    probe.close()
    assert sq.run("jobs", "worker", "--burst").returncode == 0
    after = db_job(sq, job_id)
    assert after.state is JobState.SUCCEEDED and after.rows == 12
    assert after.attempts == 2
    kinds = [e.kind for e in after.events]
    assert kinds.count("succeeded") == 1
    assert any("expired; resumed by" in e.message for e in after.events)
    assert any(e.kind == "resume" for e in after.events)
    assert len(posts(server)) == 1  # one remote submission, resumed, not repeated
    assert after.products == (1,)


@pytest.mark.slow
def test_sigkilled_inprocess_query_is_resumed_by_retry(sq, server):
    proc = sq.popen("query", "slow", *SN, "--seconds", "3", "--sync",
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = wait_for_checkpoint(sq, 1)
    proc.kill()
    proc.wait()
    assert job.runner == "inprocess" and job.state is JobState.RUNNING
    status = json.loads(sq.run("--json", "jobs", "status", "1").stdout)
    assert status["abandoned"] is True  # its process is gone (this host)
    waited = sq.run("jobs", "wait", "1", "--timeout", "30")
    assert waited.returncode == 1 and "jobs retry 1" in waited.stderr
    result = sq.run("--json", "jobs", "retry", "1")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["job_id"] == 1 and info["rows"] == 12
    after = db_job(sq, 1)
    assert after.state is JobState.SUCCEEDED and after.runner == "inprocess"
    assert len(posts(server)) == 1
    assert any(e.kind == "resume" for e in after.events)


@pytest.mark.slow
def test_ctrl_c_detaches_from_a_foreground_query(sq, server):
    configure(sq, autostart_worker=True, lease_seconds=2.0)
    proc = sq.popen("query", "slow", *SN, "--seconds", "2",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(sq, 1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "detached from job 1" in err and "Traceback" not in err
    assert out == ""
    assert sq.run("jobs", "wait", "1", "--timeout", "60").returncode == 0  # the job went on
    assert len(posts(server)) == 1


@pytest.mark.slow
def test_ctrl_c_of_an_inprocess_query_then_retry(sq, server):
    proc = sq.popen("query", "slow", *SN, "--seconds", "2", "--sync",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(sq, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "stdq jobs retry 1" in err
    job = db_job(sq, 1)
    assert (job.state, job.exit_code) == (JobState.FAILED, 130)
    assert job.checkpoint["task_url"]
    assert job.error_exception().exit_code == 130 and "jobs retry 1" in str(job.error_exception())
    assert sq.run("jobs", "retry", "1").returncode == 0
    assert db_job(sq, 1).state is JobState.SUCCEEDED
    assert len(posts(server)) == 1


@pytest.mark.slow
def test_sigterm_releases_the_job_for_the_next_worker(sq, server):
    job_id = submit(sq, *SN, "--seconds", "2")
    worker = sq.popen("jobs", "worker", stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(sq, job_id)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    released = db_job(sq, job_id)
    assert released.state is JobState.QUEUED and released.attempts == 0
    assert any(e.kind == "released" for e in released.events)
    assert sq.run("jobs", "worker", "--burst").returncode == 0
    assert db_job(sq, job_id).state is JobState.SUCCEEDED
    assert len(posts(server)) == 1


@pytest.mark.slow
def test_twenty_submitters_and_three_workers(sq, server):
    server.emulator("slow").default_seconds = 0.3
    server.emulator("slow").slots = 3
    workers = []
    for i in range(3):
        with open(sq.tmp / f"worker{i}.log", "w") as log:
            workers.append(sq.popen("jobs", "worker", stderr=log))
    try:
        submitters = [
            sq.popen("query", "slow", "--ra", f"{10 + i}", "--dec", "20", "--background",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(20)
        ]
        # and ten identical submissions at once: one job
        same = [
            sq.popen("query", "slow", *SN, "--background",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(10)
        ]
        outputs = [p.communicate(timeout=120) for p in submitters + same]
        for proc, (_out, err) in zip(submitters + same, outputs, strict=True):
            assert proc.returncode == 0, err
            assert "locked" not in err.lower() and "Traceback" not in err
        ids = [int(out) for out, _ in outputs[:20]]
        same_ids = {int(out) for out, _ in outputs[20:]}
        assert len(set(ids)) == 20 and len(same_ids) == 1
        everything = [*ids, *same_ids]
        waited = sq.run("jobs", "wait", *map(str, everything), "--timeout", "120", timeout=180)
        assert waited.returncode == 0, waited.stderr
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        codes = [w.wait(timeout=30) for w in workers]
    assert codes == [0, 0, 0]
    logs = "".join((sq.tmp / f"worker{i}.log").read_text() for i in range(3))
    assert "locked" not in logs.lower() and "Traceback" not in logs
    for job_id in everything:
        job = db_job(sq, job_id)
        assert job.state is JobState.SUCCEEDED and job.attempts == 1
        assert [e.kind for e in job.events].count("claimed") == 1
    assert len(posts(server)) == 21  # one remote task per job: none lost, none twice
    # the three workers shared the work
    owners = {db_job(sq, i).events[1].message.split()[2].split(":")[1] for i in everything}
    assert len(owners) >= 2


@pytest.mark.slow
def test_no_secret_in_jobs_events_logs_or_products(tmp_path, server):
    key = "sk-TopSecret-9f8e7d6c5b4a"
    server.emulator("slow").api_key = key
    runner = slow_runner(tmp_path, server)
    configure(runner, autostart_worker=True, lease_seconds=2.0)
    runner.extra_env["STDQ_SLOW_API_KEY"] = key
    try:
        good = submit(runner, *SN)
        empty = submit(runner, "Empty Field", "--ra", "150", "--dec", "-30")
        bad = submit(runner, "--ra", "10", "--dec", "-88")
        waited = runner.run("-v", "jobs", "wait", str(good), str(empty), str(bad), "--timeout", "60")
        assert waited.returncode == 1  # the bad target failed
        # a refused key: the job fails with exit 3 and the wrong key appears nowhere either.
        # --sync: a worker that is still alive runs jobs with the secrets of its own
        # environment, not the submitter's, so the wrong key must be used in-process.
        wrong = "sk-WrongKey-0a1b2c3d4e5f"
        refused = runner.run(
            "-v", "--json", "query", "slow", *SN, "--force", "--sync", env={"STDQ_SLOW_API_KEY": wrong}
        )
        assert refused.returncode == 3
        outputs = [waited.stdout + waited.stderr, refused.stdout + refused.stderr]
        for args in (["jobs", "list"], ["jobs", "show", str(good)], ["jobs", "logs", str(bad)]):
            shown = runner.run("--json", *args)
            outputs.append(shown.stdout + shown.stderr)
    finally:
        stop_workers(runner)
    assert server.log_of(emulator="slow", method="POST")[0].headers["authorization"] == f"Token {key}"
    files = [p for p in runner.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("worker-") for p in files)  # the detached worker's log is checked too
    assert any(p.name == "stdq.sqlite3" for p in files)
    for path in files:
        data = path.read_bytes()
        assert key.encode() not in data, path
        assert wrong.encode() not in data, path
    for text in outputs:
        assert key not in text and wrong not in text
    cmdlines = runner.data_dir / "logs"
    assert cmdlines.is_dir()
