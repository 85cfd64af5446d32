"""Shared fixtures: the emulators on 127.0.0.1, and `stdq` run in this process (click's
CliRunner isolation around `stdq.cli.main`) or, for tests that need one, as a real process."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stdq.testing.fakeserver import FakeServer, settings_toml

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
STDQ_BIN = Path(sys.executable).with_name("stdq")
# CI has ../shared beside the project: there a missing realdata folder is a failure, not a skip.
REALDATA_REQUIRED = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
# Set to 1 to run every `stdq.run(...)` as a real process (to compare the two ways).
FORCE_SUBPROCESS = os.environ.get("PYTEST_STDQ_SUBPROCESS", "") == "1"
# Variables of the calling environment that never reach a `stdq` under test.
SCRUBBED = ("ATLAS_FORCED_PHOTOMETRY_API_KEY", "MAST_API_TOKEN")

try:  # property tests (hypothesis, in the test extra): no per-example deadline on a shared machine
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - the test extra installs it
    pass
else:
    _hypothesis_settings.register_profile("stdq", deadline=None, print_blob=True)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "stdq"))

needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir() and not REALDATA_REQUIRED, reason="../shared/realdata is not beside the project"
)


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        if REALDATA_REQUIRED:
            pytest.fail(f"CI: {REALDATA} is missing")
        pytest.skip("../shared/realdata is not beside the project")
    return REALDATA


@pytest.fixture
def fake_server(request):
    """The emulators, fresh for each test: every one of stdq.testing, or those a test
    module lists in its ``EMULATORS`` (a function returning Emulator instances)."""
    make = getattr(request.module, "EMULATORS", None)
    server = FakeServer(make() if make else None).start()
    try:
        yield server
    finally:
        server.stop()


# -- running `stdq` in this process ---------------------------------------------------------


def _scrubbed_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STDQ_") and k not in SCRUBBED}


# Loggers a run finds as in a fresh process (whatever an earlier CliRunner.invoke set).
FRESH_LOGGERS = ("stdq", "httpx", "httpcore")


@contextlib.contextmanager
def _logging_isolated() -> Iterator[None]:
    """The CLI configures logging as in a fresh process (no pytest handlers on the root
    logger, stdq's and httpx's loggers untouched); afterwards every logger is as it was,
    and handlers the run added are closed."""
    manager = logging.root.manager
    before = {
        name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
        for name, lg in manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    root = (logging.root.level, list(logging.root.handlers))
    logging.root.handlers = []
    logging.root.setLevel(logging.WARNING)
    for name, lg in manager.loggerDict.items():
        if isinstance(lg, logging.Logger) and name.split(".")[0] in FRESH_LOGGERS:
            lg.setLevel(logging.NOTSET)
            lg.handlers = []
            lg.propagate = True
            lg.disabled = False
    try:
        yield
    finally:
        added = [h for h in logging.root.handlers if h not in root[1]]
        logging.root.handlers = root[1]
        logging.root.setLevel(root[0])
        for name, lg in manager.loggerDict.items():
            if not isinstance(lg, logging.Logger):
                continue
            if name in before:
                level, handlers, propagate, disabled = before[name]
            else:
                level, handlers, propagate, disabled = logging.NOTSET, [], True, False
            added += [h for h in lg.handlers if h not in handlers]
            lg.setLevel(level)
            lg.handlers = handlers
            lg.propagate = propagate
            lg.disabled = disabled
        for handler in added:
            with contextlib.suppress(Exception):
                handler.close()


@contextlib.contextmanager
def _import_path(pythonpath: str | None) -> Iterator[None]:
    """PYTHONPATH of the environment on sys.path for the run; modules imported from it
    during the run are forgotten afterwards (the next run may see other files there)."""
    entries = [p for p in (pythonpath or "").split(os.pathsep) if p]
    if not entries:
        yield
        return
    saved_path = list(sys.path)
    known = set(sys.modules)
    sys.path[:0] = entries
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = saved_path
        roots = [str(Path(p).resolve()) for p in entries]
        for name in [n for n in sys.modules if n not in known]:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if any(origin.startswith(r) for r in roots):
                del sys.modules[name]
        importlib.invalidate_caches()


def _click_groups() -> dict[Any, dict[str, Any]]:
    """Every click group of the loaded stdq.cli modules, with a copy of its commands."""
    import click

    groups: dict[Any, dict[str, Any]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "stdq.cli" or name.startswith("stdq.cli.")):
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, click.Group):
                groups[obj] = dict(obj.commands)
    return groups


def reset_stdq_state() -> None:
    """Forget what a run left in stdq's modules: every functools cache (entry points,
    registries, settings) is cleared."""
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "stdq" or name.startswith("stdq.")):
            continue
        for obj in list(vars(module).values()):
            clear = getattr(obj, "cache_clear", None)
            if callable(clear) and getattr(obj, "__module__", None) == name:
                clear()


def _help_width(columns: str | None) -> int:
    """click's help width in a process without a terminal: COLUMNS, else 80, at most 80, less 2."""
    try:
        width = int(columns) if columns else 80
    except ValueError:
        width = 80
    return max(min(width, 80) - 2, 50)


