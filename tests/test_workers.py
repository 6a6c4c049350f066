"""The worker pool (``workers: N``) with real worker processes and a loopback HTTP server,
and the wire format between them."""

from __future__ import annotations

import os
import signal

from probed.daemon.runner import TestOutcome
from probed.daemon.scheduler import CheckKey
from probed.daemon.wire import RemoteProbeBug, decode, encode
from probed.daemon.workers import WorkerPool, shard
from probes import REGISTRY
from probes.base import CheckBase, ProbeResult, Transcript
from tests.daemon_helpers import ScriptedHTTP, wait_for

NAMES = ["c0", "c1", "c4", "c5"]  # two on each of two workers


class Seen:
    """What the pool hands the main process."""

    def __init__(self) -> None:
        self.outcomes: dict[str, list[TestOutcome]] = {}
        self.lags: list[float] = []
        self.beats: list[float] = []
        self.restarts = 0
        self.lost: list[list[CheckKey]] = []

    async def outcome(
        self, service: str, check: CheckBase, outcome: TestOutcome, transcript: Transcript
    ) -> None:
        self.outcomes.setdefault(check.name, []).append(outcome)

    async def discard(
        self, service: str, check: CheckBase, outcome: TestOutcome, stalled: float
    ) -> None:
        raise AssertionError(f"{check.name} discarded: the pool's loop never stalls that long")

    def restart(self) -> None:
        self.restarts += 1

    async def on_lost(self, keys: list[CheckKey]) -> None:
        self.lost.append(keys)

    def count(self, names: list[str]) -> int:
        return min(len(self.outcomes.get(n, [])) for n in names)


def _pool(seen: Seen) -> WorkerPool:
    return WorkerPool(
        2,
        seen.outcome,
        clock=lambda mono: mono + 1000.0,
        concurrency=10,
        on_discard=seen.discard,
        on_lag=seen.lags.append,
        on_beat=seen.beats.append,
        on_restart=seen.restart,
        on_lost=seen.on_lost,
    )


def _checks(port: int) -> list[tuple[str, CheckBase]]:
    http = REGISTRY["http"].config
    return [
        (
            "web",
            http.model_validate(
                {"name": n, "type": "http", "url": f"http://127.0.0.1:{port}/{n}", "interval": 0.1}
                | {"timeout": 0.08}
            ),
        )
        for n in NAMES
    ]


def test_a_check_belongs_to_one_worker_by_its_name_alone() -> None:
    assert [shard(("web", n), 2) for n in NAMES] == [0, 0, 1, 1]  # crc32: the same every run
    assert all(0 <= shard(("s", f"c{i}"), 3) < 3 for i in range(100))
    assert {shard(("s", f"c{i}"), 3) for i in range(100)} == {0, 1, 2}


async def test_each_check_is_tested_in_its_worker_and_its_outcomes_come_in_order() -> None:
    seen = Seen()
    pool = _pool(seen)
    async with ScriptedHTTP() as http:
        added, removed = await pool.set_checks(_checks(http.port))
        assert (sorted(k[1] for k in added), removed) == (sorted(NAMES), [])
        try:
            await pool.ready()
            assert pool.running
            await wait_for(lambda: seen.count(NAMES) >= 5, what="five tests of every check")
        finally:
            await pool.stop(1.0)
    assert not pool.running
    for outcomes in seen.outcomes.values():
        assert all(o.ok for o in outcomes)
        starts = [o.started_mono for o in outcomes]
        assert starts == sorted(starts)
    assert seen.lags and seen.beats  # the workers' lag and heartbeats reach the main histograms
    assert (seen.restarts, seen.lost) == (0, [])


async def test_workers_started_before_their_checks_are_known_get_them_once_they_are() -> None:
    seen = Seen()
    pool = _pool(seen)
    async with ScriptedHTTP() as http:
        pool.start()  # as the daemon does while its store learns the checks
        try:
            await wait_for(lambda: len(pool._processes) == 2, what="both workers spawned")
            assert not pool.running and seen.outcomes == {}
            await pool.set_checks(_checks(http.port))
            await pool.ready()
            await wait_for(lambda: seen.count(NAMES) >= 2, what="two tests of every check")
        finally:
            await pool.stop(1.0)
    assert (seen.restarts, seen.lost) == (0, [])


