"""Settings: one TOML file plus the environment (docs/settings.md).

The file is found through ``--config PATH``, else ``$STDQ_CONFIG``, else
``platformdirs.user_config_dir("stdq")/config.toml``; no file means defaults.
This module is pure data: TOML and the environment -> dataclasses and paths. It
checks the core tables ([tasks], [http] with the ranges of their numbers, the
types of [resolver] order, [services], [data_product_types], [data_processors],
data_dir: a relative one is relative to the settings file's folder) and imports no
plug-in: the plug-in tables (each ``[services.NAME]``, the resolvers' keys of
``[resolver]``) are checked, merged with their defaults and given their secrets
by the registry (:mod:`stdq.registry`, ``registry_for(settings).service_config(name)``),
which builds the :class:`ServiceConfig` below. Secrets come from the environment
first (``STDQ_<SERVICE>_<FIELD>``, then the service's conventional variable), then
the file; they are read only through :meth:`ServiceConfig.secret`. A password inside
a URL of the settings (``https://user:pass@host``) counts as a secret too
(:meth:`ServiceConfig.secret_values`, :func:`mask_url_password`).

Only stdlib, platformdirs and (to write) tomli-w are imported here: this module
is on the start-up path of every command.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stdq.errors import ConfigError
from stdq.settings_file import ENV_CONFIG as ENV_CONFIG  # re-exported: stdq.config.ENV_CONFIG
from stdq.settings_file import default_settings_file, settings_file

ENV_DATA_DIR = "STDQ_DATA_DIR"
MASK = "********"

TASKS_DEFAULTS: dict[str, Any] = {
    "backend": "database",
    "autostart_worker": True,
    "lease_seconds": 30.0,
    "max_attempts": 5,
    "reuse_seconds": 43200.0,
}
# [hooks]: commands run on events (`stdq update`); "" is none.
HOOKS_DEFAULTS: dict[str, Any] = {"on_new_detection": ""}
HTTP_DEFAULTS: dict[str, Any] = {
    "timeout": 30.0,
    "max_retries": 4,
    "deadline": 300.0,
    "max_bytes": 512 * 1024 * 1024,
}
# Ranges of the numbers (forms of check_range); every number is also finite.
TASKS_RANGES: dict[str, str] = {
    "lease_seconds": ">= 1", "max_attempts": "1..100", "reuse_seconds": ">= 0",
}
HTTP_RANGES: dict[str, str] = {
    "timeout": "> 0",
    "deadline": "> 0",
    "max_retries": "0..20",
    "max_bytes": ">= 1",
}
# The other keys of [resolver] belong to the resolver plug-ins (stdq.resolvers), which
# declare them with their defaults; the registry checks them.
RESOLVER_DEFAULTS: dict[str, Any] = {"order": ["local", "sesame", "mast"]}
TASK_BACKENDS = ("database", "immediate")
TOP_LEVEL_KEYS = {
    "data_dir",
    "tasks",
    "hooks",
    "http",
    "resolver",
    "services",
    "data_product_types",
    "data_processors",
}
# Keys every [services.NAME] table accepts, whatever the service.
COMMON_SERVICE_KEYS = ("class", "url", "api_key")


# "scheme://user:password@": the password of a URL's user info (masked wherever shown).
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s:]*:)(?P<password>[^/?#@\s]*)@")


def mask_url_password(text: str) -> str:
    """TEXT with the password of every ``scheme://user:password@`` replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}***@", text)


def url_passwords(text: str) -> list[str]:
    """The passwords inside the URLs of TEXT, as written and percent-decoded."""
    from urllib.parse import unquote

    found: list[str] = []
    for match in _URL_PASSWORD.finditer(text):
        for value in (match["password"], unquote(match["password"])):
            if value and value not in found:
                found.append(value)
    return found


def default_config_path() -> Path:
    """Where the settings file lives when neither --config nor $STDQ_CONFIG says."""
    return Path(default_settings_file())


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("stdq"))


def config_path(explicit: str | os.PathLike | None = None) -> Path:
    """The settings file path: --config, else $STDQ_CONFIG, else the platform default
    (:func:`stdq.settings_file.settings_file`)."""
    return Path(settings_file(explicit))


def env_var_name(service: str, fieldname: str) -> str:
    """``STDQ_<SERVICE>_<FIELD>``, with '-' as '_' (``ztf-fps`` -> ``STDQ_ZTF_FPS_EMAIL``)."""
    return f"STDQ_{service}_{fieldname}".upper().replace("-", "_")


# The dataclasses take their defaults from the tables above (one place per key).


@dataclass(frozen=True)
class TaskSettings:
    backend: str = TASKS_DEFAULTS["backend"]
    autostart_worker: bool = TASKS_DEFAULTS["autostart_worker"]
    lease_seconds: float = TASKS_DEFAULTS["lease_seconds"]
    max_attempts: int = TASKS_DEFAULTS["max_attempts"]
    reuse_seconds: float = TASKS_DEFAULTS["reuse_seconds"]  # 0: never reuse a result


