"""Figures read through the store equal the pure accounting of the raw records.

Histories are written through :class:`SqliteStore` exactly as the daemon's
``Monitor`` writes them (verdicts, outage rows, restarts that restore the
failure run), then ``probed.reports.figures.service_month`` is compared with
``accounting.service_figures`` fed by ``detect_outages`` over the store's raw
verdicts and the coverage of the tests actually run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probed.config import Service
from probed.core import accounting
from probed.core.accounting import CreditTier, Interval, OutageSpan, Policy, ServiceFigures
from probed.core.maintenance import Window, expand
from probed.core.outages import OutageChange, Tracker, detect_outages
from probed.reports.figures import service_month
from probed.store.sqlite import FailedTest, SqliteStore

NY = "America/New_York"
SERVICE = "web"
CHECKS = ("home", "api")


def local(text: str, tz: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


# --- a history and how the daemon writes it ----------------------------------------


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


class Writer:
    """The daemon's Monitor, reduced to its store writes (probed/daemon/lifecycle.py)."""

    def __init__(self, path: Path, thresholds: Sequence[int]) -> None:
        self.path = path
        self.thresholds = thresholds
        self.open()

    def open(self) -> None:
        self.store = SqliteStore(self.path)
        self.ids = [self.store.check_id(SERVICE, name, "http") for name in CHECKS]
        self.trackers = [
            Tracker(t, self.store.restore_run(cid))
            for t, cid in zip(self.thresholds, self.ids, strict=True)
        ]

    def restart(self) -> None:
        self.store.close()
        self.open()

    def test(self, at: float, index: int, ok: bool, interval: float) -> None:
        cid, tracker = self.ids[index], self.trackers[index]
        change = tracker.observe(at, ok, "" if ok else f"refused {index}")
        if ok:
            self.store.record_pass(cid, at, interval)
        else:
            failed = FailedTest(CHECKS[index], at, 0.01, f"refused {index}")
            self.store.record_failure(cid, at, interval, failed)
        if change is not None:
            self._apply(cid, tracker, change)

    def _apply(self, cid: int, tracker: Tracker, change: OutageChange) -> None:
        run = change.run
        if run.outage_id is None:  # opened now, or a restored run that crossed the threshold
            oid = self.store.open_outage(cid, run)
            tracker.bind_outage(oid)
            run = replace(run, outage_id=oid)
        if change.kind == "closed":
            self.store.close_outage(run.outage_id or 0, run, change.at)
            self.store.end_pass_run_now(cid)
        elif change.kind == "extended":
            self.store.update_outage(run.outage_id or 0, run)


def write(history: History, path: Path) -> SqliteStore:
    writer = Writer(path, history.thresholds)
    restarted = False
    for at, index, ok, interval in history.tests:
        if not restarted and history.restart_at is not None and at >= history.restart_at:
            writer.restart()
            restarted = True
        writer.test(at, index, ok, interval)
    store = writer.store
    for n, x in enumerate(history.exclusions):
        created = history.now - 3600 + n
        stored = store.add_exclusion(
            service=x.service,
            start=x.start,
            end=x.end,
            kind=x.kind,
            reason=f"exclusion {n}",
            by="ops",
            created_at=created,
        )
        if x.revoked:
            store.revoke_exclusion(stored.id, by="lead", reason="wrong window", at=created + 1)
    if history.flush:
        store.flush()
    return store


# --- the pure side -------------------------------------------------------------------


def pure_figures(history: History, store: SqliteStore, month: str) -> ServiceFigures:
    """accounting.service_figures from raw records: verdicts, test times, exclusions."""
    outages: list[OutageSpan] = []
    for name, threshold in zip(CHECKS, history.thresholds, strict=True):
        outages += detect_outages(name, store.raw_verdicts(SERVICE, name), threshold)
    tests = [t for t in history.tests if t[0] <= history.now]
    coverage: list[Interval] = [
        (at, min(at + interval, history.now)) for at, _, _, interval in tests
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
        exclusions=[*store.exclusions(), *config_windows],
        coverage=coverage,
        first_test_at=min(t[0] for t in tests) if tests else None,
        now=history.now,
    )


def without_ids(figures: ServiceFigures) -> ServiceFigures:
    """Stored outages carry row ids; outages detected in batch do not."""
    rows = tuple(replace(row, span=replace(row.span, id=None)) for row in figures.outages)
    return replace(figures, outages=rows)


