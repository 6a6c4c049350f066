"""Rendering of month and range reports: JSON (the contract), text, CSV and Markdown.

Pure: figures in, strings and plain dicts out. The figures come from
``probed.core.accounting``; nothing here recomputes a billed number, it only
formats one. Times in JSON and CSV are ISO 8601 UTC with ``Z``; text and
Markdown, read by people, show them in the report's billing time zone.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from functools import lru_cache
from typing import TypeAlias
from zoneinfo import ZoneInfo

import orjson

from probed.core.accounting import (
    Advisory,
    ExclusionSpan,
    LocationFigures,
    OutageFigures,
    OutageSpan,
    RangeTotals,
    ServiceFigures,
    Status,
    combine,
    month_period,
)
from probed.core.maintenance import is_configured

JSONObject: TypeAlias = dict[str, object]

AVAILABILITY_DIGITS = 6  # the contract's rounding of "availability" in JSON


@dataclass(frozen=True, slots=True)
class MonthReport:
    """Every reported service's figures for one billing month."""

    month: str
    timezone: str
    generated_at: float
    services: tuple[ServiceFigures, ...]


@dataclass(frozen=True, slots=True)
class RangeReport:
    """Consecutive month reports (``--from``/``--to``) and each service's totals over them."""

    first: str
    last: str
    timezone: str
    months: tuple[MonthReport, ...]

    @property
    def totals(self) -> tuple[RangeTotals, ...]:
        by_service: dict[str, list[ServiceFigures]] = {}
        for report in self.months:
            for figures in report.services:
                by_service.setdefault(figures.service, []).append(figures)
        return tuple(combine(figures) for figures in by_service.values())


# --- shared formatting ---------------------------------------------------------


_EPOCH = date(1970, 1, 1)
_YEAR_10000 = 253_402_300_800.0  # the first instant datetime cannot show


@lru_cache(maxsize=1024)
def _utc_day(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).isoformat()


@lru_cache(maxsize=4096)
def _utc_clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def iso_utc(ts: float) -> str:
    """``2026-10-04T10:00:00Z``; sub-second digits only when the instant has them."""
    if 0 <= ts < _YEAR_10000 and ts % 1 == 0:  # whole seconds: ~2x cheaper than datetime
        days, seconds = divmod(int(ts), 86400)
        return f"{_utc_day(days)}T{_utc_clock(seconds)}Z"
    moment = datetime.fromtimestamp(ts, UTC)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _local(ts: float, tz: str) -> str:
    # The zone abbreviation tells apart the two 01:30s of a DST fall-back night.
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _whole(value: float) -> int | float:
    # The contract shows whole counts as integers (period_seconds 2678400,
    # credit_percent 0); typed consumers then parse them as integers.
    # float(): an int slips through a float annotation, and int.is_integer needs 3.12.
    return int(value) if float(value).is_integer() else float(value)


def _short(value: float) -> str:
    return str(_whole(value))


def _percent(ratio: float) -> str:
    """A configured ratio as the percent it was written as: 0.995 -> ``99.5 %``."""
    return f"{_short(float(Decimal(repr(ratio)) * 100))} %"


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, AVAILABILITY_DIGITS)


def _availability_percent(ratio: float | None) -> str:
    if ratio is None:
        return "no data"
    # Rounded down: a person must never read "99.5000 %" beside a missed 99.5 %.
    percent = (Decimal(repr(ratio)) * 100).quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)
    return f"{percent} %"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.2f}"


_STATUS_TEXT: dict[Status, str] = {
    "met": "met",
    "missed": "MISSED",
    "below minimum": "BELOW MINIMUM",
    "no data": "no data",
}


def _status(status: Status) -> str:
    return _STATUS_TEXT[status]


def _credit_text(percent: float | None) -> str:
    return "—" if percent is None else f"{_short(percent)} %"


def _whole_or_none(value: float | None) -> int | float | None:
    return None if value is None else _whole(value)


def _period_note(figures: ServiceFigures) -> str:
    if figures.period_start == figures.period_end:
        return "no tests"
    running = figures.period_end < month_period(figures.month, figures.timezone)[1]
    notes = [word for word, flag in (("partial", figures.partial), ("to date", running)) if flag]
    return ", ".join(notes) or "full"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- JSON ----------------------------------------------------------------------


