"""Event-loop stall detection: a heartbeat that notices when the loop could not run.

While the event loop is blocked (a long synchronous call, a garbage-collector
pause, a slow disk), no test in flight makes progress: its server's answer
waits in a socket buffer. So a test's timeout is measured on the test's own
work (:func:`probed.daemon.runner.run_test` moves its deadline later by the
stall time), and a failed test that overlapped a long stall is not a verdict
(the scheduler discards it). The rules are in docs/sla-rules.md.

A beat every :data:`BEAT` seconds while a test is in flight
(:meth:`StallMeter.watch`); a beat later than :data:`STALL_MIN` past its due time
is a stall from its due time to the moment it ran. Only tests in flight need
that precision: with none, the beat slows to :data:`IDLE_BEAT` (each wake-up of
an idle process costs about as much CPU as a small test's own work), and the
first test to start brings the fast beat back at once: the loop is running when
it starts, so nothing before that moment can be a stall the test overlapped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

BEAT = 0.02  # seconds between heartbeats while a test is in flight
IDLE_BEAT = 0.25  # seconds between heartbeats while none is (the loop-lag metric, the log)
STALL_MIN = 0.02  # a beat later than this is a stall (shorter lateness is ordinary load)
KEEP = 900.0  # seconds of stall history kept: longer than any test (mailflow's 2 min and more)
MAX_STALLS = 10_000  # bound on the history, whatever happens


class StallMeter:
    """Records when the loop was stalled; answers how long a test was stalled."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        on_beat: Callable[[float], None] = lambda late: None,
    ) -> None:
        self._clock = clock
        self._on_beat = on_beat  # told every beat's lateness (the loop-lag histogram)
        self._stalls: deque[tuple[float, float]] = deque(maxlen=MAX_STALLS)
        self._last = clock()  # when the loop last ran a beat (or a test started)
        self._period = BEAT  # the next beat is due at _last + _period
        self._watched = 0  # tests in flight
        self._loop: asyncio.AbstractEventLoop | None = None  # while run() runs
        self._timer: asyncio.TimerHandle | None = None
        self._on_stall: Callable[[float], None] = lambda seconds: None
        self._ended: asyncio.Future[None] | None = None

    def now(self) -> float:
        return self._clock()

    def beat(self) -> float:
        """One heartbeat; returns the stall it ended (0 when the beat was on time)."""
        now = self._clock()
        late = max(0.0, now - self._last - self._period)
        self._last = now
        self._on_beat(late)
        while self._stalls and self._stalls[0][1] < now - KEEP:
            self._stalls.popleft()
        if late <= STALL_MIN:
            return 0.0
        self._stalls.append((now - late, now))
        return late

    def stalled(self, start: float, end: float | None = None) -> float:
        """Seconds of [start, end] (monotonic; end defaults to now) the loop was stalled,
        a stall still going on included (its beat has not run yet)."""
        now = self._clock()
        end = now if end is None else end
        total = 0.0
        due = self._last + self._period
        if now - due > STALL_MIN:  # the beat is overdue: the loop is (or just was) blocked
            total += max(0.0, min(end, now) - max(start, due))
        for first, last in reversed(self._stalls):
            if last <= start:
                break
            total += max(0.0, min(last, end) - max(start, first))
        return total

    def watch(self) -> None:
        """A test starts: beat every :data:`BEAT` until it ends (:meth:`release`)."""
        self._watched += 1
        if self._watched > 1 or self._timer is None or self._period == BEAT:
            return
        self._timer.cancel()
        if self._clock() - self._last - self._period > STALL_MIN:
            self._tick()  # the idle beat is overdue: the loop was blocked until now
        else:  # the loop runs now: the fast beat starts from here
            self._last = self._clock()
            self._arm(BEAT)

    def release(self) -> None:
        """A test has ended; with none left in flight, the beat slows down."""
        self._watched -= 1
        if self._watched == 0 and self._timer is not None and self._period == BEAT:
            if self._clock() - self._last - self._period > STALL_MIN:
                return  # the fast beat is overdue: let it measure the stall
            self._timer.cancel()
            self._period = IDLE_BEAT
            self._arm(IDLE_BEAT, due=self._last + IDLE_BEAT)

    def _arm(self, period: float, due: float | None = None) -> None:
        assert self._loop is not None
        self._period = period
        delay = period if due is None else max(0.0, due - self._clock())
        self._timer = self._loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        try:
            stall = self.beat()
            self._arm(BEAT if self._watched else IDLE_BEAT)
            if stall:
                self._on_stall(stall)
        except Exception as exc:  # a bug: run() ends with it
            if self._ended is not None and not self._ended.done():
                self._ended.set_exception(exc)

    async def run(self, on_stall: Callable[[float], None]) -> None:
        """The heartbeat: beats until cancelled; ``on_stall`` hears each stall's length.

        The beats are timer callbacks, not a task's sleeps (a task step costs more)."""
        self._loop = asyncio.get_running_loop()
        self._on_stall = on_stall
        self._ended = self._loop.create_future()
        self._last = self._clock()
        self._arm(BEAT if self._watched else IDLE_BEAT)
        try:
            await self._ended
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop = self._ended = None
