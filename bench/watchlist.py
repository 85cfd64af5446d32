"""A watchlist against the emulators under the real per-account limits, scaled in time.

ATLAS: N targets (default 200; the issue's run is --targets 1000), submitted as background jobs
and run by WORKERS burst workers (processes) of CONCURRENCY threads, against the ATLAS emulator
enforcing 60 writes and 600 reads per WINDOW seconds (default 6: the server's minute / 10),
stdq configured with the same limits. Printed: the time until every job has ended (from the
workers' start) / the least time the limits allow -- the N-th submission can go floor((N-1)/60)
windows after the first at the earliest, and its task then queues and runs (goal <= 1.1) --;
where the time went (first and last accepted submission, each 60th, the tail after the last);
windows over a limit counted from the emulator's log (goal 0), HTTP 429s, duplicate
submissions (goal 0, with the jobs' events if any), the deferred DELETEs and tasks left on the
server, peak RSS of each worker process. The workers are stopped once every job has ended: the
finished tasks' DELETEs deferred behind the submissions stay in deferred_deletes (checked:
tasks left = deferred); --drain lets them run on until they are all sent (about N writes more).

ZFPS: the same N targets; prints the number of submissions (goal: ceil(N / batch_size)).

    python bench/watchlist.py [--targets N] [--window S] [--workers W] [--concurrency C]
                              [--services atlas,ztf-fps] [--drain] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

from stdq.testing.atlas import TEST_TOKEN, AtlasEmulator
from stdq.testing.fakeserver import FakeServer
from stdq.testing.peak_rss import peak_kib
from stdq.testing.zfps import TEST_EMAIL, TEST_USERPASS, ZfpsEmulator

STARTED = 0.0  # wall time the workers were started



def positions(n: int, seed: int = 11) -> list[tuple[float, float]]:
    """N distinct positions away from the emulators' named targets."""
    rng = random.Random(seed)
    return [(round(rng.uniform(0, 360), 5), round(rng.uniform(-25, 85), 5)) for _ in range(n)]


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any half-open window of WINDOW seconds."""
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        most = max(most, end - start + 1)
    return most


def windows_over(times: list[float], window: float, limit: int) -> int:
    """How many events found more than LIMIT events (themselves included) in the WINDOW before."""
    times = sorted(times)
    over, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        if end - start + 1 > limit:
            over += 1
    return over


def write_settings(tmp: Path, server: FakeServer, window: float, max_queued: int,
                   batch_size: int = 500) -> Path:
    atlas, zfps = server.emulator("atlas"), server.emulator("zfps")
    config = tmp / "config.toml"
    config.write_text(textwrap.dedent(f"""\
        data_dir = "{tmp / 'data'}"
        [tasks]
        autostart_worker = false
        lease_seconds = 30
        [http]
        timeout = 10
        max_retries = 2
        [services.atlas]
        url = "{atlas.base_url}"
        api_key = "{TEST_TOKEN}"
        writes_per_minute = 60
        reads_per_minute = 600
        rate_window = {window}
        max_queued = {max_queued}
        poll_interval = 0.3
        max_poll_interval = 1.0
        [services.ztf-fps]
        url = "{zfps.base_url}"
        email = "{TEST_EMAIL}"
        userpass = "{TEST_USERPASS}"
        poll_interval = 0.3
        max_poll_interval = 1.0
        batch_size = {batch_size}
        batch_window = 3.0
        """))
    return config


def submit_all(config: Path, service: str, targets: list[tuple[float, float]]) -> list[int]:
    from stdq import Stdq

    with Stdq(config) as stdq:
        return [stdq.submit(service, ra=ra, dec=dec, runner="worker").id for ra, dec in targets]


def run_workers(
    config: Path, workers: int, concurrency: int, *, stop_when_done: bool = False
) -> tuple[float, list[int]]:
    """Run WORKERS burst workers to their end (or, with STOP_WHEN_DONE, until every job has
    ended: then SIGTERM, so the DELETEs still deferred stay in deferred_deletes); returns
    (seconds, peak RSS of each worker in KiB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STDQ_")}
    env.update(STDQ_CONFIG=str(config), NO_COLOR="1")
    global STARTED
    STARTED = time.time()
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stdq.testing.peak_rss", "jobs", "worker", "--burst", "--concurrency", str(concurrency)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(workers)
    ]
    errs: dict[int, str] = {}
    readers = [threading.Thread(target=lambda p=p: errs.__setitem__(p.pid, p.stderr.read()), daemon=True)
               for p in procs]  # stderr read as it comes: a full pipe would block a worker
    for reader in readers:
        reader.start()
    if stop_when_done:
        while any(p.poll() is None for p in procs) and not all_ended(config.parent):
            time.sleep(0.2)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=3600)
    for reader in readers:
        reader.join(timeout=30)
    peaks = [kib for proc in procs for kib in peak_kib(errs.get(proc.pid, ""))]
    return time.monotonic() - started, peaks


