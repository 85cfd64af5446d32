"""Settings: discovery, the data directory, validation errors (exit 3), secrets, `stdq config`,
the commented template and config.example.toml, and astropy's downloads switched off."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, assert_clean_error, run_stdq
from stdq.config import (
    HTTP_DEFAULTS,
    MASK,
    RESOLVER_DEFAULTS,
    TASKS_DEFAULTS,
    HttpSettings,
    ResolverSettings,
    TaskSettings,
    load_settings,
)
from stdq.config_template import template_text
from stdq.errors import ConfigError
from stdq.registry import registry_for


def service(settings, name: str):
    """The merged settings of service NAME (the registry owns them; config.py is pure data)."""
    return registry_for(settings).service_config(name)

DUMMY_MODULE = "stdq_test_dummy_service"
BROKEN_MODULE = "stdq_test_broken_service"
DUMMY_CLASS = f"{DUMMY_MODULE}:DummyService"

DUMMY_SOURCE = '''
"""A small third-party service for the settings tests."""
from stdq.services.base import SingleTargetDataService


class DummyService(SingleTargetDataService):
    name = "dummy"
    title = "Dummy survey"
    default_url = "https://dummy.example.org/api"
    settings_defaults = {"poll_interval": 5.0, "max_poll_interval": 120.0, "max_rows": 100, "mode": "fast"}
    secret_fields = ("api_key", "userpass")
    secret_env = {"api_key": ("DUMMY_CONVENTIONAL_KEY",)}


class NoKeyService(SingleTargetDataService):
    name = "nokey"
    secret_fields = ()


not_a_class = 42
'''

FILE_SECRET = "file-secret-Abc123"
ENV_SECRET = "env-secret-Xyz789"


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch) -> Path:
    """A folder with the dummy service module (and one that fails at import), on sys.path."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / f"{DUMMY_MODULE}.py").write_text(DUMMY_SOURCE)
    (folder / f"{BROKEN_MODULE}.py").write_text('raise RuntimeError("broken at import")\n')
    monkeypatch.syspath_prepend(str(folder))
    for var in [v for v in os.environ if v.startswith("STDQ_")] + ["DUMMY_CONVENTIONAL_KEY"]:
        monkeypatch.delenv(var, raising=False)
    return folder


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None, plugins: Path | None = None):
    """`stdq` with HOME and XDG folders inside TMP_PATH and no STDQ_* from outside."""
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STDQ_", "XDG_")) and k not in ("DUMMY_CONVENTIONAL_KEY", "PYTHONPATH")
    }
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    full.update({"HOME": str(home), "NO_COLOR": "1", "STDQ_DATA_DIR": str(tmp_path / "data")})
    if plugins is not None:
        full["PYTHONPATH"] = str(plugins)
    full.update(env or {})
    full = {k: v for k, v in full.items() if v is not None}
    return run_stdq(list(args), env=full, cwd=tmp_path, timeout=60)  # in this process


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def shown(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- discovery -------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="platformdirs paths checked for Linux")
def test_discovery_order(tmp_path):
    xdg = tmp_path / "xdg"
    default = write(xdg / "stdq" / "config.toml", "[http]\ntimeout = 11\n")
    from_env = write(tmp_path / "env.toml", "[http]\ntimeout = 22\n")
    explicit = write(tmp_path / "explicit.toml", "[http]\ntimeout = 33\n")

    # nothing said: platformdirs' user config dir ($XDG_CONFIG_HOME/stdq/config.toml)
    env = {"XDG_CONFIG_HOME": str(xdg)}
    assert run(tmp_path, "config", "path", env=env).stdout.strip() == str(default)
    assert shown(run(tmp_path, "--json", "config", "show", env=env))["http"]["timeout"] == 11.0

    # $STDQ_CONFIG beats the default
    env["STDQ_CONFIG"] = str(from_env)
    assert run(tmp_path, "config", "path", env=env).stdout.strip() == str(from_env)
    assert shown(run(tmp_path, "--json", "config", "show", env=env))["http"]["timeout"] == 22.0

    # --config beats $STDQ_CONFIG
    result = run(tmp_path, "--config", str(explicit), "config", "path", env=env)
    assert result.stdout.strip() == str(explicit)
    result = run(tmp_path, "--config", str(explicit), "--json", "config", "show", env=env)
    assert shown(result)["http"]["timeout"] == 33.0


