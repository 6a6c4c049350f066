"""SLA accounting: from outages, exclusions and coverage to a month's billed figures.

Pure arithmetic on half-open intervals ``[start, end)`` of UTC epoch seconds:
no I/O, no clock, no logging. Callers pass ``now`` and the stored records, so
every figure is reproducible from its inputs (docs/sla-rules.md).

Lengths are summed as exact rationals (``Fraction`` of the float endpoints)
and rounded to float once, at the end: a month split into pieces then adds up
to exactly the whole month, and ``met`` is decided without rounding error.
Endpoints must therefore be finite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from operator import attrgetter
from typing import Literal, Protocol, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Interval: TypeAlias = tuple[float, float]
"""``[start, end)`` in UTC epoch seconds; an interval with ``end <= start`` is empty."""

ExcludedTime: TypeAlias = Literal["not_downtime", "not_counted"]

ALL_SERVICES = "*"
EXCLUSION_KINDS = ("dos", "maintenance", "other")
EXCLUDED_TIME_POLICIES: tuple[ExcludedTime, ...] = ("not_downtime", "not_counted")

_ZERO = Fraction(0)
_ONE = Fraction(1)


# --- interval arithmetic -----------------------------------------------------


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same time; empty ones dropped.

    Touching intervals merge, because ``[a, b)`` and ``[b, c)`` leave no gap.
    """
    merged: list[Interval] = []
    for start, end in sorted((s, e) for s, e in intervals if s < e):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def intersection(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """Time inside both ``a`` and ``b``, as sorted disjoint intervals."""
    left, right = union(a), union(b)
    found: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        start = max(left[i][0], right[j][0])
        end = min(left[i][1], right[j][1])
        if start < end:
            found.append((start, end))
        # Advance whichever ends first: the other may still overlap the next one.
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return found


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """Time inside ``a`` but not inside ``b``, as sorted disjoint intervals."""
    cuts = union(b)
    kept: list[Interval] = []
    first = 0
    for start, end in union(a):
        while first < len(cuts) and cuts[first][1] <= start:
            first += 1
        k = first  # a cut reaching past ``end`` may also cut the next interval
        while k < len(cuts) and cuts[k][0] < end:
            if cuts[k][0] > start:
                kept.append((start, cuts[k][0]))
            start = max(start, cuts[k][1])
            k += 1
        if start < end:
            kept.append((start, end))
    return kept


def total(intervals: Iterable[Interval]) -> float:
    """Length in seconds of the union of ``intervals`` (overlaps count once)."""
    return float(_length(union(intervals)))


def clip(intervals: Iterable[Interval], window: Interval) -> list[Interval]:
    """The parts of ``intervals`` inside ``window``."""
    return intersection(intervals, [window])


def _length(disjoint: Iterable[Interval]) -> Fraction:
    """Exact total length of intervals already known to be disjoint."""
    return exact_sum([x for start, end in disjoint for x in (end, -start)])


def exact_sum(terms: list[float]) -> Fraction:
    """The exact sum of finite floats, as a rational (``terms`` is used up).

    ``math.fsum`` rounds the exact sum correctly, so what it leaves out is again an exact
    sum of floats: adding that remainder's own fsum, and so on until nothing is left
    (a nonzero sum of floats is at least the smallest float, so never rounds to 0),
    gives exactly the sum of ``Fraction(x)``, in C rather than ~1 µs a term.
    """
    found = _ZERO
    part = math.fsum(terms)
    while part != 0:
        found += Fraction(part)  # refuses NaN and infinities, as Fraction(x) of a term would
        terms.append(-part)
        part = math.fsum(terms)
    return found


def overlaps(span: Interval, window: Interval) -> bool:
    """Whether ``span`` shares time with ``window``; a zero-length span counts if inside."""
    start, end = span
    if start == end:
        return window[0] <= start < window[1]
    return start < window[1] and end > window[0]


# --- calendar months -----------------------------------------------------------

_MONTH_PATTERN = re.compile(r"([0-9]{4})-([0-9]{2})")
_FIRST_YEAR, _LAST_YEAR = 1970, 9998  # 9999-12 would end in year 10000, beyond datetime


def parse_month(text: str) -> tuple[int, int]:
    """``"2026-10"`` -> ``(2026, 10)``; ``ValueError`` naming the expected form otherwise."""
    match = _MONTH_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"expected a month like 2026-10 (YYYY-MM), got {text!r}")
    year, month = int(match[1]), int(match[2])
    if not 1 <= month <= 12:
        raise ValueError(f"expected a month 01..12 like 2026-10, got {text!r}")
    if not _FIRST_YEAR <= year <= _LAST_YEAR:
        raise ValueError(f"expected a year {_FIRST_YEAR}..{_LAST_YEAR}, got {text!r}")
    return year, month


