"""The shipped alerting, end to end with the real tools: probed -> Prometheus (the shipped
rules) -> Alertmanager (the shipped example routes and inhibitions) -> webhook receivers,
plus probed's own alertmanager hook. An outage pages once per route, a restart pages
nobody, a maintenance window mutes both paths.

The rules' `for` and `keep_firing_for` are divided by SCALE (1m becomes 3s) and
Alertmanager's waits shortened, so that a scenario takes seconds; the expressions,
labels, routes and inhibitions are the shipped ones.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import require_tool
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage
from tests.hooks_receiver import Receiver, free_port
from tests.test_hooks_alertmanager import alertmanager_binary

pytestmark = [pytest.mark.e2e, pytest.mark.servers]
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "probed.rules.yml"
AM_EXAMPLE = ROOT / "deploy" / "prometheus" / "alertmanager.example.yml"
SCALE = 20
TOKEN = "alerting-token-0123456789"
OUTAGE_ALERTS = re.compile(r"ProbedServiceDown|ProbedCheckDown|ProbedEvent.*|ProbedErrorBudgetBurn")


def scaled(duration: str) -> str:
    seconds = {"s": 1, "m": 60, "h": 3600}[duration[-1]] * int(duration[:-1])
    return f"{max(1, seconds // SCALE)}s"


def fast_rules(path: Path) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = scaled(rule[key])
    path.write_text(yaml.safe_dump(rules))
    return path


def fast_alertmanager(path: Path, receiver: Receiver) -> Path:
    example = yaml.safe_load(AM_EXAMPLE.read_text())
    example["route"].update(group_wait="1s", group_interval="2s", repeat_interval="1h")
    for route in example["route"]["routes"]:
        route.pop("repeat_interval", None)
    for entry in example["receivers"]:
        for hook in entry["webhook_configs"]:
            hook["url"] = receiver.url("/" + entry["name"])
    path.write_text(yaml.safe_dump(example))
    return path


def firing(receiver: Receiver, route: str) -> list[list[str]]:
    """Per firing notification on ``route``: the names of the outage's alerts in it."""
    found = []
    for body in receiver.bodies("/" + route):
        names = sorted(
            a["labels"]["alertname"]
            for a in body["alerts"]
            if a["status"] == "firing" and OUTAGE_ALERTS.fullmatch(a["labels"]["alertname"])
        )
        if names:
            found.append(names)
    return found