@pytest.mark.skipif(sys.platform != "linux", reason="platformdirs paths checked for Linux")
def test_default_path_under_home(tmp_path):
    result = run(tmp_path, "config", "path")
    assert result.stdout.strip() == str(tmp_path / "home" / ".config" / "stdq" / "config.toml")
    assert "no file there yet" in result.stderr
    # no file means defaults
    data = shown(run(tmp_path, "--json", "config", "show"))
    assert data["http"] == {**HTTP_DEFAULTS, "timeout": 30.0, "max_retries": 4}
    assert data["config_file"].endswith("(absent: defaults)")


def test_explicit_config_that_does_not_exist(tmp_path):
    missing = tmp_path / "nope.toml"
    result = run(tmp_path, "--config", str(missing), "config", "show")
    assert_clean_error(result, 3)
    assert str(missing) in result.stderr


def test_data_dir_precedence(tmp_path):
    config = write(tmp_path / "c.toml", f'data_dir = "{tmp_path / "from-file"}"\n')
    env = {"STDQ_CONFIG": str(config), "STDQ_DATA_DIR": None}
    assert shown(run(tmp_path, "--json", "config", "show", env=env))["data_dir"] == str(
        tmp_path / "from-file"
    )
    env["STDQ_DATA_DIR"] = str(tmp_path / "from-env")
    assert shown(run(tmp_path, "--json", "config", "show", env=env))["data_dir"] == str(
        tmp_path / "from-env"
    )
    result = run(tmp_path, "--data-dir", str(tmp_path / "from-option"), "--json", "config", "show", env=env)
    assert shown(result)["data_dir"] == str(tmp_path / "from-option")


# -- bad settings: exit 3, one line naming the file and the key --------------------------------

BAD_SETTINGS = [
    ("malformed", "[http\ntimeout = 3\n", ["not valid TOML"]),
    ("unknown top-level key", 'colour = "blue"\n', ["'colour'"]),
    ("unknown [tasks] key", '[tasks]\nbakend = "database"\n', ["[tasks]", "'bakend'"]),
    ("wrong type", '[http]\ntimeout = "fast"\n', ["[http] timeout"]),
    ("int key given a float", "[tasks]\nmax_attempts = 2.5\n", ["[tasks] max_attempts"]),
    ("bad backend", '[tasks]\nbackend = "celery"\n', ["backend", "celery"]),
    ("unknown resolver", '[resolver]\norder = ["local", "simbad"]\n', ["order", "simbad"]),
    ("data_dir not a string", "data_dir = 5\n", ["data_dir"]),
    ("table not a table", "http = 5\n", ["[http]"]),
    ("unknown service without class", '[services.nosuch]\nurl = "https://x.org"\n', ["[services.nosuch]", "class"]),
    ("class that does not import", '[services.mine]\nclass = "no_such_module_xyz:Service"\n', ["[services.mine] class", "no_such_module_xyz"]),
    ("class whose module fails", f'[services.mine]\nclass = "{BROKEN_MODULE}:Service"\n', ["[services.mine] class", BROKEN_MODULE]),
    ("class missing from module", f'[services.mine]\nclass = "{DUMMY_MODULE}:NotThere"\n', ["[services.mine] class", "NotThere"]),
    ("class path not a class", f'[services.mine]\nclass = "{DUMMY_MODULE}:not_a_class"\n', ["[services.mine] class", "not_a_class"]),
    ("class path without colon", '[services.mine]\nclass = "just_a_module"\n', ["[services.mine] class"]),
    ("unknown service key", f'[services.dummy]\nclass = "{DUMMY_CLASS}"\ncolour = "red"\n', ["[services.dummy]", "'colour'"]),
    ("service key of wrong type", f'[services.dummy]\nclass = "{DUMMY_CLASS}"\nmax_rows = 2.5\n', ["[services.dummy] max_rows"]),
    ("service string key given a number", f'[services.dummy]\nclass = "{DUMMY_CLASS}"\nmode = 3\n', ["[services.dummy] mode"]),
    ("processor that does not import", '[data_processors]\nfoo_photometry = "no_such_mod:Proc"\n', ["[data_processors] foo_photometry"]),
]


