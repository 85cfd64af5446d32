"""The job queue: `stdq jobs status` with 10,000 jobs, and a worker's per-job overhead.

1. Median wall time of `stdq jobs status` (a cold process) with 10,000 jobs (and
   50,000 events) in the table, divided by the median of `python -c "import click"`,
   measured alternately in the same run. Goal: <= 2.
2. A burst worker (`stdq jobs worker --burst`, a real process) runs N trivial
   jobs of the slow emulator (remote tasks of 0 s, 12 rows each, the emulator in
   this process on 127.0.0.1). Per-job overhead = (wall time with N jobs - wall
   time of the same worker with 1 job) / (N - 1): start-up and the one-time
   imports of the first job (pandas, httpx) are not per-job costs. Everything
   else is: claim, lease heartbeat, progress and checkpoint writes, 4 HTTP
   requests, raw file, processing, photometry.csv and product.json, latest.csv,
   finish. Goal: <= 20 ms per job. Each job is a target of its own (one product per
   folder); --same-target makes them one target (products pile up in one folder).
   Also printed: the worker's CPU time per job, the same difference (steadier than
   the wall time on a shared machine).
3. latest.csv of one target and service after each of N products (12 rows each, 2 of
   them fetched again from the product before): the merge of each new product
   (stdq.latest.add_product, what a worker does) against a full rebuild from every
   product (what it did before), median per product over the last 10 of every 100,
   in process. The merge reads only latest.csv and the new product: its cost follows
   latest.csv's rows, not the number of products.

    python bench/jobs.py [--runs 15] [--jobs 500] [--concurrency 1] [--same-target]
                         [--only status|worker|latest] [--products 300]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STDQ = [sys.executable, "-m", "stdq"]
if (Path(sys.executable).parent / "stdq").exists():
    STDQ = [str(Path(sys.executable).parent / "stdq")]


def base_env(**extra: str) -> dict[str, str]:
    """The environment of the measured commands: as installed, byte-code caches allowed
    (PYTHONDONTWRITEBYTECODE would compile stdq from source on every start, while
    click's caches exist); the warm-up run writes them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def wall_and_cpu(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time of CMD and the CPU time (user + system) of its process: on a shared
    machine the CPU time barely moves with the load, the wall time does."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    took = wall(cmd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fill(data_dir: Path, n: int) -> None:
    """N jobs in realistic states: 4 running, 1% queued, the rest finished; 5 events each."""
    from stdq import db
    from stdq.jobs.queue import idempotency_key

    rng = random.Random(1)
    conn = db.connect(data_dir)
    now = time.time()
    finished = ["succeeded"] * 93 + ["failed"] * 5 + ["cancelled"] * 2
    with db.transaction(conn):
        for i in range(n):
            state = "running" if i >= n - 4 else "queued" if i % 100 == 0 else rng.choice(finished)
            ra, dec = rng.uniform(0, 360), rng.uniform(-30, 80)
            params = {"mjd_min": 60000.0 + i % 50}
            target = {"name": f"T{i}", "ra": ra, "dec": dec}
            created = now - rng.uniform(0, 30 * 86400)
            cur = conn.execute(
                "INSERT INTO jobs (service, target_name, ra, dec, target_json, params_json, idem_key,"
                " runner, state, attempts, created_at, started_at, finished_at, updated_at,"
                " lease_owner, lease_expires, progress, rows, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'worker', ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    "atlas", target["name"], ra, dec, json.dumps(target), json.dumps(params),
                    idempotency_key("atlas", ra, dec, params), state, created, created + 5,
                    created + 600 if state in ("succeeded", "failed", "cancelled") else None,
                    created, "bench:1:x" if state == "running" else None,
                    now + 3600 if state == "running" else None, "remote task running",
                    rng.randint(0, 2000) if state == "succeeded" else None, "done",
                ),
            )
            for kind in ("submitted", "claimed", "progress", "remote", "succeeded"):
                conn.execute(
                    "INSERT INTO job_events (job_id, ts, kind, message) VALUES (?, ?, ?, ?)",
                    (cur.lastrowid, created, kind, f"{kind} event text"),
                )
    conn.close()


def bench_status(runs: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="stdq-bench-jobs-"))
    fill(tmp / "data", 10_000)
    env = base_env(STDQ_DATA_DIR=str(tmp / "data"), STDQ_CONFIG=str(tmp / "none.toml"), NO_COLOR="1")
    commands = {
        "import click": [sys.executable, "-c", "import click"],
        "stdq jobs status": [*STDQ, "jobs", "status"],
    }
    for cmd in commands.values():  # warm the file cache, write the byte-code caches
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            times[name].append(wall(cmd, env))
    shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["import click"])
    status = statistics.median(times["stdq jobs status"])
    ratio = status / base
    print(f"python -c 'import click': median {base * 1000:.1f} ms over {runs} runs")
    print(f"stdq jobs status (10,000 jobs, 50,000 events): median {status * 1000:.1f} ms")
    print(f"jobs status / import click = {ratio:.2f} (goal <= 2): {'ok' if ratio <= 2 else 'MISSED'}")
    return ratio