@dataclass(frozen=True)
class HookSettings:
    on_new_detection: str = HOOKS_DEFAULTS["on_new_detection"]  # a shell command, "" for none


@dataclass(frozen=True)
class HttpSettings:
    timeout: float = HTTP_DEFAULTS["timeout"]
    max_retries: int = HTTP_DEFAULTS["max_retries"]
    deadline: float = HTTP_DEFAULTS["deadline"]  # seconds for a whole request, its body included
    max_bytes: int = HTTP_DEFAULTS["max_bytes"]  # the most bytes read from one answer


@dataclass(frozen=True)
class ResolverSettings:
    """[resolver]: the order, and the keys of the resolvers (``values``, as in the file)."""

    order: tuple[str, ...] = tuple(RESOLVER_DEFAULTS["order"])
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServiceConfig:
    """The merged settings of one service: class path, url, its keys (the service's
    transport keys and its processor's cut keys), its secrets. Built by the registry."""

    name: str
    class_path: str
    values: dict[str, Any]
    secret_fields: tuple[str, ...] = ()
    _secrets: dict[str, str] = field(default_factory=dict, repr=False)
    secret_sources: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.values.get("url") or "")

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def secret(self, fieldname: str) -> str | None:
        """The secret's value (None when unset). Never print it."""
        return self._secrets.get(fieldname)

    def secret_values(self) -> list[str]:
        """Every secret set for this service, for redaction: its secret fields, and the
        password of any URL in its settings (``https://user:pass@host``)."""
        found = [v for v in self._secrets.values() if v]
        for value in self.values.values():
            if isinstance(value, str) and "@" in value:
                found += [p for p in url_passwords(value) if p not in found]
        return found

    def masked(self) -> dict[str, Any]:
        """Settings for display: secrets replaced by a mask and where they came from (a
        password inside a URL is shown as ``***``)."""
        shown: dict[str, Any] = {
            "class": self.class_path,
            **{k: mask_url_password(v) if isinstance(v, str) else v for k, v in self.values.items()},
        }
        for name in self.secret_fields:
            if self._secrets.get(name):
                shown[name] = f"{MASK} (from {self.secret_sources.get(name, '?')})"
            else:
                shown[name] = None
        return shown


