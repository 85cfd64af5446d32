"""The registry (stdq/registry.py): names resolved once, defaults in one place, settings checks,
third-party plug-ins of every kind through entry points, test-only services kept out of
`stdq services list`, and `config atlas-login` as the ATLAS service's own registered command."""

from __future__ import annotations

import ast
import json
import re
import stat
import textwrap
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT, assert_clean_error, run_in_process
from stdq import registry as registry_module
from stdq.config import Settings, load_settings
from stdq.errors import ConfigError
from stdq.registry import (
    BUILTIN,
    COMMAND_GROUP,
    EMULATOR_GROUP,
    PROCESSOR_GROUP,
    RESOLVER_GROUP,
    SERVICE_GROUP,
    Registry,
    registry_for,
)

PLUGINS = ROOT / "tests" / "plugins"
SRC = ROOT / "src" / "stdq"


def settings_from(tmp_path: Path, text: str = "") -> Settings:
    path = tmp_path / "settings.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return load_settings(path, data_dir=tmp_path / "data")


@pytest.fixture
def fresh_scan():
    """Entry points read afresh before and after the test (it changes sys.path)."""
    registry_module.clear_cache()
    yield
    registry_module.clear_cache()


# -- the built-in table is stdq's entry points ---------------------------------------------


def test_builtin_table_is_the_entry_points_of_pyproject():
    """Built-ins are registered through the same groups third parties use."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["entry-points"]
    for group in (SERVICE_GROUP, PROCESSOR_GROUP, RESOLVER_GROUP, COMMAND_GROUP, EMULATOR_GROUP):
        assert declared[group] == BUILTIN[group], group


def test_installed_entry_points_hold_the_builtins():
    """What pip installed (the dist-info of this checkout) agrees with the static table."""
    from importlib.metadata import entry_points

    for group, table in BUILTIN.items():
        installed = {ep.name: ep.value for ep in entry_points(group=group) if ep.dist.name == "stdq"}
        assert installed == table, (group, "reinstall: pip install -e . --no-deps")


# -- names resolved once ---------------------------------------------------------------------


def test_builtin_names_need_no_entry_point_scan(tmp_path, fresh_scan, monkeypatch):
    scans: list[str] = []
    real = registry_module._scan.__wrapped__

    def counting(group: str):
        scans.append(group)
        return real(group)

    monkeypatch.setattr(registry_module, "_scan", registry_module.functools.cache(counting))
    registry = Registry(settings_from(tmp_path))
    for name in BUILTIN[SERVICE_GROUP]:
        registry.service(name)
    registry.processor_for("atlas_photometry", "atlas")
    registry.resolver("sesame")
    registry.resolver("mast")
    assert scans == []  # a built-in name is found in the static table
    registry.service_names()
    registry.service_names()
    registry.resolver_names()
    assert scans == [SERVICE_GROUP, RESOLVER_GROUP]  # each group read once, when listing


def test_each_class_is_loaded_once_per_registry(tmp_path, monkeypatch):
    loaded: list[str] = []
    real = registry_module.load_class

    def counting(path, *, where):
        loaded.append(path)
        return real(path, where=where)

    monkeypatch.setattr(registry_module, "load_class", counting)
    registry = Registry(settings_from(tmp_path, "[services.atlas]\npoll_interval = 2\n"))
    for _ in range(3):
        registry.service_config("atlas")
        registry.service("atlas")
        registry.describe("atlas")
        registry.processor_for("atlas_photometry", "atlas")
    assert sorted(loaded) == sorted(
        [BUILTIN[SERVICE_GROUP]["atlas"], BUILTIN[PROCESSOR_GROUP]["atlas_photometry"]]
    )


def test_registry_is_cached_per_settings_object(tmp_path):
    settings = settings_from(tmp_path)
    assert registry_for(settings) is registry_for(settings)
    assert registry_for(settings_from(tmp_path)) is not registry_for(settings)


# -- defaults in one place ----------------------------------------------------------------------


def test_service_and_processor_keys_do_not_overlap():
    """The processor declares its cut keys, the service its transport keys: never both."""
    for name, path in BUILTIN[SERVICE_GROUP].items():
        service = registry_module.load_class(path, where=name)
        processor = registry_module.load_class(
            BUILTIN[PROCESSOR_GROUP][service.data_product_type], where=name
        )
        both = set(service.settings_defaults) & set(processor.settings_defaults)
        assert not both, (name, both)
        for cls in (service, processor):  # every declared key is explained
            assert set(cls.settings_defaults) <= set(cls.settings_help), cls


CUT_KEYS = {
    "atlas": ("snr_threshold", "limit_nsigma", "chi2_max", "dujy_max"),
    "panstarrs": ("min_psf_qf_perfect",),
    "ztf-fps": ("snr_threshold", "limit_nsigma", "scisigpix_max", "seeing_max",
                "baseline_pre_peak_days", "baseline_min_epochs"),
}
TRANSPORT_KEYS = {
    "atlas": ("poll_interval", "max_poll_interval", "task_timeout", "writes_per_minute",
              "reads_per_minute", "rate_window"),
    "panstarrs": ("pagesize",),
    "ztf-fps": ("poll_interval", "max_poll_interval", "max_wait"),
}


@pytest.mark.parametrize("name", sorted(CUT_KEYS))
def test_cut_keys_are_the_processors_and_transport_keys_the_services(tmp_path, name):
    registry = Registry(settings_from(tmp_path))
    keys = registry.settings_keys(name)
    for key in CUT_KEYS[name]:
        assert keys[key]["owner"] == "processor", key
    for key in TRANSPORT_KEYS[name]:
        assert keys[key]["owner"] == "service", key
    assert keys["url"]["owner"] == "service"
    # the merged values hold them all, at their defaults
    values = registry.service_config(name).values
    assert {k: values[k] for k in keys} == {k: spec["default"] for k, spec in keys.items()}


def _literal_defaults(path: Path) -> list[str]:
    """Calls such as self.setting("key", 3.0) or values.get("key", 5.0) in PATH: a second
    copy of a default that the class declares."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("setting", "get")
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value is not None
        ):
            found.append(f"{path.name}:{node.lineno} {node.args[0].value}")
    return found


