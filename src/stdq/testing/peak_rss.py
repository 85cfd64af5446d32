"""``python -m stdq.testing.peak_rss ARGS...``: run ``stdq ARGS...`` in this process, then say its
peak resident memory on stderr as ``peak RSS <MiB> MiB (<KiB> KiB)`` (resource.getrusage, Linux
units) and exit with stdq's own code. For the benches and the tests that measure memory."""

from __future__ import annotations

import resource
import sys


def main(argv: list[str]) -> int:
    from stdq.cli import main as stdq_main

    code = 0
    try:
        stdq_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"peak RSS {peak / 1024:.0f} MiB ({peak} KiB)", file=sys.stderr)
    return code


def peak_kib(stderr: str) -> list[int]:
    """The peaks (KiB) that runs of this module printed in STDERR."""
    return [
        int(line.split("(")[1].split()[0])
        for line in stderr.splitlines()
        if line.startswith("peak RSS ") and "(" in line
    ]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