def _outage_json(row: OutageFigures, *, several: bool = False) -> JSONObject:
    span = row.span
    found: JSONObject = {
        "id": outage_id(span),
        "check": span.check,
        "start": iso_utc(span.start),
        "end": None if span.open else iso_utc(span.end),
        "failed_tests": span.failed_tests,
        "downtime_seconds": row.downtime_seconds,
        "excluded_seconds": row.excluded_seconds,
        "reasons": list(span.reasons),
    }
    if several:  # a quorum outage: who agreed, and each one's own outage
        found["locations"] = list(span.locations)
        found["location_outages"] = [_location_outage_json(m) for m in span.members]
    return found


def outage_id(span: OutageSpan) -> int | None:
    """The id ``probed report --incident`` takes: a quorum outage's is its first member's."""
    if span.id is not None:
        return span.id
    ids = [m.id for m in span.members if m.id is not None]
    return min(ids) if ids else None


def _location_outage_json(span: OutageSpan) -> JSONObject:
    return {
        "location": span.location,
        "start": iso_utc(span.start),
        "end": None if span.open else iso_utc(span.end),
        "failed_tests": span.failed_tests,
    }


def _location_json(f: LocationFigures) -> JSONObject:
    return {
        "location": f.location,
        "downtime_seconds": f.downtime_seconds,
        "excluded_seconds": f.excluded_seconds,
        "unmonitored_seconds": f.unmonitored_seconds,
        "availability": _ratio(f.availability),
        "outages": [_outage_json(row) for row in f.outages],
    }


def _advisory_json(a: Advisory) -> JSONObject:
    return {
        "location": a.location,
        "check": a.check,
        "start": iso_utc(a.start),
        "end": None if a.open else iso_utc(a.end),
        "downtime_seconds": a.downtime_seconds,
    }


def _locations_json(f: ServiceFigures) -> JSONObject:
    """docs/contract.md, several locations: only when there is something to say, so a
    single location's report stays exactly as it was."""
    found: JSONObject = {}
    if f.locations:
        found["locations"] = [_location_json(loc) for loc in f.locations]
    if f.locations or f.advisories:
        found["advisories"] = [_advisory_json(a) for a in f.advisories]
    return found


def _exclusion_json(x: ExclusionSpan) -> JSONObject:
    return {
        "id": x.id,
        "service": x.service,
        "start": iso_utc(x.start),
        "end": iso_utc(x.end),
        "kind": x.kind,
        "reason": x.reason,
        "by": x.by,
        "created_at": iso_utc(x.created_at),
        "revoked": not x.live,
        "revoked_at": None if x.revoked_at is None else iso_utc(x.revoked_at),
        "revoked_by": x.revoked_by,
        "revoke_reason": x.revoke_reason,
    }


def _service_json(f: ServiceFigures) -> JSONObject:
    contract: JSONObject = {
        "service": f.service,
        "objective": f.objective,
        "minimum": f.minimum,
        "period_seconds": _whole(f.period_seconds),
        "partial": f.partial,
        "downtime_seconds": f.downtime_seconds,
        "downtime_minutes": f.downtime_minutes,
        "excluded_seconds": f.excluded_seconds,
        "unmonitored_seconds": f.unmonitored_seconds,
        "availability": _ratio(f.availability),
        "met": f.met,
        "status": f.status,
        "credit_percent": _whole_or_none(f.credit_percent),
        "outages": [_outage_json(row, several=bool(f.locations)) for row in f.outages],
    }
    extra: JSONObject = {
        "period_start": iso_utc(f.period_start),
        "period_end": iso_utc(f.period_end),
        "below_minimum": f.below_minimum,
        "error_budget_seconds": f.error_budget_seconds,
        "error_budget_remaining_seconds": f.error_budget_remaining_seconds,
        "exclusions": [_exclusion_json(x) for x in f.exclusions],
    }
    return contract | _locations_json(f) | extra


def _totals_json(t: RangeTotals) -> JSONObject:
    return {
        "service": t.service,
        "from": t.first_month,
        "to": t.last_month,
        "months": t.months,
        "objective": t.objective,
        "minimum": t.minimum,
        "period_seconds": _whole(t.period_seconds),
        "partial": t.partial,
        "downtime_seconds": t.downtime_seconds,
        "downtime_minutes": t.downtime_minutes,
        "excluded_seconds": t.excluded_seconds,
        "unmonitored_seconds": t.unmonitored_seconds,
        "availability": _ratio(t.availability),
        "met": t.met,
        "status": t.status,
        "below_minimum": t.below_minimum,
    }


