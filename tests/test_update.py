"""`stdq update` against the emulators: incremental fetches (time bounds from the emulator
log), latest.csv growing by exactly the new rows, the on_new_detection hook, exit codes."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from stdq.testing import irsa
from stdq.testing.fakeserver import Response

SN = "SN 2023ixf"


def irsa_requests(runner):
    return runner.server.log_of(emulator="irsa")


def latest_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def add_night(monkeypatch, mags: tuple[float, float] = (12.70, 12.60)) -> float:
    """The emulated sky gains one epoch of the target's zg and zr objects, a night after
    the newest one of any object; returns its MJD."""
    objects = list(irsa.SKY_OBJECTS)
    mjd = round(max(epoch[1] for obj in objects for epoch in obj.epochs) + 1.0, 5)
    for index, mag in zip((0, 1), mags, strict=True):
        obj = objects[index]
        expid = obj.epochs[-1][0] + 50_000
        objects[index] = dataclasses.replace(obj, epochs=(*obj.epochs, (expid, mjd, mag, 0.012, 0)))
    monkeypatch.setattr(irsa, "SKY_OBJECTS", objects)
    return mjd


def update_json(stdq, *args: str, code: int = 0) -> list[dict]:
    result = stdq.run("update", *args, "--json")
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def test_second_run_asks_only_for_the_new_night_and_latest_grows_by_it(stdq, monkeypatch):
    (first,) = update_json(stdq, SN, "--services", "ztf")
    assert first["state"] == "succeeded" and first["mjd_min"] is None
    assert "TIME" not in irsa_requests(stdq)[-1].query  # the whole history the first time
    total = first["rows_total"]
    assert first["new_rows"] == total > 0
    rows = latest_rows(first["latest_path"])
    assert len(rows) == total
    newest = max(float(r["mjd"]) for r in rows)

    night = add_night(monkeypatch)
    (second,) = update_json(stdq, SN, "--services", "ztf")
    (request,) = irsa_requests(stdq)[1:]
    # from the newest stored epoch minus the ZTF overlap (2 days), open above
    low, high = request.query["TIME"][0].split()
    assert float(low) == pytest.approx(newest - 2.0, abs=1e-6) and high == "Inf"
    assert second["mjd_min"] == pytest.approx(newest - 2.0)
    assert second["new_rows"] == 2 and second["new_detections"] == 2
    rows = latest_rows(second["latest_path"])
    assert len(rows) == total + 2 == second["rows_total"]
    assert sorted(float(r["mjd"]) for r in rows)[-2:] == pytest.approx([night, night])
    ids = [r["source_row_id"] for r in rows]
    assert len(ids) == len(set(ids))  # no repeated source_row_id
    assert second["job_id"] != first["job_id"]  # every fetch is a product of its own
    products = json.loads(stdq.run("products", "list", SN, "--json").stdout)
    assert len(products) == 2
    # the second product was merged into latest.csv: the same bytes as a full rebuild
    # (a reprocess rebuilds from every product)
    merged = Path(second["latest_path"]).read_bytes()
    oldest = min(p["id"] for p in products)
    assert stdq.run("products", "reprocess", str(oldest)).returncode == 0
    assert Path(second["latest_path"]).read_bytes() == merged

    # a third run without a new night: one request, nothing new, exit 0
    (third,) = update_json(stdq, SN, "--services", "ztf")
    assert third["new_rows"] == 0 and third["rows_total"] == total + 2
    assert len(irsa_requests(stdq)) == 3


def test_since_overrides_the_stored_epoch_and_services_default_to_existing_products(stdq):
    update_json(stdq, SN, "--services", "ztf")
    (item,) = update_json(stdq, SN, "--since", "2023-05-25")  # ztf: the product already stored
    assert item["service"] == "ztf" and item["mjd_min"] == 60089.0
    assert irsa_requests(stdq)[-1].query["TIME"] == ["60089 Inf"]
    assert item["new_rows"] == 0  # every row of that span is stored already


def test_list_update_piped_prints_one_line_per_item(stdq):
    names = "SN 2023ixf\nNGC 3642\n"
    result = stdq.run("targets", "import", "-", "--list", "night", input=names)
    assert result.returncode == 0, result.stderr
    result = stdq.run("update", "--list", "night", "--services", "ztf")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert {line.split("\t")[0] for line in lines} == {"SN 2023ixf", "NGC 3642"}
    assert all(line.split("\t")[2] == "succeeded" for line in lines)


def test_no_data_is_exit_0_and_a_failure_exit_1(stdq):
    result = stdq.run("targets", "add", "Empty", "--ra", "10", "--dec", "-10")
    assert result.returncode == 0, result.stderr
    (item,) = update_json(stdq, "Empty", "--services", "ztf")
    assert item["state"] == "no_data" and item["new_rows"] == 0 and item["latest_path"] is None
    stdq.server.emulator("irsa").handle = lambda request: Response.text("a,b\n1,2\n", 200, "text/csv")
    (item,) = update_json(stdq, SN, "--services", "ztf", code=1)
    assert item["state"] == "failed" and item["error"]


def test_temporary_failure_is_exit_75(stdq, recorded_waits):
    stdq.server.add_fault("500", path="nph_light_curves", times=10)
    (item,) = update_json(stdq, SN, "--services", "ztf", code=75)
    assert item["state"] == "temporary"


def test_nothing_to_update_and_bad_choices_are_exit_2(stdq):
    assert stdq.run("update", SN).returncode == 2  # no products yet, no --services
    assert stdq.run("update").returncode == 2
    assert stdq.run("update", SN, "--all", "--services", "ztf").returncode == 2
    assert stdq.run("update", SN, "--services", "nope").returncode == 2
    assert stdq.run("update", SN, "--services", "ztf", "--since", "soon").returncode == 2


HOOK = (
    f"{sys.executable} -c \"import json,sys,pathlib; d=json.load(sys.stdin);"
    " p=pathlib.Path('hook.jsonl'); p.open('a').write(json.dumps(d)+chr(10)); print('got', len(d['new_detections']))\""
)


def test_hook_gets_exactly_the_new_detections(stdq, monkeypatch):
    update_json(stdq, SN, "--services", "ztf", "--on-new-detection", HOOK)
    calls = (stdq.data_dir / "hook.jsonl").read_text().splitlines()
    assert len(calls) == 1
    first = json.loads(calls[0])
    assert first["target"] == SN and first["service"] == "ztf"
    assert first["latest_path"].endswith("latest.csv")
    assert len(first["new_detections"]) > 0

    night = add_night(monkeypatch, (12.71, 12.61))
    (item,) = update_json(stdq, SN, "--services", "ztf", "--on-new-detection", HOOK)
    assert item["hook"] == "ran"
    calls = (stdq.data_dir / "hook.jsonl").read_text().splitlines()
    second = json.loads(calls[1])
    assert sorted(d["mjd"] for d in second["new_detections"]) == pytest.approx([night, night])
    assert sorted(round(d["magnitude"], 2) for d in second["new_detections"]) == [12.61, 12.71]
    assert {d["band"] for d in second["new_detections"]} == {"ztfg", "ztfr"}
    logs = stdq.run("jobs", "logs", str(item["job_id"]))
    assert "got 2" in logs.stdout

    # no new detection: not run
    update_json(stdq, SN, "--services", "ztf", "--on-new-detection", HOOK)
    assert len((stdq.data_dir / "hook.jsonl").read_text().splitlines()) == 2


def test_a_failing_hook_never_fails_the_update(stdq):
    stdq.write_settings('[hooks]\non_new_detection = "echo broken >&2; exit 7"\n')
    result = stdq.run("update", SN, "--services", "ztf", "--json")
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)
    assert item["state"] == "succeeded" and item["hook"] == "failed"
    assert "hook failed" in result.stderr
    logs = stdq.run("jobs", "logs", str(item["job_id"])).stdout
    assert "broken" in logs and "exit status 7" in logs
    # the settings' command (it may hold a webhook token) is not copied into the database
    import sqlite3

    conn = sqlite3.connect(stdq.data_dir / "stdq.sqlite3")
    assert conn.execute("SELECT hook FROM update_jobs").fetchall() == [("[hooks] on_new_detection",)]
    conn.close()
    assert b"exit 7" not in (stdq.data_dir / "stdq.sqlite3").read_bytes()


def test_background_submits_worker_jobs_and_returns(stdq):
    stdq.write_settings(f"[tasks]\nautostart_worker = false\n[hooks]\non_new_detection = {json.dumps(HOOK)}\n")
    result = stdq.run("update", SN, "--services", "ztf", "--background", "--json")
    assert result.returncode == 0, result.stderr
    (item,) = json.loads(result.stdout)
    assert item["state"] == "queued" and item["job_id"] and item["new_rows"] is None
    job = json.loads(stdq.run("jobs", "show", str(item["job_id"]), "--json").stdout)
    assert job["runner"] == "worker"
    assert stdq.run("jobs", "worker", "--burst").returncode == 0
    # the worker built latest.csv and ran the hook
    assert (stdq.data_dir / "hook.jsonl").is_file()
    (again,) = update_json(stdq, SN, "--services", "ztf")
    assert again["new_rows"] == 0 and again["rows_total"] > 0


def test_ecsv_format_writes_latest_ecsv_and_later_runs_keep_it_up_to_date(stdq, monkeypatch):
    (item,) = update_json(stdq, SN, "--services", "ztf", "--format", "ecsv")
    path = Path(item["latest_path"]).with_name("latest.ecsv")
    assert path.read_text().startswith("# %ECSV")

    def data_lines() -> int:  # the ECSV's rows: after its "# " header and the column names
        return sum(1 for line in path.read_text().splitlines() if not line.startswith("#")) - 1

    assert data_lines() == item["rows_total"]
    add_night(monkeypatch)
    (second,) = update_json(stdq, SN, "--services", "ztf")  # no --format: kept all the same
    assert second["new_rows"] == 2 and data_lines() == second["rows_total"] == item["rows_total"] + 2


def test_atlas_through_a_worker_asks_from_the_newest_epoch_and_joins_queued_jobs(stdq):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = emulator.run_seconds = 0.0
    stdq.write_settings("[tasks]\nautostart_worker = false\n")
    (first,) = update_json(stdq, SN, "--services", "atlas", "--background")
    # an update run again before the worker came (say, after a crash): the same job, not a new one
    (again,) = update_json(stdq, SN, "--services", "atlas", "--background")
    assert again["job_id"] == first["job_id"]
    assert stdq.run("jobs", "worker", "--burst").returncode == 0
    posts = stdq.server.log_of(emulator="atlas", method="POST")
    assert len(posts) == 1
    latest = stdq.data_dir / "products" / "SN_2023ixf" / "atlas" / "latest.csv"
    rows = latest_rows(latest)
    newest = max(float(r["mjd"]) for r in rows)
    (second,) = update_json(stdq, SN, "--services", "atlas", "--background")
    assert second["mjd_min"] == pytest.approx(newest - 1.0, abs=1e-6)  # the ATLAS overlap: 1 day
    assert stdq.run("jobs", "worker", "--burst").returncode == 0
    posts = stdq.server.log_of(emulator="atlas", method="POST")
    assert len(posts) == 2 and "mjd_min" in posts[-1].body
    sent = dict(pair.split("=", 1) for pair in posts[-1].body.split("&"))
    assert float(sent["mjd_min"]) == pytest.approx(newest - 1.0, abs=1e-6)
    rows_after = latest_rows(latest)
    assert len(rows_after) == len(rows)  # the overlap brought nothing new
    ids = [r["source_row_id"] for r in rows_after]
    assert len(ids) == len(set(ids))


def _succeeded(runner) -> int:
    import sqlite3

    conn = sqlite3.connect(runner.data_dir / "stdq.sqlite3")
    try:
        return conn.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded'").fetchone()[0]
    finally:
        conn.close()


KILL_TARGETS = 100


def _running(runner) -> int:
    import sqlite3

    conn = sqlite3.connect(runner.data_dir / "stdq.sqlite3")
    try:
        return conn.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]
    finally:
        conn.close()


def _jobs_of(runner) -> dict[int, str]:
    """job id -> target name of RUNNER's data dir."""
    import sqlite3

    conn = sqlite3.connect(runner.data_dir / "stdq.sqlite3")
    try:
        return dict(conn.execute("SELECT id, target_name FROM jobs"))
    finally:
        conn.close()


