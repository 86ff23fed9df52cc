"""Freed memory kept for reuse: glibc's allocator told not to hand large blocks to the
kernel and back on every call.

By default glibc serves a request above its mmap threshold (128 KiB, rising with use to at
most 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` when freed, and trims the
heap's free top above 128 KiB. A training call of a layer allocates and frees temporaries
of tens of megabytes (the gate buffers, their bf16 copies, the products' results), so each
call first-touches every page of them again: a minor page fault per 4 KiB page. With
``keep_freed_memory`` those blocks come from the heap (``M_MMAP_MAX`` 0) and stay there
when freed (``M_TRIM_THRESHOLD`` 1 GiB), so the next call reuses pages already mapped.
The price: the process keeps its freed memory (up to its peak) instead of returning it
to the system, for every allocation in the process, torch's and NumPy's included.

The fused kernels apply it when they load (``fused.load``); ``RNNKIT_MALLOC=system`` leaves
the allocator as it was. Elsewhere than glibc (another C library, macOS, Windows) it does
nothing. Measurements in docs/kernels.md ("Memory that stays mapped").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, <malloc.h>
TRIM_THRESHOLD = 1 << 30
"""Bytes of free memory at the top of the heap kept before glibc returns it to the system."""

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the setting above once per process; True if it is in force (glibc on Linux,
    not opted out with ``RNNKIT_MALLOC=system``)."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get("RNNKIT_MALLOC", "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has no such symbol)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
