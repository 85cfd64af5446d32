"""stdq against the tools an astronomer would use instead, on the same emulators.

1. Pan-STARRS DR2 light curve of SN 2023ixf (47 rows after the -999/zero fluxes, and
   100,000 rows with ``--rows``): ``stdq query panstarrs --force --ra --dec -o x.csv``
   into an empty data directory each run -- the first light curve of that target, what
   the peers make too (``--refetch``: into one data directory kept across the runs, so
   that each run also merges the target's earlier products into its latest.csv, work
   the peers do not do; ``--force``: a fresh fetch, never a reused result) against
   astroquery's ``Catalogs.query_criteria`` (mean cone, nearest object, its detections
   page by page; when astroquery is installed: ``pip install -e .[bench]``) and a
   plain requests + pandas script doing the same requests. Each run is a subprocess;
   the peers alternate (the order rotates each round) in one process tree. Printed:
   median wall time and peak RSS (``os.wait4``'s ``ru_maxrss``) of each, the medians
   of the pair-by-pair ratios (stdq / peer, same round) with their range, and the HTTP
   requests each made (the emulator's log).
2. ATLAS, one target: ``stdq query atlas --force --ra --dec -o x.csv`` (a job run by an
   autostarted worker, with stdq's default poll settings) against the ATLAS API
   guide's example loop (bench/atlas_example_client.py: every 4 s queued, 2 s
   running), for queues of 1 s and 70 s (the emulator's ``queue_seconds``; 1 s
   runs). Printed: wall time ratio, requests, and the overshoot: how long after the
   task's finish (the emulator's timestamps) the first poll that saw it finished
   came, and when the command ended.

The emulators run in this process on 127.0.0.1 and answer the MAST requests from
memory after their first time (the same bytes for every run), so what differs is
the clients' own work.

    python bench/peers.py [--runs 3] [--atlas-runs 3] [--long-runs 1] [--rows 100000]
                          [--only ps1|atlas] [--refetch]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SN_RA, SN_DEC = 210.910674, 54.311650
RADIUS_DEG = 2.0 / 3600.0
PAGESIZE = 50000
DETECTION_COLUMNS = [
    "objID", "detectID", "filterID", "obsTime", "ra", "dec", "psfFlux", "psfFluxErr",
    "psfMajorFWHM", "psfMinorFWHM", "psfQfPerfect", "apFlux", "apFluxErr", "infoFlag",
    "infoFlag2", "infoFlag3",
]
MEAN_COLUMNS = ["objID", "raMean", "decMean", "nDetections"]
STDQ = [sys.executable, "-m", "stdq"]
if (Path(sys.executable).parent / "stdq").exists():
    STDQ = [str(Path(sys.executable).parent / "stdq")]


# -- the peers (each runs in a subprocess: python bench/peers.py --peer NAME ...) ------------


def light_curve(frame):
    """What both peers make of the detections: good fluxes in uJy, AB mag, band, to CSV."""
    import numpy as np

    frame = frame[(frame["psfFlux"] != -999) & (frame["psfFlux"] > 0)].copy()
    frame["flux_ujy"] = frame["psfFlux"] * 1e6
    frame["flux_err_ujy"] = frame["psfFluxErr"] * 1e6
    frame["mag"] = -2.5 * np.log10(frame["psfFlux"]) + 8.90
    frame["band"] = frame["filterID"].map(dict(enumerate("grizy", 1)))
    return frame


def peer_plain(base: str, ra: float, dec: float, out: str) -> None:
    """requests + pandas, as a user would write it from the STScI example."""
    import io

    import pandas as pd
    import requests

    session = requests.Session()
    mean = pd.read_csv(io.StringIO(session.get(f"{base}/dr2/mean.csv", params={
        "ra": ra, "dec": dec, "radius": RADIUS_DEG, "nDetections.gt": 1,
        "columns": "[" + ",".join(MEAN_COLUMNS) + "]"}).text))
    obj_id = int(mean.sort_values("distance")["objID"].iloc[0])
    pages, page = [], 1
    while True:
        answer = session.get(f"{base}/dr2/detection.csv", params={
            "objID": obj_id, "columns": "[" + ",".join(DETECTION_COLUMNS) + "]",
            "sort_by": "obsTime", "pagesize": PAGESIZE, "page": page})
        answer.raise_for_status()
        frame = pd.read_csv(io.StringIO(answer.text))
        if len(frame):
            pages.append(frame)
        if len(frame) < PAGESIZE:
            break
        page += 1
    light_curve(pd.concat(pages, ignore_index=True)).to_csv(out, index=False)


def peer_astroquery(root: str, ra: float, dec: float, out: str) -> None:
    """astroquery.mast.Catalogs: the mean cone, the nearest object, its detections."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from astropy.table import vstack
    from astroquery.mast import Catalogs, conf

    conf.catalogs_server = root
    Catalogs._service_api_connection.REQUEST_URL = f"{root}/api/v0.1/"
    mean = Catalogs.query_criteria(
        coordinates=SkyCoord(ra, dec, unit="deg"), radius=RADIUS_DEG * u.deg, catalog="Panstarrs",
        data_release="dr2", table="mean", nDetections=[("gt", 1)], columns=MEAN_COLUMNS,
    )
    mean.sort("distance")
    obj_id = int(mean["objID"][0])
    pages, page = [], 1
    while True:
        table = Catalogs.query_criteria(
            catalog="Panstarrs", data_release="dr2", table="detection", objID=obj_id,
            columns=DETECTION_COLUMNS, sort_by=[("asc", "obsTime")], pagesize=PAGESIZE, page=page,
        )
        if len(table):
            pages.append(table)
        if len(table) < PAGESIZE:
            break
        page += 1
    light_curve(vstack(pages).to_pandas()).to_csv(out, index=False)


