"""The status page, a badge, the HTML report and the incident page in headless Chromium,
against the real daemon with scripted outages on a loopback HTTP server.

What is checked in the rendered DOM: the figures shown are the JSON report's, the
timeline has one bar per outage at its place (within 1 px per minute of scale), a
``<script>`` in a failure or exclusion reason stays text and never runs, the status
page works with JavaScript off and updates itself when an outage opens, every page
parses as strict HTML and axe-core finds no serious accessibility violation. Each
test writes a screenshot of each page under its tmp dir and prints the path.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from selenium.webdriver.common.by import By

from tests.browser import Browser, chromium_paths, parse_strict
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "browser-test-token"
INTERVAL = 0.5  # roomy enough that Chromium starting up does not time tests out
FAILED_REASON = "<script>window.__pwned=1</script>"  # a server's reason phrase, 34 chars
EXCLUSION_REASON = '<img src=x onerror="window.__pwned=2">DoS <script>window.__pwned=3</script>'


@dataclass
class Switchboard(ScriptedHTTP):
    """The loopback HTTP server of the e2e tests, whose paths answer as ``mode`` says:
    up (200), down (503) or hostile (status 599 with a script as its reason phrase,
    which the probe reports)."""

    mode: dict[str, str] = field(default_factory=dict)

    async def _handle(self, request: web.Request) -> web.Response:
        mode = self.mode.get(request.match_info["name"], "up")
        if mode == "down":
            return web.Response(status=503, text="down")
        if mode == "hostile":
            return web.Response(status=599, reason=FAILED_REASON, text="odd")
        return web.Response(text="ok")


def write_config(tmp: Path, port: int) -> Path:
    (tmp / "token").write_text(TOKEN + "\n", encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    path = tmp / "probed.yaml"
    path.write_text(
        f"""timezone: UTC
storage: sqlite://{tmp}/probed.db
listen: 127.0.0.1:0
api_token_file: {tmp / "token"}
defaults: {{interval: {INTERVAL}s, timeout: {INTERVAL * 0.9}s, failures_to_down: 2}}
status_page: {{title: Example hosting status, logo_text: EX, refresh: 1s}}
services:
  web:
    objective: 99.5
    public: true
    checks:
      - {{name: site, type: http, url: "{url}/site"}}
      - {{name: api, type: http, url: "{url}/api"}}
  shop:
    objective: 99.9
    credits: [{{below: 99.9, percent: 10}}]
    checks:
      - {{name: cart, type: http, url: "{url}/cart"}}
