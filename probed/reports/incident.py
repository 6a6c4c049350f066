"""One outage's evidence: what a customer's credit request or an auditor needs.

Services affected, start and end, every failed test with its time and
reason, the other checks of the service that were down at the same time, and
the exclusions that overlap it (live or revoked, for the audit trail).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from functools import partial

from probed.config import Config, Service
from probed.core import accounting
from probed.core.accounting import ExclusionSpan, OutageSpan
from probed.core.maintenance import expand, is_configured
from probed.core.times import iso
from probed.exclusions import to_json as exclusion_json
from probed.reports.figures import service_month
from probed.reports.render import (
    _availability_percent,
    _credit_text,
    _local,
    _percent,
    _ratio,
    _status,
)
from probed.store.base import FailedTest, Store

MAX_FAILED_TESTS = 10_000  # a month-long outage at 60 s is ~45 000 tests; keep output bounded


@dataclass(frozen=True, slots=True)
class Evidence:
    service: str
    outage: OutageSpan
    closed_at: float | None
    downtime_seconds: float
    excluded_seconds: float
    failed_tests: tuple[FailedTest, ...]
    concurrent: tuple[OutageSpan, ...]
    exclusions: tuple[ExclusionSpan, ...]
    months: tuple[accounting.ServiceFigures, ...] = ()  # the billing months it touches
    # Several locations: the location outages that agreed on this quorum outage (empty
    # with one location), and whether it was billed at all (False: an advisory).
    locations: tuple[OutageSpan, ...] = ()
    billed: bool = True
    timezone: str = "UTC"  # text and Markdown show times in it; JSON and CSV in UTC


async def incident_evidence(
    store: Store, config: Config, outage_id: int, now: float
) -> Evidence | None:
    found = await store.outage(outage_id)
    if found is None:
        return None
    service, span, closed_at = found.service, found.span, found.closed_at
    window = (span.start, span.end)
    # The same exclusions the month's figures use, config windows included, so the
    # incident's downtime agrees with the report's.
    around = (span.start, span.end + 1e-6)  # a one-test outage still has an instant
    exclusions = [e for e in await store.exclusions(around) if e.applies_to(service)]
    configured = config.services.get(service)
    if configured is not None:
        exclusions += expand(
            configured.maintenance, service=service, tz=config.timezone, span=around
        )
    live = accounting.union(e.interval for e in exclusions if e.live)
    excluded = accounting.total(accounting.intersection([window], live))
    concurrent = [o for o in await store.outages(service, around) if o.id != span.id]
    tests = (await store.failed_tests(service, span.check, window))[:MAX_FAILED_TESTS]
    months = (
        () if configured is None else await _months(store, configured, config.timezone, span, now)
    )
    if any(f.locations or f.advisories for f in months):
        quorum = await _quorum_evidence(store, service, span, months, exclusions, concurrent)
        return replace(quorum, timezone=config.timezone)
    return Evidence(
        service=service,
        outage=span,
        closed_at=closed_at,
        downtime_seconds=(span.end - span.start) - excluded,
        excluded_seconds=excluded,
        failed_tests=tuple(tests),
        concurrent=tuple(concurrent),
        exclusions=tuple(sorted(exclusions, key=lambda x: (x.start, x.id))),
        months=months,
        timezone=config.timezone,
    )


async def _quorum_evidence(
    store: Store,
    service: str,
    span: OutageSpan,
    months: tuple[accounting.ServiceFigures, ...],
    exclusions: list[ExclusionSpan],
    concurrent: list[OutageSpan],
) -> Evidence:
    """Several locations: the billed quorum outage this location outage took part in, with
    every agreeing location's failed tests; or, when it never reached the quorum, the
    location outage itself as an advisory that bills nothing."""
    rows = [r for f in months for r in f.outages if any(m.id == span.id for m in r.span.members)]
    outage = rows[0].span if rows else span
    members = outage.members if rows else (span,)
    tests: list[FailedTest] = []
    for m in members:
        tests += await store.failed_tests(service, m.check, m.interval, location=m.location)
    closing = [
        await store.outage(m.id) for m in members if m.id is not None and m.end == outage.end
    ]
    return Evidence(
        service=service,
        outage=outage,
        closed_at=None
        if outage.open
        else max((c.closed_at or 0.0 for c in closing if c), default=None),
        downtime_seconds=sum(r.downtime_seconds for r in rows),
        excluded_seconds=sum(r.excluded_seconds for r in rows),
        failed_tests=tuple(sorted(tests, key=lambda t: (t.at, t.location))[:MAX_FAILED_TESTS]),
        concurrent=tuple(c for c in concurrent if c.check != span.check),
        exclusions=tuple(sorted(exclusions, key=lambda x: (x.start, x.id))),
        months=months,
        locations=members,
        billed=bool(rows),
    )


async def _months(
    store: Store, service: Service, tz: str, span: OutageSpan, now: float
) -> tuple[accounting.ServiceFigures, ...]:
    """The figures of every billing month the outage touches: what the credit is owed on."""
    first, last = accounting.month_of(span.start, tz), accounting.month_of(span.end, tz)
    return tuple(
        [
            await service_month(store, service, m, tz, now)
            for m in accounting.months_between(first, last)
        ]
    )


def _sla(f: accounting.ServiceFigures) -> tuple[str, str]:
    """(``SLA 2026-10 (UTC)``, what the month's figures say) for text and Markdown."""
    return (
        f"SLA {f.month} ({f.timezone})",
        f"availability {_availability_percent(f.availability)}"
        f" against {_percent(f.objective)} ({_status(f.status)}),"
        f" credit {_credit_text(f.credit_percent)}",
    )


def _cell(text: str) -> str:
    # a server's words end up in the reason: keep them inside their table cell
    return " ".join(text.split()).replace("|", "\\|")


def to_json_dict(e: Evidence) -> dict[str, object]:
    o = e.outage
    return {
        "incident": o.id,
        "service": e.service,
        "check": o.check,
        "start": iso(o.start),
        "end": None if o.open else iso(o.end),
        "recovered_at": iso(e.closed_at),
        "open": o.open,
        "failed_tests": o.failed_tests,
        "downtime_seconds": round(e.downtime_seconds, 3),
        "downtime_minutes": round(e.downtime_seconds / 60, 3),
        "excluded_seconds": round(e.excluded_seconds, 3),
        "reasons": list(o.reasons),
        "checks_affected": sorted({o.check, *(c.check for c in e.concurrent)}),
        "concurrent_outages": [
            {
                "incident": c.id,
                "check": c.check,
                "start": iso(c.start),
                "end": None if c.open else iso(c.end),
            }
            for c in e.concurrent
        ],
        "tests": [
            {
                "at": iso(t.at),
                **({"location": t.location} if e.locations else {}),
                "duration_seconds": round(t.duration, 3),
                "reason": t.reason,
            }
            for t in e.failed_tests
        ],
        "exclusions": [exclusion_json(x) for x in e.exclusions],
        **_locations_json(e),
        "billing_months": [
            {
                "month": f.month,
                "availability": _ratio(f.availability),
                "objective": f.objective,
                "met": f.met,
                "status": f.status,
                "downtime_seconds": f.downtime_seconds,
                "credit_percent": f.credit_percent,
            }
            for f in e.months
        ],
    }


def _locations_json(e: Evidence) -> dict[str, object]:
    if not e.locations:
        return {}
    return {
        "billed": e.billed,
        "locations": sorted({m.location for m in e.locations}),
        "location_outages": [
            {
                "location": m.location,
                "incident": m.id,
                "start": iso(m.start),
                "end": None if m.open else iso(m.end),
                "failed_tests": m.failed_tests,
            }
            for m in e.locations
        ],
    }


def _where(e: Evidence) -> list[str]:
    """Text lines: who agreed, or why nothing is billed."""
    if not e.locations:
        return []
    when = partial(_local, tz=e.timezone)
    own = "; ".join(
        f"{m.location} {when(m.start)} → {'open' if m.open else when(m.end)}" for m in e.locations
    )
    if not e.billed:
        return [
            f"  NOT BILLED: location {e.locations[0].location}'s outage never reached the quorum",
            f"  location outage: {own}",
        ]
    return [f"  locations agreeing: {own}"]


def _tested_at(e: Evidence, t: FailedTest) -> str:
    return f"{t.location}  " if e.locations else ""


def _text(e: Evidence) -> str:
    o = e.outage
    when = partial(_local, tz=e.timezone)
    lines = [
        f"Incident {o.id}: service {e.service}, check {o.check}",
        f"  began     {when(o.start)} (first failed test)",
        f"  ended     {'still open' if o.open else when(o.end)} (last failed test)",
        f"  recovered {(when(e.closed_at) if e.closed_at else '-')} (first passing test)",
        f"  downtime  {e.downtime_seconds:.1f} s ({e.downtime_seconds / 60:.2f} min),"
        f" excluded {e.excluded_seconds:.1f} s, {o.failed_tests} failed tests",
        f"  checks affected: {', '.join(sorted({o.check, *(c.check for c in e.concurrent)}))}",
        *_where(e),
        *("  {}: {}".format(*_sla(f)) for f in e.months),
        "  failed tests:",
        *(
            f"    {when(t.at)}  {_tested_at(e, t)}{t.duration * 1000:7.1f} ms  {t.reason}"
            for t in e.failed_tests
        ),
    ]
    if e.exclusions:
        lines.append("  overlapping exclusions:")
        for x in e.exclusions:
            state = f" REVOKED by {x.revoked_by}: {x.revoke_reason}" if x.revoked_at else ""
            lines.append(
                f"    {_label(x)} {x.kind} {when(x.start)} → {when(x.end)} by {x.by}: {x.reason}{state}"
            )
    return "\n".join(lines) + "\n"


def _label(x: ExclusionSpan) -> str:
    return "config window" if is_configured(x) else f"#{x.id}"


def _markdown(e: Evidence) -> str:
    o = e.outage
    when = partial(_local, tz=e.timezone)
    rows = "\n".join(
        f"| {when(t.at)} | {t.duration * 1000:.1f} ms | {_cell(t.reason)} |" for t in e.failed_tests
    )
    excl = "\n".join(
        f"- {_label(x)} `{x.kind}` {when(x.start)} → {when(x.end)}, by {x.by}: {x.reason}"
        + (f" (revoked by {x.revoked_by}: {x.revoke_reason})" if x.revoked_at else "")
        for x in e.exclusions
    )
    return (
        f"## Credit request: incident {o.id}\n\n"
        f"- **Service affected:** {e.service} (check `{o.check}`)\n"
        f"- **Began:** {when(o.start)}\n"
        f"- **Ended:** {'still open' if o.open else when(o.end)}\n"
        f"- **Downtime:** {e.downtime_seconds / 60:.2f} minutes ({o.failed_tests} consecutive failed tests)\n"
        f"- **Excluded:** {e.excluded_seconds:.1f} s\n"
        f"- **Summary:** {'; '.join(o.reasons) or 'failed tests'}\n"
        + "".join(f"- {line.strip()}\n" for line in _where(e))
        + "".join("- **{}:** {}\n".format(*_sla(f)) for f in e.months)
        + "\n"
        f"| test started ({e.timezone}) | duration | reason |\n|---|---|---|\n{rows}\n\n"
        + (f"### Overlapping exclusions\n\n{excl}\n" if e.exclusions else "")
    )


def _csv(e: Evidence) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["incident", "service", "check", "at", "duration_seconds", "reason"])
    for t in e.failed_tests:
        writer.writerow([e.outage.id, e.service, t.check, iso(t.at), f"{t.duration:.3f}", t.reason])
    return out.getvalue()


def render_incident(e: Evidence, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(to_json_dict(e), indent=2, ensure_ascii=False) + "\n"
    return {"text": _text, "markdown": _markdown, "csv": _csv}[fmt](e)