def test_no_second_copy_of_a_declared_default():
    declared: set[str] = set()
    for group in (SERVICE_GROUP, PROCESSOR_GROUP, RESOLVER_GROUP):
        for name, path in BUILTIN[group].items():
            declared |= set(registry_module.load_class(path, where=name).settings_defaults)
    files = [*(SRC / "processors").glob("*.py"), *(SRC / "services").glob("*.py"),
             SRC / "resolvers.py", SRC / "targets.py"]
    copies = [hit for f in files for hit in _literal_defaults(f) if hit.rsplit(" ", 1)[1] in declared]
    assert copies == []
    # the template writes the keys of services and resolvers from the classes
    template = (SRC / "config_template.py").read_text(encoding="utf-8")
    for key in ("snr_threshold", "poll_interval", "sesame_url", "min_psf_qf_perfect"):
        assert key not in template, key


def test_template_shows_the_declared_defaults():
    from stdq.config_template import template_text

    text = template_text()
    assert "# snr_threshold = 3\n" in text and "# dujy_max = 160\n" in text
    assert '# sesame_url = "https://cds.unistra.fr/cgi-bin/nph-sesame"\n' in text
    assert (ROOT / "config.example.toml").read_text(encoding="utf-8") == text


# -- settings checks ------------------------------------------------------------------------------


BAD = [
    ("[services.atlas]\ncolour = 1\n", "[services.atlas]", "'colour'"),
    ("[services.atlas]\nsnr_threshold = \"high\"\n", "[services.atlas]", "snr_threshold"),
    ("[services.ztf-fps]\nbaseline_min_epochs = 2.5\n", "[services.ztf-fps]", "baseline_min_epochs"),
    ("[services.panstarrs]\npagesize = true\n", "[services.panstarrs]", "pagesize"),
    ("[resolver]\nsesame_ulr = \"x\"\n", "[resolver]", "'sesame_ulr'"),
    ("[resolver]\nmast_url = 5\n", "[resolver]", "mast_url"),
    ("[resolver]\norder = [\"local\", \"simbad\"]\n", "[resolver]", "simbad"),
]


