"""SIGTERM ends the real daemon within the longest test timeout + 1 s, however loaded.

The daemon here is as busy as a small one can be made: more tests due than
its ``concurrency`` lets run, every one against a server that never answers
(each runs to its timeout), its loop stalled just before the stop (the tests
in flight have their timeouts moved on by the stall, docs/sla-rules.md), and
a hook receiver that takes every delivery and never answers. None of it may
hold the daemon past its deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProcess, wait_for

pytestmark = pytest.mark.e2e
TIMEOUT = 1.0  # every check's timeout: the longest
STALL = 0.5  # seconds each process' loop is blocked just before the stop
EXIT = 1.0  # seconds for the interpreter to start exiting and be reaped (not the daemon's work)


@asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, list[int]]]:
    """Accepts connections and never answers; (port, connection count)."""
    seen = [0]

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[0] += 1
        await reader.read()  # until the daemon hangs up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()


def config(tmp: Path, port: int, hook_port: int, workers: int) -> Path:
    checks = "\n".join(
        f'      - {{name: c{i}, type: http, url: "http://127.0.0.1:{port}/{i}"}}' for i in range(12)
    )
    path = tmp / "probed.yaml"
    path.write_text(
        f"timezone: UTC\nstorage: sqlite://{tmp}/probed.db\nlisten: 127.0.0.1:0\n"
        f"workers: {workers}\nconcurrency: 6\n"
        f"defaults: {{interval: 1.5s, timeout: {TIMEOUT}s, failures_to_down: 2}}\n"
        f'hooks:\n  - {{type: webhook, name: team, url: "http://127.0.0.1:{hook_port}/hook"}}\n'
        f"services:\n  web:\n    objective: 99.5\n    checks:\n{checks}\n",
        encoding="utf-8",
    )
    return path


def processes(daemon: DaemonProcess) -> list[int]:
    assert daemon.proc is not None
    workers = [int(e["pid"]) for e in daemon.events("worker.ready")]
    return [daemon.proc.pid, *workers]


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_ends_an_overloaded_daemon_within_the_longest_timeout_and_a_second(
    tmp_path: Path, workers: int
) -> None:
    async with silent_server() as (port, _), silent_server() as (hook_port, deliveries):
        daemon = DaemonProcess(
            config(tmp_path, port, hook_port, workers),
            env={"PROBED_TEST_STALL_ON_SIGUSR2": str(STALL)},
        )
        await daemon.start()
        assert daemon.proc is not None
        # outages opened, and their events are being delivered to a receiver that hangs
        await wait_for(lambda: deliveries[0] >= 1, timeout=60, what="a hook delivery")
        for pid in processes(daemon):
            os.kill(pid, signal.SIGUSR2)
        await asyncio.sleep(STALL + 0.2)  # the stalls are over; the tests in flight hold
        sent = time.monotonic()  # credit for them
        code = await daemon.stop(timeout=60)
        took = time.monotonic() - sent
    assert code == 0
    assert took <= TIMEOUT + 1.0 + EXIT, [e["event"] for e in daemon.log[-20:]]
    names = [e["event"] for e in daemon.log]
    assert names[-1] == "daemon.stopped" and "worker.killed" not in names
