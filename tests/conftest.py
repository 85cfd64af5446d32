"""Shared fixtures: the emulators on 127.0.0.1 and the installed `stdq` command run as a subprocess."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stdq.testing.fakeserver import FakeServer, settings_toml

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
STDQ_BIN = Path(sys.executable).with_name("stdq")

needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason="../shared/realdata is not beside the project"
)


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
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


@dataclass
class StdqRunner:
    """Runs the installed `stdq` with a settings file pointing at the emulators."""

    server: FakeServer
    tmp: Path
    config_path: Path
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("STDQ_") and k not in ("ATLAS_FORCED_PHOTOMETRY_API_KEY", "MAST_API_TOKEN")
        }
        env.update(
            {
                "STDQ_CONFIG": str(self.config_path),
                "STDQ_DATA_DIR": str(self.data_dir),
                "NO_COLOR": "1",
                "HOME": str(self.tmp / "home"),
            }
        )
        env.update(self.extra_env)
        return env

    def write_settings(self, extra: str = "") -> None:
        """Rewrite the settings file: the emulators' URLs plus EXTRA TOML."""
        self.config_path.write_text(settings_toml(self.server, extra), encoding="utf-8")

    def run(self, *args: str, timeout: float = 120, input: str | None = None, env: dict | None = None):
        """`stdq ARGS...`; returns the CompletedProcess (text mode)."""
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


def assert_clean_error(result, code: int) -> str:
    """The command failed with CODE, and said why in a clear last line without a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines, "no message on stderr"
    return lines[-1] if not lines[-1].startswith("error:") or len(lines) == 1 else lines[-1]


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
    pids = worker_pids(runner)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + 15
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
