"""The data-processor extension point: raw files -> normalized photometry.

A processor never does HTTP. It reads the product's raw files, returns a
DataFrame in the normalized schema (``stdq.photometry.COLUMNS``, then any
survey-prefixed extra columns), and records rows it left out with
``product.leave_out(reason, n)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd

    from stdq.store import DataProduct


class DataProcessor:
    """Base class: subclass it and implement :meth:`process`.

    ``settings`` holds the service's settings values (e.g. ``snr_threshold``,
    quality-cut thresholds), so cuts are settings keys, not constants.
    """

    data_product_type: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    def __init__(self, settings: dict[str, Any] | None = None):
        self.settings = dict(settings or {})

    def setting(self, key: str, default: Any) -> Any:
        value = self.settings.get(key)
        return default if value is None else value

    def process(self, product: DataProduct) -> pd.DataFrame:
        """The product's photometry as a DataFrame in the normalized schema."""
        raise NotImplementedError

    def cuts(self) -> dict[str, Any]:
        """The thresholds this processor applied, for product.json."""
        return {}