""",
        encoding="utf-8",
    )
    return path


async def open_outages(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    status = await daemon.json("/api/v1/status")
    return {o["check"]: o for s in status["services"] for o in s["open_outages"]}


async def has_passed(daemon: DaemonProcess, check: str, count: int = 2) -> bool:
    done = await daemon.metric("probed_probes_total", check=check, result="pass")
    return done is not None and done >= count


async def script_outage(daemon: DaemonProcess, board: Switchboard, check: str, mode: str) -> int:
    """Take ``check`` down until its outage opens, then up until it closes; its id."""
    board.mode[check] = mode
    opened = await wait_for(lambda: _open(daemon, check), what=f"{check} outage to open")
    board.mode[check] = "up"
    await wait_for(lambda: _closed(daemon, check), what=f"{check} outage to close")
    return int(opened["id"])


async def _open(daemon: DaemonProcess, check: str) -> dict[str, Any] | None:
    return (await open_outages(daemon)).get(check)


async def _closed(daemon: DaemonProcess, check: str) -> bool:
    return check not in await open_outages(daemon)


async def flag_exclusion(daemon: DaemonProcess, start: str) -> None:
    begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
    body = {
        "service": "web",
        "start": begin.isoformat(),
        "end": (begin + timedelta(seconds=INTERVAL)).isoformat(),
        "kind": "dos",
        "reason": EXCLUSION_REASON,
        "by": "ops <b>bot</b>",
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"http://127.0.0.1:{daemon.port}/api/v1/exclusions"
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        assert r.status == 201, await r.text()


def cli_report(config: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "probed.cli", "report", "-c", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def in_browser(fn: Callable[[Browser], Any], **options: Any) -> Any:
    def run() -> Any:
        browser = Browser(**options)
        try:
            return fn(browser)
        finally:
            browser.close()

    return await asyncio.to_thread(run)


# ----------------------------------------------------------------------- reports


READ_FIGURES = """
const rows = {};
for (const tr of document.querySelectorAll('table.figures tr[data-service]')) {
  const cells = {};
  for (const td of tr.querySelectorAll('[data-field]')) {
    cells[td.dataset.field] = {value: td.dataset.value, text: td.textContent.trim()};
  }
  rows[tr.dataset.service] = cells;
}
return {rows: rows, generated: Number(document.body.dataset.generated)};
"""

READ_BARS = """
const out = {};
for (const section of document.querySelectorAll('section.service[data-service]')) {
  const svg = section.querySelector('figure.timeline svg');
  const plot = svg.querySelector('.tl-plot').getBoundingClientRect();
  const start = Number(svg.dataset.start), end = Number(svg.dataset.end);
  out[section.dataset.service] = {
    plot: {left: plot.left, width: plot.width}, start: start, end: end,
    bars: [...svg.querySelectorAll('rect.bar')].map(b => ({
      left: b.getBoundingClientRect().left, start: Number(b.dataset.start),
      end: Number(b.dataset.end), outage: b.dataset.outage, check: b.dataset.check})),
  };
}
return out;
"""


def check_report_page(browser: Browser, url: str, shot: Path) -> dict[str, Any]:
    browser.open(url)
    found = {
        "figures": browser.js(READ_FIGURES),
        "bars": browser.js(READ_BARS),
        "pwned": browser.js("return window.__pwned === undefined ? null : window.__pwned"),
        "reasons": [e.text for e in browser.driver.find_elements(By.CSS_SELECTOR, "td.reason")],
        "axe": browser.axe_violations(),
        "pdf_pages": browser.print_pdf(shot.with_suffix(".pdf")),
    }
    browser.screenshot(shot)
    return found


def check_incident_page(browser: Browser, url: str, shot: Path) -> dict[str, Any]:
    browser.open(url)
    found = {
        "downtime": browser.js(
            "return Number(document.querySelector('[data-field=downtime_seconds]').dataset.value)"
        ),
        "tests": len(browser.driver.find_elements(By.CSS_SELECTOR, "table.tests tbody tr")),
        "marks": len(browser.driver.find_elements(By.CSS_SELECTOR, "circle.mark")),
        "pwned": browser.js("return window.__pwned === undefined ? null : window.__pwned"),
        "axe": browser.axe_violations(),
    }
    browser.screenshot(shot)
    return found


def assert_same_figures(shown: dict[str, Any], report: dict[str, Any]) -> None:
    """The HTML's figures are the JSON's; both runs of `probed report` differ only in `now`
    (after the daemon stopped, the running month's period and gap keep growing)."""
    clock = (
        shown["generated"]
        - datetime.fromisoformat(report["generated_at"].replace("Z", "+00:00")).timestamp()
    )
    for service in report["services"]:
        cells = shown["rows"][service["service"]]
        for key in ("downtime_seconds", "excluded_seconds", "credit_percent", "objective"):
            assert float(cells[key]["value"]) == pytest.approx(service[key], abs=1e-9), key
        period = float(cells["period"]["value"])
        assert period - service["period_seconds"] == pytest.approx(clock, abs=1e-3)
        availability = float(cells["availability"]["value"])
        assert availability == pytest.approx(1 - service["downtime_seconds"] / period, abs=1e-12)
        assert service["availability"] == round(
            1 - service["downtime_seconds"] / service["period_seconds"], 6
        )
        # the text a person reads is the data value, floored to four decimals
        assert cells["availability"]["text"] == f"{int(availability * 1e6) / 1e4:.4f} %"


def assert_bars_placed(bars: dict[str, Any], report: dict[str, Any]) -> None:
    for service in report["services"]:
        drawn = bars[service["service"]]
        starts = sorted(
            datetime.fromisoformat(o["start"].replace("Z", "+00:00")).timestamp()
            for o in service["outages"]
        )
        assert sorted(b["start"] for b in drawn["bars"]) == pytest.approx(starts, abs=1e-3)
        span, plot = drawn["end"] - drawn["start"], drawn["plot"]
        tolerance = 1 + plot["width"] / (span / 60)  # 1 px, plus the width of a minute
        for bar in drawn["bars"]:
            expected = plot["left"] + (bar["start"] - drawn["start"]) / span * plot["width"]
            assert abs(bar["left"] - expected) <= tolerance, (bar, expected)


async def test_html_report_and_incident_page_in_chromium(tmp_path: Path) -> None:
    chromium_paths()
    async with Switchboard() as board:
        config = write_config(tmp_path, board.port)
        daemon = await DaemonProcess(config).start()
        try:
            for check in ("site", "api", "cart"):
                await wait_for(lambda c=check: has_passed(daemon, c), what=f"{check} tested")
            site_id = await script_outage(daemon, board, "site", "down")
            await script_outage(daemon, board, "cart", "hostile")
            live = await daemon.json("/api/v1/report")
            [site] = [o for s in live["services"] for o in s["outages"] if o["check"] == "site"]
            await flag_exclusion(daemon, site["start"])
        finally:
            assert await daemon.stop() == 0
    page = cli_report(config, "--format", "html")
    report = json.loads(cli_report(config, "--format", "json"))
    incident = cli_report(config, "--incident", str(site_id), "--format", "html")
    evidence = json.loads(cli_report(config, "--incident", str(site_id), "--format", "json"))
    for text in (page, incident):
        parse_strict(text)
        assert "<script>window.__pwned" not in text
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    (tmp_path / "incident.html").write_text(incident, encoding="utf-8")

    shown = await in_browser(
        lambda b: check_report_page(b, (tmp_path / "report.html").as_uri(), tmp_path / "report.png")
    )
    assert shown["pwned"] is None
    assert shown["axe"] == []
    assert shown["pdf_pages"] >= 1  # printable: @media print and @page, A4 landscape
    assert_same_figures(shown["figures"], report)
    assert_bars_placed(shown["bars"], report)
    assert any(FAILED_REASON in r for r in shown["reasons"])  # shown as text
    assert any(EXCLUSION_REASON in r for r in shown["reasons"])
    web_figures = next(s for s in report["services"] if s["service"] == "web")
    assert web_figures["excluded_seconds"] > 0

    seen = await in_browser(
        lambda b: check_incident_page(
            b, (tmp_path / "incident.html").as_uri(), tmp_path / "incident.png"
        )
    )
    assert seen["pwned"] is None
    assert seen["axe"] == []
    assert seen["downtime"] == pytest.approx(evidence["downtime_seconds"], abs=1e-3)
    assert seen["tests"] == seen["marks"] == len(evidence["tests"]) >= 2


# ------------------------------------------------------------------- status page


STATE_OF = (
    "return document.querySelector('section[data-service=' + arguments[0] + ']').dataset.state"
)


def wait_in_page(browser: Browser, script: str, *args: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.js(script, *args)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"page never satisfied {script!r} within {timeout}s")


def watch_status_page(browser: Browser, url: str, shot: Path, take_down: Callable[[], None]) -> Any:
    browser.open(url)
    wait_in_page(browser, STATE_OF + " === 'up' || null", "web")
    browser.js("window.__samePage = 1")
    take_down()
    opened_at = time.monotonic()
    wait_in_page(browser, STATE_OF + " === 'P2' || null", "web", timeout=15.0)
    took = time.monotonic() - opened_at
    browser.js("document.querySelector('section[data-service=web] .day:last-child').focus()")
    tip = browser.driver.find_element(
        By.CSS_SELECTOR, "section[data-service=web] .day:last-child .tip"
    )
    found = {
        "same_page": browser.js("return window.__samePage === 1"),
        "took": took,
        "overall": browser.driver.find_element(By.ID, "overall").text,
        "ongoing": [
            e.text
            for e in browser.driver.find_elements(
                By.CSS_SELECTOR, "section[data-service=web] li.incident.open"
            )
        ],
        "tip_visible": tip.is_displayed(),
        "other_tip_hidden": browser.js(  # the stylesheet served by probed is applied
            "return getComputedStyle(document.querySelector('.day .tip')).display === 'none'"
        ),
        "tip": tip.text,
        "axe": browser.axe_violations(),
    }
    browser.screenshot(shot)
    browser.color_scheme("dark")
    found["axe_dark"] = browser.axe_violations()
    browser.screenshot(shot.with_name(shot.stem + "-dark.png"))
    return found


def read_without_javascript(browser: Browser, url: str, shot: Path) -> dict[str, Any]:
    browser.open(url)
    sections = browser.driver.find_elements(By.CSS_SELECTOR, "section.service")
    found = {
        "states": {
            s.get_attribute("data-service"): s.get_attribute("data-state") for s in sections
        },
        "days": len(
            browser.driver.find_elements(By.CSS_SELECTOR, "section[data-service=web] li.day")
        ),
        "overall": browser.driver.find_element(By.ID, "overall").text,
        "refreshed": browser.driver.find_element(By.TAG_NAME, "body").get_attribute(
            "data-refreshed"
        ),
    }
    browser.screenshot(shot)
    return found


async def month_ratio(daemon: DaemonProcess, service: str) -> float:
    ratio = await daemon.metric(
        "probed_service_availability_ratio", service=service, window="month_to_date"
    )
    assert ratio is not None
    return ratio


def badge_message(svg: str) -> str:
    root = ET.fromstring(svg)
    [text] = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("class")]
    return text or ""


