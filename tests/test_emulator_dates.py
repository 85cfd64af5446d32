"""The emulators make data up to the present (issue 11 item 7): after the hand-checked 2023
history, the last nights ending last night (by the emulator's clock, or a pinned anchor_mjd),
and add_night() appends exactly one more night of epochs."""

from __future__ import annotations

import time

from stdq.testing import sky
from stdq.testing.atlas import AtlasEmulator, result_text
from stdq.testing.sky import RECENT_NIGHTS, last_night_mjd

SN = sky.find("SN 2023ixf")
assert SN is not None


def mjds(text: str) -> list[float]:
    return [float(line.split()[0]) for line in text.splitlines()[1:] if line.strip()]


def test_last_night_is_the_day_before_today():
    # 2026-12-01 23:00 UTC is MJD 61375.958: last night is 61374
    assert last_night_mjd(1796166000.0) == 61374
    assert last_night_mjd(time.time()) == int(time.time() / 86400 + 40587) - 1


def test_the_data_end_last_night_and_never_in_the_future():
    emulator = AtlasEmulator()
    text = emulator.result_file(SN.ra, SN.dec, 57000.0, None, False)
    now_mjd = time.time() / 86400 + 40587
    epochs = mjds(text)
    assert max(epochs) < now_mjd and max(epochs) > now_mjd - 2
    recent = [m for m in epochs if m > 60301]
    assert len(recent) == 4 * RECENT_NIGHTS  # four exposures a night, every one of the last nights


def test_the_history_is_unchanged():
    """The hand-checked 2023 rows are the same whatever the anchor."""
    emulator = AtlasEmulator()
    emulator.anchor_mjd = 61000
    pinned = emulator.result_file(SN.ra, SN.dec, 57000.0, 60300.5, False)
    assert pinned == result_text(SN.ra, SN.dec, 57000.0, 60300.5, False)


def test_add_night_appends_exactly_one_night():
    emulator = AtlasEmulator()
    emulator.anchor_mjd = 61000
    before = emulator.result_file(SN.ra, SN.dec, 57000.0, None, False)
    assert emulator.add_night() == 61001
    after = emulator.result_file(SN.ra, SN.dec, 57000.0, None, False)
    old, new = mjds(before), mjds(after)
    added = [m for m in new if m not in old]
    assert len(added) == 4 and all(61000.5 < m < 61001.5 for m in added)
    # every earlier row is still there byte for byte (same Obs, same values): an update asks
    # for the new night only and finds exactly these 4 rows new
    assert set(before.splitlines()) <= set(after.splitlines())
    assert len(after.splitlines()) == len(before.splitlines()) + 4
    assert emulator.add_night() == 61002
    assert len(emulator.result_file(SN.ra, SN.dec, 61001.5, None, False).splitlines()) == 1 + 4


def test_the_clock_moves_the_data():
    emulator = AtlasEmulator()
    emulator.clock = lambda: 1796166000.0  # 2026-12-01 23:00 UTC
    assert emulator.last_night() == 61374
    assert max(mjds(emulator.result_file(SN.ra, SN.dec, 57000.0, None, False))) < 61375.958


# -- ZFPS ------------------------------------------------------------------------------------------


def zfps_file(emulator, ra: float, dec: float, jdstart: float) -> list[str]:
    from stdq.testing.zfps import ZfpsRequest, result_file

    req = ZfpsRequest(req_id=1, email="x", ra=ra, dec=dec, jdstart=jdstart, jdend=2470000.5,
                      created=0.0, ready_at=0.0, exitcode=0, file_format=emulator.file_format,
                      recent=emulator.recent())
    lines = [line for line in result_file(req).decode().splitlines() if line.startswith(" ")]
    return lines[1:]  # without the column names


def test_zfps_recent_nights_and_add_night():
    from stdq.testing.zfps import ZfpsEmulator

    emulator = ZfpsEmulator()
    emulator.anchor_mjd = 61000
    rows = zfps_file(emulator, SN.ra, SN.dec, 2400000.5 + 60500)
    assert len(rows) == RECENT_NIGHTS and all(" ZTF_i " in r for r in rows)
    assert emulator.add_night() == 61001
    again = zfps_file(emulator, SN.ra, SN.dec, 2400000.5 + 60500)
    assert len(again) == RECENT_NIGHTS + 1
    # only the new night after the last one's epochs
    assert len(zfps_file(emulator, SN.ra, SN.dec, 2400000.5 + 61000.5)) == 1
    emulator.recent_nights = 0  # the hand-checked history alone
    assert zfps_file(emulator, SN.ra, SN.dec, 2400000.5 + 60500) == []


def test_zfps_default_ends_last_night():
    from stdq.testing.zfps import ZfpsEmulator

    emulator = ZfpsEmulator()
    first, last = emulator.recent()
    assert last == int(time.time() / 86400 + 40587) - 1 and last - first + 1 == emulator.recent_nights


def test_the_anchor_and_the_nights_are_parameters():
    from stdq.testing.zfps import ZfpsEmulator

    atlas = AtlasEmulator(anchor_mjd=60900, recent_nights=3)
    assert atlas.last_night() == 60900
    assert len([m for m in mjds(atlas.result_file(SN.ra, SN.dec, 60301.0, None, False))]) == 12
    assert ZfpsEmulator(anchor_mjd=60900, recent_nights=3).recent() == (60898, 60900)