def run_in_process(
    args: list[str],
    *,
    env: Mapping[str, str | None],
    cwd: Path,
    input: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """`stdq ARGS` through `stdq.cli.main` in this process, isolated like a fresh process:
    stdin/stdout/stderr captured apart (click's CliRunner), ENV applied to os.environ
    (None removes a variable), CWD as the working directory, logging, signal handlers,
    warnings filters, sys.path, click groups and stdq's caches restored afterwards.
    A run longer than TIMEOUT is interrupted (SIGINT) and raises subprocess.TimeoutExpired."""
    from click import formatting
    from click.testing import CliRunner

    from stdq.cli import main

    argv = [str(a) for a in args]
    saved_environ = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_signals = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    groups = _click_groups()
    reset_stdq_state()  # also what tests calling stdq directly left cached
    timed_out = threading.Event()
    timer = None
    if timeout and threading.current_thread() is threading.main_thread():
        def interrupt() -> None:
            timed_out.set()
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(timeout, interrupt)
        timer.daemon = True
    code: int = 0
    runner = CliRunner()
    try:
        with (
            runner.isolation(input=input, env=dict(env)) as (out, err, _),
            _logging_isolated(),
            warnings.catch_warnings(),
            _import_path(os.environ.get("PYTHONPATH")),
        ):
            os.chdir(cwd)
            # help text as wide as in a process whose stdout is a pipe (CliRunner forces 80)
            formatting.FORCED_WIDTH = _help_width(os.environ.get("COLUMNS"))
            if timer is not None:
                timer.start()
            try:
                main(argv)
            except SystemExit as exc:
                if exc.code is None:
                    code = 0
                elif isinstance(exc.code, int):
                    code = exc.code
                else:
                    sys.stderr.write(f"{exc.code}\n")
                    code = 1
            except KeyboardInterrupt:
                if not timed_out.is_set():
                    raise
                code = 130
            except Exception:  # as the interpreter would: the traceback on stderr, exit 1
                sys.stderr.write(traceback.format_exc())
                code = 1
            finally:
                if timer is not None:
                    timer.cancel()
            sys.stdout.flush()
            sys.stderr.flush()
            stdout = out.getvalue().decode("utf-8", "replace")
            stderr = err.getvalue().decode("utf-8", "replace")
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)
        for sig, handler in saved_signals.items():
            if handler is not None:
                signal.signal(sig, handler)
        for group, commands in groups.items():
            group.commands.clear()
            group.commands.update(commands)
        reset_stdq_state()
    if timed_out.is_set():
        raise subprocess.TimeoutExpired(["stdq", *argv], timeout or 0, stdout, stderr)
    return subprocess.CompletedProcess(["stdq", *argv], code, stdout, stderr)


