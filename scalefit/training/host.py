"""Host memory for XLA's CPU runtime: keep freed memory in the process instead of returning it each step.

XLA's CPU runtime allocates a program's temporaries with malloc on every call. Above glibc's mmap
threshold (at most 32 MB) each call maps fresh pages, and the kernel faults and zeroes every one of them
again: a training step of the quickstart's d64-l2 spent half its time so (fwd+bwd 34.5 ms, 18.7 ms with
the pages kept; docs/training.md). `keep_freed_memory` turns glibc's mmap path off for this process, so
the temporaries are reused from the heap; the numbers computed do not change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, glibc's malloc.h
_M_MMAP_MAX = -4


@functools.cache
def keep_freed_memory() -> bool:
    """Make malloc serve every size from the heap and keep what is freed (Linux glibc; once per process).
    True when it took effect; elsewhere (musl, macOS) it does nothing and returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