def bench_worker(n_jobs: int, concurrency: int, *, same_target: bool = False) -> float:
    from stdq.jobs.queue import JobQueue
    from stdq.testing import slow
    from stdq.testing.fakeserver import FakeServer, settings_toml

    server = FakeServer([slow.SlowServiceEmulator(default_seconds=0.0)]).start()
    try:
        walls, cpus = {}, {}
        for n in (1, n_jobs):
            tmp = Path(tempfile.mkdtemp(prefix="stdq-bench-worker-"))
            config = tmp / "config.toml"
            config.write_text(settings_toml(server, slow.settings_extra(autostart_worker=False)))
            queue = JobQueue(tmp / "data")
            for i in range(n):
                if same_target:  # one folder: each job adds a product (12 new rows) to latest.csv
                    queue.submit("slow", {"name": "T", "ra": 10.0, "dec": 20.0}, {"mjd_min": 50000 + i})
                else:
                    queue.submit("slow", {"name": None, "ra": 10.0 + i * 1e-3, "dec": 20.0}, {})
            queue.close()
            env = base_env(STDQ_DATA_DIR=str(tmp / "data"), STDQ_CONFIG=str(config), NO_COLOR="1")
            cmd = [*STDQ, "jobs", "worker", "--burst", "--concurrency", str(concurrency)]
            walls[n], cpus[n] = wall_and_cpu(cmd, env)
            queue = JobQueue(tmp / "data")
            counts = queue.counts()
            queue.close()
            shutil.rmtree(tmp, ignore_errors=True)
            assert counts["succeeded"] == n, counts
        posts = len(server.log_of(emulator="slow", method="POST"))
        assert posts == n_jobs + 1, posts
    finally:
        server.stop()
    per_job = (walls[n_jobs] - walls[1]) / (n_jobs - 1)
    cpu_per_job = (cpus[n_jobs] - cpus[1]) / (n_jobs - 1)
    print(
        f"worker --burst --concurrency {concurrency}{' (one target)' if same_target else ''}:"
        f" {n_jobs} jobs in {walls[n_jobs]:.2f} s,"
        f" 1 job in {walls[1]:.2f} s -> {per_job * 1000:.1f} ms per job"
        f" (goal <= 20): {'ok' if per_job <= 0.020 else 'MISSED'};"
        f" worker CPU {cpu_per_job * 1000:.1f} ms per job"
    )
    return per_job


def bench_latest(n_products: int) -> None:
    import numpy as np
    import pandas as pd

    from stdq import latest, photometry
    from stdq.db import Database
    from stdq.store import Store, atomic_write

    tmp = Path(tempfile.mkdtemp(prefix="stdq-bench-latest-"))
    store = Store(Database(tmp / "data"))
    target = {"name": "SN bench", "ra": 10.0, "dec": 20.0}
    merge: dict[int, list[tuple[float, float]]] = {}
    full: dict[int, list[tuple[float, float]]] = {}

    def timed(call: Any) -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        call()
        return time.perf_counter() - start, time.process_time() - cpu

    try:
        for k in range(1, n_products + 1):
            product = store.create_product(
                service="slow", data_product_type="slow_photometry", target=target, params={}
            )
            ids = [f"r{k - 1}:{i}" for i in (10, 11)] + [f"r{k}:{i}" for i in range(10)]
            mjd = 60000.0 + k + np.arange(12) / 24 - (2 / 24 if k > 1 else 0)
            df = photometry.normalize(pd.DataFrame({
                "mjd": mjd, "survey": "SLOW", "filter": ["o", "c"] * 6, "band": "slowo",
                "flux_ujy": np.linspace(10, 40, 12), "flux_err_ujy": np.full(12, 2.0),
                "detected": np.ones(12, dtype=bool), "source_row_id": ids,
            }), product_id=product.id)
            atomic_write(product.photometry_path, lambda fh, df=df: photometry.write_table(df, fh, "csv"))
            photometry.remember_written(product.photometry_path, df)
            store.mark_product(product.id, state="ready", rows=12)
            took = timed(lambda: latest.add_product(store, product))  # noqa: B023 (called here)
            if k in (1, 10) or k % 100 > 90:
                bucket = k if k in (1, 10) else ((k - 1) // 100 + 1) * 100
                merge.setdefault(bucket, []).append(took)
                folder = Path(product.path).parent
                full.setdefault(bucket, []).append(
                    timed(lambda: latest.rebuild(store, folder, "slow"))  # noqa: B023
                )
    finally:
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
    for bucket in sorted(merge):
        m = [statistics.median(t[i] for t in merge[bucket]) * 1000 for i in (0, 1)]
        f = [statistics.median(t[i] for t in full[bucket]) * 1000 for i in (0, 1)]
        print(
            f"latest.csv after product {bucket:4d} ({bucket * 10 + 2} rows): merge {m[0]:6.1f} ms"
            f" (cpu {m[1]:5.1f}), full rebuild {f[0]:7.1f} ms (cpu {f[1]:6.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--only", choices=("status", "worker", "latest"), help="run one part")
    parser.add_argument("--products", type=int, default=300, help="products of part 3")
    parser.add_argument("--same-target", action="store_true",
                        help="part 2 with every job for one target (products pile up in one folder)")
    args = parser.parse_args()
    if args.only in (None, "status"):
        bench_status(args.runs)
    if args.only in (None, "worker"):
        bench_worker(args.jobs, args.concurrency, same_target=args.same_target)
    if args.only in (None, "latest"):
        bench_latest(args.products)


if __name__ == "__main__":
    main()
