"""The status page's pure parts: config, day strip, badge, and the page's safety rules."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from probed import config as config_mod
from probed.config import ConfigError
from probed.core.accounting import Policy, month_period, service_figures
from probed.reports.html import duration_text
from probed.web.badge import COLORS, render_badge, service_badge
from probed.web.days import day_strip, local_days
from tests.browser import parse_strict
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, wait_for

BASE = """\
timezone: UTC
storage: sqlite:///tmp/probed-status-test.db
services:
  mail:
    objective: 99.5
    checks:
      - {name: smtp, type: tcp, host: 127.0.0.1, port: 25}
  web:
    objective: 99.9
    public: true
    checks:
      - {name: home, type: http, url: "http://127.0.0.1:8080/"}
"""


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_status_page_defaults_show_every_service(tmp_path: Path) -> None:
    path = tmp_path / "probed.yaml"
    path.write_text(BASE, encoding="utf-8")
    config = config_mod.load(path)
    assert config.status_page.services == ("mail", "web")
    assert config.status_page.title == "Service status"
    assert config.services["web"].public and not config.services["mail"].public


def test_status_page_section_is_read_and_unknown_services_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "probed.yaml"
    path.write_text(
        BASE + "status_page:\n  title: Example status\n  services: [web, nope]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert info.value.problems == [
        f'{path}:15: status_page.services[1]: unknown service "nope"; configured: mail, web'
    ]
    path.write_text(
        BASE
        + "status_page: {title: Example status, logo_text: EX, services: [web], refresh: 5s}\n",
        encoding="utf-8",
    )
    page = config_mod.load(path).status_page
    assert (page.title, page.logo_text, page.services, page.refresh) == (
        "Example status",
        "EX",
        ("web",),
        5.0,
    )


def test_local_days_are_calendar_days_in_the_zone_across_dst() -> None:
    days = local_days("Europe/Berlin", t("2026-03-30T12:00:00"), 3)
    assert [d.isoformat() for d, _, _ in days] == ["2026-03-28", "2026-03-29", "2026-03-30"]
    assert [end - start for _, start, end in days] == [86400, 82800, 86400]  # 23 h on the 29th


def test_day_strip_colours_days_against_the_daily_budget() -> None:
    now = t("2026-10-05T12:00:00")
    # objective 99.5 %: a day's share of the budget is 432 s
    strip = day_strip(
        tz="UTC",
        now=now,
        count=5,
        downtime=[
            (t("2026-10-02T10:00:00"), t("2026-10-02T10:05:00")),  # 300 s: within the share
            (t("2026-10-03T10:00:00"), t("2026-10-03T11:00:00")),  # 3600 s, 1800 s excluded
            (t("2026-10-04T10:00:00"), t("2026-10-04T10:30:00")),  # 1800 s: beyond
        ],
        excluded=[(t("2026-10-03T10:00:00"), t("2026-10-03T10:30:00"))],
        coverage=[(t("2026-10-02T00:00:00"), now)],
        first_test_at=t("2026-10-02T00:00:00"),
        objective=0.995,
    )
    assert [d.level for d in strip] == ["nodata", "minor", "major", "major", "ok"]
    assert [d.downtime_seconds for d in strip] == [0, 300, 1800, 1800, 0]
    assert strip[2].excluded_seconds == 1800
    assert strip[0].availability is None
    assert strip[4].period_seconds == 12 * 3600  # today, up to now
    assert strip[1].availability == pytest.approx(1 - 300 / 86400)


def test_a_gap_inside_an_outage_still_shows_its_downtime() -> None:
    now = t("2026-10-03T06:00:00")
    strip = day_strip(
        tz="UTC",
        now=now,
        count=2,
        downtime=[(t("2026-10-01T23:00:00"), now)],
        excluded=[],
        coverage=[],  # the daemon was down; the failure run continued across the gap
        first_test_at=t("2026-10-01T00:00:00"),
        objective=0.995,
    )
    assert strip[0].level == "major" and strip[0].unmonitored_seconds == 86400


def month_figures(downtime: float, minimum: float | None = None):  # type: ignore[no-untyped-def]
    start, end = month_period("2026-10", "UTC")
    from probed.core.accounting import OutageSpan

    return service_figures(
        service="mail",
        policy=Policy(0.995, minimum),
        month="2026-10",
        tz="UTC",
        outages=[OutageSpan("smtp", start + 100, start + 100 + downtime, 3)] if downtime else [],
        exclusions=[],
        coverage=[(start, end)],
        first_test_at=start,
        now=end,
    )


def badge_parts(svg: str) -> tuple[str, str]:
    root = ET.fromstring(svg)
    texts = [x for x in root.iter("{http://www.w3.org/2000/svg}text") if x.get("class")]
    fills = [r.get("fill") for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    return texts[0].text or "", str(fills[2])


def test_badge_is_floored_and_coloured_against_the_objective() -> None:
    month = 2678400
    met = month_figures(month * 0.005)  # exactly 99.5 %: met
    assert badge_parts(render_badge(service_badge("mail", met))) == ("99.50 %", COLORS["met"])
    missed = month_figures(month * 0.005 + 1)  # 99.49996 %: never shown as 99.50
    assert badge_parts(render_badge(service_badge("mail", missed))) == (
        "99.49 %",
        COLORS["missed"],
    )
    below = month_figures(month * 0.02, minimum=0.99)
    assert badge_parts(render_badge(service_badge("mail", below)))[1] == COLORS["below"]
    empty = replace(met, period_seconds=0.0)
    assert badge_parts(render_badge(service_badge("mail", empty))) == ("no data", COLORS["nodata"])
    assert badge_parts(render_badge(service_badge("mail", None)))[0] == "no data"


def test_durations_read_for_people() -> None:
    assert [duration_text(s) for s in (0, 0.5, 1.74, 59, 60, 200, 3725)] == [
        "0 s",
        "0.5 s",
        "1.7 s",
        "59 s",
        "1 min",
        "3 min 20 s",
        "1 h 2 min",
    ]


@pytest.mark.e2e
async def test_a_maintenance_window_now_shows_and_only_public_services_give_reasons(
    tmp_path: Path,
) -> None:
    start = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%H:%M")
    window = f'maintenance: [{{every: day, start: "{start}", duration: 1h, reason: "kernel <b>patch</b>"}}]'
    async with ScriptedHTTP() as http:
        url = f"http://127.0.0.1:{http.port}"
        path = tmp_path / "probed.yaml"
        path.write_text(
            f"timezone: UTC\nstorage: sqlite://{tmp_path}/probed.db\nlisten: 127.0.0.1:0\n"
            "defaults: {interval: 0.2s, timeout: 0.15s}\n"
            "status_page: {title: Maintenance test, services: [private, open]}\n"
            "services:\n"
            f"  private:\n    objective: 99.5\n    {window}\n"
            f'    checks: [{{name: home, type: http, url: "{url}/home"}}]\n'
            f"  open:\n    objective: 99.5\n    public: true\n    {window}\n"
            f'    checks: [{{name: shop, type: http, url: "{url}/shop"}}]\n'
            f"  hidden:\n    objective: 99.5\n"
            f'    checks: [{{name: back, type: http, url: "{url}/back"}}]\n',
            encoding="utf-8",
        )
        daemon = await DaemonProcess(path).start()
        try:
            page = await wait_for(lambda: _page_in_maintenance(daemon), what="maintenance shown")
            badge, _ = await daemon.get("/badge/hidden.svg")
        finally:
            assert await daemon.stop() == 0
    parse_strict(page)
    private, public = page.split('data-service="open"')
    assert "In maintenance" in private and "In maintenance" in public
    assert "kernel" not in private and f"{url}/home" not in private
    assert "(kernel &lt;b&gt;patch&lt;/b&gt;)" in public and f"{url}/shop" in public
    assert 'data-service="hidden"' not in page and badge == 404  # not on the page


async def _page_in_maintenance(daemon: DaemonProcess) -> str | None:
    status, page = await daemon.get("/status")
    assert status == 200
    return page if page.count('data-state="maintenance"') == 2 else None
