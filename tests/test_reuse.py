"""Results reused ([tasks] reuse_seconds), and products removed (products rm / prune) with
latest.csv rebuilt and never emptied of rows no other product has."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from stdq import Stdq

SN = "SN 2023ixf"


def irsa_requests(runner):
    return runner.server.log_of(emulator="irsa")


def query_json(stdq, *args: str, code: int = 0) -> dict:
    result = stdq.run("query", "ztf", SN, *args, "--json")
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout) | {"_stderr": result.stderr}


def test_an_identical_query_is_reused_without_a_request(stdq):
    first = query_json(stdq)
    assert first["reused"] is False and len(irsa_requests(stdq)) == 1
    second = query_json(stdq)
    assert len(irsa_requests(stdq)) == 1  # 0 requests the second time
    assert second["reused"] is True and second["job_id"] == first["job_id"]
    assert second["rows"] == first["rows"] and second["path"] == first["path"]
    assert "reused the result of job" in second["_stderr"] and "--force" in second["_stderr"]
    # other options: a new request; --force: a new request
    query_json(stdq, "--bands", "g")
    assert len(irsa_requests(stdq)) == 2
    forced = query_json(stdq, "--force")
    assert forced["reused"] is False and forced["job_id"] != first["job_id"]
    assert len(irsa_requests(stdq)) == 3


def test_reuse_is_off_with_0_and_ends_after_reuse_seconds(stdq):
    stdq.write_settings("[tasks]\nreuse_seconds = 0\n")
    query_json(stdq)
    query_json(stdq)
    assert len(irsa_requests(stdq)) == 2
    clock = [time.time() + 10_000]  # the earlier jobs are older than 60 s
    stdq.write_settings("[tasks]\nreuse_seconds = 60\n")
    with Stdq(stdq.config_path, stdq.data_dir, clock=lambda: clock[0]) as sdq:
        job = sdq.submit("ztf", SN, runner="inprocess")
        sdq.run(job.id)
        again = sdq.submit("ztf", SN)
        assert again.reused and again.id == job.id
        clock[0] += 61
        later = sdq.submit("ztf", SN)
        assert not later.reused and later.id != job.id


def test_library_query_reuses_and_a_removed_product_is_fetched_again(stdq):
    with Stdq(stdq.config_path, stdq.data_dir) as sdq:
        first = sdq.query("ztf", SN)
        second = sdq.query("ztf", SN)
        assert second.job.reused and second.job.id == first.job.id
        assert len(irsa_requests(stdq)) == 1
        assert len(second.table) == len(first.table)
        sdq.remove_product(first.products[0].id, force=True)
        third = sdq.query("ztf", SN)
        assert not third.job.reused and len(irsa_requests(stdq)) == 2


def test_bad_reuse_seconds_is_exit_3(stdq):
    stdq.write_settings("[tasks]\nreuse_seconds = -1\n")
    result = stdq.run("query", "ztf", SN)
    assert result.returncode == 3 and "reuse_seconds" in result.stderr


# -- products rm / prune -------------------------------------------------------------------------


def latest_ids(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [row["source_row_id"] for row in csv.DictReader(fh)]


def two_products(stdq) -> tuple[dict, dict]:
    """Two products of SN 2023ixf / ztf: the whole history, then a span of it."""
    first = query_json(stdq)
    second = query_json(stdq, "--mjd-min", "60090")
    return first, second


def test_rm_refuses_a_product_whose_rows_no_other_has_and_rebuilds_latest(stdq):
    first, second = two_products(stdq)
    latest = Path(first["path"]).parents[1] / "latest.csv"
    assert len(latest_ids(latest)) == first["rows"]  # the second is a subset of the first
    result = stdq.run("products", "rm", str(first["product_id"]))
    assert result.returncode == 2 and "--force" in result.stderr
    # the second's rows are all in the first: it can go
    result = stdq.run("products", "rm", str(second["product_id"]), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"removed": [second["product_id"]]}
    assert not Path(second["path"]).parent.exists()
    assert len(latest_ids(latest)) == first["rows"]
    # the last one only with --force; latest.csv goes with it
    assert stdq.run("products", "rm", str(first["product_id"]), "--force").returncode == 0
    assert not latest.exists()
    assert stdq.run("products", "rm", "999").returncode == 2


def test_prune_keeps_needed_products_and_the_newest_with_keep_latest(stdq):
    first, second = two_products(stdq)
    latest = Path(first["path"]).parents[1] / "latest.csv"
    result = stdq.run("products", "prune", "--older-than", "0s", "--json")
    assert result.returncode == 0, result.stderr
    # the second is covered by the first; the first holds rows nothing else has
    assert json.loads(result.stdout) == {"removed": [second["product_id"]]}
    assert len(latest_ids(latest)) == first["rows"]
    third = query_json(stdq, "--force")  # the whole history again: the first is now covered
    result = stdq.run("products", "prune", "--older-than", "0s", "--keep-latest", "--json")
    assert json.loads(result.stdout) == {"removed": [first["product_id"]]}
    assert len(latest_ids(latest)) == third["rows"]
    result = stdq.run("products", "prune", "--older-than", "30d", "--json")
    assert json.loads(result.stdout) == {"removed": []}
    assert stdq.run("products", "prune", "--older-than", "soon").returncode == 2
