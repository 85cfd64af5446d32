"""Start-up is a feature: what the quick commands import, by the list of modules.

Each command runs in a fresh interpreter (what it imports is the point); the probes
start together, once per module, so their start-up costs overlap. No timing here:
bench/startup.py measures the wall times against `import click`.

- Every quick command, with the test settings file (a table for every built-in
  service, which the registry reads and checks): no astropy, pandas, numpy, httpx,
  matplotlib, ssl, and none of the parsers or logging that only the work needs.
- `stdq query SERVICE --help` of every built-in service and `stdq --help` with no
  settings file (the figure bench/startup.py measures): not even the settings, the
  records, sqlite3, json, pathlib, shutil (the help width: cli.help_width), or
  importlib.metadata (a built-in service is found in registry.BUILTIN, without
  scanning the installed distributions' entry points).
- `stdq jobs status` with no settings file: no logging, no service, no entry-point scan.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from conftest import StdqRunner
from stdq.registry import BUILTIN, SERVICE_GROUP
from stdq.testing.fakeserver import FakeServer

SERVICES = list(BUILTIN[SERVICE_GROUP])

# Never imported by a quick command (a name stands for the module and its submodules).
HEAVY = (
    "astropy", "pandas", "numpy", "httpx", "matplotlib", "ssl",
    "html.parser", "xml.etree", "logging",
)
# Nor, by `query SERVICE --help` and `--help` with no settings file, what only reading
# the settings or the database needs, nor the entry-point scan.
HELP_LIGHT = (
    *HEAVY, "sqlite3", "tomllib", "json", "pathlib", "importlib.metadata", "shutil",
    "stdq.config", "stdq.records", "stdq.db", "stdq.core",
)
# Nor, by `jobs status` with no settings file, any service or the entry-point scan.
STATUS_LIGHT = (*HEAVY, "tomllib", "importlib.metadata", "stdq.services", "stdq.processors")

PROBE = """
import sys
from stdq.cli import main
code = None
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code
watched = {watched!r}
hits = sorted({{w for m in sys.modules for w in watched if m == w or m.startswith(w + ".")}})
print(repr([code, hits]), file=sys.stderr)  # (repr: json would be one more import)
"""

# (settings, args, modules it must not import)
QUICK = [
    *(("file", args, HEAVY) for args in (
        ["--help"],
        ["jobs", "status"],
        ["jobs", "list"],
        ["query", "--help"],
        *(["query", name, "--help"] for name in SERVICES),
        ["services", "list"],
    )),
    ("none", ["--help"], HELP_LIGHT),
    *(("none", ["query", name, "--help"], HELP_LIGHT) for name in SERVICES),
    ("none", ["jobs", "status"], STATUS_LIGHT),
]
# The probe sees what a command imports: -v configures logging at once.
CONTROL = ("none", ["-v", "jobs", "status"], ("logging",))


def _key(settings: str, args: list[str]) -> str:
    return f"{settings}: {' '.join(args)}"


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[str, str]:
    """_key(settings, args) -> the probe's stderr for every QUICK command (and the
    control), each in its own interpreter, all started at once; settings "file" is the
    emulators' settings file, "none" a settings path where no file is."""
    tmp = tmp_path_factory.mktemp("startup")
    (tmp / "home").mkdir()
    with FakeServer() as server:
        runner = StdqRunner(server=server, tmp=tmp, config_path=tmp / "config.toml", data_dir=tmp / "data")
        runner.write_settings()
        envs = {"file": runner.env, "none": dict(runner.env, STDQ_CONFIG=str(tmp / "absent.toml"))}
    procs = {
        _key(settings, args): subprocess.Popen(
            [sys.executable, "-c", PROBE.format(args=args, watched=watched)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=envs[settings], cwd=tmp,
        )
        for settings, args, watched in [*QUICK, CONTROL]
    }
    return {key: proc.communicate(timeout=120)[1] for key, proc in procs.items()}


def _result(probes: dict[str, str], settings: str, args: list[str]) -> tuple[int, list[str]]:
    err = probes[_key(settings, args)]
    code, hits = ast.literal_eval(err.strip().splitlines()[-1])
    return code, hits


@pytest.mark.parametrize(("settings", "args", "watched"), QUICK, ids=[_key(s, a) for s, a, _ in QUICK])
def test_quick_commands_stay_light(probes, settings, args, watched):
    code, hits = _result(probes, settings, args)
    assert code == 0  # the command ran (a failing import would also import nothing)
    assert hits == []


def test_every_builtin_service_is_probed():
    helped = {args[1] for settings, args, _ in QUICK if args[0] == "query" and len(args) == 3}
    assert helped == set(SERVICES) == {"atlas", "panstarrs", "ztf", "ztf-fps", "rubin", "rubin-rsp", "gaia"}


def test_the_probe_sees_an_import(probes):
    settings, args, _ = CONTROL
    code, hits = _result(probes, settings, args)
    assert (code, hits) == (0, ["logging"])


@pytest.mark.parametrize("columns", [None, "30", "60", "79", "200", "0", "wide"])
@pytest.mark.parametrize("forced", [None, 70])
def test_help_width_is_the_width_click_computes(monkeypatch, columns, forced):
    """The CLI hands click the help width (so click imports no shutil): the same number as
    click's own HelpFormatter finds through shutil.get_terminal_size."""
    from click import formatting

    from stdq.cli import help_width

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(formatting, "FORCED_WIDTH", forced)
    assert help_width() == formatting.HelpFormatter().width
