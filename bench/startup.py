"""Start-up cost: median wall time of `stdq --help` (and `stdq jobs status`) / `python -c "import click"`.

Measured side by side in one run, alternating, so machine noise hits both alike.
Goal: `stdq --help` <= 1.5x `import click`.

    python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STDQ = [sys.executable, "-m", "stdq"]
if (Path(sys.executable).parent / "stdq").exists():
    STDQ = [str(Path(sys.executable).parent / "stdq")]


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="stdq-bench-")
    env = dict(os.environ, STDQ_DATA_DIR=tmp, STDQ_CONFIG=str(Path(tmp) / "none.toml"))
    commands = {
        "import click": [sys.executable, "-c", "import click"],
        "stdq --help": [*STDQ, "--help"],
        "stdq jobs status": [*STDQ, "jobs", "status"],
    }
    for cmd in commands.values():  # warm the file cache
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(wall(cmd, env))
    base = statistics.median(times["import click"])
    print(f"python -c 'import click': median {base * 1000:.1f} ms over {args.runs} runs")
    for name in ("stdq --help", "stdq jobs status"):
        med = statistics.median(times[name])
        print(f"{name}: median {med * 1000:.1f} ms  ratio {med / base:.2f}")
    ratio = statistics.median(times["stdq --help"]) / base
    print(f"stdq --help / import click = {ratio:.2f} (goal <= 1.5): {'ok' if ratio <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
