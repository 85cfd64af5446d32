"""stdq: single-target data queries — photometry of one target from survey services.

The library is :class:`stdq.Stdq` (and the one-call :func:`stdq.query`); its
errors are the classes of :mod:`stdq.errors`, exported here too. Everything is
imported on first use, so ``import stdq`` (and ``stdq --help``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from stdq.core import QueryResult, Stdq, query
    from stdq.errors import (
        BadInput,
        Cancelled,
        ConfigError,
        Interrupted,
        NoData,
        QueryFailed,
        ResolveError,
        StdqError,
        TemporaryFailure,
    )
    from stdq.records import Job, JobEvent, JobState, Outcome, Product, RawFile, Target

_EXPORTS = {
    "Stdq": "stdq.core",
    "QueryResult": "stdq.core",
    "query": "stdq.core",
    "StdqError": "stdq.errors",
    "QueryFailed": "stdq.errors",
    "BadInput": "stdq.errors",
    "ConfigError": "stdq.errors",
    "ResolveError": "stdq.errors",
    "NoData": "stdq.errors",
    "TemporaryFailure": "stdq.errors",
    "Cancelled": "stdq.errors",
    "Interrupted": "stdq.errors",
    "Job": "stdq.records",
    "JobEvent": "stdq.records",
    "JobState": "stdq.records",
    "Outcome": "stdq.records",
    "Product": "stdq.records",
    "RawFile": "stdq.records",
    "Target": "stdq.records",
}

__all__ = [
    "BadInput", "Cancelled", "ConfigError", "Interrupted", "Job", "JobEvent", "JobState",
    "NoData", "Outcome", "Product", "QueryFailed", "QueryResult", "RawFile", "ResolveError",
    "Stdq", "StdqError", "Target", "TemporaryFailure", "__version__", "query",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'stdq' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