# -- measuring ---------------------------------------------------------------------------------


def measure(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one subprocess; its output goes to LOG."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed ({proc.returncode}):\n{log.read_text()[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE",) and not k.startswith("STDQ_")}
    env["PYTHONWARNINGS"] = "ignore"
    return env


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x (range {min(values):.2f}-{max(values):.2f})"


def goal(text: str, ok: bool) -> str:
    return f"  goal {text}: {'ok' if ok else 'MISSED'}"


def make_server():
    from stdq.testing.atlas import AtlasEmulator
    from stdq.testing.fakeserver import FakeServer
    from stdq.testing.mast import MastCatalogsEmulator

    class CachedMast(MastCatalogsEmulator):
        """The MAST emulator, each distinct request computed once then served from memory."""

        def __init__(self) -> None:
            super().__init__()
            self.answers: dict[tuple[str, str, bytes], object] = {}

        def handle(self, request):
            key = (request.method, request.full_path, request.body)
            answer = self.answers.get(key)
            if answer is None:
                answer = self.answers[key] = super().handle(request)
            return answer

    return FakeServer([CachedMast(), AtlasEmulator()]).start()


def stdq_settings(server, folder: Path) -> Path:
    """stdq's settings for SERVER: the emulators' URLs and token, stdq's own ATLAS polling."""
    from stdq.services.atlas import AtlasForcedPhotometryService
    from stdq.testing.fakeserver import settings_toml

    atlas = server.emulator("atlas")
    defaults = AtlasForcedPhotometryService.settings_defaults
    atlas.settings_overrides = {k: defaults[k] for k in ("poll_interval", "max_poll_interval")}
    path = folder / "settings.toml"
    path.write_text(settings_toml(server))
    return path


def requests_since(server, start: int, emulator: str) -> list:
    with server.lock:
        return [r for r in server.requests[start:] if r.emulator == emulator]


# -- 1. Pan-STARRS ---------------------------------------------------------------------------


def bench_ps1(server, folder: Path, rows: int | None, runs: int, refetch: bool = False) -> None:
    from stdq.testing.mast import build_catalog

    mast = server.emulator("mast")
    mast.catalog = build_catalog()
    mast.answers.clear()
    if rows:
        mast.set_detections(rows)
    label = f"{rows:,} detections" if rows else "SN 2023ixf, 47 rows"
    label += ", one data directory kept (re-fetches)" if refetch else ", a new data directory each run"
    config = stdq_settings(server, folder)
    data_dir = folder / f"data-ps1-{rows or 47}"
    out = folder / "out.csv"
    env = base_env()
    base = mast.base_url
    root = server.base_url + "/mast"
    me = [sys.executable, str(Path(__file__).resolve())]
    pos = [repr(SN_RA), repr(SN_DEC), str(out)]
    peers = {
        "stdq": [*STDQ, "--config", str(config), "--data-dir", str(data_dir), "query", "panstarrs",
                 "--force", "--ra", repr(SN_RA), "--dec", repr(SN_DEC), "-o", str(out)],
        "plain": [*me, "--peer", "plain", base, *pos],
    }
    try:
        import astroquery  # noqa: F401

        peers["astroquery"] = [*me, "--peer", "astroquery", root, *pos]
    except ImportError:
        print("  (astroquery is not installed: pip install -e .[bench])")
    names = list(peers)
    wall: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[float]] = {n: [] for n in names}
    calls: dict[str, int] = {}
    for name in names:  # warm-up: file caches, byte code, the emulator's answers
        out.unlink(missing_ok=True)
        measure(peers[name], env, folder / f"{name}.log")
    for i in range(runs):
        for name in names[i % len(names):] + names[: i % len(names)]:
            out.unlink(missing_ok=True)
            if name == "stdq" and not refetch:  # the target's first light curve
                shutil.rmtree(data_dir, ignore_errors=True)
            start = len(server.requests)
            w, m = measure(peers[name], env, folder / f"{name}.log")
            wall[name].append(w)
            rss[name].append(m)
            calls[name] = len(requests_since(server, start, "mast"))
    print(f"\nPan-STARRS DR2 light curve, {label}: {runs} runs each, alternating")
    for name in names:
        print(f"  {name:<11} wall median {statistics.median(wall[name]):6.2f} s"
              f"  peak RSS median {statistics.median(rss[name]):6.0f} MiB"
              f"  HTTP requests {calls[name]}")
    for peer, limit in (("astroquery", 1.0), ("plain", 1.5)):
        if peer not in wall:
            continue
        ratios = [s / p for s, p in zip(wall["stdq"], wall[peer], strict=True)]
        print(f"  stdq / {peer}: wall {spread(ratios)}")
        print(goal(f"wall <= {limit}x {peer}", statistics.median(ratios) <= limit))
    if "astroquery" in rss:
        mem = [s / p for s, p in zip(rss["stdq"], rss["astroquery"], strict=True)]
        print(f"  stdq / astroquery: peak memory {spread(mem)}")
        print(goal("peak memory <= 1.5x astroquery", statistics.median(mem) <= 1.5))


