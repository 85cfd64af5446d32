"""The ATLAS service against the emulator, run in process (--sync, or the library).

The protocol (queue/poll/finish/result/DELETE), resuming a saved task, throttling
(each 429 form), the queue-limit refusal, credentials, and where the token may
and may not go.
"""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import assert_clean_error, assert_secret_nowhere
from stdq import Stdq
from stdq.processors.atlas import read_result
from stdq.testing import sky
from stdq.testing.atlas import OTHER_TOKEN, TEST_PASSWORD, TEST_TOKEN, TEST_USERNAME
from stdq.testing.fakeserver import Response

SN = sky.find("SN 2023ixf")
POS = ("--ra", "210.910674", "--dec", "54.311650")


@pytest.fixture
def atlas(stdq):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = 0.3
    emulator.run_seconds = 0.3
    return stdq, emulator


def log(runner, method=None, path=None):
    return runner.server.log_of(emulator="atlas", method=method, path=path)


def forms(runner):
    from urllib.parse import parse_qs

    return [{k: v[-1] for k, v in parse_qs(r.body).items()} for r in log(runner, "POST", r"/queue/$")]


def assert_token_nowhere(runner, *outputs: str) -> None:
    assert_secret_nowhere(runner.data_dir, [TEST_TOKEN], *outputs)


def test_sync_query_runs_the_whole_protocol(atlas):
    stdq, emulator = atlas
    emulator.run_seconds = 0.6  # several polls while it runs: the ETag's 304 is seen
    result = stdq.run("--json", "query", "atlas", "SN 2023ixf", "--sync")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    # the request log: one POST, polls of the task, the result file, then DELETE
    calls = [(r.method, r.path.split("?")[0], r.status) for r in log(stdq)]
    task_id = max(emulator.tasks)
    task_path = f"/atlas/forcedphot/queue/{task_id}/"
    assert calls[0] == ("POST", "/atlas/forcedphot/queue/", 201)
    assert calls[-2] == ("GET", f"/atlas/forcedphot/static/results/job{task_id:05d}.txt", 200)
    assert calls[-1] == ("DELETE", task_path, 204)
    polls = calls[1:-2]
    assert polls and all(c[:2] == ("GET", task_path) for c in polls)
    assert ("GET", task_path, 304) in polls  # If-None-Match with the task's ETag
    assert all(r.headers.get("if-none-match") for r in log(stdq, "GET", task_path)[1:])
    assert emulator.tasks[task_id].deleted
    # what was asked: mjd_min always sent (the full history by default), no e-mail
    form = forms(stdq)[0]
    assert form["mjd_min"] == "57000.0" and "mjd_max" not in form
    assert form["use_reduced"] == "false" and form["send_email"] == "false"
    assert float(form["ra"]) == SN.ra and float(form["dec"]) == SN.dec
    assert form["comment"].startswith(f"stdq job {info['job_id']} ")
    assert all(r.headers["authorization"] == f"Token {TEST_TOKEN}" for r in log(stdq))
    assert all(r.headers["accept"] == "application/json" for r in log(stdq, path="queue"))
    # the raw file is the server's answer byte for byte; every row is in the table
    text = emulator.result_file(SN.ra, SN.dec, 57000.0, None, False)
    raw = list(stdq.data_dir.rglob("job*.txt"))
    assert len(raw) == 1 and raw[0].read_text() == text
    assert info["rows"] == text.count("\n") - 1
    frame, _ = read_result(text.encode())
    assert info["detections"] == int((frame["uJy"] / frame["duJy"] >= 3).sum())
    shown = json.loads(stdq.run("--json", "jobs", "show", str(info["job_id"])).stdout)
    kinds = [e["message"] for e in shown["events"]]
    assert any("queued, position" in m for m in kinds) and any("running" in m for m in kinds)
    assert shown["checkpoint"]["task_url"].endswith(f"/queue/{task_id}/")
    assert shown["checkpoint"]["deleted"] is True
    meta = json.loads((raw[0].parent.parent / "product.json").read_text())
    assert meta["service_notes"]["atlas_task"]["id"] == task_id
    assert meta["processor"]["cuts"] == {
        "snr_threshold": 3.0, "limit_nsigma": 3.0, "chi2_max": 10.0, "dujy_max": 160.0,
    }
    assert_token_nowhere(stdq, result.stdout, result.stderr, json.dumps(shown))


