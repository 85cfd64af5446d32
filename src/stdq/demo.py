"""`stdq demo`: the real query paths against the bundled emulators, no network needed.

Starts every registered emulator (``stdq.testing`` and the plugins' ``stdq.emulators``)
on 127.0.0.1 in this process, writes a settings file pointing the services at
them into a fresh data directory, then uses the library (:class:`stdq.Stdq`) as
``stdq query`` does — Pan-STARRS and the ZTF light curve by name, in this
process; ATLAS and the ZTF forced-photometry service as jobs of a background
worker, waited for by the one poll loop (``Stdq.wait``) — and returns every file
written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stdq.errors import QueryFailed
from stdq.records import counted

if TYPE_CHECKING:
    from stdq.records import Job

DEMO_TARGET = "SN 2023ixf"
FOREGROUND = (("panstarrs", "mast"), ("ztf", "irsa"))  # (service, emulator it needs)
BACKGROUND = (("atlas", "atlas"), ("ztf-fps", "zfps"))
WAIT_SECONDS = 120.0
# Variables that would point the demo's services at real credentials (the environment
# wins over the settings file): left out while the demo runs.
SECRET_VARIABLES = ("ATLAS_FORCED_PHOTOMETRY_API_KEY", "MAST_API_TOKEN")


@dataclass
class DemoResult:
    """What the demo wrote: its folder and every file, one per line of `stdq demo`."""

    dir: Path
    files: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON of `stdq demo --json`."""
        return {"dir": str(self.dir), "files": [str(p) for p in self.files]}


def demo_settings(server: Any, data_dir: Path) -> str:
    """Settings for the demo: emulator URLs, short polls, the emulators' test credentials.

    Each emulator that needs more than its URL (credentials, short poll intervals)
    says so in its ``demo_settings`` mapping.
    """
    import tomllib

    import tomli_w

    from stdq.testing.fakeserver import settings_toml

    data = tomllib.loads(settings_toml(server))
    data["data_dir"] = str(Path(data_dir).absolute())  # a relative one would be the file's
    data["http"] = {"timeout": 10, "max_retries": 2}
    data["tasks"] = {"lease_seconds": 10}
    for emulator in server.emulators:
        service = getattr(emulator, "service_name", None)
        extra = getattr(emulator, "demo_settings", None)
        if service and extra:
            data.setdefault("services", {}).setdefault(service, {}).update(extra)
    return str(tomli_w.dumps(data))


@contextlib.contextmanager
def _demo_environment() -> Iterator[None]:
    """Leave out STDQ_* and the services' secret variables while the demo runs (the
    autostarted worker inherits the environment too); restored afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("STDQ_") or k in SECRET_VARIABLES}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


class _JobReporter:
    """The wait's callback: one line per job whenever its state or progress changes."""

    def __init__(self, services: dict[int, str], say: Callable[[str], None]):
        self.services = services
        self.say = say
        self.last: dict[int, str] = {}

    def __call__(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            detail = job.progress or ("waiting for the worker" if str(job.state) == "queued" else "")
            if job.final:
                detail = job.note or job.error or ""
            text = f"{job.state}: {detail}" if detail else str(job.state)
            if self.last.get(job.id) != text:
                self.last[job.id] = text
                self.say(f"  {self.services.get(job.id, job.service)} job {job.id} {text}")


def _write_table(table: Any, dest: Path) -> None:
    from stdq import photometry
    from stdq.store import atomic_write

    atomic_write(dest, lambda fh: photometry.write_table(table, fh, "csv"))


def run_demo(
    directory: str | Path | None = None,
    say: Callable[[str], None] = print,
    on_progress: Callable[[Sequence[Job]], None] | None = None,
) -> DemoResult:
    """Run the demo in DIRECTORY (default: a new temporary folder); returns what it wrote.

    SAY gets the progress lines; ON_PROGRESS, when given, also gets the jobs at
    each turn of the wait (the CLI's live line).
    """
    from stdq.config import write_private_file
    from stdq.core import Stdq
    from stdq.testing.fakeserver import FakeServer

    base = Path(directory).expanduser() if directory else Path(tempfile.mkdtemp(prefix="stdq-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    data_dir = base / "data"
    config = base / "config.toml"
    out_dir = base / "tables"
    out_dir.mkdir(exist_ok=True)
    started = time.monotonic()
    with _demo_environment(), FakeServer() as server:
        names = {e.name for e in server.emulators}
        write_private_file(config, demo_settings(server, data_dir))
        say(f"emulators on {server.base_url}; data directory {data_dir}")
        with Stdq(config, data_dir) as sdq:
            # 1. Pan-STARRS DR2 and the ZTF light curve by name, in this process.
            for service, emulator in FOREGROUND:
                if emulator not in names:
                    continue
                say(f"{service}: {DEMO_TARGET} (name -> coordinates -> photometry)")
                result = sdq.query(service, DEMO_TARGET)
                _write_table(result.table, out_dir / f"{service}.csv")
                say(f"  {counted(result.rows, 'row')}, {counted(result.detections, 'detection')}")
            # 2. ATLAS and ZTF forced photometry: queued, run by a background worker.
            services: dict[int, str] = {}
            for service, emulator in BACKGROUND:
                if emulator not in names:
                    continue
                job = sdq.submit(service, DEMO_TARGET, runner="worker")
                services[job.id] = service
                say(f"{service}: queued as job {job.id} for a background worker")
            if services:
                report = _JobReporter(services, say)

                def progress(jobs: Sequence[Job]) -> None:
                    report(jobs)
                    if on_progress is not None:
                        on_progress(jobs)

                ended = sdq.wait(list(services), timeout=WAIT_SECONDS, on_progress=progress)
                report(ended)
                late = [j.id for j in ended if not j.final]
                if late:
                    raise QueryFailed(f"demo: job(s) {late} did not finish in {WAIT_SECONDS:g} s")
                for job_id, service in services.items():
                    _write_table(sdq.result(job_id).table, out_dir / f"{service}.csv")
    say(f"done in {time.monotonic() - started:.1f} s")
    return DemoResult(base, written_files(base))


def written_files(base: Path) -> list[Path]:
    """The files the demo wrote under BASE: tables, products, raw answers, settings, database."""
    files = sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [
        p for p in files
        if "logs" not in p.parts and p.suffix in (".csv", ".json", ".txt", ".toml", ".sqlite3")
        or p.parent.name == "raw"
    ]
