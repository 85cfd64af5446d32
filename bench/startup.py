"""Start-up cost: median wall time of the commands people type in shell loops / `python -c "import click"`.

Measured side by side in one run, alternating, so machine noise hits all alike:
`stdq --help`, `stdq jobs status` (an empty data directory; bench/jobs.py measures
it with 10,000 jobs) and `stdq query SERVICE --help` for every built-in service.
Goals: `stdq --help` and every `stdq query SERVICE --help` <= 1.5x `import click`;
`stdq jobs status` <= 2x. Printed with the spread (min..max) of each command.

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

GOALS = {"stdq --help": 1.5, "stdq jobs status": 2.0}
QUERY_HELP_GOAL = 1.5


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def builtin_services() -> list[str]:
    from stdq.registry import BUILTIN, SERVICE_GROUP

    return list(BUILTIN[SERVICE_GROUP])


def main() -> int:
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
    for service in builtin_services():
        commands[f"stdq query {service} --help"] = [*STDQ, "query", service, "--help"]
    for cmd in commands.values():  # warm the file cache and byte-code
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            times[name].append(wall(cmd, env))
    base = statistics.median(times["import click"])
    print(f"python -c 'import click': median {base * 1000:.1f} ms over {args.runs} runs "
          f"(spread {min(times['import click']) * 1000:.0f}..{max(times['import click']) * 1000:.0f} ms)")
    missed = []
    for name in commands:
        if name == "import click":
            continue
        med = statistics.median(times[name])
        goal = GOALS.get(name, QUERY_HELP_GOAL)
        ratio = med / base
        ok = ratio <= goal
        missed += [] if ok else [name]
        print(f"{name:36s} median {med * 1000:6.1f} ms  ratio {ratio:.2f} (goal <= {goal:g}: "
              f"{'ok' if ok else 'MISSED'})  spread {min(times[name]) * 1000:.0f}..{max(times[name]) * 1000:.0f} ms")
    print("all goals met" if not missed else f"goals missed: {', '.join(missed)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