def _submissions(entries) -> list[int]:
    """The job number of each ATLAS task submission in the log ENTRIES (the comment
    "stdq job N <key>" a submission carries)."""
    posts = [e for e in entries if e.method == "POST" and e.path.rstrip("/").endswith("queue")]
    return [int(dict(parse_qsl(e.body))["comment"].split()[2]) for e in posts]


def _latest_without_product_ids(path: Path) -> list[dict[str, str]]:
    rows = latest_rows(path)
    for row in rows:
        del row["product_id"]  # which product a row came from: numbered per data directory
    return rows


@pytest.mark.slow
def test_a_killed_worker_then_update_again_gives_the_uninterrupted_light_curves(stdq):
    """100 targets: a worker (8 threads) SIGKILLed in the middle of the update, then
    `stdq update` again: every target's latest.csv has the rows, in the order and with
    the values, of an uninterrupted run (every column but product_id, which numbers the
    products of each data directory), and no job submitted its ATLAS task twice."""
    from conftest import stop_workers, wait_until

    n = KILL_TARGETS
    targets = "name,ra,dec\n" + "".join(f"T{i},{10 + 3.4 * i:.1f},{-30 + 0.6 * i:.1f}\n" for i in range(n))
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = emulator.run_seconds = 0.02
    emulator.anchor_mjd = emulator.last_night()  # one sky for both runs, even across midnight
    # a shorter history than the emulator's default (84 rows a target instead of 520)
    emulator.nights = {"first_night": 60000, "last_night": 60030, "cadence": 3}
    emulator.recent_nights = 10
    # the server's limits scaled in time (60 writes and 600 reads per 0.5 s), and stdq's too
    emulator.throttle_window = 0.5
    emulator.settings_overrides = {"rate_window": 0.5, "poll_interval": 0.05}
    settings = "[tasks]\nautostart_worker = {}\nlease_seconds = 2.0\n"
    stdq.write_settings(settings.format("false"))
    assert stdq.run("targets", "import", "-", "--list", "w", input=targets).returncode == 0
    assert stdq.run("update", "--list", "w", "--services", "atlas", "--background").returncode == 0
    log = stdq.tmp / "worker.log"
    with open(log, "wb") as out:
        worker = stdq.popen("jobs", "worker", "--concurrency", "8", stdout=out, stderr=out)
        try:
            wait_until(lambda: _succeeded(stdq) >= n // 3 and _running(stdq) > 0, timeout=120,
                       what="a third of the jobs done and others running")
            worker.kill()  # SIGKILL in the middle of the update (jobs running)
        finally:
            worker.wait(timeout=15)
    done_before = _succeeded(stdq)
    assert done_before < n
    stdq.write_settings(settings.format("true"))
    try:
        items = update_json(stdq, "--list", "w", "--services", "atlas")
    finally:
        stop_workers(stdq)
    assert len(items) == n and all(item["state"] in ("succeeded", "no_data") for item in items)
    interrupted_log = list(stdq.server.log_of(emulator="atlas"))

    # the same update, uninterrupted, in another data directory
    other = dataclasses.replace(stdq, data_dir=stdq.tmp / "other")
    env = {"STDQ_DATA_DIR": str(other.data_dir)}
    assert stdq.run("targets", "import", "-", "--list", "w", input=targets, env=env).returncode == 0
    assert stdq.run("update", "--list", "w", "--services", "atlas", "--background", "--json",
                    env=env).returncode == 0
    try:
        assert stdq.run("jobs", "worker", "--burst", "--concurrency", "8", env=env).returncode == 0
    finally:
        stop_workers(other)
    uninterrupted_log = stdq.server.log_of(emulator="atlas")[len(interrupted_log):]

    # no job sent its task twice: the killed ones resumed theirs (found by its comment key)
    jobs = _jobs_of(stdq)
    sent = _submissions(interrupted_log)
    assert sorted(sent) == sorted(set(sent)) and set(sent) <= set(jobs)
    # one job per target, plus one for each target done before the kill (its overlap)
    assert len(jobs) >= n + done_before and len(sent) == len(jobs)
    assert sorted(_submissions(uninterrupted_log)) == list(range(1, n + 1))
    for i in range(n):
        mine = _latest_without_product_ids(stdq.data_dir / "products" / f"T{i}" / "atlas" / "latest.csv")
        theirs = _latest_without_product_ids(other.data_dir / "products" / f"T{i}" / "atlas" / "latest.csv")
        assert mine == theirs, f"T{i}"
        assert len({r["source_row_id"] for r in mine}) == len(mine) > 0


