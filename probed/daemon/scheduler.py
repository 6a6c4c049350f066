"""Run every check at its interval, on the monotonic clock.

A waiting check is one entry in the list of the grid point its next test
starts at (:func:`start_at`), and the loop holds one timer per grid point, not
one per check; a task exists only while its test runs (100 000 checks are
mostly idle: each costs a list entry, not a timer, a task and a coroutine). Its tests stay in order (the failure-run rules need
that), and a slow or hung target cannot delay any other check:
every test is cut at its timeout by :func:`probed.daemon.runner.run_test`, and a
global semaphore caps how many tests run at once. A failed test during
which the daemon's own event loop was stalled for a large part of its
timeout is not a verdict: it is discarded (docs/sla-rules.md). First runs are spread over
the interval by a hash of the check's identity, so 10 000 checks never fire
together and restarts keep the same phase; tests due within 0.1 s of each
other start together (:func:`start_at`).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from probed.daemon.runner import TestOutcome, run_test
from probed.daemon.stalls import StallMeter
from probed.logs import log
from probes import REGISTRY, share, unshare
from probes.base import CheckBase, Transcript

CheckKey = tuple[str, str]  # (service, check)
OutcomeHandler = Callable[[str, CheckBase, TestOutcome, Transcript], Awaitable[None]]
DiscardHandler = Callable[[str, CheckBase, TestOutcome, float], Awaitable[None]]
DISCARD_SHARE = 0.5  # a failed test stalled for this share of its timeout is discarded
TICK = 0.1  # seconds: tests start on this grid (see start_at)


def phase(key: CheckKey, interval: float) -> float:
    """Deterministic offset in [0, interval) for a check's first run."""
    digest = zlib.crc32(f"{key[0]}/{key[1]}".encode())
    return (digest / 2**32) * interval


def start_at(due: float, interval: float) -> float:
    """When a test due at ``due`` (monotonic) starts: the grid point at or before it.

    Tests due within one tick of each other start together, so the daemon wakes
    once for all of them instead of once for each: a test on a cold process
    costs about twice the CPU of one among others (bench/vs_blackbox.py). A test
    starts at most one tick early, and the tick is at most a tenth of the
    interval, so the cadence of a check barely moves.
    """
    step = min(TICK, interval / 10)
    return math.floor(due / step + 1e-6) * step  # the same float for every due of one tick


@dataclass(slots=True)
class _Job:
    service: str
    check: CheckBase
    task: asyncio.Task[None] | None = None  # the test under way (or waiting for a slot)
    waiting: list[_Job] | None = None  # the grid point's jobs it is in, while none is under way
    due: float = 0.0
    testing: bool = False
    tests: int = 0
    errors: int = 0


