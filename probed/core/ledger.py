"""A service-month's outages kept incrementally: the settled past once, the recent rest each time.

The daemon refreshes a month's figures every few seconds. Recomputing them
from every outage of the month is O(history); this ledger splits the month's
outages at a *horizon* ``H``:

- **settled**: closed outages whose last failed test is before ``H``. Closed
  outages never change, so their share of the period (exact lengths of the
  downtime and of the excluded time, their rows, their advisories) is worked
  out once per ``(period start, exclusions)`` and kept;
- **recent**: every other outage of the month (open, or ending at or after
  ``H``), read and worked out at each refresh: a few, near ``now``.

Lengths are exact rationals, so the settled and the recent shares add up to
exactly what the full computation gives: ``|A or B| = |A| + |B| - |A and B|``
with ``A`` the settled downtime (before ``H``) and ``B`` the recent one. The
rows of both are merged in the full computation's order. The result is the
full computation's (``tests/test_ledger.py`` proves it on generated
histories); anything the ledger cannot vouch for (a period ending before
``H``, a recent outage touching a settled one of its check) makes it
:attr:`MonthLedger.valid` false and the caller rebuilds it.

One location only: with several, the quorum combines other daemons' rows
that only the store knows, and the caller recomputes those months in full.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TypeVar

from probed.core import accounting, quorum
from probed.core.accounting import (
    Advisory,
    DownPart,
    ExclusionSpan,
    Interval,
    OutageFigures,
    OutageSpan,
    Policy,
    ServiceFigures,
)

_ZERO = Fraction(0)
_T = TypeVar("_T")


def _length(disjoint: Iterable[Interval]) -> Fraction:
    return sum((Fraction(end) - Fraction(start) for start, end in disjoint), _ZERO)


def _row_key(row: OutageFigures) -> tuple[float, float, str]:
    return (row.span.start, row.span.end, row.span.check)


def _advisory_key(a: Advisory) -> tuple[float, str, str]:
    return (a.start, a.location, a.check)


@dataclass(frozen=True, slots=True)
class Verdicts:
    """The quorum outages (billed) and the outages that stayed alone, of some checks."""

    outages: tuple[OutageSpan, ...] = ()
    unreached: tuple[OutageSpan, ...] = ()


def verdicts(
    own: Iterable[OutageSpan], quorums: Mapping[str, quorum.Quorum], location: str
) -> Verdicts:
    """Each check's verdict from one location's outages (no coverage needed: with one
    location a quorum outage is the location's own, or none)."""
    by_check: dict[str, list[OutageSpan]] = {}
    for o in own:
        by_check.setdefault(o.check, []).append(o)
    found = [
        quorum.check_verdict(
            check, [quorum.LocationRecord(location, tuple(spans))], quorums.get(check, 1)
        )
        for check, spans in by_check.items()
    ]
    return Verdicts(
        tuple(o for v in found for o in v.outages), tuple(o for v in found for o in v.unreached)
    )


@dataclass(slots=True)
class _SettledShare:
    """The settled outages' share of a period starting at ``start`` with ``excluded``."""

    start: float
    excluded: tuple[Interval, ...]
    down: list[Interval]  # inside the period, outside exclusions: sorted, disjoint
    inside: list[Interval]  # inside the period and inside exclusions
    downtime: Fraction
    excluded_length: Fraction
    any: bool
    rows: tuple[OutageFigures, ...]
    advisories: tuple[Advisory, ...]
    down_ends: list[float] = field(default_factory=list)
    down_starts: list[float] = field(default_factory=list)
    inside_ends: list[float] = field(default_factory=list)
    inside_starts: list[float] = field(default_factory=list)
    row_keys: list[tuple[float, float, str]] = field(default_factory=list)
    advisory_keys: list[tuple[float, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.down_starts = [s for s, _ in self.down]
        self.down_ends = [e for _, e in self.down]
        self.inside_starts = [s for s, _ in self.inside]
        self.inside_ends = [e for _, e in self.inside]
        self.row_keys = [_row_key(r) for r in self.rows]
        self.advisory_keys = [_advisory_key(a) for a in self.advisories]


def _near(
    disjoint: list[Interval], starts: list[float], ends: list[float], of: list[Interval]
) -> list[Interval]:
    """The intervals of ``disjoint`` (sorted) that may overlap ``of`` (sorted): a slice."""
    if not of or not disjoint:
        return []
    return disjoint[bisect_right(ends, of[0][0]) : bisect_left(starts, of[-1][1])]


@dataclass(slots=True)
class MonthLedger:
    """One service-month's outages of one location, split at ``horizon``."""

    month: str
    location: str
    horizon: float
    settled: Verdicts
    recent: Verdicts
    # per check: the latest end among its settled outages (a recent one must start after)
    settled_ends: dict[str, float]
    checks: frozenset[str]  # checks that have an outage in the month (settled or recent)
    valid: bool = True
    _share: _SettledShare | None = None

    @classmethod
    def build(
        cls,
        month: str,
        location: str,
        outages: Sequence[OutageSpan],
        quorums: Mapping[str, quorum.Quorum],
        horizon: float,
    ) -> MonthLedger:
        """Split the month's outages (as the store returns them) at ``horizon`` or before:
        the horizon never passes the last failed test of an outage that may still grow
        (open, of a configured check: an unconfigured check's outage changes only if a
        reload brings the check back, and a reload rebuilds the ledger)."""

        def growing(o: OutageSpan) -> bool:
            return o.open and o.check in quorums

        h = min([horizon, *(o.end for o in outages if growing(o))])
        while True:
            settled = [o for o in outages if not growing(o) and o.end < h]
            ends: dict[str, float] = {}
            for o in settled:
                ends[o.check] = max(ends.get(o.check, o.end), o.end)
            clash = [
                o.start
                for o in outages
                if o.end >= h and o.check in ends and o.start <= ends[o.check]
            ]
            if not clash:
                break
            h = min(clash)  # a check's recent outage touching its settled one: settle less
        recent = [o for o in outages if o.end >= h]
        return cls(
            month,
            location,
            h,
            verdicts(settled, quorums, location),
            verdicts(recent, quorums, location),
            ends,
            frozenset(o.check for o in outages),
        )

    def update(self, recent: Sequence[OutageSpan], quorums: Mapping[str, quorum.Quorum]) -> None:
        """The month's outages ending at or after the horizon, as read now (open or not);
        one of another location, or touching a settled outage of its check, invalidates."""
        for o in recent:
            settled_end = self.settled_ends.get(o.check)
            if o.location != self.location or (settled_end is not None and o.start <= settled_end):
                self.valid = False
                return
        self.recent = verdicts(recent, quorums, self.location)
        self.checks = frozenset(self.settled_ends) | {o.check for o in recent}

    # ------------------------------------------------------------ the share

    def part(self, window: Interval, excluded: list[Interval]) -> DownPart:
        """The month's outages' share of ``window``: what ``accounting.down_part`` gives
        for every outage of the month."""
        if window[1] < self.horizon:  # the settled share is worked out up to the horizon
            return accounting.down_part(self._all().outages, window, excluded)
        share = self._settled_share(window[0], excluded)
        spans = list(self.recent.outages)
        down_all = accounting.clip((o.interval for o in spans), window)
        down = accounting.subtract(down_all, excluded)
        inside = accounting.intersection(down_all, excluded)
        both_down = accounting.intersection(
            _near(share.down, share.down_starts, share.down_ends, down), down
        )
        both_inside = accounting.intersection(
            _near(share.inside, share.inside_starts, share.inside_ends, inside), inside
        )
        rows = accounting.down_part(spans, window, excluded).rows
        return DownPart(
            downtime=share.downtime + _length(down) - _length(both_down),
            excluded=share.excluded_length + _length(inside) - _length(both_inside),
            any=share.any or bool(down_all),
            rows=_merged_rows(share.rows, share.row_keys, rows),
        )

    def advisories(self, window: Interval, excluded: list[Interval]) -> tuple[Advisory, ...]:
        """What ``quorum.advisories`` gives for every check's verdict of the month."""
        if window[1] < self.horizon:
            return quorum.advisories([self._verdict(self._all())], window)
        share = self._settled_share(window[0], excluded)
        recent = quorum.advisories([self._verdict(self.recent)], window)
        return _merged_advisories(share.advisories, share.advisory_keys, recent)

    def _all(self) -> Verdicts:
        return Verdicts(
            self.settled.outages + self.recent.outages,
            self.settled.unreached + self.recent.unreached,
        )

    @staticmethod
    def _verdict(v: Verdicts) -> quorum.CheckVerdict:
        return quorum.CheckVerdict("", v.outages, (), v.unreached)

    def _settled_share(self, start: float, excluded: list[Interval]) -> _SettledShare:
        key = tuple(excluded)
        share = self._share
        if share is None or share.start != start or share.excluded != key:
            share = self._share = self._work_out(start, excluded)
        return share

    def _work_out(self, start: float, excluded: list[Interval]) -> _SettledShare:
        window = (start, self.horizon)  # every settled outage ends before the horizon
        spans = self.settled.outages
        down_all = accounting.clip((o.interval for o in spans), window)
        down = accounting.subtract(down_all, excluded)
        inside = accounting.intersection(down_all, excluded)
        return _SettledShare(
            start=start,
            excluded=tuple(excluded),
            down=down,
            inside=inside,
            downtime=_length(down),
            excluded_length=_length(inside),
            any=bool(down_all),
            rows=accounting.down_part(spans, window, excluded).rows,
            advisories=quorum.advisories([self._verdict(self.settled)], window),
        )


def _merged_rows(
    settled: tuple[OutageFigures, ...],
    keys: list[tuple[float, float, str]],
    recent: tuple[OutageFigures, ...],
) -> tuple[OutageFigures, ...]:
    if not recent:
        return settled
    if not settled or keys[-1] < _row_key(recent[0]):
        return settled + recent  # the usual case: every recent outage is later
    at = [bisect_left(keys, _row_key(r)) for r in recent]
    return _interleave(settled, at, recent)


def _merged_advisories(
    settled: tuple[Advisory, ...], keys: list[tuple[float, str, str]], recent: tuple[Advisory, ...]
) -> tuple[Advisory, ...]:
    if not recent:
        return settled
    if not settled or keys[-1] < _advisory_key(recent[0]):
        return settled + recent
    at = [bisect_left(keys, _advisory_key(r)) for r in recent]
    return _interleave(settled, at, recent)


def _interleave(settled: tuple[_T, ...], at: list[int], recent: Sequence[_T]) -> tuple[_T, ...]:
    """``recent[i]`` goes before ``settled[at[i]]`` (``at`` is non-decreasing)."""
    merged: list[_T] = []
    done = 0
    for index, item in zip(at, recent, strict=True):
        merged.extend(settled[done:index])
        merged.append(item)
        done = index
    merged.extend(settled[done:])
    return tuple(merged)


def single_location_figures(
    *,
    service: str,
    policy: Policy,
    month: str,
    tz: str,
    ledger: MonthLedger,
    quorums: Mapping[str, quorum.Quorum],
    coverage: Sequence[Interval],
    exclusions: Sequence[ExclusionSpan],
    first_test_at: float | None,
    now: float,
) -> ServiceFigures:
    """What ``quorum.service_figures`` gives for one location's month, from the ledger.

    ``quorums``: the configured checks' quorums; ``coverage``: the location's coverage
    of the service in the month (empty when it has none)."""
    names = set(quorums) | ledger.checks
    kinds = {quorums.get(name, 1) for name in names} or {1}  # no check at all: quorum 1
    monitored = [iv for q in kinds for iv in quorum.monitored([coverage] if coverage else [], q)]
    billed = accounting.service_figures(
        service=service,
        policy=policy,
        month=month,
        tz=tz,
        outages=(),
        exclusions=exclusions,
        coverage=monitored,
        first_test_at=first_test_at,
        now=now,
        down=ledger,
    )
    window = (billed.period_start, billed.period_end)
    live = accounting.union(x.interval for x in exclusions if x.applies_to(service) and x.live)
    return replace(billed, locations=(), advisories=ledger.advisories(window, live))
