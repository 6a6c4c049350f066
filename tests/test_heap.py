"""The C allocator's large-block threshold stays where glibc starts it."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from probed.daemon import heap


def test_the_threshold_is_pinned_where_glibc_has_mallopt() -> None:
    has_mallopt = hasattr(ctypes.CDLL(None), "mallopt")
    assert heap.pin_mmap_threshold() is has_mallopt
    assert heap.pin_mmap_threshold() is has_mallopt  # again: no harm


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"), reason="not glibc")
def test_a_freed_large_buffer_leaves_no_resident_memory_behind() -> None:
    """After a 16 MiB block is freed, glibc would serve blocks up to 16 MiB from its heap
    and keep their pages; pinned, 30 MB of such blocks built and freed leave nothing."""
    program = """
import sys
from probed.daemon import heap
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
if sys.argv[1] == "pinned":
    heap.pin_mmap_threshold()
big = bytes(16 << 20)
del big
before = rss()
chunks = [bytes(300_000) for _ in range(70)]  # 20 MiB in blocks above the initial threshold
del chunks
print(rss() - before)
"""
    grown = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", program, mode], capture_output=True, text=True, check=True
            ).stdout
        )
        for mode in ("default", "pinned")
    }
    assert grown["default"] > 4 << 20, grown  # the case the pin is for
    assert grown["pinned"] < 1 << 20, grown
