"""ZTF forced photometry (ZFPS): the service against the emulator, in process (--sync), and its processor.

Expected numbers are computed here from the raw light-curve file and the rules
of Masci et al. (photometry.md 3.2): f_uJy = forcediffimflux * 10**(-0.4 (zpdiff
- 23.9)), detected when snr >= 3, else a 5-sigma limit 23.9 - 2.5 log10(5 err),
mjd = jd - 2400000.5 + exptime/2.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import statistics
from pathlib import Path

import pytest

from conftest import assert_clean_error
from stdq.config import load_settings
from stdq.jobs.runner import build_service
from stdq.services.base import QueryContext
from stdq.store import DataProduct, Store
from stdq.testing import zfps
from stdq.testing.fakeserver import settings_toml

SN = ("SN 2023ixf", "--ra", "210.910674", "--dec", "54.311650")
EMAIL, USERPASS = zfps.TEST_EMAIL, zfps.TEST_USERPASS
CREDS_ENV = {"STDQ_ZTF_FPS_EMAIL": EMAIL, "STDQ_ZTF_FPS_USERPASS": USERPASS}
SECRET_FORMS = (EMAIL, USERPASS, EMAIL.replace("@", "%40"))


@pytest.fixture(autouse=True)
def quick_requests(request):
    """Emulated requests end 0.1 s after their submission (instead of 1 s): fewer polls to wait.
    Only the hand-checked history (no recent nights: test_emulator_dates.py covers those)."""
    if "fake_server" in request.fixturenames:
        request.getfixturevalue("fake_server").emulator("zfps").delay = 0.1
        request.getfixturevalue("fake_server").emulator("zfps").recent_nights = 0


def settings_without_credentials(server, extra: str = "") -> str:
    """The emulators' settings with the test account's lines taken out."""
    lines = settings_toml(server, extra).splitlines()
    return "\n".join(line for line in lines if not line.startswith(("email =", "userpass ="))) + "\n"


def parse_lc(text: str) -> list[dict[str, str]]:
    """A ZFPS light-curve file's rows (written here, independently of stdq): the column
    line is " sindex, field, ..." (batch files) or " index, field, ..." (single requests),
    not commented; every other line that does not start with "#" is a row."""
    columns: list[str] = []
    rows = []
    for line in text.splitlines():
        if line.split(",")[0].strip() in ("index", "sindex"):
            columns = [c.strip() for c in line.split(",")]
        elif line.strip() and not line.startswith("#"):
            rows.append(dict(zip(columns, line.split(), strict=True)))
    assert columns, "no column line"
    return rows


def product_dir(stdq) -> Path:
    folders = [p.parent for p in stdq.data_dir.rglob("product.json")]
    assert len(folders) == 1, folders
    return folders[0]


def read_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def factor(zpdiff: float) -> float:
    return 10 ** (-0.4 * (zpdiff - 23.9))


def zfps_log(stdq, path: str | None = None):
    return stdq.server.log_of(emulator="zfps", path=path)


# -- end to end, in process ------------------------------------------------------------------


def test_sync_query_values_follow_the_zfps_rules(stdq):
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    assert result.returncode == 0, result.stderr
    emulator = stdq.server.emulator("zfps")
    assert len(emulator.submissions) == 1
    assert len(zfps_log(stdq, "batchfp.py/submit")) == 1
    # the public shared Basic credential on every request to ZFPS
    assert {r.headers.get("authorization") for r in zfps_log(stdq)} == {"Basic " + base64.b64encode(b"ztffps:dontgocrazy!").decode()}
    folder = product_dir(stdq)
    names = sorted(p.name for p in (folder / "raw").iterdir())
    # a batch request's files (the batch service's name: req id in 10 digits)
    assert names == ["batchfp_req0000015270_lc.txt", "batchfp_req0000015270_log.txt"]
    raw_text = (folder / "raw" / names[0]).read_text()
    raw = {r["pid"]: r for r in parse_lc(raw_text)}
    rows = read_rows(folder / "photometry.csv")
    meta = json.loads((folder / "product.json").read_text())
    # left out: the two -99999 fluxes (a batch file's "no measurement"), counted by their
    # procstatus 61 and "57,61"; kept and flagged (bit 1): procstatus 57 and "56,57"
    assert meta["left_out"] == {
        "rows without a usable flux, procstatus 61 (61 cutout off the image)": 1,
        'rows without a usable flux, procstatus 57,61 (57 no reference source within 5"; 61 cutout'
        ' off the image)': 1,
    }
    assert sum(1 for r in raw.values() if r["forcediffimflux"] == "-99999.000000") == 2
    assert len(rows) == len(raw) - 2
    # a worked example: the first g baseline epoch, 38 DN +- 10 DN at zpdiff 26.30
    first = next(r for r in rows if r["source_row_id"] == "2300081018122")
    f = 38 * 10 ** (-0.4 * (26.30 - 23.9))  # 4.16662 uJy
    assert float(first["flux_ujy"]) == pytest.approx(f, rel=1e-9)
    assert float(first["flux_ujy"]) == pytest.approx(4.16662, abs=1e-5)
    assert float(first["flux_err_ujy"]) == pytest.approx(10 * 10 ** (-0.96), rel=1e-9)
    assert first["detected"] == "True"  # snr 3.8 >= 3
    assert float(first["magnitude"]) == pytest.approx(23.9 - 2.5 * math.log10(f), abs=1e-9)
    assert float(first["mjd"]) == pytest.approx(2459810.6812 - 2400000.5 + 15 / 86400, abs=1e-9)
    # a non-detection: 29 DN +- 10 DN (snr 2.9): a 5-sigma limit from the error
    low = next(r for r in rows if r["source_row_id"] == "2300096618122")
    assert low["detected"] == "False" and low["magnitude"] == ""
    assert float(low["limit"]) == pytest.approx(23.9 - 2.5 * math.log10(5 * 10 * factor(26.30)), abs=1e-9)
    assert float(low["limit_nsigma"]) == 5
    for row in rows:
        src = raw[row["source_row_id"]]
        k = factor(float(src["zpdiff"]))
        flux, err = float(src["forcediffimflux"]) * k, float(src["forcediffimfluxunc"]) * k
        assert float(row["flux_ujy"]) == pytest.approx(flux, rel=1e-9)
        assert float(row["flux_err_ujy"]) == pytest.approx(err, rel=1e-9)
        assert float(row["mjd"]) == pytest.approx(float(src["jd"]) - 2400000.5 + 15 / 86400, abs=1e-9)
        detected = flux / err >= 3
        assert row["detected"] == str(detected)
        if detected:
            assert float(row["magnitude"]) == pytest.approx(23.9 - 2.5 * math.log10(flux), abs=1e-9)
            assert row["limit"] == ""
        else:
            assert float(row["limit"]) == pytest.approx(23.9 - 2.5 * math.log10(5 * err), abs=1e-9)
        assert float(row["image_depth"]) == float(src["diffmaglim"])
        assert row["flux_kind"] == "difference" and row["err_scale"] == "1.0"
        fid = {"ZTF_g": 1, "ZTF_r": 2, "ZTF_i": 3}[src["filter"]]
        fcqfid = int(src["field"]) * 10000 + int(src["ccdid"]) * 100 + int(src["qid"]) * 10 + fid
        assert row["object_id"] == str(fcqfid) == row["ztf_fcqfid"]
        assert row["band"] == {"ZTF_g": "ztfg", "ZTF_r": "ztfr"}[src["filter"]]
        assert row["ztf_procstatus"] == src["procstatus"]
        warns = any(int(code) != 0 for code in src["procstatus"].split(","))  # every non-zero code
        flags = ((1 if int(src["infobitssci"]) or warns else 0)
                 | (4 if float(src["scisigpix"]) > 25 else 0)
                 | (32 if float(src["sciinpseeing"]) > 5 else 0))
        assert int(row["quality_flag"]) == flags
        assert float(row["ra"]) == 210.910674 and float(row["dec"]) == 54.31165
    # bit 1: infobitssci 33554432, procstatus 57, "56,57"; 4: scisigpix 31; 32: seeing 5.6 px
    assert sorted(int(r["quality_flag"]) for r in rows if r["quality_flag"] != "0") == [1, 1, 1, 4, 32]
    assert {r["ztf_procstatus"] for r in rows} == {"0", "57", "56,57"}
    assert {r["object_id"] for r in rows} == {"7350521", "7350522", "17680912"}
    # the request: position and JD range (the whole survey up to now, as no time range was given)
    (form,) = emulator.submissions
    assert json.loads(form["ra"]) == [210.910674] and json.loads(form["dec"]) == [54.31165]
    assert float(form["jdstart"]) == 2458194.5
    assert meta["service_notes"]["zfps"]["request_id"] == "15270"


def test_time_range_is_sent_as_jd(stdq):
    result = stdq.run("query", "ztf-fps", *SN, "--sync", "--mjd-min", "60000", "--date-max", "2023-06-01")
    assert result.returncode == 0, result.stderr
    (form,) = stdq.server.emulator("zfps").submissions
    assert float(form["jdstart"]) == 60000 + 2400000.5
    assert float(form["jdend"]) == pytest.approx(60096 + 2400000.5)  # 2023-06-01 = MJD 60096
    rows = read_rows(product_dir(stdq) / "photometry.csv")
    assert min(float(r["ztf_jd"]) for r in rows) >= 2460000.5
    assert max(float(r["ztf_jd"]) for r in rows) <= 2460096.5


def test_baseline_auto_end_to_end(stdq):
    result = stdq.run("query", "ztf-fps", *SN, "--sync", "--baseline", "auto")
    assert result.returncode == 0, result.stderr
    folder = product_dir(stdq)
    meta = json.loads((folder / "product.json").read_text())
    raw = {r["pid"]: r for r in parse_lc(next((folder / "raw").glob("*_lc.txt")).read_text())}
    baseline = meta["service_notes"]["baseline"]
    # peak: the highest-SNR epoch is the brightest g epoch, jd 2460093.7088 (start of exposure)
    assert baseline["peak_mjd"] == pytest.approx(60093.2088 + 15 / 86400, abs=1e-7)
    per = baseline["fcqfids"]
    assert baseline["unit"] == "uJy"
    # the flagged g epoch (scisigpix 31) is not a baseline epoch
    assert "2300089918122" not in per["7350521"]["epochs"]
    assert per["17680912"]["applied"] is False and per["17680912"]["n_epochs"] == 6
    assert "fewer than baseline_min_epochs (10)" in per["17680912"]["reason"]
    # per fcqfid, in uJy (zpdiff varies inside one): C = the median of the baseline epochs'
    # fluxes, each converted with its own zpdiff; chi2_nu = sum(((f - C) / err)^2) / (n - 1)
    offsets = {"17680912": 0.0}
    for fcqfid in ("7350521", "7350522"):
        pids = per[fcqfid]["epochs"]
        assert per[fcqfid]["n_epochs"] == len(pids) == 14 and per[fcqfid]["applied"] is True
        fluxes = [float(raw[p]["forcediffimflux"]) * factor(float(raw[p]["zpdiff"])) for p in pids]
        errors = [float(raw[p]["forcediffimfluxunc"]) * factor(float(raw[p]["zpdiff"])) for p in pids]
        c = statistics.median(fluxes)
        assert per[fcqfid]["offset_ujy"] == pytest.approx(c, rel=1e-12)
        chi2 = sum(((f - c) / e) ** 2 for f, e in zip(fluxes, errors, strict=True)) / (len(pids) - 1)
        assert per[fcqfid]["chi2_nu"] == pytest.approx(chi2, rel=1e-9)
        # every baseline epoch is more than 100 days before the peak
        assert all(float(raw[p]["jd"]) - 2400000.5 < baseline["peak_mjd"] - 100 for p in pids)
        offsets[fcqfid] = c
    # the offsets are those of the emulator's sky: +35 DN (g) and -20 DN (r), about
    assert offsets["7350521"] == pytest.approx(35.5 * factor(26.31), rel=0.02)
    assert offsets["7350522"] == pytest.approx(-19.5 * factor(26.20), rel=0.02)
    rows = read_rows(folder / "photometry.csv")
    for row in rows:
        src = raw[row["source_row_id"]]
        k = factor(float(src["zpdiff"]))
        c = offsets[row["object_id"]]
        assert float(row["flux_ujy"]) == pytest.approx(float(src["forcediffimflux"]) * k - c, rel=1e-9, abs=1e-9)
        assert float(row["flux_err_ujy"]) == pytest.approx(float(src["forcediffimfluxunc"]) * k, rel=1e-9)
        assert float(row["err_scale"]) == 1.0  # error rescaling is off by default
    # after the correction the corrected baseline of each corrected fcqfid has median 0
    for fcqfid, pids in ((k, v["epochs"]) for k, v in per.items() if v["applied"]):
        corrected = [float(r["flux_ujy"]) for r in rows if r["source_row_id"] in pids]
        assert statistics.median(corrected) == pytest.approx(0.0, abs=1e-9), fcqfid


def test_baseline_options_are_validated(stdq):
    result = stdq.run("query", "ztf-fps", *SN, "--sync", "--baseline", "auto", "--baseline-before", "60000")
    assert_clean_error(result, 2)
    assert "not both" in result.stderr
    result = stdq.run("query", "ztf-fps", *SN, "--sync", "--baseline", "sometimes")
    assert_clean_error(result, 2)
    assert zfps_log(stdq) == []


# -- credentials ------------------------------------------------------------------------------


def test_missing_credentials_exit_3_before_any_request(stdq):
    stdq.config_path.write_text(settings_without_credentials(stdq.server))
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    last = assert_clean_error(result, 3)
    assert "STDQ_ZTF_FPS_EMAIL" in result.stderr, last
    assert zfps_log(stdq) == []


def test_wrong_credentials_exit_3_and_are_not_echoed(stdq):
    stdq.config_path.write_text(settings_without_credentials(stdq.server))
    env = {"STDQ_ZTF_FPS_EMAIL": "someone@example.org", "STDQ_ZTF_FPS_USERPASS": "not-the-pass-9"}
    result = stdq.run("query", "ztf-fps", *SN, "--sync", env=env)
    last = assert_clean_error(result, 3)
    assert "refused the credentials" in result.stderr, last
    for text in (result.stdout, result.stderr):
        assert "someone@example.org" not in text and "not-the-pass-9" not in text
    assert stdq.server.emulator("zfps").submissions == []


def test_credentials_never_reach_outputs_logs_or_files(stdq):
    """Env credentials, a verbose run (httpx logs URLs) and a run that fails after submitting."""
    stdq.config_path.write_text(settings_without_credentials(stdq.server))
    outputs = []
    result = stdq.run("-v", "query", "ztf-fps", *SN, "--sync", "--baseline", "auto", env=CREDS_ENV)
    assert result.returncode == 0, result.stderr
    outputs += [result.stdout, result.stderr]
    # verbose: httpx logs every request URL -- with the credentials masked
    assert "getBatchForcedPhotometryRequests.cgi?email=***&userpass=***" in result.stderr
    emulator = stdq.server.emulator("zfps")
    emulator.fail_next = 64
    result = stdq.run("--json", "query", "ztf-fps", "M31", "--ra", "10.684708", "--dec", "41.26875",
                      "--sync", env=CREDS_ENV)
    assert_clean_error(result, 1)
    outputs += [result.stdout, result.stderr]
    for args in (("--json", "jobs", "show", "1"), ("--json", "jobs", "show", "2"), ("jobs", "logs", "1"),
                 ("--json", "products", "show", "1"), ("config", "show")):
        shown = stdq.run(*args, env=CREDS_ENV)
        outputs += [shown.stdout, shown.stderr]
    for text in outputs:
        for secret in SECRET_FORMS:
            assert secret not in text
    # the raw log file named the account's e-mail: masked, and said so
    meta = json.loads((stdq.data_dir / "products" / "SN_2023ixf" / "ztf-fps" / "1" / "product.json").read_text())
    assert meta["service_notes"]["redacted"] == ["batchfp_req0000015270_log.txt: a credential of the"
                                                 " account was replaced by ***"]
    assert [r["redacted"] for r in meta["raw_files"]] == [False, True]  # the log named the e-mail
    files = [p for p in stdq.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "stdq.sqlite3" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in SECRET_FORMS:
            assert secret.encode() not in data, path


# -- remote failures ------------------------------------------------------------------------


def test_request_ending_with_an_exit_code_fails(stdq):
    stdq.server.emulator("zfps").fail_next = 64
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    last = assert_clean_error(result, 1)
    assert "exit code 64" in last


def test_empty_field_is_no_data(stdq):
    # no epoch at this position: the request ends with exit code 63 (no records), no file
    result = stdq.run("query", "ztf-fps", "Empty Field", "--ra", "150", "--dec", "-30", "--sync")
    last = assert_clean_error(result, 5)
    assert "exit code 63 (63 no records)" in last


def test_full_remote_queue_exits_75(stdq):
    stdq.server.emulator("zfps").queue_limit = 0
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    last = assert_clean_error(result, 75)
    assert "exceed the limit" in result.stderr, last


def test_listing_server_errors_exit_75(stdq):
    stdq.server.add_fault("503", path="getBatchForcedPhotometryRequests", times=10)
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    last = assert_clean_error(result, 75)
    assert "HTTP 503" in last
    for secret in SECRET_FORMS:
        assert secret not in result.stderr  # the URL in the message is redacted


def test_maintenance_page_on_submission_exits_75_and_retry_does_not_submit_twice(stdq):
    stdq.server.add_fault("html", path="batchfp.py/submit")
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    last = assert_clean_error(result, 75)
    assert "a page saying ZFPS is unavailable: '<!DOCTYPE html>' (title '503 Service Unavailable')" in last
    emulator = stdq.server.emulator("zfps")
    assert emulator.submissions == []
    # the job kept its checkpoint ("submitting"): a retry looks in the listing, then submits once
    retry = stdq.run("jobs", "retry", "1")
    assert retry.returncode == 0, retry.stderr
    assert len(emulator.submissions) == 1
    assert len(zfps_log(stdq, "batchfp.py/submit")) == 2  # the refused one and the retried one


def test_truncated_download_is_retried_and_an_empty_one_is_temporary(stdq):
    stdq.server.add_fault("truncate", path="_lc.txt")
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    assert result.returncode == 0, result.stderr
    folder = product_dir(stdq)
    raw = next((folder / "raw").glob("*_lc.txt"))
    meta = json.loads((folder / "product.json").read_text())
    entry = next(r for r in meta["raw_files"] if r["name"] == raw.name)
    assert entry["bytes"] == raw.stat().st_size == len(zfps.result_file(stdq.server.emulator("zfps").fp_requests[0]))
    assert len(zfps_log(stdq, "_lc.txt")) == 2
    stdq.server.add_fault("empty", path="_lc.txt", times=5)
    result = stdq.run("query", "ztf-fps", *SN, "--sync", "--force")
    last = assert_clean_error(result, 75)
    assert "light-curve download of ZFPS request 15271 answered an empty body" in last


# -- the status listing's states, the exit-code table, malformed answers ------------------------


def job_events(stdq, job_id: int = 1) -> list[tuple[str, str]]:
    from stdq import Stdq

    with Stdq(config=stdq.config_path, data_dir=stdq.data_dir) as sdq:
        return [(e.kind, e.message) for e in sdq.events(job_id)]


def test_listing_zero_records_then_busy_then_listed(stdq, recorded_waits):
    emulator = stdq.server.emulator("zfps")
    emulator.busy_next = 2  # the first two listing queries: "Error: database is busy; ..."
    emulator.listing_lag = 2  # the new request is listed only from the 3rd query after it
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    assert result.returncode == 0, result.stderr
    assert len(emulator.submissions) == 1
    # busy twice before the first read: backed off 60 s, then 60 * 1.5 s ("a minute later")
    assert recorded_waits[:2] == [60.0, 90.0]
    # then: read (Zero records: nothing known), submit, two polls "Zero records returned"
    # (not listed yet: waits of poll_interval 0.2, growing by half), then listed
    assert recorded_waits[2:4] == pytest.approx([0.2, 0.3])
    events = job_events(stdq)
    assert [m for k, m in events if k == "busy"] == [
        "the ZFPS status listing: database is busy; retry 1/4 in 60 s",
        "the ZFPS status listing: database is busy; retry 2/4 in 90 s",
    ]
    assert emulator.status_queries >= 2 + 1 + 3
    folder = product_dir(stdq)
    assert json.loads((folder / "product.json").read_text())["service_notes"]["zfps"]["request_id"] == "15270"


def test_a_listing_that_stays_busy_is_temporary(stdq, recorded_waits):
    emulator = stdq.server.emulator("zfps")
    emulator.busy_next = 100
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    last = assert_clean_error(result, 75)
    assert "'Error: database is busy; try again a minute later.'" in last
    assert recorded_waits == [60.0, 90.0, 135.0, 202.5]  # BUSY_TRIES 5: four waits, then exit 75
    assert emulator.submissions == [] and emulator.status_queries == 5


@pytest.mark.parametrize(("code", "exit_code", "words"), [
    (63, 5, "has no data: exit code 63 (63 no records)"),
    (65, 5, "has no data: exit code 65 (65 end JD before survey start)"),
    (64, 1, "failed: exit code 64 (64 catastrophic)"),
    (255, 1, "failed: exit code 255 (255 database error)"),
])
def test_request_exit_codes_end_the_job(stdq, recorded_waits, code, exit_code, words):
    stdq.server.emulator("zfps").fail_next = code
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    last = assert_clean_error(result, exit_code)
    assert f"ztf-fps: ZFPS request 15270 {words}" in last
    assert zfps_log(stdq, "_lc.txt") == []  # nothing to download


@pytest.mark.parametrize("code", [56, 57, 61, 62])
def test_warning_exit_codes_still_give_the_light_curve(stdq, recorded_waits, code):
    stdq.server.emulator("zfps").fail_next = code
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    assert result.returncode == 0, result.stderr
    meta = json.loads((product_dir(stdq) / "product.json").read_text())
    assert meta["service_notes"]["zfps"]["exitcode"] == str(code)
    assert len(read_rows(product_dir(stdq) / "photometry.csv")) > 50


def test_end_jd_before_the_survey_start_is_no_data(stdq, recorded_waits):
    # --mjd-max 58100 = JD 2458100.5, before ZTF's survey start JD 2458194.5: exit code 65
    result = stdq.run("query", "ztf-fps", *SN, "--sync", "--mjd-min", "58000", "--mjd-max", "58100")
    last = assert_clean_error(result, 5)
    assert "exit code 65 (65 end JD before survey start)" in last


@pytest.mark.parametrize(("path", "fault", "words"), [
    ("batchfp.py/submit", "html",
     "the submission answered a page saying ZFPS is unavailable: '<!DOCTYPE html>' (title '503 Service"
     " Unavailable')"),
    ("batchfp.py/submit", "empty",
     "the submission answered an empty body where an HTML page was expected; the ZFPS request did"
     " not appear within 0.3 s"),
    ("getBatchForcedPhotometryRequests", "html",
     "the status query answered a page saying ZFPS is unavailable: '<!DOCTYPE html>' (title '503"
     " Service Unavailable')"),
    ("getBatchForcedPhotometryRequests", "empty",
     "the status listing answered an empty body where an HTML table of requests was expected"),
    ("_lc.txt", "html",
     "the light-curve download of ZFPS request 15270 answered an HTML page where a ZFPS light-curve"
     " file was expected: '<!DOCTYPE html>' (title '503 Service Unavailable')"),
    ("_lc.txt", "empty",
     "the light-curve download of ZFPS request 15270 answered an empty body"),
])
def test_an_html_page_or_empty_body_at_any_step_is_temporary(stdq, recorded_waits, path, fault, words):
    # polls every 0.05 s: a lost submission answer is looked for during 6 polls = 0.3 s
    stdq.config_path.write_text(stdq.config_path.read_text().replace("poll_interval = 0.2",
                                                                      "poll_interval = 0.05"))
    stdq.server.add_fault(fault, path=path)
    result = stdq.run("query", "ztf-fps", *SN, "--sync")
    last = assert_clean_error(result, 75)
    assert f"ztf-fps: {words}" in last
    assert not list(stdq.data_dir.rglob("photometry.csv"))
    # the job ended as a temporary failure: a retry resumes it and gets the light curve
    retry = stdq.run("jobs", "retry", "1")
    assert retry.returncode == 0, retry.stderr
    assert len(stdq.server.emulator("zfps").fp_requests) == 1  # never a second request


@pytest.mark.parametrize(("body", "status", "expected"), [
    # the real shape (SkyPortal reads it by column name): header cells, empty cells while pending
    ("<table><tr><th>reqId</th><th>ra</th><th>exitcode</th><th>lightcurve</th></tr>"
     "<tr><td>7</td><td>1.5</td><td></td><td></td></tr></table>", 200,
     [{"reqId": "7", "ra": "1.5", "exitcode": "", "lightcurve": ""}]),
    # a header row of <td> cells (pandas.read_html reads it so too)
    ("<html><table><tr><td>reqId</td><td>exitcode</td></tr><tr><td>8</td><td>0</td></tr></table>", 200,
     [{"reqId": "8", "exitcode": "0"}]),
    ("Zero records returned\n", 200, []),
    ("Zero records returned\n", 400, []),
])
def test_listing_pages_read_by_column_name(tmp_path, fake_server, body, status, expected):
    import httpx

    from stdq import http

    service, ctx = service_and_context(tmp_path, fake_server)
    ctx.client_factory = lambda: http.make_client(
        "ztf-fps", ctx.settings.http, sleep=ctx.sleep,
        transport=httpx.MockTransport(lambda request: httpx.Response(
            status, text=body, headers={"Content-Type": "text/html"})))
    assert service.listing(ctx, {"email": EMAIL, "userpass": USERPASS}) == expected
    assert ctx.sleeps == []
    ctx.close()
    if expected and not expected[0]["exitcode"]:
        assert not service.ended(expected[0])  # pending: no exit code, no light curve yet


def test_a_listing_page_without_its_table_is_temporary_quoting_it(tmp_path, fake_server):
    import httpx

    from stdq import http
    from stdq.errors import TemporaryFailure

    page = "<html><head><title>IRSA</title></head><body><p>Welcome to IRSA</p></body></html>\n"
    service, ctx = service_and_context(tmp_path, fake_server)
    ctx.client_factory = lambda: http.make_client(
        "ztf-fps", ctx.settings.http, sleep=ctx.sleep,
        transport=httpx.MockTransport(lambda request: httpx.Response(
            200, text=page, headers={"Content-Type": "text/html"})))
    with pytest.raises(TemporaryFailure) as caught:
        service.listing(ctx, {"email": EMAIL, "userpass": USERPASS})
    ctx.close()
    assert caught.value.exit_code == 75
    assert caught.value.message == (
        "ztf-fps: the status listing answered a page without its table of requests:"
        " '<html><head><title>IRSA</title></head><body><p>Welcome to IRSA</p></body></html>'"
        " (title 'IRSA'); try again later")


# -- resuming a request: the service in process ------------------------------------------------


class Recorder(QueryContext):
    """A context whose sleeps are recorded and skipped; AFTER(n) runs before the n-th sleep."""

    def __init__(self, *args, after=None, **kw):
        super().__init__(*args, **kw)
        self.sleeps: list[float] = []
        self.after = after or {}
        self.events: list[tuple[str, str]] = []
        self.on_event = lambda kind, msg: self.events.append((kind, msg))

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        hook = self.after.get(len(self.sleeps))
        if hook:
            hook()


def service_and_context(tmp_path, server, checkpoint=None, extra="", after=None):
    config = tmp_path / "config.toml"
    config.write_text(settings_toml(server, extra))
    settings = load_settings(config, tmp_path / "data")
    service, service_config = build_service(settings, "ztf-fps")
    ctx = Recorder(
        store=Store(settings.data_dir), settings=settings, service_config=service_config,
        data_product_type=service.data_product_type, checkpoint=dict(checkpoint or {}), after=after,
    )
    ctx.client_factory = lambda: service.make_client(ctx)
    return service, ctx


def submit_directly(server, ra=210.910674, dec=54.31165, jdstart=2458194.5, jdend=2460300.5):
    import httpx

    response = httpx.post(
        server.url("zfps") + "/cgi-bin/batchfp.py/submit", auth=(zfps.SHARED_USER, zfps.SHARED_PASSWORD),
        data={"ra": json.dumps([ra]), "dec": json.dumps([dec]), "jdstart": str(jdstart),
              "jdend": str(jdend), "email": EMAIL, "userpass": USERPASS},
    )
    assert response.status_code == 200 and "Submitted" in response.text


def target():
    from stdq.targets import Target

    return Target(ra=210.910674, dec=54.31165, name="SN 2023ixf")


REQUEST = {"ra": 210.910674, "dec": 54.31165, "jdstart": 2458194.5, "jdend": 2460300.5}


def test_resume_while_submitting_finds_the_request_instead_of_submitting(tmp_path, fake_server):
    submit_directly(fake_server)  # the killed run's submission reached ZFPS
    emulator = fake_server.emulator("zfps")
    checkpoint = {"zfps_state": "submitting", "zfps_request": REQUEST, "zfps_known": [],
                  "zfps_submit": {"key": "k1", "state": "sending", "at": 0}}
    service, ctx = service_and_context(tmp_path, fake_server, checkpoint)
    (product,) = service.query_service(target(), {"baseline": "none"}, ctx)
    ctx.close()
    assert len(emulator.submissions) == 1
    assert ctx.checkpoint["zfps_state"] == "downloaded" and ctx.checkpoint["zfps_reqid"] == "15270"
    assert any("not submitting again" in msg for _, msg in ctx.events)
    assert product.raw("batchfp_req0000015270_lc.txt").bytes > 0


def test_resume_while_submitting_submits_when_nothing_new_is_listed(tmp_path, fake_server):
    submit_directly(fake_server)  # an older identical request, listed before the killed run submitted
    emulator = fake_server.emulator("zfps")
    checkpoint = {"zfps_state": "submitting", "zfps_request": REQUEST, "zfps_known": ["15270"],
                  "zfps_submit": {"key": "k1", "state": "sending", "at": 0}}
    service, ctx = service_and_context(tmp_path, fake_server, checkpoint)
    service.query_service(target(), {"baseline": "none"}, ctx)
    ctx.close()
    assert len(emulator.submissions) == 2
    assert ctx.checkpoint["zfps_reqid"] == "15271"  # the new request, not the older one


def test_resume_after_submitting_only_polls(tmp_path, fake_server):
    submit_directly(fake_server)
    emulator = fake_server.emulator("zfps")
    checkpoint = {"zfps_state": "submitted", "zfps_request": REQUEST, "zfps_known": [],
                  "zfps_submitted_at": 0}
    service, ctx = service_and_context(tmp_path, fake_server, checkpoint)
    service.query_service(target(), {"baseline": "none"}, ctx)
    ctx.close()
    assert len(emulator.submissions) == 1
    assert len(fake_server.log_of(emulator="zfps", path="batchfp.py/submit")) == 1
    assert ctx.checkpoint["zfps_reqid"] == "15270"


def test_poll_interval_grows_to_the_maximum(tmp_path, fake_server):
    emulator = fake_server.emulator("zfps")
    emulator.delay = math.inf
    extra_lines = settings_toml(fake_server).replace("poll_interval = 0.2", "poll_interval = 2.0").replace(
        "max_poll_interval = 1.0", "max_poll_interval = 5.0")
    config = tmp_path / "config.toml"
    config.write_text(extra_lines)
    settings = load_settings(config, tmp_path / "data")
    service, service_config = build_service(settings, "ztf-fps")
    ctx = Recorder(store=Store(settings.data_dir), settings=settings, service_config=service_config,
                   data_product_type=service.data_product_type, after={6: emulator.finish_now})
    ctx.client_factory = lambda: service.make_client(ctx)
    service.query_service(target(), {"baseline": "none"}, ctx)
    ctx.close()
    assert ctx.sleeps == pytest.approx([2.0, 3.0, 4.5, 5.0, 5.0, 5.0])
    assert emulator.status_queries == 1 + 7  # the listing before submitting, then 7 polls
    assert len(emulator.submissions) == 1


# -- the processor on constructed light curves ---------------------------------------------------

COLUMN_LINE = ("# index, field, ccdid, qid, filter, pid, exptime, diffmaglim, zpdiff, jd, "
               "forcediffimflux, forcediffimfluxunc, infobitssci, scisigpix, sciinpseeing, procstatus")
DEVIATIONS = (-3.0, 2.0, 0.0, 5.0, -1.0, 4.0, -2.0, 1.0, 3.0, -4.0, 2.0, 0.0)  # sorted median 0.5


def constructed_file() -> bytes:
    """Three fcqfids of field 500, ccd 5, q 2 with known baseline offsets, zpdiff 26.0 everywhere.

    g (5000521): 12 baseline epochs 40 + d (unc 3), C = 40.5; plus a flagged epoch of 500 DN.
    r (5000522): 12 baseline epochs -25 + d (unc 1), C = -24.5, chi2_nu = 85/11 > 1.
    i (5000523): 9 baseline epochs only: not corrected.
    Transient: 3 epochs per filter at MJD 59300, 59310, 59320 of 1000 k DN above the offset.
    Unusable: a null flux, procstatus 61.
    """
    lines = ["# Requested input R.A. = 150.100000 degrees", "# Requested input Dec. = 20.200000 degrees",
             COLUMN_LINE]
    index = 0

    def add(filt, mjd, flux, unc, procstatus="0", scisigpix=5.0):
        nonlocal index
        values = [index, 500, 5, 2, filt, 1000000 + index, 30, 20.5, "26.0", f"{mjd + 2400000.5:.6f}",
                  flux, unc, 0, scisigpix, 2.0, procstatus]
        lines.append(" ".join(str(v) for v in values))
        index += 1

    for i, d in enumerate(DEVIATIONS):
        add("ZTF_g", 59000.0 + 10 * i, 40.0 + d, 3.0)
        add("ZTF_r", 59000.2 + 10 * i, -25.0 + d, 1.0)
        if i < 9:
            add("ZTF_i", 59000.4 + 10 * i, 15.0 + d, 3.0)
    add("ZTF_g", 59005.0, 500.0, 3.0, scisigpix=40.0)  # flagged: not a baseline epoch
    for k in (1, 2, 3):
        add("ZTF_g", 59290.0 + 10 * k, 40.0 + 1000.0 * k, 30.0)
        add("ZTF_r", 59290.2 + 10 * k, -25.0 + 1000.0 * k, 30.0)
        add("ZTF_i", 59290.4 + 10 * k, 15.0 + 1000.0 * k, 30.0)
    add("ZTF_g", 59400.0, "null", "null")
    add("ZTF_r", 59400.2, 10.0, 3.0, procstatus="61")
    return ("\n".join(lines) + "\n").encode()


def process_constructed(tmp_path, params, settings=None):
    from stdq.processors.ztf_fps import ZtfForcedPhotometryProcessor

    folder = tmp_path / "product"
    product = DataProduct(id=1, service="ztf-fps", data_product_type="ztf_fps_photometry",
                          target={"name": "x", "ra": 150.1, "dec": 20.2}, params=params, path=folder)
    product.add_raw("forcedphotometry_req00000001_lc.txt", constructed_file())
    table = ZtfForcedPhotometryProcessor(settings or {}).process(product)
    return product, table


K = 10 ** (-0.4 * (26.0 - 23.9))  # DN -> uJy at zpdiff 26.0


@pytest.mark.parametrize("params", [{"baseline": "before", "baseline_before": 59200.0}, {"baseline": "auto"}])
def test_baseline_correction_removes_a_known_offset(tmp_path, params):
    product, table = process_constructed(tmp_path, params)
    per = product.notes["baseline"]["fcqfids"]
    # the null flux is left out; the procstatus-61 row has a usable flux: kept, flagged
    assert product.left_out == {"rows with null or -99999 forcediffimflux": 1}
    # sorted deviations -4 -3 -2 -1 0 0 1 2 2 3 4 5: median (0 + 1) / 2 = 0.5 (zpdiff 26 everywhere)
    assert per["5000521"]["offset_ujy"] == pytest.approx(40.5 * K) and per["5000521"]["n_epochs"] == 12
    assert per["5000522"]["offset_ujy"] == pytest.approx(-24.5 * K)
    # sum((d - 0.5)^2) = 85: chi2_nu = 85 / unc^2 / 11 (recorded; errors are not rescaled by default)
    assert per["5000521"]["chi2_nu"] == pytest.approx(85 / 9 / 11)
    assert per["5000522"]["chi2_nu"] == pytest.approx(85 / 11)
    assert per["5000523"] == {
        "n_epochs": 9, "applied": False,
        "reason": "9 baseline epochs, fewer than baseline_min_epochs (10); not corrected",
    }
    g = table[table["object_id"] == "5000521"].sort_values("mjd")
    r = table[table["object_id"] == "5000522"].sort_values("mjd")
    i = table[table["object_id"] == "5000523"].sort_values("mjd")
    # the corrected baseline is centred on zero; the transient keeps its 1000 k DN
    base = g[g["mjd"] < 59200]
    assert statistics.median(base[base["quality_flag"] == 0]["flux_ujy"]) == pytest.approx(0.0, abs=1e-12)
    assert list(g[g["mjd"] > 59200]["flux_ujy"]) == pytest.approx([(1000.0 * k - 0.5) * K for k in (1, 2, 3)])
    assert list(r[r["mjd"] > 59200]["flux_ujy"]) == pytest.approx(
        [(-25 + 1000.0 * k + 24.5) * K for k in (1, 2, 3)] + [(10.0 + 24.5) * K])
    assert list(r[r["mjd"] > 59350]["quality_flag"]) == [1]  # procstatus 61 warns
    assert list(i[i["mjd"] > 59200]["flux_ujy"]) == pytest.approx([(15 + 1000.0 * k) * K for k in (1, 2, 3)])
    flagged = g[g["quality_flag"] == 4]
    assert list(flagged["flux_ujy"]) == pytest.approx([(500 - 40.5) * K])
    assert list(r["err_scale"].unique()) == [1.0]
    assert list(r["flux_err_ujy"])[0] == pytest.approx(1.0 * K)
    assert set(g["err_scale"]) == {1.0} and set(i["err_scale"]) == {1.0}
    # no baseline row is a detection any more (|d - 0.5| <= 5.5 DN, 3 DN errors: snr < 3 for g)
    assert not base[base["quality_flag"] == 0]["detected"].any()
    assert len(per["5000521"]["epochs"]) == 12
    assert float(table["ra"].iloc[0]) == 150.1 and float(table["dec"].iloc[0]) == 20.2


def test_baseline_auto_uses_post_peak_epochs_and_settings(tmp_path):
    # the peak is the k=3 g epoch (3040 / 30 DN, snr 101.3); with pre_peak_days 350 no epoch is
    # before MJD 59320 - 350, and none is more than 500 d after it (the BTS fallback): no correction
    product, _ = process_constructed(tmp_path, {"baseline": "auto"}, {"baseline_pre_peak_days": 350.0})
    assert product.notes["baseline"]["peak_mjd"] == pytest.approx(59320.0 + 15 / 86400)
    assert all(not v["applied"] and v["n_epochs"] == 0 for v in product.notes["baseline"]["fcqfids"].values())
    # baseline_min_epochs 5 corrects the i band too: its 9 deviations -3 2 0 5 -1 4 -2 1 3,
    # sorted -3 -2 -1 0 1 2 3 4 5, have median 1, so C = 15 + 1
    product, _ = process_constructed(tmp_path, {"baseline": "auto"}, {"baseline_min_epochs": 5})
    assert product.notes["baseline"]["fcqfids"]["5000523"]["offset_ujy"] == pytest.approx(16.0 * K)


def test_no_baseline_by_default_and_thresholds_are_settings(tmp_path):
    # the first i epoch: 15 - 3 = 12 DN +- 3 DN, snr 4
    product, table = process_constructed(tmp_path, {"baseline": "none"})
    assert "baseline" not in product.notes and "ztf_baseline_offset_ujy" not in table
    first_i = table[table["object_id"] == "5000523"].sort_values("mjd").iloc[0]
    assert first_i["flux_ujy"] == pytest.approx(12.0 * K) and first_i["detected"]
    assert first_i["magnitude"] == pytest.approx(23.9 - 2.5 * math.log10(12.0 * K))
    _, table = process_constructed(tmp_path, {"baseline": "none"}, {"snr_threshold": 5.0, "limit_nsigma": 3.0})
    first_i = table[table["object_id"] == "5000523"].sort_values("mjd").iloc[0]
    assert not first_i["detected"] and math.isnan(first_i["magnitude"])
    assert first_i["limit"] == pytest.approx(23.9 - 2.5 * math.log10(3 * 3.0 * K))
    assert first_i["limit_nsigma"] == 3.0
    # mjd: jd - 2400000.5 + exptime/2
    assert first_i["mjd"] == pytest.approx(59000.4 + 15 / 86400, abs=1e-9)


@pytest.mark.parametrize("column_line", [
    "# index, field, ccdid, qid, filter, pid, zpdiff, jd, forcediffimflux, forcediffimfluxunc, procstatus",
    " index, field, ccdid, qid, filter, pid, zpdiff, jd, forcediffimflux, forcediffimfluxunc, procstatus",
    "#index field ccdid qid filter pid zpdiff jd forcediffimflux forcediffimfluxunc procstatus",
])
def test_result_file_column_line_variants(column_line):
    from stdq.processors.ztf_fps import parse_result

    text = "\n".join([
        "# Requested input R.A. = 1.500000 degrees",
        "# Requested input Dec. = -2.250000 degrees",
        column_line,
        "0 600 1 1 ZTF_g 1234567890123 26.1 2459000.7 null 12.5 0",
        "1 600 1 1 ZTF_g 1234567890124 26.1 2459001.7 10.0 2.0 56,57",
    ]) + "\n"
    meta, rows = parse_result(text.encode())
    assert meta == {"ra": 1.5, "dec": -2.25}
    assert list(rows["pid"]) == ["1234567890123", "1234567890124"]  # text: no float on the way
    assert list(rows["forcediffimflux"]) == ["null", "10.0"]
    assert list(rows["procstatus"]) == ["0", "56,57"]


def test_unparseable_result_file_fails_clearly():
    from stdq.processors.ztf_fps import parse_result

    with pytest.raises(ValueError, match="column line"):
        parse_result(b"<html><body>Not Found</body></html>\n")
    with pytest.raises(ValueError, match="has 2 values"):
        parse_result(b"# index, field, ccdid, qid, filter, pid, zpdiff, jd, forcediffimflux,"
                     b" forcediffimfluxunc, procstatus\n0 1\n")


def test_doctor_reads_the_listing_and_a_busy_database_is_temporary(stdq):
    result = stdq.run("doctor")
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "ztf-fps: HTTP 400, the status listing: Zero records returned" in result.stdout
    stdq.server.emulator("zfps").busy_next = 1
    result = stdq.run("doctor")
    assert result.returncode == 75, (result.stdout, result.stderr)
    line = next(line for line in result.stdout.splitlines() if "ztf-fps: the status listing" in line)
    assert line.startswith("FAILED  service      ztf-fps: the status listing answered"
                           " 'Error: database is busy; try again a minute later.'; try again later")


# the listing parser against hostile pages (property test, seeded from the emulator's page:
# no real listing page is public)
LISTING_PAGE = (
    "<html><head><title>ZTF Forced Photometry: recent batch requests</title></head><body>\n"
    "<h3>All recent jobs</h3>\n<table border=\"1\">\n"
    "<tr><th>reqId</th><th>ra</th><th>dec</th><th>startJD</th><th>endJD</th><th>exitcode</th>"
    "<th>lightcurve</th></tr>\n"
    "<tr><td>15270</td><td>210.9106740</td><td>54.3116500</td><td>2458194.500000</td>"
    "<td>2460300.500000</td><td>0</td><td>/ztf/ops/forcedphot/lc/0/15/req15270/cksum0/"
    "batchfp_req0000015270_lc.txt</td></tr>\n</table>\n</body></html>\n"
)
HOSTILE_BITS = ("<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<th>reqId</th>", "<!DOCTYPE html>",
                "Zero records returned", "Error: database is busy; try again a minute later.",
                "Error: email address and/or user password not valid", "\x00", "é", "&amp;", "<", ">",
                "<!--", "-->", "<script>", "]]>", "\r\n", "")


def test_hostile_listing_pages_end_in_rows_or_a_documented_error(tmp_path, fake_server):
    import httpx
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from stdq import http
    from stdq.errors import StdqError
    from stdq.services.ztf_fps import parse_listing

    service, ctx = service_and_context(tmp_path, fake_server)
    answer: dict[str, object] = {}
    ctx.client_factory = lambda: http.make_client(
        "ztf-fps", ctx.settings.http, sleep=ctx.sleep, transport=httpx.MockTransport(
            lambda request: httpx.Response(answer["status"], content=answer["body"],
                                           headers={"Content-Type": answer["type"]})))
    creds = {"email": EMAIL, "userpass": USERPASS}

    @settings(max_examples=150, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.data())
    def check(data):
        page = LISTING_PAGE
        for _ in range(data.draw(st.integers(0, 6))):
            at = data.draw(st.integers(0, len(page)))
            cut = data.draw(st.integers(0, 40))
            bit = data.draw(st.one_of(st.sampled_from(HOSTILE_BITS), st.text(max_size=20)))
            page = page[:at] + bit + page[at + cut:]
        body = page.encode("utf-8", "surrogatepass") if data.draw(st.booleans()) else page.encode("latin-1", "replace")
        answer.update(status=data.draw(st.sampled_from([200, 200, 200, 400, 404])), body=body,
                      type=data.draw(st.sampled_from(["text/html", "text/plain", ""])))
        rows = parse_listing(page)
        assert rows is None or all(isinstance(r, dict) for r in rows)
        ctx.sleeps.clear()
        try:
            got = service.listing(ctx, creds)
        except StdqError as exc:  # the documented ones: 75 (temporary), 1, 3 -- with a message
            assert exc.exit_code in (1, 3, 75) and exc.message.startswith("ztf-fps: ")
            assert USERPASS not in exc.message and EMAIL not in exc.message
            return
        assert isinstance(got, list) and all(isinstance(r, dict) for r in got)

    check()
    ctx.close()
