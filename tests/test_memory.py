"""stdq.memory.release: the C heap's free pages go back to the system (glibc), in a fresh
process whose heap holds 64 MiB of freed blocks between blocks in use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json
from stdq import memory

def rss_kib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4
big = bytearray(8 << 20)  # freed: glibc's mmap threshold rises to 8 MiB
del big
blocks = [bytearray(1 << 20) for _ in range(128)]  # now from the heap, pages touched
before = rss_kib()
del blocks[::2]  # 64 MiB freed between blocks still used: no top of the heap to trim
freed = rss_kib()
gave = memory.release()
print(json.dumps({"before": before, "freed": freed, "after": rss_kib(), "gave": gave}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim (Linux)")
def test_release_gives_freed_heap_pages_back():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["freed"] > got["before"] - 16 * 1024  # freeing alone kept most of the 64 MiB
    assert got["gave"] is True
    assert got["after"] < got["freed"] - 48 * 1024  # release gave at least 48 MiB back


def test_release_is_harmless_without_glibc(monkeypatch):
    from stdq import memory

    monkeypatch.setattr(memory, "_TRIM", [None])
    assert memory.release() is False
