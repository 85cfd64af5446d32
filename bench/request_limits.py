"""The request limits against the emulators: an endless body under the default `[http] max_bytes`
(peak RSS of the `stdq` process, via resource.getrusage in it) and a 1-byte-per-second body under
`[http] deadline` (wall time and exit code). Runs in well under a minute.

    python bench/request_limits.py [--max-bytes N] [--deadline S]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from stdq.testing.fakeserver import FakeServer, settings_toml

QUERY = ["query", "ztf", "--ra", "210.910674", "--dec", "54.311650"]


def run(server: FakeServer, tmp: Path, http: str) -> tuple[int, float, str]:
    config = tmp / "config.toml"
    config.write_text(settings_toml(server).replace("[http]\n", f"[http]\n{http}\n", 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STDQ_")}
    env.update(STDQ_CONFIG=str(config), STDQ_DATA_DIR=str(tmp / "data"), HOME=str(tmp), NO_COLOR="1")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "stdq.testing.peak_rss", *QUERY], capture_output=True, text=True,
                          env=env, timeout=120)
    return done.returncode, time.monotonic() - started, done.stderr.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-bytes", type=int, default=512 * 1024 * 1024)
    parser.add_argument("--deadline", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name, FakeServer() as server:
        tmp = Path(name)
        server.add_fault("endless", "/irsa", times=10)
        code, took, err = run(server, tmp, f"max_bytes = {args.max_bytes}")
        print(f"endless body, max_bytes {args.max_bytes}: exit {code} in {took:.1f} s")
        print(textwrap.indent(err, "  "))
        server.clear_faults()
        server.add_fault("slow_body", "/irsa", times=10, options={"interval": 1.0})
        code, took, err = run(server, tmp, f"deadline = {args.deadline}")
        print(f"1 byte/s body, deadline {args.deadline:g} s: exit {code} in {took:.1f} s")
        print(textwrap.indent(err, "  "))


if __name__ == "__main__":
    main()
