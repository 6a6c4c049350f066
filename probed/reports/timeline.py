"""Geometry of the outage timelines drawn in the HTML reports (pure: no I/O, no clock).

A timeline maps a window of UTC epoch seconds onto ``WIDTH`` SVG units, one
lane per check: outages are bars, live exclusions shaded bands, revoked ones
outlined, unmonitored time hatched, time after ``now`` greyed. Below it a
cumulative-downtime chart climbs towards the error budget line. The templates
only place what is computed here, so the tests can check positions against
the same numbers the report prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypeAlias
from zoneinfo import ZoneInfo

from probed.core import accounting
from probed.core.accounting import ExclusionSpan, Interval, OutageSpan

WIDTH = 960.0  # SVG user units; the SVG is drawn at this size in CSS pixels
LANE = 22.0  # height of one check's lane
AXIS = 22.0  # height of the day labels under the lanes
CHART = 110.0  # height of the cumulative-downtime chart
MIN_BAR = 2.0  # a 3-minute outage in a month is 0.07 units wide: keep it visible

BandKind: TypeAlias = Literal["excluded", "revoked", "unmonitored", "future"]


@dataclass(frozen=True, slots=True)
class Scale:
    """``[start, end)`` in epoch seconds onto ``[0, width)`` units."""

    start: float
    end: float
    width: float = WIDTH

    def x(self, at: float) -> float:
        span = self.end - self.start
        return (
            0.0
            if span <= 0
            else (min(max(at, self.start), self.end) - self.start) / span * (self.width)
        )

    def extent(self, start: float, end: float) -> tuple[float, float]:
        """(x, width) of ``[start, end)`` clipped to the window."""
        left = self.x(start)
        return left, max(self.x(end) - left, 0.0)


@dataclass(frozen=True, slots=True)
class Bar:
    lane: int
    x: float
    width: float
    start: float
    end: float
    check: str
    outage_id: int | None
    open: bool
    downtime_seconds: float


@dataclass(frozen=True, slots=True)
class Band:
    kind: BandKind
    x: float
    width: float
    start: float
    end: float
    label: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str  # empty: a grid line without text


@dataclass(frozen=True, slots=True)
class Mark:
    """One failed test on a lane (incident timelines)."""

    lane: int
    x: float
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Cumulative counted downtime against the error budget."""

    points: tuple[tuple[float, float], ...]  # (x, y) in chart units, y grows downwards
    budget_y: float | None  # the threshold line; None when the budget is off the chart
    budget_seconds: float
    max_seconds: float
    total_seconds: float


@dataclass(frozen=True, slots=True)
class Timeline:
    start: float
    end: float
    lanes: tuple[str, ...]
    bars: tuple[Bar, ...]
    bands: tuple[Band, ...]
    ticks: tuple[Tick, ...]
    marks: tuple[Mark, ...] = ()
    chart: Chart | None = None
    width: float = WIDTH

    @property
    def lanes_height(self) -> float:
        return LANE * max(len(self.lanes), 1)

    @property
    def height(self) -> float:
        return self.lanes_height + AXIS + (CHART + AXIS if self.chart else 0.0)


def _bars(scale: Scale, lanes: Sequence[str], outages: Iterable[OutageSpan]) -> list[Bar]:
    bars = []
    for span in outages:
        if span.end < scale.start or span.start >= scale.end or span.check not in lanes:
            continue
        x, width = scale.extent(span.start, span.end)
        bars.append(
            Bar(
                lane=lanes.index(span.check),
                x=x,
                width=max(width, MIN_BAR),
                start=span.start,
                end=span.end,
                check=span.check,
                outage_id=span.id,
                open=span.open,
                downtime_seconds=span.end - span.start,
            )
        )
    return bars


def _bands(
    scale: Scale, exclusions: Iterable[ExclusionSpan], unmonitored: Iterable[Interval], now: float
) -> list[Band]:
    bands: list[Band] = []
    for x in exclusions:
        if x.end <= scale.start or x.start >= scale.end:
            continue
        left, width = scale.extent(x.start, x.end)
        kind: BandKind = "excluded" if x.live else "revoked"
        label = f"{x.kind}: {x.reason}" + ("" if x.live else " (revoked)")
        bands.append(Band(kind, left, max(width, 1.0), x.start, x.end, label))
    for start, end in accounting.clip(unmonitored, (scale.start, scale.end)):
        left, width = scale.extent(start, end)
        bands.append(Band("unmonitored", left, width, start, end, "not monitored"))
    if now < scale.end:
        left, width = scale.extent(max(now, scale.start), scale.end)
        bands.append(Band("future", left, width, max(now, scale.start), scale.end, "not yet"))
    return bands


