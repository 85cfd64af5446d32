"""The data directory: product folders, atomic writes, the catalog."""

from __future__ import annotations

import hashlib

import pytest

from stdq.store import Store, atomic_write, coordinate_name, safe_name


def test_names_for_paths():
    assert safe_name("SN 2023ixf") == "SN_2023ixf"
    assert safe_name("../../etc/passwd").startswith("etc_passwd~")  # lossy: a hash suffix
    assert coordinate_name(210.910674, 54.31165) == "J210.910674+54.311650"
    assert coordinate_name(5.0, -0.5) == "J5.000000-0.500000"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    atomic_write(target, b"old")

    def boom(fh):
        fh.write(b"half a fi")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old"  # the final name still holds the complete old file
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary left behind


def test_product_layout_and_raw_files(tmp_path):
    store = Store(tmp_path)
    product = store.create_product(
        service="panstarrs",
        data_product_type="panstarrs_photometry",
        target={"name": "SN 2023ixf", "ra": 210.910674, "dec": 54.31165},
        params={"radius": 2.0},
    )
    assert product.path == tmp_path / "products" / "SN_2023ixf" / "panstarrs" / str(product.id)
    raw = product.add_raw("mean.csv", b"objID,raMean\n1,2\n", url="https://x/mean.csv")
    assert raw.sha256 == hashlib.sha256(b"objID,raMean\n1,2\n").hexdigest()
    assert (product.raw_dir / "mean.csv").read_bytes() == b"objID,raMean\n1,2\n"
    loaded = store.load_product(product.id)
    assert [r.name for r in loaded.raw_files] == ["mean.csv"]
    assert loaded.raw_files[0].sha256 == raw.sha256
    coords = store.create_product(
        service="atlas", data_product_type="atlas_photometry",
        target={"name": None, "ra": 1.5, "dec": -2.25}, params={},
    )
    assert coords.path.parent.parent.name == "J1.500000-2.250000"
    assert [p["id"] for p in store.list_products()] == [coords.id, product.id]
    with pytest.raises(ValueError):
        product.add_raw("../escape.txt", b"x")
