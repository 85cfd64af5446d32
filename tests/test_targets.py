"""Targets: coordinate parsing, name resolution through the Sesame and MAST emulators, the cache,
the local targets table, and the real resolver answers in ../shared/realdata."""

from __future__ import annotations

import json
import re

import pytest

from conftest import assert_clean_error
from stdq.errors import BadInput, QueryFailed
from stdq.targets import parse_dec, parse_mast_resolver, parse_position, parse_ra, parse_sesame
from stdq.testing.resolvers import MastResolverEmulator, SesameEmulator

# The sky of the emulators (stdq.testing.sky), written out here by hand.
SN_RA, SN_DEC = 210.910674, 54.311650
NGC_RA, NGC_DEC = 170.5750583, 59.0742417



def EMULATORS():  # noqa: N802 - read by conftest's fake_server
    """Only the two resolver emulators: these tests need no survey service."""
    return [SesameEmulator(), MastResolverEmulator()]


def resolve_json(stdq, name: str, *extra: str) -> dict:
    result = stdq.run("--json", "targets", "resolve", name, *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- coordinate parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("210.910674", 210.910674),
        ("0", 0.0),
        ("359.999", 359.999),
        # 14h 03m 38.56s = (14 + 3/60 + 38.56/3600) h, times 15 deg/h
        ("14:03:38.56", (14 + 3 / 60 + 38.56 / 3600) * 15),
        ("14 03 38.56", (14 + 3 / 60 + 38.56 / 3600) * 15),
        ("14h03m38.56s", (14 + 3 / 60 + 38.56 / 3600) * 15),
        ("14h 03m 38.56s", (14 + 3 / 60 + 38.56 / 3600) * 15),
        ("00:00:01", 15 / 3600),
        ("23:59:59.99", (23 + 59 / 60 + 59.99 / 3600) * 15),
    ],
)
def test_parse_ra(text, expected):
    assert parse_ra(text) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("54.311650", 54.311650),
        ("-30", -30.0),
        ("90", 90.0),
        ("-90", -90.0),
        ("+54:18:41.9", 54 + 18 / 60 + 41.9 / 3600),
        ("54 18 41.9", 54 + 18 / 60 + 41.9 / 3600),
        ("54d18m41.9s", 54 + 18 / 60 + 41.9 / 3600),
        # the sign belongs to the whole value, also when the degrees are 0
        ("-00:30:00", -0.5),
        ("-00 30 00", -0.5),
        ("-0:00:36", -0.01),
        ("-05:23:12", -(5 + 23 / 60 + 12 / 3600)),
        ("+00:30:00", 0.5),
    ],
)
def test_parse_dec(text, expected):
    assert parse_dec(text) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("text", ["360", "-0.1", "400", "24:00:00", "25:10:00", "-01:00:00", "nan"])
def test_ra_out_of_bounds_names_the_value(text):
    with pytest.raises(BadInput) as err:
        parse_ra(text)
    assert err.value.exit_code == 2
    assert repr(text) in err.value.message


@pytest.mark.parametrize("text", ["90.0001", "-91", "+91:00:00", "-90:00:01", "inf"])
def test_dec_out_of_bounds_names_the_value(text):
    with pytest.raises(BadInput) as err:
        parse_dec(text)
    assert err.value.exit_code == 2
    assert repr(text) in err.value.message


@pytest.mark.parametrize("text", ["abc", "14:03:xx", "12.3.4", "", "14:61:00", "14:03:60"])
def test_garbage_coordinates_name_the_value(text):
    for parse in (parse_ra, parse_dec):
        with pytest.raises(BadInput) as err:
            parse(text)
        assert repr(text) in err.value.message


def test_half_a_pair_names_the_value():
    with pytest.raises(BadInput, match="'210.9'.*without --dec"):
        parse_position("210.9", None)
    with pytest.raises(BadInput, match="'-00:30:00'.*without --ra"):
        parse_position(None, "-00:30:00")