def test_missing_credentials_are_exit_3(stdq):
    from stdq.testing.atlas import TEST_TOKEN
    from stdq.testing.fakeserver import settings_toml

    text = settings_toml(stdq.server).replace(f'api_key = "{TEST_TOKEN}"', "")
    assert TEST_TOKEN not in text
    stdq.config_path.write_text(text, encoding="utf-8")
    try:
        result = stdq.run("update", SN, "--services", "atlas", "--json", timeout=60)
    finally:
        from conftest import stop_workers

        stop_workers(stdq)
    assert result.returncode == 3, result.stderr
    (item,) = json.loads(result.stdout)
    assert item["state"] == "failed" and "SN 2023ixf / atlas: failed:" in result.stderr


def test_a_worker_job_queued_again_after_a_temporary_failure_is_exit_75(stdq):
    from conftest import stop_workers

    stdq.server.add_fault("503", path="/queue", method="POST", times=50)
    try:
        result = stdq.run("update", SN, "--services", "atlas", "--json", timeout=60)
    finally:
        stop_workers(stdq)
    assert result.returncode == 75, result.stderr
    (item,) = json.loads(result.stdout)
    assert item["state"] == "retrying" and "503" in item["error"]
    job = json.loads(stdq.run("jobs", "show", str(item["job_id"]), "--json").stdout)
    assert job["state"] == "queued" and job["attempts"] == 1