def run_stdq(
    args: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    input: str | None = None,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess:
    """`stdq ARGS` in this process with exactly the environment ENV (as a subprocess with
    ``env=ENV`` would have it: variables not in ENV are unset for the run)."""
    if FORCE_SUBPROCESS:
        return subprocess.run(
            [str(STDQ_BIN), *args], capture_output=True, text=True, env=dict(env), cwd=cwd,
            input=input, timeout=timeout,
        )
    changes: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    changes.update(env)
    return run_in_process(list(args), env=changes, cwd=cwd, input=input, timeout=timeout)


@pytest.fixture(scope="module")
def emulators():
    """Every emulator, one server shared by a test module (for tests that only read)."""
    server = FakeServer().start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class StdqRunner:
    """`stdq` with a settings file pointing at the emulators: ``run`` in this process
    (the default for tests of text and JSON), ``run_process``/``popen`` as the installed
    command (signals, workers, autostart, interrupts, start-up imports)."""

    server: FakeServer
    tmp: Path
    config_path: Path
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The whole environment of a `stdq` process under test."""
        env = _scrubbed_environ()
        env.update(self.overrides())
        return env

    def overrides(self) -> dict[str, str]:
        """The variables this runner sets (on top of the scrubbed calling environment)."""
        return {
            "STDQ_CONFIG": str(self.config_path),
            "STDQ_DATA_DIR": str(self.data_dir),
            "NO_COLOR": "1",
            "HOME": str(self.tmp / "home"),
            **self.extra_env,
        }

    def write_settings(self, extra: str = "") -> None:
        """Rewrite the settings file: the emulators' URLs plus EXTRA TOML."""
        self.config_path.write_text(settings_toml(self.server, extra), encoding="utf-8")

    def run(self, *args: str, timeout: float = 120, input: str | None = None, env: dict | None = None):
        """`stdq ARGS...` in this process; a CompletedProcess (returncode, stdout, stderr)."""
        if FORCE_SUBPROCESS:
            return self.run_process(*args, timeout=timeout, input=input, env=env)
        changes: dict[str, str | None] = {
            k: None for k in os.environ if k.startswith("STDQ_") or k in SCRUBBED
        }
        changes.update(self.overrides())
        changes.update(env or {})
        return run_in_process(list(args), env=changes, cwd=self.tmp, input=input, timeout=timeout)

    def run_process(
        self, *args: str, timeout: float = 120, input: str | None = None, env: dict | None = None
    ):
        """`stdq ARGS...` as the installed command; the CompletedProcess (text mode)."""
        full_env = self.env
        if env:
            full_env.update(env)
        return subprocess.run(
            [str(STDQ_BIN), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=full_env,
            cwd=self.tmp,
        )

    def popen(self, *args: str, env: dict | None = None, **kw):
        """The installed command started in the background (subprocess.Popen)."""
        full_env = self.env
        if env:
            full_env.update(env)
        return subprocess.Popen([str(STDQ_BIN), *args], env=full_env, cwd=self.tmp, **kw)


@pytest.fixture
def stdq(tmp_path, fake_server) -> StdqRunner:
    """The `stdq` command against a fresh data dir and the emulators."""
    (tmp_path / "home").mkdir()
    runner = StdqRunner(
        server=fake_server,
        tmp=tmp_path,
        config_path=tmp_path / "config.toml",
        data_dir=tmp_path / "data",
    )
    runner.write_settings()
    return runner


@pytest.fixture
def recorded_waits(monkeypatch) -> list[float]:
    """The waits queries in this process ask for (``QueryContext.sleep``: HTTP retries and
    backoff, remote polling), in order; each really sleeps at most 0.01 s."""
    from stdq.services.base import QueryContext

    if FORCE_SUBPROCESS:
        pytest.skip("recorded_waits sees only queries run in this process (PYTEST_STDQ_SUBPROCESS=1)")

    asked: list[float] = []

    def sleep(self, seconds: float) -> None:
        asked.append(float(seconds))
        self.check_cancelled()
        time.sleep(min(0.01, max(0.0, float(seconds))))

    monkeypatch.setattr(QueryContext, "sleep", sleep)
    return asked


def assert_clean_error(result, code: int) -> str:
    """The command failed with CODE, and said why in a clear last line without a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines, "no message on stderr"
    return lines[-1]


def assert_secret_nowhere(data_dir: Path, secrets: list[str] | tuple[str, ...], *texts: str) -> None:
    """No SECRET in TEXTS (outputs, logs) nor in any file under DATA_DIR (the database, the
    worker logs, the products and their raw files)."""
    files = [p for p in Path(data_dir).rglob("*") if p.is_file()]
    for secret in secrets:
        for text in texts:
            assert secret not in text
        for path in files:
            assert secret.encode() not in path.read_bytes(), path


def wait_until(predicate, timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll PREDICATE until it is true; AssertionError naming WHAT after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def worker_pids(runner: StdqRunner) -> list[int]:
    """The pids in the workers table of RUNNER's data dir."""
    path = runner.data_dir / "stdq.sqlite3"
    if not path.is_file():
        return []
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT pid FROM workers")]
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def stop_workers(runner: StdqRunner) -> None:
    """SIGTERM the workers of RUNNER's data dir (by pid, from its workers table) and wait."""
    pids = [pid for pid in worker_pids(runner) if pid != os.getpid()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + 15
    for pid in pids:
        while time.monotonic() < deadline and process_alive(pid):
            time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """Whether PID runs: a child of this process that has exited is reaped here (a worker
    spawned by an in-process `stdq` is our child), and a zombie counts as gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """PATH really read-only, also for root (which ignores permission bits): chattr +i."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"chattr +i failed: {done.stderr}"
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(mode & 0o555)
        try:
            yield
        finally:
            path.chmod(mode)


class FakeTime:
    """A clock that moves only when someone sleeps (or a test moves ``now``); ``sleeps``
    records what was asked."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    __call__ = clock  # the clock itself, where a callable is asked for

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
