"""The in-process `stdq` of the tests (conftest.StdqRunner.run) answers as the installed
command does: same exit code, stdout and stderr, and leaves no state behind."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from conftest import StdqRunner

COMMANDS = [
    ["--help"],
    ["--version"],
    ["query", "--help"],
    ["jobs", "list"],
    ["--json", "jobs", "list"],
    ["query", "nosuch", "--ra", "1", "--dec", "1"],
    ["query", "panstarrs", "--ra", "1"],
    ["jobs", "show", "99"],
    ["services", "list"],
    ["--json", "services", "show", "panstarrs"],
    ["targets", "list"],
    ["--config", "missing.toml", "jobs", "list"],
]


@pytest.fixture
def twin(tmp_path, fake_server) -> tuple[StdqRunner, StdqRunner]:
    """Two runners on the same emulators, each with its own (identically named) folder."""
    runners = []
    for side in ("a", "b"):
        tmp = tmp_path / side / "t"
        (tmp / "home").mkdir(parents=True)
        runner = StdqRunner(server=fake_server, tmp=tmp, config_path=tmp / "config.toml", data_dir=tmp / "data")
        runner.write_settings()
        runners.append(runner)
    return runners[0], runners[1]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_in_process_equals_the_installed_command(twin, args):
    inproc, real = twin
    a = inproc.run(*args)
    b = real.run_process(*args)

    def same(text: str, runner: StdqRunner) -> str:
        return text.replace(str(runner.tmp), "<tmp>")

    assert (a.returncode, same(a.stdout, inproc), same(a.stderr, inproc)) == (
        b.returncode, same(b.stdout, real), same(b.stderr, real)
    )


def test_a_run_leaves_no_state_behind(stdq):
    environ, cwd = dict(os.environ), os.getcwd()
    handlers = list(logging.root.handlers)
    levels = {name: logging.getLogger(name).level for name in ("stdq", "httpx")}
    sigint = signal.getsignal(signal.SIGINT)
    stdq.extra_env["STDQ_EXTRA_TEST_VARIABLE"] = "1"
    result = stdq.run("-v", "--json", "jobs", "list")
    assert result.returncode == 0, result.stderr
    assert dict(os.environ) == environ and os.getcwd() == cwd
    assert logging.root.handlers == handlers
    assert {name: logging.getLogger(name).level for name in levels} == levels
    assert signal.getsignal(signal.SIGINT) is sigint


def test_a_run_that_outlives_its_timeout_is_interrupted(stdq):
    import subprocess

    stdq.write_settings("\n[tasks]\nautostart_worker = false\n")
    submitted = stdq.run("query", "panstarrs", "--ra", "1", "--dec", "1", "--background")
    assert submitted.returncode == 0, submitted.stderr
    with pytest.raises(subprocess.TimeoutExpired):
        stdq.run("jobs", "wait", submitted.stdout.strip(), timeout=0.3)  # no worker will come
