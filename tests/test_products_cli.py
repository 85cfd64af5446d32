"""`stdq products list | show | reprocess` on products of a fake service (tests/plugins/fake_phot.py).

The fake raw answer has five usable rows, (flux, err) = (50, 2), (12, 4), (5, 2),
(-4, 2), (30, 10) uJy -> snr 25, 3, 2.5, -2, 3, and one row with a null flux.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, assert_clean_error

PLUGINS = ROOT / "tests" / "plugins"


def fake_table(snr_threshold: float) -> str:
    return (
        "\n[services.fake]\n"
        'class = "fake_phot:FakeService"\n'
        f"snr_threshold = {snr_threshold!r}\n"
        "\n[data_processors]\n"
        'fake_photometry = "fake_phot:FakeProcessor"\n'
    )


# No emulator is needed: the fake service does no HTTP.
EMULATORS = list


@pytest.fixture
def runner(stdq):
    stdq.write_settings(fake_table(3.0))
    stdq.extra_env["PYTHONPATH"] = str(PLUGINS)
    return stdq


def run_json(runner, *args: str):
    result = runner.run("--json", *args)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def make_product(runner, *extra: str) -> dict:
    out = run_json(runner, "query", "fake", "Test Star", "--ra", "10", "--dec", "20", *extra)
    assert out["rows"] == 5 and out["detections"] == 3
    return out


def sha256sum(path: Path) -> str:
    """The sha256 as the `sha256sum` tool gives it (hashlib where the tool is missing)."""
    tool = shutil.which("sha256sum")
    if tool:
        return subprocess.run([tool, str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    return hashlib.sha256(path.read_bytes()).hexdigest()


def detected_by_mjd(csv_path: str | Path) -> dict[float, tuple[bool, str, str]]:
    import csv

    with open(csv_path, newline="") as fh:
        return {
            float(r["mjd"]): (r["detected"] == "True", r["magnitude"], r["limit"]) for r in csv.DictReader(fh)
        }


def test_list_filters_by_target_service_and_limit(runner):
    first = make_product(runner)
    second = make_product(runner, "--band", "r")

    plain = runner.run("products", "list")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].split("\t")[:7] == ["id", "target", "service", "state", "rows", "detections", "left_out"]
    assert [line.split("\t")[:7] for line in lines[1:]] == [
        [str(second["product_id"]), "Test Star", "fake", "ready", "5", "3", "1"],
        [str(first["product_id"]), "Test Star", "fake", "ready", "5", "3", "1"],
    ]

    rows = run_json(runner, "products", "list", "test star")
    assert [r["id"] for r in rows] == [second["product_id"], first["product_id"]]
    assert rows[0]["photometry"] == second["path"]
    assert run_json(runner, "products", "list", "--limit", "1")[0]["id"] == second["product_id"]
    assert run_json(runner, "products", "list", "Other Star") == []
    assert run_json(runner, "products", "list", "--service", "atlas") == []
    empty = runner.run("products", "list", "Other Star")
    assert empty.returncode == 0 and empty.stdout == "" and "no products" in empty.stderr


def test_show_gives_counts_left_out_and_the_sha256_of_the_raw_file(runner):
    out = make_product(runner)
    pid = out["product_id"]
    raw_path = Path(out["path"]).parent / "raw" / "answer.json"

    shown = runner.run("products", "show", str(pid))
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"product {pid}: fake, Test Star (RA 10.000000, Dec +20.000000), ready" in text
    assert "5 rows, 3 detections, flux kind: difference" in text
    assert "left out: 1 null flux" in text
    assert f"answer.json  {raw_path.stat().st_size} bytes  sha256 {sha256sum(raw_path)}" in text
    assert "[CHANGED]" not in text
    assert f"table:     {out['path']}" in text

    data = run_json(runner, "products", "show", str(pid))
    assert data["product"]["id"] == pid and data["product"]["state"] == "ready"
    assert data["counts"]["rows"] == 5 and data["counts"]["detections"] == 3
    assert data["left_out"] == {"null flux": 1}
    assert data["processor"]["cuts"] == {"snr_threshold": 3.0, "limit_nsigma": 5.0}
    assert data["query"]["params"] == {"band": "g"}
    (raw,) = data["raw_files"]
    assert raw["sha256"] == raw["sha256_on_disk"] == sha256sum(raw_path)
    assert (raw["status"], raw["path"], raw["content_type"]) == ("ok", str(raw_path), "application/json")
    assert data["paths"]["photometry"] == out["path"]


def test_reprocess_unchanged_gives_identical_bytes(runner):
    out = make_product(runner)
    table = Path(out["path"])
    before = table.read_bytes()
    result = run_json(runner, "products", "reprocess", str(out["product_id"]))
    assert result["rows"] == 5 and result["detections"] == 3 and result["left_out"] == 1
    assert result["previous"] == {"rows": 5, "detections": 3, "left_out": 1}
    assert result["left_out_reasons"] == {"null flux": 1}
    assert table.read_bytes() == before


def test_reprocess_applies_the_current_snr_threshold(runner):
    out = make_product(runner)
    pid = str(out["product_id"])

    runner.write_settings(fake_table(2.5))  # snr 2.5 of (5 +- 2) now counts
    plain = runner.run("products", "reprocess", pid)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"product {pid} reprocessed: 5 rows, 4 detections (was 3), 1 left out")
    rows = detected_by_mjd(out["path"])
    detected, magnitude, limit = rows[60002.3]
    assert detected and limit == ""
    assert float(magnitude) == pytest.approx(23.9 - 2.5 * math.log10(5.0), abs=1e-9)  # 22.1526
    assert [rows[m][0] for m in sorted(rows)] == [True, True, True, False, True]
    assert run_json(runner, "products", "show", pid)["processor"]["cuts"]["snr_threshold"] == 2.5

    runner.write_settings(fake_table(10.0))  # only snr 25 is left
    result = run_json(runner, "products", "reprocess", pid)
    assert (result["rows"], result["detections"], result["previous"]["detections"]) == (5, 1, 4)
    rows = detected_by_mjd(out["path"])
    assert [rows[m][0] for m in sorted(rows)] == [True, False, False, False, False]
    # (12 +- 4) is now an upper limit at 5 sigma: 23.9 - 2.5 log10(5 * 4) = 20.6474
    assert float(rows[60001.2][2]) == pytest.approx(23.9 - 2.5 * math.log10(20.0), abs=1e-9)
    listed = run_json(runner, "products", "list")[0]
    assert (listed["rows"], listed["detections"]) == (5, 1)


def test_a_changed_raw_file_is_reported_and_fails_reprocessing_cleanly(runner):
    out = make_product(runner)
    pid = str(out["product_id"])
    raw_path = Path(out["path"]).parent / "raw" / "answer.json"
    raw_path.write_bytes(b"<html>not what the service sent</html>")

    data = run_json(runner, "products", "show", pid)
    (raw,) = data["raw_files"]
    assert raw["status"] == "changed" and raw["sha256_on_disk"] == sha256sum(raw_path)
    assert raw["sha256"] != raw["sha256_on_disk"]
    assert "[CHANGED]" in runner.run("products", "show", pid).stdout

    assert_clean_error(runner.run("products", "reprocess", pid), 1)
    assert run_json(runner, "products", "list")[0]["state"] == "failed"

    raw_path.unlink()
    assert run_json(runner, "products", "show", pid)["raw_files"][0]["status"] == "missing"
    result = runner.run("products", "reprocess", pid)
    assert_clean_error(result, 1)
    assert "answer.json missing" in result.stderr


def test_unknown_product_ids_are_bad_input(runner):
    for command in ("show", "reprocess"):
        result = runner.run("products", command, "99")
        assert_clean_error(result, 2)
        assert "no product with id 99" in result.stderr
    assert_clean_error(runner.run("products", "show", "abc"), 2)


# -- commands added by a plugin (entry points `stdq.commands`) -------------------------------

PLUGIN_MODULE = '''
import click

from stdq.cli.common import emit_json, get_state, json_option


@click.command(short_help="Say hello from a plugin.")
@json_option
def hello():
    """A top-level command added by a plugin."""
    if get_state().json:
        emit_json({"hello": "world"})
    else:
        click.echo("hello world")


@click.command(short_help="Export the products (plugin).")
def export():
    """A subcommand of `stdq products` added by a plugin."""
    click.echo(" ".join(str(p.id) for p in get_state().stdq.products()) or "none")
'''


@pytest.fixture
def plugin(runner, tmp_path):
    """A distribution on PYTHONPATH whose entry points add `stdq hello`, `stdq products
    export` and a command whose module is missing."""
    folder = tmp_path / "plugin"
    meta = folder / "stdq_hello-0.1.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: stdq-hello\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text(
        "[stdq.commands]\nhello = hello_cmd:hello\nproducts.export = hello_cmd:export\n"
        "broken = no_such_module_here:command\n"
    )
    (folder / "hello_cmd.py").write_text(PLUGIN_MODULE)
    runner.extra_env["PYTHONPATH"] = f"{PLUGINS}:{folder}"
    return runner


def test_a_plugin_adds_a_top_level_command_and_a_subcommand(plugin):
    top = plugin.run("--help")
    assert top.returncode == 0, top.stderr
    assert "Say hello from a plugin." in top.stdout
    assert "broken" in top.stdout and "unavailable" in top.stdout  # listed with its error
    assert plugin.run("hello").stdout == "hello world\n"
    assert json.loads(plugin.run("hello", "--json").stdout) == json.loads(plugin.run("--json", "hello").stdout)
    group = plugin.run("products", "--help")
    assert "export" in group.stdout and "Export the products (plugin)." in group.stdout
    make_product(plugin)
    assert plugin.run("products", "export").stdout.strip() == "1"
    broken = plugin.run("broken")
    assert "no_such_module_here" in assert_clean_error(broken, 3)
    assert plugin.run("products", "list").returncode == 0  # built-ins unaffected


def test_without_plugins_the_help_lists_the_built_in_commands_only(runner):
    result = runner.run("--help")
    assert result.returncode == 0
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed[:7] == ["query", "jobs", "targets", "products", "services", "config", "demo"]
    assert "hello" not in result.stdout


def test_built_in_commands_never_read_the_entry_points(plugin):
    from stdq import registry

    def scans() -> int:
        return registry.SCANS.get(registry.COMMAND_GROUP, 0)

    before = scans()
    assert plugin.run("products", "list").returncode == 0
    assert plugin.run("jobs", "status").returncode == 0
    assert scans() == before  # a built-in command is found without them
    assert plugin.run("--help").returncode == 0
    assert scans() == before + 1  # the listing reads them once
