"""Start-up cost: median wall time of the commands people type in shell loops / `python -c "import click"`.

Measured side by side in one run, alternating, so machine noise hits all alike:
`stdq --help`, `stdq jobs status` (an empty data directory; bench/jobs.py measures
it with 10,000 jobs) and `stdq query SERVICE --help` for every built-in service,
with no settings file. Goals: `stdq --help` and every `stdq query SERVICE --help`
<= 1.5x `import click`; `stdq jobs status` <= 2x. Printed with the spread (min..max)
of each command. Also printed, with no goal: `stdq query atlas --help` and `stdq
jobs status` with a settings file that has a table for every built-in service (the
registry then reads and checks it, importing every service and processor it names),
and `stdq query atlas --help` with no $STDQ_CONFIG (the default settings path is then
found by platformdirs, whose import is part of the figure; no file is there).

The commands run with byte-code written ($PYTHONDONTWRITEBYTECODE is dropped), as
an installed stdq runs: otherwise every module edited since its last .pyc is
compiled again at each run and the figures measure the compiler.

Beside the goal's ratio (of the medians) each line shows, as a check on the noise of
a shared machine: "pairwise", the median of each round's ratio to that round's
`import click`, and "cpu", the ratio of the median CPU times (user + system).

    python bench/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wall(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall time, CPU time) of one run of CMD, in seconds."""
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start, _children_cpu() - cpu


def builtin_services() -> list[str]:
    from stdq.registry import BUILTIN, SERVICE_GROUP

    return list(BUILTIN[SERVICE_GROUP])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="stdq-bench-")
    env = dict(os.environ, STDQ_DATA_DIR=tmp, STDQ_CONFIG=str(Path(tmp) / "none.toml"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    settings = Path(tmp) / "settings.toml"
    settings.write_text(
        "".join(f'[services.{name}]\nurl = "http://127.0.0.1:9/{name}"\n\n' for name in builtin_services()),
        encoding="utf-8",
    )
    with_file = dict(env, STDQ_CONFIG=str(settings))
    default_path = {k: v for k, v in env.items() if k not in ("STDQ_CONFIG", "XDG_CONFIG_HOME")}
    default_path["HOME"] = tmp  # the platform's default settings path, where no file is
    commands = {
        "import click": [sys.executable, "-c", "import click"],
        "stdq --help": [*STDQ, "--help"],
        "stdq jobs status": [*STDQ, "jobs", "status"],
    }
    for service in builtin_services():
        commands[f"stdq query {service} --help"] = [*STDQ, "query", service, "--help"]
    info = {"stdq query atlas --help (settings file)": [*STDQ, "query", "atlas", "--help"],
            "stdq jobs status (settings file)": [*STDQ, "jobs", "status"],
            "stdq query atlas --help (no $STDQ_CONFIG)": [*STDQ, "query", "atlas", "--help"]}
    envs = {**dict.fromkeys(commands, env), **dict.fromkeys(info, with_file),
            "stdq query atlas --help (no $STDQ_CONFIG)": default_path}
    commands.update(info)
    for name, cmd in commands.items():  # warm the file cache and write the byte-code
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=envs[name])
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, cmd in commands.items():
            took, cpu = wall(cmd, envs[name])
            times[name].append(took)
            cpus[name].append(cpu)
    base = statistics.median(times["import click"])
    base_cpu = statistics.median(cpus["import click"])
    print(f"python -c 'import click': median {base * 1000:.1f} ms over {args.runs} runs "
          f"(spread {min(times['import click']) * 1000:.0f}..{max(times['import click']) * 1000:.0f} ms)")
    missed = []
    for name in commands:
        if name == "import click":
            continue
        med = statistics.median(times[name])
        ratio = med / base
        pairwise = statistics.median(t / b for t, b in zip(times[name], times["import click"], strict=True))
        cpu = statistics.median(cpus[name]) / base_cpu if base_cpu > 0 else float("nan")
        checks = (f"pairwise {pairwise:.2f}  cpu {cpu:.2f}  "
                  f"spread {min(times[name]) * 1000:.0f}..{max(times[name]) * 1000:.0f} ms")
        if name in info:
            print(f"{name:40s} median {med * 1000:6.1f} ms  ratio {ratio:.2f} (no goal)  {checks}")
            continue
        goal = GOALS.get(name, QUERY_HELP_GOAL)
        ok = ratio <= goal
        missed += [] if ok else [name]
        print(f"{name:40s} median {med * 1000:6.1f} ms  ratio {ratio:.2f} (goal <= {goal:g}: "
              f"{'ok' if ok else 'MISSED'})  {checks}")
    print("all goals met" if not missed else f"goals missed: {', '.join(missed)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
