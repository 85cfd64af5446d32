"""examples/custom_service: a third-party service installed through the entry points.

The example package (Gaia Science Alerts light curves) is installed offline
into a folder of its own, that folder is put on the PYTHONPATH of the installed
``stdq``, and the service is queried against the package's own emulator mounted
on the test server. Expected values are computed here from the emulator's raw
numbers and the documented rules (README of the example), not from its code.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, assert_clean_error
from stdq.testing.fakeserver import settings_toml

EXAMPLE = ROOT / "examples" / "custom_service"
SERVICE_CLASS = "stdq_gaia_alerts.service:GaiaAlertsService"
PROCESSOR_CLASS = "stdq_gaia_alerts.processor:GaiaAlertsProcessor"

SN_RA, SN_DEC = 210.910674, 54.311650  # SN 2023ixf in stdq.testing.sky
M31_RA, M31_DEC = 10.684708, 41.268750

# The emulated light curve of Gaia23emu (emulator.py), usable epochs only: (JD(TCB), G Vega).
GAIA23EMU = [
    ("2460084.61745", 13.52),
    ("2460084.69132", 13.49),
    ("2460110.84433", 14.02),
    ("2460140.55001", 15.10),
    ("2460170.13370", 16.31),
]
AB_OFFSET = 25.8010 - 25.6874  # Gaia EDR3 G zero points, AB minus Vega (Riello et al. 2021)


def copy_example(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    return dest


# Only the example's emulator (mounted by the tests): the built-in ones are not needed.
EMULATORS = list


@pytest.fixture(scope="module")
def gaia_site(tmp_path_factory) -> Path:
    """The example package installed with pip, offline, into a folder of its own."""
    base = tmp_path_factory.mktemp("gaia_plugin")
    src = copy_example(base / "src")
    site = base / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert result.returncode == 0, (
        "pip could not build examples/custom_service offline (it needs setuptools>=70.1, "
        "which the test extra installs):\n" + result.stderr[-3000:]
    )
    assert list(site.glob("stdq_gaia_alerts-*.dist-info/entry_points.txt"))
    return site


@pytest.fixture
def gaia(stdq, gaia_site, monkeypatch):
    """The `stdq` runner with the plug-in installed and its emulator mounted and configured."""
    monkeypatch.syspath_prepend(str(gaia_site))
    from stdq_gaia_alerts.emulator import GaiaAlertsEmulator

    stdq.server.mount(GaiaAlertsEmulator())
    stdq.write_settings()
    stdq.extra_env["PYTHONPATH"] = str(gaia_site)
    return stdq


def run_json(runner, *args: str) -> dict:
    result = runner.run("--json", *args)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return json.loads(result.stdout)


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def utc_mjd_from_tcb_jd(jd: float) -> float:
    """TCB -> TDB (IAU 2006 B3: TDB = TCB - L_B (JD_TCB - T0) 86400 s + TDB0), TDB ~ TT
    (periodic terms < 2 ms), TT - TAI = 32.184 s, TAI - UTC = 37 s since 2017-01-01."""
    lb, t0, tdb0 = 1.550519768e-8, 2443144.5003725, -6.55e-5
    tdb = jd - (lb * (jd - t0) * 86400.0 - tdb0) / 86400.0
    return tdb - (32.184 + 37.0) / 86400.0 - 2400000.5


def hodgkin(g: float) -> float:
    return 3.43779 - g / 1.13759 + (g / 3.44123) ** 2 - (g / 6.51996) ** 3 + (g / 11.45922) ** 4


def haversine_arcsec(ra1, dec1, ra2, dec2) -> float:
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    s = math.sin((d2 - d1) / 2) ** 2 + math.cos(d1) * math.cos(d2) * math.sin((r2 - r1) / 2) ** 2
    return math.degrees(2 * math.asin(math.sqrt(s))) * 3600


def index_row(runner, name: str) -> dict[str, str]:
    """The alert's row of the emulated alerts.csv, fetched as a client would."""
    body = urllib.request.urlopen(runner.server.url("gaia-alerts") + "/alerts.csv").read().decode()
    lines = body.splitlines()
    header = [h.strip().lstrip("#") for h in lines[0].split(",")]
    for row in csv.reader(lines[1:]):
        if row and row[0] == name:
            return dict(zip(header, row, strict=True))
    raise AssertionError(f"{name} not in the emulated index")