def months_of(history: History) -> list[str]:
    first = accounting.month_of(min(t[0] for t in history.tests), history.tz)
    year, mon = accounting.parse_month(first)
    before = f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"
    return accounting.months_between(before, accounting.month_of(history.now, history.tz))


def assert_store_equals_pure(history: History) -> dict[str, ServiceFigures]:
    with tempfile.TemporaryDirectory() as tmp:
        store = write(history, Path(tmp) / "probed.db")
        try:
            # the failure runs, rebuilt from the store, are the ones that were written
            for index, name in enumerate(CHECKS):
                written = [(at, ok) for at, i, ok, _ in history.tests if i == index]
                assert detect_outages(
                    name, [(at, ok, "") for at, ok in written], history.thresholds[index]
                ) == [
                    replace(o, reasons=())
                    for o in detect_outages(
                        name, store.raw_verdicts(SERVICE, name), history.thresholds[index]
                    )
                ]
            found = {}
            for month in months_of(history):
                stored = service_month(store, history.service, month, history.tz, history.now)
                assert without_ids(stored) == pure_figures(history, store, month), month
                found[month] = stored
            return found
        finally:
            store.close()


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


@settings(max_examples=150, deadline=None)
@given(histories())
def test_figures_through_the_store_equal_accounting_of_raw_records(history: History) -> None:
    assert_store_equals_pure(history)


# --- worked examples ------------------------------------------------------------------


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


def test_an_outage_across_new_york_midnight_into_march_is_split_at_the_boundary() -> None:
    boundary = local("2026-03-01 00:00", NY)  # 05:00 UTC
    h = history(NY, {0: (boundary - 180, "UUDDDDDDUU")}, now=local("2026-04-02 00:00", NY))
    months = assert_store_equals_pure(h)
    assert list(months) == ["2026-01", "2026-02", "2026-03", "2026-04"]
    feb, mar = months["2026-02"], months["2026-03"]
    assert months["2026-01"].period_seconds == 0.0  # nothing tested yet: no fake 100 %
    assert feb.partial and feb.period_seconds == 180.0  # tested only from 23:57
    assert feb.downtime_seconds == 60.0  # 23:59 .. 00:00
    assert mar.downtime_seconds == 240.0  # 00:00 .. 00:04, the last failed test
    assert not mar.partial and mar.period_seconds == 743 * 3600.0  # the DST month
    assert [o.span.failed_tests for o in mar.outages] == [6]


def test_a_revoked_exclusion_stops_counting_and_a_live_one_and_a_config_window_count() -> None:
    t0 = local("2026-10-04 01:50", "UTC")  # a Sunday
    outage = {0: (t0, "U" + "D" * 30 + "U"), 1: (t0 + 30, "U" * 31)}
    dos = Exclusion(SERVICE, t0 + 60, t0 + 360, "dos", revoked=False)
    wrong = Exclusion("*", t0, t0 + 3600, "other", revoked=True)
    sunday = Window(weekday=6, start=time(2, 0), duration=600.0, reason="weekly patching")
    h = history(
        "UTC",
        outage,
        now=local("2026-10-31 00:00", "UTC"),
        exclusions=(dos, wrong),
        windows=(sunday,),
        restart_at=t0 + 15 * 60,  # the daemon restarts mid-outage: still one outage
    )
    october = assert_store_equals_pure(h)["2026-10"]
    # the outage is 01:51 .. 02:20 = 29 min; DoS 01:51..01:56 and config 02:00..02:10 excluded
    assert october.excluded_seconds == 15 * 60.0
    assert october.downtime_seconds == 14 * 60.0
    assert [o.span.failed_tests for o in october.outages] == [30]
    assert [(x.by, x.live) for x in october.exclusions[:3]] == [
        ("ops", False),
        ("ops", True),
        ("config", True),
    ]


@pytest.mark.parametrize("flush", [True, False])
def test_the_running_month_counts_coverage_not_yet_flushed(flush: bool) -> None:
    t0 = local("2026-11-10 12:00", "UTC")
    h = replace(history("UTC", {0: (t0, "UUUDDU"), 1: (t0, "UUUUUU")}, now=t0 + 330), flush=flush)
    november = assert_store_equals_pure(h)["2026-11"]
    assert november.partial and november.period_seconds == 330.0
    assert november.unmonitored_seconds == 0.0
    assert november.downtime_seconds == 60.0
