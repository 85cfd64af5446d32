"""`stdq demo`: the real query paths against the bundled emulators, no network needed.

Starts every registered emulator (``stdq.testing`` and the plugins' ``stdq.emulators``)
on 127.0.0.1 in this process, writes a settings file pointing the services at
them into a fresh data directory, then uses the library (:class:`stdq.Stdq`) as
``stdq query`` does — Pan-STARRS and the ZTF light curve by name, in this
process; ATLAS and the ZTF forced-photometry service as jobs of a background
worker, waited for by the one poll loop (``Stdq.wait``); then a Rubin target
(``rubin``, the Fink emulator) and a Gaia variable (``gaia``) by coordinates. It
ends with the merged light curve (``Stdq.lightcurve(..., flux_kind="both")``: one
table, each row keeping its ``flux_kind``) and a PNG plot (:mod:`stdq.plot`: difference
fluxes above, total magnitudes below) of each target — SN 2023ixf from its four
services — prints their paths and returns every file written.
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

from stdq.errors import QueryFailed, StdqError
from stdq.records import counted

if TYPE_CHECKING:
    from stdq.records import Job

DEMO_TARGET = "SN 2023ixf"
FOREGROUND = (("panstarrs", "mast"), ("ztf", "irsa"))  # (service, emulator it needs)
BACKGROUND = (("atlas", "atlas"), ("ztf-fps", "zfps"))
# (service, emulator it needs, module with the target): queried by coordinates
BY_COORDINATES = (("rubin", "fink", "stdq.testing.fink:RUBIN_TARGET"),
                  ("gaia", "gaia", "stdq.testing.gaia:VARIABLE"))
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


def _sky_object(spec: str) -> Any:
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def write_lightcurve(sdq: Any, target: Any, out_dir: Path, plot_dir: Path, say: Callable[[str], None],
                     title: str | None = None) -> list[Path]:
    """TARGET's merged light curve from all its services as ONE table (CSV, ``--flux-kind
    both``: difference and total rows kept apart by their ``flux_kind`` column, never one
    flux column mixing them) and, with matplotlib installed, its PNG plot (difference fluxes
    above, total magnitudes below when it has both); their paths."""
    from stdq.store import safe_name

    curve = sdq.lightcurve(target, flux_kind="both")
    label = safe_name(curve.target.label)
    table_path = out_dir / f"{label}.csv"
    _write_table(curve.table, table_path)
    say(f"  merged light curve: {counted(curve.rows, 'row')} from {', '.join(curve.services) or 'no service'}"
        f" -> {table_path}")
    for kind, services in kinds_by_service(curve.table):
        say(f"    {kind} fluxes: {', '.join(f'{s} {n}' for s, n in services)} (column flux_kind = {kind})")
    for aside in curve.left_aside:
        say(f"  left aside: {aside['service']} {counted(aside['rows'], 'row')}: {aside['why']}")
    written = [table_path]
    try:
        from stdq.plot import plot_table, require

        require("matplotlib")
    except StdqError as exc:
        say(f"  plot left out: {exc.message} ({exc.hint})")
        return written
    plot_path = plot_dir / f"{label}.png"
    info = plot_table(curve.table, plot_path, name=title or curve.target.label, ra=curve.target.ra,
                      dec=curve.target.dec)
    panels = "difference fluxes above, total magnitudes below" if info.view == "flux+mag" else f"{info.view} view"
    say(f"  plot ({panels}): {plot_path}")
    written.append(plot_path)
    return written


def kinds_by_service(table: Any) -> list[tuple[str, list[tuple[str, int]]]]:
    """[(flux_kind, [(service, rows)])] of a merged table, kinds and services sorted."""
    if not len(table):
        return []
    counts = table.groupby(["flux_kind", "service"], sort=True, dropna=False).size()
    out: dict[str, list[tuple[str, int]]] = {}
    for (kind, service), rows in counts.items():
        out.setdefault(str(kind), []).append((str(service), int(rows)))
    return list(out.items())


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
    curve_dir, plot_dir = base / "lightcurves", base / "plots"
    curve_dir.mkdir(exist_ok=True)
    plot_dir.mkdir(exist_ok=True)
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
            # 3. A Rubin target (through the brokers) and a Gaia variable, by coordinates.
            others = []
            for service, emulator, spec in BY_COORDINATES:
                if emulator not in names:
                    continue
                obj = _sky_object(spec)
                say(f"{service}: {obj.name} at RA {obj.ra:.5f}, Dec {obj.dec:+.5f} (coordinates -> photometry)")
                result = sdq.query(service, ra=obj.ra, dec=obj.dec)
                _write_table(result.table, out_dir / f"{service}.csv")
                say(f"  {counted(result.rows, 'row')}, {counted(result.detections, 'detection')}")
                others.append((result.job.target, obj.name))
            # 4. The merged light curve and its plot, per target.
            say(f"{DEMO_TARGET}: merged light curve and plot")
            sdq.resolve(DEMO_TARGET)
            write_lightcurve(sdq, DEMO_TARGET, curve_dir, plot_dir, say)
            for target, name in others:
                say(f"{name}: merged light curve and plot")
                write_lightcurve(sdq, target, curve_dir, plot_dir, say, title=f"{name} ({target.label})")
            # 5. A two-target watchlist brought up to date (what cron runs every night).
            if "irsa" in names:
                update_watchlist(sdq, say)
    say(f"done in {time.monotonic() - started:.1f} s")
    return DemoResult(base, written_files(base))


def update_watchlist(sdq: Any, say: Callable[[str], None]) -> None:
    """`stdq targets import` + `stdq update` of two targets with ZTF: the second run asks
    only for the epochs after the newest one stored."""
    import io

    sdq.targets.import_file(io.StringIO(f"{DEMO_TARGET}\nNGC 3642\n"), list="demo")
    say("update: the watchlist 'demo' (2 targets), ztf, twice (the second asks only for new epochs)")
    for _ in range(2):
        for item in sdq.update(list="demo", services=["ztf"]):
            since = f"from MJD {item.mjd_min:.2f}" if item.mjd_min is not None else "whole history"
            say(f"  {item.target.label} / {item.service} ({since}): {item.state},"
                f" {counted(item.new_rows or 0, 'new row')}, latest.csv {counted(item.rows_total or 0, 'row')}")


def written_files(base: Path) -> list[Path]:
    """The files the demo wrote under BASE: tables, products, raw answers, settings, database."""
    files = sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [
        p for p in files
        if "logs" not in p.parts and p.suffix in (".csv", ".json", ".txt", ".toml", ".sqlite3", ".png")
        or p.parent.name == "raw"
    ]
