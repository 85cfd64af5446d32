"""Raw files -> photometry.csv + product.json, through the product type's processor.

Used when a job's query returns its products, and by ``stdq products reprocess``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stdq import __version__, photometry
from stdq.errors import QueryFailed, StdqError
from stdq.store import DataProduct, Store, atomic_write

if TYPE_CHECKING:
    import pandas as pd

    from stdq.config import Settings


@dataclass
class ProcessResult:
    """What processing one product gave."""

    product_id: int
    rows: int
    detections: int
    left_out: dict[str, int]
    path: str
    summary: dict[str, Any]
    table: Any = None  # the DataFrame


def processor_for(settings: Settings, data_product_type: str, service_name: str | None):
    """(processor, its "module:Class", where its settings came from) for DATA_PRODUCT_TYPE.

    The settings are those of service SERVICE_NAME; when that service is no longer
    configured, the processor's own defaults (and product.json says so).
    """
    from stdq.registry import registry_for

    registry = registry_for(settings)
    processor, config = registry.processor_for(data_product_type, service_name)
    path = registry.processor_path(data_product_type) or ""
    if config is not None:
        source = f"[services.{config.name}]"
    else:
        source = "processor defaults"
        if service_name:
            source += f" (service {service_name!r} is no longer configured)"
    return processor, path, source


def process_product(
    settings: Settings,
    store: Store,
    product: DataProduct,
    *,
    query: dict[str, Any] | None = None,
    service_info: dict[str, Any] | None = None,
) -> ProcessResult:
    """Run the processor on PRODUCT's raw files; write photometry.csv and product.json.

    QueryFailed (exit 1) when the raw answer cannot be parsed; the product is then
    marked 'failed' with the reason, and no photometry.csv is written.
    """
    processor, processor_path, source = processor_for(
        settings, product.data_product_type, product.service
    )

    product.left_out = {}
    try:
        table: pd.DataFrame = processor.process(product)
    except StdqError as exc:
        store.mark_product(product.id, state="failed", error=exc.message)
        _write_product_json(product, query, service_info, (processor, processor_path, source), None, exc.message)
        raise
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        message = f"{product.service}: the answer could not be parsed ({type(exc).__name__}: {exc})"
        store.mark_product(product.id, state="failed", error=message)
        _write_product_json(product, query, service_info, (processor, processor_path, source), None, message)
        raise QueryFailed(message) from exc
    table = photometry.normalize(table, product_id=product.id)
    atomic_write(product.photometry_path, lambda fh: photometry.write_table(table, fh, "csv"))
    summary = photometry.summarize(table)
    _write_product_json(product, query, service_info, (processor, processor_path, source), summary, None)
    left = sum(product.left_out.values())
    store.mark_product(
        product.id,
        state="ready",
        rows=summary["rows"],
        detections=summary["detections"],
        left_out=left,
        error=None,
        processed_at=time.time(),
    )
    return ProcessResult(
        product_id=product.id,
        rows=summary["rows"],
        detections=summary["detections"],
        left_out=dict(product.left_out),
        path=str(product.photometry_path),
        summary=summary,
        table=table,
    )


def _write_product_json(
    product: DataProduct,
    query: dict[str, Any] | None,
    service_info: dict[str, Any] | None,
    used: tuple[Any, str, str],
    summary: dict[str, Any] | None,
    error: str | None,
) -> None:
    processor, processor_path, settings_source = used
    previous: dict[str, Any] = {}
    if product.json_path.is_file():
        try:
            previous = json.loads(product.json_path.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
    document = {
        "product_id": product.id,
        "job_id": product.job_id,
        "service": product.service,
        "data_product_type": product.data_product_type,
        "stdq_version": __version__,
        "service_info": service_info or previous.get("service_info", {}),
        "target": product.target,
        "query": query or previous.get("query") or {"params": product.params},
        "created_at": product.created_at,
        "processed_at": time.time(),
        "processor": {
            "class": processor_path,
            "version": getattr(processor, "version", "1"),
            "cuts": processor.cuts(),
            # "[services.NAME]", or "processor defaults (service ... no longer configured)"
            "settings": settings_source,
        },
        "counts": None
        if summary is None
        else {
            "rows": summary["rows"],
            "detections": summary["detections"],
            "left_out": sum(product.left_out.values()),
            "bands": summary["bands"],
            "mjd_min": summary["mjd_min"],
            "mjd_max": summary["mjd_max"],
            "objects": summary["objects"],
            "flux_kind": summary["flux_kind"],
        },
        "left_out": dict(product.left_out),
        "service_notes": product.notes,
        "error": error,
        "raw_files": [
            {
                "name": raw.name,
                "sha256": raw.sha256,
                "bytes": raw.bytes,
                "url": raw.url,
                "content_type": raw.content_type,
            }
            for raw in product.raw_files
        ],
        "photometry": "photometry.csv" if summary is not None else None,
    }
    atomic_write(product.json_path, json.dumps(document, indent=2, default=str) + "\n")