def test_form_options_reach_the_server(atlas):
    stdq, emulator = atlas
    result = stdq.run(
        "query", "atlas", *POS, "--date-min", "2023-05-01", "--mjd-max", "60200", "--reduced",
        "--radec-epoch", "2016.0", "--pm-ra", "-3.5", "--pm-dec", "1.25", "--sync",
        "-o", "out.csv",
    )
    assert result.returncode == 0, result.stderr
    form = forms(stdq)[0]
    # 2023-05-01T00:00Z is MJD 60065 (40587 + 19478 days since 1970-01-01)
    assert float(form["mjd_min"]) == 60065.0 and float(form["mjd_max"]) == 60200.0
    assert form["use_reduced"] == "true"
    assert form["radec_epoch_year"] == "2016.0"
    assert float(form["propermotion_ra"]) == -3.5 and float(form["propermotion_dec"]) == 1.25
    table = (stdq.tmp / "out.csv").read_text().splitlines()
    header = table[0].split(",")
    kinds = {line.split(",")[header.index("flux_kind")] for line in table[1:]}
    assert kinds == {"total"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--mjd-min", "60000", "--date-min", "2023-01-01"), "not both"),
        (("--mjd-min", "60100", "--mjd-max", "60000"), "empty"),
        (("--pm-ra", "3"), "--radec-epoch"),
        (("--radec-epoch", "1800", "--pm-ra", "1"), "plausible"),
        (("--stack", "weekly"), "weekly"),
    ],
)
def test_bad_options_exit_2(atlas, args, words):
    stdq, _ = atlas
    result = stdq.run("query", "atlas", *POS, *args, "--sync")
    assert words in assert_clean_error(result, 2) or words in result.stderr
    assert not log(stdq)


def test_help_documents_the_mjd_min_default(atlas):
    stdq, _ = atlas
    result = stdq.run("query", "atlas", "--help")
    assert result.returncode == 0
    assert "57000" in result.stdout and "full ATLAS history" in " ".join(result.stdout.split())


def test_429_waits_as_the_server_says(atlas, recorded_waits):
    stdq, emulator = atlas
    server = stdq.server
    plural = json.dumps({"detail": "Request was throttled. Expected available in 2 seconds."})
    singular = json.dumps({"detail": "Request was throttled. Expected available in 1 second."})
    server.add_fault("429", r"/queue/$", method="POST", retry_after=None, body=plural)
    server.add_fault("429", r"/queue/$", method="POST", retry_after=None, body=singular)
    # a poll: Retry-After says 2 s, the text 1 s: the header wins
    server.add_fault("429", r"/queue/\d+/$", method="GET", retry_after=2, body=singular)
    result = stdq.run("-v", "query", "atlas", *POS, "--sync")
    assert result.returncode == 0, result.stderr
    posts = log(stdq, "POST", r"/queue/$")
    assert [r.status for r in posts] == [429, 429, 201]
    assert len(emulator.tasks) == 1
    # "in 2 seconds", "in 1 second" (singular), one poll_interval after the submission's
    # answer (the first look), then the poll's Retry-After: 2
    assert recorded_waits[:4] == [2.0, 1.0, 0.1, 2.0]
    polls = log(stdq, "GET", r"/queue/\d+/$")
    assert polls[0].status == 429 and polls[1].status != 429
    assert "retry 1/2 in 2.0 s" in result.stderr and "retry 2/2 in 1.0 s" in result.stderr


