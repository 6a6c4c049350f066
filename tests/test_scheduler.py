"""The scheduler: cadence, isolation of slow checks, spread, resilience."""

from __future__ import annotations

import asyncio
import itertools
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probed.daemon.runner import TestOutcome
from probed.daemon.scheduler import TICK, Scheduler, phase, start_at
from probes import REGISTRY
from probes.base import CheckBase, ProbeResult, ProbeType, Transcript
from tests.daemon_helpers import wait_for


class FakeCheck(CheckBase):
    type: Literal["fake"] = "fake"
    hang: bool = False


async def fake_probe(check: FakeCheck, transcript: Transcript) -> ProbeResult:
    if check.hang:
        await asyncio.Event().wait()  # a server that never answers
    return ProbeResult.passed()


@pytest.fixture(autouse=True)
def fake_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "fake", ProbeType("fake", FakeCheck, fake_probe))


def test_phase_is_deterministic_and_inside_the_interval() -> None:
    offsets = [phase(("mail", f"c{i}"), 60.0) for i in range(1000)]
    assert offsets == [phase(("mail", f"c{i}"), 60.0) for i in range(1000)]
    assert all(0 <= o < 60 for o in offsets)
    # spread: no tenth of the interval holds more than twice its share
    buckets = [sum(1 for o in offsets if k * 6 <= o < (k + 1) * 6) for k in range(10)]
    assert max(buckets) < 200


@given(
    due=st.floats(min_value=0, max_value=1e7),
    interval=st.sampled_from([0.02, 0.05, 0.3, 1.0, 10.0, 60.0, 86400.0]),
)
def test_a_test_starts_on_the_grid_at_most_one_step_early(due: float, interval: float) -> None:
    step, rounding = min(TICK, interval / 10), 1e-6
    start = start_at(due, interval)
    assert due - step - rounding < start <= due + rounding  # never late, at most a step early
    assert start_at(start, interval) == start  # on the grid: every check shares its points
    # a check's next test keeps the interval (to rounding) when the step divides it
    assert abs(start_at(due + interval, interval) - start - interval) < rounding


async def test_checks_due_within_one_tick_start_together() -> None:
    starts: dict[str, float] = {}

    async def handler(service: str, check: CheckBase, outcome: TestOutcome, t: Transcript) -> None:
        starts.setdefault(check.name, outcome.started_mono)

    scheduler = Scheduler(handler, concurrency=10)
    # 40 checks at 1 s: their phases are spread over the second, ~4 per 0.1 s tick
    scheduler.set_checks(
        [("s", FakeCheck(name=f"c{i}", interval=1.0, timeout=0.5)) for i in range(40)]
    )
    try:
        await wait_for(lambda: len(starts) == 40, timeout=10, what="a test of every check")
    finally:
        await scheduler.stop(grace=1.0)
    # wake-ups: starts more than 5 ms apart. Spread at random, 40 phases over 1 s make
    # ~33 of them; on the grid the tests of one tick start in one pass of the loop
    times = sorted(starts.values())
    wakeups = 1 + sum(b - a > 0.005 for a, b in itertools.pairwise(times))
    assert wakeups <= 15, times


async def test_a_hung_check_never_delays_another() -> None:
    seen: dict[str, list[TestOutcome]] = {"hung": [], "fine": []}

    async def handler(service: str, check: CheckBase, outcome: TestOutcome, t: Transcript) -> None:
        seen[check.name].append(outcome)

    lags: list[float] = []
    scheduler = Scheduler(handler, concurrency=10, on_lag=lags.append)
    scheduler.set_checks(
        [
            ("s", FakeCheck(name="hung", hang=True, interval=0.2, timeout=0.15)),
            ("s", FakeCheck(name="fine", interval=0.05, timeout=0.04)),
        ]
    )
    await wait_for(lambda: len(seen["fine"]) >= 12, timeout=10, what="12 tests of the fine check")
    await scheduler.stop(grace=1.0)
    assert all(o.ok for o in seen["fine"])
    assert seen["hung"]
    assert {o.result.reason for o in seen["hung"]} == {"timeout after 0.15s"}
    starts = [o.started_at for o in seen["fine"]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) < 0.05 + 0.1  # the hung check's 0.15 s timeouts never held the fine one up
    assert lags and min(lags) >= 0