def _month_json(report: MonthReport) -> JSONObject:
    return {
        "month": report.month,
        "timezone": report.timezone,
        "generated_at": iso_utc(report.generated_at),
        "services": [_service_json(f) for f in report.services],
    }


def _range_json(report: RangeReport) -> JSONObject:
    return {
        "from": report.first,
        "to": report.last,
        "timezone": report.timezone,
        "months": [_month_json(month) for month in report.months],
        "totals": [_totals_json(t) for t in report.totals],
    }


# --- tables (text and Markdown share the cells) ----------------------------------


@dataclass(frozen=True, slots=True)
class _Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: frozenset[int] = frozenset()  # columns aligned right


def _text_table(table: _Table, indent: str = "") -> list[str]:
    widths = [len(h) for h in table.headers]
    for row in table.rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(w) if i in table.numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )
        return (indent + "  ".join(padded)).rstrip()

    return [line(table.headers), *(line(row) for row in table.rows)]


def _markdown_cell(text: str) -> str:
    return _one_line(text).replace("\\", "\\\\").replace("|", "\\|")


def _markdown_table(table: _Table) -> list[str]:
    rule = ["--:" if i in table.numeric else "---" for i in range(len(table.headers))]
    lines = [table.headers, tuple(rule), *table.rows]
    escape = _markdown_cell
    return [
        "| " + " | ".join(cell if n == 1 else escape(cell) for cell in cells) + " |"
        for n, cells in enumerate(lines)
    ]


def _summary_table(services: Iterable[ServiceFigures]) -> _Table:
    rows = tuple(
        (
            f.service,
            _availability_percent(f.availability),
            _percent(f.objective),
            "—" if f.minimum is None else _percent(f.minimum),
            _minutes(f.downtime_seconds),
            _minutes(f.excluded_seconds),
            _minutes(f.unmonitored_seconds),
            _period_note(f),
            _status(f.status),
            _credit_text(f.credit_percent),
        )
        for f in services
    )
    headers = (
        "service",
        "availability",
        "objective",
        "minimum",
        "downtime min",
        "excluded min",
        "unmonitored min",
        "period",
        "status",
        "credit",
    )
    return _Table(headers, rows, numeric=frozenset({1, 2, 3, 4, 5, 6, 9}))


def _outage_table(f: ServiceFigures) -> _Table:
    several = bool(f.locations)
    rows = tuple(
        (
            str(outage_id(row.span) or "—"),
            row.span.check,
            _local(row.span.start, f.timezone),
            "open" if row.span.open else _local(row.span.end, f.timezone),
            str(row.span.failed_tests),
            _minutes(row.downtime_seconds),
            _minutes(row.excluded_seconds),
            *((_agreeing(row.span, f.timezone),) if several else ()),
            _one_line("; ".join(row.span.reasons)),
        )
        for row in f.outages
    )
    headers: tuple[str, ...] = ("id", "check", "start", "end", "failed tests", "downtime min")
    headers += ("excluded min", *(("locations (own outage)",) if several else ()))
    return _Table((*headers, "reasons"), rows, numeric=frozenset({0, 4, 5, 6}))


def _agreeing(span: OutageSpan, tz: str) -> str:
    """The locations that agreed on a quorum outage, each with its own outage."""
    return "; ".join(
        f"{m.location} {_local(m.start, tz)} – {'open' if m.open else _local(m.end, tz)}"
        for m in span.members
    )


def _location_table(f: ServiceFigures) -> _Table:
    rows = tuple(
        (
            loc.location,
            _availability_percent(loc.availability),
            _minutes(loc.downtime_seconds),
            _minutes(loc.excluded_seconds),
            _minutes(loc.unmonitored_seconds),
            str(len(loc.outages)),
        )
        for loc in f.locations
    )
    headers = (
        "location",
        "availability",
        "downtime min",
        "excluded min",
        "unmonitored min",
        "outages",
    )
    return _Table(headers, rows, numeric=frozenset({1, 2, 3, 4, 5}))


def _advisory_table(f: ServiceFigures) -> _Table:
    rows = tuple(
        (
            a.location,
            a.check,
            _local(a.start, f.timezone),
            "open" if a.open else _local(a.end, f.timezone),
            _minutes(a.downtime_seconds),
        )
        for a in f.advisories
    )
    return _Table(("location", "check", "start", "end", "downtime min"), rows, frozenset({4}))