def test_throttled_past_the_retries_is_temporary(atlas, recorded_waits):
    stdq, emulator = atlas
    stdq.server.add_fault("429", r"/queue/$", method="POST", retry_after=1, times=3)
    result = stdq.run("query", "atlas", *POS, "--sync")
    line = assert_clean_error(result, 75)
    assert "429" in result.stderr and "try again later" in result.stderr, line
    assert not emulator.tasks and recorded_waits == [1.0, 1.0]
    assert len(log(stdq, "POST", r"/queue/$")) == 3  # a 429 is a refusal: sending again is safe


def test_full_queue_exits_75_at_once(atlas):
    stdq, emulator = atlas
    emulator.max_user_tasks = 0
    result = stdq.run("query", "atlas", *POS, "--sync")
    assert_clean_error(result, 75)
    assert "the ATLAS queue is full" in result.stderr and "too many queued tasks" in result.stderr
    assert len(log(stdq, "POST")) == 1  # no retry in the foreground: it exits at once


def test_full_queue_as_429_is_recognised_by_its_text(atlas):
    stdq, emulator = atlas
    emulator.max_user_tasks = 0
    emulator.queue_full_status = 429
    result = stdq.run("query", "atlas", *POS, "--sync")
    assert_clean_error(result, 75)
    assert "the ATLAS queue is full" in result.stderr and len(log(stdq, "POST")) == 1


def test_refused_and_missing_token_exit_3_without_echo(atlas):
    stdq, emulator = atlas
    wrong = "f00dfeedf00dfeedf00dfeedf00dfeedf00dfeed"
    result = stdq.run("query", "atlas", *POS, "--sync", env={"STDQ_ATLAS_API_KEY": wrong})
    assert_clean_error(result, 3)
    assert "refused the credentials" in result.stderr and "Invalid token" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert_secret_nowhere(stdq.data_dir, [wrong])
    assert not emulator.tasks
    # the conventional variable is read too (STDQ_ATLAS_API_KEY would win over it)
    ok = stdq.run("query", "atlas", *POS, "--sync", "--force",
                  env={"ATLAS_FORCED_PHOTOMETRY_API_KEY": TEST_TOKEN})
    assert ok.returncode == 0, ok.stderr
    stdq.config_path.write_text(
        stdq.config_path.read_text().replace(f'api_key = "{TEST_TOKEN}"\n', "")
    )
    missing = stdq.run("query", "atlas", *POS, "--sync", "--force")
    assert_clean_error(missing, 3)
    assert "STDQ_ATLAS_API_KEY" in missing.stderr and "ATLAS_FORCED_PHOTOMETRY_API_KEY" in missing.stderr


def test_no_data_exits_5_and_cleans_up(atlas):
    stdq, emulator = atlas
    result = stdq.run("query", "atlas", "Empty Field", "--sync")
    assert_clean_error(result, 5)
    assert "no photometry" in result.stderr
    assert [t.deleted for t in emulator.tasks.values()] == [True]
    assert not list(stdq.data_dir.rglob("photometry.csv"))


def test_server_error_fails_with_its_text(atlas):
    stdq, emulator = atlas
    emulator.error_msg = "Could not parse the result file"
    result = stdq.run("query", "atlas", *POS, "--sync")
    assert_clean_error(result, 1)
    assert "Could not parse the result file" in result.stderr
    assert not log(stdq, "GET", "static")


def test_html_instead_of_the_result_is_temporary(atlas):
    stdq, emulator = atlas
    stdq.server.add_fault("html", r"/static/results/")
    result = stdq.run("query", "atlas", *POS, "--sync")
    assert_clean_error(result, 75)
    assert ("answered an HTML page where an ATLAS result file was expected: '<!DOCTYPE html>'"
            " (title '503 Service Unavailable')") in result.stderr
    assert not list(stdq.data_dir.rglob("photometry.csv")) and not list(stdq.data_dir.rglob("job*.txt"))
    assert not any(t.deleted for t in emulator.tasks.values())  # kept for the next attempt


