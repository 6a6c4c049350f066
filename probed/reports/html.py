"""HTML reports: a month (or a range of months) and one incident's evidence, as one
self-contained page each (inline CSS and SVG, no script, nothing fetched).

Why Jinja2: the pages carry text from the store and the config that nobody
vetted (failure reasons are a remote server's words, exclusion reasons are
typed by people), and a report is mailed to customers. Jinja2's autoescaping
escapes every ``{{ value }}`` by default, in text and in attributes, so a
reason containing ``<script>`` shows as text; string-building HTML would
have to remember to escape at each of a hundred places. It is also the most
used and maintained Python template engine, already a dependency of half the
tools an operator runs. The SVG is drawn by the same templates from the
geometry in :mod:`probed.reports.timeline`: no charting library, no CDN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from probed.config import Config
from probed.core import accounting
from probed.core.accounting import Interval, ServiceFigures
from probed.core.maintenance import is_configured
from probed.core.times import iso
from probed.reports import timeline
from probed.reports.incident import Evidence
from probed.reports.render import (
    _ADVISORIES,
    _BY_LOCATION,
    MonthReport,
    RangeReport,
    Report,
    _advisory_table,
    _agreeing,
    _availability_percent,
    _local,
    _location_table,
    _minutes,
    _percent,
    _period_note,
    _short,
    _status,
    iso_utc,
)
from probed.store.base import Store


@dataclass(frozen=True, slots=True)
class ServiceExtras:
    """What the timeline needs beyond the figures: the lanes and the monitoring gaps."""

    checks: tuple[str, ...]
    unmonitored: tuple[Interval, ...]


Extras = Mapping[tuple[str, str], ServiceExtras]  # (month, service) -> extras


async def gather_extras(store: Store, config: Config, report: Report, now: float) -> Extras:
    """Read the monitoring gaps of every service-month in ``report`` from the store."""
    months = report.months if isinstance(report, RangeReport) else (report,)
    extras: dict[tuple[str, str], ServiceExtras] = {}
    for month in months:
        for f in month.services:
            window = (f.period_start, f.period_end)
            service = config.services.get(f.service)
            covered = await store.coverage(f.service, window, now) if window[0] < window[1] else []
            extras[(f.month, f.service)] = ServiceExtras(
                checks=tuple(c.name for c in service.checks) if service else (),
                unmonitored=tuple(accounting.subtract([window], covered)),
            )
    return extras


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("probed", "templates"),
        autoescape=True,  # every template, whatever its name: see the module docstring
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        local=_local,
        when=when_text,
        iso=iso_utc,
        minutes=_minutes,
        percent=_percent,
        short=_short,
        duration=duration_text,
        availability=availability_text,
    )
    env.globals.update(
        status=_status,
        period_note=_period_note,
        is_configured=is_configured,
        lane=timeline.LANE,
        axis=timeline.AXIS,
        chart=timeline.CHART,
    )
    return env


def when_text(ts: float, tz: str) -> str:
    """``2026-10-04 10:00 CEST``: a moment on the status page, in the billing zone."""
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def availability_text(ratio: float | None) -> str:
    return "no data" if ratio is None else _availability_percent(ratio)


def duration_text(seconds: float) -> str:
    """``3 min 20 s``, ``2 h 5 min``, ``0.5 s``: how long, for people."""
    if seconds < 10:  # a short outage or an exclusion of a moment must not read "0 s"
        return f"{seconds:.1f} s".replace(".0 s", " s")
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _service_view(f: ServiceFigures, extras: Extras, now: float) -> dict[str, Any]:
    got = extras.get((f.month, f.service), ServiceExtras((), ()))
    # several locations: the same evidence tables as the text report, never billed
    tables = []
    if f.locations:
        tables.append((f"{f.service} {_BY_LOCATION}", _location_table(f)))
    if f.advisories:
        tables.append((f"{f.service} {_ADVISORIES}", _advisory_table(f)))
    return {
        "f": f,
        "tables": tables,
        "agreeing": [_agreeing(row.span, f.timezone) for row in f.outages],
        "timeline": timeline.month_timeline(f, got.checks, got.unmonitored, now),
    }


def _month_view(report: MonthReport, extras: Extras, now: float) -> dict[str, Any]:
    return {
        "report": report,
        "services": [_service_view(f, extras, now) for f in report.services],
    }


def render_html(report: Report, extras: Extras, now: float | None = None) -> str:
    """The month or range report as one HTML page."""
    months = report.months if isinstance(report, RangeReport) else (report,)
    at = months[0].generated_at if now is None else now
    title = (
        f"SLA report {report.first} .. {report.last}"
        if isinstance(report, RangeReport)
        else f"SLA report {report.month}"
    )
    return (
        environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            timezone=report.timezone,
            generated_at=months[0].generated_at,
            totals=report.totals if isinstance(report, RangeReport) else (),
            months=[_month_view(m, extras, at) for m in months],
        )
    )


def render_incident_html(e: Evidence, now: float) -> str:
    """One outage's evidence (the credit-claim page) as one HTML page."""
    line = timeline.incident_timeline(
        e.outage,
        e.concurrent,
        e.exclusions,
        ((t.check, t.at, t.reason) for t in e.failed_tests),
        now,
        recovered=e.closed_at,
    )
    checks: Sequence[str] = sorted({e.outage.check, *(c.check for c in e.concurrent)})
    return (
        environment()
        .get_template("incident.html.j2")
        .render(
            title=f"Incident {e.outage.id}: {e.service}",
            e=e,
            o=e.outage,
            checks=checks,
            recovered=iso(e.closed_at),
            timeline=line,
            generated_at=now,
        )
    )
