"""Start-up is a feature: the quick commands import no astropy, pandas, numpy or httpx."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def heavy_modules_after(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    code = PROBE.format(args=args, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    return json.loads(result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["jobs", "status"],
        ["jobs", "list"],
        ["query", "--help"],
        ["query", "panstarrs", "--help"],
        ["query", "atlas", "--help"],
        ["query", "ztf", "--help"],
        ["query", "ztf-fps", "--help"],
        ["services", "list"],
    ],
)
def test_quick_commands_stay_light(stdq, args):
    code, heavy = heavy_modules_after(args, stdq.env)
    assert code == 0  # the command ran (a failing import would also import nothing)
    assert heavy == []