def test_a_result_on_another_origin_is_not_fetched(atlas):
    stdq, emulator = atlas
    emulator.result_base = f"http://localhost:{stdq.server.port}{emulator.prefix}"
    result = stdq.run("query", "atlas", *POS, "--sync")
    assert_clean_error(result, 1)
    assert "another origin" in result.stderr and TEST_TOKEN not in result.stderr
    assert not log(stdq, "GET", "static")  # no request made, with or without the token
    assert all("authorization" in r.headers for r in log(stdq, path="/queue/"))


def test_lost_post_answer_adopts_the_created_task(atlas):
    stdq, emulator = atlas
    stdq.server.add_fault("truncate", r"/queue/$", method="POST")  # task created, answer cut
    result = stdq.run("--json", "query", "atlas", *POS, "--sync")
    assert result.returncode == 0, result.stderr
    assert len(emulator.tasks) == 1 and len(log(stdq, "POST")) == 1
    assert log(stdq, "GET", r"/queue/\?pagesize=100")  # it looked in the task list
    job = json.loads(stdq.run("--json", "jobs", "show", str(json.loads(result.stdout)["job_id"])).stdout)
    assert any("found the ATLAS task the failed send created" in e["message"] for e in job["events"])


# -- resuming a saved task (the library, in this process) -------------------------------


