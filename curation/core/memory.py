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

Measured on the scale-1.0 benchmark corpus, whole run in one process (``docs/benchmarks.md``,
"third round"; one to three runs per value, so differences of ~2 s are noise):

======================  ==================  ==============  =============
threshold               peak RSS, MiB       wall s          CPU s
======================  ==================  ==============  =============
glibc's dynamic one     1,446 - 1,701       47.7 - 50.8     60.4 - 64.3
128 KiB                 1,376 - 1,495       52.1 - 53.8     65.3 - 68.5
4 MiB (the default)     1,391 - 1,424       51.3 - 51.9     63.5 - 64.6
16 MiB                  1,420 - 1,441       48.3 - 54.2     60.9 - 66.9
======================  ==================  ==============  =============

At 128 KiB every mid-sized temporary array is a fresh mapping whose pages fault in again; 4 MiB
keeps those in the arenas and still returns the large arrays (hashes, word hashes, signature
matrices), which are what piled up. The allocators of Arrow (mimalloc) and polars (jemalloc)
were tried too: releasing their free pages early saved little and cost 20-55 % in time, so they
keep their defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["DEFAULT_MMAP_THRESHOLD", "MAX_MMAP_THRESHOLD", "pin_mmap_threshold"]

#: The threshold :func:`pin_mmap_threshold` sets by default (see the table above; glibc's own
#: starting value is 128 KiB).
DEFAULT_MMAP_THRESHOLD = 4 * 1024 * 1024

#: The largest threshold glibc documents on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX`` =
#: 4 MiB x ``sizeof(long)``, ``mallopt(3)``); the upper end of the setting's range.
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024

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