def all_ended(config_dir: Path) -> bool:
    path = config_dir / "data" / "stdq.sqlite3"
    conn = sqlite3.connect(path, timeout=30)
    try:
        row = conn.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()
        return int(row[0]) == 0
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def deferred_left(config_dir: Path) -> int:
    conn = sqlite3.connect(config_dir / "data" / "stdq.sqlite3", timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM deferred_deletes").fetchone()[0])
    finally:
        conn.close()


def job_events(config_dir: Path, job_id: int) -> list[str]:
    conn = sqlite3.connect(config_dir / "data" / "stdq.sqlite3", timeout=30)
    try:
        return [f"{ts - STARTED:7.2f} {kind}: {message}" for ts, kind, message in conn.execute(
            "SELECT ts, kind, message FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))]
    finally:
        conn.close()


def last_finished(config_dir: Path) -> float:
    conn = sqlite3.connect(config_dir / "data" / "stdq.sqlite3")
    try:
        return float(conn.execute("SELECT MAX(finished_at) FROM jobs").fetchone()[0] or 0.0)
    finally:
        conn.close()


def job_states(config_dir: Path) -> Counter:
    conn = sqlite3.connect(config_dir / "data" / "stdq.sqlite3")
    try:
        return Counter(state for (state,) in conn.execute("SELECT state FROM jobs"))
    finally:
        conn.close()


def bench_atlas(args: argparse.Namespace, targets: list[tuple[float, float]]) -> None:
    atlas = AtlasEmulator()
    atlas.write_limit, atlas.read_limit, atlas.throttle_window = 60, 600, args.window
    atlas.queue_seconds, atlas.run_seconds, atlas.queue_ahead = 0.2, 0.2, 0
    atlas.recent_nights = 5
    with tempfile.TemporaryDirectory() as name, FakeServer([atlas, ZfpsEmulator()]) as server:
        tmp = Path(args.keep or name)
        tmp.mkdir(parents=True, exist_ok=True)
        config = write_settings(tmp, server, args.window, args.max_queued)
        submit_all(config, "atlas", targets)
        took, peaks = run_workers(config, args.workers, args.concurrency, stop_when_done=not args.drain)
        log = server.log_of(emulator="atlas")
        if args.keep:  # the data directory and the emulator's log, to look into afterwards
            with open(tmp / "atlas-log.jsonl", "w") as out:
                for r in log:
                    out.write(json.dumps({"t": r.time - STARTED, "method": r.method, "path": r.path,
                                          "status": r.status}) + "\n")
        posts = [r for r in log if r.method == "POST" and r.path.rstrip("/").endswith("queue")]
        writes = [r.time for r in log if r.method in ("POST", "DELETE")]
        reads = [r.time for r in log if r.method == "GET"]
        n = len(targets)
        # the least time: the N-th submission can be sent floor((N-1)/60) windows after the
        # first at the earliest, and its task then waits and runs queue + run seconds
        least = math.floor((n - 1) / 60) * args.window + atlas.queue_seconds + atlas.run_seconds
        by_job = Counter(str(t.comment or "").split()[2] for t in atlas.tasks.values()
                         if str(t.comment or "").startswith("stdq job "))
        twice = sorted(int(j) for j, c in by_job.items() if c > 1)
        per_position = Counter((t.ra, t.dec) for t in atlas.tasks.values())
        duplicates = sum(c - 1 for c in per_position.values() if c > 1)
        left = sum(1 for t in atlas.tasks.values() if not t.deleted)
        states = job_states(tmp)
        ended = last_finished(tmp) - STARTED  # every job done (the deferred DELETEs may go on)
        print(f"ATLAS, {n} targets, limits 60 writes / 600 reads per {args.window:g} s,"
              f" {args.workers} workers x {args.concurrency} threads, max_queued {args.max_queued}")
        print(f"  jobs: {dict(states)}")
        print(f"  every job done at {ended:.1f} s after the workers started; least the limits allow"
              f" {least:.1f} s; ratio {ended / least:.3f} (goal <= 1.1)")
        accepted = sorted(r.time - STARTED for r in posts if r.status == 201)
        if accepted:
            starts = accepted[::60]
            gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
            print(f"  accepted submissions: first at {accepted[0]:.2f} s (worker start-up), last at"
                  f" {accepted[-1]:.2f} s; each 60th from the first at "
                  + ", ".join(f"{t:.1f}" for t in starts))
            if gaps:
                print(f"  gaps between those: mean {sum(gaps) / len(gaps):.2f} s, most {max(gaps):.2f} s"
                      f" (the limit allows {args.window:g}); the last job ended"
                      f" {ended - accepted[-1]:.2f} s after the last submission (queue + run"
                      f" {atlas.queue_seconds + atlas.run_seconds:g} s)")
        print(f"  submissions sent {len(posts)} (accepted {len(accepted)}; a 429 is sent again),"
              f" duplicates {duplicates} (goal 0){'; jobs that made two tasks: ' + str(twice) if twice else ''}")
        for job in twice[:2]:
            print("    events of job", job, "\n     ", "\n      ".join(job_events(tmp, job)))
        print(f"  most writes in a window {max_in_window(writes, args.window)} (limit 60),"
              f" most reads {max_in_window(reads, args.window)} (limit 600)")
        print(f"  windows over a limit: writes {windows_over(writes, args.window, 60)},"
              f" reads {windows_over(reads, args.window, 600)} (goal 0);"
              f" HTTP 429: {dict(Counter(r.method for r in log if r.status == 429))}")
        deletes = Counter(r.path for r in log if r.method == "DELETE" and r.status < 400)
        pending = deferred_left(tmp)
        if args.drain:
            print(f"  workers exited at {took:.1f} s, after the deferred DELETEs")
        else:
            print(f"  workers stopped (SIGTERM) at {took:.1f} s, when every job had ended; --drain waits"
                  " for the deferred DELETEs")
        print(f"  DELETEs answered: {sum(deletes.values())}, of distinct tasks {len(deletes)}; tasks left on"
              f" the server {left}, of them in deferred_deletes {pending} (never lost: {left == pending})")
        print(f"  peak RSS per worker: {', '.join(f'{p / 1024:.0f} MiB' for p in peaks)}")


def bench_zfps(args: argparse.Namespace, targets: list[tuple[float, float]]) -> None:
    zfps = ZfpsEmulator(delay=0.2)
    with tempfile.TemporaryDirectory() as name, FakeServer([AtlasEmulator(), zfps]) as server:
        tmp = Path(name)
        config = write_settings(tmp, server, args.window, args.max_queued, args.batch_size)
        submit_all(config, "ztf-fps", targets)
        took, peaks = run_workers(config, args.workers, args.concurrency)
        n = len(targets)
        goal = math.ceil(n / args.batch_size)
        positions_sent = sum(len(str(f.get("ra", "")).split(",")) for f in zfps.submissions)
        print(f"ZFPS, {n} targets: {len(zfps.submissions)} submissions ({positions_sent} positions)"
              f" in {took:.1f} s; goal ceil({n} / {args.batch_size}) = {goal}")
        print(f"  jobs: {dict(job_states(tmp))}; peak RSS per worker:"
              f" {', '.join(f'{p / 1024:.0f} MiB' for p in peaks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--window", type=float, default=6.0, help="the server's 60 s, scaled (s)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--max-queued", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--services", default="atlas,ztf-fps")
    parser.add_argument("--keep", metavar="DIR", help="ATLAS: keep the data directory and the"
                        " emulator's log (atlas-log.jsonl) in DIR")
    parser.add_argument("--drain", action="store_true",
                        help="ATLAS: let the workers run on until every deferred DELETE is sent")
    args = parser.parse_args()
    targets = positions(args.targets)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    if "atlas" in services:
        bench_atlas(args, targets)
    if "ztf-fps" in services:
        bench_zfps(args, targets)


if __name__ == "__main__":
    main()