@pytest.fixture
def session(atlas, monkeypatch):
    stdq, emulator = atlas
    for var in ("STDQ_ATLAS_API_KEY", "ATLAS_FORCED_PHOTOMETRY_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with Stdq(stdq.config_path, stdq.data_dir) as s:
        yield stdq, emulator, s


def remote_task(emulator, comment: str) -> dict:
    response = httpx.post(
        f"{emulator.base_url}/queue/",
        data={"ra": SN.ra, "dec": SN.dec, "mjd_min": 57000.0, "comment": comment},
        headers={"Authorization": f"Token {TEST_TOKEN}"},
    )
    assert response.status_code == 201
    return response.json()


def remote_tasks(emulator, comments) -> None:
    """Tasks made by the user elsewhere (one connection for them all)."""
    with httpx.Client(headers={"Authorization": f"Token {TEST_TOKEN}"}) as client:
        for comment in comments:
            response = client.post(f"{emulator.base_url}/queue/",
                                   data={"ra": SN.ra, "dec": SN.dec, "comment": comment})
            assert response.status_code == 201


def inprocess_job(s, **checkpoint):
    job = s.submit("atlas", ra=SN.ra, dec=SN.dec, runner="inprocess")
    s.queue.save_checkpoint(job.id, checkpoint)
    return job.id


def lost_send(key: str) -> dict:
    """The checkpoint of a run whose submission with KEY may have reached the server."""
    return {"atlas_submit": {"key": key, "state": "unknown", "at": 0}}


def test_a_saved_task_is_resumed_never_submitted_again(session):
    stdq, emulator, s = session
    task = remote_task(emulator, "stdq job 1 0123456789ab")
    job_id = inprocess_job(s, task_url=task["url"], task_id=task["id"],
                           **lost_send("0123456789ab"))
    job = s.run(job_id)
    assert job.state == "succeeded" and job.rows > 0
    assert len(emulator.tasks) == 1 and len(log(stdq, "POST")) == 1  # only the test's own POST
    assert emulator.tasks[task["id"]].deleted


def test_a_task_whose_answer_was_lost_is_adopted(session):
    stdq, emulator, s = session
    task = remote_task(emulator, "stdq job 1 feedbeef0001")
    job_id = inprocess_job(s, **lost_send("feedbeef0001"))
    job = s.run(job_id)
    assert job.state == "succeeded"
    assert len(emulator.tasks) == 1 and job.checkpoint["task_id"] == task["id"]
    assert len(log(stdq, "POST")) == 1 and emulator.tasks[task["id"]].deleted


def test_a_key_is_matched_whole_not_as_a_substring(session):
    stdq, emulator, s = session
    other = remote_task(emulator, "stdq job 9 feedbeef0001ff")  # another job's key, longer
    job_id = inprocess_job(s, **lost_send("feedbeef0001"))
    job = s.run(job_id)
    assert job.state == "succeeded" and job.checkpoint["task_id"] != other["id"]
    assert len(emulator.tasks) == 2 and not emulator.tasks[other["id"]].deleted


def test_an_archived_task_fails_clearly_and_retry_submits_again(session):
    stdq, emulator, s = session
    task = remote_task(emulator, "stdq job 1 aaaabbbbcccc")
    emulator.archive(task["id"])
    job_id = inprocess_job(s, task_url=task["url"], task_id=task["id"],
                           **lost_send("aaaabbbbcccc"))
    job = s.run(job_id)
    assert job.state == "failed" and job.exit_code == 1
    assert f"ATLAS task {task['id']} no longer exists" in job.error
    assert len(log(stdq, "POST")) == 1  # nothing resubmitted silently
    s.retry(job_id)  # the user asks for it: now it submits anew
    job = s.run(job_id)
    assert job.state == "succeeded" and len(emulator.tasks) == 2


def test_other_users_task_is_not_deleted(session):
    stdq, emulator, s = session
    response = httpx.post(
        f"{emulator.base_url}/queue/", data={"ra": SN.ra, "dec": SN.dec, "mjd_min": 57000.0},
        headers={"Authorization": f"Token {OTHER_TOKEN}"},
    )
    task = response.json()
    job_id = inprocess_job(s, task_url=task["url"], task_id=task["id"])
    job = s.run(job_id)
    assert job.state == "succeeded"  # the data are kept ...
    assert not emulator.tasks[task["id"]].deleted  # ... the DELETE was refused (403)
    assert any("could not delete ATLAS task" in e.message for e in s.events(job_id))


# -- stdq config atlas-login ------------------------------------------------------------


def test_atlas_login_stores_only_the_token(atlas):
    stdq, emulator = atlas
    text = stdq.config_path.read_text().replace(f'api_key = "{TEST_TOKEN}"\n', "")
    stdq.config_path.write_text(text)
    refused = stdq.run("config", "atlas-login", "--username", TEST_USERNAME, "--password-stdin",
                       input="not the password\n")
    assert_clean_error(refused, 3)
    assert "not the password" not in refused.stderr + refused.stdout
    result = stdq.run("config", "atlas-login", "--username", TEST_USERNAME, "--password-stdin",
                      input=TEST_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    stored = stdq.config_path.read_text()
    assert f'api_key = "{TEST_TOKEN}"' in stored and TEST_PASSWORD not in stored
    assert TEST_TOKEN not in result.stdout + result.stderr
    assert stdq.config_path.stat().st_mode & 0o777 == 0o600
    (login,) = log(stdq, "POST", "api-token-auth")[-1:]
    assert "authorization" not in login.headers
    query = stdq.run("query", "atlas", *POS, "--sync")
    assert query.returncode == 0, query.stderr
    shown = stdq.run("config", "show")
    assert TEST_TOKEN not in shown.stdout


def test_services_show_lists_the_cuts_and_limits(atlas):
    stdq, _ = atlas
    result = stdq.run("--json", "services", "show", "atlas")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for key in ("poll_interval", "max_poll_interval", "snr_threshold", "limit_nsigma", "chi2_max",
                "dujy_max", "writes_per_minute", "reads_per_minute", "rate_window"):
        assert key in text
    assert TEST_TOKEN not in text


def test_nightly_stack_through_the_cli(atlas):
    stdq, emulator = atlas
    result = stdq.run("--json", "query", "atlas", *POS, "--mjd-max", "60100", "--stack", "nightly",
                      "--sync", "-o", "stacked.csv")
    assert result.returncode == 0, result.stderr
    raw = next(stdq.data_dir.rglob("job*.txt")).read_text().splitlines()[1:]
    # one row per (night and unit from Obs, filter), counted from the raw file here
    bins = {(line.split()[18][:8], line.split()[5]) for line in raw}
    assert json.loads(result.stdout)["rows"] == len(bins)
    lines = (stdq.tmp / "stacked.csv").read_text().splitlines()
    header = lines[0].split(",")
    combined = [int(line.split(",")[header.index("n_combined")]) for line in lines[1:]]
    flagged = [int(line.split(",")[header.index("atlas_n_flagged")]) for line in lines[1:]]
    assert sum(combined) + sum(flagged) == len(raw) and max(combined) == 4


# -- the task list's pages and the server's two 404s ------------------------------------------


def test_a_lost_task_is_found_on_a_later_page_of_the_task_list(session):
    stdq, emulator, s = session
    emulator.write_limit = emulator.read_limit = 0
    emulator.hold = True
    task = remote_task(emulator, "stdq job 1 0a0b0c0d0e0f")
    remote_tasks(emulator, [f"another task {i}" for i in range(230)])  # the lost one: page 3
    emulator.hold = False
    job_id = inprocess_job(s, **lost_send("0a0b0c0d0e0f"))
    job = s.run(job_id)
    assert job.state == "succeeded" and job.checkpoint["task_id"] == task["id"]
    pages = log(stdq, "GET", r"/queue/\?")
    assert len(pages) == 3 and "cursor=" in pages[2].path  # it followed `next` twice
    assert len(log(stdq, "POST")) == 231  # only the test's own tasks: nothing resubmitted


def test_a_next_page_on_another_origin_is_not_followed(session):
    stdq, emulator, s = session
    emulator.write_limit = 0
    emulator.hold = True
    remote_tasks(emulator, [f"another task {i}" for i in range(120)])  # two pages
    emulator.list_origin = f"http://localhost:{stdq.server.port}"  # e.g. a proxy's own name
    job_id = inprocess_job(s, **lost_send("0a0b0c0d0e0f"))
    job = s.run(job_id)
    assert job.state == "failed" and job.exit_code == 1
    assert "the task list names its next page on another origin" in job.error
    assert len(log(stdq, "GET", r"/queue/\?")) == 1 and len(log(stdq, "POST")) == 120  # nothing sent
    assert all(r.headers.get("host", "").startswith("127.0.0.1") for r in log(stdq))


def test_a_finished_task_is_archived_by_the_delete_after_the_download(atlas):
    stdq, emulator = atlas
    result = stdq.run("query", "atlas", *POS, "--sync")
    assert result.returncode == 0, result.stderr
    (task,) = emulator.tasks.values()
    assert task.archived and not task.removed  # the server keeps a finished task, hidden
    assert [r.status for r in log(stdq, "DELETE")] == [204]


@pytest.mark.parametrize("finished, words", [
    (True, "archived: it was deleted after it finished"),
    (False, "deleted before it finished"),
])
def test_a_task_deleted_elsewhere_names_which_404_it_was(session, finished, words):
    stdq, emulator, s = session
    emulator.hold = not finished
    task = remote_task(emulator, "stdq job 1 aaaabbbbcccc")
    if finished:
        emulator.queue_seconds = emulator.run_seconds = 0.0
    httpx.get(task["url"])  # the emulator moves on
    httpx.delete(task["url"], headers={"Authorization": f"Token {TEST_TOKEN}"})  # the web page
    job_id = inprocess_job(s, task_url=task["url"], task_id=task["id"])
    job = s.run(job_id)
    assert job.state == "failed" and job.exit_code == 1
    assert f"ATLAS task {task['id']} no longer exists on the server ({words})" in job.error
    assert emulator.tasks[task["id"]].archived is finished


def test_a_404_page_that_is_not_the_servers_keeps_the_task(session):
    stdq, emulator, s = session
    emulator.hold = True
    task = remote_task(emulator, "stdq job 1 aaaabbbbcccc")
    emulator.handle = lambda request: Response.text(  # this test's server only
        "<html><body>Proxy: no such page</body></html>", 404, "text/html")
    job_id = inprocess_job(s, task_url=task["url"], task_id=task["id"])
    job = s.run(job_id)
    assert job.state == "failed" and job.exit_code == 75
    assert "answered HTTP 404 with a page that is not the server's" in job.error
    assert job.checkpoint["task_url"] == task["url"]  # kept: the next attempt polls it again
