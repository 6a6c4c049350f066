"""The C allocator's part of the daemon's memory (glibc only; elsewhere nothing changes).

glibc serves a block of 128 KiB or more from its own mapping, returned to the system
when freed, but after such a block is freed it raises that threshold (up to 32 MiB),
so that the next large blocks - a /metrics body of 100 000 checks, a worker's shard of
checks, the config file's text - come from the heap, whose free pages stay in the RSS.
Fixing the threshold at its initial 128 KiB keeps every large block in a mapping of
its own, for a few more system calls on the rare large allocations.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter
THRESHOLD = 128 * 1024  # glibc's own initial value


def pin_mmap_threshold() -> bool:
    """True when the threshold is now fixed (glibc), False where there is no ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
