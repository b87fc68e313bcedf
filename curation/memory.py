"""Give freed memory back to the operating system (Dagster-free).

A run allocates and frees hundreds of megabytes per step: numpy arrays of hashes, Python
``bytes`` of decompressed files, the buffers of rapidfuzz and rensa. glibc serves an allocation
of at least ``M_MMAP_THRESHOLD`` bytes with its own ``mmap``, which ``free`` unmaps at once.
Smaller ones come from the heap and the per-thread arenas, where a freed block stays resident
until everything above it is free too.

glibc starts the threshold at 128 KiB, but *raises* it each time an mmapped block is freed, up to
32 MiB (``mallopt(3)``: "dynamic mmap threshold"). After the first large array is freed, the
next arrays of that size are carved from the arenas, and the arenas keep their pages after the
step that used them. Setting the threshold explicitly turns the adjustment off (same page).

Measured on the scale-1.0 benchmark corpus (``docs/benchmarks.md``, "third round"): the whole
run's peak RSS falls from 1,942 to 1,501 MiB, and the anonymous memory held between steps by
about 300 MiB, at no measurable cost in time. The allocators of Arrow (mimalloc) and polars
(jemalloc) were tried too: releasing their free pages early saved little more and cost 15-35 %
in time, so they keep their defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["DEFAULT_MMAP_THRESHOLD", "pin_mmap_threshold"]

#: glibc's own starting threshold (``mallopt(3)``, ``M_MMAP_THRESHOLD``: "default 128*1024").
DEFAULT_MMAP_THRESHOLD = 128 * 1024

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def pin_mmap_threshold(threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap and trim thresholds at ``threshold`` bytes for this process.

    Allocations of ``threshold`` bytes or more then always get their own mapping, returned to
    the OS when freed, and the heap top is trimmed above ``threshold`` free bytes. Returns
    whether it took effect: ``False`` on a C library other than glibc (musl, macOS) or for
    ``threshold <= 0``, which leaves the allocator as it is.
    """
    if threshold <= 0 or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, threshold) and libc.mallopt(_M_TRIM_THRESHOLD, threshold)
    )