def _format_month(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r} (expected an IANA name like UTC)") from exc


def month_period(month: str, tz: str) -> Interval:
    """The month ``[first midnight, next first midnight)`` in zone ``tz``, in UTC epoch.

    Boundaries are zone-aware, so the length is the real one: 743 hours for
    March 2026 in America/New_York. A midnight skipped by a DST jump maps to
    the jump itself (fold=0), which is still the month's first instant.
    """
    year, mon = parse_month(month)
    zone = _zone(tz)
    next_year, next_mon = _next_month(year, mon)
    start = datetime(year, mon, 1, tzinfo=zone).timestamp()
    end = datetime(next_year, next_mon, 1, tzinfo=zone).timestamp()
    return (start, end)


def month_of(ts: float, tz: str) -> str:
    """The month (in zone ``tz``) that contains instant ``ts``, as ``YYYY-MM``."""
    local = datetime.fromtimestamp(ts, _zone(tz))
    year, mon = local.year, local.month
    # fromtimestamp rounds to the microsecond, which can carry an instant a
    # hair before midnight into the next month; month_period is the authority.
    if ts < month_period(_format_month(year, mon), tz)[0]:
        year, mon = _previous_month(year, mon)
    return _format_month(year, mon)


def months_between(first: str, last: str) -> list[str]:
    """Every month from ``first`` to ``last``, both included, in order."""
    current, end = parse_month(first), parse_month(last)
    if end < current:
        raise ValueError(f"month range ends before it starts: {first} .. {last}")
    months: list[str] = []
    while current <= end:
        months.append(_format_month(*current))
        current = _next_month(*current)
    return months


# --- records -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutageSpan:
    """One outage of one check: ``[start, end)`` from its first to its last failed test.

    For an open outage ``end`` is the latest failed test so far.
    """

    check: str
    start: float
    end: float
    failed_tests: int
    reasons: tuple[str, ...] = ()
    open: bool = False
    id: int | None = None
    location: str = ""  # the probing location whose failure run this is ("" for a quorum outage)
    members: tuple[OutageSpan, ...] = ()  # a quorum outage: the location outages overlapping it

    @property
    def interval(self) -> Interval:
        return (self.start, self.end)

    @property
    def locations(self) -> tuple[str, ...]:
        """The locations whose own outages overlap this (quorum) outage, sorted."""
        return tuple(sorted({m.location for m in self.members}))


@dataclass(frozen=True, slots=True)
class ExclusionSpan:
    """A flagged window ``[start, end)`` whose downtime is not billed.

    Never erased: a revoked exclusion keeps its record (and stops counting)
    so that the audit trail of a changed figure survives.
    """

    id: int
    service: str  # ALL_SERVICES ("*") applies to every service
    start: float
    end: float
    kind: str  # one of EXCLUSION_KINDS
    reason: str
    by: str
    created_at: float
    revoked_at: float | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None

    def applies_to(self, service: str) -> bool:
        return self.service in (ALL_SERVICES, service)

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    @property
    def interval(self) -> Interval:
        return (self.start, self.end)


@dataclass(frozen=True, slots=True)
class CreditTier:
    """Credit owed when a month's availability falls below ``below`` (a ratio)."""

    below: float
    percent: float

    def __post_init__(self) -> None:
        _check_ratio("credit tier 'below'", self.below)
        if not self.percent >= 0:
            raise ValueError(f"credit percent must be >= 0, got {self.percent!r}")


@dataclass(frozen=True, slots=True)
class Policy:
    """A service's SLA terms. Ratios are 0..1 (99.5 % is 0.995)."""

    objective: float
    minimum: float | None = None
    credits: tuple[CreditTier, ...] = ()
    excluded_time: ExcludedTime = "not_downtime"

    def __post_init__(self) -> None:
        _check_ratio("objective", self.objective)
        if self.minimum is not None:
            _check_ratio("minimum", self.minimum)
        if self.excluded_time not in EXCLUDED_TIME_POLICIES:
            raise ValueError(
                f"excluded_time must be one of {', '.join(EXCLUDED_TIME_POLICIES)}, "
                f"got {self.excluded_time!r}"
            )


