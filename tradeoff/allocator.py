"""Keep freed tensor memory in the process heap, so training steps stop paying page faults.

glibc's malloc serves a large tensor (a 256×16×28×28 activation is 12.8 MB) with a fresh
`mmap` or by growing the heap, and hands the memory back on `free`; every training step then
faults in and zeroes the same pages again. Raising the mmap and trim thresholds (what the
PyTorch CPU tuning guide gets from jemalloc or tcmalloc) keeps those pages mapped: about a
quarter off a `seed_conv` training step on 2 CPU threads (see `tradeoff-bench`). The price is
that a process holds on to its peak heap until it exits, which suits a training job.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the most glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30
_USER_SETTINGS = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
)


@functools.cache
def tune_allocator() -> str:
    """Raise glibc's mmap/trim thresholds once per process; return what the allocator runs as.

    Returns "glibc tuned" when applied, and leaves the allocator alone ("default: <why>") off
    glibc or when the user already chose allocator settings (`MALLOC_*_`, `GLIBC_TUNABLES`,
    or a preloaded allocator such as jemalloc), or set `TRADEOFF_TUNE_ALLOCATOR=0`.
    """
    if os.environ.get("TRADEOFF_TUNE_ALLOCATOR", "1") == "0":
        return "default: TRADEOFF_TUNE_ALLOCATOR=0"
    chosen = [name for name in _USER_SETTINGS if os.environ.get(name)]
    if chosen:
        return f"default: user settings ({', '.join(chosen)})"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "default: not glibc"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    applied = applied and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    if not applied:
        return "default: mallopt refused"
    return "glibc tuned"
