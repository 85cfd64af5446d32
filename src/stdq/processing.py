"""Raw files -> photometry.csv + product.json, through the product type's processor.

Used when a job's query returns its products, and by ``stdq products reprocess``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stdq import __version__, photometry
from stdq.errors import DiskFull, QueryFailed, StdqError, is_disk_full
from stdq.store import DataProduct, Store, atomic_write

if TYPE_CHECKING:
    import pandas as pd

    from stdq.config import Settings

log = logging.getLogger("stdq")


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

    The processor's table goes through the common rule once more
    (``photometry.drop_bad_values``, survey per row). On any failure the product is
    marked 'failed' in the catalog with a one-line reason (and product.json says it)
    before the error is raised -- a product never stays 'pending': a StdqError as
    it is, a full disk as DiskFull (exit 75), anything else a processor or the
    writing meets (an overflow, a recursion, a bug) as QueryFailed (exit 1) naming
    the service and the error, never an internal error.
    """
    from stdq.memory import release

    used: tuple[Any, str, str] = (None, "", "")
    try:
        used = processor_for(settings, product.data_product_type, product.service)
        processor = used[0]
        product.left_out = {}
        release()  # the pages of the answers the query freed (stdq.memory)
        try:
            table: pd.DataFrame = processor.process(product)
            requires = getattr(processor, "requires_errors", None)
            table = photometry.drop_bad_values(
                table, None, product, require_error=bool(requires()) if callable(requires) else True
            )
            table = photometry.normalize(table, product_id=product.id)
        except StdqError:
            raise
        except RecursionError:
            raise QueryFailed(f"{product.service}: the answer is nested too deeply to be read") from None
        except Exception as exc:
            if is_disk_full(exc):
                raise
            raise QueryFailed(
                f"{product.service}: the answer could not be processed ({one_line(exc)})"
            ) from exc
        release()  # the parsed answers, freed
        atomic_write(product.photometry_path, lambda fh: photometry.write_table(table, fh, "csv"))
        release()  # the writer's chunks
        photometry.remember_written(product.photometry_path, table)  # not read back (issue 10)
        summary = photometry.summarize(table)
        _write_product_json(product, query, service_info, used, summary, None)
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
        from stdq.latest import rebuild_for

        rebuild_for(store, product)  # products/<target>/<service>/latest.csv (a warning at worst)
    except StdqError as exc:
        _fail(store, product, query, service_info, used, exc.message)
        raise
    except Exception as exc:  # writing photometry.csv / product.json / the catalog
        error: StdqError
        if is_disk_full(exc):
            error = DiskFull(store.data_dir, f"writing product {product.id}")
        else:
            error = QueryFailed(f"product {product.id} could not be written ({one_line(exc)})")
        _fail(store, product, query, service_info, used, error.message)
        raise error from exc
    return ProcessResult(
        product_id=product.id,
        rows=summary["rows"],
        detections=summary["detections"],
        left_out=dict(product.left_out),
        path=str(product.photometry_path),
        summary=summary,
        table=table,
    )


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` of EXC on one line, at most LIMIT characters."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(
    store: Store,
    product: DataProduct,
    query: dict[str, Any] | None,
    service_info: dict[str, Any] | None,
    used: tuple[Any, str, str],
    message: str,
) -> None:
    """Mark PRODUCT failed with MESSAGE (first: the catalog), then say it in product.json.

    Each step is tried on its own: a product.json that cannot be written (full disk)
    never leaves the catalog row 'pending'.
    """
    try:
        store.mark_product(product.id, state="failed", error=message, processed_at=time.time())
    except Exception as exc:  # one line, no traceback (a full disk says it once already)
        log.debug("product %s: could not be marked failed in the catalog (%s)", product.id, exc)
    try:
        _write_product_json(product, query, service_info, used, None, message)
    except Exception as exc:  # one line, no traceback: the error raised says what happened
        log.debug("product %s: could not write product.json (%s)", product.id, exc)


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
        except (ValueError, RecursionError):
            previous = {}
        if not isinstance(previous, dict):
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
            "cuts": processor.cuts() if processor is not None else {},
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
                "redacted": raw.redacted,  # a secret was masked: sha256/bytes are of the stored file
            }
            for raw in product.raw_files
        ],
        "photometry": "photometry.csv" if summary is not None else None,
    }
    text = product.redact_text(json.dumps(document, indent=2, default=str) + "\n")  # echoed secrets
    atomic_write(product.json_path, text, data_dir=product.data_dir)