class Scheduler:
    def __init__(
        self,
        handler: OutcomeHandler,
        *,
        concurrency: int,
        on_lag: Callable[[float], None] = lambda lag: None,
        clock: Callable[[], float] = time.monotonic,
        stalls: StallMeter | None = None,
        on_discard: DiscardHandler | None = None,
    ) -> None:
        self._handler = handler
        self._stalls = stalls
        self._on_discard = on_discard
        self._on_lag = on_lag
        self._clock = clock
        self._sem = asyncio.Semaphore(concurrency)
        self._jobs: dict[CheckKey, _Job] = {}
        # the grid points tests start at (monotonic): the jobs due there, and the one timer
        self._points: dict[float, tuple[list[_Job], asyncio.TimerHandle]] = {}
        self._context = contextvars.copy_context()  # one for every timer, not one each
        self._stopping = False
        self._sharing = False  # holds probes' shared resources (one HTTP session) while running
        self.last_tick = clock()

    @property
    def running(self) -> bool:
        return not self._stopping and any(
            j.waiting is not None or (j.task is not None and not j.task.done())
            for j in self._jobs.values()
        )

    @property
    def jobs(self) -> dict[CheckKey, _Job]:
        return self._jobs

    def set_checks(
        self, checks: Iterable[tuple[str, CheckBase]]
    ) -> tuple[list[CheckKey], list[CheckKey]]:
        """Start new checks, restart changed ones, stop removed ones. Returns (added, removed)."""
        wanted = {(service, c.name): (service, c) for service, c in checks}
        removed = [k for k in self._jobs if k not in wanted]
        added = [k for k in wanted if k not in self._jobs]
        changed = [
            (service, check)
            for key, (service, check) in wanted.items()
            if key not in self._jobs or self._jobs[key].check != check  # else: keep its schedule
        ]
        self.update(changed, removed)
        return added, removed

    def update(self, changed: Iterable[tuple[str, CheckBase]], removed: Iterable[CheckKey]) -> None:
        """Start or restart the ``changed`` checks, stop the ``removed`` ones, leave the rest
        alone (a worker process is told only what changed: ``workers: N``)."""
        if not self._sharing and not self._stopping:
            share()
            self._sharing = True
        for key in removed:
            job = self._jobs.pop(key, None)
            if job is not None:
                self._cancel(job)
        for service, check in changed:
            key = (service, check.name)
            old = self._jobs.get(key)
            if old is not None:
                self._cancel(old)
            job = _Job(service, check, due=self._clock() + phase(key, check.interval))
            self._arm(job)
            self._jobs[key] = job

    @staticmethod
    def _cancel(job: _Job) -> None:
        job.waiting = None  # left in its point's list, skipped when the point fires
        if job.task is not None:
            job.task.cancel()

    def _arm(self, job: _Job) -> None:
        """Put the job on the grid point its next test starts at; the first job of a point
        sets the point's timer (the clock may be injected: a delay, not a date)."""
        at = start_at(job.due, job.check.interval)
        point = self._points.get(at)
        if point is None:
            delay = max(0.0, at - self._clock())
            loop = asyncio.get_running_loop()
            timer = loop.call_later(delay, self._fire, at, context=self._context)
            point = self._points[at] = ([], timer)
        point[0].append(job)
        job.waiting = point[0]

    def _fire(self, at: float) -> None:
        """Start the tests of every job still waiting on the grid point ``at``."""
        jobs, _ = self._points.pop(at)
        for job in jobs:
            if job.waiting is jobs and not self._stopping:  # else cancelled, or in twice
                job.waiting = None
                name = f"check {job.service}/{job.check.name}"
                job.task = asyncio.create_task(self._test(job), name=name)

    async def _test(self, job: _Job) -> None:
        """One test of the job, then its next one armed (unless it was stopped or replaced)."""
        check, key = job.check, (job.service, job.check.name)
        probe = REGISTRY[check.type]
        due = job.due
        async with self._sem:
            if self._stopping:
                return
            job.testing = True
            self._on_lag(max(0.0, self._clock() - due))
            transcript = Transcript(check.secrets())
            try:
                started = self._stalls.now() if self._stalls else 0.0
                outcome = await run_test(probe, check, transcript, self._stalls)
                stalled = self._stalls.stalled(started) if self._stalls else 0.0
                stall_failed = not outcome.ok and outcome.error is None  # a bug is logged
                if stall_failed and stalled >= DISCARD_SHARE * check.timeout:
                    if self._on_discard is not None:
                        await self._on_discard(job.service, check, outcome, stalled)
                else:
                    await self._handler(job.service, check, outcome, transcript)
            except Exception as exc:  # e.g. the store is full: keep testing, say so loudly
                job.errors += 1
                log.error("scheduler.outcome_failed", service=key[0], check=key[1], error=repr(exc))
            finally:
                job.testing = False
        job.tests += 1
        self.last_tick = self._clock()
        due += check.interval
        behind = self._clock() - due
        if behind > 0:  # missed whole slots (overload): skip them, keep the phase
            due += math.ceil(behind / check.interval) * check.interval
        job.due, job.task = due, None
        if not self._stopping and self._jobs.get(key) is job:
            self._arm(job)

    async def stop(self, grace: float) -> None:
        """Let tests in flight finish (they end at their timeout), cancel idle loops."""
        self._stopping = True
        for _, timer in self._points.values():
            timer.cancel()
        self._points.clear()
        for job in self._jobs.values():
            job.waiting = None
            if not job.testing and job.task is not None:
                job.task.cancel()
        tasks = [j.task for j in self._jobs.values() if j.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._sharing:  # after the last test
            self._sharing = False
            await unshare()
