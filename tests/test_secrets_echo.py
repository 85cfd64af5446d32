"""Secrets that come back (issue 9 item 8), end to end against the emulators: a server that
echoes the API key, the e-mail or the password in its answer, and a password inside a
settings URL. The secret appears nowhere in the data directory (every file, the database
included), product.json says which raw files were redacted with the sha256 of what was
stored, and logs, events and outputs never show it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stdq import Stdq
from stdq.store import DataProduct, mask_secrets
from stdq.testing import zfps
from stdq.testing.atlas import TEST_TOKEN

URL_PASSWORD = "Url-Pa55word"


def forms(secret: str) -> list[bytes]:
    """SECRET as a server might echo it: plain, percent-encoded, JSON-escaped."""
    return [secret.encode(), quote(secret, safe="").encode(), json.dumps(secret)[1:-1].encode()]


def every_file(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_nowhere(folder: Path, secrets: list[str], *texts: str) -> None:
    files = every_file(folder)
    assert any(p.name == "stdq.sqlite3" for p in files)
    for secret in secrets:
        for form in forms(secret):
            for path, data in files.items():
                assert form not in data, (secret, form, path)
            for text in texts:
                assert form.decode() not in text, (secret, text)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def product_json(runner) -> dict:
    (path,) = runner.data_dir.rglob("product.json")
    return json.loads(path.read_text())


# -- a server that echoes the ATLAS token ----------------------------------------------------------


@pytest.fixture
def echoing_atlas(stdq):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = emulator.run_seconds = 0.2
    real = emulator._result_file

    def result_file(task_id):
        answer = real(task_id)
        echo = (f"# requested with Token {TEST_TOKEN} (url-encoded {quote(TEST_TOKEN, safe='')},"
                f" json {json.dumps(TEST_TOKEN)[1:-1]}) {URL_PASSWORD}\n")
        answer.body = answer.body + echo.encode()
        return answer

    emulator._result_file = result_file
    return stdq, emulator


def test_an_echoed_token_is_masked_in_the_raw_file_and_product_json(echoing_atlas):
    stdq, emulator = echoing_atlas
    result = stdq.run("--json", "-v", "query", "atlas", "SN 2023ixf", "--sync")
    assert result.returncode == 0, result.stderr
    meta = product_json(stdq)
    (raw,) = meta["raw_files"]
    stored = next(stdq.data_dir.rglob(raw["name"]))
    assert raw["redacted"] is True
    assert raw["sha256"] == sha256(stored) and raw["bytes"] == stored.stat().st_size
    assert b"# requested with Token *** (url-encoded ***, json ***)" in stored.read_bytes()
    # the integrity check holds on the stored file
    shown = stdq.run("--json", "products", "show", str(meta["product_id"]))
    (checked,) = json.loads(shown.stdout)["raw_files"]
    assert checked["status"] == "ok" and checked["redacted"] is True
    logs = stdq.run("jobs", "logs", str(meta["job_id"]))
    assert_nowhere(stdq.data_dir, [TEST_TOKEN], result.stdout, result.stderr, shown.stdout, logs.stdout)


def test_a_raw_file_without_a_secret_is_kept_byte_for_byte(stdq):
    emulator = stdq.server.emulator("atlas")
    emulator.queue_seconds = emulator.run_seconds = 0.2
    served: list[bytes] = []
    real = emulator._result_file

    def result_file(task_id):
        answer = real(task_id)
        served.append(answer.body)
        return answer

    emulator._result_file = result_file
    assert stdq.run("query", "atlas", "SN 2023ixf", "--sync").returncode == 0
    (raw,) = product_json(stdq)["raw_files"]
    assert raw["redacted"] is False
    stored = next(stdq.data_dir.rglob(raw["name"]))
    assert served and stored.read_bytes() == served[-1]


# -- a password inside a settings URL, echoed back --------------------------------------------------


def test_a_password_inside_the_service_url_is_a_secret(echoing_atlas):
    stdq, emulator = echoing_atlas
    url = emulator.base_url.replace("http://", f"http://atlasuser:{URL_PASSWORD}@")
    text = stdq.config_path.read_text()
    assert f'url = "{emulator.base_url}"' in text
    text = text.replace(f'url = "{emulator.base_url}"', f'url = "{url}"')
    stdq.config_path.write_text(text)
    result = stdq.run("-v", "query", "atlas", "SN 2023ixf", "--sync")
    assert result.returncode == 0, result.stderr
    shown = stdq.run("config", "show")
    assert "atlasuser:***@" in shown.stdout
    job = stdq.run("--json", "jobs", "show", "1")
    logs = stdq.run("jobs", "logs", "1")
    assert_nowhere(stdq.data_dir, [URL_PASSWORD, TEST_TOKEN], result.stdout, result.stderr,
                   shown.stdout, job.stdout, logs.stdout)
    assert product_json(stdq)["raw_files"][0]["redacted"] is True


# -- ZFPS: the e-mail and the password echoed in the light curve and the log -------------------------


@pytest.fixture
def echoing_zfps(stdq):
    emulator = stdq.server.emulator("zfps")
    emulator.delay = 0.1
    real = emulator._file

    def file(path):
        answer = real(path)
        if answer.status == 200 and path.endswith("_lc.txt"):
            echo = f"# requested by {zfps.TEST_EMAIL} ({quote(zfps.TEST_EMAIL)}) pw {zfps.TEST_USERPASS}\n"
            answer.body = echo.encode() + answer.body
        return answer

    emulator._file = file
    return stdq, emulator


def test_echoed_zfps_credentials_are_nowhere_in_the_data_directory(echoing_zfps):
    stdq, _ = echoing_zfps
    env = {"STDQ_ZTF_FPS_EMAIL": zfps.TEST_EMAIL, "STDQ_ZTF_FPS_USERPASS": zfps.TEST_USERPASS}
    result = stdq.run("--json", "query", "ztf-fps", "SN 2023ixf", "--sync", env=env)
    assert result.returncode == 0, result.stderr
    meta = product_json(stdq)
    assert meta["raw_files"] and all(raw["redacted"] for raw in meta["raw_files"])  # lc and log
    for raw in meta["raw_files"]:
        stored = next(stdq.data_dir.rglob(raw["name"]))
        assert raw["sha256"] == sha256(stored) and raw["bytes"] == stored.stat().st_size
        assert b"***" in stored.read_bytes()
    assert_nowhere(stdq.data_dir, [zfps.TEST_EMAIL, zfps.TEST_USERPASS], result.stdout, result.stderr)


# -- the mechanism ----------------------------------------------------------------------------------


def test_add_raw_masks_the_product_secrets_and_those_given(tmp_path):
    product = DataProduct(id=1, service="s", data_product_type="t", target={}, params={},
                          path=tmp_path / "p", secrets=("tok-123456",))
    raw = product.add_raw("a.txt", b"key=tok-123456&mail=me%40x.org;", url="https://h/?k=tok-123456",
                          secrets=["me@x.org", "", "ab"])
    assert raw.redacted and raw.url == "https://h/?k=***"
    assert raw.path.read_bytes() == b"key=***&mail=***;"
    assert raw.sha256 == hashlib.sha256(b"key=***&mail=***;").hexdigest() and raw.bytes == 17
    plain = product.add_raw("b.txt", b"nothing to hide; ab")  # a two-letter "secret" is not masked
    assert not plain.redacted and plain.path.read_bytes() == b"nothing to hide; ab"
    assert mask_secrets(b'{"u": "p\\"w\\\\x"}', ['p"w\\x']) == b'{"u": "***"}'
    assert product.redact_text('{"k": "tok-123456"}') == '{"k": "***"}'


def test_a_reprocessed_product_keeps_its_redacted_flags(echoing_atlas):
    stdq, _ = echoing_atlas
    assert stdq.run("query", "atlas", "SN 2023ixf", "--sync").returncode == 0
    with Stdq(stdq.config_path, stdq.data_dir) as sdq:
        (product,) = sdq.products()
        again = sdq.reprocess(product.id)
    assert again.state == "ready"
    assert product_json(stdq)["raw_files"][0]["redacted"] is True
    assert not again.problems


# -- properties -------------------------------------------------------------------------------------

SECRET = st.text(min_size=3, max_size=12).filter(lambda s: s.strip("*"))


@settings(max_examples=200, deadline=None)
@given(before=st.text(max_size=40), after=st.text(max_size=40), secret=SECRET,
       repeat=st.integers(1, 3))
def test_a_masked_secret_never_survives(before, after, secret, repeat):
    data = (before + secret * repeat + after).encode("utf-8", "surrogatepass")
    masked = mask_secrets(data, [secret])
    assert secret.encode("utf-8", "surrogatepass") not in masked


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), secret=SECRET)
def test_data_without_the_secret_is_unchanged(data, secret):
    forms_of = [secret, quote(secret, safe=""), json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1]]
    if any(f.encode("utf-8", "surrogatepass") in data for f in [*forms_of, quote_plus(secret)]):
        return
    assert mask_secrets(data, [secret]) == data
