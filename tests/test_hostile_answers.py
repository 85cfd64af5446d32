"""Hostile answers, one classification for every service and step (issue 9, items 4 and 5).

An HTML page or an empty body where the service's own format was expected is a
temporary failure (exit 75) whose message quotes the page's first line; "no data"
(exit 5) only when the service says so in its own format; a body shorter than its
Content-Length is retried and, the tries spent, exit 75 -- never stored as the answer.
Each case runs end to end against the emulators on 127.0.0.1 (their fault hooks).
"""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import assert_clean_error
from stdq import Stdq
from stdq.testing import sky
from stdq.testing.fakeserver import Response

SN = sky.find("SN 2023ixf")
POS = ("--ra", "210.910674", "--dec", "54.311650")
HTML_FIRST_LINE = "'<!DOCTYPE html>'"  # the first line of the FakeServer's HTML error page
HTML_TITLE = "(title '503 Service Unavailable')"


@pytest.fixture
def fast_atlas(stdq):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = 0.05
    emulator.run_seconds = 0.05
    return emulator


def stored_files(stdq) -> list[str]:
    """Every product file (raw answers, photometry) under the data directory."""
    products = stdq.data_dir / "products"
    return sorted(str(p.relative_to(products)) for p in products.rglob("*") if p.is_file()) if (
        products.exists()) else []


def expected_words(kind: str, step: str, expected: str) -> str:
    if kind == "html":
        return f"{step} answered an HTML page where {expected} was expected: {HTML_FIRST_LINE} {HTML_TITLE}"
    return f"{step} answered an empty body where {expected} was expected"


# (service, step as the message names it, what was expected, fault path, method, command)
STEPS = [
    ("panstarrs", "the cone search of the DR2 mean table", "CSV", r"/dr2/mean\.csv", "GET",
     ("query", "panstarrs", *POS)),
    ("panstarrs", "the detection query of object 173142109106893051", "CSV", r"/dr2/detection\.csv", "GET",
     ("query", "panstarrs", *POS)),
    ("ztf", "the IRSA light-curve query", "CSV", "nph_light_curves", "GET", ("query", "ztf", *POS)),
    ("atlas", "the task submission", "JSON", r"/queue/$", "POST", ("query", "atlas", *POS, "--sync")),
    ("atlas", "the poll of ATLAS task 1001", "JSON", r"/queue/1001/$", "GET",
     ("query", "atlas", *POS, "--sync")),
    ("atlas", "the result download of ATLAS task 1001", "an ATLAS result file", r"/static/results/",
     "GET", ("query", "atlas", *POS, "--sync")),
]


@pytest.mark.parametrize("kind", ["html", "empty"])
@pytest.mark.parametrize(
    "service, step, expected, path, method, command", STEPS,
    ids=[f"{s[0]}:{s[1].split(' of ')[0].removeprefix('the ')}" for s in STEPS],
)
def test_a_page_or_nothing_instead_of_the_format_is_temporary_quoting_it(
    stdq, fast_atlas, recorded_waits, kind, service, step, expected, path, method, command
):
    stdq.server.add_fault(kind, path, method=method, times=20)
    result = stdq.run(*command)
    last = assert_clean_error(result, 75)
    assert last.startswith(f"error: {service}: ")
    assert expected_words(kind, step, expected) in last, last
    assert not [f for f in stored_files(stdq) if "/raw/" in f or f.endswith("photometry.csv")]
    assert not [t for t in fast_atlas.tasks.values() if t.deleted]  # a remote task is kept for later
    if service == "atlas" and method == "POST":  # never sent twice: looked for in the task list
        assert len(stdq.server.log_of(emulator="atlas", method="POST")) == 1
        assert stdq.server.log_of(emulator="atlas", method="GET", path=r"/queue/\?")


@pytest.mark.parametrize("kind", ["html", "empty"])
def test_atlas_task_list_page_or_nothing_is_temporary_and_nothing_is_sent(stdq, fast_atlas, kind):
    """The list step: a job whose submission's answer was lost looks for its task first."""
    stdq.server.add_fault(kind, r"/queue/\?", method="GET", times=5)
    with Stdq(stdq.config_path, stdq.data_dir) as s:
        job = s.submit("atlas", ra=SN.ra, dec=SN.dec, runner="inprocess")
        s.queue.save_checkpoint(job.id, {"atlas_submit": {"key": "0123456789ab", "state": "unknown",
                                                           "at": 0}})
        job = s.run(job.id)
    assert job.state == "failed" and job.exit_code == 75
    assert expected_words(kind, "atlas: the task list", "JSON") in job.error
    assert not stdq.server.log_of(emulator="atlas", method="POST")  # never a blind send


