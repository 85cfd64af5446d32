"""The ATLAS emulator answers as wire-formats.md section 1 says the real server does."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from conftest import REALDATA, needs_realdata
from stdq.testing import sky
from stdq.testing.atlas import (
    OTHER_TOKEN,
    TASK_FIELDS,
    TEST_PASSWORD,
    TEST_TOKEN,
    TEST_USERNAME,
    result_text,
)

SN = sky.find("SN 2023ixf")


class Clock:
    """The emulator's time (its ``clock``), moved on by the test: nothing sleeps."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def atlas(fake_server, clock):
    emulator = fake_server.emulator("atlas")
    emulator.clock = clock.time
    emulator.queue_seconds = 0.3
    emulator.run_seconds = 0.3
    client = httpx.Client(base_url=emulator.base_url, headers={"Authorization": f"Token {TEST_TOKEN}"})
    yield emulator, client
    client.close()


def submit(client, **fields):
    form = {"ra": SN.ra, "dec": SN.dec, "mjd_min": 60000, "send_email": "false", **fields}
    return client.post("/queue/", data=form)


def wait_finished(client, url, clock: Clock, timeout=10.0):
    """Poll the task every 0.1 s of the emulator's clock until it has finished."""
    deadline = clock.now + timeout
    while clock.now < deadline:
        task = client.get(url).json()
        if task["finishtimestamp"]:
            return task
        clock.sleep(0.1)
    raise AssertionError("the task did not finish")


