"""The query path imports and builds only what the work needs (issue 10 item 1, 3): a small
Pan-STARRS query imports no astropy and builds no time tables, an http:// URL no SSL
context; the service's click command is built once; a built-in service is found without
an entry-point scan; each answer page is parsed once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stdq import http, photometry, registry
from stdq.cli import query as query_cli
from stdq.processors import panstarrs as ps_processor


def EMULATORS():
    from stdq.testing.mast import MastCatalogsEmulator

    return [MastCatalogsEmulator()]


QUERY = ("query", "panstarrs", "--ra", "210.910674", "--dec", "54.311650")

CHECK = """
import sys
from stdq.cli import main
sys.argv = ["stdq", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
from stdq import http, photometry
heavy = sorted(m for m in ("astropy", "astropy.time", "astropy.table") if m in sys.modules)
assert not heavy, f"imported {heavy}"
assert http._SSL_CONTEXT is None, "an SSL context was built for http://"
assert not photometry._TIME_TABLES, "time tables built for 47 rows"
print("LIGHT")
"""


def test_small_query_imports_no_astropy_and_builds_no_ssl_context(stdq):
    result = subprocess.run(
        [sys.executable, "-c", CHECK, *QUERY], capture_output=True, text=True, env=stdq.env,
        cwd=stdq.tmp, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "LIGHT" in result.stdout


def test_command_built_once_and_no_entry_point_scan(stdq, monkeypatch):
    built: list[str] = []
    real = query_cli.build_command

    def build_command(name, cls):
        built.append(name)
        return real(name, cls)

    def no_scan(group):
        pytest.fail(f"entry points of {group} scanned for a built-in service")

    monkeypatch.setattr(query_cli, "build_command", build_command)
    monkeypatch.setattr(registry, "_scan", no_scan)
    result = stdq.run(*QUERY, "--json")
    assert result.returncode == 0, result.stderr
    assert built == ["panstarrs"]
    built.clear()
    helptext = stdq.run("query", "panstarrs", "--help")
    assert helptext.returncode == 0 and "--release" in helptext.stdout
    assert built == ["panstarrs"]


def test_each_page_parsed_once(stdq, monkeypatch):
    parsed: list[int] = []
    real = ps_processor.read_mast_csv

    def read_mast_csv(source, **kw):
        parsed.append(len(source) if isinstance(source, bytes) else -1)
        return real(source, **kw)

    monkeypatch.setattr(ps_processor, "read_mast_csv", read_mast_csv)
    result = stdq.run(*QUERY, "--json")
    assert result.returncode == 0, result.stderr
    assert len(parsed) == 2  # the mean-table page and the detection page, once each
    assert all(n > 0 for n in parsed)  # by the service, from the bytes it got
    assert not ps_processor._PARSED  # the processor took them


def test_https_context_only_at_the_first_https_request(monkeypatch):
    made: list[int] = []
    real = http.shared_ssl_context

    def shared():
        made.append(1)
        return real()

    monkeypatch.setattr(http, "shared_ssl_context", shared)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    client = http.Client("test")
    try:
        assert made == []
        mount = next(t for p, t in client.client._mounts.items() if p.pattern == "https://")
        import httpx

        with pytest.raises(httpx.HTTPError):  # nothing listens there; the context is made first
            mount.handle_request(httpx.Request("GET", "https://127.0.0.1:9/"))
        assert made == [1]
    finally:
        client.close()


def test_remembered_table_is_dropped_when_the_file_changes(tmp_path):
    import pandas as pd

    df = photometry.normalize(pd.DataFrame({"mjd": [60000.0], "flux_ujy": [1.0], "flux_err_ujy": [1.0]}))
    path = tmp_path / "photometry.csv"
    with open(path, "wb") as fh:
        photometry.write_table(df, fh)
    photometry.remember_written(path, df)
    with open(path, "ab") as fh:  # changed behind stdq's back: read from the file
        fh.write(b"60001.0" + b"," * (len(df.columns) - 1) + b"\n")
    assert len(photometry.read_table(path)) == 2
    photometry.forget_written()
