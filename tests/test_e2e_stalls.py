"""The real daemon, its event loop deliberately blocked while tests are in flight:
a healthy server never gets a failure recorded against it (docs/sla-rules.md)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.daemon_helpers import DaemonProcess, wait_for
from tests.daemon_storage import DaemonStorage, sqlite_storage

pytestmark = pytest.mark.e2e
STALL = 2.0  # seconds the daemon's loop is blocked: twice the check's timeout
STALL_AT = (2, 4)  # the requests during which the daemon is stalled
REQUESTS = 6


class StallingServer:
    """A healthy HTTP server that, on some requests, blocks the daemon's loop (SIGUSR2)
    just before answering in 0.1 s: the answer waits in the daemon's socket buffer."""

    def __init__(self) -> None:
        self.requests = 0
        self.daemon_pid = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        if self.daemon_pid > 0:  # counted once the test knows whom to stall: a pid of 0
            self.requests += 1  # would signal the test's own process group
            if self.requests in STALL_AT:
                os.kill(self.daemon_pid, signal.SIGUSR2)
        await asyncio.sleep(0.1)
        return web.Response(text="ok")

    async def start(self) -> StallingServer:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def stalled_daemon(
    tmp_path: Path,
    extra: str = "",
    stalled: Callable[[DaemonProcess], int] | None = None,
    storage: DaemonStorage | None = None,
) -> DaemonProcess:
    """Run the daemon against a :class:`StallingServer` that blocks the loop of the process
    ``stalled`` names (default: the daemon's), and check that the stalls cost no failure."""
    storage = storage or sqlite_storage(tmp_path)
    server = await StallingServer().start()
    config = tmp_path / "probed.yaml"
    config.write_text(
        f"timezone: UTC\n{storage.lines}\nlisten: 127.0.0.1:0\n{extra}"
        "defaults: {interval: 1.2s, timeout: 1s, failures_to_down: 2}\n"
        "services:\n  web:\n    objective: 99.5\n    checks:\n"
        f'      - {{name: site, type: http, url: "http://127.0.0.1:{server.port}/"}}\n',
        encoding="utf-8",
    )
    daemon = DaemonProcess(config, env={"PROBED_TEST_STALL_ON_SIGUSR2": str(STALL)})
    try:
        await daemon.start()
        assert daemon.proc is not None
        server.daemon_pid = stalled(daemon) if stalled else daemon.proc.pid
        await wait_for(
            lambda: server.requests > REQUESTS, timeout=120, what=f"{REQUESTS} tests served"
        )
        failed = await daemon.metric("probed_probes_total", check="site", result="fail")
        passed = await daemon.metric("probed_probes_total", check="site", result="pass")
        discarded = await daemon.metric("probed_tests_discarded_total", reason="loop_stall")
        lagged = await daemon.metric("probed_event_loop_lag_seconds_bucket", le="+Inf")
    finally:
        assert await daemon.stop() == 0
        await server.stop()
    assert failed == 0.0, daemon.events("probe.failed")
    assert passed is not None and passed + (discarded or 0.0) >= REQUESTS
    assert lagged is not None and lagged > 0
    stalls = [e["stalled_seconds"] for e in daemon.events("scheduler.loop_stalled")]
    assert sum(s >= STALL - 0.1 for s in stalls) >= len(STALL_AT), stalls
    async with storage.reading() as store:
        assert await store.failed_tests("web", "site", (0.0, 4e9)) == []
    return daemon


async def test_a_stalled_daemon_records_no_failure_against_a_healthy_server(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    await stalled_daemon(tmp_path, storage=daemon_storage)
