"""Freed memory given back to the system between the stages of a large job (glibc).

glibc serves a request of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) by its
own ``mmap``, unmapped when freed. But the threshold is dynamic: each time such a block
is freed it rises to that block's size (up to 32 MiB), and from then on blocks of that
size come from the heap, which keeps their pages after they are freed. A process that
parses a large answer, frees it, builds a table from it (a column of 100,000 float64
values is 0.8 MB) and writes it holds the freed pages of each stage on top of the
next one's: a 100,000-row Pan-STARRS light curve kept 23 MiB after its answers were
freed and 22 MiB after its table was written.

:func:`release` (``malloc_trim(0)``) gives the heap's free pages back; it is called
between stages (processing.process_product: before processing, before and after
writing). Fixing the threshold instead (``mallopt``) cost 6 times the page faults
(+1.3 s of system time for 1,000,000 rows). Elsewhere (another C library, another
system) this does nothing.
"""

from __future__ import annotations

import sys
from typing import Any

_TRIM: list[Any] = []


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (not glibc, not Linux)."""
    if not _TRIM:
        trim = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                libc = ctypes.CDLL(None)
                if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "malloc_trim"):
                    trim = libc.malloc_trim
                    trim.argtypes = [ctypes.c_size_t]
                    trim.restype = ctypes.c_int
            except (OSError, AttributeError, TypeError, ValueError):  # no usable C library
                trim = None
        _TRIM.append(trim)
    return _TRIM[0]


def release() -> bool:
    """Give the C heap's free pages back to the system; True when glibc gave some back."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