async def test_status_page_and_badge_in_chromium(tmp_path: Path) -> None:
    chromium_paths()
    async with Switchboard() as board:
        config = write_config(tmp_path, board.port)
        daemon = await DaemonProcess(config).start()
        loop = asyncio.get_running_loop()
        try:
            for check in ("site", "api", "cart"):
                await wait_for(lambda c=check: has_passed(daemon, c), what=f"{check} tested")
            await script_outage(daemon, board, "cart", "down")
            code, page = await daemon.get("/status")
            assert code == 200
            parse_strict(page)
            # safe to publish: the private service's URL, the token, transcripts stay out
            assert f"{board.port}/cart" not in page and TOKEN not in page
            assert f"http://127.0.0.1:{board.port}/site" in page  # web is public: true
            code, redirect = await daemon.get("/")
            assert code == 200 and "Example hosting status" in redirect  # followed to /status
            url = f"http://127.0.0.1:{daemon.port}/status"

            def take_api_down() -> None:
                loop.call_soon_threadsafe(board.mode.__setitem__, "api", "down")

            live = await in_browser(
                lambda b: watch_status_page(b, url, tmp_path / "status.png", take_api_down)
            )
            no_js = await in_browser(
                lambda b: read_without_javascript(b, url, tmp_path / "status-nojs.png"),
                javascript=False,
            )
            ratios = [await month_ratio(daemon, "shop")]  # the snapshot may refresh between
            code, svg = await daemon.get("/badge/shop.svg")
            ratios.append(await month_ratio(daemon, "shop"))
            badge_url = f"http://127.0.0.1:{daemon.port}/badge/shop.svg"
            await in_browser(lambda b: (b.open(badge_url), b.screenshot(tmp_path / "badge.png")))
            missing, _ = await daemon.get("/badge/nope.svg")
        finally:
            assert await daemon.stop() == 0
    assert live["same_page"] is True  # updated in place, no reload
    assert live["took"] < 10
    assert live["overall"] == "Partial outage"
    assert any(text.startswith("Ongoing api down since") for text in live["ongoing"])
    assert live["tip_visible"] and "available" in live["tip"] and live["other_tip_hidden"]
    assert live["axe"] == [] and live["axe_dark"] == []
    assert no_js["states"] == {"web": "P2", "shop": "up"}
    assert no_js["days"] == 90 and no_js["overall"] == "Partial outage"
    assert no_js["refreshed"] is None  # the refresh script did not run
    assert code == 200 and missing == 404
    shown = {
        f"{(Decimal(repr(r)) * 100).quantize(Decimal('0.01'), rounding=ROUND_FLOOR)} %"
        for r in ratios
    }
    assert badge_message(svg) in shown and all(r < 1 for r in ratios)
