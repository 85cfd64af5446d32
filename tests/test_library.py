"""The library (`from stdq import Stdq`) against the emulators, as a notebook would use it.

Everything runs in this process: the emulators in a thread, the jobs run by
``Stdq.run`` / ``Stdq.run_worker(burst=True)`` (autostart off), so nothing sleeps.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import stdq
from conftest import FakeTime
from stdq import BadInput, ConfigError, NoData, ResolveError, Stdq, StdqError, TemporaryFailure
from stdq.records import JobState, Outcome, Target, wait_exit_code
from stdq.services.base import Field, QueryForm
from stdq.testing.fakeserver import FakeServer
from stdq.waiting import WorkerKeeper, poll

SN = "SN 2023ixf"


@pytest.fixture(scope="module")
def server():
    srv = FakeServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def sdq(tmp_path, server, monkeypatch):
    from stdq.demo import demo_settings

    for key in [k for k in __import__("os").environ if k.startswith("STDQ_")]:
        monkeypatch.delenv(key)
    config = tmp_path / "config.toml"
    text = demo_settings(server, tmp_path / "data").replace(
        "[tasks]\n", "[tasks]\nautostart_worker = false\n"
    )
    config.write_text(text, encoding="utf-8")
    with Stdq(config) as lib:
        notices: list[str] = []
        lib.notice = notices.append
        lib.notices = notices  # type: ignore[attr-defined]
        yield lib


def test_import_stdq_is_light_and_exports_the_library():
    code = (
        "import sys, stdq; stdq.Stdq; stdq.NoData; stdq.query;"
        "print(sorted(m for m in ('pandas', 'astropy', 'httpx', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert stdq.Stdq.__module__ == "stdq.core" and stdq.StdqError is StdqError
    with pytest.raises(AttributeError):
        stdq.nothing_like_this  # noqa: B018


def test_notebook_session_resolve_submit_wait_result_products_reprocess(sdq):
    target = sdq.resolve(SN)
    assert isinstance(target, Target) and target.resolver == "sesame"
    assert target.ra == pytest.approx(210.910674)

    job = sdq.submit("atlas", target, mjd_min=60000)
    assert job.runner == "worker" and job.state is JobState.QUEUED and not job.reused
    assert sdq.submit("atlas", target, mjd_min=60000).reused  # the same query: the same job

    # no worker runs (autostart is off): the wait says so once and times out
    (waited,) = sdq.wait([job.id], timeout=0.2)
    assert waited.state is JobState.QUEUED and wait_exit_code([waited]) == 75
    assert sdq.notices == [
        f"job {job.id} waits for a worker and none is running ([tasks] autostart_worker = false):"
        " start one with `stdq jobs worker`"
    ]
    with pytest.raises(TemporaryFailure) as info:
        sdq.result(job.id)
    assert info.value.exit_code == 75 and f"stdq jobs wait {job.id}" in info.value.hint

    assert sdq.run_worker(burst=True) == 0
    seen: list[list] = []
    (ended,) = sdq.wait([job.id], timeout=10, on_progress=seen.append)
    assert ended.state is JobState.SUCCEEDED and ended.outcome is Outcome.ROWS
    assert seen and seen[-1][0].id == job.id and wait_exit_code([ended]) == 0

    result = sdq.result(job.id)
    assert result.job.id == job.id and result.rows == ended.rows > 0
    assert result.path == result.products[0].photometry_path and result.path.is_file()
    table = result.table
    assert len(table) == result.rows
    assert {"mjd", "flux_ujy", "flux_err_ujy", "band", "survey"} <= set(table.columns)
    astro = result.to_astropy()
    assert len(astro) == result.rows
    assert str(astro["mjd"].unit) == "d" and str(astro["flux_ujy"].unit) == "uJy"

    products = sdq.products(SN)
    assert [p.id for p in products] == list(ended.products)
    product = sdq.product(products[0].id)
    assert product.problems == () and product.raw_files
    assert {r.status for r in product.raw_files} == {"ok"}
    assert product.to_json()["photometry"].endswith("photometry.csv")
    assert product.details_json()["raw_files"][0]["status"] == "ok"

    again = sdq.reprocess(product.id)
    assert (again.rows, again.detections) == (product.rows, product.detections)
    assert again.processed_at >= product.processed_at

    assert [j.id for j in sdq.jobs(state="succeeded", service="atlas")] == [job.id]
    kinds = [e.kind for e in sdq.events(job.id)]
    assert kinds[0] == "submitted" and kinds[-1] == "succeeded"
    status = sdq.status()
    assert status["counts"]["succeeded"] == 1 and status["running"] == [] and status["workers"] == []
    json.dumps(status)


def test_query_in_process_and_the_one_call_convenience(sdq):
    progress: list[tuple[str, float | None]] = []
    result = sdq.query("panstarrs", SN, on_progress=lambda text, until: progress.append((text, until)))
    assert result.rows > 0 and result.job.runner == "inprocess"
    assert ("querying", None) in progress
    one = stdq.query("panstarrs", SN, config=sdq.settings.path, force=True)
    assert one.job.id != result.job.id and one.rows == result.rows
    assert len(one.table) == one.rows


def test_errors_are_the_documented_classes_with_their_codes(sdq):
    with pytest.raises(ConfigError) as unknown:
        sdq.submit("no-such-survey", SN)
    assert unknown.value.exit_code == 3
    with pytest.raises(BadInput) as bad:
        sdq.submit("atlas", SN, reduced="perhaps")
    assert bad.value.exit_code == 2 and "--reduced" in bad.value.message
    with pytest.raises(BadInput, match="--bogus"):
        sdq.submit("atlas", SN, bogus=1)
    with pytest.raises(ResolveError) as unresolved:
        sdq.resolve("No Such Object 12345")
    assert unresolved.value.exit_code == 4
    with pytest.raises(BadInput):
        sdq.resolve(None, ra="400", dec="0")
    with pytest.raises(NoData) as nodata:
        sdq.query("panstarrs", "Empty Field")
    assert nodata.value.exit_code == 5
    job = sdq.jobs(limit=1)[0]
    assert job.outcome is Outcome.NO_DATA and job.error_exception().exit_code == 5
    with pytest.raises(BadInput):
        sdq.job(9999)
    with pytest.raises(StdqError, match=f"job {job.id} had already succeeded") as late:
        sdq.cancel(job.id)  # a cancel that comes too late: exit 1
    assert late.value.exit_code == 1


def test_a_failed_job_raises_its_own_error_and_retry_runs_it_again(sdq, server):
    server.add_fault("500", r"/mast/api/.*", times=50)
    try:
        with pytest.raises(StdqError) as failed:
            sdq.query("panstarrs", "M31")
    finally:
        server.clear_faults()
    job = sdq.jobs(limit=1)[0]
    assert job.state is JobState.FAILED
    assert failed.value.exit_code == job.exit_code
    assert type(job.error_exception()) is type(failed.value)
    with pytest.raises(type(failed.value)):
        sdq.result(job.id)
    again = sdq.retry(job.id)
    assert again.state is JobState.QUEUED and again.attempts == 0
    ended = sdq.run(job.id)
    assert ended.state is JobState.SUCCEEDED


def test_cancel_of_a_queued_job(sdq):
    job = sdq.submit("ztf-fps", SN)
    cancelled = sdq.cancel(job.id)
    assert cancelled.state is JobState.CANCELLED and cancelled.outcome is Outcome.CANCELLED
    err = cancelled.error_exception()
    assert err.exit_code == 1 and "cancelled" in err.message
    assert sdq.cancel(job.id).state is JobState.CANCELLED  # again: nothing changes
    assert wait_exit_code([cancelled]) == 1


def test_product_check_finds_changed_and_missing_raw_files(sdq):
    from stdq import QueryFailed

    result = sdq.query("panstarrs", SN)
    product = sdq.product(result.products[0].id)
    first, *rest = product.raw_files
    first.path.write_bytes(first.path.read_bytes() + b"\n")
    checked = sdq.product(product.id)
    assert checked.problems[0] == f"raw/{first.name}: changed"
    assert checked.raw_files[0].status == "changed"
    assert checked.raw_files[0].sha256 != checked.raw_files[0].sha256_on_disk
    first.path.unlink()
    assert sdq.product(product.id).raw_files[0].status == "missing"
    with pytest.raises(QueryFailed, match="missing"):
        sdq.reprocess(product.id)


def test_target_catalog(sdq):
    added = sdq.targets.add("My SN", "14:03:38.56", "+54:18:41.9")
    assert added.resolver == "local" and added.ra == pytest.approx(210.910667, abs=1e-5)
    assert [t.name for t in sdq.targets.list()] == ["My SN"]
    assert sdq.targets.get("my sn").dec == pytest.approx(54.311639, abs=1e-5)
    assert sdq.resolve("My SN").resolver == "local"  # the local table is asked first
    sdq.targets.remove("My SN")
    with pytest.raises(BadInput):
        sdq.targets.get("My SN")
    with pytest.raises(BadInput):
        sdq.targets.remove("My SN")


def test_services_and_describe(sdq):
    names = [s["name"] for s in sdq.services()]
    assert {"atlas", "panstarrs", "ztf", "ztf-fps"} <= set(names)
    assert sdq.describe("atlas")["name"] == "atlas"


# -- the poll loop ------------------------------------------------------------------------




def test_poll_backs_off_from_50_ms_to_half_a_second_and_keeps_the_deadline():
    fake = FakeTime()
    assert poll(lambda: False, timeout=5.0, clock=fake.clock, sleep=fake.sleep) is False
    assert fake.sleeps[0] == 0.05 and max(fake.sleeps) == 0.5
    assert all(b >= a for a, b in zip(fake.sleeps, fake.sleeps[1:-1], strict=False))
    assert math.isclose(sum(fake.sleeps), 5.0)
    calls = iter([False, False, True])
    fake = FakeTime()
    assert poll(lambda: next(calls), clock=fake.clock, sleep=fake.sleep) is True
    assert fake.sleeps == pytest.approx([0.05, 0.075])


def test_worker_keeper_starts_a_worker_at_most_every_two_seconds(sdq):
    import dataclasses

    fake = FakeTime()
    spawned: list[float] = []
    settings = dataclasses.replace(
        sdq.settings, tasks=dataclasses.replace(sdq.settings.tasks, autostart_worker=True)
    )
    keeper = WorkerKeeper(settings, sdq.queue, clock=fake.clock, spawn=lambda: spawned.append(fake.now))
    job = sdq.queue.submit("atlas", Target(1.0, 2.0), {})
    for _ in range(30):  # 3 s of looks every 0.1 s
        keeper.check([job])
        fake.now += 0.1
    assert len(spawned) == 2 and spawned[1] - spawned[0] >= 2.0
    fake.now += 5
    keeper.check([sdq.queue.submit("ztf", Target(1.0, 2.0), {}, runner="inprocess")])
    assert len(spawned) == 2  # an in-process job needs no worker


def test_form_bools_given_as_text_parse_strictly():
    class Form(QueryForm):
        fields = (Field("reduced", "bool", default=False),)

    for text, value in [("false", False), ("FALSE", False), ("no", False), ("0", False),
                        ("off", False), ("true", True), ("Yes", True), ("1", True), ("ON", True),
                        (True, True), (False, False), (0, False), (1, True)]:
        assert Form({"reduced": text}).clean() == {"reduced": value}, text
    assert Form({}).clean() == {"reduced": False}
    for bad in ("maybe", "tru", "2", 2, 0.5):
        with pytest.raises(BadInput) as info:
            Form({"reduced": bad}).clean()
        assert info.value.exit_code == 2 and info.value.message.startswith("--reduced:")


def test_follow_events_hands_out_each_event_once_until_the_job_ends(sdq):
    job = sdq.submit("panstarrs", SN, runner="inprocess")
    pauses: list[float] = []

    def sleep(seconds: float) -> None:  # the job runs while the loop pauses
        pauses.append(seconds)
        if len(pauses) == 2:
            sdq.run(job.id)

    sdq.sleep = sleep
    seen: list = []
    ended = sdq.follow_events(job.id, on_events=seen.extend)
    assert ended.state is JobState.SUCCEEDED and pauses == pytest.approx([0.05, 0.075])
    ids = [e.id for e in seen]
    assert ids == sorted(set(ids)) and ids == [e.id for e in sdq.events(job.id)]
    assert seen[0].kind == "submitted" and seen[-1].kind == "succeeded"


def test_ctrl_c_in_a_wait_propagates(sdq):
    job = sdq.submit("atlas", SN, mjd_min=60001)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    sdq.sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        sdq.wait([job.id])
    assert sdq.job(job.id).state is JobState.QUEUED  # the job goes on


def test_an_inprocess_job_whose_process_died_settles_the_wait_and_says_retry(sdq):
    from stdq.records import hostname

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    job = sdq.submit("panstarrs", SN, runner="inprocess")
    sdq.queue.claim(f"{hostname()}:{done.stdout.strip()}:abcdef", 3600, job_id=job.id,
                    runner="inprocess")
    (seen,) = sdq.wait([job.id], timeout=5)
    assert seen.state is JobState.RUNNING and seen.is_abandoned() and wait_exit_code([seen]) == 1
    with pytest.raises(StdqError) as info:
        sdq.result(job.id)
    assert info.value.exit_code == 1 and f"stdq jobs retry {job.id}" in info.value.hint
    assert sdq.retry(job.id).state is JobState.QUEUED
    assert sdq.run(job.id).state is JobState.SUCCEEDED


def test_form_ints_are_not_truncated():
    class Form(QueryForm):
        fields = (Field("stack", "int"),)

    for given, value in [(3, 3), ("3", 3), (" 7 ", 7), (4.0, 4)]:
        assert Form({"stack": given}).clean() == {"stack": value}
    for bad in (1.7, "1.5", "three", True):
        with pytest.raises(BadInput, match="^--stack:"):
            Form({"stack": bad}).clean()
