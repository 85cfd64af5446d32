"""One target's merged light curve (``stdq lightcurve``, ``Stdq.lightcurve``).

The latest light curve of every service (``products/<target>/<service>/latest.csv``,
:mod:`stdq.latest`) concatenated in the normalized schema (the fixed columns of
photometry.csv, then ``service`` and ``masked``), sorted by time. Survey-specific
extra columns are left out. Difference and total fluxes are never mixed silently:
the default flux kind is ``difference`` when any service gave difference fluxes, and
what is left aside (another flux kind, ``--since``, ``--clean``) is counted in
``left_aside``. docs/commands.md ``stdq lightcurve`` and docs/json.md are the contract.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stdq.errors import BadInput, NoData

if TYPE_CHECKING:
    import pandas as pd

    from stdq.core import Stdq
    from stdq.records import Product, Target

log = logging.getLogger("stdq")

FLUX_KIND_CHOICES = ("difference", "total", "both")
EXTRA_COLUMNS = ("service", "masked")


@dataclass
class LightCurve:
    """A merged light curve: the table (pandas, sorted by mjd), what was left aside
    (list of {service, flux_kind, rows, why}), the provenance of each product used,
    the flux kind chosen and the target."""

    target: Target
    table: pd.DataFrame
    flux_kind: str
    left_aside: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    services: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return int(len(self.table))

    def summary(self) -> dict[str, Any]:
        """Per band and for the whole target (docs/json.md "stdq lightcurve --summary")."""
        return summarize(self.table, target=self.target, flux_kind=self.flux_kind,
                         left_aside=self.left_aside)

    def meta(self) -> dict[str, Any]:
        """The ECSV/Parquet metadata: target, flux kind, left aside, provenance."""
        return {
            "target": self.target.as_dict(),
            "flux_kind": self.flux_kind,
            "services": list(self.services),
            "left_aside": self.left_aside,
            "provenance": self.provenance,
        }

    def to_astropy(self) -> Any:
        """The table as an astropy Table with units and meta()."""
        from stdq.photometry import UNITS, quiet_astropy

        quiet_astropy()
        from astropy.table import Table

        table = Table.from_pandas(self.table)
        for name, unit in UNITS.items():
            if name in table.colnames:
                table[name].unit = unit
        table.meta.update(self.meta())
        return table


# -- reading -------------------------------------------------------------------------------


def latest_table(sdq: Stdq, target: Target, service: str) -> pd.DataFrame:
    """The current light curve of TARGET and SERVICE: latest.csv (``Stdq.latest``), or,
    when it cannot be read, the ready products combined newest-wins (the same rule)."""
    from stdq import latest
    from stdq.photometry import read_table

    path = sdq.latest(target, service)
    if path is not None and path.is_file():
        try:
            return read_table(path)
        except (OSError, ValueError) as exc:
            log.warning("%s: cannot be read (%s); combining its products", path, exc)
    folder = latest.folder_for(sdq.store, target.label, service)
    return latest.combine(latest.read_products(latest.folder_products(sdq.store, folder, service)))


def target_services(sdq: Stdq, target: Target) -> list[str]:
    """The services with a ready product of TARGET, sorted."""
    return sorted({p.service for p in sdq.store.products(target.label) if p.state == "ready"})


def parse_since(text: str | float | None) -> float | None:
    """--since: an MJD or an ISO date (as ``stdq update --since``)."""
    if text is None:
        return None
    from stdq.update import parse_since as _parse

    return _parse(str(text))


def build(
    sdq: Stdq,
    target: Target,
    *,
    services: Sequence[str] | None = None,
    flux_kind: str | None = None,
    clean: bool = False,
    since: float | str | None = None,
) -> LightCurve:
    """The merged light curve of TARGET (see the module docstring). NoData (exit 5) when
    the target has no ready product of the services asked for."""
    import numpy as np
    import pandas as pd

    from stdq import masks
    from stdq.photometry import COLUMNS, empty_table

    if flux_kind is not None and flux_kind not in FLUX_KIND_CHOICES:
        raise BadInput(f"--flux-kind {flux_kind!r}: one of {', '.join(FLUX_KIND_CHOICES)}")
    bound = parse_since(since)
    have = target_services(sdq, target)
    if services:
        wanted = list(dict.fromkeys(s.strip() for s in services if s.strip()))
        for name in wanted:
            if not sdq.registry.has_service(name):
                raise BadInput(f"--services: unknown service {name!r}",
                               hint=f"known services: {', '.join(sdq.registry.service_names())}")
        chosen = [s for s in wanted if s in have]
    else:
        chosen = have
    if not chosen:
        asked = f" from {', '.join(services)}" if services else ""
        raise NoData(f"{target.label} has no light curve{asked} yet",
                     hint=f"fetch one: stdq update {target.label!r} --services atlas,ztf")
    frames = []
    for service in chosen:
        table = latest_table(sdq, target, service)
        table = table[[c for c in COLUMNS if c in table.columns]]
        table["service"] = np.full(len(table), service, dtype=object)
        table = masks.apply(table, masks.masked_ids(sdq.db, target.label, service))
        frames.append(table)
    merged = pd.concat(frames, ignore_index=True) if frames else empty_table()
    left: list[dict[str, Any]] = []

    kinds = set(merged["flux_kind"].dropna().astype(str))
    kind = flux_kind or ("difference" if "difference" in kinds or not kinds else "total")
    if kind != "both":
        keep = (merged["flux_kind"] == kind).to_numpy(dtype=bool)
        if not keep.all():
            _count_aside(left, merged[~keep], f"{{flux_kind}} fluxes (--flux-kind {kind})", by_kind=True)
            merged = merged[keep]
    if bound is not None:
        keep = merged["mjd"].to_numpy() >= bound
        _count_aside(left, merged[~keep], f"before --since {bound:g}")
        merged = merged[keep]
    if clean:
        masked = merged["masked"].to_numpy(dtype=bool)
        _count_aside(left, merged[masked], "masked (--clean)")
        merged = merged[~masked]
        flagged = merged["quality_flag"].to_numpy() != 0
        _count_aside(left, merged[flagged], "quality_flag not 0 (--clean)")
        merged = merged[~flagged]
    # the frames are concatenated in service order, each sorted by mjd: a stable sort by mjd
    # orders equal epochs by service
    merged = merged.sort_values("mjd", kind="stable").reset_index(drop=True)
    used = sorted({int(p) for p in merged["product_id"].dropna().unique()})
    return LightCurve(
        target=target, table=merged, flux_kind=kind, left_aside=left,
        provenance=provenance(sdq, used), services=tuple(chosen),
    )


def _count_aside(left: list[dict[str, Any]], rows: pd.DataFrame, why: str, *, by_kind: bool = False) -> None:
    if not len(rows):
        return
    keys = ["service", "flux_kind"] if by_kind else ["service"]
    for key, group in rows.groupby(keys, sort=True, dropna=False):
        service = key[0] if isinstance(key, tuple) else key
        entry: dict[str, Any] = {"service": str(service), "rows": int(len(group)), "why": why}
        if by_kind:
            entry["flux_kind"] = None if key[1] is None or key[1] != key[1] else str(key[1])
            entry["why"] = why.format(flux_kind=entry["flux_kind"] or "no flux kind:")
        left.append(entry)


# -- provenance ----------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    try:
        when = _dt.datetime.fromtimestamp(float(value), _dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def product_provenance(product: Product) -> dict[str, Any]:
    """What made PRODUCT, from its product.json: service, query, time fetched, processor,
    cuts and the sha256 of each raw file."""
    meta: dict[str, Any] = {}
    try:
        loaded = json.loads((Path(product.path) / "product.json").read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            meta = loaded
    except (OSError, ValueError, RecursionError):
        pass
    found = meta.get("processor")
    processor: dict[str, Any] = found if isinstance(found, dict) else {}
    listed = meta.get("raw_files")
    raw: list[Any] = listed if isinstance(listed, list) else []
    return {
        "product_id": product.id,
        "service": product.service,
        "query": meta.get("query"),
        "fetched_at": _iso(product.created_at),
        "fetched_at_unix": product.created_at,
        "processed_at": _iso(product.processed_at),
        "processed_at_unix": product.processed_at,
        "processor": {"class": processor.get("class"), "version": processor.get("version")},
        "cuts": processor.get("cuts") or {},
        "raw_files": [
            {"name": r.get("name"), "sha256": r.get("sha256")} for r in raw if isinstance(r, dict)
        ],
    }


def provenance(sdq: Stdq, product_ids: Sequence[int]) -> list[dict[str, Any]]:
    """product_provenance of each of PRODUCT_IDS that is still in the catalog."""
    out = []
    for pid in product_ids:
        product = sdq.store.get_product(pid)
        if product is not None:
            out.append(product_provenance(product))
    return out


# -- summary -------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def _distinct(column: pd.Series) -> list[str]:
    """The distinct non-missing values of COLUMN as sorted text."""
    return sorted({str(v) for v in column.dropna().unique()})


def band_summary(group: pd.DataFrame) -> dict[str, Any]:
    """One band: points, detections, first/last detection, the last non-detection before
    the first detection (with its limit), the peak (brightest) magnitude and its time.
    Masked and flagged rows count as points but give no detection, limit or peak."""
    import numpy as np

    good = group[(~group["masked"].to_numpy(dtype=bool)) & (group["quality_flag"].to_numpy() == 0)]
    det = good[good["detected"].to_numpy(dtype=bool)]
    out: dict[str, Any] = {
        "survey": _distinct(group["survey"]),
        "points": int(len(group)),
        "detections": int(len(det)),
        "first_detection": None,
        "last_detection": None,
        "last_nondetection_before_first": None,
        "peak": None,
    }
    if len(det):
        mjd = det["mjd"].to_numpy(dtype="float64")
        first, last = float(np.nanmin(mjd)), float(np.nanmax(mjd))
        out["first_detection"] = {"mjd": first, "magnitude": _num(det.loc[det["mjd"] == first, "magnitude"].iloc[0])}
        out["last_detection"] = {"mjd": last, "magnitude": _num(det.loc[det["mjd"] == last, "magnitude"].iloc[0])}
        before = good[(~good["detected"].to_numpy(dtype=bool)) & (good["mjd"].to_numpy() < first)]
        if len(before):
            row = before.loc[before["mjd"].idxmax()]
            out["last_nondetection_before_first"] = {"mjd": float(row["mjd"]), "limit": _num(row["limit"])}
        mags = det["magnitude"].to_numpy(dtype="float64")
        if np.isfinite(mags).any():
            i = int(np.nanargmin(mags))
            out["peak"] = {
                "magnitude": float(mags[i]),
                "magnitude_error": _num(det["magnitude_error"].iloc[i]),
                "mjd": float(det["mjd"].iloc[i]),
            }
    elif len(good):
        row = good.loc[good["mjd"].idxmax()]
        out["last_nondetection_before_first"] = None
        out["last_limit"] = {"mjd": float(row["mjd"]), "limit": _num(row["limit"])}
    return out


def summarize(
    table: pd.DataFrame, *, target: Target | None = None, flux_kind: str | None = None,
    left_aside: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The summary of a merged table (docs/json.md)."""
    import numpy as np

    bands: dict[str, Any] = {}
    if len(table):
        for band, group in table.groupby("band", sort=True, dropna=False):
            name = "" if band is None or band != band else str(band)
            bands[name] = band_summary(group)
    mjd = table["mjd"].to_numpy(dtype="float64") if len(table) else np.array([])
    first = float(np.nanmin(mjd)) if mjd.size else None
    last = float(np.nanmax(mjd)) if mjd.size else None
    return {
        "target": target.as_dict() if target is not None else None,
        "flux_kind": flux_kind,
        "surveys": _distinct(table["survey"]),
        "services": _distinct(table["service"]),
        "rows": int(len(table)),
        "detections": int(table["detected"].to_numpy(dtype=bool).sum()) if len(table) else 0,
        "mjd_first": first,
        "mjd_last": last,
        "days": (last - first) if first is not None and last is not None else None,
        "masked": int(table["masked"].to_numpy(dtype=bool).sum()) if len(table) else 0,
        "flagged": int((table["quality_flag"].to_numpy() != 0).sum()) if len(table) else 0,
        "left_aside": list(left_aside),
        "bands": bands,
    }


