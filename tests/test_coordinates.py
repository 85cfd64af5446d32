"""Coordinate parsing (issue 9 item 6): `d` means degrees and `h` hours (RA only), numbers are
written out whole (no `_`, nothing non-finite), RA in [0, 360) and Dec in [-90, 90], every
refusal BadInput (exit 2) naming the option. Hand-checked values, the command line, and
property-based tests seeded from the positions of the real Sesame answers."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REALDATA, assert_clean_error
from stdq.errors import BadInput
from stdq.targets import parse_dec, parse_position, parse_ra
from stdq.testing.resolvers import MastResolverEmulator, SesameEmulator


def EMULATORS():  # noqa: N802 - read by conftest's fake_server
    return [SesameEmulator(), MastResolverEmulator()]


def refused(parse, text) -> BadInput:
    with pytest.raises(BadInput) as err:
        parse(text)
    assert err.value.exit_code == 2
    return err.value


# -- hand-checked values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, degrees",
    [
        # d is degrees, also for RA: 14 + 3/60 + 38.56/3600 = 14.060711 deg (not 210.9)
        ("14d03m38.56s", 14.060711111111111),
        ("14d 03m 38.56s", 14.060711111111111),
        ("14D03M38.56S", 14.060711111111111),
        ("14\u00b003'38.56\"", 14.060711111111111),
        ("210d54m38.4s", 210.91066666666666),  # 210 + 54/60 + 38.4/3600
        ("359d59m59.9s", 359.99997222222223),
        ("0d00m00s", 0.0),
        ("14d03m", 14.05),
        # h, colons and spaces are hours: (14 + 3/60 + 38.56/3600) * 15 = 210.910667 deg
        ("14h03m38.56s", 210.91066666666666),
        ("14h03m38.56", 210.91066666666666),
        ("14H03M38.56S", 210.91066666666666),
        ("14h03m", 210.75),
        ("14h03", 210.75),
        ("14:03:38.56", 210.91066666666666),
        ("14 03 38.56", 210.91066666666666),
        ("+14:03:38.56", 210.91066666666666),
        ("00:00:01", 15 / 3600),
        # decimal degrees
        ("210.910674", 210.910674),
        ("2.1e2", 210.0),
        (".5", 0.5),
        ("0", 0.0),
        ("-0", 0.0),
        ("359.999", 359.999),
    ],
)
def test_ra_by_hand(text, degrees):
    value = parse_ra(text)
    assert value == pytest.approx(degrees, abs=1e-12)
    assert math.copysign(1.0, value) == 1.0  # never -0.0


@pytest.mark.parametrize(
    "text, degrees",
    [
        ("54d18m41.9s", 54.31163888888889),  # 54 + 18/60 + 41.9/3600
        ("-54d18m41.9s", -54.31163888888889),
        ("+54\u00b018'41.9\"", 54.31163888888889),
        ("+54:18:41.9", 54.31163888888889),
        ("-00:30:00", -0.5),
        ("-0d30m", -0.5),
        ("90d00m00s", 90.0),
        ("-90:00:00", -90.0),
        ("-00:00:00", 0.0),
        ("-0.0", 0.0),
        ("54.311650", 54.31165),
    ],
)
def test_dec_by_hand(text, degrees):
    value = parse_dec(text)
    assert value == pytest.approx(degrees, abs=1e-12)
    if degrees == 0:
        assert math.copysign(1.0, value) == 1.0


@pytest.mark.parametrize(
    "text, why",
    [
        ("1_0.5", "_"),  # float() would take it as 10.5
        ("1_0", "_"),
        ("2_10.9", "_"),
        ("nan", "finite"),
        ("NaN", "finite"),
        ("inf", "finite"),
        ("-inf", "finite"),
        ("Infinity", "finite"),
        ("1e999", "finite"),  # float() gives inf
        ("-1e999", "finite"),
        ("360", r"\[0, 360\)"),
        ("360.0", r"\[0, 360\)"),
        ("-0.0001", r"\[0, 360\)"),
        ("1e3", r"\[0, 360\)"),
        ("360d00m00s", r"\[0, 360\)"),
        ("24:00:00", "24"),
        ("24h00m", "24"),
        ("-01:00:00", "negative"),
        ("-1d00m", "negative"),
        ("14h03'38.56\"", "neither"),  # hours take m and s
        ("14d60m", "neither"),
        ("14:03:60", "neither"),
        ("12.5abc", "neither"),
        ("\u0661\u0662", "neither"),  # Arabic-Indic digits: float() takes them
        ("\uff11\uff12", "neither"),  # full-width digits
        ("14:03:38.56 junk", "neither"),
        ("", "neither"),
    ],
)
def test_ra_refused_naming_the_option(text, why):
    error = refused(parse_ra, text)
    assert error.message.startswith(f"--ra {text.strip()!r}"), error.message
    assert re.search(why, error.message), error.message


@pytest.mark.parametrize(
    "text, why",
    [
        ("+54h18m", "hours"),  # h is for RA only
        ("54h18m41.9s", "hours"),
        ("1_0.5", "_"),
        ("nan", "finite"),
        ("-1e999", "finite"),
        ("90.0001", r"\[-90, 90\]"),
        ("-91", r"\[-90, 90\]"),
        ("+90:00:01", r"\[-90, 90\]"),
        ("91d00m", r"\[-90, 90\]"),
        ("54:61:00", "neither"),
        ("54d18m41.9s!", "neither"),
    ],
)
def test_dec_refused_naming_the_option(text, why):
    error = refused(parse_dec, text)
    assert error.message.startswith(f"--dec {text!r}"), error.message
    assert re.search(why, error.message), error.message


def test_numbers_are_accepted_as_numbers():
    assert parse_position(210.910674, -0.5) == (210.910674, -0.5)
    assert parse_position(0, 90) == (0.0, 90.0)
    for value in (math.nan, math.inf, -math.inf, 1e300, 10**400):
        refused(parse_ra, value)
        refused(parse_dec, value)
    refused(parse_ra, True)  # not a number
    long_text = "1" * 10_000
    message = refused(parse_ra, long_text).message
    assert len(message) < 200  # the value is shortened in the message


# -- the command line and the library -------------------------------------------------------------


def test_cli_d_is_degrees_for_ra(stdq):
    result = stdq.run("--json", "targets", "add", "Deg", "--ra", "14d03m38.56s", "--dec", "54d18m41.9s")
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["ra"] == pytest.approx(14.060711111111111, abs=1e-12)
    assert entry["dec"] == pytest.approx(54.31163888888889, abs=1e-12)
    assert entry["ra_hms"] == "00:56:14.57"  # 14.0607111 deg / 15 = 0.937381 h


@pytest.mark.parametrize(
    "args, option, value",
    [
        (["--ra", "14:03:38.56", "--dec", "+54h18m"], "--dec", "+54h18m"),
        (["--ra", "1_0.5", "--dec", "10"], "--ra", "1_0.5"),
        (["--ra", "10", "--dec", "1_0"], "--dec", "1_0"),
        (["--ra", "-1e999", "--dec", "10"], "--ra", "-1e999"),
        (["--ra", "nan", "--dec", "10"], "--ra", "nan"),
        (["--ra", "360", "--dec", "10"], "--ra", "360"),
        (["--ra", "10", "--dec", "-90.5"], "--dec", "-90.5"),
    ],
)
def test_cli_refusals_exit_2_naming_the_option(stdq, args, option, value):
    for command in (["targets", "add", "Bad"], ["query", "panstarrs"]):
        result = stdq.run(*command, *args)
        line = assert_clean_error(result, 2)
        assert f"{option} {value!r}" in line, result.stderr
    assert json.loads(stdq.run("--json", "targets", "list").stdout) == []
    assert json.loads(stdq.run("--json", "jobs", "list").stdout) == []
    assert stdq.server.requests == []


def test_library_refuses_the_same(tmp_path, fake_server):
    from stdq import Stdq
    from stdq.testing.fakeserver import settings_toml

    config = tmp_path / "config.toml"
    config.write_text(settings_toml(fake_server))
    with Stdq(config, tmp_path / "data") as session:
        with pytest.raises(BadInput, match="--dec '54h00m'"):
            session.resolve("x", "10", "54h00m")
        with pytest.raises(BadInput, match="finite"):
            session.resolve(None, math.nan, 0)
        target = session.resolve("label", "14d03m38.56s", "-0d30m")
        assert (target.ra, target.dec) == (pytest.approx(14.060711111111111), -0.5)


# -- property-based: anything in, a valid value or BadInput out ---------------------------------------


def _real_positions() -> list[tuple[float, float, str, str]]:
    """(ra, dec, hh:mm:ss.ss, +dd:mm:ss.s) of every full %J line of the real Sesame answers."""
    found = []
    for path in sorted((REALDATA / "sesame").glob("*.txt")) if REALDATA.is_dir() else []:
        for line in path.read_text().splitlines():
            match = re.match(r"%J (\S+) (\S+) = (\d\d:\d\d:\d\d\.\d+) ([+-]\d\d:\d\d:\d\d\.\d+)", line)
            if match:
                found.append((float(match[1]), float(match[2]), match[3], match[4]))
    return found


REAL_POSITIONS = _real_positions()
# the parts coordinates are written with, for mutations of the real forms
PIECES = [":", " ", "h", "d", "m", "s", "'", '"', "\u00b0", "+", "-", ".", "_", "e", "E", "0", "9",
          "nan", "inf", "\u0661", "\t", "\n", "\x00", "1e999", "60", "24", "360", "90"]


def test_the_real_positions_are_seeded():
    # ngc3642 and castor: the sexagesimal forms Sesame prints beside its degrees
    assert len(REAL_POSITIONS) >= 2 or not REALDATA.is_dir()


@pytest.mark.skipif(not REAL_POSITIONS, reason="../shared/realdata is not beside the project")
@pytest.mark.parametrize("position", REAL_POSITIONS, ids=lambda p: p[2])
def test_real_sexagesimal_matches_its_degrees(position):
    """Sesame's `= 11:22:18.01 +59:04:27.2` is its degrees, truncated to 0.01 s and 0.1"."""
    ra, dec, hms, dms = position
    assert 0 <= ra - parse_ra(hms) < 0.01 * 15 / 3600 + 1e-12
    assert 0 <= abs(dec) - abs(parse_dec(dms)) < 0.1 / 3600 + 1e-12