@pytest.mark.parametrize("kind", ["html", "empty"])
def test_a_resolver_page_or_nothing_counts_as_that_resolver_down(stdq, kind):
    stdq.server.add_fault(kind, "nph-sesame", times=5)
    stdq.server.add_fault(kind, "Santa-war|mast-resolver|resolver", times=5)
    result = stdq.run("targets", "resolve", "NGC 3642")
    assert_clean_error(result, 75)
    assert expected_words(kind, "sesame: the name lookup", "a Sesame answer") in result.stderr
    assert expected_words(kind, "mast-resolver: the name lookup", "JSON") in result.stderr


def test_no_data_only_in_the_services_own_format(stdq):
    irsa = stdq.server.emulator("irsa")
    header = "oid,expid,hjd,mjd,mag,magerr,catflags,filtercode,ra,dec,chi,sharp,filefracday," \
             "field,ccdid,qid,limitmag,magzp,magzprms,clrcoeff,clrcounc,exptime,airmass,programid\n"
    irsa.handle = lambda request: Response.text(header, 200, "text/csv")
    result = stdq.run("query", "ztf", *POS)
    assert_clean_error(result, 5)  # IRSA's own "nothing": the header line alone
    result = stdq.run("query", "panstarrs", "--ra", "0.5", "--dec", "-89.9")
    assert_clean_error(result, 5)  # MAST's own "nothing": the CSV header and no rows


# -- a body shorter than its Content-Length (item 4) ------------------------------------------------

CUTS = [
    ("panstarrs", r"/dr2/mean\.csv", ("query", "panstarrs", *POS), "mast", "mean-p001.csv"),
    ("panstarrs", r"/dr2/detection\.csv", ("query", "panstarrs", *POS), "mast", "detection-"),
    ("ztf", "nph_light_curves", ("query", "ztf", *POS), "irsa", "lightcurve.csv"),
    ("atlas", r"/static/results/", ("query", "atlas", *POS, "--sync"), "atlas", "job01001.txt"),
]


@pytest.mark.parametrize("service, path, command, emulator, raw", CUTS,
                         ids=[f"{c[0]}:{c[1]}" for c in CUTS])
def test_a_cut_answer_is_retried_and_never_stored(
    stdq, fast_atlas, recorded_waits, service, path, command, emulator, raw
):
    stdq.server.add_fault("truncate", path, method="GET", times=1)
    result = stdq.run("--json", *command)
    assert result.returncode == 0, result.stderr
    tries = stdq.server.log_of(emulator=emulator, path=path)
    assert len(tries) == 2  # the cut one, then the whole one
    (stored,) = [p for p in (stdq.data_dir / "products").rglob("raw/*") if raw in p.name]
    if service == "atlas":  # its result file is gone once the task is deleted: made again here
        task = fast_atlas.tasks[1001]
        whole = fast_atlas.result_file(task.ra, task.dec, task.mjd_min, task.mjd_max,
                                       task.use_reduced).encode()
    else:
        whole = httpx.get(stdq.server.base_url + tries[-1].path).content
    assert stored.read_bytes() == whole  # the whole answer, never the cut one
    info = json.loads(result.stdout)
    assert info["rows"] > 0


@pytest.mark.parametrize("service, path, command, emulator, raw", CUTS,
                         ids=[f"{c[0]}:{c[1]}" for c in CUTS])
def test_an_answer_cut_on_every_try_is_temporary(
    stdq, fast_atlas, recorded_waits, service, path, command, emulator, raw
):
    stdq.server.add_fault("truncate", path, method="GET", times=20)
    result = stdq.run(*command)
    last = assert_clean_error(result, 75)
    assert f"{service}: an answer cut short (" in last and "gave up after 3 tries" in last, last
    assert not [f for f in stored_files(stdq) if "/raw/" in f or f.endswith("photometry.csv")]
    assert not [t for t in fast_atlas.tasks.values() if t.deleted]


def test_a_cut_answer_to_the_atlas_submission_is_looked_for_not_sent_again(stdq, fast_atlas):
    stdq.server.add_fault("truncate", r"/queue/$", method="POST")  # the task is made, its answer cut
    result = stdq.run("--json", "query", "atlas", *POS, "--sync")
    assert result.returncode == 0, result.stderr
    assert len(fast_atlas.tasks) == 1 and len(stdq.server.log_of(emulator="atlas", method="POST")) == 1
    events = json.loads(stdq.run("--json", "jobs", "show", str(json.loads(result.stdout)["job_id"])).stdout)
    assert any("an answer cut short" in e["message"] for e in events["events"])


@pytest.mark.parametrize("kind", ["html", "empty"])
def test_atlas_login_answered_by_a_page_or_nothing_is_temporary_and_stores_nothing(stdq, kind):
    before = stdq.config_path.read_text()
    stdq.server.add_fault(kind, "api-token-auth", method="POST")
    result = stdq.run("config", "atlas-login", "--username", "stdq-test", "--password-stdin",
                      input="correct horse battery staple\n")
    last = assert_clean_error(result, 75)
    assert expected_words(kind, "atlas: the login", "JSON") in last, last
    assert "correct horse" not in result.stdout + result.stderr
    assert stdq.config_path.read_text() == before