def _check_ratio(name: str, value: float) -> None:
    # A percent passed where a ratio belongs (99.5 for 0.995) would make every
    # month a miss; refuse it loudly instead.
    if not 0 <= value <= 1:
        raise ValueError(f"{name} must be a ratio 0..1 (99.5 % is 0.995), got {value!r}")


def exact_ratio(value: float) -> Fraction:
    """The decimal a configured ratio stands for: 99.9 / 100 gives 0.9990000000000001,
    which means 0.999. Twelve places are far finer than any SLA is written in."""
    return Fraction(repr(round(value, 12)))


# --- figures -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutageFigures:
    """One outage's share of the month: downtime and excluded time inside the period only."""

    span: OutageSpan
    downtime_seconds: float
    excluded_seconds: float


@dataclass(frozen=True, slots=True)
class LocationFigures:
    """One location's own figures for a service-month: evidence beside the bill, never billed."""

    location: str
    downtime_seconds: float
    excluded_seconds: float
    unmonitored_seconds: float
    availability: float | None  # None when the location has no test in the period
    outages: tuple[OutageFigures, ...]


@dataclass(frozen=True, slots=True)
class Advisory:
    """A location outage that never took part in a quorum outage: billed nothing, shown anyway."""

    location: str
    check: str
    start: float
    end: float
    downtime_seconds: float  # inside the period
    open: bool = False


@dataclass(frozen=True, slots=True)
class ServiceFigures:
    """A service's billed figures for one month (docs/sla-rules.md, "Figures")."""

    service: str
    month: str
    timezone: str
    objective: float
    minimum: float | None
    period_start: float
    period_end: float
    period_seconds: float
    partial: bool
    downtime_seconds: float
    excluded_seconds: float
    unmonitored_seconds: float
    availability: float | None  # None: no test in the period, so no figure ("no data")
    met: bool | None
    below_minimum: bool | None
    credit_percent: float | None
    error_budget_seconds: float
    error_budget_remaining_seconds: float
    outages: tuple[OutageFigures, ...]
    exclusions: tuple[ExclusionSpan, ...]  # live or revoked, overlapping the period: audit
    # Several locations (docs/sla-rules.md, "Several locations"): each location's
    # own figures (only when more than one location tested the service) and the
    # location outages that never reached the quorum.
    locations: tuple[LocationFigures, ...] = ()
    advisories: tuple[Advisory, ...] = ()

    @property
    def downtime_minutes(self) -> float:
        return self.downtime_seconds / 60

    @property
    def status(self) -> Status:
        return _status(self.met, self.below_minimum)


Status: TypeAlias = Literal["met", "missed", "below minimum", "no data"]


def _status(met: bool | None, below_minimum: bool | None) -> Status:
    if met is None:
        return "no data"
    if below_minimum:
        return "below minimum"
    return "met" if met else "missed"


@dataclass(frozen=True, slots=True)
class _Tally:
    """The exact lengths behind one service-month, before rounding to float."""

    period: Fraction
    downtime: Fraction
    excluded: Fraction
    unmonitored: Fraction
    availability: Fraction | None  # None: nothing was measured


def _period_window(month_span: Interval, first_test_at: float | None, now: float) -> Interval:
    """The month, ending at ``now`` if it is running and starting at the first test."""
    month_start, month_end = month_span
    end = min(max(now, month_start), month_end)
    if first_test_at is None or first_test_at >= end:
        return (end, end)  # nothing tested yet: an empty period, never a fake 100 %
    return (max(first_test_at, month_start), end)


def _availability(downtime: Fraction, period: Fraction) -> Fraction:
    return _ONE - downtime / period


@dataclass(frozen=True, slots=True)
class DownPart:
    """The outages' share of a period: exact lengths and one row per outage touching it.

    ``any``: some outage has time inside the period (before exclusions are taken out).
    """

    downtime: Fraction
    excluded: Fraction
    any: bool
    rows: tuple[OutageFigures, ...]


class DownSource(Protocol):
    """Where a service-month's outages' share comes from: the outages themselves
    (:func:`down_part`) or an incremental ledger (``probed.core.ledger``)."""

    def part(self, window: Interval, excluded: list[Interval]) -> DownPart: ...