@pytest.mark.parametrize("case, text, needles", BAD_SETTINGS, ids=[c[0] for c in BAD_SETTINGS])
def test_bad_settings_exit_3(tmp_path, plugin_dir, case, text, needles):
    config = write(tmp_path / "bad.toml", text)
    for args in (["config", "show"], ["targets", "list"]):
        result = run(tmp_path, "--config", str(config), *args, plugins=plugin_dir)
        assert_clean_error(result, 3)
        lines = result.stderr.strip().splitlines()
        assert len(lines) <= 2, result.stderr
        assert lines[0].startswith("error: ") and str(config) in lines[0], lines[0]
        for needle in needles:
            assert needle in lines[0], (needle, lines[0])
        assert result.stdout == ""


def test_secret_of_wrong_type_is_not_shown(tmp_path, plugin_dir):
    config = write(tmp_path / "c.toml", f'[services.dummy]\nclass = "{DUMMY_CLASS}"\napi_key = 98765431\n')
    result = run(tmp_path, "--config", str(config), "config", "show", plugins=plugin_dir)
    assert_clean_error(result, 3)
    assert "[services.dummy] api_key" in result.stderr
    assert "98765431" not in result.stderr + result.stdout


# -- secrets ---------------------------------------------------------------------------------


def test_config_show_masks_secrets(tmp_path, plugin_dir):
    config = write(
        tmp_path / "c.toml",
        f"""\
        [services.dummy]
        class = "{DUMMY_CLASS}"
        api_key = "{FILE_SECRET}"

        [services.nokey]
        class = "{DUMMY_MODULE}:NoKeyService"
        api_key = "{FILE_SECRET}-2"
        """,
    )
    env = {"STDQ_DUMMY_USERPASS": ENV_SECRET}
    plain = run(tmp_path, "--config", str(config), "config", "show", env=env, plugins=plugin_dir)
    as_json = run(tmp_path, "--config", str(config), "--json", "config", "show", env=env, plugins=plugin_dir)
    for result in (plain, as_json):
        assert result.returncode == 0, result.stderr
        assert FILE_SECRET not in result.stdout + result.stderr
        assert ENV_SECRET not in result.stdout + result.stderr
    assert "[services.dummy]" in plain.stdout and MASK in plain.stdout
    dummy = json.loads(as_json.stdout)["services"]["dummy"]
    assert dummy["api_key"] == f"{MASK} (from {config})"
    assert dummy["userpass"] == f"{MASK} (from $STDQ_DUMMY_USERPASS)"
    assert dummy["url"] == "https://dummy.example.org/api"
    assert dummy["poll_interval"] == 5.0 and dummy["mode"] == "fast"
    # a service class without api_key among its secrets: api_key is still a secret
    assert json.loads(as_json.stdout)["services"]["nokey"]["api_key"].startswith(MASK)


def test_environment_beats_file_for_secrets(tmp_path, plugin_dir, monkeypatch):
    config = write(tmp_path / "c.toml", f'[services.dummy]\nclass = "{DUMMY_CLASS}"\napi_key = "{FILE_SECRET}"\n')
    assert service(load_settings(config), "dummy").secret("api_key") == FILE_SECRET
    monkeypatch.setenv("DUMMY_CONVENTIONAL_KEY", "conventional-key")
    assert service(load_settings(config), "dummy").secret("api_key") == "conventional-key"
    monkeypatch.setenv("STDQ_DUMMY_API_KEY", ENV_SECRET)
    merged = service(load_settings(config), "dummy")
    assert merged.secret("api_key") == ENV_SECRET
    assert merged.secret_sources["api_key"] == "$STDQ_DUMMY_API_KEY"
    assert sorted(merged.secret_values()) == [ENV_SECRET]
    assert "api_key" not in merged.values  # secrets never sit among the plain values
    result = run(
        tmp_path, "--config", str(config), "--json", "config", "show",
        env={"STDQ_DUMMY_API_KEY": ENV_SECRET}, plugins=plugin_dir,
    )
    assert shown(result)["services"]["dummy"]["api_key"] == f"{MASK} (from $STDQ_DUMMY_API_KEY)"
    assert ENV_SECRET not in result.stdout