def day_ticks(scale: Scale, tz: str) -> list[Tick]:
    """A grid line at each local midnight; labels on every day while they fit, else fewer."""
    zone = ZoneInfo(tz)
    day = datetime.fromtimestamp(scale.start, zone).replace(hour=0, minute=0, second=0)
    days: list[datetime] = []
    while day.timestamp() < scale.end and len(days) < 400:  # bounded: a year-long window at most
        if day.timestamp() >= scale.start:
            days.append(day)
        # add a calendar day in local time, then normalise: DST days are 23 or 25 hours
        day = datetime.combine(day.date() + timedelta(days=1), day.time(), zone)
    every = max(1, round(len(days) * 30 / scale.width))  # ~30 units per label
    return [
        Tick(scale.x(d.timestamp()), str(d.day) if i % every == 0 else "")
        for i, d in enumerate(days)
    ]


def _cumulative(
    scale: Scale, downtime: Sequence[Interval], budget: float, period: Interval
) -> Chart:
    total = sum(end - start for start, end in downtime)
    top = max(budget, total) * 1.15 or 1.0

    def y(seconds: float) -> float:
        return CHART - seconds / top * CHART

    points = [(scale.x(period[0]), y(0.0))]
    done = 0.0
    for start, end in downtime:
        points.append((scale.x(start), y(done)))
        done += end - start
        points.append((scale.x(end), y(done)))
    points.append((scale.x(period[1]), y(done)))  # the line stops at now
    return Chart(
        points=tuple((round(px, 2), round(py, 2)) for px, py in points),
        budget_y=y(budget) if budget > 0 else None,
        budget_seconds=budget,
        max_seconds=top,
        total_seconds=total,
    )


def counted_downtime(
    outages: Iterable[OutageSpan], exclusions: Iterable[ExclusionSpan], window: Interval
) -> list[Interval]:
    """The service's billed downtime as intervals: the union of its checks' outages
    inside ``window``, less live exclusions (what the figures sum)."""
    down = accounting.clip((o.interval for o in outages), window)
    return accounting.subtract(down, (x.interval for x in exclusions if x.live))


def month_timeline(
    figures: accounting.ServiceFigures,
    checks: Sequence[str],
    unmonitored: Sequence[Interval],
    now: float,
) -> Timeline:
    """The month of one service: its checks' outages, exclusions, gaps and budget."""
    scale = Scale(*accounting.month_period(figures.month, figures.timezone))
    spans = [row.span for row in figures.outages]
    lanes = tuple(dict.fromkeys([*checks, *(s.check for s in spans)]))
    downtime = counted_downtime(
        spans, figures.exclusions, (figures.period_start, figures.period_end)
    )
    return Timeline(
        start=scale.start,
        end=scale.end,
        lanes=lanes,
        bars=tuple(_bars(scale, lanes, spans)),
        bands=tuple(_bands(scale, figures.exclusions, unmonitored, now)),
        ticks=tuple(day_ticks(scale, figures.timezone)),
        chart=_cumulative(
            scale,
            downtime,
            figures.error_budget_seconds,
            (figures.period_start, figures.period_end),
        ),
    )


def incident_timeline(
    outage: OutageSpan,
    concurrent: Sequence[OutageSpan],
    exclusions: Sequence[ExclusionSpan],
    failed: Iterable[tuple[str, float, str]],
    now: float,
    recovered: float | None = None,
) -> Timeline:
    """The incident and a margin around it: every check that was down, each failed test."""
    spans = [outage, *concurrent]
    first = min(s.start for s in spans)
    last = max(max(s.end for s in spans), recovered or 0.0)
    margin = max((last - first) * 0.15, 1.0)
    scale = Scale(first - margin, last + margin)
    lanes = tuple(dict.fromkeys(s.check for s in spans))
    marks = tuple(
        Mark(lanes.index(check), scale.x(at), at, reason)
        for check, at, reason in failed
        if check in lanes
    )
    bands = [b for b in _bands(scale, exclusions, (), now) if b.kind != "future"]
    return Timeline(
        start=scale.start,
        end=scale.end,
        lanes=lanes,
        bars=tuple(_bars(scale, lanes, spans)),
        bands=tuple(bands),
        ticks=tuple(_time_ticks(scale)),
        marks=marks,
    )


def _time_ticks(scale: Scale) -> list[Tick]:
    """Evenly spaced ticks labelled HH:MM (UTC) for an incident's window."""
    count = 6
    step = (scale.end - scale.start) / count
    ticks = []
    for i in range(count + 1):
        at = scale.start + i * step
        label = datetime.fromtimestamp(at, ZoneInfo("UTC")).strftime("%H:%M:%S.%f")
        # tenths of a second only when whole seconds would repeat along the axis
        ticks.append(Tick(scale.x(at), label[:-5] if step < 5 else label[:-7]))
    return ticks