def down_part(
    outages: Sequence[OutageSpan], window: Interval, excluded: list[Interval]
) -> DownPart:
    """The outages' downtime and excluded time inside ``window``, and their rows."""
    down_all = clip([(o.start, o.end) for o in outages], window)
    # nothing excluded: subtract() would give down_all back, intersection() nothing
    return DownPart(
        downtime=_length(subtract(down_all, excluded) if excluded else down_all),
        excluded=_length(intersection(down_all, excluded)) if excluded else _ZERO,
        any=bool(down_all),
        rows=_outage_figures(outages, window, excluded),
    )


@dataclass(frozen=True, slots=True)
class _Outages:
    outages: Sequence[OutageSpan]

    def part(self, window: Interval, excluded: list[Interval]) -> DownPart:
        return down_part(self.outages, window, excluded)


def _tally(
    window: Interval,
    down: DownPart,
    excluded: list[Interval],
    coverage: Sequence[Interval],
    excluded_time: ExcludedTime,
) -> _Tally:
    # not_counted (as Zabbix does) takes excluded windows out of the period
    # too: they count neither as up nor as down.
    removed = excluded if excluded_time == "not_counted" else []
    period = subtract([window], removed)
    period_length = _length(period)
    # No test in the period (before the first test, a month the daemon was stopped
    # throughout, all of it excluded): no figure at all, never a fake 100 %. An
    # outage reaching into the period across a monitoring gap is a measurement.
    measured = period_length > 0 and (bool(intersection(period, coverage)) or down.any)
    return _Tally(
        period=period_length,
        downtime=down.downtime,
        excluded=down.excluded,
        unmonitored=_length(subtract(period, coverage)),
        availability=_availability(down.downtime, period_length) if measured else None,
    )


def _credit(credits: Sequence[CreditTier], availability: Fraction | None) -> float | None:
    """The credit of the lowest tier whose threshold ``availability`` is below; 0 if none."""
    if availability is None:
        return None
    owed = [tier for tier in credits if exact_ratio(tier.below) > availability]
    return float(min(owed, key=lambda tier: tier.below).percent) if owed else 0.0


_outage_order = attrgetter("start", "end", "check")


def _outage_figures(
    outages: Sequence[OutageSpan], window: Interval, excluded: list[Interval]
) -> tuple[OutageFigures, ...]:
    rows: list[OutageFigures] = []
    low, high = window
    for span in sorted(outages, key=_outage_order):
        # overlaps(span.interval, window), inline: a month has ~40 000 outages
        if not (
            low <= span.start < high
            if span.start == span.end
            else span.start < high and span.end > low
        ):
            continue
        if not excluded or not any(overlaps(e, (span.start, span.end)) for e in excluded):
            # one interval, nothing excluded: IEEE subtraction is the exact length rounded
            # like float(Fraction), so the same figure without exact arithmetic
            start, end = max(span.start, low), min(span.end, high)
            rows.append(OutageFigures(span, end - start if start < end else 0.0, 0.0))
            continue
        inside = clip([span.interval], window)
        rows.append(
            OutageFigures(
                span=span,
                downtime_seconds=float(_length(subtract(inside, excluded))),
                excluded_seconds=float(_length(intersection(inside, excluded))),
            )
        )
    return tuple(rows)


def service_figures(
    *,
    service: str,
    policy: Policy,
    month: str,
    tz: str,
    outages: Sequence[OutageSpan],
    exclusions: Sequence[ExclusionSpan],
    coverage: Sequence[Interval],
    first_test_at: float | None,
    now: float,
    down: DownSource | None = None,
) -> ServiceFigures:
    """The month's figures for ``service`` from all its checks' outages.

    ``outages`` are every check's outages (any month; they are clipped here),
    ``exclusions`` every stored exclusion (filtered here by service and
    revocation), ``coverage`` the times the daemon was testing this service.
    ``down``, when given, supplies the outages' share instead of ``outages``
    (the daemon's incremental ledger; it must give what ``outages`` would).
    """
    month_span = month_period(month, tz)
    window = _period_window(month_span, first_test_at, now)
    applicable = [x for x in exclusions if x.applies_to(service)]
    excluded = union(x.interval for x in applicable if x.live)
    share = (down or _Outages(outages)).part(window, excluded)
    tally = _tally(window, share, excluded, coverage, policy.excluded_time)
    objective = exact_ratio(policy.objective)
    minimum = None if policy.minimum is None else exact_ratio(policy.minimum)
    budget = (_ONE - objective) * _length([month_span])
    return ServiceFigures(
        service=service,
        month=month,
        timezone=tz,
        objective=float(objective),
        minimum=None if minimum is None else float(minimum),
        period_start=window[0],
        period_end=window[1],
        period_seconds=float(tally.period),
        partial=window[0] > month_span[0] or window[0] == window[1],
        downtime_seconds=float(tally.downtime),
        excluded_seconds=float(tally.excluded),
        unmonitored_seconds=float(tally.unmonitored),
        availability=_float(tally.availability),
        met=_at_least(tally.availability, objective),
        below_minimum=_below(tally.availability, minimum),
        credit_percent=_credit(policy.credits, tally.availability),
        error_budget_seconds=float(budget),
        error_budget_remaining_seconds=float(budget - tally.downtime),
        outages=share.rows,
        exclusions=_audit_trail(applicable, window),
    )