# -- types -----------------------------------------------------------------------------------


def test_floats_and_ints(tmp_path, plugin_dir):
    config = write(
        tmp_path / "c.toml",
        f"""\
        [http]
        timeout = 2.5
        max_retries = 0

        [tasks]
        lease_seconds = 12.5

        [services.dummy]
        class = "{DUMMY_CLASS}"
        poll_interval = 2
        max_poll_interval = 60
        """,
    )
    settings = load_settings(config)
    assert settings.http.timeout == 2.5 and settings.http.max_retries == 0
    assert settings.tasks.lease_seconds == 12.5
    values = service(settings, "dummy").values
    assert values["poll_interval"] == 2.0 and isinstance(values["poll_interval"], float)
    assert values["max_poll_interval"] == 60.0 and isinstance(values["max_poll_interval"], float)
    assert values["max_rows"] == 100 and isinstance(values["max_rows"], int)

    write(config, "[http]\ntimeout = 3\n")
    timeout = load_settings(config).http.timeout
    assert timeout == 3.0 and isinstance(timeout, float)
    write(config, "[http]\ntimeout = true\n")
    with pytest.raises(ConfigError, match=r"\[http\] timeout"):
        load_settings(config)


# -- config init -----------------------------------------------------------------------------


def test_config_init(tmp_path):
    target = tmp_path / "new" / "folder" / "config.toml"
    first = run(tmp_path, "--config", str(target), "config", "init")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == template_text()
    # the file it wrote is a valid settings file
    assert run(tmp_path, "--config", str(target), "config", "show").returncode == 0

    target.write_text("# mine\n")
    again = run(tmp_path, "--config", str(target), "config", "init")
    assert_clean_error(again, 2)
    assert str(target) in again.stderr and "--force" in again.stderr
    assert target.read_text() == "# mine\n"

    target.chmod(0o644)
    forced = run(tmp_path, "--config", str(target), "config", "init", "--force")
    assert forced.returncode == 0, forced.stderr
    assert target.read_text() == template_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not [p for p in target.parent.iterdir() if p.name != "config.toml"]  # no temp file left


def test_config_init_uses_stdq_config(tmp_path):
    target = tmp_path / "env-config.toml"
    result = run(tmp_path, "--json", "config", "init", env={"STDQ_CONFIG": str(target)})
    assert shown(result) == {"path": str(target), "overwritten": False}
    assert target.read_text() == template_text()


def test_config_show_with_builtin_services(tmp_path):
    """Defaults only: `config show` works even where a built-in service does not load."""
    result = run(tmp_path, "--json", "config", "show")
    data = shown(result)
    assert {"atlas", "panstarrs", "ztf", "ztf-fps"} <= set(data["services"])
    assert data["tasks"] == {
        "backend": "database", "autostart_worker": True, "lease_seconds": 30.0, "max_attempts": 5,
        "reuse_seconds": 43200.0,
    }
    assert data["resolver"]["order"] == ["local", "sesame", "mast"]


# -- the template and config.example.toml -------------------------------------------------------

SETTING_LINE = re.compile(r"^# (\[[A-Za-z0-9_.\-]+\]|[A-Za-z_][A-Za-z0-9_\-]* = .+)$")


def uncomment(text: str, skip_tables: tuple[str, ...] = ()) -> str:
    """The template with its setting lines uncommented, except in tables starting with SKIP_TABLES."""
    out, table = [], ""
    for line in text.splitlines():
        match = SETTING_LINE.match(line)
        if not match:
            continue
        setting = match.group(1)
        if setting.startswith("["):
            table = setting.strip("[]")
        if not table.startswith(skip_tables) or not skip_tables:
            out.append(setting)
    return "\n".join(out) + "\n"


def test_example_file_is_the_template():
    assert (ROOT / "config.example.toml").read_text(encoding="utf-8") == template_text()


def test_template_is_all_comments_and_loads(tmp_path):
    text = template_text()
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())
    path = write(tmp_path / "t.toml", text)
    settings = load_settings(path)
    assert settings.file_exists
    assert (settings.tasks, settings.http, settings.resolver) == (
        TaskSettings(), HttpSettings(), ResolverSettings()
    )
    assert settings.services_raw == {}


