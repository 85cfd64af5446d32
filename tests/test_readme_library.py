"""The README's "As a library" session runs as written (in-process, against the emulators)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sqlite3
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def library_block() -> str:
    """The first python code block of the README's "As a library" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## As a library\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block in the README's As a library section"
    return match.group(1)


def _wait_for_workers(data_dir: Path, timeout: float = 30.0) -> None:
    """The autostarted burst worker exits once the queue is empty: wait for it."""
    path = data_dir / "stdq.sqlite3"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(path)
        try:
            pids = [r[0] for r in conn.execute("SELECT pid FROM workers")]
        finally:
            conn.close()
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return
        time.sleep(0.1)


def test_the_readme_session_uses_only_stdq():
    code = library_block()
    assert "from stdq import NoData, Stdq" in code
    for internal in ("stdq.api", "JobQueue", "Store(", "sqlite3", "stdq.jobs"):
        assert internal not in code


def test_the_readme_session_runs(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("STDQ_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(library_block(), "README.md", "exec"), {"__name__": "readme"})
    _wait_for_workers(tmp_path / "stdq-notebook" / "data")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("SN 2023ixf 210.91")
    assert re.match(r"\d+ rows in .*panstarrs.*photometry\.csv$", lines[1])
    assert re.match(r"\d+ succeeded \d+ rows, \d+ detections", lines[2])
    assert "uJy" in lines[3]
    assert any(" atlas " in line for line in lines) and any(" panstarrs " in line for line in lines)
    assert any(line.startswith("reprocessed:") and line.endswith("intact: True") for line in lines)
    assert lines[-1].startswith("exit 5 ")
