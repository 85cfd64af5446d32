"""The registry of services and processors.

Built-in services are registered exactly like third-party ones: through the
entry-point groups ``stdq.services`` and ``stdq.processors`` (see pyproject.toml).
Settings can override any of them, or add new ones, with "module:Class" paths.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import Any

from stdq.errors import ConfigError

SERVICE_GROUP = "stdq.services"
PROCESSOR_GROUP = "stdq.processors"


@functools.cache
def service_entry_points() -> dict[str, str]:
    """Service name -> "module:Class", from every installed distribution."""
    return {ep.name: ep.value for ep in entry_points(group=SERVICE_GROUP)}


@functools.cache
def processor_entry_points() -> dict[str, str]:
    """Data product type -> "module:Class", from every installed distribution."""
    return {ep.name: ep.value for ep in entry_points(group=PROCESSOR_GROUP)}


def load_class(path: str, *, where: str) -> Any:
    """Import "package.module:Class"; ConfigError (exit 3) naming WHERE when it fails."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{where}: {path!r} is not of the form 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module_name!r} ({exc})") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{where}: {module_name!r} has no {attr!r}")
    return obj
