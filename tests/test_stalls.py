"""Loop stalls: measured by a heartbeat; a test's timeout counts only its own work;
a failed test overlapping a long stall is discarded, never recorded as a failure."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest

from probed.daemon.runner import TestOutcome, run_test
from probed.daemon.scheduler import Scheduler
from probed.daemon.stalls import BEAT, IDLE_BEAT, StallMeter
from probes import REGISTRY
from probes.base import CheckBase, ProbeFailure, ProbeResult, ProbeType, Transcript
from tests.daemon_helpers import wait_for


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_late_beat_is_a_stall_from_its_due_time() -> None:
    clock = Clock()
    meter = StallMeter(clock)
    clock.t += BEAT + 0.001  # on time, within jitter
    assert meter.beat() == 0.0
    clock.t += BEAT + 2.0  # blocked for 2 s
    assert meter.beat() == pytest.approx(2.0)
    assert meter.stalled(clock.t - 10) == pytest.approx(2.0)
    assert meter.stalled(clock.t - 1.0) == pytest.approx(1.0)  # the part inside the window
    assert meter.stalled(clock.t - 0.5, clock.t - 0.25) == pytest.approx(0.25)
    assert meter.stalled(clock.t) == 0.0


def test_a_stall_still_going_on_counts_before_its_beat_runs() -> None:
    clock = Clock()
    meter = StallMeter(clock)
    start = clock.t
    clock.t += 1.5  # no beat yet: the loop is blocked right now
    assert meter.stalled(start) == pytest.approx(1.5 - BEAT)
    clock.t = start + BEAT / 2
    assert meter.stalled(start) == 0.0


def test_every_beat_reports_its_lateness() -> None:
    clock, seen = Clock(), []
    meter = StallMeter(clock, on_beat=seen.append)
    clock.t += BEAT + 0.005
    meter.beat()
    assert seen == [pytest.approx(0.005)]


async def beating(meter: StallMeter, stalls: list[float] | None = None) -> asyncio.Task[None]:
    """The heartbeat running, its first timer armed (nothing awaited after this: no beat
    can run while a test below moves its clock by hand)."""
    task = asyncio.create_task(meter.run((stalls if stalls is not None else []).append))
    await asyncio.sleep(0)
    return task


async def test_a_test_starting_on_an_idle_meter_gets_the_fast_beats_precision() -> None:
    clock = Clock()
    meter = StallMeter(clock)
    heartbeat = await beating(meter)
    try:
        clock.t += IDLE_BEAT / 2  # idle, the slow beat not due yet: the loop ran on time
        start = clock.t
        meter.watch()  # a test starts: the beat is due BEAT from now, not from the idle one
        clock.t += 0.5  # the loop is blocked during the test
        assert meter.stalled(start) == pytest.approx(0.5 - BEAT)
    finally:
        meter.release()
        heartbeat.cancel()


async def test_a_stall_while_idle_is_measured_when_a_test_starts_and_not_charged_to_it() -> None:
    clock, seen, stalls = Clock(), [], []
    meter = StallMeter(clock, on_beat=seen.append)
    heartbeat = await beating(meter, stalls)
    try:
        clock.t += IDLE_BEAT + 1.0  # blocked while no test ran: the slow beat is 1 s late
        meter.watch()  # the loop runs again and a test starts: that beat runs now
        assert stalls == [pytest.approx(1.0)] and seen == [pytest.approx(1.0)]
        assert meter.stalled(clock.t) == 0.0
        assert meter.stalled(clock.t - 2.0) == pytest.approx(1.0)
    finally:
        meter.release()
        heartbeat.cancel()


async def test_a_stall_is_still_seen_just_after_the_last_test_ends() -> None:
    clock = Clock()
    meter = StallMeter(clock)
    heartbeat = await beating(meter)
    try:
        start = clock.t
        meter.watch()
        clock.t += 1.0  # blocked; the test ends when the loop runs again, before any beat
        meter.release()  # the scheduler asks right after (is it a failure to discard?)
        assert meter.stalled(start) == pytest.approx(1.0 - BEAT)
    finally:
        heartbeat.cancel()


async def test_the_beat_is_fast_only_while_tests_are_in_flight() -> None:
    beats: list[float] = []
    meter = StallMeter(on_beat=beats.append)
    heartbeat = await beating(meter)
    try:
        meter.watch()
        meter.watch()  # two tests in flight
        meter.release()
        await wait_for(lambda: len(beats) >= 5, timeout=10, what="fast beats")
        meter.release()  # none in flight
        await asyncio.sleep(0.05)  # the fast beat due before the release may still run
        idle_from, counted = time.monotonic(), len(beats)
        await asyncio.sleep(3 * IDLE_BEAT)
        idle = time.monotonic() - idle_from
        assert len(beats) - counted <= idle / IDLE_BEAT + 1  # never more, however loaded
    finally:
        heartbeat.cancel()


class SlowCheck(CheckBase):
    type: Literal["slow"] = "slow"
    fail: bool = False


def block_loop_soon(seconds: float) -> None:
    """A synchronous call on the loop right after the probe starts (a GC pause, a slow write)."""
    asyncio.get_running_loop().call_soon(time.sleep, seconds)


async def answers_after_a_blocked_loop(check: SlowCheck, transcript: Transcript) -> ProbeResult:
    block_loop_soon(0.5)
    await asyncio.sleep(0.3)  # the answer arrives during the stall, late by wall time only
    if check.fail:
        raise ProbeFailure("connection reset by peer")
    return ProbeResult.passed()


SLOW = ProbeType("slow", SlowCheck, answers_after_a_blocked_loop)


async def with_heartbeat(meter: StallMeter) -> asyncio.Task[None]:
    task = asyncio.create_task(meter.run(lambda s: None))
    await asyncio.sleep(2 * BEAT)
    return task


async def test_without_stall_credit_a_blocked_loop_makes_a_timeout() -> None:
    outcome = await run_test(SLOW, SlowCheck(name="s", timeout=0.2))
    assert outcome.result.reason == "timeout after 0.2s"


async def test_the_timeout_counts_only_the_tests_own_work() -> None:
    meter = StallMeter()
    heartbeat = await with_heartbeat(meter)
    try:
        outcome = await run_test(SLOW, SlowCheck(name="s", timeout=0.2), stalls=meter)
    finally:
        heartbeat.cancel()
    assert outcome.ok, outcome.result.reason


async def test_a_server_that_never_answers_still_times_out_after_a_stall() -> None:
    async def hangs(check: SlowCheck, transcript: Transcript) -> ProbeResult:
        block_loop_soon(0.3)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    meter = StallMeter()
    heartbeat = await with_heartbeat(meter)
    try:
        outcome = await run_test(
            ProbeType("slow", SlowCheck, hangs), SlowCheck(name="s", timeout=0.2), stalls=meter
        )
    finally:
        heartbeat.cancel()
    assert outcome.result.reason == "timeout after 0.2s"
    # its own 0.2 s of work came after the stall (measured from the beat's due time)
    assert outcome.duration >= 0.2 + 0.3 - BEAT


@pytest.fixture
def slow_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(REGISTRY, "slow", SLOW)


@pytest.mark.usefixtures("slow_type")
async def test_a_failure_during_a_long_stall_is_discarded_not_recorded() -> None:
    recorded: list[TestOutcome] = []
    discarded: list[tuple[str, float]] = []

    async def handler(service: str, check: CheckBase, outcome: TestOutcome, t: Transcript) -> None:
        recorded.append(outcome)

    async def discard(service: str, check: CheckBase, outcome: TestOutcome, stalled: float) -> None:
        discarded.append((outcome.result.reason, stalled))

    meter = StallMeter()
    heartbeat = await with_heartbeat(meter)
    scheduler = Scheduler(
        handler,
        concurrency=10,
        stalls=meter,
        on_discard=discard,
    )
    scheduler.set_checks([("s", SlowCheck(name="reset", fail=True, interval=0.3, timeout=0.2))])
    try:
        await wait_for(lambda: len(discarded) >= 2, timeout=10, what="two discarded tests")
    finally:
        await scheduler.stop(grace=1.0)
        heartbeat.cancel()
    assert recorded == []
    assert all(reason == "connection reset by peer" and s >= 0.1 for reason, s in discarded)
