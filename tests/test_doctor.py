"""`stdq doctor` against the emulators: all well, a service down, credentials missing or
refused, a broken settings file, and the --json shape (issue 9 item 10)."""

from __future__ import annotations

import json

import pytest

from conftest import assert_clean_error
from stdq.testing.atlas import TEST_TOKEN
from stdq.testing.fakeserver import settings_toml
from stdq.testing.zfps import TEST_USERPASS

# what a doctor run checks against every emulator: (kind, name) in order
EXPECTED = [
    ("settings", None), ("data_dir", None),
    ("credentials", "atlas"), ("service", "atlas"),
    ("credentials", "panstarrs"), ("service", "panstarrs"),
    ("service", "ztf"),
    ("credentials", "ztf-fps"), ("service", "ztf-fps"),
    ("resolver", "sesame"), ("resolver", "mast"),
]


def doctor_json(stdq, *args: str, code: int | None = None) -> dict:
    result = stdq.run("--json", "doctor", *args)
    data = json.loads(result.stdout)
    if code is not None:
        assert result.returncode == code, (result.stdout, result.stderr)
    assert data["exit_code"] == result.returncode
    return data


def by_name(data: dict) -> dict[tuple[str, str], dict]:
    return {(c["kind"], c["name"]): c for c in data["checks"]}


def without_keys(toml: str, *keys: str) -> str:
    return "\n".join(line for line in toml.splitlines() if not line.startswith(keys)) + "\n"


def test_doctor_against_the_emulators_is_all_well(stdq):
    result = stdq.run("doctor")
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert len(lines) >= len(EXPECTED)
    assert all(line.startswith("ok ") for line in lines), result.stdout
    text = result.stdout
    assert f"settings     {stdq.config_path}: found, parses" in text
    assert f"data dir     {stdq.data_dir}: does not exist yet" in text
    assert "credentials  atlas: api_key set (from " in text
    assert "service      atlas: HTTP 200, the task list (JSON, 0 tasks)" in text
    assert "service      panstarrs: HTTP 200, dr2/detection metadata (JSON" in text
    assert "service      ztf: HTTP 200, light-curve CSV" in text
    assert "service      ztf-fps: HTTP " in text
    assert "resolver     sesame: M31 -> RA 10.684708, Dec +41.268750" in text
    assert "resolver     mast: M31 -> RA 10.684708" in text
    assert f"all is well ({len(lines)} checks)" in result.stderr
    for secret in (TEST_TOKEN, TEST_USERPASS):  # names and sources only, never a value
        assert secret not in result.stdout + result.stderr
    assert not stdq.data_dir.exists()  # nothing was written
    # each service and resolver was asked once
    for emulator in ("atlas", "mast", "irsa", "zfps", "sesame", "mast-resolver"):
        assert len(stdq.server.log_of(emulator=emulator)) == 1, emulator
    assert len(doctor_json(stdq, code=0)["checks"]) == len(lines)  # one line per check


def test_doctor_json_shape(stdq):
    data = doctor_json(stdq, code=0)
    assert set(data) == {"ok", "exit_code", "checks"} and data["ok"] is True
    seen = [(c["kind"], c["name"] if c["kind"] not in ("settings", "data_dir") else None)
            for c in data["checks"]]
    assert [s for s in seen if s in EXPECTED] == EXPECTED  # in this order (a new service may add lines)
    assert len(set(seen)) == len(seen)
    for check in data["checks"]:
        assert set(check) == {"kind", "name", "status", "message", "exit_code", "seconds"}
        assert check["status"] == "ok" and check["exit_code"] == 0
        assert (check["seconds"] is not None) == (check["kind"] in ("service", "resolver"))
    same = json.loads(stdq.run("doctor", "--json").stdout)  # --json after the command
    assert [c["message"] for c in same["checks"]][:2] == [c["message"] for c in data["checks"]][:2]


def test_a_service_that_cannot_be_reached_is_exit_75_and_its_line_names_it(stdq):
    stdq.server.add_fault("503", r"/irsa/.*", times=1)
    stdq.server.add_fault("html", r"/sesame/.*", times=1)  # a proxy's page: not Sesame's format
    result = stdq.run("doctor")
    assert result.returncode == 75, (result.stdout, result.stderr)
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2
    assert failed[0].startswith("FAILED  service      ztf: HTTP 503 at http://127.0.0.1:")
    assert failed[1].startswith("FAILED  resolver     sesame: ") and "HTML page" in failed[1]
    assert f"2 checks of {len(result.stdout.splitlines())} failed: exit 75" in result.stderr
    assert len(stdq.server.log_of(emulator="irsa")) == 1  # one try: a doctor does not retry
    data = doctor_json(stdq, code=0)  # the faults are used up: well again
    assert data["ok"]


def test_a_closed_port_is_exit_75(stdq):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    toml = settings_toml(stdq.server).replace(
        stdq.server.url("mast-resolver"), f"http://127.0.0.1:{port}/Santa-war/query"
    )
    stdq.config_path.write_text(toml, encoding="utf-8")
    data = doctor_json(stdq, code=75)
    mast = by_name(data)[("resolver", "mast")]
    assert mast["status"] == "failed" and mast["exit_code"] == 75
    assert "connection" in mast["message"] and str(port) in mast["message"]
    assert all(c["status"] == "ok" for c in data["checks"] if c is not mast)