@pytest.mark.parametrize("text, table, key", BAD, ids=[b[2] for b in BAD])
def test_bad_plugin_tables_are_config_errors_naming_file_and_key(tmp_path, text, table, key):
    from stdq.registry import load_settings as checked

    path = tmp_path / "settings.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        checked(path, data_dir=tmp_path / "data")
    assert info.value.exit_code == 3
    assert str(path) in info.value.message and table in info.value.message
    assert key in info.value.message


def test_unknown_key_exits_3_on_the_command_line(stdq):
    text = stdq.config_path.read_text()
    stdq.config_path.write_text(text.replace("[services.atlas]\n", "[services.atlas]\ncolour = 1\n", 1))
    for args in (["services", "list"], ["config", "show"], ["targets", "list"]):
        result = stdq.run(*args)
        line = assert_clean_error(result, 3)
        assert str(stdq.config_path) in result.stderr and "'colour'" in result.stderr, line


def test_types_are_enforced_and_coerced(tmp_path):
    registry = Registry(settings_from(tmp_path, """\
        [services.atlas]
        poll_interval = 2
        snr_threshold = 5
        writes_per_minute = 30

        [resolver]
        sesame_url = "http://127.0.0.1:1/sesame"
        """))
    values = registry.service_config("atlas").values
    assert values["poll_interval"] == 2.0 and isinstance(values["poll_interval"], float)
    assert values["snr_threshold"] == 5.0 and isinstance(values["snr_threshold"], float)
    assert values["writes_per_minute"] == 30 and isinstance(values["writes_per_minute"], int)
    assert registry.resolver("sesame").values["sesame_url"] == "http://127.0.0.1:1/sesame"
    assert registry.resolver("mast").values["mast_url"].startswith("https://mastresolver")
    shown = registry.display_dict()["resolver"]
    assert shown == {"order": ["local", "sesame", "mast"], "sesame_url": "http://127.0.0.1:1/sesame",
                     "mast_url": "https://mastresolver.stsci.edu/Santa-war/query"}


def test_config_py_imports_no_plugin_and_no_registry():
    import subprocess
    import sys

    code = (
        "import sys; import stdq.config as c; c.load_settings(); "
        "bad = [m for m in sys.modules if m.startswith(('stdq.services', 'stdq.processors', "
        "'stdq.registry', 'stdq.resolvers', 'stdq.plugins', 'httpx', 'pandas'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"STDQ_CONFIG": "/nonexistent/none.toml", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
    source = (SRC / "config.py").read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import) stdq\.(registry|plugins|services|processors)", source, re.M)


# -- a third party: every kind of plug-in through entry points ------------------------------------


ENTRY_POINTS = """\
[stdq.services]
plug = thirdparty:PlugService

[stdq.processors]
plug_photometry = thirdparty:PlugProcessor

[stdq.resolvers]
plug = thirdparty:PlugResolver

[stdq.commands]
plug-hello = thirdparty:hello
config.plug-sub = thirdparty:config_sub

[stdq.emulators]
plug = thirdparty:PlugEmulator
"""


@pytest.fixture
def third_party(tmp_path, monkeypatch, fresh_scan) -> Path:
    """A distribution "stdq-thirdparty" (a dist-info folder) on sys.path, its module beside it."""
    site = tmp_path / "site"
    info = site / "stdq_thirdparty-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stdq-thirdparty\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "thirdparty.py").write_text((PLUGINS / "thirdparty.py").read_text(encoding="utf-8"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(__import__("sys").modules, "thirdparty", raising=False)
    return site


