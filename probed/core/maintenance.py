"""Recurring maintenance windows declared in the config, expanded into exclusions.

A window such as ``{every: sunday, start: "02:00", duration: 1h}`` is a wall
time in the configured zone, so it stays at 02:00 local across DST changes
(06:00 UTC in New York's summer, 07:00 in its winter). Pure: the caller passes
the zone and the UTC interval to cover; no clock, no I/O.

Local times resolve as :func:`probed.core.accounting.month_period` resolves
midnights (``fold=0``): a start skipped by a spring-forward jump lands where the
clock would have shown it without the jump (02:30 on a 02:00→03:00 night is
03:30 after it), and a start that occurs twice in a fall-back night is the
first one. ``duration`` is elapsed time, not wall time.

Each occurrence becomes an :class:`~probed.core.accounting.ExclusionSpan` that is
live, has ``id`` :data:`CONFIG_ID` (never a stored id: SQLite's start at 1) and
``by`` :data:`CONFIG_BY`, so reports can show it and nobody can revoke it: a
config window is changed by changing the config.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from probed.core.accounting import ExclusionSpan, Interval

CONFIG_ID = 0
CONFIG_BY = "config"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EVERY_DAY = "day"
DAY = 86400.0
WEEK = 7 * DAY


@dataclass(frozen=True, slots=True)
class Window:
    """A recurring window: ``weekday`` 0 (Monday) .. 6, or None for every day."""

    weekday: int | None
    start: time  # wall time in the configured zone
    duration: float  # seconds, shorter than the recurrence
    kind: str = "maintenance"
    reason: str = "scheduled maintenance"
    # when a reload added the window (None: it was in the config the daemon started with);
    # not part of the window's identity, so an unchanged window keeps it across reloads
    since: float | None = field(default=None, compare=False)

    @property
    def every(self) -> str:
        return EVERY_DAY if self.weekday is None else WEEKDAYS[self.weekday]

    def describe(self) -> str:
        """``every sunday 02:00 for 1h``, as the config says it."""
        return f"every {self.every} {self.start:%H:%M} for {_duration(self.duration)}"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def is_configured(exclusion: ExclusionSpan) -> bool:
    """Whether an exclusion came from the config rather than the store."""
    return exclusion.id == CONFIG_ID and exclusion.by == CONFIG_BY


def occurrences(window: Window, tz: str, span: Interval) -> list[Interval]:
    """Every occurrence of ``window`` (whole, not clipped) that overlaps ``span``."""
    lo, hi = span
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    zone = ZoneInfo(tz)
    # An occurrence starting up to one duration before ``lo`` can still reach
    # into it; a day more either side absorbs any UTC offset.
    first = datetime.fromtimestamp(lo - window.duration, zone).date() - timedelta(days=1)
    last = datetime.fromtimestamp(hi, zone).date() + timedelta(days=1)
    found: list[Interval] = []
    for day in _days(first, last):
        if window.weekday is not None and day.weekday() != window.weekday:
            continue
        start = datetime.combine(day, window.start, tzinfo=zone).timestamp()
        end = start + window.duration
        if start < hi and end > lo:
            found.append((start, end))
    return found


def _days(first: date, last: date) -> Iterable[date]:
    for n in range((last - first).days + 1):
        yield first + timedelta(days=n)


def expand(
    windows: Iterable[Window], *, service: str, tz: str, span: Interval
) -> list[ExclusionSpan]:
    """The service's config windows overlapping ``span``, as live exclusions, by start."""
    spans = [
        ExclusionSpan(
            id=CONFIG_ID,
            service=service,
            start=start,
            end=end,
            kind=window.kind,
            reason=window.reason,
            by=CONFIG_BY,
            # a window from the start-up config has no creation time and its start is the honest
            # stand-in; one a reload added was not there before the reload
            created_at=start if window.since is None else max(start, window.since),
        )
        for window in windows
        for start, end in occurrences(window, tz, span)
    ]
    return sorted(spans, key=lambda x: (x.start, x.end, x.kind, x.reason))