@dataclass
class Settings:
    """All settings, merged from defaults, the file and the environment."""

    path: Path
    file_exists: bool
    data_dir: Path
    tasks: TaskSettings = field(default_factory=TaskSettings)
    hooks: HookSettings = field(default_factory=HookSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    resolver: ResolverSettings = field(default_factory=ResolverSettings)
    services_raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_product_types: dict[str, str] = field(default_factory=dict)
    data_processors: dict[str, str] = field(default_factory=dict)


def _range_bounds(spec: str) -> tuple[float | None, bool, float | None, bool]:
    """(low, low_included, high, high_included) of a range SPEC: "> A", ">= A", "< B",
    "<= B" or "A..B" (both ends included)."""
    text = spec.replace(" ", "")
    try:
        if ".." in text:
            low, _, high = text.partition("..")
            return float(low), True, float(high), True
        for op, included in ((">=", True), ("<=", True), (">", False), ("<", False)):
            if text.startswith(op):
                value = float(text[len(op):])
                if op[0] == ">":
                    return value, included, None, False
                return None, False, value, included
    except ValueError:
        pass
    raise ValueError(f"not a range: {spec!r} (use '> A', '>= A', '< B', '<= B' or 'A..B')")


def describe_range(spec: str, integer: bool = False) -> str:
    """SPEC in words: "a finite number > 0", "an integer from 0 to 20"."""
    low, _, high, _ = _range_bounds(spec)
    kind = "an integer" if integer else "a finite number"

    def num(value: float) -> str:
        return str(int(value)) if value == int(value) else str(value)

    if low is not None and high is not None:
        return f"{kind} from {num(low)} to {num(high)}"
    op = spec.replace(" ", "").rstrip("0123456789.-+eE")
    bound = low if low is not None else high
    assert bound is not None  # _range_bounds gives one end at least
    return f"{kind} {op} {num(bound)}"


def check_range(value: Any, spec: str | None, key: str, where: str) -> None:
    """ConfigError (exit 3) "WHERE KEY must be ..." unless VALUE is finite and within SPEC.

    Non-numbers (and booleans) are left alone: their type is checked elsewhere.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    integer = isinstance(value, int)
    if not integer and not math.isfinite(value):
        what = describe_range(spec) if spec else "a finite number"
        raise ConfigError(f"{where} {key} must be {what}, not {value!r}")
    if not spec:
        return
    low, low_in, high, high_in = _range_bounds(spec)
    ok = True
    if low is not None:
        ok = value >= low if low_in else value > low
    if ok and high is not None:
        ok = value <= high if high_in else value < high
    if not ok:
        raise ConfigError(f"{where} {key} must be {describe_range(spec, integer)}, not {value!r}")


def _check_keys(table: Mapping[str, Any], allowed: Mapping[str, Any] | set, where: str, path: Path):
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{path}: unknown key {where}{key!r}",
                hint=f"allowed keys there: {', '.join(sorted(allowed))}",
            )


def check_type(value: Any, default: Any, key: str, where: str, *, show: bool = False) -> Any:
    """VALUE coerced to the type of DEFAULT (an int is fine where a float is asked);
    ConfigError naming WHERE and KEY otherwise. The value is shown only with SHOW (a
    service's value may be a secret)."""
    if default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        shown = f" ({value!r})" if show else ""
        raise ConfigError(
            f"{where} {key} must be {type(default).__name__}, not {type(value).__name__}{shown}"
        )
    return value


def _check_type(value: Any, default: Any, key: str, path: Path) -> Any:
    """check_type for the file's own tables ([tasks], [http], [resolver]: no secrets)."""
    return check_type(value, default, key, f"{path}:", show=True)


def _typed_table(
    raw: Any, defaults: dict[str, Any], name: str, path: Path, ranges: Mapping[str, str] | None = None
) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    _check_keys(raw, defaults, f"[{name}] ", path)
    merged = dict(defaults)
    for key, value in raw.items():
        merged[key] = _check_type(value, defaults[key], f"[{name}] {key}", path)
        check_range(merged[key], (ranges or {}).get(key), key, f"{path}: [{name}]")
    return merged


def load_settings(
    config: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> Settings:
    """Read and check the settings file; raises ConfigError (exit 3) naming file and key."""
    path = config_path(config)
    raw: dict[str, Any] = {}
    exists = path.is_file()
    if config and not exists:
        raise ConfigError(f"{path}: no such settings file", hint="create one with: stdq config init")
    if exists:
        import tomllib  # only to read a file: a missing one means defaults

        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    _check_keys(raw, TOP_LEVEL_KEYS, "", path)

    tasks = _typed_table(raw.get("tasks"), TASKS_DEFAULTS, "tasks", path, TASKS_RANGES)
    if tasks["backend"] not in TASK_BACKENDS:
        raise ConfigError(
            f"{path}: [tasks] backend must be one of {', '.join(TASK_BACKENDS)}, "
            f"not {tasks['backend']!r}"
        )
    http = _typed_table(raw.get("http"), HTTP_DEFAULTS, "http", path, HTTP_RANGES)
    hooks = _typed_table(raw.get("hooks"), HOOKS_DEFAULTS, "hooks", path)
    resolver_raw = raw.get("resolver")
    if resolver_raw is None:
        resolver_raw = {}
    if not isinstance(resolver_raw, dict):
        raise ConfigError(f"{path}: [resolver] must be a table")
    order = _check_type(
        resolver_raw.get("order", RESOLVER_DEFAULTS["order"]), RESOLVER_DEFAULTS["order"],
        "[resolver] order", path,
    )
    # the order's names and the other keys are checked by the registry (plug-ins)
    resolver_values = {k: v for k, v in resolver_raw.items() if k != "order"}
    if "order" not in resolver_raw and isinstance(resolver_raw.get("tns"), dict):
        # a [resolver.tns] table turns the TNS resolver on, after the others (docs/settings.md)
        order = [*order, "tns"]

    services_raw = raw.get("services") or {}
    if not isinstance(services_raw, dict) or not all(
        isinstance(v, dict) for v in services_raw.values()
    ):
        raise ConfigError(f"{path}: [services] must hold one table per service")
    for section in ("data_product_types", "data_processors"):
        table = raw.get(section) or {}
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise ConfigError(f"{path}: [{section}] must map names to strings")

    if "data_dir" in raw and (not isinstance(raw["data_dir"], str) or not raw["data_dir"].strip()):
        raise ConfigError(f"{path}: data_dir must be a non-empty string (a folder path)")
    data_dir_value = data_dir or os.environ.get(ENV_DATA_DIR)
    if not data_dir_value and raw.get("data_dir"):
        # relative to the settings file's folder, not to wherever the command runs
        from_file = Path(raw["data_dir"]).expanduser()
        data_dir_value = (
            from_file if from_file.is_absolute() else Path(os.path.abspath(path)).parent / from_file
        )
    if not data_dir_value:
        data_dir_value = default_data_dir()
    settings = Settings(
        path=path,
        file_exists=exists,
        data_dir=Path(data_dir_value).expanduser(),
        tasks=TaskSettings(**tasks),
        hooks=HookSettings(**hooks),
        http=HttpSettings(**http),
        resolver=ResolverSettings(order=tuple(order), values=resolver_values),
        services_raw={k: dict(v) for k, v in services_raw.items()},
        data_product_types=dict(raw.get("data_product_types") or {}),
        data_processors=dict(raw.get("data_processors") or {}),
    )
    return settings


# -- writing ---------------------------------------------------------------------


def write_private_file(path: Path, text: str) -> None:
    """Write TEXT to PATH with mode 0600, through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def set_service_value(path: Path, service: str, key: str, value: Any) -> None:
    """Set ``[services.SERVICE] KEY`` in the settings file (created 0600 if absent).

    The file is rewritten as TOML; comments in it are not kept.
    """
    import tomllib

    import tomli_w

    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    data.setdefault("services", {}).setdefault(service, {})[key] = value
    write_private_file(path, tomli_w.dumps(data))