def test_missing_credentials_are_exit_3(stdq):
    stdq.config_path.write_text(without_keys(settings_toml(stdq.server), "userpass ="), encoding="utf-8")
    result = stdq.run("doctor")
    assert result.returncode == 3, (result.stdout, result.stderr)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert line.startswith("FAILED  credentials  ztf-fps: userpass missing: set STDQ_ZTF_FPS_USERPASS")
    assert "exit 3 (configuration)" in result.stderr
    # the service itself still answers (its shared login is checked without the account)
    assert by_name(doctor_json(stdq))[("service", "ztf-fps")]["status"] == "ok"
    # from the environment: well again, the source named, the value never
    env = {"STDQ_ZTF_FPS_USERPASS": TEST_USERPASS}
    again = stdq.run("doctor", env=env)
    assert again.returncode == 0 and "userpass set (from $STDQ_ZTF_FPS_USERPASS)" in again.stdout
    assert TEST_USERPASS not in again.stdout + again.stderr


def test_an_unconfigured_service_is_skipped(stdq):
    toml = settings_toml(stdq.server)
    start = toml.index("[services.atlas]")
    end = toml.index("[", start + 1)
    stdq.config_path.write_text(toml[:start] + toml[end:], encoding="utf-8")  # no ATLAS at all
    data = doctor_json(stdq, code=0)
    creds = by_name(data)[("credentials", "atlas")]
    assert creds["status"] == "skipped" and "STDQ_ATLAS_API_KEY" in creds["message"]
    assert by_name(data)[("service", "atlas")]["status"] == "skipped"
    assert stdq.server.log_of(emulator="atlas") == []


def test_a_configured_service_without_its_token_is_exit_3_and_a_refused_token_too(stdq):
    stdq.config_path.write_text(without_keys(settings_toml(stdq.server), "api_key ="), encoding="utf-8")
    data = doctor_json(stdq, code=3)
    creds, service = by_name(data)[("credentials", "atlas")], by_name(data)[("service", "atlas")]
    assert creds["status"] == "failed" and creds["exit_code"] == 3
    assert creds["message"].startswith(
        "api_key missing: set STDQ_ATLAS_API_KEY (or ATLAS_FORCED_PHOTOMETRY_API_KEY), or api_key"
        " in [services.atlas] of "
    )
    assert service["status"] == "ok" and "without a token" in service["message"]  # it answers
    wrong = "0123456789abcdef-wrong"
    refused = stdq.run("--json", "doctor", env={"STDQ_ATLAS_API_KEY": wrong})
    assert refused.returncode == 3
    data = json.loads(refused.stdout)
    creds, service = by_name(data)[("credentials", "atlas")], by_name(data)[("service", "atlas")]
    assert creds["status"] == "ok" and creds["message"] == "api_key set (from $STDQ_ATLAS_API_KEY)"
    assert service["status"] == "failed" and service["exit_code"] == 3
    assert service["message"].startswith("credentials refused (HTTP 401)")
    assert wrong not in refused.stdout + refused.stderr


def test_a_broken_settings_file_is_one_line_and_exit_3(stdq):
    stdq.config_path.write_text("[http]\ntimeout = \n", encoding="utf-8")
    result = stdq.run("doctor")
    assert_clean_error(result, 3)
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"FAILED  settings     {stdq.config_path}: ") and "TOML" in line
    stdq.config_path.write_text("[http]\ntimeout = -1\n", encoding="utf-8")
    data = doctor_json(stdq, code=3)
    assert [c["kind"] for c in data["checks"]] == ["settings"] and "timeout" in data["checks"][0]["message"]


def test_the_data_directory_check(stdq, tmp_path):
    from stdq.db import SCHEMA_VERSION
    from stdq.doctor import data_dir_check

    assert stdq.run("targets", "add", "Here", "--ra", "1", "--dec", "2").returncode == 0
    check = data_dir_check(stdq.data_dir)
    assert check.status == "ok" and check.message == (
        f"writable; database schema version {SCHEMA_VERSION} of {SCHEMA_VERSION}"
    )
    import sqlite3

    conn = sqlite3.connect(stdq.data_dir / "stdq.sqlite3")  # as an older stdq left it
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    conn.close()
    older = data_dir_check(stdq.data_dir)
    assert older.status == "ok" and "the next command that writes upgrades it" in older.message
    conn = sqlite3.connect(stdq.data_dir / "stdq.sqlite3")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION - 1  # not upgraded
    conn.close()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert data_dir_check(empty).message == "writable; no database yet (the first query makes it)"
    (empty / "stdq.sqlite3").write_bytes(b"not a database at all, not even close" * 4)
    bad = data_dir_check(empty)
    assert bad.failed and bad.exit_code == 3 and "stdq.sqlite3" in bad.message
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert data_dir_check(afile).failed


def test_library_doctor_without_requests(stdq):
    from stdq import Stdq
    from stdq.records import doctor_exit_code

    with Stdq(stdq.config_path, stdq.data_dir) as sdq:
        checks = sdq.doctor(probes=False)
    assert doctor_exit_code(checks) == 0
    assert {c.status for c in checks if c.kind in ("service", "resolver")} == {"skipped"}
    assert stdq.server.log_of() == []


@pytest.mark.parametrize(("status", "code"), [(429, 75), (502, 75), (401, 3), (404, 3), (400, 1)])
def test_probe_status(status, code):
    import httpx

    from stdq.errors import StdqError
    from stdq.services.base import probe_status

    response = httpx.Response(status, request=httpx.Request("GET", "http://127.0.0.1/x?key=s3cr3t"))
    with pytest.raises(StdqError) as caught:
        probe_status(response, "svc", ["s3cr3t"])
    assert caught.value.exit_code == code and "s3cr3t" not in str(caught.value)
    probe_status(httpx.Response(200, request=response.request), "svc")  # fine: nothing raised
