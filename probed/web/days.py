"""The status page's day strip: each local day's downtime (pure: no I/O, no clock).

A day is coloured against the service's daily share of its error budget:
no downtime is ``ok``, downtime within the share is ``minor``, more is
``major``, and a day without a test is ``nodata`` (never a fake green).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, TypeAlias
from zoneinfo import ZoneInfo

from probed.core import accounting
from probed.core.accounting import Interval

Level: TypeAlias = Literal["ok", "minor", "major", "nodata"]


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    start: float
    end: float
    period_seconds: float  # tested time of the day that has passed (from the first test on)
    downtime_seconds: float
    excluded_seconds: float
    unmonitored_seconds: float
    level: Level

    @property
    def availability(self) -> float | None:
        if self.period_seconds <= 0:
            return None
        return 1 - self.downtime_seconds / self.period_seconds


def local_days(tz: str, now: float, count: int) -> list[tuple[date, float, float]]:
    """The last ``count`` local days up to today, oldest first: (date, start, end) in UTC epoch."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now, zone).date()
    days = []
    for back in range(count - 1, -1, -1):
        d = today - timedelta(days=back)
        start = datetime.combine(d, datetime.min.time(), zone).timestamp()
        end = datetime.combine(d + timedelta(days=1), datetime.min.time(), zone).timestamp()
        days.append((d, start, end))
    return days


def day_strip(
    *,
    tz: str,
    now: float,
    count: int,
    downtime: Sequence[Interval],
    excluded: Sequence[Interval],
    coverage: Sequence[Interval],
    first_test_at: float | None,
    objective: float,
) -> list[Day]:
    """Per day: counted downtime (outages less live exclusions), excluded and unmonitored time."""
    down = accounting.union(downtime)
    cut = accounting.union(excluded)
    counted = accounting.subtract(down, cut)
    strip = []
    for d, start, end in local_days(tz, now, count):
        begin = start if first_test_at is None else max(start, first_test_at)
        window = (begin, min(end, now)) if first_test_at is not None else (end, end)
        period = max(window[1] - window[0], 0.0)
        lost = accounting.total(accounting.clip(counted, window)) if period else 0.0
        tested = accounting.total(accounting.clip(coverage, window)) if period else 0.0
        share = (1 - objective) * (end - start)
        level: Level = (
            "nodata"
            if tested <= 0 and lost == 0  # a gap inside an outage still shows its downtime
            else "ok"
            if lost == 0
            else "minor"
            if lost <= share
            else "major"
        )
        strip.append(
            Day(
                day=d,
                start=start,
                end=end,
                period_seconds=period,
                downtime_seconds=lost,
                excluded_seconds=accounting.total(
                    accounting.intersection(accounting.clip(down, window), cut)
                )
                if period
                else 0.0,
                unmonitored_seconds=max(period - tested, 0.0),
                level=level,
            )
        )
    return strip
