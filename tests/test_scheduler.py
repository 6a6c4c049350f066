"""The scheduler: cadence, isolation of slow checks, spread, resilience."""

from __future__ import annotations

import asyncio
import itertools
from typing import Literal

import pytest

from probed.daemon.runner import TestOutcome
from probed.daemon.scheduler import Scheduler, phase
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
        assert jobs[("s", "a")].timer is None and jobs[("s", "a")].task is None  # stopped
        kept = scheduler.jobs[("s", "c")]
        scheduler.update([("s", FakeCheck(name="b", interval=30.0, timeout=1.0))], [])
        assert scheduler.jobs[("s", "c")] is kept  # not named: its schedule goes on
        assert kept.timer is not None
    finally:
        await scheduler.stop(grace=1.0)
