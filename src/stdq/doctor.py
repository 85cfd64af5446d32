"""`stdq doctor`: is everything in place? One :class:`stdq.records.Check` per question.

The settings file (found, parses), the data directory (writable, schema
version), each service's credentials (present; never shown), and one cheap
request per service and resolver (reachable, answers in its own format: the
service's :meth:`~stdq.services.base.SingleTargetDataService.probe`, the
resolver's :meth:`~stdq.resolvers.NameResolver.probe`). The probes run at once,
each with one try and a short timeout. A service that needs credentials and is
not configured (no section in the settings file, no secret in the environment)
is skipped. Nothing is written: no data directory is created, no job queued.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stdq.errors import EXIT_CONFIG, EXIT_TEMPORARY, ConfigError, StdqError
from stdq.records import Check

if TYPE_CHECKING:
    from stdq.config import ServiceConfig, Settings
    from stdq.registry import Registry

PROBE_TIMEOUT = 10.0  # seconds for one probe's answer (at most: [http] timeout wins when lower)


def settings_check(settings: Settings) -> Check:
    """The settings file: found and parsed (or absent: the defaults apply)."""
    if settings.file_exists:
        return Check("settings", str(settings.path), "ok", "found, parses")
    return Check(
        "settings", str(settings.path), "ok",
        "not found: the defaults apply (write one with: stdq config init)",
    )


def settings_failure(path: Path | str, error: StdqError) -> Check:
    """The settings file could not be read or checked (ERROR says file and key)."""
    return Check("settings", str(path), "failed", _one_line(error), EXIT_CONFIG)


def data_dir_check(data_dir: Path) -> Check:
    """The data directory: writable, and the schema version of its database (nothing created)."""
    from stdq.db import SCHEMA_VERSION, Database, schema_version

    name = str(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        return Check("data_dir", name, "failed", "is not a folder", EXIT_CONFIG)
    db = Database(data_dir)
    try:
        if not db.writable:
            return Check(
                "data_dir", name, "failed",
                "is not writable: queries cannot store their results"
                " (point --data-dir or $STDQ_DATA_DIR elsewhere)",
                EXIT_CONFIG,
            )
        if not data_dir.exists():
            return Check("data_dir", name, "ok", "does not exist yet; the first query creates it")
        if not db.exists:
            return Check("data_dir", name, "ok", "writable; no database yet (the first query makes it)")
    finally:
        db.close()
    reader = Database(data_dir, readonly=True)  # read, never migrate: nothing is written
    try:
        version = schema_version(reader.conn)  # bad files: ConfigError naming the file
    except StdqError as exc:
        if "needs an upgrade" in exc.message:  # an older stdq's database: any write upgrades it
            return Check(
                "data_dir", name, "ok",
                f"writable; database schema older than {SCHEMA_VERSION}: the next command that"
                " writes upgrades it",
            )
        return Check("data_dir", name, "failed", _one_line(exc), exc.exit_code)
    finally:
        reader.close()
    return Check("data_dir", name, "ok", f"writable; database schema version {version} of {SCHEMA_VERSION}")


def configured(name: str, config: ServiceConfig, settings: Settings) -> bool:
    """A service is configured when the settings file has its section or a secret of it is set."""
    return name in settings.services_raw or any(config.secret(f) for f in config.secret_fields)


def credentials_check(name: str, cls: Any, config: ServiceConfig, settings: Settings) -> Check | None:
    """Whether the secrets a query needs are set (names and sources only); None for a
    service without secrets."""
    from stdq.config import env_var_name

    fields = tuple(config.secret_fields)
    if not fields:
        return None
    optional = set(getattr(cls, "optional_secrets", ()) or ())
    conventional = getattr(cls, "secret_env", {}) or {}
    have = [f for f in fields if config.secret(f)]
    missing = [f for f in fields if f not in have and f not in optional]
    said = [f"{f} set (from {config.secret_sources.get(f, 'the settings')})" for f in have]
    said += [f"{f} not set (optional)" for f in fields if f not in have and f in optional]
    if not missing:
        return Check("credentials", name, "ok", "; ".join(said))
    variables = " and ".join(
        env_var_name(name, f) + (f" (or {' or '.join(conventional[f])})" if conventional.get(f) else "")
        for f in missing
    )
    where = f"set {variables}, or {' and '.join(missing)} in [services.{name}]"
    if not configured(name, config, settings):
        return Check("credentials", name, "skipped", f"not configured (to use it: {where})")
    return Check(
        "credentials", name, "failed",
        f"{' and '.join(missing)} missing: {where} of {settings.path}", EXIT_CONFIG,
    )


def _probe_http(settings: Settings) -> Any:
    http = settings.http
    timeout = min(float(http.timeout), PROBE_TIMEOUT)
    return dataclasses.replace(
        http, timeout=timeout, max_retries=0, deadline=min(float(http.deadline), 3 * timeout)
    )


def _one_line(error: BaseException, secrets: list[str] | None = None) -> str:
    from stdq.http import redact

    text = error.message if isinstance(error, StdqError) else f"{type(error).__name__}: {error}"
    return " ".join(redact(str(text), secrets or []).split())


def _timed(kind: str, name: str, probe: Callable[[], str], secrets: list[str]) -> Check:
    """Run PROBE: ok with what it saw, or failed (3 for ConfigError, 75 for the rest)."""
    start = time.monotonic()
    try:
        seen = probe()
    except ConfigError as exc:
        status, text, code = "failed", _one_line(exc, secrets), EXIT_CONFIG
    except Exception as exc:  # unreachable, an HTML page, an answer not in its format, a bug
        status, text, code = "failed", _one_line(exc, secrets), EXIT_TEMPORARY
    else:
        status, text, code = "ok", " ".join(str(seen).split()), 0
    text = text.removeprefix(f"{name}: ")  # the line names it already
    return Check(kind, name, status, text, code, round(time.monotonic() - start, 3))


def service_probe(name: str, registry: Registry, settings: Settings) -> Callable[[], Check]:
    """The reachability check of service NAME, to be run (in a thread)."""
    from stdq import http

    config = registry.service_config(name)
    service = registry.service(name)
    secrets = config.secret_values()

    def probe() -> str:
        with http.make_client(
            name, _probe_http(settings), auth=service.http_auth(), secrets=secrets
        ) as client:
            return str(service.probe(client))

    return lambda: _timed("service", name, probe, secrets)


def resolver_probe(name: str, registry: Registry, settings: Settings) -> Callable[[], Check]:
    """The reachability check of remote resolver NAME, to be run (in a thread)."""
    cls = registry.resolver_class(name)
    quick = dataclasses.replace(settings, http=_probe_http(settings))
    resolver = cls(quick, registry.resolver_values(name))
    return lambda: _timed("resolver", name, lambda: str(resolver.probe()), [])


def run_checks(settings: Settings, registry: Registry, *, probes: bool = True) -> list[Check]:
    """Every check, in order: settings, data directory, per service its credentials and
    its probe, then each remote resolver of ``[resolver] order``. PROBES False: no request."""
    checks: list[Check | Callable[[], Check]] = [
        settings_check(settings), data_dir_check(Path(settings.data_dir)),
    ]
    for name in registry.service_names():
        try:
            cls = registry.service_class(name)
            config = registry.service_config(name)
        except StdqError as exc:
            checks.append(Check("service", name, "failed", _one_line(exc), EXIT_CONFIG))
            continue
        creds = credentials_check(name, cls, config, settings)
        if creds is not None:
            checks.append(creds)
        if creds is not None and creds.status == "skipped":
            checks.append(Check("service", name, "skipped", "not configured: not asked"))
        elif not probes:
            checks.append(Check("service", name, "skipped", "not asked (no requests)"))
        else:
            try:
                checks.append(service_probe(name, registry, settings))
            except StdqError as exc:
                checks.append(Check("service", name, "failed", _one_line(exc), exc.exit_code))
    from stdq.registry import LOCAL_RESOLVER

    for name in dict.fromkeys(settings.resolver.order):
        if name == LOCAL_RESOLVER:
            continue
        if not probes:
            checks.append(Check("resolver", name, "skipped", "not asked (no requests)"))
            continue
        try:
            checks.append(resolver_probe(name, registry, settings))
        except StdqError as exc:
            checks.append(Check("resolver", name, "failed", _one_line(exc), EXIT_CONFIG))
    pending = [c for c in checks if not isinstance(c, Check)]
    done: dict[int, Check] = {}
    if pending:
        with ThreadPoolExecutor(max_workers=min(8, len(pending) or 1)) as pool:
            futures = {id(c): pool.submit(c) for c in pending}
            done = {key: future.result() for key, future in futures.items()}
    return [c if isinstance(c, Check) else done[id(c)] for c in checks]

