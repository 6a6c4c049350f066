"""HTML reports (pure rendering): escaping, strict HTML, timeline geometry, figures as the JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import html5lib
import pytest

from probed.core.accounting import (
    CreditTier,
    ExclusionSpan,
    OutageSpan,
    Policy,
    ServiceFigures,
    month_period,
    service_figures,
)
from probed.core.maintenance import is_configured
from probed.reports import timeline
from probed.reports.html import ServiceExtras, render_html, render_incident_html
from probed.reports.incident import Evidence
from probed.reports.render import MonthReport, RangeReport, render_json
from probed.store.base import FailedTest

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned=2">'


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def figures(month: str = "2026-10", reason: str = "connection refused") -> ServiceFigures:
    start, end = month_period(month, "UTC")
    return service_figures(
        service="mail",
        policy=Policy(0.995, 0.99, (CreditTier(0.995, 5), CreditTier(0.99, 10))),
        month=month,
        tz="UTC",
        outages=[
            OutageSpan("pop3", start + 86400 * 3, start + 86400 * 3 + 3600, 61, (reason,), id=17),
            OutageSpan(
                "smtp", start + 86400 * 10, start + 86400 * 10 + 180, 4, ("timeout",), id=18
            ),
        ],
        exclusions=[
            ExclusionSpan(
                3,
                "mail",
                start + 86400 * 3,
                start + 86400 * 3 + 1800,
                "dos",
                HOSTILE,
                "alice<b>",
                start,
            ),
            ExclusionSpan(
                4,
                "*",
                start + 86400 * 20,
                start + 86400 * 21,
                "other",
                "oops",
                "bob",
                start,
                start + 5,
                "carol",
                HOSTILE,
            ),
        ],
        coverage=[(start, start + 86400 * 15), (start + 86400 * 16, end)],
        first_test_at=start,
        now=end + 10,
    )


def extras(f: ServiceFigures) -> dict[tuple[str, str], ServiceExtras]:
    gap = ((f.period_start + 86400 * 15, f.period_start + 86400 * 16),)
    return {(f.month, f.service): ServiceExtras(("smtp", "pop3", "imap"), gap)}


SVG = "{http://www.w3.org/2000/svg}"


def parse_strict(page: str) -> None:
    html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(page)


def month_page(reason: str = "connection refused") -> tuple[ServiceFigures, str]:
    f = figures(reason=reason)
    report = MonthReport("2026-10", "UTC", t("2026-11-01T00:00:10"), (f,))
    return f, render_html(report, extras(f))


def test_month_report_is_strict_html_without_external_fetches() -> None:
    _, page = month_page()
    parse_strict(page)
    assert "<script" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    assert "@media print" in page


def test_untrusted_reasons_are_escaped_everywhere() -> None:
    _, page = month_page(reason=HOSTILE)
    parse_strict(page)
    assert "<script>window.pwned" not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page
    assert "alice&lt;b&gt;" in page
    assert 'onerror="window' not in page


def test_figures_carry_the_json_report_values() -> None:
    f, page = month_page()
    doc = html5lib.parse(page, namespaceHTMLElements=False)
    row = doc.find(".//tr[@data-service='mail']")
    assert row is not None
    cells = {td.get("data-field"): td for td in row.iter("td")}
    data = json.loads(render_json(MonthReport("2026-10", "UTC", 0.0, (f,))))["services"][0]
    assert float(cells["downtime_seconds"].get("data-value", "")) == data["downtime_seconds"]
    availability = float(cells["availability"].get("data-value", ""))
    assert abs(availability - data["availability"]) <= 5e-7
    # 3600 s + 180 s of outage, 1800 s of it excluded: 1 - 1980 / 2678400, floored
    assert cells["availability"].text == "99.9260 %"
    assert cells["credit_percent"].get("data-value") == "0.0"
    assert cells["status"].text == "met"


def test_timeline_has_one_bar_per_outage_at_its_place() -> None:
    _f, page = month_page()
    doc = html5lib.parse(page, namespaceHTMLElements=False)
    bars = [r for r in doc.iter(SVG + "rect") if "bar" in (r.get("class") or "").split()]
    assert [b.get("data-outage") for b in bars] == ["17", "18"]
    start, end = month_period("2026-10", "UTC")
    for bar in bars:
        expected = (float(bar.get("data-start", "")) - start) / (end - start) * timeline.WIDTH
        assert float(bar.get("x", "")) == pytest.approx(expected, abs=0.01)
    # 3 days into a 31-day month on 960 units; a 3-minute outage is drawn MIN_BAR wide
    assert float(bars[0].get("x", "")) == pytest.approx(960 * 3 / 31, abs=0.01)
    assert float(bars[1].get("width", "")) == timeline.MIN_BAR
    lanes = [tx.text for tx in doc.iter(SVG + "text") if tx.get("class") == "lane-name"]
    assert lanes == ["smtp", "pop3", "imap"]


def test_bands_shade_exclusions_hatch_gaps() -> None:
    _, page = month_page()
    doc = html5lib.parse(page, namespaceHTMLElements=False)
    kinds = [r.get("class") for r in doc.iter(SVG + "rect") if "band" in (r.get("class") or "")]
    assert kinds.count("band band-excluded") == 1
    assert kinds.count("band band-revoked") == 1
    assert kinds.count("band band-unmonitored") == 1


def test_cumulative_chart_reaches_the_counted_downtime_and_draws_the_budget() -> None:
    f = figures()
    line = timeline.month_timeline(f, ("pop3", "smtp"), (), f.period_end)
    assert line.chart is not None
    assert line.chart.total_seconds == f.downtime_seconds == 1800 + 180
    assert line.chart.budget_seconds == f.error_budget_seconds
    assert line.chart.budget_y is not None and 0 < line.chart.budget_y < timeline.CHART
    # the last point is at the period's end (here the month's), at the height of the total
    last_x, last_y = line.chart.points[-1]
    assert last_x == timeline.WIDTH
    assert last_y == pytest.approx(
        timeline.CHART - f.downtime_seconds / line.chart.max_seconds * timeline.CHART, abs=0.01
    )


def test_running_month_greys_the_future() -> None:
    start, end = month_period("2026-10", "UTC")
    f = figures()
    now = start + (end - start) / 2
    line = timeline.month_timeline(f, ("pop3",), (), now)
    future = [b for b in line.bands if b.kind == "future"]
    assert len(future) == 1 and future[0].x == pytest.approx(timeline.WIDTH / 2)


def test_day_ticks_follow_local_midnights_across_dst() -> None:
    start, end = month_period("2026-03", "Europe/Berlin")
    ticks = timeline.day_ticks(timeline.Scale(start, end), "Europe/Berlin")
    assert len(ticks) == 31
    assert ticks[0].x == 0 and ticks[0].label == "1"


def test_range_report_has_totals_and_each_month() -> None:
    f10, f11 = figures("2026-10"), figures("2026-11")
    months = tuple(MonthReport(f.month, "UTC", f.period_end, (f,)) for f in (f10, f11))
    page = render_html(
        RangeReport("2026-10", "2026-11", "UTC", months), {**extras(f10), **extras(f11)}
    )
    parse_strict(page)
    doc = html5lib.parse(page, namespaceHTMLElements=False)
    assert [s.get("data-month") for s in doc.iter("section") if s.get("data-month")] == [
        "2026-10",
        "2026-11",
    ]
    assert doc.find(".//table[@class='totals']") is not None


def test_incident_page_lists_every_failed_test_escaped() -> None:
    f = figures(reason=HOSTILE)
    outage = f.outages[0].span
    tests = tuple(
        FailedTest("pop3", outage.start + 60 * i, 0.012, HOSTILE if i == 1 else "refused", "")
        for i in range(61)
    )
    e = Evidence(
        service="mail",
        outage=outage,
        closed_at=outage.end + 60,
        downtime_seconds=1800.0,
        excluded_seconds=1800.0,
        failed_tests=tests,
        concurrent=(),
        exclusions=tuple(x for x in f.exclusions if not is_configured(x))[:1],
        months=(f,),
    )
    page = render_incident_html(e, outage.end + 120)
    parse_strict(page)
    assert "<script>window" not in page
    doc = html5lib.parse(page, namespaceHTMLElements=False)
    rows = doc.findall(".//table[@class='tests']/tbody/tr")
    assert len(rows) == 61
    marks = [c for c in doc.iter(SVG + "circle") if c.get("class") == "mark"]
    assert len(marks) == 61
    assert doc.find(".//dd[@data-field='downtime_seconds']").get("data-value") == "1800.0"


def test_several_locations_show_who_agreed_and_the_evidence_tables() -> None:
    from tests.test_report_locations import WORKED, report

    page = render_html(report(WORKED), {})
    parse_strict(page)
    doc = html5lib.parse(page, namespaceHTMLElements=False)
    captions = [c.text for c in doc.iter("caption")]
    assert "mail by location (evidence, not billed)" in captions
    assert (
        "mail advisories: location outages that never reached the quorum (not billed)" in captions
    )
    [row] = doc.findall(".//table[@class='outages']/tbody/tr")
    cells = [td.text for td in row.findall("td")]
    assert "A 2026-10-04 10:00:00 UTC – 2026-10-04 10:10:00 UTC; B" in " ".join(
        c or "" for c in cells
    )
