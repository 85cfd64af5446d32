"""`stdq services list | show`: registered services, their options, settings keys and secrets.

A fake service (tests/plugins/fake_phot.py) is registered through settings; a
broken one through an entry point of a hand-made distribution on PYTHONPATH.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, assert_clean_error

PLUGINS = ROOT / "tests" / "plugins"
FAKE_TABLE = """
[services.fake]
class = "fake_phot:FakeService"
url = "http://127.0.0.1:9/fake"
snr_threshold = 4.5

[data_product_types]
fake_photometry = "Fake photometry"

[data_processors]
fake_photometry = "fake_phot:FakeProcessor"
"""
SECRET = "hush-0123456789"


# No emulator is needed: the fake service does no HTTP.
EMULATORS = list


@pytest.fixture
def runner(stdq):
    stdq.write_settings(FAKE_TABLE)
    stdq.extra_env["PYTHONPATH"] = str(PLUGINS)
    return stdq


def make_distribution(site: Path, name: str, entry_points: str) -> None:
    """A minimal installed distribution (dist-info) declaring ENTRY_POINTS."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_list_shows_settings_services_with_title_async_url_class(runner):
    result = runner.run("services", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["name", "title", "async", "url", "class"]
    fake = next(line.split("\t") for line in lines if line.startswith("fake\t"))
    assert fake == ["fake", "Fake photometry for CLI tests", "no", "http://127.0.0.1:9/fake", "fake_phot:FakeService"]

    entries = json.loads(runner.run("--json", "services", "list").stdout)
    entry = next(e for e in entries if e["name"] == "fake")
    assert entry == {
        "name": "fake",
        "title": "Fake photometry for CLI tests",
        "supports_async": False,
        "url": "http://127.0.0.1:9/fake",
        "class": "fake_phot:FakeService",
        "registered_by": "settings",
        "data_product_type": "fake_photometry",
        "error": None,
    }
    # the built-in services are listed too (loaded, or with the reason they cannot be)
    names = {e["name"] for e in entries}
    assert {"atlas", "panstarrs", "ztf", "ztf-fps"} <= names


def test_show_lists_options_settings_and_masked_secrets(runner):
    runner.extra_env["STDQ_FAKE_API_KEY"] = SECRET
    result = runner.run("services", "show", "fake")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert SECRET not in out + result.stderr
    assert out.startswith("fake: Fake photometry for CLI tests\n")
    for text in (
        "https://example.invalid/fake",
        "fake_photometry (processor: fake_phot:FakeProcessor)",
        "in the calling process",
        "--mjd-min", "--date-max", "--band", "choice (g, r)", "[default: g]",
        "snr_threshold = 4.5  (default 3.0)",
        "snr >= this is a detection",
        "limit_nsigma  = 5.0",
        "--band           choice (g, r) the band to fake  [default: g]",
        'url           = "http://127.0.0.1:9/fake"  (default "https://example.invalid/fake")',
        "api_key: set, ******** (from $STDQ_FAKE_API_KEY); environment: STDQ_FAKE_API_KEY, FAKE_PHOT_TOKEN",
    ):
        assert text in out, (text, out)

    shown = json.loads(runner.run("--json", "services", "show", "fake").stdout)
    assert shown["settings"]["snr_threshold"] == {
        "default": 3.0, "value": 4.5, "help": "snr >= this is a detection",
    }
    assert shown["settings"]["url"]["value"] == "http://127.0.0.1:9/fake"
    assert shown["secrets"] == {
        "api_key": {
            "set": True, "value": "********", "source": "$STDQ_FAKE_API_KEY",
            "env": ["STDQ_FAKE_API_KEY", "FAKE_PHOT_TOKEN"],
        }
    }
    assert [o["option"] for o in shown["options"]] == [
        "--mjd-min", "--mjd-max", "--date-min", "--date-max", "--band",
    ]
    assert shown["data_product_title"] == "Fake photometry"
    assert SECRET not in json.dumps(shown)


def test_show_without_the_secret_says_where_to_set_it(runner):
    result = runner.run("services", "show", "fake")
    assert "api_key: not set; environment: STDQ_FAKE_API_KEY, FAKE_PHOT_TOKEN" in result.stdout


def test_show_unknown_service_is_a_clean_error(runner):
    result = runner.run("services", "show", "nosuch")
    assert_clean_error(result, 3)
    assert "unknown service 'nosuch'" in result.stderr and "fake" in result.stderr


def test_a_service_that_fails_to_import_does_not_break_the_list(runner, tmp_path):
    site = tmp_path / "site"
    make_distribution(
        site, "broken_plugin",
        "[stdq.services]\nbroken = broken_service:BrokenService\nmissing = no_such_module_xyz:Service\n",
    )
    runner.extra_env["PYTHONPATH"] = f"{site}:{PLUGINS}"

    result = runner.run("services", "list")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()[1:]}
    assert rows["fake"][1] == "Fake photometry for CLI tests"
    assert rows["broken"][1].startswith("ERROR: ") and "RuntimeError" in rows["broken"][1]
    assert rows["broken"][4] == "broken_service:BrokenService"
    assert rows["missing"][1].startswith("ERROR: ") and "no_such_module_xyz" in rows["missing"][1]

    entries = {e["name"]: e for e in json.loads(runner.run("--json", "services", "list").stdout)}
    assert "this plug-in is broken on purpose" in entries["broken"]["error"]
    assert entries["broken"]["registered_by"] == "entry point"
    assert entries["fake"]["error"] is None

    line = assert_clean_error(runner.run("services", "show", "broken"), 3)
    assert "broken" in line