def _float(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def _at_least(availability: Fraction | None, objective: Fraction) -> bool | None:
    return None if availability is None else availability >= objective


def _below(availability: Fraction | None, minimum: Fraction | None) -> bool | None:
    if availability is None:
        return None
    return minimum is not None and availability < minimum


def _audit_trail(applicable: list[ExclusionSpan], window: Interval) -> tuple[ExclusionSpan, ...]:
    """Exclusions touching the period, revoked ones included: what changed (or once
    changed) this month's figure must stay visible beside it."""
    touching = (x for x in applicable if overlaps(x.interval, window))
    return tuple(sorted(touching, key=lambda x: (x.start, x.id)))


# --- several months ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RangeTotals:
    """One service's figures over several months, as if they were one period.

    No credit: credits are owed per billing month, never over a range.
    """

    service: str
    first_month: str
    last_month: str
    months: int
    timezone: str
    objective: float
    minimum: float | None
    period_seconds: float
    partial: bool
    downtime_seconds: float
    excluded_seconds: float
    unmonitored_seconds: float
    availability: float | None  # None: no month of the range has data
    met: bool | None
    below_minimum: bool | None

    @property
    def downtime_minutes(self) -> float:
        return self.downtime_seconds / 60

    @property
    def status(self) -> Status:
        return _status(self.met, self.below_minimum)


def _sum(values: Iterable[float]) -> Fraction:
    return sum((Fraction(v) for v in values), _ZERO)


def _single(name: str, values: Iterable[object]) -> None:
    distinct = set(values)
    if len(distinct) > 1:
        raise ValueError(
            f"cannot combine figures with different {name}: {sorted(map(str, distinct))}"
        )


def _check_combinable(figures: Sequence[ServiceFigures]) -> None:
    # Mixed inputs mean a caller bug; totals over them would be silently wrong.
    if not figures:
        raise ValueError("cannot combine an empty list of figures")
    for name, values in (
        ("services", [f.service for f in figures]),
        ("time zones", [f.timezone for f in figures]),
        ("objectives", [f.objective for f in figures]),
        ("minimums", [f.minimum for f in figures]),
    ):
        _single(name, values)
    if len({f.month for f in figures}) != len(figures):
        raise ValueError("cannot combine figures that repeat a month")


def combine(figures: Sequence[ServiceFigures]) -> RangeTotals:
    """Totals of one service over several months: sums, and availability over the summed
    period of the months that have data (a month without tests adds no period)."""
    _check_combinable(figures)
    ordered = sorted(figures, key=lambda f: f.month)
    measured = [f for f in ordered if f.availability is not None]
    period = _sum(f.period_seconds for f in measured)
    downtime = _sum(f.downtime_seconds for f in measured)
    availability = _availability(downtime, period) if measured and period > 0 else None
    head = ordered[0]
    minimum = None if head.minimum is None else exact_ratio(head.minimum)
    return RangeTotals(
        service=head.service,
        first_month=head.month,
        last_month=ordered[-1].month,
        months=len(ordered),
        timezone=head.timezone,
        objective=head.objective,
        minimum=head.minimum,
        period_seconds=float(period),
        partial=any(f.partial for f in ordered),
        downtime_seconds=float(downtime),
        excluded_seconds=float(_sum(f.excluded_seconds for f in ordered)),
        unmonitored_seconds=float(_sum(f.unmonitored_seconds for f in ordered)),
        availability=_float(availability),
        met=_at_least(availability, exact_ratio(head.objective)),
        below_minimum=_below(availability, minimum),
    )
