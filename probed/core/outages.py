"""Outage detection: a small state machine over one check's test verdicts.

A *failure run* is a maximal sequence of consecutive failed tests; the first
passing test ends it. A run with at least ``failures_to_down`` tests is an
outage whose downtime is ``[first failed test, last failed test]``. A
monitoring gap does not end a run: the tracker's state is restored from the
store after a restart, so tests on both sides of a gap stay consecutive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from probed.core.accounting import OutageSpan

ChangeKind: TypeAlias = Literal["opened", "extended", "closed"]
MAX_REASONS = 8  # distinct reasons kept per outage; evidence lives in the failed tests


@dataclass(frozen=True, slots=True)
class FailureRun:
    first_at: float
    last_at: float
    count: int
    reasons: tuple[str, ...] = ()
    outage_id: int | None = None  # set once the run became a stored outage

    def with_failure(self, at: float, reason: str) -> FailureRun:
        reasons = self.reasons
        if reason and reason not in reasons and len(reasons) < MAX_REASONS:
            reasons = (*reasons, reason)
        # max(): a run never ends before it started, whatever a clock did between tests
        return replace(self, last_at=max(self.last_at, at), count=self.count + 1, reasons=reasons)

    def shifted(self, seconds: float) -> FailureRun:
        """The same run on a timeline moved by ``seconds`` (a clock step): same duration."""
        return replace(self, first_at=self.first_at + seconds, last_at=self.last_at + seconds)


@dataclass(frozen=True, slots=True)
class OutageChange:
    """What a verdict did to the check's outage state; the store and hooks act on it."""

    kind: ChangeKind
    run: FailureRun
    at: float  # the test that caused the change


class Tracker:
    """Per-check state. ``observe`` is called once per test, in start order."""

    __slots__ = ("failures_to_down", "run")

    def __init__(self, failures_to_down: int, run: FailureRun | None = None) -> None:
        self.failures_to_down = failures_to_down
        self.run = run

    @property
    def in_outage(self) -> bool:
        return self.run is not None and self.run.count >= self.failures_to_down

    def observe(self, at: float, ok: bool, reason: str = "") -> OutageChange | None:
        if ok:
            return self._passed(at)
        was_down = self.in_outage
        if self.run is None:
            self.run = FailureRun(
                first_at=at, last_at=at, count=1, reasons=(reason,) if reason else ()
            )
        else:
            self.run = self.run.with_failure(at, reason)
        if not self.in_outage:
            return None
        return OutageChange("extended" if was_down else "opened", self.run, at)

    def _passed(self, at: float) -> OutageChange | None:
        run, was_down = self.run, self.in_outage
        self.run = None
        if run is not None and was_down:
            return OutageChange("closed", run, at)
        return None

    def bind_outage(self, outage_id: int) -> None:
        """Remember the stored outage's id so later changes update the same row."""
        if self.run is not None:
            self.run = replace(self.run, outage_id=outage_id)


Verdict: TypeAlias = tuple[float, bool, str]  # (started_at, ok, reason)


def detect_outages(check: str, tests: Iterable[Verdict], failures_to_down: int) -> list[OutageSpan]:
    """All outages in a check's history of tests (sorted by start time), in batch.

    The same rules as :class:`Tracker`, used to recompute figures from raw
    records and to test that the incremental path agrees with it.
    """
    tracker = Tracker(failures_to_down)
    spans: list[OutageSpan] = []
    for at, ok, reason in sorted(tests, key=lambda t: t[0]):
        change = tracker.observe(at, ok, reason)
        if change is not None and change.kind == "closed":
            spans.append(_span(check, change.run, open_=False))
    if tracker.in_outage and tracker.run is not None:
        spans.append(_span(check, tracker.run, open_=True))
    return spans


def _span(check: str, run: FailureRun, *, open_: bool) -> OutageSpan:
    return OutageSpan(
        check=check,
        start=run.first_at,
        end=run.last_at,
        failed_tests=run.count,
        reasons=run.reasons,
        open=open_,
        id=run.outage_id,
    )


def span_of(check: str, run: FailureRun, *, open_: bool) -> OutageSpan:
    return _span(check, run, open_=open_)