# -- 2. ATLAS --------------------------------------------------------------------------------


def bench_atlas(server, folder: Path, queue_seconds: float, runs: int) -> None:
    from stdq.testing.atlas import TEST_TOKEN

    atlas = server.emulator("atlas")
    atlas.queue_seconds = queue_seconds
    atlas.run_seconds = 1.0
    config = stdq_settings(server, folder)
    data_dir = folder / f"data-atlas-{queue_seconds:g}"
    out = folder / "atlas.csv"
    env = base_env()
    peers = {
        "stdq": [*STDQ, "--config", str(config), "--data-dir", str(data_dir), "query", "atlas",
                 "--force", "--ra", repr(SN_RA), "--dec", repr(SN_DEC), "-o", str(out)],
        "example": [sys.executable, str(HERE / "atlas_example_client.py"), atlas.base_url,
                    TEST_TOKEN, repr(SN_RA), repr(SN_DEC), str(out)],
    }
    names = list(peers)
    wall: dict[str, list[float]] = {n: [] for n in names}
    calls: dict[str, list[int]] = {n: [] for n in names}
    seen: dict[str, list[float]] = {n: [] for n in names}
    done: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        for name in names[i % 2:] + names[: i % 2]:
            out.unlink(missing_ok=True)
            start = len(server.requests)
            w, _ = measure(peers[name], env, folder / f"atlas-{name}.log")
            ended = time.time()
            made = requests_since(server, start, "atlas")
            task = atlas.tasks[max(atlas.tasks)]
            task_path = f"/queue/{task.id}/"
            looks = [r.time for r in made if r.method == "GET" and r.path.split("?")[0].endswith(task_path)
                     and r.time >= task.finished]
            wall[name].append(w)
            calls[name].append(len(made))
            seen[name].append(min(looks) - task.finished if looks else float("nan"))
            done[name].append(ended - task.finished)
            time.sleep(0.5)  # the burst worker of a stdq run leaves
    print(f"\nATLAS, one target, queue {queue_seconds:g} s + run 1 s: {runs} runs each, alternating")
    for name in names:
        print(f"  {name:<8} wall median {statistics.median(wall[name]):6.2f} s"
              f"  requests {statistics.median(calls[name]):.0f}"
              f"  finish seen after {statistics.median(seen[name]):5.2f} s"
              f"  command ended {statistics.median(done[name]):5.2f} s after the finish")
    ratios = [s / e for s, e in zip(wall["stdq"], wall["example"], strict=True)]
    print(f"  stdq / example client: wall {spread(ratios)}")
    print(goal("wall <= 1.1x the example client", statistics.median(ratios) <= 1.1))
    fewer = statistics.median(calls["stdq"]) < statistics.median(calls["example"])
    print(goal("fewer requests than the example client", fewer))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--peer"]:
        name, url, ra, dec, out = argv[1:6]
        {"plain": peer_plain, "astroquery": peer_astroquery}[name](url, float(ra), float(dec), out)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="Pan-STARRS runs per peer")
    parser.add_argument("--atlas-runs", type=int, default=3, help="ATLAS runs per peer, 1 s queue")
    parser.add_argument("--long-runs", type=int, default=1, help="ATLAS runs per peer, 70 s queue")
    parser.add_argument("--rows", type=int, default=100_000, help="the long light curve's rows")
    parser.add_argument("--only", choices=("ps1", "atlas"))
    parser.add_argument("--refetch", action="store_true",
                        help="Pan-STARRS: keep stdq's data directory across runs (re-fetches)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="stdq-peers-"))
    server = make_server()
    try:
        if args.only in (None, "ps1"):
            bench_ps1(server, folder, None, args.runs, args.refetch)
            bench_ps1(server, folder, args.rows, args.runs, args.refetch)
        if args.only in (None, "atlas"):
            bench_atlas(server, folder, 1.0, args.atlas_runs)
            if args.long_runs > 0:
                bench_atlas(server, folder, 70.0, args.long_runs)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