def test_services_list_and_help_show_the_plugin(gaia):
    result = gaia.run("services", "list")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("gaia-alerts\t"))
    assert "Gaia Science Alerts" in line and gaia.server.url("gaia-alerts") in line
    assert SERVICE_CLASS in line

    entry = next(s for s in run_json(gaia, "services", "list") if s["name"] == "gaia-alerts")
    assert entry["class"] == SERVICE_CLASS
    assert entry["supports_async"] is False and entry["error"] is None

    helptext = gaia.run("query", "gaia-alerts", "--help")
    assert helptext.returncode == 0, helptext.stderr
    words = " ".join(helptext.stdout.split())  # help is wrapped to the terminal's width
    for text in ("Gaia Science Alerts", "--radius", "at most 60", "--mjd-min", "--date-max"):
        assert text in words

    shown = run_json(gaia, "services", "show", "gaia-alerts")
    assert shown["data_product_type"] == "gaia_alerts_photometry"
    assert shown["processor"] == PROCESSOR_CLASS
    assert shown["settings"]["ab_offset"]["default"] == pytest.approx(0.1136)
    assert shown["settings"]["error_model"]["value"] == "hodgkin2021"
    assert shown["settings"]["url"]["value"] == gaia.server.url("gaia-alerts")
    assert shown["secrets"] == {}


def test_query_by_coordinates_gives_the_hand_computed_photometry(gaia):
    out = run_json(gaia, "query", "gaia-alerts", "--ra", str(SN_RA), "--dec", str(SN_DEC))
    assert out["rows"] == 5 and out["detections"] == 5

    # The nearest alert was taken (not Gaia23emv, 7" away and first in the index).
    paths = [r.path for r in gaia.server.log_of(emulator="gaia-alerts")]
    assert paths == ["/gsaweb/alerts/alerts.csv", "/gsaweb/alerts/alert/Gaia23emu/lightcurve.csv"]

    alert = index_row(gaia, "Gaia23emu")
    alert_ra, alert_dec = float(alert["RaDeg"]), float(alert["DecDeg"])
    sep = haversine_arcsec(SN_RA, SN_DEC, alert_ra, alert_dec)
    assert 0.45 < sep < 0.55  # placed 0.5" east, rounded to 1e-5 deg

    rows = read_csv(out["path"])
    assert len(rows) == len(GAIA23EMU)
    for row, (jd_text, g_vega) in zip(rows, GAIA23EMU, strict=True):
        jd = float(jd_text)
        g_ab = g_vega + AB_OFFSET
        flux = 10 ** (-0.4 * (g_ab - 23.9))
        sigma = hodgkin(g_vega)  # every G here is inside 13..21: no clipping
        assert float(row["mjd"]) == pytest.approx(utc_mjd_from_tcb_jd(jd), abs=1e-7)
        assert float(row["gaia_jd_tcb"]) == pytest.approx(jd, abs=1e-9)
        assert float(row["gaia_g_vega"]) == pytest.approx(g_vega, abs=1e-12)
        assert float(row["magnitude"]) == pytest.approx(g_ab, abs=1e-9)
        assert float(row["flux_ujy"]) == pytest.approx(flux, rel=1e-9)
        assert float(row["magnitude_error"]) == pytest.approx(sigma, rel=1e-9)
        assert float(row["flux_err_ujy"]) == pytest.approx(flux * sigma * math.log(10) / 2.5, rel=1e-9)
        assert float(row["snr"]) == pytest.approx(2.5 / math.log(10) / sigma, rel=1e-9)
        assert row["detected"] == "True" and row["limit"] == "" and row["flux_kind"] == "total"
        assert (row["survey"], row["telescope"], row["filter"], row["band"]) == ("Gaia", "Gaia", "G", "gaia::g")
        assert (float(row["zp"]), row["zpsys"]) == (23.9, "ab")
        assert float(row["ra"]) == alert_ra and float(row["dec"]) == alert_dec
        assert float(row["sep_arcsec"]) == pytest.approx(sep, abs=1e-3)
        assert row["object_id"] == "Gaia23emu" and row["source_row_id"] == f"Gaia23emu:{jd_text}"
    # One spot value written out: G 13.52 -> AB 13.6336 -> 10**(0.4 * 10.2664) = 12780.86 uJy.
    assert float(rows[0]["flux_ujy"]) == pytest.approx(12780.86, rel=1e-6)

    meta = json.loads((Path(out["path"]).parent / "product.json").read_text())
    assert meta["left_out"] == {
        "magnitude 'untrusted' (the alert pipeline's flag)": 1,
        "magnitude 'null' (no measurement)": 1,
    }
    assert meta["service_notes"]["alert"]["name"] == "Gaia23emu"
    # The raw answers are kept byte for byte.
    base = gaia.server.url("gaia-alerts")
    for raw in meta["raw_files"]:
        remote = base + ("/alerts.csv" if raw["name"] == "alerts.csv" else "/alert/Gaia23emu/lightcurve.csv")
        assert raw["sha256"] == hashlib.sha256(urllib.request.urlopen(remote).read()).hexdigest()
    assert sorted(r["name"] for r in meta["raw_files"]) == ["alerts.csv", "lightcurve.csv"]


