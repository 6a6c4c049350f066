"""The Alertmanager hook against a real Alertmanager on loopback.

Alertmanager routes to a loopback webhook receiver, so the test sees both its
API (GET /api/v2/alerts) and the notifications it sends: firing, then resolved.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from probed.core.events import Event
from probed.hooks.alertmanager import AlertmanagerConfig
from tests.conftest import require_tool
from tests.daemon_helpers import wait_for
from tests.hooks_receiver import Receiver, free_port
from tests.test_hooks_delivery import dispatching, opened

AT = 1_790_000_000.0


def alertmanager_binary() -> str:
    # Debian's package (.ci/setup-deploy-tools.sh) names the binary prometheus-alertmanager
    return shutil.which("alertmanager") or require_tool("prometheus-alertmanager")


@dataclass
class Alertmanager:
    url: str
    notified: Receiver  # where Alertmanager sends its notifications

    async def alerts(self) -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/api/v2/alerts") as r:
            assert r.status == 200
            return list(await r.json())


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[Alertmanager]:
    binary = alertmanager_binary()
    async with Receiver() as notified:
        async for am in _run(binary, tmp_path, notified):
            yield am


async def _run(binary: str, tmp_path: Path, notified: Receiver) -> AsyncIterator[Alertmanager]:
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: probe\n"
        "  group_by: [alertname, service, check]\n"
        "  group_wait: 50ms\n"
        "  group_interval: 100ms\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: probe\n"
        "    webhook_configs:\n"
        f"      - url: {notified.url('/alertmanager')}\n"
        "        send_resolved: true\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: loopback HTTP only
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{url}/-/ready") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await wait_for(ready, 20, "alertmanager to be ready")
        yield Alertmanager(url, notified)
    finally:
        process.terminate()
        await asyncio.get_running_loop().run_in_executor(None, process.wait, 10)


def hook(am: Alertmanager, **fields: Any) -> AlertmanagerConfig:
    return AlertmanagerConfig.model_validate(
        {"type": "alertmanager", "name": "am", "url": am.url, **fields}
    )


def closed(severity: str = "P2") -> Event:
    return Event(
        "outage_closed",
        "web",
        AT + 30,
        check="home",
        severity=severity,  # type: ignore[arg-type]
        outage_id=7,
        start=AT - 60,
        end=AT,
        failed_tests=3,
        downtime_seconds=60.0,
        summary="web/home is up again after 60s of downtime",
    )


def statuses(notified: Receiver) -> list[tuple[str, str]]:
    return [
        (alert["status"], alert["labels"]["alertname"])
        for body in notified.bodies("/alertmanager")
        for alert in body["alerts"]
    ]


@pytest.mark.servers
async def test_outage_fires_an_alert_and_its_end_resolves_it(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    notified = alertmanager.notified
    async with dispatching(tmp_path / "p.db", hook(alertmanager)) as dispatcher:
        await dispatcher.submit(opened(at=AT))
        [alert] = await wait_for(alertmanager.alerts, 20, "the alert in Alertmanager")
        assert alert["labels"] == {
            "alertname": "ProbedEventCheckDown",
            "service": "web",
            "check": "home",
            "severity": "ticket",  # the rules' vocabulary; pages come from the rules
            "priority": "P2",
            "source": "probed",
        }
        assert alert["status"]["state"] == "active"
        assert alert["startsAt"] == "2026-09-21T14:12:20.000Z"  # the first failed test
        assert alert["annotations"]["summary"] == "web/home is down: connection refused"
        assert alert["annotations"]["description"] == "connection refused"
        await wait_for(lambda: statuses(notified) == [("firing", "ProbedEventCheckDown")], 20)

        # the service escalated to P1 meanwhile: the resolution keeps the labels that fired
        await dispatcher.submit(closed(severity="P1"))
        await wait_for(lambda: ("resolved", "ProbedEventCheckDown") in statuses(notified), 20)
        assert await alertmanager.alerts() == []  # resolved alerts leave the API's list
    resolved = notified.bodies("/alertmanager")[-1]["alerts"][0]
    assert resolved["labels"]["priority"] == "P2"
    assert resolved["endsAt"] == "2026-09-21T14:13:50Z"  # when the passing test came


@pytest.mark.servers
async def test_service_down_and_up_fire_and_resolve_a_service_alert(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    notified = alertmanager.notified
    async with dispatching(tmp_path / "p.db", hook(alertmanager)) as dispatcher:
        await dispatcher.submit(
            Event("service_down", "web", AT, severity="P1", summary="web is down")
        )
        [alert] = await wait_for(alertmanager.alerts, 20, "the service alert")
        assert alert["labels"] == {
            "alertname": "ProbedEventServiceDown",
            "service": "web",
            "severity": "ticket",
            "priority": "P1",
            "source": "probed",
        }
        await dispatcher.submit(Event("service_up", "web", AT + 90, summary="web is up"))
        await wait_for(lambda: ("resolved", "ProbedEventServiceDown") in statuses(notified), 20)
    assert await alertmanager.alerts() == []


@pytest.mark.servers
async def test_firing_alerts_are_resent_after_a_restart(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    db = tmp_path / "p.db"
    async with dispatching(db, hook(alertmanager, resend_every="1h")) as dispatcher:
        await dispatcher.submit(opened(at=AT))
        [first] = await wait_for(alertmanager.alerts, 20, "the alert")
    await asyncio.sleep(0.05)
    # a new dispatcher (a restarted daemon) learns from the outbox which alerts fire
    async with dispatching(db, hook(alertmanager, resend_every="1h")):
        await wait_for(
            lambda: _updated_after(alertmanager, first["updatedAt"]), 20, "the resent alert"
        )
    [again] = await alertmanager.alerts()
    assert again["labels"] == first["labels"] and again["startsAt"] == first["startsAt"]
    assert again["endsAt"] > first["endsAt"]


async def _updated_after(am: Alertmanager, when: str) -> bool:
    alerts = await am.alerts()
    return bool(alerts) and alerts[0]["updatedAt"] > when


async def test_alertmanager_down_is_a_short_reason(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    config = AlertmanagerConfig.model_validate(
        {"type": "alertmanager", "name": "am", "url": f"http://127.0.0.1:{free_port()}"}
    )
    async with dispatching(tmp_path / "p.db", config) as dispatcher:
        with capture_logs() as logs:
            await dispatcher.submit(opened())
            await wait_for(lambda: any(e["event"] == "hook.failed" for e in logs), 10)
    assert next(e for e in logs if e["event"] == "hook.failed")["reason"] == "connection refused"