def test_template_documents_every_core_key_with_its_default(tmp_path):
    core = uncomment(template_text(), skip_tables=("services.", "data_processors", "resolver.tns"))
    data = tomllib.loads(core)
    assert set(data["tasks"]) == set(TASKS_DEFAULTS)
    assert set(data["http"]) == set(HTTP_DEFAULTS)
    # [resolver]: the order, then the keys the built-in resolvers declare (stdq.resolvers)
    from stdq.resolvers import MastResolver, SesameResolver

    resolver_defaults = {
        **RESOLVER_DEFAULTS, **SesameResolver.settings_defaults, **MastResolver.settings_defaults
    }
    assert set(data["resolver"]) == set(resolver_defaults)
    for key, value in {**data["tasks"], **data["http"], **data["resolver"]}.items():
        default = {**TASKS_DEFAULTS, **HTTP_DEFAULTS, **resolver_defaults}[key]
        assert value == default, key
    path = write(tmp_path / "core.toml", core)
    settings = load_settings(path, data_dir=tmp_path / "data")
    assert (settings.tasks, settings.http, settings.resolver.order) == (
        TaskSettings(), HttpSettings(), ResolverSettings().order
    )
    registry_for(settings)  # the resolvers' keys check
    # secrets appear only as placeholders
    text = template_text()
    assert re.search(r'^# api_key = "<[^>]+>"$', text, re.MULTILINE)
    for var in ("STDQ_ATLAS_API_KEY", "ATLAS_FORCED_PHOTOMETRY_API_KEY", "MAST_API_TOKEN",
                "STDQ_ZTF_FPS_EMAIL", "STDQ_ZTF_FPS_USERPASS", "STDQ_DATA_DIR"):
        assert var in text
    # the service tables of DESIGN.md are all there
    for table in ("services.atlas", "services.panstarrs", "services.ztf", "services.ztf-fps",
                  "data_product_types", "data_processors"):
        assert f"# [{table}]\n" in text


def test_template_fully_uncommented_loads(tmp_path):
    path = write(tmp_path / "full.toml", uncomment(template_text()))
    settings = load_settings(path, data_dir=tmp_path / "data")
    registry = registry_for(settings)  # every table and key is checked here
    for name in ("atlas", "panstarrs", "ztf", "ztf-fps"):
        merged = registry.service_config(name)
        defaults = {k: spec["default"] for k, spec in registry.settings_keys(name).items()}
        assert merged.values == defaults, name  # the template shows every default as it is


# -- astropy never downloads -----------------------------------------------------------------------


def test_quiet_astropy_switches_downloads_off():
    from astropy.utils import iers

    from stdq.photometry import quiet_astropy

    with iers.conf.set_temp("auto_download", True):
        quiet_astropy()
        assert iers.conf.auto_download is False


# -- ranges (issue 9 item 6): exit 3 naming the file and the key -------------------------------

OUT_OF_RANGE = [
    ("[tasks]\nlease_seconds = 0.5\n", "[tasks] lease_seconds", ">= 1"),
    ("[tasks]\nlease_seconds = nan\n", "[tasks] lease_seconds", "finite"),
    ("[tasks]\nlease_seconds = inf\n", "[tasks] lease_seconds", "finite"),
    ("[tasks]\nmax_attempts = 0\n", "[tasks] max_attempts", "from 1 to 100"),
    ("[tasks]\nmax_attempts = 101\n", "[tasks] max_attempts", "from 1 to 100"),
    ("[http]\ntimeout = 0\n", "[http] timeout", "> 0"),
    ("[http]\ntimeout = -inf\n", "[http] timeout", "finite"),
    ("[http]\ndeadline = -1\n", "[http] deadline", "> 0"),
    ("[http]\ndeadline = nan\n", "[http] deadline", "finite"),
    ("[http]\nmax_retries = 21\n", "[http] max_retries", "from 0 to 20"),
    ("[http]\nmax_retries = -1\n", "[http] max_retries", "from 0 to 20"),
    ("[http]\nmax_bytes = 0\n", "[http] max_bytes", ">= 1"),
    ("[services.atlas]\npoll_interval = 0\n", "[services.atlas] poll_interval", "> 0"),
    ("[services.atlas]\nmax_poll_interval = inf\n", "[services.atlas] max_poll_interval", "finite"),
    ("[services.atlas]\nsnr_threshold = 0\n", "[services.atlas] snr_threshold", "> 0"),
    ("[services.atlas]\nlimit_nsigma = -3\n", "[services.atlas] limit_nsigma", "> 0"),
    ("[services.atlas]\nsnr_threshold = nan\n", "[services.atlas] snr_threshold", "finite"),
    ("[services.ztf-fps]\npoll_interval = nan\n", "[services.ztf-fps] poll_interval", "finite"),
    ("[services.ztf-fps]\nlimit_nsigma = 0\n", "[services.ztf-fps] limit_nsigma", "> 0"),
    ("[services.panstarrs]\nmin_psf_qf_perfect = 1.5\n", "[services.panstarrs] min_psf_qf_perfect", "from 0 to 1"),
    ("[services.panstarrs]\npagesize = 0\n", "[services.panstarrs] pagesize", ">= 1"),
]