def test_time_range_is_applied_and_counted(gaia):
    out = run_json(
        gaia, "query", "gaia-alerts", "--ra", str(SN_RA), "--dec", str(SN_DEC),
        "--mjd-min", "60100", "--radius", "10",
    )
    # JD 2460084.6 -> MJD 60084.1 (two rows) fall before 60100; the nearest alert is still Gaia23emu.
    assert out["rows"] == 3
    meta = json.loads((Path(out["path"]).parent / "product.json").read_text())
    assert meta["left_out"]["outside the requested time range"] == 2
    assert sum(meta["left_out"].values()) == 4


def test_no_alert_and_no_usable_rows_exit_5(gaia):
    empty = gaia.run("query", "gaia-alerts", "--ra", "150", "--dec", "-30")
    assert "no Gaia alert within 2 arcsec" in assert_clean_error(empty, 5)
    untrusted = gaia.run("query", "gaia-alerts", "--ra", "170.5750583", "--dec", "59.0742417")
    assert "untrusted" in assert_clean_error(untrusted, 5)


def test_html_instead_of_the_index_fails_cleanly(gaia):
    gaia.server.add_fault("html", r"alerts\.csv", times=5)
    result = gaia.run("query", "gaia-alerts", "--ra", str(SN_RA), "--dec", str(SN_DEC))
    assert_clean_error(result, 1)
    assert "Name" in result.stderr


def test_bad_error_model_setting_is_a_config_error(gaia):
    text = gaia.config_path.read_text().replace(
        "[services.gaia-alerts]\n", '[services.gaia-alerts]\nerror_model = "gaussian"\n'
    )
    gaia.config_path.write_text(text)
    result = gaia.run("query", "gaia-alerts", "--ra", str(SN_RA), "--dec", str(SN_DEC))
    assert "error_model" in assert_clean_error(result, 3)