def test_cli_coordinates(stdq):
    result = stdq.run("--json", "targets", "add", "Eq", "--ra", "00:00:00", "--dec", "-00:30:00")
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["ra"] == 0.0 and entry["dec"] == -0.5
    assert entry["dec_dms"] == "-00:30:00.0"
    result = stdq.run("--json", "targets", "add", "Sx", "--ra", "14h03m38.56s", "--dec", "+54 18 41.9")
    entry = json.loads(result.stdout)
    assert entry["ra"] == pytest.approx((14 + 3 / 60 + 38.56 / 3600) * 15)
    assert entry["dec"] == pytest.approx(54 + 18 / 60 + 41.9 / 3600)


@pytest.mark.parametrize(
    "args, value",
    [
        (["--ra", "400", "--dec", "10"], "400"),
        (["--ra", "10", "--dec", "-95"], "-95"),
        (["--ra", "ten", "--dec", "10"], "ten"),
        (["--ra", "10", "--dec", "12:xx:00"], "12:xx:00"),
        (["--ra", "14:03:38.56"], "14:03:38.56"),
        (["--dec", "+54:18:41.9"], "+54:18:41.9"),
    ],
)
def test_cli_bad_coordinates_exit_2(stdq, args, value):
    result = stdq.run("targets", "add", "Bad", *args)
    assert_clean_error(result, 2)
    assert value in result.stderr
    # nothing was stored
    listed = stdq.run("--json", "targets", "list")
    assert json.loads(listed.stdout) == []


# -- the real answers -----------------------------------------------------------------


def test_parse_real_sesame_answer(realdata):
    text = (realdata / "sesame" / "ngc3642_all.txt").read_text()
    ra, dec, name = parse_sesame(text)
    # the first %J line: "%J 170.5750583 +59.0742417 = 11:22:18.01 +59:04:27.2"
    assert (ra, dec) == (170.5750583, 59.0742417)
    assert name == "NGC 3642"


def test_parse_real_mast_resolver_answer(realdata):
    payload = json.loads((realdata / "mast_panstarrs" / "resolver.json").read_text())
    ra, dec, name = parse_mast_resolver(payload)
    # the first resolvedCoordinate: TIC 307210830
    assert (ra, dec) == (124.531756290083, -68.3129998725044)
    assert name == "TIC 307210830"


def test_parse_nothing_found():
    text = "# Nowhere Object    #Q1234\n#! *** Nothing found *** \n#====Done (2016-Mar-04,17:43:13z)====\n"
    assert parse_sesame(text) is None
    assert parse_mast_resolver({"resolvedCoordinate": [], "status": ""}) is None
    with pytest.raises(QueryFailed, match="resolvedCoordinate"):
        parse_mast_resolver(["not", "an", "object"])


def test_sesame_emulator_matches_real_answer(realdata, fake_server):
    """The emulator's all-databases answer for NGC 3642 has the real answer's lines, byte for
    byte where it emulates them (a Simbad block, then a VizieR block for a galaxy)."""
    import httpx

    real = (realdata / "sesame" / "ngc3642_all.txt").read_text().splitlines()
    url = fake_server.url("sesame") + "/-oI/A?ngc3642"
    fake = httpx.get(url).text.splitlines()
    assert re.fullmatch(r"# ngc3642\s+#Q\d+", fake[0]) and re.fullmatch(r"# ngc3642\s+#Q\d+", real[0])
    for line in ("#=S=Simbad (via url):    1", "%I.0 NGC 3642", "%C.0 LIN",
                 "%J 170.5750583 +59.0742417 = 11:22:18.01 +59:04:27.2", "#=V=VizieR (local):    1",
                 "%I.0 {NGC} 3642"):
        assert line in real and line in fake
    # the lines come in the real order (the emulator leaves some out, and adds the %I
    # identifiers of the I option)
    fake_tags = [line.split()[0] for line in fake[1:] if line and not line.startswith("%I ")]
    real_tags = iter(line.split()[0] for line in real[1:] if line)
    assert fake_tags[:5] == ["#=S=Simbad", "%@", "%I.0", "%C.0", "%J"]
    assert "#=V=VizieR" in fake_tags
    assert all(tag in real_tags for tag in fake_tags)  # a subsequence of the real tags
    done = r"#====Done \(\d{4}-[A-Z][a-z]{2}-\d{2},\d{2}:\d{2}:\d{2}z\)===="
    assert re.fullmatch(done, real[-1]) and re.fullmatch(done, fake[-1])
    assert fake[-4:-1] == real[-4:-1] == ["", "", ""]


