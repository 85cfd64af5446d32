"""The helpers of the live tests (stdq.testing.shapes), without the internet: emulator
against emulator through the same requests and comparison, a drifted answer caught, the
stored real answers (../shared/realdata) against the emulators, and `-m live` opt-in."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from conftest import ROOT
from stdq.testing import shapes

REQUESTS = shapes.requests()




@pytest.mark.parametrize("request_", REQUESTS, ids=[r.name for r in REQUESTS])
def test_the_emulator_against_itself_has_no_differences(request_, emulators):
    url = shapes.emulator_url(emulators, request_)
    first = request_.send(url, shapes.emulator_secrets(request_))
    second = request_.send(url, shapes.emulator_secrets(request_))
    assert first.status_code < 500
    shape = shapes.shape_of(first, request_.kind)
    assert shape.parts, shape.describe()  # something to compare
    for part, names in request_.required.items():
        assert names <= shape.parts.get(part, frozenset()), (part, shape.describe())
    assert shapes.compare(request_, first, second) == []


def test_the_credentials_go_where_the_request_says():
    (atlas,) = [r for r in REQUESTS if r.name == "atlas task list"]
    (zfps,) = [r for r in REQUESTS if r.name == "zfps status listing"]
    assert atlas.secret_values({}) is None  # the live test skips it
    assert atlas.secret_values({"ATLAS_FORCED_PHOTOMETRY_API_KEY": "t0k"}) == {
        "header:Authorization=Token {}": "t0k"}
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"results": [], "next": None})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        atlas.send("https://example.org/forcedphot", {"header:Authorization=Token {}": "t0k"}, client)
        zfps.send("https://example.org", {"param:email": "a@b.c", "param:userpass": "pw"}, client)
    assert seen[0].headers["Authorization"] == "Token t0k"
    assert str(seen[0].url) == "https://example.org/forcedphot/queue/?pagesize=1"
    assert seen[1].url.params["email"] == "a@b.c" and seen[1].url.params["userpass"] == "pw"
    assert seen[1].headers["Authorization"].startswith("Basic ")  # the shared login


def test_the_real_service_is_asked_for_an_object_of_its_own_sky():
    by_name = {r.name: r for r in REQUESTS}
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        fink = by_name["fink sources"]
        fink.send("https://real.example", client=client, real=True)
        fink.send("http://127.0.0.1:1/fink", client=client)
        datalink = by_name["gaia datalink epoch photometry"]
        datalink.send("https://real.example", client=client, real=True)
    assert seen[0].url.params["diaObjectId"] == shapes.FINK_OBJECT == "314003014107006318"
    assert seen[1].url.params["diaObjectId"] == "609782208097419276"  # the emulator's transient
    assert seen[2].method == "POST" and not seen[2].url.params  # as stdq sends it: a form
    form = dict(httpx.QueryParams(seen[2].content.decode()))
    assert form["ID"] == shapes.GAIA_SOURCE and form["DATA_STRUCTURE"] == "INDIVIDUAL"
    assert form["USE_ZIP_ALWAYS"] == "true" and form["FORMAT"] == "csv"


def test_records_shapes_keep_the_json_types_of_the_fields():
    records = [{"oid": 12, "psfFlux": 1.5, "band": "r", "flag": False, "x": None}, {"oid": 13, "x": 2.0}]
    assert shapes.records_parts(records) == {
        "[] keys": frozenset({"oid", "psfFlux", "band", "flag", "x"}),
        "types": frozenset({"oid=int", "psfFlux=float", "band=str", "flag=bool", "x=float"}),
    }
    wrapped = shapes.records_parts({"items": [{"oid": "12"}], "total": 1})
    assert wrapped["types"] == {"oid=str"} and wrapped["keys"] == {"items", "total"}
    # an id the real broker sends as text while the emulator sends a number is a drift
    real = shapes.Shape(200, "application/json", shapes.records_parts([{"oid": "12"}]))
    emulated = shapes.Shape(200, "application/json", shapes.records_parts([{"oid": 12}]))
    assert shapes.differences(real, emulated, {"types": {"oid=int"}}) == [
        "types: the emulator serves oid=int; the real service does not",
        "types: the real answer lacks oid=int, which stdq reads",
    ]


def test_zip_shapes_are_entry_patterns_and_csv_columns():
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("EPOCH_PHOTOMETRY-Gaia DR3 4111834567779557376.csv", "source_id,time,flux\n1,2,3\n")
        archive.writestr("EPOCH_PHOTOMETRY-Gaia DR3 12.csv", "source_id,band\n1,G\n")
    assert shapes.zip_parts(buf.getvalue()) == {
        "entries": frozenset({"EPOCH_PHOTOMETRY-Gaia DR3 N.csv", "EPOCH_PHOTOMETRY-Gaia DR3 12.csv"}),
        "columns": frozenset({"source_id", "time", "flux", "band"}),
    }
    assert shapes.zip_parts(b"source_id,band\n1,G\n") == {"columns": frozenset({"source_id", "band"})}
    assert shapes.zip_parts(b"PK\x03\x04 broken") == {"entries": frozenset({"(not a zip)"})}


def test_a_drifted_answer_is_caught():
    real = shapes.Shape(200, "text/csv", {"columns": frozenset({"oid", "mjd", "mag", "magerr"})})
    same = shapes.Shape(200, "text/csv", {"columns": frozenset({"oid", "mjd", "mag", "magerr"})})
    assert shapes.differences(real, same, {"columns": {"mag"}}, exact=("columns",)) == []
    drifted = shapes.Shape(400, "text/plain", {"columns": frozenset({"oid", "mjd", "flux", "magerr"})})
    found = shapes.differences(real, drifted, {"columns": {"mag"}}, exact=("columns",))
    assert found == [
        "status: the real service answered 200, the emulator 400",
        "media type: the real service sent text/csv, the emulator text/plain",
        "columns: the emulator serves flux; the real service does not",
        "columns: the real service serves mag; the emulator does not",
        "columns: the emulator's answer lacks mag, which stdq reads",
    ]
    # not exact: the real service may serve more than the emulator, never less of what is read
    fewer = shapes.Shape(200, "text/csv", {"columns": frozenset({"oid", "mjd", "mag"})})
    assert shapes.differences(real, fewer, {"columns": {"mag"}}) == []


def test_shapes_of_the_answer_kinds():
    assert shapes.json_parts({"a": 1, "b": {"c": 2}, "d": [{"e": 1}, {"f": 2}, 3]}) == {
        "keys": frozenset({"a", "b", "d"}), "b": frozenset({"c"}), "d[]": frozenset({"e", "f"})}
    assert shapes.json_parts([{"name": "x", "t": {"u": 1}}]) == {
        "[] keys": frozenset({"name", "t"}), "[].t": frozenset({"u"})}
    assert shapes.csv_columns("# a comment\n\noid, mjd,\"mag\"\n1,2,3\n") == {"oid", "mjd", "mag"}
    text = "# M31\t#Q1\n#=S=Simbad (via url):    1\n%J 10.6 +41.2 = 00:42\n#! oops\n#====Done====\nodd\n"
    assert shapes.sesame_tags(text) == {"#", "#=S", "%J", "#!", "#====", "(untagged)"}
    table = "<table><tr><th>reqId</th><th>ra</th></tr><tr><td>1</td><td>2</td></tr></table>"
    assert shapes.listing_parts(table) == {"table columns": frozenset({"reqId", "ra"})}
    assert shapes.listing_parts("<p>Zero records returned</p>") == {
        "page": frozenset({"Zero records returned"})}


# -- the stored real answers against the emulators ---------------------------------------


def test_the_stored_real_answers_have_the_emulators_shape(realdata, emulators):
    """What ../shared/realdata holds of the live requests' answers: the emulators serve
    nothing the real answers lack."""
    mean = shapes.Request("ps1 mean metadata", "mast", "metadata", path="/dr2/mean/metadata")
    stored = json.loads((realdata / "mast_panstarrs" / "panstarrs_columns.json").read_text())
    real = shapes.Shape(200, "application/json", shapes.metadata_parts(stored))
    served = shapes.shape_of(mean.send(shapes.emulator_url(emulators, mean)), "metadata")
    assert shapes.differences(real, served) == []
    (resolver,) = [r for r in REQUESTS if r.name == "mast resolver"]
    stored = json.loads((realdata / "mast_panstarrs" / "resolver.json").read_text())
    real = shapes.Shape(200, "application/json", shapes.json_parts(stored))
    served = shapes.shape_of(resolver.send(shapes.emulator_url(emulators, resolver)), "json")
    assert shapes.differences(real, served, resolver.required, resolver.exact) == []
    sesame = shapes.Request("sesame ngc3642", "sesame", "sesame", path="/-op/A?NGC%203642")
    stored_text = (realdata / "sesame" / "ngc3642_all.txt").read_text()
    real = shapes.Shape(200, "text/plain", {"line tags": shapes.sesame_tags(stored_text)})
    served = shapes.shape_of(sesame.send(shapes.emulator_url(emulators, sesame)), "sesame")
    assert shapes.differences(real, served, {"line tags": {"%J", "#=S"}}) == []


# -- opt-in ---------------------------------------------------------------------------------


def collect(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_live.py", "--collect-only", "-q", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    return result.stdout + result.stderr


def test_live_tests_run_only_when_asked():
    default = collect()
    assert f"{len(REQUESTS)} deselected" in default and "::" not in default
    asked = collect("-m", "live")
    assert f"{len(REQUESTS)} tests collected" in asked
    assert "test_live.py::test_the_real_service_answers_in_the_shape_the_emulator_serves[sesame]" in asked
    other = subprocess.run(  # another -m replaces the default one: still nothing asked
        [sys.executable, "-m", "pytest", "tests/test_live.py", "-q", "-m", "not slow", "-rs"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert f"{len(REQUESTS)} skipped" in other.stdout and "run it with pytest -m live" in other.stdout
    ci = (ROOT / ".ci" / "run").read_text()
    assert "-m live" not in ci and "-m 'live" not in ci and '-m "live' not in ci