def test_registered_through_settings_only(stdq, tmp_path, monkeypatch):
    """No entry points: the classes on the path, a [services.gaia2] table and [data_processors]."""
    src = copy_example(tmp_path / "example") / "src"
    monkeypatch.syspath_prepend(str(src))
    from stdq_gaia_alerts.emulator import GaiaAlertsEmulator

    emulator = stdq.server.mount(GaiaAlertsEmulator())
    emulator.service_name = None  # no [services.gaia-alerts] table: that name is not installed here
    stdq.config_path.write_text(
        settings_toml(stdq.server)
        + "\n[services.gaia2]\n"
        + f'class = "{SERVICE_CLASS}"\n'
        + f'url = "{emulator.base_url}"\n'
        + "ab_offset = 0.0\n"
        + 'error_model = "none"\n'
        + "\n[data_processors]\n"
        + f'gaia_alerts_photometry = "{PROCESSOR_CLASS}"\n'
    )
    stdq.extra_env.update({"PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"})

    names = [s["name"] for s in run_json(stdq, "services", "list")]
    assert "gaia2" in names and "gaia-alerts" not in names

    out = run_json(stdq, "query", "gaia2", "--ra", str(M31_RA), "--dec", str(M31_DEC))
    assert out["rows"] == 3 and "/gaia2/" in out["path"]
    rows = read_csv(out["path"])
    # Gaia19emu uses the older header "#Date,JD,averagemag."; ab_offset 0 keeps G as given.
    assert [float(r["magnitude"]) for r in rows] == [16.02, 16.05, 16.61]
    assert [float(r["flux_ujy"]) for r in rows] == pytest.approx(
        [10 ** (-0.4 * (g - 23.9)) for g in (16.02, 16.05, 16.61)], rel=1e-12
    )
    assert all(r["flux_err_ujy"] == "" and r["magnitude_error"] == "" and r["snr"] == "" for r in rows)
    assert {r["object_id"] for r in rows} == {"Gaia19emu"}


# -- the README's offline session, line by line ----------------------------------------------------


def readme_offline_block() -> list[str]:
    """The command lines of the README's offline code block (comments stripped)."""
    text = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    block = text.split("Offline, against the package's emulator", 1)[1].split("```", 2)[1]
    return [line.split("   #", 1)[0].strip() for line in block.strip().splitlines()]


def test_readme_offline_session_runs(gaia_site, tmp_path):
    """`python -m stdq.testing.fakeserver --settings` serves the plug-in's emulator (entry point
    stdq.emulators) beside stdq's own; the README's queries then work with no network."""
    import time

    lines = readme_offline_block()
    assert lines[0].startswith("python -m stdq.testing.fakeserver --port 8765 --settings emulators.toml")
    assert lines[0].endswith("&") and lines[-1] == "kill %1"
    assert lines[1] == "export STDQ_CONFIG=$PWD/emulators.toml STDQ_DATA_DIR=$PWD/gaia-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STDQ_")}
    env.update(PYTHONPATH=str(gaia_site), NO_COLOR="1", HOME=str(tmp_path),
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    # the same command, on a free port (8765 may be taken on a shared machine)
    server_cmd = lines[0].rstrip("&").replace("--port 8765", "--port 0").split()
    server = subprocess.Popen([sys.executable, *server_cmd[1:]], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = server.stdout.readline()  # the settings file is written, then one line per emulator
        while printed and not printed.startswith("gaia-alerts: "):
            printed = server.stdout.readline()
        assert printed.startswith("gaia-alerts: http://127.0.0.1:"), server.stderr.read()
        assert '[services.gaia-alerts]\nurl = "http://127.0.0.1:' in (tmp_path / "emulators.toml").read_text()
        env.update(STDQ_CONFIG=str(tmp_path / "emulators.toml"), STDQ_DATA_DIR=str(tmp_path / "gaia-data"))
        codes = []
        for line in lines[2:-1]:
            started = time.monotonic()
            result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=120)
            assert "Traceback" not in result.stderr, result.stderr
            assert time.monotonic() - started < 60
            codes.append((result.returncode, result.stdout, result.stderr))
    finally:
        server.terminate()
        server.wait(timeout=10)
    (sn_code, _, sn_err), (m31_code, m31_out, m31_err), (empty_code, _, empty_err) = codes
    assert sn_code == 0, sn_err
    rows = read_csv(tmp_path / "sn2023ixf_gaia.csv")
    assert len(rows) == 5 and {r["object_id"] for r in rows} == {"Gaia23emu"}
    assert m31_code == 0, m31_err
    assert "object: Gaia19emu" in m31_out and "3 rows, 3 detections" in m31_out
    assert empty_code == 5, empty_err
    assert "no Gaia alert" in empty_err
