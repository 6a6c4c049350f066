"""Histories of tests written through the product's own Recorder, and their pure figures.

A :class:`History` is a sequence of test verdicts (with an optional daemon
restart, exclusions and maintenance windows). :func:`assert_store_equals_pure`
writes it through :class:`probed.daemon.recorder.Recorder` into a real store,
reads each month's figures back with ``probed.reports.figures.service_month``
and compares them with ``accounting.service_figures`` fed by
``detect_outages`` over the history itself.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from datetime import datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from probed.config import Service
from probed.core import accounting
from probed.core.accounting import CreditTier, Interval, OutageSpan, Policy, ServiceFigures
from probed.core.events import Event
from probed.core.maintenance import Window, expand
from probed.core.outages import detect_outages
from probed.daemon.recorder import Recorder
from probed.daemon.runner import TestOutcome
from probed.reports.figures import service_month, services_month
from probed.store.base import NewExclusion, Store
from probes.base import CheckBase, ProbeResult, Transcript
from tests.store_engines import Engine

NY = "America/New_York"
SERVICE = "web"
CHECKS = ("home", "api")
TIMEOUT = 5.0  # every check's timeout: a test covers its interval plus this


def local(text: str, tz: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


class StubCheck(CheckBase):
    type: Literal["stub"] = "stub"


@dataclass(frozen=True)
class Exclusion:
    service: str
    start: float
    end: float
    kind: str
    revoked: bool


@dataclass(frozen=True)
class History:
    tz: str
    service: Service
    thresholds: tuple[int, int]
    tests: tuple[tuple[float, int, bool, float], ...]  # (at, check index, ok, interval)
    restart_at: float | None  # the daemon stops before the first test at or after this
    exclusions: tuple[Exclusion, ...]
    now: float
    flush: bool  # whether pending passes were flushed before the figures are read

    def checks(self) -> list[StubCheck]:
        intervals = {i: iv for _, i, _, iv in self.tests}
        return [
            StubCheck(
                name=name,
                interval=intervals.get(i, 60.0),
                timeout=TIMEOUT,
                failures_to_down=self.thresholds[i],
            )
            for i, name in enumerate(CHECKS)
        ]


class Writer:
    """The daemon's outcome path: a Recorder over a store, with a simulated clock."""

    def __init__(self, engine: Engine, url: str, checks: list[StubCheck]) -> None:
        self.engine = engine
        self.url = url
        self.checks = checks
        self.now = 0.0
        self.events: list[Event] = []

    async def open(self) -> None:
        self.store: Store = await self.engine.open(self.url, clock=lambda: self.now)
        self.recorder = Recorder(self.store, self._emit)
        await self.recorder.start([(SERVICE, c) for c in self.checks])

    async def _emit(self, event: Event) -> None:
        self.events.append(event)

    async def restart(self) -> None:
        await self.store.close()
        await self.open()

    async def test(self, at: float, index: int, ok: bool) -> None:
        self.now = at
        result = ProbeResult.passed() if ok else ProbeResult.failed(f"refused {index}")
        outcome = TestOutcome(started_at=at, duration=0.01, result=result)
        await self.recorder.record(SERVICE, self.checks[index], outcome, Transcript())


async def write(history: History, engine: Engine) -> Store:
    writer = Writer(engine, engine.url(), history.checks())
    await writer.open()
    restarted = False
    for at, index, ok, _ in history.tests:
        if not restarted and history.restart_at is not None and at >= history.restart_at:
            await writer.restart()
            restarted = True
        await writer.test(at, index, ok)
    store = writer.store
    for n, x in enumerate(history.exclusions):
        created = history.now - 3600 + n
        new = NewExclusion(x.service, x.start, x.end, x.kind, f"exclusion {n}", "ops")
        stored = await store.add_exclusion(new, created_at=created)
        if x.revoked:
            await store.revoke_exclusion(
                stored.id, by="lead", reason="wrong window", at=created + 1
            )
    writer.now = history.now
    if history.flush:
        await store.flush()
    return store


# --- the pure side -------------------------------------------------------------------


def verdicts(history: History, index: int) -> list[tuple[float, bool, str]]:
    return [(at, ok, "" if ok else f"refused {i}") for at, i, ok, _ in history.tests if i == index]


async def pure_figures(history: History, store: Store, month: str) -> ServiceFigures:
    """accounting.service_figures from the history itself: verdicts, test times, exclusions."""
    outages: list[OutageSpan] = []
    for index, name in enumerate(CHECKS):
        outages += detect_outages(name, verdicts(history, index), history.thresholds[index])
    tests = [t for t in history.tests if t[0] <= history.now]
    coverage: list[Interval] = [
        (at, min(at + interval + TIMEOUT, history.now)) for at, _, _, interval in tests
    ]
    period = accounting.month_period(month, history.tz)
    config_windows = expand(
        history.service.maintenance, service=SERVICE, tz=history.tz, span=period
    )
    return accounting.service_figures(
        service=SERVICE,
        policy=history.service.policy,
        month=month,
        tz=history.tz,
        outages=outages,
        exclusions=[*(await store.exclusions()), *config_windows],
        coverage=coverage,
        first_test_at=min(t[0] for t in tests) if tests else None,
        now=history.now,
    )


def without_ids(figures: ServiceFigures) -> ServiceFigures:
    """Stored outages carry row ids and their location; outages detected in batch do not."""
    rows = tuple(
        replace(row, span=replace(row.span, id=None, location="", members=()))
        for row in figures.outages
    )
    return replace(figures, outages=rows)


