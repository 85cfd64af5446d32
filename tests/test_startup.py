"""Start-up is a feature: the quick commands import no astropy, pandas, numpy or httpx.

Each command runs in a fresh interpreter (what it imports is the point); the probes
start together, once per module, so their start-up costs overlap.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import StdqRunner
from stdq.testing.fakeserver import FakeServer

HEAVY = ("astropy", "pandas", "numpy", "httpx", "matplotlib")
PROBE = """
import json, sys
from stdq.cli import main
code = None
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps([code, heavy]), file=sys.stderr)
"""
QUICK = [
    ["--help"],
    ["jobs", "status"],
    ["jobs", "list"],
    ["query", "--help"],
    ["query", "panstarrs", "--help"],
    ["query", "atlas", "--help"],
    ["query", "ztf", "--help"],
    ["query", "ztf-fps", "--help"],
    ["services", "list"],
]


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[str, str]:
    """`" ".join(args)` -> the probe's stderr for every QUICK command, each in its own
    interpreter, all started at once."""
    tmp = tmp_path_factory.mktemp("startup")
    (tmp / "home").mkdir()
    with FakeServer() as server:
        runner = StdqRunner(server=server, tmp=tmp, config_path=tmp / "config.toml", data_dir=tmp / "data")
        runner.write_settings()
        env = runner.env
    procs = {
        " ".join(args): subprocess.Popen(
            [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp,
        )
        for args in QUICK
    }
    return {key: proc.communicate(timeout=60)[1] for key, proc in procs.items()}


@pytest.mark.parametrize("args", QUICK, ids=" ".join)
def test_quick_commands_stay_light(probes, args):
    err = probes[" ".join(args)]
    code, heavy = json.loads(err.strip().splitlines()[-1])
    assert code == 0  # the command ran (a failing import would also import nothing)
    assert heavy == []
