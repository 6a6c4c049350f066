"""Real storage faults for end-to-end tests: a small tmpfs that fills up.

``small_tmpfs`` mounts a private tmpfs (root only; outside CI a missing
privilege skips, with CI=true it fails, see ``tests.conftest.require``).
``fill`` takes every free byte with a filler file and ``drain`` frees it
again, so SQLite's next write fails with "database or disk is full" and
later succeeds, as on a real disk that ran full and was cleaned up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import require

FILLER = ".filler"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "16m") -> Iterator[Path]:
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "probed-test", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    require(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def fill(mount: Path) -> int:
    """Write until ENOSPC, in smaller and smaller pieces; returns the bytes taken."""
    written = 0
    with (mount / FILLER).open("ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            chunk = b"\0" * size
            while True:
                try:
                    n = f.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                written += n or 0
                if not n:
                    break
    return written


def drain(mount: Path) -> None:
    (mount / FILLER).unlink(missing_ok=True)