_BY_LOCATION = "by location (evidence, not billed)"
_ADVISORIES = "advisories: location outages that never reached the quorum (not billed)"


def _exclusion_state(x: ExclusionSpan, tz: str) -> str:
    if x.live:
        return "live"
    when = "" if x.revoked_at is None else f" {_local(x.revoked_at, tz)}"
    who = "" if x.revoked_by is None else f" by {x.revoked_by}"
    why = "" if not x.revoke_reason else f": {x.revoke_reason}"
    return _one_line(f"revoked{when}{who}{why}")


def _exclusion_table(f: ServiceFigures) -> _Table:
    rows = tuple(
        (
            "—" if is_configured(x) else str(x.id),  # a config window has no stored id
            "all" if x.service == "*" else x.service,
            x.kind,
            _local(x.start, f.timezone),
            _local(x.end, f.timezone),
            x.by,
            _one_line(x.reason),
            _exclusion_state(x, f.timezone),
        )
        for x in f.exclusions
    )
    headers = ("id", "service", "kind", "start", "end", "by", "reason", "state")
    return _Table(headers, rows, numeric=frozenset({0}))


def _totals_table(totals: Iterable[RangeTotals]) -> _Table:
    rows = tuple(
        (
            t.service,
            str(t.months),
            _availability_percent(t.availability),
            _percent(t.objective),
            _minutes(t.downtime_seconds),
            _minutes(t.excluded_seconds),
            _minutes(t.unmonitored_seconds),
            "partial" if t.partial else "full",
            _status(t.status),
        )
        for t in totals
    )
    headers = (
        "service",
        "months",
        "availability",
        "objective",
        "downtime min",
        "excluded min",
        "unmonitored min",
        "period",
        "status",
    )
    return _Table(headers, rows, numeric=frozenset({1, 2, 3, 4, 5, 6}))


# --- text ------------------------------------------------------------------------


def _service_detail_text(f: ServiceFigures) -> list[str]:
    count = len(f.outages)
    plural = "no outages" if count == 0 else f"{count} outage{'' if count == 1 else 's'}"
    lines = [f"{f.service}: {plural}"]
    if f.outages:
        lines += _text_table(_outage_table(f), indent="  ")
    if f.exclusions:
        lines += ["", f"  {f.service}: exclusions", *_text_table(_exclusion_table(f), "  ")]
    if f.locations:
        lines += ["", f"  {f.service}: {_BY_LOCATION}", *_text_table(_location_table(f), "  ")]
    if f.advisories:
        lines += ["", f"  {f.service}: {_ADVISORIES}", *_text_table(_advisory_table(f), "  ")]
    return lines


def _month_text_lines(report: MonthReport) -> list[str]:
    lines = [
        f"probed report {report.month} ({report.timezone}), "
        f"generated {iso_utc(report.generated_at)}",
        "",
        *_text_table(_summary_table(report.services)),
    ]
    for f in report.services:
        lines += ["", *_service_detail_text(f)]
    return lines


def _range_text(report: RangeReport) -> str:
    lines: list[str] = []
    for month in report.months:
        lines += [*_month_text_lines(month), "", ""]
    lines += [
        f"totals {report.first} .. {report.last} ({report.timezone})",
        "",
        *_text_table(_totals_table(report.totals)),
    ]
    return "\n".join(lines) + "\n"


# --- Markdown --------------------------------------------------------------------


def _service_detail_markdown(f: ServiceFigures) -> list[str]:
    lines = [f"### {_markdown_cell(f.service)}", ""]
    if f.outages:
        lines += _markdown_table(_outage_table(f))
    else:
        lines.append("No outages.")
    if f.exclusions:
        lines += ["", "Exclusions:", "", *_markdown_table(_exclusion_table(f))]
    if f.locations:
        lines += ["", f"{_BY_LOCATION.capitalize()}:", "", *_markdown_table(_location_table(f))]
    if f.advisories:
        lines += ["", f"{_ADVISORIES.capitalize()}:", "", *_markdown_table(_advisory_table(f))]
    return lines


def _month_markdown_lines(report: MonthReport, level: str = "#") -> list[str]:
    lines = [
        f"{level} probed report {report.month} ({report.timezone})",
        "",
        f"Generated {iso_utc(report.generated_at)}. Times below are in {report.timezone}.",
        "",
        *_markdown_table(_summary_table(report.services)),
    ]
    for f in report.services:
        lines += ["", *_service_detail_markdown(f)]
    return lines


