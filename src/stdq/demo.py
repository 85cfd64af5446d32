"""`stdq demo`: the real query paths against the bundled emulators, no network needed.

Starts every emulator of ``stdq.testing`` on 127.0.0.1 in this process, writes a
settings file pointing the services at them into a fresh data directory, then
runs the real ``stdq`` command for each built-in service — Pan-STARRS by name
in the foreground, ATLAS and the ZTF forced-photometry service through a
background worker — and returns every file written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from stdq.errors import QueryFailed

DEMO_TARGET = "SN 2023ixf"


def demo_settings(server, data_dir: Path) -> str:
    """Settings for the demo: emulator URLs, short polls, the emulators' test credentials.

    Each emulator that needs more than its URL (credentials, short poll intervals)
    says so in its ``demo_settings`` mapping.
    """
    import tomllib

    import tomli_w

    from stdq.testing.fakeserver import settings_toml

    data = tomllib.loads(settings_toml(server))
    data["data_dir"] = str(data_dir)
    data["http"] = {"timeout": 10, "max_retries": 2}
    data["tasks"] = {"lease_seconds": 10}
    for emulator in server.emulators:
        service = getattr(emulator, "service_name", None)
        extra = getattr(emulator, "demo_settings", None)
        if service and extra:
            data.setdefault("services", {}).setdefault(service, {}).update(extra)
    return tomli_w.dumps(data)


def _stdq(args: list[str], config: Path, data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STDQ_")}
    env["NO_COLOR"] = "1"
    cmd = [sys.executable, "-m", "stdq", "--config", str(config), "--data-dir", str(data_dir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def run_demo(directory: str | None = None, say: Callable[[str], None] = print) -> list[Path]:
    """Run the demo in DIRECTORY (default: a new temporary folder); returns the files written."""
    from stdq.testing.fakeserver import FakeServer

    base = Path(directory).expanduser() if directory else Path(tempfile.mkdtemp(prefix="stdq-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    data_dir = base / "data"
    config = base / "config.toml"
    out_dir = base / "tables"
    out_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    with FakeServer() as server:
        names = {e.name for e in server.emulators}
        from stdq.config import write_private_file

        write_private_file(config, demo_settings(server, data_dir))
        say(f"emulators on {server.base_url}; data directory {data_dir}")

        # 1. Pan-STARRS DR2 by name: Sesame resolves, MAST answers, in the foreground.
        if "mast" in names:
            say(f"panstarrs: {DEMO_TARGET} (name -> coordinates -> DR2 detections)")
            _foreground("panstarrs", config, data_dir, out_dir, say)
        # 2. ZTF light curve from IRSA, in the foreground.
        if "irsa" in names:
            say(f"ztf: {DEMO_TARGET} (IRSA light curve)")
            _foreground("ztf", config, data_dir, out_dir, say)
        # 3. ATLAS and ZTF forced photometry: queued, run by a background worker.
        background = [s for s, e in (("atlas", "atlas"), ("ztf-fps", "zfps")) if e in names]
        jobs: dict[str, int] = {}
        for service in background:
            result = _stdq(["--json", "query", service, DEMO_TARGET, "--background"], config, data_dir)
            if result.returncode != 0:
                raise QueryFailed(f"demo: {service} could not be queued: {result.stderr.strip()}")
            jobs[service] = json.loads(result.stdout)["job_id"]
            say(f"{service}: queued as job {jobs[service]} for a background worker")
        _watch(jobs, config, data_dir, say)
        for service, job_id in jobs.items():
            dest = out_dir / f"{service}.csv"
            result = _stdq(["jobs", "result", str(job_id), "-o", str(dest)], config, data_dir)
            if result.returncode != 0:
                raise QueryFailed(f"demo: {service} job {job_id}: {result.stderr.strip()}")
    say(f"done in {time.monotonic() - started:.1f} s")
    files = sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [p for p in files if "logs" not in p.parts and p.suffix in (".csv", ".json", ".txt", ".toml", ".sqlite3")
            or p.parent.name == "raw"]


def _foreground(service: str, config: Path, data_dir: Path, out_dir: Path, say) -> None:
    dest = out_dir / f"{service}.csv"
    result = _stdq(["--json", "query", service, DEMO_TARGET, "-o", str(dest)], config, data_dir)
    if result.returncode != 0:
        raise QueryFailed(f"demo: {service} failed: {result.stderr.strip()}")
    info = json.loads(result.stdout)
    say(f"  {info['rows']} rows, {info['detections']} detections")


def _watch(jobs: dict[str, int], config: Path, data_dir: Path, say, timeout: float = 120) -> None:
    """Show the jobs' progress until they end."""
    from stdq.jobs.queue import FINAL_STATES, JobQueue

    queue = JobQueue(data_dir)
    last: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while jobs and time.monotonic() < deadline:
            done = True
            for service, job_id in jobs.items():
                job = queue.require(job_id)
                detail = job.get("progress") or "waiting for the worker"
                if job["state"] in FINAL_STATES:
                    detail = job.get("note") or job.get("error") or ""
                text = f"{job['state']}: {detail}"
                if last.get(job_id) != text:
                    last[job_id] = text
                    say(f"  {service} job {job_id} {text}")
                done = done and job["state"] in FINAL_STATES
            if done:
                return
            time.sleep(0.3)
        raise QueryFailed("demo: the background jobs did not finish in time")
    finally:
        queue.close()
