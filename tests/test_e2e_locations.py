"""Three real daemons, locations a, b and c, probe the same check into one private
PostgreSQL; each location reaches the site through its own scripted loopback server, so
a location can fail alone (docs/locations.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from probed.core import accounting
from probed.store.base import FLUSH_EVERY, LIVE_AFTER_FLUSH
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, wait_for
from tests.hooks_receiver import Receiver
from tests.pgcluster import PgCluster

pytestmark = [pytest.mark.e2e, pytest.mark.servers]

INTERVAL = 0.2
TOLERANCE = 2 * INTERVAL  # scheduling: each daemon's tests start at its own phase
NAMES = ("a", "b", "c")
EVENTS = "[outage_opened, outage_closed, service_down, service_up, location_outage_opened, location_outage_closed]"


def write_config(
    tmp: Path, name: str, port: int, dsn: str, pg: PgCluster, hook: str, quorum: str
) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"timezone: UTC\nstorage: {dsn}\nstorage_password_file: {pg.password_file}\n"
        f"location: {name}\nlisten: 127.0.0.1:0\n"
        f"defaults: {{interval: {INTERVAL}s, timeout: 0.15s, failures_to_down: 2, quorum: {quorum}}}\n"
        "services:\n  web:\n    objective: 99.5\n    checks:\n"
        f'      - {{name: site, type: http, url: "http://127.0.0.1:{port}/site"}}\n'
        f'hooks:\n  - {{name: rec, type: webhook, url: "{hook}", events: {EVENTS}}}\n',
        encoding="utf-8",
    )
    return path


class Fleet:
    def __init__(
        self, routes: dict[str, ScriptedHTTP], daemons: dict[str, DaemonProcess], hook: Receiver
    ) -> None:
        self.routes, self.daemons, self.hook = routes, daemons, hook

    def fail(self, name: str, down: bool = True) -> None:
        (self.routes[name].down.add if down else self.routes[name].down.discard)("site")

    def report(self) -> dict[str, Any]:
        month = accounting.month_of(time.time(), "UTC")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "probed.cli",
                "report",
                "-c",
                str(self.daemons["a"].config),
                "--month",
                month,
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        [web] = json.loads(done.stdout)["services"]
        return web  # type: ignore[no-any-return]

    def told(self, event: str) -> list[dict[str, Any]]:
        return [b for b in self.hook.bodies() if b["event"] == event]


@asynccontextmanager
async def fleet(tmp: Path, pg: PgCluster, dsn: str, quorum: str) -> AsyncIterator[Fleet]:
    async with AsyncExitStack() as stack:
        hook = await stack.enter_async_context(Receiver())
        routes = {n: await stack.enter_async_context(ScriptedHTTP()) for n in NAMES}
        daemons: dict[str, DaemonProcess] = {}
        try:
            for n in NAMES:
                config = write_config(tmp, n, routes[n].port, dsn, pg, hook.url(), quorum)
                daemons[n] = await DaemonProcess(config).start()
            yield Fleet(routes, daemons, hook)
        finally:
            for d in daemons.values():
                if d.proc is not None and d.proc.poll() is None:
                    await d.stop()


async def pause(seconds: float) -> None:
    await asyncio.sleep(seconds)  # a scripted phase of the scenario, not a wait for a result


async def test_one_location_alone_bills_nothing_two_bill_their_overlap_told_once(
    tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    async with fleet(tmp_path, pg_cluster, pg_dsn, "2") as f:
        await pause(1.0)
        f.fail("a")  # a's route alone
        await pause(1.5)
        f.fail("a", False)
        await wait_for(lambda: f.told("location_outage_closed"), what="a's outage closed")
        f.fail("b")
        await pause(0.8)
        f.fail("c")  # b and c overlap from here ...
        await pause(0.8)
        f.fail("b", False)  # ... to b's last failed test
        await pause(0.8)
        f.fail("c", False)
        await wait_for(lambda: f.told("outage_closed"), what="the quorum outage closed")
        await pause(1.0)  # any duplicate from another daemon would have been delivered by now
        web = await asyncio.to_thread(f.report)  # the servers in this process keep answering
    assert len(web["outages"]) == 1, json.dumps(web, indent=1)
    [outage] = web["outages"]
    assert outage["locations"] == ["b", "c"]
    overlap = _overlap(outage)
    assert web["downtime_seconds"] == pytest.approx(overlap, abs=1e-6)
    assert overlap == pytest.approx(0.8, abs=TOLERANCE)
    [advisory] = web["advisories"]
    assert advisory["location"] == "a" and advisory["downtime_seconds"] > 0
    assert len(f.told("outage_opened")) == 1 and len(f.told("outage_closed")) == 1
    assert len(f.told("service_down")) == 1 and len(f.told("service_up")) == 1
    opened = sorted(b["extra"]["location"] for b in f.told("location_outage_opened"))
    assert opened == ["a", "b", "c"]


async def test_a_killed_location_is_its_unmonitored_time_and_majority_holds(
    tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    async with fleet(tmp_path, pg_cluster, pg_dsn, "majority") as f:
        await pause(FLUSH_EVERY + 1.0)  # c has flushed its tests once: it is a location
        await f.daemons["c"].kill9()
        killed_at = time.time()
        await pause(LIVE_AFTER_FLUSH + 1.0)  # until c's last flush no longer counts as live
        f.fail("a")  # 1 of the 2 still testing: no majority
        await pause(1.0)
        f.fail("b")  # 2 of 2: down
        await pause(1.0)
        status = await f.daemons["a"].json("/api/v1/status")
        f.fail("a", False)
        f.fail("b", False)
        await wait_for(lambda: f.told("outage_closed"), what="the quorum outage closed")
        web = await asyncio.to_thread(f.report)  # the servers in this process keep answering
    [check] = status["services"][0]["checks"]
    assert check["verdict"] == "down" and check["quorum"] == "majority"
    assert {loc["location"]: loc["state"] for loc in check["locations"]} == {
        "a": "down",
        "b": "down",
        "c": "unmonitored",
    }
    [outage] = web["outages"]
    assert outage["locations"] == ["a", "b"]
    assert web["downtime_seconds"] == pytest.approx(_overlap(outage), abs=1e-6)
    assert _overlap(outage) == pytest.approx(1.0, abs=TOLERANCE)
    c = next(loc for loc in web["locations"] if loc["location"] == "c")
    # a killed daemon's last flush counts as live for LIVE_AFTER_FLUSH, then it is a gap
    assert c["unmonitored_seconds"] >= time.time() - killed_at - LIVE_AFTER_FLUSH - 1.0
    assert web["unmonitored_seconds"] == 0.0  # a and b kept testing
    assert len(f.told("outage_opened")) == 1


def _overlap(outage: dict[str, Any]) -> float:
    """The common part of the agreeing locations' own outages (two of them here)."""
    own = outage["location_outages"]
    return min(_t(o["end"]) for o in own) - max(_t(o["start"]) for o in own)


def _t(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