def test_third_party_service_and_processor(tmp_path, third_party):
    registry = Registry(settings_from(tmp_path, "[services.plug]\nsnr_threshold = 8\n"))
    assert "plug" in registry.service_names()
    assert registry.registered_by("plug") == "entry point"
    keys = registry.settings_keys("plug")
    assert keys["poll_interval"]["owner"] == "service" and keys["snr_threshold"]["owner"] == "processor"
    processor, config = registry.processor_for("plug_photometry", "plug")
    assert processor.setting("snr_threshold") == 8.0 and config is not None
    described = registry.describe("plug")
    assert described["settings"]["snr_threshold"] == {
        "default": 4.0, "value": 8.0, "help": "flux/err >= this is a detection"
    }
    assert described["processor"] == "thirdparty:PlugProcessor"
    entry = next(e for e in registry.entries() if e["name"] == "plug")
    assert entry["class"] == "thirdparty:PlugService" and entry["error"] is None


def test_third_party_resolver_in_the_order(tmp_path, third_party):
    from stdq.store import Store
    from stdq.targets import Resolver

    settings = settings_from(tmp_path, '[resolver]\norder = ["local", "plug"]\nplug_url = "http://x"\n')
    registry = registry_for(settings)
    assert registry.resolver_names() == ["local", "sesame", "mast", "tns", "plug"]
    assert registry.resolver("plug").values == {"plug_url": "http://x"}
    store = Store(settings.data_dir)
    try:
        found = Resolver(settings, store).resolve("Plug Star")
        assert (found.ra, found.dec, found.resolver, found.canonical) == (12.5, -33.25, "plug", "PLUG 1")
        again = Resolver(settings, store)
        assert again.resolve("Plug Star") == found and again.last_from_cache
        from stdq.errors import ResolveError, TemporaryFailure

        with pytest.raises(ResolveError, match="tried: local targets, plug"):
            Resolver(settings, store).resolve("Nobody")
        with pytest.raises(TemporaryFailure, match="plug"):
            Resolver(settings, store).resolve("Broken Star")
    finally:
        store.close()


def test_third_party_commands(third_party):
    from stdq.cli import cli

    runner = CliRunner()
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0 and "plug-hello" in top.output
    assert runner.invoke(cli, ["plug-hello", "--who", "you"]).output == "hello you\n"
    group = runner.invoke(cli, ["config", "--help"])
    assert "plug-sub" in group.output and "atlas-login" in group.output
    assert runner.invoke(cli, ["config", "plug-sub"]).output == "plug-sub ran\n"
    assert registry_module.subcommands("config") == {
        "atlas-login": "stdq.services.atlas_login:atlas_login", "plug-sub": "thirdparty:config_sub",
    }


def test_third_party_emulator_is_served(third_party):
    import urllib.request

    from stdq.testing.fakeserver import FakeServer, settings_toml

    with FakeServer() as server:
        names = {e.name for e in server.emulators}
        assert {"plug", "atlas", "sesame", "mast-resolver"} <= names and "slow" not in names
        body = urllib.request.urlopen(server.url("plug") + "/ping").read()
        assert json.loads(body) == {"plug": True, "path": "/ping"}
        assert f'[services.plug]\nurl = "{server.url("plug")}"' in settings_toml(server)


# -- test-only services ----------------------------------------------------------------------------


def test_slow_is_not_a_registered_service(tmp_path):
    registry = Registry(settings_from(tmp_path))
    assert "slow" not in registry.service_names()
    assert "slow" not in registry_module.names(EMULATOR_GROUP)
    with pytest.raises(ConfigError, match="unknown service 'slow'"):
        registry.service_config("slow")


def test_services_list_does_not_show_slow(stdq):
    """Not with the default settings, nor with the emulators' settings file."""
    listed = stdq.run("--json", "services", "list")
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == list(BUILTIN[SERVICE_GROUP])  # built-ins only, in table order
    assert "slow" not in stdq.config_path.read_text()


def test_a_test_registers_slow_through_its_settings(tmp_path):
    from stdq.testing import slow

    emulator = slow.SlowServiceEmulator()
    lines = "\n".join(["[services.slow]", *emulator.service_settings_lines()])
    registry = Registry(settings_from(tmp_path, lines + "\n" + slow.settings_extra()))
    assert registry.registered_by("slow") == "settings"
    assert registry.service_class("slow") is slow.SlowService