def test_task_lifecycle(atlas, clock):
    emulator, client = atlas
    response = submit(client, comment="stdq job 1 abc")
    assert response.status_code == 201
    task = response.json()
    assert list(task) == list(TASK_FIELDS)  # every field, in the server's order
    assert response.headers["Location"] == task["url"] == f"{emulator.base_url}/queue/{task['id']}/"
    assert task["mjd_min"] == 60000 and task["use_reduced"] is False and task["send_email"] is False
    assert task["queuepos"] >= 0 and task["finishtimestamp"] is None and task["result_url"] is None
    assert task["timestamp"].endswith("Z") and "." not in task["timestamp"]
    first = client.get(task["url"])
    etag = first.headers["ETag"]
    again = client.get(task["url"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    done = wait_finished(client, task["url"], clock)
    assert done["error_msg"] is None and done["queuepos"] is None
    assert done["result_url"] == f"{emulator.base_url}/static/results/job{task['id']:05d}.txt"
    result = client.get(done["result_url"])
    assert result.status_code == 200 and result.text == emulator.result_file(SN.ra, SN.dec, 60000, None, False)
    deleted = client.delete(task["url"])
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(task["url"]).status_code == 404


def test_token_auth_and_ownership(atlas):
    emulator, client = atlas
    login = httpx.post(
        f"{emulator.base_url}/api-token-auth/", data={"username": TEST_USERNAME, "password": TEST_PASSWORD}
    )
    assert login.json() == {"token": TEST_TOKEN}
    refused = httpx.post(
        f"{emulator.base_url}/api-token-auth/", data={"username": TEST_USERNAME, "password": "nope"}
    )
    assert refused.status_code == 400
    assert refused.json() == {"non_field_errors": ["Unable to log in with provided credentials."]}
    bad = httpx.post(f"{emulator.base_url}/queue/", data={"ra": 1, "dec": 2},
                     headers={"Authorization": "Token 0000"})
    assert bad.status_code == 401 and bad.json() == {"detail": "Invalid token."}
    anonymous = httpx.post(f"{emulator.base_url}/queue/", data={"ra": 1, "dec": 2})
    assert anonymous.status_code == 401
    task = submit(client).json()
    assert httpx.get(task["url"]).status_code == 200  # reading a task is public
    other = httpx.delete(task["url"], headers={"Authorization": f"Token {OTHER_TOKEN}"})
    assert other.status_code == 403
    assert other.json() == {"detail": "You must be the owner of this object."}


def test_validation_queue_limit_and_list(atlas):
    emulator, client = atlas
    assert submit(client, mjd_min=60010, mjd_max=60000).json() == {
        "mjd_max": ["mjd_max must be greater than mjd_min (60010.0 was applied)."]
    }
    emulator.hold = True
    emulator.max_user_tasks = 2
    assert submit(client).status_code == 201 and submit(client).status_code == 201
    full = submit(client)
    assert full.status_code == 400
    assert full.json() == {
        "non_field_errors": "ERROR: You have too many queued tasks (2 queued + 1 requested > 2)."
    }
    listing = client.get("/queue/", params={"pagesize": 1}).json()
    assert listing["taskcount"] == 2 and len(listing["results"]) == 1
    assert listing["results"][0]["id"] == max(emulator.tasks)  # newest first


def test_queue_position_counts_down_and_hold(atlas, clock):
    emulator, client = atlas
    emulator.queue_seconds = 1.0
    emulator.queue_ahead = 4
    first = submit(client).json()
    assert first["queuepos"] == 4
    second = submit(client).json()
    assert second["queuepos"] == 5  # the first task is ahead of it
    emulator.hold = True
    clock.sleep(1.2)
    assert client.get(second["url"]).json()["starttimestamp"] is None
    emulator.hold = False
    assert wait_finished(client, second["url"], clock)["error_msg"] is None


def test_throttle_texts_and_windows(atlas):
    emulator, client = atlas
    emulator.write_limit = 2
    emulator.throttle_window = 30.0
    assert submit(client).status_code == 201 and submit(client).status_code == 201
    throttled = submit(client)
    assert throttled.status_code == 429
    seconds = int(throttled.headers["Retry-After"])
    assert 28 <= seconds <= 30
    assert throttled.json() == {"detail": f"Request was throttled. Expected available in {seconds} seconds."}
    emulator.throttle_window = 0.9  # the oldest write leaves the window in under a second
    emulator._history.clear()
    submit(client), submit(client)
    singular = submit(client)
    assert singular.status_code == 429 and singular.headers["Retry-After"] == "1"
    assert singular.json() == {"detail": "Request was throttled. Expected available in 1 second."}
    emulator.read_limit = 1
    emulator.throttle_window = 30.0
    assert client.get("/queue/").status_code == 200
    assert client.get("/queue/").status_code == 429  # reads are counted on their own


def test_no_data_and_forced_errors(atlas, clock):
    emulator, client = atlas
    empty = sky.find("Empty Field")
    task = client.post("/queue/", data={"ra": empty.ra, "dec": empty.dec}).json()
    done = wait_finished(client, task["url"], clock)
    assert done["error_msg"] == "No data returned" and done["result_url"] is None
    emulator.error_msg = "Could not parse the result file"
    done = wait_finished(client, submit(client).json()["url"], clock)
    assert done["error_msg"] == "Could not parse the result file" and done["result_url"] is None


@needs_realdata
def test_result_file_in_the_real_format():
    real = (REALDATA / "atlas" / "job01088.txt").read_text().splitlines()
    made = result_text(SN.ra, SN.dec, None, None, False).splitlines()
    assert made[0] == real[0]  # the exact header line
    # every row lines its fields up as the real rows do: the same column ends
    def ends(text):
        return tuple(m.end() for m in re.finditer(r"\S+", text))

    assert {ends(r) for r in made[1:]} == {ends(r) for r in real[1:]}
    fields = [r.split() for r in made[1:]]
    assert {f[18][:3] for f in fields} == {"01a", "02a", "03a", "04a", "05r"}
    assert {f[5] for f in fields} == {"c", "o", "w"}
    assert any(float(f[1]) < 0 and int(f[3]) < 0 for f in fields)  # negative flux, negative m
    assert any(int(f[6]) != 0 for f in fields)
    assert any(float(f[7]) > 10 for f in fields) and any(int(f[4]) > 160 for f in fields)
    nights = {}
    for f in fields:
        nights.setdefault(f[18][:8], []).append(f)
    assert {len(v) for v in nights.values()} == {4}  # four exposures a night
    assert [float(f[0]) for f in fields] == sorted(float(f[0]) for f in fields)


# -- DELETE and the task list, as the server's code does them (views.py, models.py, pagination.py) --


def test_delete_archives_a_finished_task_and_removes_an_unfinished_one(atlas, clock):
    emulator, client = atlas
    finished = submit(client).json()
    done = wait_finished(client, finished["url"], clock)
    emulator.hold = True
    queued = submit(client).json()

    assert client.delete(finished["url"]).status_code == 204
    gone = client.get(finished["url"])  # archived: the plain text of Django's HttpResponseNotFound
    assert gone.status_code == 404 and gone.text == "Page not found"
    assert "application/json" not in gone.headers["Content-Type"]
    again = client.delete(finished["url"])  # the row is still there: archived once more
    assert again.status_code == 204 and again.content == b""
    assert client.get(done["result_url"]).status_code == 404  # its result file went with it
    assert emulator.tasks[finished["id"]].archived and not emulator.tasks[finished["id"]].removed

    assert client.delete(queued["url"]).status_code == 204
    for answer in (client.get(queued["url"]), client.delete(queued["url"])):
        assert answer.status_code == 404
        assert answer.json() == {"detail": "No Task matches the given query."}
    assert emulator.tasks[queued["id"]].removed

    listing = client.get("/queue/").json()
    assert listing["taskcount"] == 0 and listing["results"] == []  # neither is listed


def test_the_task_list_pages_with_absolute_cursor_links(atlas):
    import base64
    from urllib.parse import parse_qs, urlsplit

    emulator, client = atlas
    emulator.hold = True
    made = [submit(client, comment=f"task {i}").json()["id"] for i in range(13)]
    seen, url, pages = [], f"{emulator.base_url}/queue/?pagesize=5", []
    while url:
        page = client.get(url)
        assert page.status_code == 200 and page.headers["ETag"]
        data = page.json()
        assert list(data) == ["next", "previous", "pagefirsttaskposition", "taskcount", "results"]
        assert data["taskcount"] == 13 and data["pagefirsttaskposition"] == len(seen)
        seen += [task["id"] for task in data["results"]]
        pages.append(data)
        url = data["next"]
        if url:  # absolute, the request's own URL with a base64 cursor "p=<last id of the page>"
            assert url.startswith(emulator.base_url + "/queue/?")
            query = parse_qs(urlsplit(url).query)
            assert query["pagesize"] == ["5"]
            assert base64.b64decode(query["cursor"][0]).decode() == f"p={seen[-1]}"
    assert seen == sorted(made, reverse=True) and [len(p["results"]) for p in pages] == [5, 5, 3]
    assert pages[0]["previous"] is None
    assert pages[1]["previous"] == f"{emulator.base_url}/queue/?pagesize=5"  # near the top: no cursor
    back = client.get(pages[2]["previous"]).json()  # a reverse cursor
    assert [t["id"] for t in back["results"]] == seen[5:10]
    ascending = client.get("/queue/", params={"pagesize": 100, "ordering": "id"}).json()
    assert [t["id"] for t in ascending["results"]] == sorted(made) and ascending["next"] is None
    assert client.get("/queue/", params={"started": "true"}).json()["taskcount"] == 0
    assert client.get("/queue/", params={"started": "false"}).json()["taskcount"] == 13
    bad = client.get("/queue/", params={"cursor": "not base64!"})
    assert bad.status_code == 404 and bad.json() == {"detail": "Invalid cursor"}
    etag = client.get("/queue/").headers["ETag"]  # the user's whole list, the same on every page
    assert client.get("/queue/", headers={"If-None-Match": etag}).status_code == 304
    emulator.list_origin = "https://proxy.example.org"
    assert client.get(f"{emulator.base_url}/queue/?pagesize=5").json()["next"].startswith(
        "https://proxy.example.org/atlas/forcedphot/queue/?pagesize=5&cursor="
    )
