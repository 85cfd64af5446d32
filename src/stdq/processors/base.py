"""The data-processor extension point: raw files -> normalized photometry.

A processor never does HTTP. It reads the product's raw files, returns a
DataFrame in the normalized schema (``stdq.photometry.COLUMNS``, then any
survey-prefixed extra columns), and records rows it left out with
``product.leave_out(reason, n)``. Every processor applies the common rule
``stdq.photometry.drop_bad_values(table, SURVEY, product)`` (non-finite flux or
error, error <= 0, an epoch outside the survey's years or in the future); the
processing step applies it again to what ``process`` returns. An exception from
``process`` that is not a StdqError fails the product (QueryFailed, exit 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd

    from stdq.store import DataProduct


_UNSET: Any = object()


class DataProcessor:
    """Base class: subclass it and implement :meth:`process`.

    ``settings_defaults`` declares the processor's cut keys (detection
    threshold, quality cuts, ...) with their defaults, and ``settings_help``
    their meaning: they are settings keys of every service whose products this
    processor reads (``[services.NAME]``), shown by ``stdq services show NAME``,
    type-checked by the registry, and defined here only. ``settings`` holds the
    service's merged values (or only these defaults when the service is no
    longer configured).
    """

    data_product_type: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    settings_defaults: ClassVar[dict[str, Any]] = {}
    settings_help: ClassVar[dict[str, str]] = {}

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = {**self.settings_defaults, **(settings or {})}

    def setting(self, key: str, default: Any = _UNSET) -> Any:
        """The value of settings key KEY (its declared default when unset)."""
        value = self.settings.get(key)
        if value is not None:
            return value
        if default is _UNSET:
            return self.settings_defaults.get(key)
        return default

    def process(self, product: DataProduct) -> pd.DataFrame:
        """The product's photometry as a DataFrame in the normalized schema."""
        raise NotImplementedError

    def requires_errors(self) -> bool:
        """Whether every row must have a flux error (False: an empty error is allowed, a
        given one must still be finite and > 0), for the common rule."""
        return True

    def cuts(self) -> dict[str, Any]:
        """The thresholds this processor applied, for product.json (default: its declared keys)."""
        return {key: self.setting(key) for key in self.settings_defaults}