def _range_markdown(report: RangeReport) -> str:
    lines = [f"# probed report {report.first} .. {report.last} ({report.timezone})", ""]
    lines += ["## Totals", "", *_markdown_table(_totals_table(report.totals))]
    for month in report.months:
        lines += ["", *_month_markdown_lines(month, level="##")]
    return "\n".join(lines) + "\n"


# --- CSV -------------------------------------------------------------------------

CSV_COLUMNS = (
    "month",
    "timezone",
    "service",
    "objective",
    "minimum",
    "period_start",
    "period_end",
    "period_seconds",
    "partial",
    "downtime_seconds",
    "downtime_minutes",
    "excluded_seconds",
    "unmonitored_seconds",
    "availability",
    "met",
    "below_minimum",
    "credit_percent",
    "error_budget_seconds",
    "error_budget_remaining_seconds",
    "outages",
    "outage_ids",  # space-separated: what `probed report --incident ID` takes
    "status",  # met, missed, below minimum, no data
)

# Only when a service was probed from several locations: ``location`` is empty on the
# billed row, and each location's own figures follow it as evidence rows.
LOCATION_CSV_COLUMNS = ("location", "advisories")

CsvValue: TypeAlias = str | int | float | bool | None


def _csv_text(value: CsvValue) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_row(f: ServiceFigures) -> dict[str, CsvValue]:
    return {
        "month": f.month,
        "timezone": f.timezone,
        "service": f.service,
        "objective": f.objective,
        "minimum": f.minimum,
        "period_start": iso_utc(f.period_start),
        "period_end": iso_utc(f.period_end),
        "period_seconds": _whole(f.period_seconds),
        "partial": f.partial,
        "downtime_seconds": f.downtime_seconds,
        "downtime_minutes": f.downtime_minutes,
        "excluded_seconds": f.excluded_seconds,
        "unmonitored_seconds": f.unmonitored_seconds,
        "availability": _ratio(f.availability),
        "met": f.met,
        "below_minimum": f.below_minimum,
        "credit_percent": _whole_or_none(f.credit_percent),
        "error_budget_seconds": f.error_budget_seconds,
        "error_budget_remaining_seconds": f.error_budget_remaining_seconds,
        "outages": len(f.outages),
        "outage_ids": " ".join(str(i) for r in f.outages if (i := outage_id(r.span)) is not None),
        "status": f.status,
        "location": "",
        "advisories": len(f.advisories),
    }


def _csv_location_rows(f: ServiceFigures) -> list[dict[str, CsvValue]]:
    return [
        {
            "month": f.month,
            "timezone": f.timezone,
            "service": f.service,
            "period_start": iso_utc(f.period_start),
            "period_end": iso_utc(f.period_end),
            "period_seconds": _whole(f.period_seconds),
            "downtime_seconds": loc.downtime_seconds,
            "downtime_minutes": loc.downtime_seconds / 60,
            "excluded_seconds": loc.excluded_seconds,
            "unmonitored_seconds": loc.unmonitored_seconds,
            "availability": _ratio(loc.availability),
            "outages": len(loc.outages),
            "location": loc.location,
        }
        for loc in f.locations
    ]


def _csv_services(services: Iterable[ServiceFigures]) -> list[dict[str, CsvValue]]:
    return [row for f in services for row in (_csv_row(f), *_csv_location_rows(f))]


def _csv_totals_row(t: RangeTotals) -> dict[str, CsvValue]:
    # Credits and budgets are per billing month: a totals row leaves them empty.
    return {
        "month": f"{t.first_month}/{t.last_month}",  # ISO 8601 interval notation
        "timezone": t.timezone,
        "service": t.service,
        "objective": t.objective,
        "minimum": t.minimum,
        "period_seconds": _whole(t.period_seconds),
        "partial": t.partial,
        "downtime_seconds": t.downtime_seconds,
        "downtime_minutes": t.downtime_minutes,
        "excluded_seconds": t.excluded_seconds,
        "unmonitored_seconds": t.unmonitored_seconds,
        "availability": _ratio(t.availability),
        "met": t.met,
        "below_minimum": t.below_minimum,
        "status": t.status,
    }


