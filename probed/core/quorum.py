"""Quorum downtime: one billed verdict from several probing locations.

docs/sla-rules.md, "Several locations": each location applies the
single-location rules to its own tests (its outages and its coverage); at
instant t a check is *down* when at least ``k`` of its locations are in an
outage at t, or with ``majority`` when more than half of the locations taking
part at t are. It is *unmonitored* while fewer than ``k`` locations test it
(``majority``: while none does). Service figures, exclusions and periods then
follow from the checks' quorum downtime exactly as for one location.

Pure interval algebra (a k-of-n coverage over interval sets), no I/O. A
location outage is the closed interval ``[first failed test, last failed
test]``: with ``failures_to_down: 1`` one failed test is an outage of a single
instant, and it must stay one so that a single location with ``k = 1`` gives
back exactly its own outages. Coverage only matters by its length.

A location *takes part* in a majority vote at t when it is testing the check
at t or is in an outage at t: a monitoring gap inside a failure run stays
inside the outage (as for one location), so a lone location that crashed
mid-outage still decides alone ("more than half of one is one").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from operator import attrgetter
from typing import Literal, TypeAlias

from probed.core import accounting
from probed.core.accounting import (
    Advisory,
    ExclusionSpan,
    Interval,
    LocationFigures,
    OutageSpan,
    Policy,
    ServiceFigures,
)
from probed.core.outages import MAX_REASONS

Quorum: TypeAlias = int | Literal["majority"]
MAJORITY: Literal["majority"] = "majority"


def validate(quorum: object) -> Quorum:
    """The quorum itself, or ``ValueError`` saying what a quorum looks like."""
    if quorum == MAJORITY:
        return MAJORITY
    if isinstance(quorum, int) and not isinstance(quorum, bool) and quorum >= 1:
        return quorum
    raise ValueError(f"expected a quorum: a whole number >= 1 or majority, got {quorum!r}")


# --- k-of-n coverage over interval sets ------------------------------------------


def closed_union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted disjoint closed intervals covering the same instants; ``[t, t]`` is kept."""
    merged: list[Interval] = []
    for start, end in sorted((s, e) for s, e in intervals if s <= e):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True, slots=True)
class _Counts:
    """How many sets cover each breakpoint, and each open gap between consecutive ones."""

    at_point: tuple[int, ...]
    in_gap: tuple[int, ...]  # gap i lies between points[i] and points[i + 1]


def _breakpoints(*families: Sequence[Sequence[Interval]]) -> list[float]:
    return sorted({x for sets in families for one in sets for iv in one for x in iv})


def _counts(sets: Sequence[Sequence[Interval]], points: Sequence[float]) -> _Counts:
    index = {p: i for i, p in enumerate(points)}
    point_diff = [0] * (len(points) + 1)
    gap_diff = [0] * (len(points) + 1)
    for one in sets:
        # A set's own overlaps count once: each set is one location.
        for start, end in closed_union(one):
            first, last = index[start], index[end]
            point_diff[first] += 1
            point_diff[last + 1] -= 1
            gap_diff[first] += 1
            gap_diff[last] -= 1
    return _Counts(_running(point_diff, len(points)), _running(gap_diff, len(points) - 1))


def _running(diff: Sequence[int], length: int) -> tuple[int, ...]:
    counts: list[int] = []
    level = 0
    for step in diff[: max(length, 0)]:
        level += step
        counts.append(level)
    return tuple(counts)


def _closure(points: Sequence[float], point: Sequence[bool], gap: Sequence[bool]) -> list[Interval]:
    """The closed intervals made of the true points and the closures of the true gaps."""
    found: list[Interval] = []
    for i, p in enumerate(points):
        from_left = i > 0 and gap[i - 1]
        if not (point[i] or from_left or (i < len(gap) and gap[i])):
            continue
        if from_left:
            found[-1] = (found[-1][0], p)
        else:
            found.append((p, p))
    return found


def at_least(sets: Sequence[Sequence[Interval]], k: int) -> list[Interval]:
    """Closed intervals of the instants that lie inside at least ``k`` of ``sets``."""
    points = _breakpoints(sets)
    counts = _counts(sets, points)
    return _closure(points, [n >= k for n in counts.at_point], [n >= k for n in counts.in_gap])


def quorum_down(
    outages: Mapping[str, Sequence[Interval]],
    coverage: Mapping[str, Sequence[Interval]],
    quorum: Quorum,
) -> list[Interval]:
    """The instants a check is down, per location outages and coverage (keyed by location)."""
    if quorum != MAJORITY:
        return at_least(list(outages.values()), quorum)
    down = list(outages.values())
    taking_part = [
        [*outages.get(name, ()), *coverage.get(name, ())] for name in _names(outages, coverage)
    ]
    points = _breakpoints(down, taking_part)
    d, n = _counts(down, points), _counts(taking_part, points)
    return _closure(
        points,
        [2 * a > b for a, b in zip(d.at_point, n.at_point, strict=True)],
        [2 * a > b for a, b in zip(d.in_gap, n.in_gap, strict=True)],
    )