@pytest.mark.parametrize("text, key, needle", OUT_OF_RANGE, ids=[c[1] + " " + c[0].split("= ")[-1].strip() for c in OUT_OF_RANGE])
def test_out_of_range_is_exit_3_naming_file_and_key(tmp_path, text, key, needle):
    from stdq.registry import load_settings as load_checked

    config = write(tmp_path / "ranges.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_checked(config)
    message = caught.value.message
    assert caught.value.exit_code == 3
    assert message.startswith(f"{config}: {key} must be "), message
    assert needle in message, message
    assert "\n" not in message


def test_range_ends_are_accepted(tmp_path):
    from stdq.registry import load_settings as load_checked

    config = write(tmp_path / "ends.toml", """\
        [tasks]
        lease_seconds = 1
        max_attempts = 100
        [http]
        max_retries = 20
        timeout = 0.001
        [services.atlas]
        writes_per_minute = 0
        [services.panstarrs]
        min_psf_qf_perfect = 0.0
        """)
    settings = load_checked(config)
    assert settings.tasks.lease_seconds == 1.0 and settings.tasks.max_attempts == 100
    assert settings.http.max_retries == 20
    assert service(settings, "atlas")["writes_per_minute"] == 0
    write(config, "[tasks]\nmax_attempts = 1\n[http]\nmax_retries = 0\n")
    assert load_checked(config).tasks.max_attempts == 1


def test_a_class_declares_ranges_of_its_own_keys(tmp_path, plugin_dir):
    from stdq.registry import load_settings as load_checked

    (plugin_dir / "stdq_test_ranged.py").write_text(
        "from stdq.services.base import SingleTargetDataService\n"
        "class Ranged(SingleTargetDataService):\n"
        "    settings_defaults = {'max_rows': 100, 'poll_interval': 1.0}\n"
        "    settings_ranges = {'max_rows': '10..1000'}\n"
    )
    config = write(tmp_path / "c.toml", '[services.r]\nclass = "stdq_test_ranged:Ranged"\nmax_rows = 5\n')
    with pytest.raises(ConfigError, match=r"\[services.r\] max_rows must be an integer from 10 to 1000, not 5"):
        load_checked(config)
    write(config, '[services.r]\nclass = "stdq_test_ranged:Ranged"\npoll_interval = 0\n')
    with pytest.raises(ConfigError, match=r"\[services.r\] poll_interval must be a finite number > 0"):
        load_checked(config)  # the shared ranges apply in any service with the key


def test_out_of_range_on_the_command_line(tmp_path):
    from conftest import run_in_process

    config = write(tmp_path / "c.toml", "[http]\nmax_retries = 50\n")
    for args in (["config", "show"], ["jobs", "list"]):
        result = run_in_process(["--config", str(config), *args], env={"STDQ_DATA_DIR": str(tmp_path / "d")}, cwd=tmp_path)
        line = assert_clean_error(result, 3)
        assert line == f"error: {config}: [http] max_retries must be an integer from 0 to 20, not 50"
        assert result.stdout == ""


def test_every_range_is_in_the_docs():
    from stdq.config import HTTP_RANGES, TASKS_RANGES
    from stdq.registry import SERVICE_RANGES

    page = (ROOT / "docs" / "settings.md").read_text()
    ranges = page.split("## Ranges", 1)[1].split("\n## ", 1)[0]
    for key in [*TASKS_RANGES, *HTTP_RANGES, *SERVICE_RANGES]:
        assert f"`{key}`" in ranges or f"] {key}`" in ranges, key


# -- the data directory (issue 9 item 6) -------------------------------------------------------


def test_relative_data_dir_is_relative_to_the_settings_file(tmp_path, monkeypatch):
    from conftest import run_in_process

    config = write(tmp_path / "conf" / "c.toml", 'data_dir = "stdq-data"\n')
    monkeypatch.delenv("STDQ_DATA_DIR", raising=False)
    assert load_settings(config).data_dir == tmp_path / "conf" / "stdq-data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_in_process(["--json", "--config", str(config), "config", "show"], env={"STDQ_DATA_DIR": None}, cwd=elsewhere)
    assert json.loads(result.stdout)["data_dir"] == str(tmp_path / "conf" / "stdq-data")
    write(config, 'data_dir = "../up/./d"\n')
    assert load_settings(config).data_dir == tmp_path / "conf" / ".." / "up" / "." / "d"
    write(config, f'data_dir = "{tmp_path / "abs"}"\n')
    assert load_settings(config).data_dir == tmp_path / "abs"
    write(config, 'data_dir = "~/in-home"\n')
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings(config).data_dir == tmp_path / "home" / "in-home"
    # --data-dir and $STDQ_DATA_DIR stay relative to the working directory
    assert load_settings(config, "rel").data_dir == Path("rel")


def test_data_dir_is_created_only_by_a_write_which_says_so(tmp_path):
    from conftest import run_in_process

    data = tmp_path / "new" / "data"
    env = {"STDQ_DATA_DIR": str(data), "STDQ_CONFIG": None, "HOME": str(tmp_path)}
    for args in (["jobs", "list"], ["jobs", "status"], ["products", "list"], ["targets", "list"], ["config", "show"]):
        result = run_in_process(args, env=env, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "created" not in result.stderr
    assert not data.exists() and not data.parent.exists()
    result = run_in_process(["targets", "add", "Mine", "--ra", "10.5", "--dec", "20"], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[0] == f"note: created the data directory {data}"
    assert (data / "stdq.sqlite3").is_file()
    again = run_in_process(["targets", "add", "Other", "--ra", "11", "--dec", "21"], env=env, cwd=tmp_path)
    assert again.returncode == 0 and "created the data directory" not in again.stderr


# -- a password inside a URL (issue 9 item 8) ----------------------------------------------------


def test_password_inside_a_url_is_masked(tmp_path):
    from conftest import run_in_process

    config = write(tmp_path / "c.toml", """\
        [services.ztf]
        url = "https://bob:Hunter2-pw%40x@irsa.example.org/lc"
        [resolver]
        sesame_url = "https://carol:S3same-secret@cds.example.org/nph"
        """)
    env = {"STDQ_CONFIG": str(config), "STDQ_DATA_DIR": str(tmp_path / "d")}
    texts = []
    for args in (["config", "show"], ["--json", "config", "show"], ["services", "show", "ztf"],
                 ["--json", "services", "show", "ztf"], ["services", "list"], ["--json", "services", "list"]):
        result = run_in_process(args, env=env, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        texts.append(result.stdout + result.stderr)
    for text in texts:
        assert "Hunter2" not in text and "S3same-secret" not in text, text
    shown_json = json.loads(run_in_process(["--json", "config", "show"], env=env, cwd=tmp_path).stdout)
    assert shown_json["services"]["ztf"]["url"] == "https://bob:***@irsa.example.org/lc"
    assert shown_json["resolver"]["sesame_url"] == "https://carol:***@cds.example.org/nph"
    # the password is one of the service's secrets: redacted wherever secrets are
    merged = service(load_settings(config), "ztf")
    assert {"Hunter2-pw%40x", "Hunter2-pw@x"} <= set(merged.secret_values())