def test_sesame_emulator_partial_failures_match_real_answer(realdata, fake_server):
    """For a name only Simbad knows, the all-databases answer has the real Castor answer's
    `#!` lines of VizieR and NED after the Simbad block."""
    import httpx

    real = (realdata / "sesame" / "castor_all_partial_failures.txt").read_text().splitlines()
    fake = httpx.get(fake_server.url("sesame") + "/-oI/A?SN%202023ixf").text.splitlines()
    real_failures = [line.replace("castor", "NAME") for line in real if line.startswith("#!")]
    fake_failures = [line.replace("SN 2023ixf", "NAME") for line in fake if line.startswith("#!")]
    assert fake_failures == real_failures == [
        "#!V=VizieR (local): No table found for: NAME",
        "#!N=NED: ****object name not recognized by NED name interpreter",
        "#!N=NED: ***Not recognized by NED: NAME",
    ]
    # the same layout: Simbad block, blank, VizieR line, blank, two NED lines, 3 blanks, trailer
    def layout(lines):
        return ["" if not line else line[:2] for line in lines if not line.startswith(("%", "#="))]
    assert layout(fake[1:]) == layout(real[1:])
    assert parse_sesame("\n".join(fake))[:2] == (SN_RA, SN_DEC)


def test_sesame_emulator_nothing_found(fake_server):
    import httpx

    response = httpx.get(fake_server.url("sesame") + "/-oI/A?Nowhere%20Object")
    assert response.status_code == 200
    assert "*** Nothing found ***" in response.text
    assert parse_sesame(response.text) is None


def test_mast_emulator_has_the_real_shape(realdata, fake_server):
    import httpx

    real = json.loads((realdata / "mast_panstarrs" / "resolver.json").read_text())
    real_keys = set().union(*(entry.keys() for entry in real["resolvedCoordinate"]))
    response = httpx.get(
        fake_server.url("mast-resolver"),
        params={"name": "SN 2023ixf", "outputFormat": "json", "resolveAll": "true"},
    )
    payload = response.json()
    assert set(payload) == set(real)
    entries = payload["resolvedCoordinate"]
    assert [e["resolver"] for e in entries] == ["SIMBAD", "NED"]
    for entry in entries:
        assert set(entry) <= real_keys
        assert (entry["ra"], entry["decl"]) == (SN_RA, SN_DEC)
    assert parse_mast_resolver(payload)[:2] == (SN_RA, SN_DEC)
    unknown = httpx.get(
        fake_server.url("mast-resolver"),
        params={"name": "Nowhere Object", "outputFormat": "json", "resolveAll": "true"},
    ).json()
    assert unknown["resolvedCoordinate"] == []


# -- resolution through the emulators ----------------------------------------------------


def test_resolve_through_sesame_then_cache(stdq, fake_server):
    first = resolve_json(stdq, "SN 2023ixf")
    assert (first["ra"], first["dec"]) == (SN_RA, SN_DEC)
    assert first["resolver"] == "sesame" and first["from_cache"] is False
    asked = fake_server.log_of(emulator="sesame")
    assert len(asked) == 1
    assert asked[0].path.endswith("/-oI/A?SN%202023ixf")
    assert fake_server.log_of(emulator="mast-resolver") == []

    second = resolve_json(stdq, "SN 2023ixf")
    assert (second["ra"], second["dec"]) == (SN_RA, SN_DEC)
    assert second["resolver"] == "sesame" and second["from_cache"] is True
    assert len(fake_server.log_of(emulator="sesame")) == 1  # no second request

    third = resolve_json(stdq, "SN 2023ixf", "--no-cache")
    assert third["from_cache"] is False
    assert len(fake_server.log_of(emulator="sesame")) == 2