def monitored(coverage: Sequence[Sequence[Interval]], quorum: Quorum) -> list[Interval]:
    """When enough locations were testing: at least ``k`` of them (``majority``: one)."""
    return at_least(coverage, 1 if quorum == MAJORITY else quorum)


def _names(*maps: Mapping[str, object]) -> list[str]:
    return sorted({name for m in maps for name in m})


# --- one check -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocationRecord:
    """What one location recorded for one check: its own outages and when it was testing."""

    location: str
    outages: tuple[OutageSpan, ...] = ()
    coverage: tuple[Interval, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckVerdict:
    """A check's quorum outages (billed), monitored time, and the outages that stayed alone."""

    check: str
    outages: tuple[OutageSpan, ...]
    monitored: tuple[Interval, ...]
    unreached: tuple[OutageSpan, ...]  # location outages outside every quorum outage


def check_verdict(check: str, records: Sequence[LocationRecord], quorum: Quorum) -> CheckVerdict:
    """Combine every location's record of ``check`` under ``quorum``."""
    if len(records) == 1 and quorum in (1, MAJORITY):
        alone = _alone(check, records[0])
        if alone is not None:
            return alone
    return _combined(check, records, quorum)


def _alone(check: str, record: LocationRecord) -> CheckVerdict | None:
    """One location under a quorum of one: each of its outages is a quorum outage of its
    own (what :func:`_combined` finds, without the breakpoint sweep); None when two of
    them touch, for :func:`_combined` to merge."""
    own = sorted(
        (
            o
            if o.check == check and o.location == record.location
            else replace(o, check=check, location=record.location)
            for o in record.outages
        ),
        key=_by_interval,
    )
    # what closed_union would merge or drop: an outage ending before it starts, or
    # touching the next one
    if any(o.start > o.end for o in own) or any(a.end >= b.start for a, b in pairwise(own)):
        return None
    return CheckVerdict(
        check=check,
        outages=tuple(_lone_outage(check, o) for o in own),
        monitored=tuple(closed_union(record.coverage)),
        unreached=(),
    )


_by_interval = attrgetter("start", "end")


def _combined(check: str, records: Sequence[LocationRecord], quorum: Quorum) -> CheckVerdict:
    own = [replace(o, check=check, location=r.location) for r in records for o in r.outages]
    outages: dict[str, list[Interval]] = {}
    coverage: dict[str, list[Interval]] = {}
    for r in records:
        outages.setdefault(r.location, []).extend(o.interval for o in r.outages)
        coverage.setdefault(r.location, []).extend(r.coverage)
    still_down = _still_down(coverage, quorum)
    spans = tuple(
        _quorum_outage(check, interval, own, still_down)
        for interval in quorum_down(outages, coverage, quorum)
    )
    joined = {m for span in spans for m in span.members}
    return CheckVerdict(
        check=check,
        outages=spans,
        monitored=tuple(monitored(list(coverage.values()), quorum)),
        unreached=tuple(sorted((o for o in own if o not in joined), key=_order)),
    )


def _order(span: OutageSpan) -> tuple[float, str, float]:
    return (span.start, span.location, span.end)


def _still_down(
    coverage: Mapping[str, Sequence[Interval]], quorum: Quorum
) -> Callable[[Sequence[OutageSpan], float], bool]:
    """Whether the open location outages reaching ``t`` would still make the check down:
    then the quorum outage ending at ``t`` is open (it ends at the latest failed test)."""

    def decide(members: Sequence[OutageSpan], t: float) -> bool:
        ongoing = {m.location for m in members if m.open and m.start <= t <= m.end}
        if quorum != MAJORITY:
            return len(ongoing) >= quorum
        testing = {name for name, spans in coverage.items() if any(s <= t <= e for s, e in spans)}
        return 2 * len(ongoing) > len(
            testing | {m.location for m in members if m.start <= t <= m.end}
        )

    return decide


def _quorum_outage(
    check: str,
    interval: Interval,
    own: Sequence[OutageSpan],
    still_down: Callable[[Sequence[OutageSpan], float], bool],
) -> OutageSpan:
    start, end = interval
    members = tuple(sorted((o for o in own if o.start <= end and o.end >= start), key=_order))
    reasons: list[str] = []
    for reason in (r for m in members for r in m.reasons):
        if reason not in reasons and len(reasons) < MAX_REASONS:
            reasons.append(reason)
    first = min(members, key=lambda m: (m.start, m.id is None, m.id or 0))
    return OutageSpan(
        check=check,
        start=start,
        end=end,
        failed_tests=sum(m.failed_tests for m in members),
        reasons=tuple(reasons),
        open=still_down(members, end),
        id=first.id,
        members=members,
    )


def _lone_outage(check: str, own: OutageSpan) -> OutageSpan:
    """:func:`_quorum_outage` of one location outage overlapping no other, under a quorum
    of one: the same span, without the search for members (a month of 10 000 checks has
    ~40 000). It is open when its location's is: :func:`_still_down` of one location,
    for ``1`` and for ``majority`` alike."""
    reasons = own.reasons
    if len(reasons) > MAX_REASONS or len(set(reasons)) < len(reasons):
        reasons = tuple(dict.fromkeys(reasons))[:MAX_REASONS]
    return OutageSpan(
        check, own.start, own.end, own.failed_tests, reasons, own.open, own.id, "", (own,)
    )


# --- one service -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckRecords:
    """Every location's record of one check, and the check's quorum."""

    check: str
    quorum: Quorum
    locations: tuple[LocationRecord, ...]


def service_figures(
    *,
    service: str,
    policy: Policy,
    month: str,
    tz: str,
    checks: Sequence[CheckRecords],
    exclusions: Sequence[ExclusionSpan],
    first_test_at: float | None,
    now: float,
) -> ServiceFigures:
    """The billed figures from the checks' quorum downtime, with the locations' evidence.

    The per-location table is filled only when more than one location tested
    the service: with one location the figures are exactly today's.
    """
    verdicts = [check_verdict(c.check, c.locations, c.quorum) for c in checks]
    billed = accounting.service_figures(
        service=service,
        policy=policy,
        month=month,
        tz=tz,
        outages=[o for v in verdicts for o in v.outages],
        exclusions=exclusions,
        coverage=[iv for v in verdicts for iv in v.monitored],
        first_test_at=first_test_at,
        now=now,
    )
    window = (billed.period_start, billed.period_end)
    names = sorted({r.location for c in checks for r in c.locations})

    def own(name: str) -> ServiceFigures:
        records = [r for c in checks for r in c.locations if r.location == name]
        return accounting.service_figures(
            service=service,
            policy=policy,
            month=month,
            tz=tz,
            outages=[replace(o, location=name) for r in records for o in r.outages],
            exclusions=exclusions,
            coverage=[iv for r in records for iv in r.coverage],
            first_test_at=first_test_at,
            now=now,
        )

    # one location: its own figures are the billed ones, not computed twice
    locations = (
        tuple(_location_figures(name, own(name), window) for name in names)
        if len(names) > 1
        else ()
    )
    return replace(billed, locations=locations, advisories=advisories(verdicts, window))


def _location_figures(name: str, f: ServiceFigures, window: Interval) -> LocationFigures:
    tested = f.period_seconds > f.unmonitored_seconds or f.outages
    return LocationFigures(
        location=name,
        downtime_seconds=f.downtime_seconds,
        excluded_seconds=f.excluded_seconds,
        unmonitored_seconds=f.unmonitored_seconds,
        availability=f.availability if tested and window[1] > window[0] else None,
        outages=f.outages,
    )


def advisories(verdicts: Iterable[CheckVerdict], window: Interval) -> tuple[Advisory, ...]:
    """Location outages inside ``window`` that never took part in a quorum outage."""
    found = [
        Advisory(
            location=o.location,
            check=o.check,
            start=o.start,
            end=o.end,
            downtime_seconds=accounting.total(accounting.clip([o.interval], window)),
            open=o.open,
        )
        for v in verdicts
        for o in v.unreached
        if accounting.overlaps(o.interval, window)
    ]
    return tuple(sorted(found, key=lambda a: (a.start, a.location, a.check)))


# --- telling a quorum outage once ---------------------------------------------------------

TOLD_LEDGER = "quorum"
"""Where the store keeps the quorum transitions already told (one unique key each)."""

Transition: TypeAlias = Literal["opened", "closed"]


def ongoing(verdict: CheckVerdict) -> OutageSpan | None:
    """The check's quorum outage that is still open, if the check is down now."""
    return next((o for o in reversed(verdict.outages) if o.open), None)


def next_transition(told: Iterable[str], check: str, down: bool) -> tuple[Transition, str] | None:
    """What to tell about ``check`` now, and the key that makes it told once.

    Several daemons may decide the same transition at once: each claims the
    key in the store, and only the one whose claim is new tells it. The n-th
    quorum outage of a check is ``CHECK/opened/n`` then ``CHECK/closed/n``.
    """
    prefix = f"{check}/"
    opened = sum(
        1 for key in told if key.startswith(prefix) and key[len(prefix) :].startswith("opened/")
    )
    closed = sum(
        1 for key in told if key.startswith(prefix) and key[len(prefix) :].startswith("closed/")
    )
    if down and opened == closed:
        return "opened", f"{check}/opened/{opened + 1}"
    if not down and opened > closed:
        return "closed", f"{check}/closed/{opened}"
    return None
