"""The commented settings file that ``stdq config init`` writes (also ``config.example.toml``).

Every key of docs/settings.md is here with its default, commented out: uncomment
a line to change it. A line ``# key = value`` or ``# [table]`` is a setting; other
comment lines explain. Secrets appear only as commented placeholders: the
environment is preferred.

The core tables ([tasks], [http], [resolver] order) are text below (their
defaults are checked against stdq.config by the tests). The keys of the
resolvers and of the built-in services are written from the classes that
declare them (the resolvers, the services' transport keys, the processors' cut
keys), with their defaults and help, so that each default lives in one place.
"""

from __future__ import annotations

import json
from typing import Any

HEAD = """\
# stdq settings (TOML). Written by `stdq config init`; see `stdq config show`
# for the merged settings in use, and `stdq services show NAME` for the keys
# and defaults of each service.
#
# Every setting below is commented out and shows its default: uncomment a line
# to change it. An unknown key is an error (exit 3) naming this file and the key.
# This file may hold secrets: keep it private (mode 0600), or better, keep the
# secrets in the environment (variables named below).

# Data directory: the SQLite database (targets, resolver cache, products, jobs)
# and the product folders. Default: the platform's user data folder
# (Linux: ~/.local/share/stdq). The environment variable STDQ_DATA_DIR and the
# --data-dir option win over this. A relative path is relative to this file's folder.
# data_dir = "~/.local/share/stdq"

# [tasks]
# Who runs a query: "database" queues it for background workers (long queries
# such as ATLAS forced photometry), "immediate" runs it in the calling process.
# backend = "database"
# Spawn a worker (detached, burst mode) when a job is queued and none is alive.
# autostart_worker = true
# Seconds after which a job whose worker stopped renewing its lease is taken up
# again from its checkpoint (>= 1).
# lease_seconds = 30
# Runs of one job that ended in a temporary failure before it is failed for good
# (1 to 100).
# max_attempts = 5
# Seconds during which a query identical to one that succeeded returns that
# result without a request (0: never; --force fetches again).
# reuse_seconds = 43200

# [hooks]
# A shell command run by `stdq update` once per target and service with new
# detections, a JSON object on stdin ("" for none). Its failure never fails the update.
# on_new_detection = ""

# [http]
# Seconds to connect, and between bytes, for each request (may be fractional: 2.5;
# > 0).
# timeout = 30
# Retries of ONE request on connection errors, timeouts, HTTP 5xx and 429 (0 to 20).
# max_retries = 4
# Seconds for a whole request: its retries and the whole answer, however slowly
# it comes (on top of `timeout`, which counts between bytes). Finite, > 0.
# deadline = 300
# The most bytes read from one answer (512 MiB); a longer answer is an error.
# max_bytes = 536870912

# [resolver]
# Resolvers asked in turn for a target name: "local" (the targets table of
# `stdq targets add`), "sesame" (CDS Sesame), "mast" (the MAST name resolver).
# Answers of remote resolvers are cached in the data directory.
# order = ["local", "sesame", "mast"]
"""

SERVICES_INTRO = """\
# Services. The built-in ones (atlas, panstarrs, ztf, ztf-fps) are registered
# already; a table here overrides their settings. A table for a new service
# needs `class = "package.module:ServiceClass"`. Every table accepts `class`,
# `url`, `api_key` and the service's own keys (`stdq services show NAME`): the
# service's transport keys and its processor's cut keys.
"""

TAIL = """\
# [data_product_types]
# Data product type -> its title. The built-in types are registered already.
# atlas_photometry = "ATLAS photometry"

# [data_processors]
# Data product type -> "package.module:ProcessorClass". The built-in processors
# are registered already; a line here overrides one or adds a new type.
# atlas_photometry = "stdq.processors.atlas:AtlasProcessor"
"""

# What the template says of a secret besides the environment variables.
SECRET_NOTES = {("atlas", "api_key"): "`stdq config atlas-login` gets a token"}


def _toml(value: Any) -> str:
    """VALUE as TOML writes it (strings, numbers, booleans, lists of strings)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 5.0 -> 5: floats accept integers
    return json.dumps(value)


def _comment(text: str) -> list[str]:
    """TEXT as comment lines, wrapped at 88 columns."""
    import textwrap

    text = text.strip()
    return ["# " + line for line in textwrap.wrap(text, 86)] if text else []


def _resolver_lines() -> list[str]:
    from stdq.registry import BUILTIN, RESOLVER_GROUP, load_class

    lines: list[str] = []
    for name, path in BUILTIN[RESOLVER_GROUP].items():
        cls = load_class(path, where=f"resolver {name!r}")
        for key, default in cls.settings_defaults.items():  # type: ignore[attr-defined]
            if isinstance(default, dict):  # a table of its own: [resolver.NAME], written below
                continue
            lines += _comment(cls.settings_help.get(key, ""))  # type: ignore[attr-defined]
            lines.append(f"# {key} = {_toml(default)}")
    lines += [
        "",
        "# [resolver.tns]",
        "# The Transient Name Server, for names like AT 2024abc: this table puts \"tns\" at",
        "# the end of the default order. The api key is a secret: prefer STDQ_TNS_API_KEY.",
        '# api_key = "<your TNS api key>"',
        "# bot_id = 12345",
        '# bot_name = "<your bot name>"',
        '# url = "https://www.wis-tns.org"',
    ]
    return lines


def _service_lines(name: str, registry: Any) -> list[str]:
    from stdq.config import env_var_name

    cls = registry.service_class(name)
    lines = ["", f"# [services.{name}]", "# The service class (built-in default shown).",
             f"# class = {_toml(registry.service_path(name))}"]
    for key, spec in registry.settings_keys(name).items():
        note = spec["help"] or ("the service's URL" if key == "url" else "")
        if spec["owner"] == "processor":
            note = f"{note} [a cut of the processor]" if note else "[a cut of the processor]"
        lines += _comment(note)
        lines.append(f"# {key} = {_toml(spec['default'])}")
    conventional = getattr(cls, "secret_env", {}) or {}
    for fieldname in getattr(cls, "secret_fields", ()) or ():
        env = [env_var_name(name, fieldname), *conventional.get(fieldname, ())]
        extra = SECRET_NOTES.get((name, fieldname))
        text = f"secret: prefer the environment, {' or '.join(env)}"
        lines += _comment(text + (f" ({extra})" if extra else ""))
        lines.append(f'# {fieldname} = "<your {name} {fieldname}>"')
    return lines


def template_text() -> str:
    """The commented settings file written by ``stdq config init`` (and config.example.toml)."""
    from pathlib import Path

    from stdq.config import Settings
    from stdq.registry import BUILTIN, SERVICE_GROUP, Registry

    registry = Registry(Settings(path=Path("config.toml"), file_exists=False, data_dir=Path(".")))
    lines = [HEAD.rstrip("\n"), *_resolver_lines(), "", SERVICES_INTRO.rstrip("\n")]
    for name in BUILTIN[SERVICE_GROUP]:
        lines += _service_lines(name, registry)
    return "\n".join(lines) + "\n\n" + TAIL
