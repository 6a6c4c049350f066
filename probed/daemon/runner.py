"""Run one test of one check: the single place where timeouts and errors become verdicts."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from probed.daemon.stalls import StallMeter
from probes.base import (
    EXPECTED_ERRORS,
    CheckBase,
    ProbeResult,
    ProbeType,
    Transcript,
    describe_error,
)

EARLY = 0.001  # a deadline this close is due (timers have ~1 ms resolution under uvloop)


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """One test: when it started (wall clock, UTC epoch), how long it took, what it found."""

    __test__ = False  # not a pytest class

    started_at: float
    duration: float
    result: ProbeResult
    error: Exception | None = None  # set when the probe crashed: a bug in probed, not a verdict
    started_mono: float = 0.0  # the start on the monotonic clock (the daemon's timeline)

    @property
    def ok(self) -> bool:
        return self.result.ok


def _masked(result: ProbeResult, secrets: tuple[str, ...]) -> ProbeResult:
    """A server may echo credentials into an error; the reason is stored and logged."""
    reason = result.reason
    for secret in secrets:
        if secret:
            reason = reason.replace(secret, "********")
    return result if reason == result.reason else replace(result, reason=reason)


def seconds(value: float) -> str:
    """``10.0s``, ``0.5s``, ``0.15s``: one decimal at least, never a misleading rounding."""
    text = f"{value:.1f}"
    return f"{text}s" if float(text) == value else f"{value:g}s"


class _OwnWorkDeadline:
    """Expires ``timeout`` seconds of the test's own work after ``start`` (monotonic).

    When the deadline comes, the time the event loop was stalled since ``start``
    is added and the deadline moves on by it: a blocked daemon never makes a
    test run out of time (docs/sla-rules.md, "Timeouts and daemon stalls").
    """

    def __init__(
        self, scope: asyncio.Timeout, timeout: float, start: float, stalls: StallMeter | None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._scope, self._timeout, self._start, self._stalls = scope, timeout, start, stalls
        self._handle = self._loop.call_later(timeout, self._due)

    def _due(self) -> None:
        credit = self._stalls.stalled(self._start) if self._stalls is not None else 0.0
        remaining = self._start + self._timeout + credit - time.monotonic()
        if remaining > EARLY:
            self._handle = self._loop.call_later(remaining, self._due)
        else:
            self._scope.reschedule(self._loop.time())  # expire now: the task is cancelled

    def cancel(self) -> None:
        self._handle.cancel()


async def run_test(
    probe: ProbeType,
    check: CheckBase,
    transcript: Transcript | None = None,
    stalls: StallMeter | None = None,
) -> TestOutcome:
    """Run ``probe`` on ``check`` once, cut off at ``check.timeout`` of its own work.

    Running out of time is a failed test (``timeout after 10.0s``), and so is
    an expected I/O error (:data:`probes.base.EXPECTED_ERRORS`), with a short
    reason. Any other exception is a bug in probed: the outcome carries it in
    ``error`` so that the daemon logs and counts it instead of billing it
    (docs/sla-rules.md, "A bug in probed"). Cancellation from outside
    (shutdown) propagates. With ``stalls``, time the event loop was stalled
    during the test does not count towards the timeout.
    """
    transcript = transcript if transcript is not None else Transcript(check.secrets())
    error: Exception | None = None
    started_at = time.time()
    t0 = time.monotonic()
    if stalls is not None:
        stalls.watch()  # the heartbeat beats fast while a test is in flight
    try:
        async with asyncio.timeout(None) as deadline:
            guard = _OwnWorkDeadline(deadline, check.timeout, t0, stalls)
            try:
                result = await probe.run(check, transcript)
            finally:
                guard.cancel()
                if stalls is not None:
                    stalls.release()
    except TimeoutError:
        if not deadline.expired():
            result = ProbeResult.failed("connection timed out")
        else:
            result = ProbeResult.failed(f"timeout after {seconds(check.timeout)}")
    except asyncio.CancelledError:
        raise
    except EXPECTED_ERRORS as exc:
        result = ProbeResult.failed(describe_error(exc))
    except Exception as exc:  # a bug in a probe: never a crash of the daemon, never a verdict
        result = ProbeResult.failed(f"probe error (a bug in probed): {describe_error(exc)}")
        error = exc
    duration = time.monotonic() - t0
    if not result.ok:
        result = _masked(result, check.secrets())
        transcript.note(f"FAIL {result.reason}")
    return TestOutcome(
        started_at=started_at, duration=duration, result=result, error=error, started_mono=t0
    )