def _check(parse, text, low, high, high_open):
    start = time.perf_counter()
    try:
        value = parse(text)
    except BadInput as exc:
        assert exc.exit_code == 2
        assert exc.message.startswith(("--ra ", "--dec ")), exc.message
    else:
        assert isinstance(value, float) and math.isfinite(value)
        assert low <= value and (value < high if high_open else value <= high)
    assert time.perf_counter() - start < 0.5


@st.composite
def mutated(draw, seeds):
    """A seed form with a few pieces inserted, deleted or replaced."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(PIECES) | st.text(max_size=3))
        if action == "insert":
            text = text[:where] + piece + text[where:]
        elif action == "delete":
            text = text[:where] + text[where + 1:]
        else:
            text = text[:where] + piece + text[where + 1:]
    return text


SEEDS = [p[2] for p in REAL_POSITIONS] + [p[3] for p in REAL_POSITIONS] + [
    "14:03:38.56", "+54:18:41.9", "14h03m38.56s", "54d18m41.9s", "14 03 38.56", "210.910674",
    "-0.5", "2.1e2", "54\u00b018'41.9\"",
]
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.one_of(mutated(SEEDS), st.text(max_size=40)))
def test_any_text_is_a_valid_value_or_bad_input(text):
    _check(parse_ra, text, 0.0, 360.0, True)
    _check(parse_dec, text, -90.0, 90.0, False)


@PROPERTY
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**400), 10**400))
def test_any_number_is_a_valid_value_or_bad_input(number):
    _check(parse_ra, number, 0.0, 360.0, True)
    _check(parse_dec, number, -90.0, 90.0, False)


@PROPERTY
@given(
    st.integers(0, 23), st.integers(0, 59), st.integers(0, 5999),
    st.sampled_from(["{h:02d}:{m:02d}:{s}", "{h} {m:02d} {s}", "{h}h{m:02d}m{s}s", "{h}h {m}m {s}"]),
)
def test_hours_round_trip(hours, minutes, centiseconds, form):
    seconds = f"{centiseconds // 100:02d}.{centiseconds % 100:02d}"
    text = form.format(h=hours, m=minutes, s=seconds)
    expected = (hours + minutes / 60 + centiseconds / 360000) * 15
    assert parse_ra(text) == pytest.approx(expected, abs=1e-9)


@PROPERTY
@given(
    st.sampled_from(["", "+", "-"]), st.integers(0, 89), st.integers(0, 59), st.integers(0, 599),
    st.sampled_from(["{sign}{d:02d}:{m:02d}:{s}", "{sign}{d}d{m:02d}m{s}s", "{sign}{d}\u00b0{m}'{s}\""]),
)
def test_degrees_round_trip(sign, degrees, minutes, deciseconds, form):
    text = form.format(sign=sign, d=degrees, m=minutes, s=f"{deciseconds // 10:02d}.{deciseconds % 10}")
    magnitude = degrees + minutes / 60 + deciseconds / 36000
    assert parse_dec(text) == pytest.approx(-magnitude if sign == "-" else magnitude, abs=1e-9)
    if ":" not in form and sign != "-":
        # with d or a degree sign the same text as an RA is degrees too, not hours
        assert parse_ra(text) == pytest.approx(magnitude, abs=1e-9)


@PROPERTY
@given(st.floats(0, 360, exclude_max=True), st.floats(-90, 90))
def test_decimal_degrees_round_trip_exactly(ra, dec):
    assert parse_ra(repr(ra)) == ra
    assert parse_dec(repr(dec)) == dec
    with_underscore = repr(ra).replace(".", "_", 1) if "." in repr(ra) else repr(ra) + "_0"
    if re.search(r"\d_\d", with_underscore):
        with pytest.raises(BadInput, match="_"):
            parse_ra(with_underscore)