async def test_an_error_in_outcome_handling_does_not_stop_the_check() -> None:
    calls = 0

    async def handler(service: str, check: CheckBase, outcome: TestOutcome, t: Transcript) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")

    scheduler = Scheduler(handler, concurrency=1)
    scheduler.set_checks([("s", FakeCheck(name="c", interval=0.02, timeout=0.01))])
    await wait_for(lambda: calls >= 3, timeout=10, what="three tests")
    assert scheduler.jobs[("s", "c")].errors == 1
    await scheduler.stop(grace=1.0)


async def test_stop_lets_a_test_in_flight_finish_within_its_timeout() -> None:
    done: list[TestOutcome] = []

    async def handler(service: str, check: CheckBase, outcome: TestOutcome, t: Transcript) -> None:
        done.append(outcome)

    scheduler = Scheduler(handler, concurrency=1)
    scheduler.set_checks([("s", FakeCheck(name="h", hang=True, interval=0.5, timeout=0.2))])
    await wait_for(lambda: scheduler.jobs[("s", "h")].testing, timeout=10, what="a test in flight")
    await scheduler.stop(grace=2.0)
    assert [o.result.reason for o in done] == ["timeout after 0.2s"]


async def test_update_touches_only_the_checks_it_names() -> None:
    async def handler(service: str, check: CheckBase, outcome: TestOutcome, t: Transcript) -> None:
        pass

    scheduler = Scheduler(handler, concurrency=10)
    a, b, c = (FakeCheck(name=n, interval=10.0, timeout=1.0) for n in "abc")
    assert scheduler.set_checks([("s", a), ("s", b)]) == ([("s", "a"), ("s", "b")], [])
    jobs = dict(scheduler.jobs)
    slower = FakeCheck(name="b", interval=20.0, timeout=1.0)
    scheduler.update([("s", slower), ("s", c)], [("s", "a")])
    try:
        assert sorted(scheduler.jobs) == [("s", "b"), ("s", "c")]
        assert scheduler.jobs[("s", "b")].check == slower
        assert scheduler.jobs[("s", "b")] is not jobs[("s", "b")]  # restarted
        assert jobs[("s", "a")].waiting is None and jobs[("s", "a")].task is None  # stopped
        kept = scheduler.jobs[("s", "c")]
        scheduler.update([("s", FakeCheck(name="b", interval=30.0, timeout=1.0))], [])
        assert scheduler.jobs[("s", "c")] is kept  # not named: its schedule goes on
        assert kept.waiting is not None
    finally:
        await scheduler.stop(grace=1.0)


async def test_a_check_replaced_or_removed_while_waiting_never_tests_twice() -> None:
    """Waiting jobs share their grid point's list: a replaced job left in it is skipped."""
    seen: list[tuple[str, float]] = []

    async def handler(service: str, check: CheckBase, outcome: TestOutcome, t: Transcript) -> None:
        seen.append((check.name, outcome.started_mono))

    scheduler = Scheduler(handler, concurrency=10)
    scheduler.set_checks(
        [("s", FakeCheck(name=n, interval=0.4, timeout=0.1)) for n in ("c", "gone")]
    )
    # the same name and interval: the same phase, so the same grid point as the job it replaces
    scheduler.set_checks([("s", FakeCheck(name="c", interval=0.4, timeout=0.2))])
    try:
        await wait_for(lambda: len(seen) >= 3, timeout=10, what="three tests")
    finally:
        await scheduler.stop(grace=1.0)
    assert {name for name, _ in seen} == {"c"}
    starts = [at for _, at in seen]
    assert all(later - earlier > 0.005 for earlier, later in itertools.pairwise(starts))