def test_resolve_plain_output(stdq):
    result = stdq.run("targets", "resolve", "NGC 3642")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header.split("\t")[:6] == ["name", "ra", "dec", "ra_hms", "dec_dms", "resolver"]
    fields = row.split("\t")
    assert fields[:3] == ["NGC 3642", "170.5750583", "59.0742417"]
    assert fields[5] == "sesame" and fields[-1] == "no"


def test_resolver_order_is_respected(stdq, fake_server):
    text = stdq.config_path.read_text().replace("[resolver]\n", '[resolver]\norder = ["local", "mast", "sesame"]\n')
    stdq.config_path.write_text(text)
    found = resolve_json(stdq, "M31")
    assert found["resolver"] == "mast"
    assert (found["ra"], found["dec"]) == (10.684708, 41.268750)
    assert fake_server.log_of(emulator="sesame") == []
    (asked,) = fake_server.log_of(emulator="mast-resolver")
    assert asked.query == {"name": ["M31"], "outputFormat": ["json"], "resolveAll": ["true"]}


def test_cache_holds_only_resolvers_still_in_the_order(stdq, fake_server):
    assert resolve_json(stdq, "NGC 3642")["resolver"] == "sesame"
    text = stdq.config_path.read_text().replace("[resolver]\n", '[resolver]\norder = ["local", "mast"]\n')
    stdq.config_path.write_text(text)
    again = resolve_json(stdq, "NGC 3642")
    assert again["resolver"] == "mast" and again["from_cache"] is False
    assert len(fake_server.log_of(emulator="mast-resolver")) == 1


def test_sesame_down_mast_answers(stdq, fake_server):
    # [http] max_retries = 2 in the test settings: 3 tries in all
    fake_server.add_fault("500", "nph-sesame", times=3)
    result = stdq.run("--json", "targets", "resolve", "SN 2023ixf")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["resolver"] == "mast" and (found["ra"], found["dec"]) == (SN_RA, SN_DEC)
    assert "warning" in result.stderr and "sesame" in result.stderr
    assert [r.status for r in fake_server.log_of(emulator="sesame")] == [500, 500, 500]
    assert len(fake_server.log_of(emulator="mast-resolver")) == 1


def test_sesame_html_page_counts_as_down(stdq, fake_server):
    fake_server.add_fault("html", "nph-sesame", times=1)
    result = stdq.run("--json", "targets", "resolve", "NGC 3642")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resolver"] == "mast"
    assert "sesame" in result.stderr


def test_unknown_name_exit_4_names_every_resolver(stdq, fake_server):
    result = stdq.run("targets", "resolve", "Nowhere Object")
    assert_clean_error(result, 4)
    first = result.stderr.splitlines()[0]
    assert "Nowhere Object" in first
    for name in ("local", "sesame", "mast"):
        assert name in first
    assert len(fake_server.log_of(emulator="sesame")) == 1
    assert len(fake_server.log_of(emulator="mast-resolver")) == 1


def test_both_resolvers_down_exit_75(stdq, fake_server):
    fake_server.add_fault("503", "nph-sesame", times=3)
    fake_server.add_fault("500", "Santa-war", times=3)
    result = stdq.run("targets", "resolve", "SN 2023ixf")
    assert_clean_error(result, 75)
    assert "sesame" in result.stderr and "mast" in result.stderr


# -- the local targets table -------------------------------------------------------------