def months_of(history: History) -> list[str]:
    first = accounting.month_of(min(t[0] for t in history.tests), history.tz)
    year, mon = accounting.parse_month(first)
    before = f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"
    return accounting.months_between(before, accounting.month_of(history.now, history.tz))


async def _store_equals_pure(history: History, engine: Engine) -> dict[str, ServiceFigures]:
    store = await write(history, engine)
    try:
        # every failed test is stored: the evidence behind the figures
        for index, name in enumerate(CHECKS):
            stored = await store.failed_tests(SERVICE, name, (-math.inf, math.inf))
            assert [t.at for t in stored] == [
                at for at, ok, _ in verdicts(history, index) if not ok
            ]
        found = {}
        for month in months_of(history):
            figures = await service_month(store, history.service, month, history.tz, history.now)
            assert without_ids(figures) == await pure_figures(history, store, month), month
            # probed report's one read of every service gives the same figures
            batch = await services_month(store, [history.service], month, history.tz, history.now)
            assert batch == [figures], month
            found[month] = figures
        return found
    finally:
        await store.close()


def assert_store_equals_pure(history: History, engine: Engine) -> dict[str, ServiceFigures]:
    return asyncio.run(_store_equals_pure(history, engine))


# --- generated histories ----------------------------------------------------------------

# (zone, an instant the history straddles): month boundaries, DST changes, a year end
ANCHORS = [
    ("UTC", local("2026-11-01 00:00", "UTC")),
    (NY, local("2026-03-01 00:00", NY)),  # into the 743-hour March
    (NY, local("2026-03-08 03:00", NY)),  # the spring-forward jump itself
    (NY, local("2026-11-01 00:00", NY)),  # a month boundary, then fall-back the same night
    (NY, local("2027-01-01 00:00", NY)),
]


@st.composite
def histories(draw: st.DrawFn) -> History:
    tz, anchor = draw(st.sampled_from(ANCHORS))
    intervals = [draw(st.sampled_from([30.0, 60.0, 300.0])) for _ in CHECKS]
    tests: list[tuple[float, int, bool, float]] = []
    for index, interval in enumerate(intervals):
        verdicts = draw(st.lists(st.booleans(), min_size=1, max_size=30))
        # before the anchor by up to 30 tests (or after it: a partial month)
        first = anchor - draw(st.integers(-10, 30)) * interval + draw(st.integers(0, 29))
        tests += [(first + n * interval, index, ok, interval) for n, ok in enumerate(verdicts)]
    restart_at = draw(st.none() | st.sampled_from(sorted(t[0] for t in tests)))
    if restart_at is not None:
        gap = float(draw(st.integers(1, 4 * 3600)))
        tests = [(at + gap if at >= restart_at else at, i, ok, iv) for at, i, ok, iv in tests]
    tests.sort(key=lambda t: (t[0], t[1]))
    last = max(at for at, *_ in tests)
    exclusions = tuple(
        Exclusion(
            service=draw(st.sampled_from([SERVICE, "*", "mail"])),
            start=(start := anchor + draw(st.integers(-3 * 3600, 3 * 3600))),
            end=start + draw(st.integers(1, 3 * 3600)),
            kind=draw(st.sampled_from(accounting.EXCLUSION_KINDS)),
            revoked=draw(st.booleans()),
        )
        for _ in range(draw(st.integers(0, 4)))
    )
    windows = tuple(
        Window(
            weekday=draw(st.none() | st.integers(0, 6)),
            start=time(draw(st.integers(0, 23)), draw(st.sampled_from([0, 30]))),
            duration=float(draw(st.integers(60, 4 * 3600))),
        )
        for _ in range(draw(st.integers(0, 2)))
    )
    objective = draw(st.sampled_from([0.99, 0.995, 0.999, 0.9999]))
    policy = Policy(
        objective=objective,
        minimum=draw(st.none() | st.just(0.98)),
        credits=(CreditTier(below=objective, percent=5), CreditTier(below=0.98, percent=25)),
        excluded_time=draw(st.sampled_from(accounting.EXCLUDED_TIME_POLICIES)),
    )
    return History(
        tz=tz,
        service=Service(name=SERVICE, policy=policy, checks=(), maintenance=windows),
        thresholds=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        tests=tuple(tests),
        restart_at=restart_at,
        exclusions=exclusions,
        # right after the last test (mid-month), or weeks later (months closed)
        now=last + draw(st.sampled_from([0, 1, 59, 3600, 20 * 86400, 45 * 86400])),
        flush=draw(st.booleans()),
    )


def history(
    tz: str,
    verdicts: dict[int, tuple[float, str]],
    *,
    now: float,
    exclusions: tuple[Exclusion, ...] = (),
    windows: tuple[Window, ...] = (),
    restart_at: float | None = None,
) -> History:
    """``verdicts``: check index -> (first test, "UUDDD..."), every 60 s."""
    tests = sorted(
        (first + 60.0 * n, index, c == "U", 60.0)
        for index, (first, script) in verdicts.items()
        for n, c in enumerate(script)
    )
    return History(
        tz=tz,
        service=Service(SERVICE, Policy(objective=0.995), (), windows),
        thresholds=(2, 2),
        tests=tuple(tests),
        restart_at=restart_at,
        exclusions=exclusions,
        now=now,
        flush=True,
    )
