"""The registry: every service, processor, name resolver, command and emulator, by name.

Plug-ins are registered through entry-point groups (docs/plugins.md):

- ``stdq.services``   service name -> "module:ServiceClass"
- ``stdq.processors`` data product type -> "module:ProcessorClass"
- ``stdq.resolvers``  resolver name -> "module:ResolverClass" (a :class:`stdq.resolvers.NameResolver`)
- ``stdq.commands``   "group.sub" -> "module:command" adds ``stdq group sub``; a plain name
  adds a top-level command
- ``stdq.emulators``  emulator name -> "module:EmulatorClass" (served by
  ``python -m stdq.testing.fakeserver`` and ``stdq demo``)

stdq's own plug-ins are registered through the same groups (see pyproject.toml),
but they are also listed in the static table :data:`BUILTIN`, so that a built-in
name is found without reading the entry points of every installed distribution;
those are read once per process, and only for a name that is not built in (or to
list every name). Settings add or override services and processors with
``class = "module:Class"`` (``[services.NAME]``) and ``[data_processors]``.

Each name is loaded once per :class:`Registry`; :func:`registry_for` keeps one
registry per Settings object. The registry owns the merged defaults of a service:
its transport keys (the service class's ``settings_defaults``: url, poll
intervals, rate limits, page size, ...) and its processor's cut keys (the
processor class's ``settings_defaults``: thresholds, quality cuts). It checks the
settings tables (unknown key, wrong type, or a number outside its range --
:data:`SERVICE_RANGES`, a class's ``settings_ranges`` -- or not finite: ConfigError,
exit 3, naming the file and the key).

Only the standard library is imported here (the classes are imported on use), and
:mod:`stdq.config` only by the methods that check or show settings: ``stdq query
SERVICE --help`` with no settings file finds a built-in service's class through
:func:`help_services` alone.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stdq.errors import ConfigError

if TYPE_CHECKING:
    from stdq.config import ServiceConfig, Settings
    from stdq.processors.base import DataProcessor
    from stdq.resolvers import NameResolver
    from stdq.services.base import SingleTargetDataService

SERVICE_GROUP = "stdq.services"
PROCESSOR_GROUP = "stdq.processors"
RESOLVER_GROUP = "stdq.resolvers"
COMMAND_GROUP = "stdq.commands"
EMULATOR_GROUP = "stdq.emulators"
GROUPS = (SERVICE_GROUP, PROCESSOR_GROUP, RESOLVER_GROUP, COMMAND_GROUP, EMULATOR_GROUP)

# The built-in plug-ins: the same names and values as the entry points of stdq's
# pyproject.toml (tests/test_registry.py checks that they agree).
BUILTIN: dict[str, dict[str, str]] = {
    SERVICE_GROUP: {
        "atlas": "stdq.services.atlas:AtlasForcedPhotometryService",
        "panstarrs": "stdq.services.panstarrs:PanstarrsService",
        "ztf": "stdq.services.ztf:ZtfLightCurveService",
        "ztf-fps": "stdq.services.ztf_fps:ZtfForcedPhotometryService",
        "rubin": "stdq.services.rubin:RubinService",
        "rubin-rsp": "stdq.services.rubin_rsp:RubinRspService",
        "gaia": "stdq.services.gaia:GaiaService",
    },
    PROCESSOR_GROUP: {
        "atlas_photometry": "stdq.processors.atlas:AtlasProcessor",
        "panstarrs_photometry": "stdq.processors.panstarrs:PanstarrsProcessor",
        "ztf_photometry": "stdq.processors.ztf:ZtfLightCurveProcessor",
        "ztf_fps_photometry": "stdq.processors.ztf_fps:ZtfForcedPhotometryProcessor",
        "rubin_photometry": "stdq.processors.rubin:RubinProcessor",
        "gaia_photometry": "stdq.processors.gaia:GaiaEpochPhotometryProcessor",
    },
    RESOLVER_GROUP: {
        "sesame": "stdq.resolvers:SesameResolver",
        "mast": "stdq.resolvers:MastResolver",
        "tns": "stdq.resolvers_tns:TnsResolver",
    },
    COMMAND_GROUP: {
        "config.atlas-login": "stdq.services.atlas_login:atlas_login",
    },
    EMULATOR_GROUP: {
        "mast": "stdq.testing.mast:MastCatalogsEmulator",
        "sesame": "stdq.testing.resolvers:SesameEmulator",
        "mast-resolver": "stdq.testing.resolvers:MastResolverEmulator",
        "atlas": "stdq.testing.atlas:AtlasEmulator",
        "irsa": "stdq.testing.irsa:IrsaLightCurveEmulator",
        "zfps": "stdq.testing.zfps:ZfpsEmulator",
        "fink": "stdq.testing.fink:FinkEmulator",
        "alerce-lsst": "stdq.testing.alerce:AlerceLsstEmulator",
        "rsp": "stdq.testing.rsp:RspTapEmulator",
        "gaia": "stdq.testing.gaia:GaiaArchiveEmulator",
        "tns": "stdq.testing.tns:TnsEmulator",
    },
}

# Ranges of service and processor keys, by key name, in whatever service declares the key
# (docs/settings.md#ranges); a class adds or overrides its own in ``settings_ranges``.
# Every number is also finite (check_range).
SERVICE_RANGES: dict[str, str] = {
    "poll_interval": "> 0",
    "max_poll_interval": "> 0",
    "task_timeout": "> 0",
    "max_wait": "> 0",
    "rate_window": "> 0",
    "writes_per_minute": ">= 0",
    "reads_per_minute": ">= 0",
    "pagesize": ">= 1",
    "snr_threshold": "> 0",
    "limit_nsigma": "> 0",
    "chi2_max": "> 0",
    "dujy_max": "> 0",
    "scisigpix_max": "> 0",
    "seeing_max": "> 0",
    "min_psf_qf_perfect": "0..1",
    "baseline_pre_peak_days": ">= 0",
    "baseline_post_peak_days": ">= 0",
    "baseline_min_pre_epochs": ">= 0",
    "baseline_min_epochs": ">= 1",
}

# The resolver that reads the local targets table (`stdq targets add`): always built in.
LOCAL_RESOLVER = "local"
# Keys of [resolver] that belong to no resolver plug-in.
RESOLVER_CORE_KEYS = ("order",)

# How many times an entry-point group was read in this process (tests check "once").
SCANS: dict[str, int] = {}


@functools.cache
def _scan(group: str) -> dict[str, str]:
    """NAME -> "module:attr" of GROUP, read once from every installed distribution.

    stdq's own entry points are left out: they are in :data:`BUILTIN` already.
    """
    from importlib.metadata import entry_points

    SCANS[group] = SCANS.get(group, 0) + 1
    found: dict[str, str] = {}
    for ep in entry_points(group=group):
        if BUILTIN.get(group, {}).get(ep.name) == ep.value:
            continue
        found.setdefault(ep.name, ep.value)
    return found


def clear_cache() -> None:
    """Forget the entry points read so far (tests that install a plug-in at run time)."""
    _scan.cache_clear()


def plugin_entry_points(group: str) -> dict[str, str]:
    """The third-party entry points of GROUP (reads every distribution, once)."""
    return dict(_scan(group))


def lookup(group: str, name: str) -> str | None:
    """"module:attr" registered for NAME in GROUP: the static table first, then the scan."""
    builtin = BUILTIN.get(group, {})
    if name in builtin:
        return builtin[name]
    return _scan(group).get(name)


def names(group: str) -> list[str]:
    """Every name registered in GROUP: built in first, then plug-ins (sorted)."""
    builtin = list(BUILTIN.get(group, {}))
    return builtin + sorted(n for n in _scan(group) if n not in builtin)


def load_object(path: str, *, where: str) -> Any:
    """Import "package.module:attr"; ConfigError (exit 3) naming WHERE for any failure."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{where}: {path!r} is not of the form 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # the module raised while it was imported
        raise ConfigError(
            f"{where}: importing {path!r} failed ({type(exc).__name__}: {exc})"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{where}: {module_name!r} has no {attr!r}")
    return obj


def load_class(path: str, *, where: str) -> type:
    """:func:`load_object`, checking that the result is a class."""
    cls = load_object(path, where=where)
    if not isinstance(cls, type):
        raise ConfigError(f"{where}: {path!r} is not a class")
    return cls


# -- commands and emulators (no settings needed) ------------------------------------------


def command_entry_points() -> dict[str, str]:
    """Every registered command: "name" (top level) or "group.sub" -> "module:attr"."""
    return {**BUILTIN[COMMAND_GROUP], **{k: v for k, v in _scan(COMMAND_GROUP).items()
                                          if k not in BUILTIN[COMMAND_GROUP]}}


def top_level_commands() -> dict[str, str]:
    """Plug-in commands that sit beside `query`, `jobs`, ... (entry-point names without a dot)."""
    return {k: v for k, v in command_entry_points().items() if "." not in k}


def subcommands(group: str, *, scan: bool = True) -> dict[str, str]:
    """The plug-in subcommands of command GROUP: sub -> "module:attr".

    With SCAN false only the built-in table is read (for a name found there).
    """
    prefix = group + "."
    table = command_entry_points() if scan else dict(BUILTIN[COMMAND_GROUP])
    return {k[len(prefix):]: v for k, v in table.items() if k.startswith(prefix)}


def load_command(name: str, path: str) -> Any:
    """The click command registered as NAME (``stdq.commands``)."""
    return load_object(path, where=f"command {name!r} (entry point {path!r})")


def emulator_factories() -> list[Callable[[], Any]]:
    """One factory (an Emulator class, or a function returning one) per registered emulator.

    An emulator whose module is missing is left out (an optional part not installed).
    """
    factories: list[Callable[[], Any]] = []
    for name in names(EMULATOR_GROUP):
        path = lookup(EMULATOR_GROUP, name)
        assert path is not None
        module_name = path.partition(":")[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
        except Exception:  # noqa: S110 - load_object below says what failed, as a ConfigError
            pass
        factories.append(load_object(path, where=f"emulator {name!r} (registered as {path!r})"))
    return factories


# -- settings values ------------------------------------------------------------------------



def _unknown_key(where: str, key: str, allowed: list[str]) -> ConfigError:
    return ConfigError(
        f"{where}: unknown key {key!r}", hint=f"allowed keys there: {', '.join(sorted(allowed))}"
    )


class Registry:
    """The plug-ins in use with one Settings object (each name loaded once)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._classes: dict[tuple[str, str], type] = {}
        self._configs: dict[str, ServiceConfig] = {}
        self.validate()

    # -- services ---------------------------------------------------------------------
    def service_names(self) -> list[str]:
        """Built-in services, then installed plug-ins, then those the settings file adds."""
        found = names(SERVICE_GROUP)
        found += sorted(n for n in self.settings.services_raw if n not in found)
        return found

    def has_service(self, name: str) -> bool:
        """Whether NAME is a service (a built-in or file name is found without a scan)."""
        if name in self.settings.services_raw or name in BUILTIN[SERVICE_GROUP]:
            return True
        return lookup(SERVICE_GROUP, name) is not None

    def service_path(self, name: str) -> str:
        """"module:Class" of service NAME: the settings' class, else its registration."""
        table = self.settings.services_raw.get(name, {})
        path = table.get("class") or lookup(SERVICE_GROUP, name)
        if not path:
            known = ", ".join(self.service_names()) or "none"
            raise ConfigError(f"unknown service {name!r}", hint=f"known services: {known}")
        return str(path)

    def registered_by(self, name: str) -> str:
        """"settings" when the settings file names the class, else "entry point"."""
        return "settings" if self.settings.services_raw.get(name, {}).get("class") else "entry point"

    def _where_service(self, name: str) -> str:
        path = self.service_path(name)
        if self.registered_by(name) == "settings":
            return f"{self.settings.path}: [services.{name}] class"
        return f"service {name!r} (registered as {path!r})"

    def service_class(self, name: str) -> type[SingleTargetDataService]:
        """The class of service NAME (imported once); ConfigError when it cannot be."""
        key = (SERVICE_GROUP, name)
        if key not in self._classes:
            self._classes[key] = load_class(self.service_path(name), where=self._where_service(name))
        return self._classes[key]

    def settings_keys(self, name: str) -> dict[str, dict[str, Any]]:
        """Every settings key of service NAME: {key: {"default", "help", "owner", "range"}}.

        ``url`` and the service class's ``settings_defaults`` (its transport keys),
        then the cut keys its processor declares (owner "processor"). ``range`` is the
        class's ``settings_ranges`` entry, else :data:`SERVICE_RANGES`'s, else None.
        """
        cls = self.service_class(name)
        help_of = dict(getattr(cls, "settings_help", {}) or {})
        ranges = {**SERVICE_RANGES, **(getattr(cls, "settings_ranges", {}) or {})}
        keys: dict[str, dict[str, Any]] = {
            "url": {"default": getattr(cls, "default_url", ""), "help": help_of.get("url", ""),
                    "owner": "service", "range": None}
        }
        for key, value in (getattr(cls, "settings_defaults", {}) or {}).items():
            keys[key] = {"default": value, "help": help_of.get(key, ""), "owner": "service",
                         "range": ranges.get(key)}
        proc = self._processor_class_of(cls)
        if proc is not None:
            proc_help = dict(getattr(proc, "settings_help", {}) or {})
            proc_ranges = {**SERVICE_RANGES, **(getattr(proc, "settings_ranges", {}) or {})}
            for key, value in (getattr(proc, "settings_defaults", {}) or {}).items():
                if key not in keys:
                    keys[key] = {"default": value, "help": proc_help.get(key, ""),
                                 "owner": "processor", "range": proc_ranges.get(key)}
        return keys

    def _processor_class_of(self, cls: type) -> type | None:
        dptype = getattr(cls, "data_product_type", "") or ""
        if not dptype or not self.processor_path(dptype):
            return None
        return self.processor_class(dptype)

    def _secret_fields(self, name: str) -> tuple[str, ...]:
        cls = self.service_class(name)
        fields = tuple(getattr(cls, "secret_fields", ("api_key",)) or ())
        if "api_key" in self.settings.services_raw.get(name, {}) and "api_key" not in fields:
            # every table accepts api_key: it is a secret even where the class does not use it
            fields += ("api_key",)
        return fields

    def service_config(self, name: str) -> ServiceConfig:
        """The merged settings of service NAME: defaults, the file, secrets (env first)."""
        if name in self._configs:
            return self._configs[name]
        from stdq.config import ServiceConfig, check_range, check_type, env_var_name

        table = self.settings.services_raw.get(name, {})
        cls = self.service_class(name)
        keys = self.settings_keys(name)
        secret_fields = self._secret_fields(name)
        values: dict[str, Any] = {k: spec["default"] for k, spec in keys.items()}
        where = f"{self.settings.path}: [services.{name}]"
        for key, value in table.items():
            if key == "class" or key in secret_fields:
                continue
            default = keys.get(key, {}).get("default")
            values[key] = check_type(value, default, key, where)
            check_range(values[key], keys.get(key, {}).get("range"), key, where)
        secrets: dict[str, str] = {}
        sources: dict[str, str] = {}
        conventional = getattr(cls, "secret_env", {}) or {}
        for fieldname in secret_fields:
            for var in (env_var_name(name, fieldname), *conventional.get(fieldname, ())):
                value = os.environ.get(var)
                if value:
                    secrets[fieldname], sources[fieldname] = value, f"${var}"
                    break
            else:
                if table.get(fieldname):
                    secrets[fieldname] = str(table[fieldname])
                    sources[fieldname] = str(self.settings.path)
        config = ServiceConfig(
            name=name,
            class_path=self.service_path(name),
            values=values,
            secret_fields=secret_fields,
            _secrets=secrets,
            secret_sources=sources,
        )
        self._configs[name] = config
        return config

    def service(self, name: str) -> SingleTargetDataService:
        """An instance of service NAME with its merged settings."""
        return self.service_class(name)(self.service_config(name), self.settings)

    # -- processors ---------------------------------------------------------------------
    def processor_path(self, data_product_type: str) -> str | None:
        return self.settings.data_processors.get(data_product_type) or lookup(
            PROCESSOR_GROUP, data_product_type
        )

    def processor_class(self, data_product_type: str) -> type[DataProcessor]:
        key = (PROCESSOR_GROUP, data_product_type)
        if key not in self._classes:
            path = self.processor_path(data_product_type)
            if not path:
                raise ConfigError(
                    f"no processor registered for data product type {data_product_type!r}",
                    hint="add it under [data_processors] in the settings file",
                )
            where = (
                f"{self.settings.path}: [data_processors] {data_product_type}"
                if data_product_type in self.settings.data_processors
                else f"processor {data_product_type!r} (registered as {path!r})"
            )
            self._classes[key] = load_class(path, where=where)
        return self._classes[key]

    def processor_for(
        self, data_product_type: str, service_name: str | None = None
    ) -> tuple[DataProcessor, ServiceConfig | None]:
        """The processor of DATA_PRODUCT_TYPE with the settings of SERVICE_NAME.

        When that service is no longer configured (not registered, or it fails to
        load) the processor runs with its own defaults and the config is None.
        """
        cls = self.processor_class(data_product_type)
        config: ServiceConfig | None = None
        if service_name:
            try:
                config = self.service_config(service_name)
            except ConfigError:
                config = None
        return cls(dict(config.values) if config else {}), config

    # -- resolvers ----------------------------------------------------------------------
    def resolver_names(self) -> list[str]:
        """"local", the built-in remote resolvers, then the installed ones."""
        return [LOCAL_RESOLVER, *names(RESOLVER_GROUP)]

    def resolver_class(self, name: str) -> type[NameResolver]:
        key = (RESOLVER_GROUP, name)
        if key not in self._classes:
            path = lookup(RESOLVER_GROUP, name)
            if not path:
                raise ConfigError(
                    f"unknown resolver {name!r}",
                    hint=f"known resolvers: {', '.join(self.resolver_names())}",
                )
            self._classes[key] = load_class(path, where=f"resolver {name!r} (registered as {path!r})")
        return self._classes[key]

    def resolver_values(self, name: str) -> dict[str, Any]:
        """The [resolver] keys resolver NAME declares, with the file's values."""
        cls = self.resolver_class(name)
        values = dict(getattr(cls, "settings_defaults", {}) or {})
        for key in values:
            if key in self.settings.resolver.values:
                values[key] = self.settings.resolver.values[key]
        return values

    def resolver(self, name: str, *, transport: Any = None) -> NameResolver:
        """An instance of remote resolver NAME ("local" is the targets table, not a plug-in)."""
        cls = self.resolver_class(name)
        return cls(self.settings, self.resolver_values(name), transport=transport)

    # -- commands and emulators --------------------------------------------------------------
    def commands(self) -> dict[str, str]:
        """Registered commands: "name" or "group.sub" -> "module:attr"."""
        return command_entry_points()

    def emulators(self) -> list[Callable[[], Any]]:
        return emulator_factories()

    # -- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the settings file's plug-in tables; ConfigError naming file and key."""
        from stdq.config import COMMON_SERVICE_KEYS, check_range, check_type

        settings, path = self.settings, self.settings.path
        for name, table in settings.services_raw.items():
            if "class" not in table and lookup(SERVICE_GROUP, name) is None:
                raise ConfigError(
                    f"{path}: [services.{name}] is not a built-in or installed service and has no 'class'",
                    hint='add class = "package.module:ServiceClass"',
                )
            if "class" in table and not isinstance(table["class"], str):
                raise ConfigError(f"{path}: [services.{name}] class must be a string")
            keys = self.settings_keys(name)
            secret_fields = self._secret_fields(name)
            allowed = [*COMMON_SERVICE_KEYS, *keys, *secret_fields]
            where = f"{path}: [services.{name}]"
            for key, value in table.items():
                if key not in allowed:
                    raise _unknown_key(where, key, allowed)
                if key in ("class", "api_key", *secret_fields) or (key == "url"):
                    if not isinstance(value, str):
                        raise ConfigError(f"{where} {key} must be a string, not {type(value).__name__}")
                else:
                    table[key] = check_type(value, keys[key]["default"], key, where)
                    check_range(table[key], keys[key].get("range"), key, where)
        for dptype in settings.data_processors:
            self.processor_class(dptype)
        self._validate_resolver()

    def _validate_resolver(self) -> None:
        path = self.settings.path
        order = self.settings.resolver.order
        if not order:
            raise ConfigError(
                f"{path}: [resolver] order is empty",
                hint=f"known resolvers: {', '.join(self.resolver_names())}",
            )
        for name in order:
            if name != LOCAL_RESOLVER and lookup(RESOLVER_GROUP, name) is None:
                raise ConfigError(
                    f"{path}: [resolver] order names an unknown resolver {name!r}",
                    hint=f"known resolvers: {', '.join(self.resolver_names())}",
                )
        values = self.settings.resolver.values
        if not values:
            return
        from stdq.config import check_range, check_type

        declared = self.resolver_keys(builtin_only=True)  # no entry-point scan when they suffice
        if any(key not in declared for key in values):
            declared = self.resolver_keys()
        for key, value in values.items():
            if key not in declared:
                raise _unknown_key(f"{path}: [resolver]", key, [*RESOLVER_CORE_KEYS, *declared])
            values[key] = check_type(value, declared[key]["default"], key, f"{path}: [resolver]")
            check_range(values[key], None, key, f"{path}: [resolver]")

    def resolver_keys(self, *, builtin_only: bool = False) -> dict[str, dict[str, Any]]:
        """The [resolver] keys of every registered remote resolver: {key: {default, help, resolver}}
        (BUILTIN_ONLY: of the built-in ones, found without scanning entry points)."""
        keys: dict[str, dict[str, Any]] = {}
        for name in list(BUILTIN.get(RESOLVER_GROUP, {})) if builtin_only else self.resolver_names()[1:]:
            cls = self.resolver_class(name)
            help_of = getattr(cls, "settings_help", {}) or {}
            for key, value in (getattr(cls, "settings_defaults", {}) or {}).items():
                keys.setdefault(key, {"default": value, "help": help_of.get(key, ""), "resolver": name})
        return keys

    # -- descriptions -------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """`services list`: one dict per service; a service that cannot load shows its error."""
        from stdq.config import mask_url_password

        out = []
        for name in self.service_names():
            table = self.settings.services_raw.get(name, {})
            entry: dict[str, Any] = {
                "name": name,
                "title": None,
                "supports_async": None,
                "url": mask_url_password(table["url"]) if isinstance(table.get("url"), str) else None,
                "class": table.get("class") or lookup(SERVICE_GROUP, name),
                "registered_by": self.registered_by(name),
                "data_product_type": None,
                "error": None,
            }
            try:
                cls = self.service_class(name)
                config = self.service_config(name)
            except Exception as exc:  # one broken service must not hide the others
                entry["error"] = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            else:
                entry.update(
                    title=getattr(cls, "title", "") or name,
                    supports_async=bool(getattr(cls, "supports_async", False)),
                    url=mask_url_password(config.url),
                    data_product_type=getattr(cls, "data_product_type", "") or None,
                )
            out.append(entry)
        return out

    def describe(self, name: str) -> dict[str, Any]:
        """`services show --json`: the service's options, settings keys, defaults and secrets."""
        from stdq.config import MASK, env_var_name, mask_url_password

        cls = self.service_class(name)
        config = self.service_config(name)
        secret_fields = tuple(config.secret_fields)
        keys: dict[str, Any] = {}
        for key, spec in self.settings_keys(name).items():
            if key in secret_fields:
                continue
            value = config.values.get(key)
            shown = mask_url_password(value) if isinstance(value, str) else value
            keys[key] = {"default": spec["default"], "value": shown, "help": spec["help"]}
        conventional = getattr(cls, "secret_env", {}) or {}
        secrets = {}
        for fieldname in secret_fields:
            is_set = bool(config.secret(fieldname))
            secrets[fieldname] = {
                "set": is_set,
                "value": MASK if is_set else None,
                "source": config.secret_sources.get(fieldname) if is_set else None,
                "env": [env_var_name(name, fieldname), *conventional.get(fieldname, ())],
            }
        dptype = getattr(cls, "data_product_type", "") or ""
        options = [
            {
                "option": f.option,
                "type": f.type,
                "default": f.default,
                "choices": list(f.choices),
                "help": f.help,
            }
            for f in cls.form.fields
        ]
        return {
            "name": name,
            "title": getattr(cls, "title", ""),
            "info_url": getattr(cls, "info_url", ""),
            "class": config.class_path,
            "data_product_type": dptype,
            "data_product_title": self.settings.data_product_types.get(dptype),
            "processor": self.processor_path(dptype) if dptype else None,
            "supports_async": bool(getattr(cls, "supports_async", False)),
            "url": mask_url_password(config.url),
            "options": options,
            "settings": keys,
            "secrets": secrets,
            "settings_file": str(self.settings.path),
        }

    def display_dict(self) -> dict[str, Any]:
        """The merged settings with secrets masked (`stdq config show`)."""
        from stdq.config import mask_url_password

        settings = self.settings
        services: dict[str, Any] = {}
        for name in self.service_names():
            try:
                services[name] = self.service_config(name).masked()
            except ConfigError as exc:
                services[name] = {"error": exc.message}
        resolver: dict[str, Any] = {"order": list(settings.resolver.order)}
        for key, spec in self.resolver_keys().items():
            value = settings.resolver.values.get(key, spec["default"])
            if isinstance(value, dict):  # a [resolver.NAME] table: shown when set, api_key masked
                if key not in settings.resolver.values:
                    continue
                value = {k: ("***" if k == "api_key" and v else v) for k, v in value.items()}
            resolver[key] = mask_url_password(value) if isinstance(value, str) else value
        return {
            "config_file": str(settings.path) + ("" if settings.file_exists else " (absent: defaults)"),
            "data_dir": str(settings.data_dir),
            "tasks": dict(settings.tasks.__dict__),
            "hooks": dict(settings.hooks.__dict__),
            "http": dict(settings.http.__dict__),
            "resolver": resolver,
            "services": services,
            "data_product_types": dict(settings.data_product_types),
            "data_processors": dict(settings.data_processors),
        }


class DefaultServices:
    """``has_service`` and ``service_class`` as the :class:`Registry` of the default settings
    (no settings file) answers them, without reading or building any settings: what
    ``stdq query SERVICE --help`` needs for its options. A built-in name is found in
    :data:`BUILTIN`; only another name scans the entry points."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def has_service(self, name: str) -> bool:
        return lookup(SERVICE_GROUP, name) is not None

    def service_class(self, name: str) -> type[SingleTargetDataService]:
        """The class of service NAME (imported once); ConfigError when it cannot be."""
        if name not in self._classes:
            path = lookup(SERVICE_GROUP, name)
            if not path:
                known = ", ".join(names(SERVICE_GROUP)) or "none"
                raise ConfigError(f"unknown service {name!r}", hint=f"known services: {known}")
            self._classes[name] = load_class(path, where=f"service {name!r} (registered as {path!r})")
        return self._classes[name]


def help_services(
    config: str | os.PathLike[str] | None = None, data_dir: str | os.PathLike[str] | None = None
) -> Registry | DefaultServices:
    """The services as ``stdq query SERVICE --help`` sees them: with no settings file (and
    no --config) the defaults (:class:`DefaultServices`: neither the settings nor the
    database modules are imported), else the registry of the settings, read and checked
    (a broken file: exit 3, as for any command)."""
    from stdq.settings_file import settings_file

    if not config and not os.path.isfile(settings_file()):
        return DefaultServices()
    return registry_for(load_settings(config, data_dir))


def registry_for(settings: Settings) -> Registry:
    """The registry of SETTINGS (one per Settings object, made and checked on first use)."""
    cached = settings.__dict__.get("_registry")
    if isinstance(cached, Registry):
        return cached
    registry = Registry(settings)
    settings.__dict__["_registry"] = registry
    return registry


def load_settings(
    config: str | os.PathLike[str] | None = None, data_dir: str | os.PathLike[str] | None = None
) -> Settings:
    """:func:`stdq.config.load_settings`, then the plug-in tables checked by the registry."""
    from stdq.config import RESOLVER_DEFAULTS
    from stdq.config import load_settings as load

    settings = load(config, data_dir)
    if settings.services_raw or settings.data_processors or settings.resolver.values or (
        list(settings.resolver.order) != RESOLVER_DEFAULTS["order"]
    ):
        registry_for(settings)  # checks the plug-in tables (imports only the classes they name)
    return settings