def test_targets_add_list_show_rm(stdq, fake_server):
    added = stdq.run("--json", "targets", "add", "My SN", "--ra", "14:03:38.56", "--dec", "+54:18:41.9")
    assert added.returncode == 0, added.stderr
    entry = json.loads(added.stdout)
    assert entry["name"] == "My SN" and entry["source"] == "user"
    assert entry["ra_hms"] == "14:03:38.56" and entry["dec_dms"] == "+54:18:41.9"

    # without coordinates the name is resolved and the answer stored
    resolved = stdq.run("--json", "targets", "add", "NGC 3642")
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout)["source"] == "sesame"

    listed = json.loads(stdq.run("--json", "targets", "list").stdout)
    assert [(e["name"], e["ra"], e["dec"]) for e in listed] == [
        ("My SN", pytest.approx((14 + 3 / 60 + 38.56 / 3600) * 15), pytest.approx(54 + 18 / 60 + 41.9 / 3600)),
        ("NGC 3642", NGC_RA, NGC_DEC),
    ]
    plain = stdq.run("targets", "list")
    assert plain.stdout.splitlines()[0].startswith("name\tra\tdec")
    assert len(plain.stdout.splitlines()) == 3

    shown = json.loads(stdq.run("--json", "targets", "show", "my sn").stdout)  # case ignored
    assert shown["name"] == "My SN"
    # adding a local name again without coordinates leaves it as it is
    sesame_requests = len(fake_server.log_of(emulator="sesame"))
    again = stdq.run("--json", "targets", "add", "my sn")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["source"] == "user" and "unchanged" in again.stderr
    assert len(fake_server.log_of(emulator="sesame")) == sesame_requests

    removed = stdq.run("targets", "rm", "My SN")
    assert removed.returncode == 0, removed.stderr
    assert [e["name"] for e in json.loads(stdq.run("--json", "targets", "list").stdout)] == ["NGC 3642"]
    assert_clean_error(stdq.run("targets", "rm", "My SN"), 2)
    assert_clean_error(stdq.run("targets", "show", "My SN"), 2)


def test_local_entry_is_asked_first(stdq, fake_server):
    """A local target wins over the resolvers: `stdq query ... NAME` would use it."""
    result = stdq.run("targets", "add", "SN 2023ixf", "--ra", "1.5", "--dec", "-2.25")
    assert result.returncode == 0, result.stderr
    found = resolve_json(stdq, "sn 2023ixf")
    assert (found["ra"], found["dec"]) == (1.5, -2.25)
    assert found["resolver"] == "local"
    assert fake_server.log_of(emulator="sesame") == []
    assert fake_server.log_of(emulator="mast-resolver") == []
    # after rm the resolvers are asked again
    stdq.run("targets", "rm", "SN 2023ixf")
    assert resolve_json(stdq, "SN 2023ixf")["resolver"] == "sesame"


def test_library_resolve_uses_the_local_entry(tmp_path, fake_server):
    """The path of `stdq query SERVICE NAME`: Stdq.resolve -> the local table first."""
    from stdq import Stdq
    from stdq.testing.fakeserver import settings_toml

    config = tmp_path / "config.toml"
    config.write_text(settings_toml(fake_server))
    with Stdq(config, tmp_path / "data") as session:
        session.targets.add("Empty Field", 12.0, -3.0)
        target = session.resolve("Empty Field")
        assert (target.ra, target.dec, target.resolver) == (12.0, -3.0, "local")
        by_coordinates = session.resolve("label", "14:03:38.56", "-00:30:00")
        assert by_coordinates.dec == -0.5 and by_coordinates.resolver == "coordinates"
    assert fake_server.requests == []


def test_remote_resolvers_are_registered_plugins(tmp_path, fake_server):
    """Sesame and MAST come from the registry (stdq.resolvers); "local" stays built in."""
    from stdq.config import load_settings
    from stdq.registry import registry_for
    from stdq.resolvers import MastResolver, SesameResolver
    from stdq.testing.fakeserver import settings_toml

    config = tmp_path / "config.toml"
    config.write_text(settings_toml(fake_server))
    registry = registry_for(load_settings(config, tmp_path / "data"))
    assert registry.resolver_names()[:3] == ["local", "sesame", "mast"]
    sesame, mast = registry.resolver("sesame"), registry.resolver("mast")
    assert isinstance(sesame, SesameResolver) and isinstance(mast, MastResolver)
    found = sesame.resolve("SN 2023ixf")
    assert found is not None and found.resolver == "sesame"
    assert (round(found.ra, 6), round(found.dec, 6)) == (SN_RA, SN_DEC)
    assert mast.resolve("NGC 3642").resolver == "mast"
    assert sesame.resolve("no such thing at all") is None
