"""Two daemons, two locations, one PostgreSQL store, written at the same time.

Each daemon probes its own service with scripted outages; both deliver hook
events from the one shared outbox. Afterwards ``probed report`` (from a third
config that knows both services) shows each check's outages exactly as the
SLA rule computes them from the script, and every hook event arrived once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from probed.core.accounting import month_of
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, wait_for
from tests.hooks_receiver import Receiver
from tests.pgcluster import PgCluster

pytestmark = pytest.mark.e2e
INTERVAL = 0.3
U, D = True, False
# per check: the verdicts the target gives, and the outages (failed tests each) they make
SCRIPTS = {
    "a1": [U] * 2 + [D] * 3 + [U] * 3 + [D] + [U] * 2,  # one outage of 3; a lone failure is none
    "a2": [U] * 3 + [D] * 2 + [U] * 4,
    "b1": [U] * 2 + [D] * 4 + [U] * 3,
    "b2": [U] * 11,
}
EXPECTED = {"a1": [3], "a2": [2], "b1": [4], "b2": []}
SERVICES = {"alpha": ("fra1", ["a1", "a2"]), "beta": ("ams1", ["b1", "b2"])}


def config(tmp: Path, name: str, storage: str, services: list[str], port: int, hook: int) -> Path:
    lines = [
        "timezone: UTC",
        storage,
        "listen: 127.0.0.1:0",
        f"defaults: {{interval: {INTERVAL}s, timeout: {INTERVAL * 0.75:.3f}s, failures_to_down: 2}}",
        f'hooks:\n  - {{type: webhook, name: pager, url: "http://127.0.0.1:{hook}/h"}}',
        "services:",
    ]
    for service in services:
        _, checks = SERVICES[service]
        lines += [f"  {service}:", "    objective: 99.5", "    checks:"]
        lines += [
            f'      - {{name: {c}, type: http, url: "http://127.0.0.1:{port}/{c}"}}' for c in checks
        ]
    path = tmp / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_two_locations_write_one_store_and_the_report_shows_both(
    tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    storage = f"storage: {pg_dsn}\nstorage_password_file: {pg_cluster.password_file}"
    async with ScriptedHTTP(SCRIPTS) as http, Receiver() as hooks:
        daemons = [
            DaemonProcess(
                config(
                    tmp_path,
                    service,
                    storage + f"\nlocation: {location}",
                    [service],
                    http.port,
                    hooks.port,
                )
            )
            for service, (location, _) in SERVICES.items()
        ]
        await asyncio.gather(*(d.start() for d in daemons))  # they migrate and start together
        try:
            await wait_for(
                lambda: all(http.counts.get(c, 0) >= len(s) + 1 for c, s in SCRIPTS.items()),
                timeout=60,
                what="every script to play out",
            )
            await wait_for(lambda: _settled(hooks), what="every outage and service to close")
        finally:
            codes = await asyncio.gather(*(d.stop() for d in daemons))
    assert codes == [0, 0]
    report_config = config(tmp_path, "report", storage, list(SERVICES), http.port, hooks.port)
    month = month_of(time.time(), "UTC")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "probed.cli",
            "report",
            "-c",
            str(report_config),
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
    report = json.loads(done.stdout)
    by_service = {s["service"]: s for s in report["services"]}
    assert set(by_service) == set(SERVICES)
    for service, (location, checks) in SERVICES.items():
        figures = by_service[service]
        for check in checks:
            outages = [o for o in figures["outages"] if o["check"] == check]
            assert [o["failed_tests"] for o in outages] == EXPECTED[check], (check, outages)
            for o in outages:  # downtime: first to last failed test of the run (docs/sla-rules.md)
                assert o["downtime_seconds"] == pytest.approx(
                    (o["failed_tests"] - 1) * INTERVAL, abs=0.15
                )
        # the service is down while any of its checks is: the union of the outages
        assert figures["downtime_seconds"] == pytest.approx(union(figures["outages"]), abs=1e-3)
        assert all(daemon_saw(d, location) for d in daemons if d.config.stem == service)
    bodies = hooks.bodies()
    ids = [b["id"] for b in bodies]
    assert len(ids) == len(set(ids))  # each event delivered once, by one of the two daemons
    kinds = [(b["service"], b["event"]) for b in bodies]
    for service, opened in (("alpha", 2), ("beta", 1)):
        assert kinds.count((service, "outage_opened")) == opened
        assert kinds.count((service, "outage_closed")) == opened
        assert kinds.count((service, "service_down")) == kinds.count((service, "service_up")) >= 1


def union(outages: list[dict[str, str]]) -> float:
    spans = sorted(
        (
            datetime.fromisoformat(o["start"]).timestamp(),
            datetime.fromisoformat(o["end"]).timestamp(),
        )
        for o in outages
    )
    total, reach = 0.0, float("-inf")
    for start, end in spans:
        total += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return total


def _settled(hooks: Receiver) -> bool:
    kinds = [(b["service"], b["event"]) for b in hooks.bodies()]
    return kinds.count(("alpha", "outage_closed")) == 2 and all(
        kinds.count((s, "service_up")) == kinds.count((s, "service_down")) >= 1
        for s in ("alpha", "beta")
    )


def daemon_saw(daemon: DaemonProcess, location: str) -> bool:
    started = daemon.events("daemon.started")
    return bool(started) and started[0]["location"] == location