async def test_a_pool_stopped_before_its_checks_are_known_stops_its_workers() -> None:
    pool = _pool(Seen())
    pool.start()
    await wait_for(lambda: len(pool._processes) == 2, what="both workers spawned")
    await pool.stop(1.0)
    assert all(p.returncode is not None for p in pool._processes.values())


async def test_a_killed_worker_is_not_running_until_it_is_back_and_its_checks_are_lost() -> None:
    seen = Seen()
    pool = _pool(seen)
    async with ScriptedHTTP() as http:
        await pool.set_checks(_checks(http.port))
        try:
            await pool.ready()
            await wait_for(lambda: seen.count(NAMES) >= 2, what="tests")
            victim = pool.pids()[1]
            os.kill(victim, signal.SIGKILL)
            await wait_for(lambda: not pool.running, what="the watchdog condition to drop")
            assert pool.problems() == ["worker 1 is not running"]
            assert pool.pids()[1] == 0
            await wait_for(lambda: pool.running, what="the worker to be back")
            assert pool.pids()[1] != victim
            before = {n: len(seen.outcomes[n]) for n in ("c4", "c5")}
            await wait_for(
                lambda: all(len(seen.outcomes[n]) >= before[n] + 2 for n in before),
                what="the new worker testing its checks",
            )
        finally:
            await pool.stop(1.0)
    assert seen.restarts == 1
    assert [sorted(keys) for keys in seen.lost] == [[("web", "c4"), ("web", "c5")]]


async def test_a_reload_stops_a_removed_check_and_restarts_no_worker() -> None:
    seen = Seen()
    pool = _pool(seen)
    async with ScriptedHTTP() as http:
        checks = _checks(http.port)
        await pool.set_checks(checks)
        try:
            await pool.ready()
            added, removed = await pool.set_checks(checks[1:])  # c0 goes
            assert (added, removed) == ([], [("web", "c0")])
            await wait_for(lambda: seen.count(NAMES[1:]) >= 3, what="tests")
            c0 = len(seen.outcomes.get("c0", []))
            await wait_for(lambda: seen.count(NAMES[1:]) >= 6, what="more tests")
        finally:
            await pool.stop(1.0)
    assert len(seen.outcomes.get("c0", [])) <= c0 + 1  # at most one test was in flight
    assert seen.restarts == 0


def test_the_wire_keeps_what_the_recorder_needs() -> None:
    transcript = Transcript()
    for i in range(30):
        transcript.note(f"line {i}")
    failed = TestOutcome(
        100.0,
        0.5,
        ProbeResult.failed("HTTP 503", cert_not_after=1.9e9, status=503),
        started_mono=42.0,
    )
    outcome, tail, stalled = decode(
        encode("web", "c0", failed, transcript), lambda mono: mono + 1000.0
    )
    assert (outcome.started_mono, outcome.duration, outcome.ok) == (42.0, 0.5, False)
    assert outcome.started_at == 1042.0  # the main process' timeline
    assert outcome.result.reason == "HTTP 503"
    assert dict(outcome.result.details) == {"cert_not_after": 1.9e9}
    assert tail.lines == transcript.lines[-20:]
    assert stalled == 0.0
    _, _, stalled = decode(encode("web", "c0", failed, None, 1.5), float)
    assert stalled == 1.5
    passed = TestOutcome(1.0, 0.1, ProbeResult.passed(), started_mono=3.0)
    outcome, tail, _ = decode(encode("web", "c0", passed, transcript), float)
    assert outcome.ok and tail.lines == []  # a pass carries no transcript
    try:
        raise KeyError("boom")
    except KeyError as exc:
        crashed = TestOutcome(1.0, 0.1, ProbeResult.failed("probe error"), error=exc)
    outcome, _, _ = decode(encode("web", "c0", crashed, None), float)
    assert isinstance(outcome.error, RemoteProbeBug) and outcome.error.kind == "KeyError"
    assert "boom" in str(outcome.error) and "Traceback" in str(outcome.error)
