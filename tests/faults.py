"""Storage faults for end-to-end tests: a small tmpfs that fills up, a silent network.

``small_tmpfs`` mounts a private tmpfs (root only; outside CI a missing
privilege skips, with CI=true it fails, see ``tests.conftest.require``).
``fill`` takes every free byte with a filler file and ``drain`` frees it
again, so SQLite's next write fails with "database or disk is full" and
later succeeds, as on a real disk that ran full and was cleaned up.
``BlackHoleProxy`` stands between a daemon and PostgreSQL and can drop
everything without closing a connection.
"""

from __future__ import annotations

import asyncio
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


class BlackHoleProxy:
    """A loopback TCP proxy to a real server whose link can go silent.

    A fake for the one network fault a real server cannot produce: packets
    dropped, not refused. ``cut()`` stops forwarding in both directions and
    closes nothing: a request on an open connection gets no answer, and a new
    connection is accepted but never reaches the server (as behind a dead link
    or a firewall that drops). ``mend()`` closes what stalled (TCP would have
    given up on it) and forwards new connections again. Both may be called
    from another thread (``asyncio.to_thread``).
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.silent = False
        self._streams: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> BlackHoleProxy:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._close_all()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.silent = True  # read by the pumps: a plain flag is safe across threads

    def mend(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._mend)

    def _mend(self) -> None:
        self._close_all()
        self.silent = False

    def _close_all(self) -> None:
        for writer in list(self._streams):
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._streams.add(writer)
        try:
            if self.silent:
                await self._pump(reader, None)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            self._streams.add(up_writer)
            try:
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
            finally:
                self._streams.discard(up_writer)
                up_writer.close()
        finally:
            self._streams.discard(writer)
            writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
    ) -> None:
        """Forward until EOF; while silent, what arrives is dropped."""
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if writer is not None and not self.silent:
                    writer.write(data)
                    await writer.drain()
        if writer is not None:
            writer.close()