# -- reprocessing without the service ----------------------------------------------------------------


def test_processor_defaults_when_the_service_is_gone(tmp_path):
    registry = Registry(settings_from(tmp_path))
    processor, config = registry.processor_for("atlas_photometry", "no-longer-here")
    assert config is None
    assert processor.cuts() == {"snr_threshold": 3.0, "limit_nsigma": 3.0, "chi2_max": 10.0,
                                "dujy_max": 160.0}


# -- config atlas-login: the ATLAS service's own command ------------------------------------------------


def test_atlas_login_is_registered_like_a_plugin_command():
    assert BUILTIN[COMMAND_GROUP]["config.atlas-login"] == "stdq.services.atlas_login:atlas_login"
    source = (SRC / "cli" / "config.py").read_text(encoding="utf-8")
    assert "atlas" not in source.split('"""', 2)[2].replace("atlas-login", "")  # no ATLAS code left there


def test_atlas_login_against_the_emulator(stdq):
    from stdq.testing.atlas import TEST_PASSWORD, TEST_TOKEN, TEST_USERNAME

    text = stdq.config_path.read_text().replace(f'api_key = "{TEST_TOKEN}"\n', "")
    stdq.config_path.write_text(text)
    help_text = stdq.run("config", "atlas-login", "--help")
    assert "--username" in help_text.stdout and "--password-stdin" in help_text.stdout
    result = stdq.run("--json", "config", "atlas-login", "--username", TEST_USERNAME,
                      "--password-stdin", input=TEST_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"path": str(stdq.config_path), "service": "atlas",
                                         "stored": "api_key"}
    stored = tomllib.loads(stdq.config_path.read_text())
    assert stored["services"]["atlas"]["api_key"] == TEST_TOKEN
    assert stat.S_IMODE(stdq.config_path.stat().st_mode) == 0o600
    assert TEST_TOKEN not in result.stdout + result.stderr and TEST_PASSWORD not in result.stderr
    logins = stdq.server.log_of(emulator="atlas", method="POST", path="api-token-auth")
    assert len(logins) == 1


def test_reprocess_without_the_service_says_it_used_the_processor_defaults(tmp_path, monkeypatch):
    from stdq import Stdq

    monkeypatch.syspath_prepend(str(PLUGINS))
    processors = '\n[data_processors]\nplug_photometry = "thirdparty:PlugProcessor"\n'
    config = tmp_path / "settings.toml"
    config.write_text('[tasks]\nbackend = "immediate"\n\n[services.plug]\nclass = "thirdparty:PlugService"\n'
                      "snr_threshold = 20.0\n" + processors)
    with Stdq(config, tmp_path / "data") as session:
        result = session.query("plug", ra=10.0, dec=20.0)
        (product,) = result.products
        assert product.detections == 0  # snr 10 < 20
    document = json.loads((product.path / "product.json").read_text())
    assert document["processor"]["settings"] == "[services.plug]"
    assert document["processor"]["cuts"] == {"snr_threshold": 20.0}

    config.write_text('[tasks]\nbackend = "immediate"\n' + processors)  # the service is gone
    with Stdq(config, tmp_path / "data") as session:
        again = session.reprocess(product.id)
    assert again.detections == 1  # the processor's default, 4
    document = json.loads((product.path / "product.json").read_text())
    assert document["processor"]["settings"] == (
        "processor defaults (service 'plug' is no longer configured)"
    )
    assert document["processor"]["cuts"] == {"snr_threshold": 4.0}


def test_has_service_needs_no_scan_for_a_builtin_name(tmp_path, fresh_scan):
    registry = Registry(settings_from(tmp_path))
    before = dict(registry_module.SCANS)
    assert registry.has_service("atlas") and registry.has_service("ztf-fps")
    assert dict(registry_module.SCANS) == before
    assert not registry.has_service("no-such-service")
    assert registry_module.SCANS.get(SERVICE_GROUP, 0) == before.get(SERVICE_GROUP, 0) + 1