def test_reprocess_rebuilds_latest_and_the_library_finds_it(stdq):
    from stdq import Stdq

    (item,) = update_json(stdq, SN, "--services", "ztf")
    latest = Path(item["latest_path"])
    before = latest.read_text()
    latest.unlink()
    products = json.loads(stdq.run("products", "list", "--json").stdout)
    assert stdq.run("products", "reprocess", str(products[0]["id"])).returncode == 0
    assert latest.read_text() == before  # rebuilt, atomically, from the products
    with Stdq(stdq.config_path, stdq.data_dir) as sdq:
        assert sdq.latest(SN, "ztf") == latest
        assert sdq.latest(SN, "atlas") is None
        items = sdq.update([SN], services=["ztf"])
        assert [i.to_json()["new_rows"] for i in items] == [0]


def test_live_table_of_a_long_run_shows_running_items_first():
    from rich.console import Console

    from stdq.cli.update import MAX_ROWS, _Table
    from stdq.records import Target
    from stdq.update import UpdateItem

    table = _Table()
    for i in range(40):
        item = UpdateItem(Target(1.0, 2.0, f"T{i}"), "ztf", Path("/x"))
        item.state = "running" if i == 39 else "queued" if i > 35 else "succeeded"
        table.change(item)
    console = Console(width=120, record=True)
    console.print(table.render())
    text = console.export_text()
    lines = [line for line in text.splitlines() if line.strip().startswith("T")]
    assert len(lines) == MAX_ROWS and lines[0].split()[0] == "T39"  # the running one first
    assert "36 of 40 done" in text