# -- writing -------------------------------------------------------------------------------

TABLE_FORMATS = ("csv", "ecsv", "json", "parquet")
FORMATS = TABLE_FORMATS + ("sncosmo", "tom", "skyportal")
SUFFIXES = {".csv": "csv", ".ecsv": "ecsv", ".json": "json", ".parquet": "parquet",
            ".dat": "sncosmo", ".txt": "sncosmo"}


def format_for(out: str | None, fmt: str | None) -> str:
    """FMT, else from OUT's suffix, else csv."""
    if fmt:
        return fmt
    if out and out != "-":
        return SUFFIXES.get(Path(out).suffix.lower(), "csv")
    return "csv"


def write(lc: LightCurve, dest: Any, fmt: str) -> None:
    """LC's table on the binary stream DEST as FMT (one of FORMATS)."""
    from stdq import exports, photometry

    if fmt in ("csv", "json"):
        photometry.write_table(lc.table, dest, fmt)
    elif fmt in ("ecsv", "parquet"):
        photometry.write_table(lc.table, dest, fmt, lc.meta())
    elif fmt == "sncosmo":
        left = exports.write_sncosmo(lc.table, dest, {
            "name": lc.target.label.replace(" ", "_"), "ra": lc.target.ra, "dec": lc.target.dec,
            "flux_kind": lc.flux_kind,
        })
        for band, rows in left.items():
            lc.left_aside.append({"service": None, "band": band, "rows": rows,
                                  "why": f"band {band} has no sncosmo bandpass (--format sncosmo)"})
    elif fmt == "tom":
        exports.write_tom(lc.table, dest)
    elif fmt == "skyportal":
        exports.write_skyportal(lc.table, dest, lc.target.label)
    else:
        raise BadInput(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