def _csv(rows: Sequence[dict[str, CsvValue]]) -> str:
    several = any(row.get("location") for row in rows)
    columns = CSV_COLUMNS + LOCATION_CSV_COLUMNS if several else CSV_COLUMNS
    out = io.StringIO()
    # "\n" rather than RFC 4180's "\r\n": the report is printed to a terminal
    # or piped into Unix tools far more often than opened on Windows.
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_text(row.get(column)) for column in columns])
    return out.getvalue()


def _range_csv(report: RangeReport) -> str:
    # One row per service and month, then one totals row per service.
    rows = [row for month in report.months for row in _csv_services(month.services)]
    return _csv([*rows, *(_csv_totals_row(t) for t in report.totals)])


# --- the public renderers ---------------------------------------------------------

Report: TypeAlias = MonthReport | RangeReport


def to_json_dict(report: Report) -> JSONObject:
    """The contract's "Report JSON" (docs/contract.md) plus audit and budget keys;
    for a range, ``{"from", "to", "timezone", "months": [...], "totals": [...]}``."""
    return _month_json(report) if isinstance(report, MonthReport) else _range_json(report)


def render_json(report: Report) -> str:
    """Two spaces of indent, UTF-8 as is; orjson writes what ``json.dumps(indent=2,
    ensure_ascii=False)`` would (floats below 1e-4 aside: ``0.00001``, not ``1e-05``),
    ~30x faster: a month of 10 000 checks is ~13 MB."""
    _refuse_non_finite(report)
    return orjson.dumps(to_json_dict(report), option=_INDENTED).decode()


_INDENTED = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


def _refuse_non_finite(report: Report) -> None:
    """orjson writes NaN and infinities as null: a figure that is not a number must fail
    here rather than read as "no data" downstream."""
    months = report.months if isinstance(report, RangeReport) else (report,)
    for figures in (f for month in months for f in month.services):
        for name, value in _numbers(figures):
            if not math.isfinite(value):
                raise ValueError(f"{figures.service} {figures.month}: {name} is {value}")
    if isinstance(report, RangeReport):
        for t in report.totals:
            numbers = (t.period_seconds, t.downtime_seconds, t.excluded_seconds)
            if not all(map(math.isfinite, (*numbers, t.unmonitored_seconds, t.availability or 0))):
                raise ValueError(f"{t.service} totals: a figure is not a finite number")


def _numbers(f: ServiceFigures) -> Iterable[tuple[str, float]]:
    """Every float of ``f`` the JSON shows (the outages' in one sum: NaN and infinities
    survive it, and a sum of finite ones stays finite)."""
    yield from (
        ("objective", f.objective),
        ("minimum", f.minimum or 0.0),
        ("period_seconds", f.period_seconds),
        ("downtime_seconds", f.downtime_seconds),
        ("excluded_seconds", f.excluded_seconds),
        ("unmonitored_seconds", f.unmonitored_seconds),
        ("availability", f.availability or 0.0),
        ("credit_percent", f.credit_percent or 0.0),
        ("error_budget_seconds", f.error_budget_seconds),
        ("error_budget_remaining_seconds", f.error_budget_remaining_seconds),
    )
    rows = [*f.outages, *(row for loc in f.locations for row in loc.outages)]
    locations = [
        x
        for loc in f.locations
        for x in (
            loc.downtime_seconds,
            loc.excluded_seconds,
            loc.unmonitored_seconds,
            loc.availability or 0.0,
        )
    ]
    yield "an outage's seconds", sum(r.downtime_seconds + r.excluded_seconds for r in rows)
    yield "a location's figures", sum(locations) + sum(a.downtime_seconds for a in f.advisories)


def render_text(report: Report) -> str:
    """A table a person reads: one line per service, then each service's outages."""
    if isinstance(report, RangeReport):
        return _range_text(report)
    return "\n".join(_month_text_lines(report)) + "\n"


def render_csv(report: Report) -> str:
    """One row per service (per service and month, then totals rows, for a range)."""
    if isinstance(report, RangeReport):
        return _range_csv(report)
    return _csv(_csv_services(report.services))


def render_markdown(report: Report) -> str:
    if isinstance(report, RangeReport):
        return _range_markdown(report)
    return "\n".join(_month_markdown_lines(report)) + "\n"


RENDERERS: dict[str, Callable[[Report], str]] = {
    "text": render_text,
    "json": render_json,
    "csv": render_csv,
    "markdown": render_markdown,
}
"""``--format`` name -> renderer; the names are the contract's."""
