"""A real Prometheus scrapes a real probed; the rules load and every dashboard query returns data."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import require_tool
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.servers]
ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "probed.json"
RULES = ROOT / "deploy" / "prometheus" / "probed.rules.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def panel_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target, rows included."""
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                if target.get("expr"):
                    yield inner.get("title", "?"), target["expr"]


def instantiate(expr: str) -> str:
    """Replace Grafana's template variables the way Grafana would with "All" selected."""
    expr = re.sub(r"\$\{?(service|check|type|location)(:\w+)?\}?", ".*", expr)
    expr = expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
    expr = expr.replace("$__interval", "15s").replace("$__range", "5m")
    return expr


async def query(session: aiohttp.ClientSession, base: str, expr: str) -> list[Any]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


async def test_prometheus_scrapes_probed_and_every_dashboard_query_has_data(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus")
    promtool = require_tool("promtool")
    async with ScriptedHTTP() as http:
        http.down.add("www")  # an outage that lasts while Prometheus looks
        daemon = await DaemonProcess(http_config(tmp_path, http.port, ["www", "shop"], 0.2)).start()
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "probed",
                            "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}],
                        }
                    ],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("w")
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:

                async def has(expr: str) -> bool:
                    try:
                        return bool(await query(session, base, expr))
                    except aiohttp.ClientError:
                        return False

                await wait_for(
                    lambda: has('probed_check_up{check="www"} == 0'),
                    timeout=60,
                    what="Prometheus to see the www outage",
                )
                await wait_for(
                    lambda: has("rate(probed_probes_total[1m]) > 0"), timeout=60, what="rates"
                )
                # every series the contract names is there, with its labels
                for expr in (
                    'probed_probe_success{service="web",check="shop",type="http"}',
                    'probed_service_availability_ratio{window="month_to_date"}',
                    "probed_service_error_budget_remaining_seconds",
                    "probed_schedule_lag_seconds_count",
                    "probed_config_last_reload_successful",
                    "probed_build_info",
                ):
                    assert await query(session, base, expr), expr
                async with session.get(f"{base}/api/v1/rules") as r:
                    groups = (await r.json())["data"]["groups"]
                assert groups and all(
                    rule["health"] != "err" for g in groups for rule in g["rules"]
                )
                if DASHBOARD.exists():
                    dashboard = json.loads(DASHBOARD.read_text())
                    empty = []
                    for title, expr in panel_queries(dashboard):
                        if "mailflow" in expr or "tls_certificate" in expr:
                            continue  # no round trip and no TLS in this HTTP-only scenario
                        if not await query(session, base, instantiate(expr)):
                            empty.append(f"{title}: {expr}")
                    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
                metrics_text = (await daemon.get("/metrics"))[1]
        finally:
            proc.terminate()
            await asyncio.get_running_loop().run_in_executor(None, proc.wait)
            log.close()
            await daemon.stop()
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics_text,
        text=True,
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
