"""`--json` before the command (`stdq --json jobs list`) and after it (`stdq jobs list --json`)
give the same output, for every command that prints a result; in this process, against
the fake service of tests/plugins/fake_phot.py (no HTTP)."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT

PLUGINS = ROOT / "tests" / "plugins"
SETTINGS = """
[services.fake]
class = "fake_phot:FakeService"

[data_processors]
fake_photometry = "fake_phot:FakeProcessor"

[tasks]
autostart_worker = false
"""
STAR = ["Test Star", "--ra", "10", "--dec", "20"]

EMULATORS = list  # no emulator: the fake service does no HTTP


@pytest.fixture
def runner(stdq):
    stdq.write_settings(SETTINGS)
    stdq.extra_env["PYTHONPATH"] = str(PLUGINS)
    return stdq


def both(runner, *args: str, after_index: int | None = None):
    """Run ARGS with --json first and with --json at the end (or at AFTER_INDEX)."""
    before = runner.run("--json", *args)
    tail = list(args)
    tail.insert(len(tail) if after_index is None else after_index, "--json")
    after = runner.run(*tail)
    return before, after


def assert_same(runner, *args: str, code: int = 0):
    before, after = both(runner, *args)
    assert before.returncode == after.returncode == code, (before, after)
    assert before.stdout == after.stdout
    return json.loads(before.stdout) if before.stdout.strip() else None


@pytest.fixture
def made(runner):
    """One finished in-process job of the fake service, its product and a local target."""
    out = runner.run("--json", "query", "fake", *STAR)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert runner.run("targets", "add", "Other Star", "--ra", "11", "--dec", "21").returncode == 0
    return info


def test_query_foreground_json_after_the_command(runner):
    """Today's bug: `stdq query SERVICE ... --json` was a usage error that suggested --sync."""
    before, after = both(runner, "query", "fake", *STAR, "--force")
    assert before.returncode == after.returncode == 0, after.stderr
    first, second = json.loads(before.stdout), json.loads(after.stdout)
    assert second["job_id"] == first["job_id"] + 1  # a second job, the same answer
    for key in ("job_id", "product_id", "path", "products"):
        first.pop(key), second.pop(key)
    assert first == second and first["rows"] == 5 and first["detections"] == 3


def test_query_background_json_after(runner):
    before, after = both(runner, "query", "fake", *STAR, "--background")
    assert before.returncode == after.returncode == 0, after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)  # the same queued job
    assert json.loads(before.stdout)["state"] == "queued"


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "list"],
        ["jobs", "list", "--state", "succeeded"],
        ["jobs", "status"],
        ["jobs", "status", "{job}"],
        ["jobs", "show", "{job}"],
        ["jobs", "logs", "{job}"],
        ["jobs", "wait", "{job}"],
        ["jobs", "result", "{job}"],
        ["jobs", "prune", "--older-than", "30d"],
        ["products", "list"],
        ["products", "list", "test star"],
        ["products", "show", "{product}"],
        ["products", "reprocess", "{product}"],
        ["targets", "list"],
        ["targets", "show", "Other Star"],
        ["services", "list"],
        ["services", "show", "fake"],
        ["config", "path"],
        ["config", "show"],
    ],
    ids=lambda a: " ".join(a),
)
def test_json_before_and_after_give_the_same_output(runner, made, args):
    args = [a.format(job=made["job_id"], product=made["product_id"]) for a in args]
    data = assert_same(runner, *args)
    assert data is not None


def test_json_of_changing_commands(runner, made):
    first, second = both(runner, "targets", "add", "Third Star", "--ra", "12", "--dec", "22")
    assert first.returncode == second.returncode == 0
    added, again = json.loads(first.stdout), json.loads(second.stdout)
    assert again.pop("created_at") >= added.pop("created_at")  # replaced: added again
    assert again.pop("created_at_unix") >= added.pop("created_at_unix")
    assert added == again and (added["name"], added["ra"], added["dec"]) == ("Third Star", 12.0, 22.0)
    before, after = both(runner, "targets", "rm", "Third Star")
    assert json.loads(before.stdout) == {"removed": "Third Star"}
    assert after.returncode == 2 and "no local target" in after.stderr  # removed already
    queued = json.loads(runner.run("--json", "query", "fake", *STAR, "--background", "--force").stdout)
    first, second = both(runner, "jobs", "cancel", str(queued["job_id"]))
    assert first.returncode == second.returncode == 0
    assert json.loads(first.stdout)["state"] == json.loads(second.stdout)["state"] == "cancelled"
    assert "already cancelled" in second.stderr


def test_no_data_and_errors_keep_their_codes(runner, made):
    unknown = both(runner, "jobs", "show", "999")
    assert [r.returncode for r in unknown] == [2, 2]
    assert unknown[0].stdout == unknown[1].stdout == ""


def test_json_in_the_help_of_every_command(runner):
    for args in (["query", "fake"], ["jobs", "list"], ["products", "show"], ["targets", "resolve"], ["demo"]):
        result = runner.run(*args, "--help")
        assert result.returncode == 0 and "--json" in result.stdout, args
