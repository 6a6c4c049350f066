"""``probed demo --locations N``: several probing locations, one quorum verdict.

N real daemons run in this process, each with its own ``location`` and its
own loopback web server standing for the route from that location to the
platform; they share one SQLite store (one file, one connection each, as
several daemons share a PostgreSQL store). The check's quorum is 2. The
script: the first location's route fails alone (billed: nothing, an
advisory), then the second and third fail with an overlap (billed: the
overlap only). The month report follows.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import yaml
from aiohttp import web

from probed import config as config_mod
from probed.core import accounting
from probed.daemon.lifecycle import Daemon
from probed.logs import configure as configure_logs
from probed.reports.figures import month_report
from probed.reports.render import MonthReport, render_json, render_text
from probed.store.base import open_store

INTERVAL = 0.5
TIMEOUT = 0.4
QUORUM = 2
NAMES = ("ams", "fra", "par", "lon", "waw", "mad", "vie", "osl", "hel")
# which tests (counted from 0) each location's route fails; further locations stay up
SCRIPT = (range(4, 10), range(14, 20), range(17, 23))
RUN_SECONDS = (max(r.stop for r in SCRIPT) + 4) * INTERVAL


class Route:
    """One location's view of the web site: a loopback server failing on its script."""

    def __init__(self, down: range) -> None:
        self.down = down
        self.seen = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        n, self.seen = self.seen, self.seen + 1
        return web.Response(status=503 if n in self.down else 200, text="route\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def legend(count: int) -> str:
    first, second, third = NAMES[:3]
    return (
        f"probed demo --locations {count}: {count} daemons ({', '.join(NAMES[:count])}) test one"
        f" web check every {INTERVAL:g}s into one store, quorum {QUORUM}: the check is down only"
        f" while {QUORUM} locations are in an outage at once. {first} fails alone (tests"
        f" {SCRIPT[0].start}-{SCRIPT[0].stop - 1}): billed nothing, reported as an advisory."
        f" {second} (tests {SCRIPT[1].start}-{SCRIPT[1].stop - 1}) and {third} (tests"
        f" {SCRIPT[2].start}-{SCRIPT[2].stop - 1}) fail with an overlap: only the overlap is billed."
    )


def _config(base: Path, name: str, route: Route) -> Path:
    document = {
        "timezone": "UTC",
        "storage": f"sqlite://{base / 'demo-locations.db'}",
        "location": name,
        "listen": "127.0.0.1:0",
        "defaults": {"interval": INTERVAL, "timeout": TIMEOUT, "failures_to_down": 2},
        "services": {
            "web": {
                "objective": 99.5,
                "quorum": QUORUM,
                "checks": [
                    {"name": "site", "type": "http", "url": f"http://127.0.0.1:{route.port}/"}
                ],
            }
        },
    }
    path = base / f"probed-{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


async def run_locations_demo(
    count: int, *, duration: float | None, workdir: Path | None, json_report: Path | None
) -> int:
    configure_logs("console", "error")
    tmp = tempfile.TemporaryDirectory(prefix="probed-demo-") if workdir is None else None
    base = Path(tmp.name) if tmp else workdir
    assert base is not None
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("demo-locations.db*"):
        stale.unlink()
    routes = [Route(SCRIPT[i] if i < len(SCRIPT) else range(0)) for i in range(count)]
    for route in routes:
        await route.start()
    try:
        paths = [_config(base, name, r) for name, r in zip(NAMES, routes, strict=False)]
        run_for = duration if duration is not None else RUN_SECONDS
        print(legend(count))
        print(
            f"\nconfigs: {', '.join(str(p) for p in paths)}; running for {run_for:.0f}s", flush=True
        )
        return _show(await _run(paths, run_for), json_report)
    finally:
        for route in routes:
            await route.stop()
        if tmp is not None:
            tmp.cleanup()


def _show(report: MonthReport, json_report: Path | None) -> int:
    print()
    print(render_text(report), end="")
    for f in report.services:
        alone = sum(a.downtime_seconds for a in f.advisories)
        agreed = ", ".join(f"{'+'.join(o.span.locations)}" for o in f.outages) or "none"
        print(
            f"\n{f.service}: billed {f.downtime_seconds:.2f}s of downtime (quorum outages: {agreed});"
            f" {alone:.2f}s of location-only outages billed nothing ({len(f.advisories)} advisories)."
        )
    if json_report is not None:
        json_report.write_text(render_json(report), encoding="utf-8")
    return 0


async def _run(paths: list[Path], run_for: float) -> MonthReport:
    configs = [config_mod.load(p) for p in paths]
    daemons = [await Daemon.open(str(p), c) for p, c in zip(paths, configs, strict=True)]
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    try:
        await asyncio.wait(tasks, timeout=run_for)
    finally:
        for d in daemons:
            d.request_stop()
        await asyncio.gather(*tasks)
    store = await open_store(configs[0], readonly=True)
    try:
        now = time.time()
        month = accounting.month_of(now, "UTC")
        services = tuple(await month_report(store, configs[0], month, now))
    finally:
        await store.close()
    return MonthReport(month=month, timezone="UTC", generated_at=now, services=services)