@dataclass
class Stack:
    tmp: Path
    http: ScriptedHTTP
    receiver: Receiver
    am_url: str
    prom_url: str
    config: Path
    daemon: DaemonProcess
    session: aiohttp.ClientSession

    async def query(self, expr: str) -> list[Any]:
        async with self.session.get(f"{self.prom_url}/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    async def has(self, expr: str) -> bool:
        try:
            return bool(await self.query(expr))
        except aiohttp.ClientError:
            return False

    async def evaluated_after(self, moment: float) -> bool:
        """Every rule group has been evaluated since ``moment`` (Unix time)."""
        async with self.session.get(f"{self.prom_url}/api/v1/rules") as r:
            groups = (await r.json())["data"]["groups"]
        return bool(groups) and all(
            datetime.fromisoformat(g["lastEvaluation"].replace("Z", "+00:00")).timestamp() > moment
            for g in groups
        )

    async def settle(self, seconds: float) -> None:
        """Wait until the rules have been evaluated ``seconds`` past now, then a group wait."""
        for wait in (seconds, 1.5):  # then Alertmanager's group wait (1s)
            mark = time.time() + wait
            await wait_for(lambda m=mark: self.evaluated_after(m), wait + 30, "rule evaluations")

    async def am_alerts(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.am_url}/api/v2/alerts") as r:
            return list(await r.json())

    async def restart_probed(self) -> None:
        started = await self.query("process_start_time_seconds")
        assert await self.daemon.stop() == 0
        self.daemon = await DaemonProcess(self.config).start()
        await wait_for(
            lambda: self._restarted(started[0]["value"][1]), 30, "Prometheus to scrape the restart"
        )

    async def _restarted(self, before: str) -> bool:
        now = await self.query('process_start_time_seconds{job="probed"}')
        return bool(now) and now[0]["value"][1] != before


def probed_config(
    tmp: Path, http_port: int, listen: int, am_url: str, storage: str | None = None
) -> Path:
    # the hook's alerts live 4 resend periods in Alertmanager: 20 s outlast a restart, as the
    # default 60 s (4 minutes) do in production
    (tmp / "token").write_text(TOKEN)
    hook = f'hooks:\n  - {{type: alertmanager, name: am, url: "{am_url}", resend_every: 5s}}\n'
    path = http_config(tmp, http_port, ["www"], 0.2, f"api_token_file: token\n{hook}", storage)
    path.write_text(path.read_text().replace("listen: 127.0.0.1:0", f"listen: 127.0.0.1:{listen}"))
    return path


@asynccontextmanager
async def started(process: list[str], log: Path) -> AsyncIterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(process, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            proc.terminate()
            await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20)


@asynccontextmanager
async def stack(tmp: Path, storage: DaemonStorage | None = None) -> AsyncIterator[Stack]:
    prometheus = require_tool("prometheus")
    am_port, prom_port, listen = free_port(), free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"
    prom_config = tmp / "prometheus.yml"
    prom_config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
                "rule_files": [str(fast_rules(tmp / "rules.yml"))],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
                },
                "scrape_configs": [
                    {
                        "job_name": "probed",
                        "static_configs": [{"targets": [f"127.0.0.1:{listen}"]}],
                    }
                ],
            }
        )
    )
    async with ScriptedHTTP() as http, Receiver() as receiver:
        am = [
            alertmanager_binary(),
            f"--config.file={fast_alertmanager(tmp / 'am.yml', receiver)}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ]
        prom = [
            prometheus,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ]
        async with (
            started(am, tmp / "am.log"),
            started(prom, tmp / "prometheus.log"),
            aiohttp.ClientSession() as session,
        ):
            lines = storage.lines if storage else None
            config = probed_config(tmp, http.port, listen, am_url, lines)
            daemon = await DaemonProcess(config).start()
            s = Stack(tmp, http, receiver, am_url, prom_url, config, daemon, session)
            try:
                await wait_for(
                    lambda: s.has('probed_service_up{service="web"} == 1'), 60, "a first scrape"
                )
                yield s
            finally:
                await s.daemon.stop()


async def wait_until(check: Callable[[], Any], what: str) -> Any:
    return await wait_for(check, 60, what)


async def test_a_restart_pages_nobody_and_an_outage_pages_once_per_route(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    """On both stores: the outage and the hook's delivered alerts (its outbox history)
    survive the restart."""
    async with stack(tmp_path, daemon_storage) as s:
        await s.restart_probed()  # no outage: nothing may fire
        await s.settle(8)  # past ProbedDown's and ProbedServiceDown's `for`
        assert s.receiver.requests == []
        assert await s.am_alerts() == []

        s.http.down.add("www")
        await wait_until(lambda: firing(s.receiver, "pager"), "the page")
        await wait_until(lambda: firing(s.receiver, "ticket"), "the ticket")
        await s.restart_probed()  # during the outage: the page keeps firing, no second one
        await s.settle(8)
        s.http.down.discard("www")
        await wait_until(lambda: s.has('probed_service_up{service="web"} == 1'), "recovery")
        await wait_until(
            lambda: any(
                a["status"] == "resolved" for b in s.receiver.bodies("/pager") for a in b["alerts"]
            ),
            "the page to resolve",
        )
        assert firing(s.receiver, "pager") == [["ProbedServiceDown"]]
        # the hook's event alerts, one notification for the service; ProbedCheckDown is
        # inhibited by the service page
        assert firing(s.receiver, "ticket") == [["ProbedEventCheckDown", "ProbedEventServiceDown"]]


async def test_a_maintenance_window_mutes_the_rules_and_the_hook(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        now = time.time()
        window = {
            "service": "web",
            "start": datetime.fromtimestamp(now - 60).astimezone().isoformat(),
            "end": datetime.fromtimestamp(now + 3600).astimezone().isoformat(),
            "kind": "maintenance",
            "reason": "weekly patching",
            "by": "test",
        }
        url = f"http://127.0.0.1:{s.daemon.port}/api/v1/exclusions"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with s.session.post(url, json=window, headers=headers) as r:
            assert r.status == 201, await r.text()
        await wait_until(
            lambda: s.has('probed_service_exclusion_active{service="web",kind="maintenance"} == 1'),
            "Prometheus to see the window",
        )
        s.http.down.add("www")
        await wait_until(lambda: s.has('probed_check_up{check="www"} == 0'), "the outage")
        await s.settle(8)
        assert s.receiver.requests == []
        assert await s.am_alerts() == []
        assert await s.query('probed_service_down_seconds_total{service="web"} > 0') == []