def test_a_broken_emulator_plugin_is_a_config_error(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setitem(BUILTIN[EMULATOR_GROUP], "missing", "stdq_no_such_module_xyz:Emu")
    assert len(registry_module.emulator_factories()) == len(BUILTIN[EMULATOR_GROUP]) - 1  # skipped
    monkeypatch.setitem(BUILTIN[EMULATOR_GROUP], "broken", "broken_service:Emu")
    with pytest.raises(ConfigError, match="emulator 'broken'.*broken on purpose"):
        registry_module.emulator_factories()


# -- `stdq query SERVICE --help`: the services without the settings -------------------------------


def test_help_services_with_no_settings_file_read_no_settings(tmp_path, fresh_scan, monkeypatch):
    monkeypatch.setenv("STDQ_CONFIG", str(tmp_path / "absent.toml"))

    def no_settings(*args, **kwargs):
        raise AssertionError("help_services read the settings")

    monkeypatch.setattr(registry_module, "load_settings", no_settings)
    services = registry_module.help_services()
    assert isinstance(services, registry_module.DefaultServices)
    defaults = Registry(settings_from(tmp_path))  # what the default settings' registry answers
    before = dict(registry_module.SCANS)
    for name, path in BUILTIN[SERVICE_GROUP].items():
        assert services.has_service(name)
        cls = services.service_class(name)
        assert cls is services.service_class(name) is defaults.service_class(name)
        assert f"{cls.__module__}:{cls.__name__}" == path
    assert dict(registry_module.SCANS) == before  # built-in names: no entry-point scan
    assert not services.has_service("no-such-service")  # another name: one scan
    assert registry_module.SCANS.get(SERVICE_GROUP, 0) == before.get(SERVICE_GROUP, 0) + 1
    with pytest.raises(ConfigError, match="unknown service 'no-such-service'"):
        services.service_class("no-such-service")


def test_help_services_with_a_settings_file_are_the_settings_registry(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    path = tmp_path / "settings.toml"
    path.write_text('[services.atlas]\nclass = "dummy_service:DummyService"\n', encoding="utf-8")
    for config, env in ((str(path), None), (None, str(path))):  # --config, or $STDQ_CONFIG
        if env:
            monkeypatch.setenv("STDQ_CONFIG", env)
        services = registry_module.help_services(config, tmp_path / "data")
        assert isinstance(services, Registry)
        assert services.service_class("atlas").__name__ == "DummyService"  # the file's class
    with pytest.raises(ConfigError, match="no such settings file"):  # --config names no file
        registry_module.help_services(str(tmp_path / "absent.toml"))
    path.write_text("[services.atlas]\ncolour = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):  # checked as for any command
        registry_module.help_services(str(path))


def test_query_help_shows_the_class_the_settings_name(tmp_path):
    env = {"STDQ_DATA_DIR": str(tmp_path / "data"), "STDQ_CONFIG": str(tmp_path / "absent.toml"),
           "PYTHONPATH": str(PLUGINS)}

    def help_of(*args: str):
        return run_in_process([*args, "query", "atlas", "--help"], env=env, cwd=tmp_path, timeout=60)

    plain = help_of()  # no settings file: the built-in class
    assert plain.returncode == 0, plain.stderr
    assert "--reduced" in plain.stdout and "--rows" not in plain.stdout
    path = tmp_path / "settings.toml"
    path.write_text('[services.atlas]\nclass = "dummy_service:DummyService"\n', encoding="utf-8")
    overridden = help_of("--config", str(path))
    assert overridden.returncode == 0, overridden.stderr
    assert "--rows" in overridden.stdout and "--reduced" not in overridden.stdout
    path.write_text("[services.atlas]\ncolour = 1\n", encoding="utf-8")
    broken = help_of("--config", str(path))
    assert broken.returncode == 3 and "unknown key 'colour'" in broken.stderr
