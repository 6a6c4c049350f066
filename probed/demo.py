"""``probed demo``: the whole product on this machine alone.

Local servers on loopback answer according to a script (up, a single failed
test, a real outage, recovery, an outage during a flagged DoS window); the
real daemon probes them at short intervals into a temporary store, a live
view shows each check, and the month report follows. Nothing leaves the
machine and nothing needs root.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from probed import accounting
from probed import config as config_mod
from probed.daemon import Daemon
from probed.figures import month_report
from probed.report import MonthReport, render_text, to_json_dict
from probed.storage import SqliteStore

INTERVAL = 0.5  # seconds between tests of each demo check
U, D = True, False  # a scripted test: the server is up / down

# Per check: the server's answer to its n-th test. After the script, it stays up.
SCRIPTS: dict[str, tuple[bool, ...]] = {
    # a single failed test between passes: no outage, no downtime
    "website": (U,) * 6 + (D,) + (U,) * 17,
    # four consecutive failed tests: an outage of 3 intervals, then recovery
    "webmail": (U,) * 8 + (D,) * 4 + (U,) * 12,
    # three failed tests inside the flagged DoS window: excluded from downtime
    "api": (U,) * 14 + (D,) * 3 + (U,) * 7,
}
DOS_CHECK = "api"


@dataclass
class ScriptedServer:
    """An HTTP server whose answers follow SCRIPTS, per path."""

    counters: dict[str, int] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        n = self.counters.get(name, 0)
        self.counters[name] = n + 1
        script = SCRIPTS.get(name, ())
        up = script[n] if n < len(script) else True
        if up:
            return web.Response(text=f"{name} ok\n")
        return web.Response(status=503, text="scripted outage\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def demo_config(port: int, db: Path) -> str:
    checks = "\n".join(
        f'      - {{name: {name}, type: http, url: "http://127.0.0.1:{port}/{name}", expect_status: [200]}}'
        for name in SCRIPTS
    )
    return f"""\
# probed demo: generated, loopback only
timezone: UTC
storage: sqlite://{db}
listen: 127.0.0.1:0
defaults: {{interval: {INTERVAL}s, timeout: 400ms, failures_to_down: 2}}
services:
  web:
    objective: 99.5
    minimum: 99.0
    credits: [{{below: 99.5, percent: 5}}, {{below: 99.0, percent: 10}}]
    checks:
{checks}
"""


def _live_line(daemon: Daemon, server: ScriptedServer) -> str:
    parts = []
    for (_, name), state in sorted(daemon.monitor.checks.items()):
        run = state.tracker.run
        mark = "DOWN" if state.tracker.in_outage else ("fail" if run else "up")
        parts.append(f"{name}={mark}({server.counters.get(name, 0)})")
    return "  ".join(parts)


async def _live_view(daemon: Daemon, server: ScriptedServer, until: float) -> None:
    tty = sys.stdout.isatty()
    while time.monotonic() < until:
        line = f"[{time.strftime('%H:%M:%S')}] {_live_line(daemon, server)}"
        print(("\r" + line + "\x1b[K") if tty else line, end="" if tty else "\n", flush=True)
        await asyncio.sleep(1.0 if not tty else 0.25)
    if tty:
        print()


def _flag_dos(store: SqliteStore) -> None:
    """Flag the DoS window the way an operator would, after the fact."""
    outages = [o for o in store.outages("web", (0, time.time() + 1)) if o.check == DOS_CHECK]
    if not outages:
        return
    o = outages[-1]
    store.add_exclusion(
        service="web",
        start=o.start - INTERVAL / 2,
        end=o.end + INTERVAL / 2,
        kind="dos",
        reason="SYN flood against the API front end (scripted)",
        by="demo",
    )


async def run_demo(
    *, duration: float | None, workdir: Path | None, json_report: Path | None
) -> int:
    tmp = tempfile.TemporaryDirectory(prefix="probed-demo-") if workdir is None else None
    base = Path(tmp.name) if tmp else workdir
    assert base is not None
    base.mkdir(parents=True, exist_ok=True)
    server = ScriptedServer()
    await server.start()
    cfg_path = base / "probed-demo.yaml"
    cfg_path.write_text(demo_config(server.port, base / "demo.db"), encoding="utf-8")
    config = config_mod.load(cfg_path)
    length = max(len(s) for s in SCRIPTS.values()) * INTERVAL + 2 * INTERVAL
    run_for = duration if duration is not None else length
    print(
        f"probed demo: {len(SCRIPTS)} HTTP checks on 127.0.0.1:{server.port}, a test every {INTERVAL}s,"
        f" for {run_for:.0f}s (config {cfg_path})"
    )
    print(
        "scripted: website fails once (no outage), webmail fails 4 times (an outage of 3 intervals),"
        " api fails 3 times during a flagged DoS window (excluded)"
    )
    daemon = Daemon(str(cfg_path), config)
    task = asyncio.create_task(daemon.run())
    try:
        await _live_view(daemon, server, time.monotonic() + run_for)
    finally:
        daemon.request_stop()
        await task
        await server.stop()
    return _report(config, json_report, tmp)


def _report(
    config: config_mod.Config,
    json_report: Path | None,
    tmp: tempfile.TemporaryDirectory[str] | None,
) -> int:
    store = SqliteStore(config.storage_path)
    try:
        _flag_dos(store)
        now = time.time()
        month = accounting.month_of(now, config.timezone)
        report = MonthReport(
            month=month,
            timezone=config.timezone,
            generated_at=now,
            services=tuple(month_report(store, config, month, now)),
        )
    finally:
        store.close()
    print()
    print(render_text(report), end="")
    if json_report is not None:
        json_report.write_text(json.dumps(to_json_dict(report), indent=2) + "\n", encoding="utf-8")
    if tmp is not None:
        tmp.cleanup()
    return 0
