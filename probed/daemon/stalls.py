"""Event-loop stall detection: a heartbeat that notices when the loop could not run.

While the event loop is blocked (a long synchronous call, a garbage-collector
pause, a slow disk), no test in flight makes progress: its server's answer
waits in a socket buffer. So a test's timeout is measured on the test's own
work (:func:`probed.daemon.runner.run_test` moves its deadline later by the
stall time), and a failed test that overlapped a long stall is not a verdict
(the scheduler discards it). The rules are in docs/sla-rules.md.

A beat every :data:`BEAT` seconds; a beat later than :data:`STALL_MIN` past its
due time is a stall from its due time to the moment it ran.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

BEAT = 0.02  # seconds between heartbeats
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
        self._last = clock()

    def now(self) -> float:
        return self._clock()

    def beat(self) -> float:
        """One heartbeat; returns the stall it ended (0 when the beat was on time)."""
        now = self._clock()
        late = max(0.0, now - self._last - BEAT)
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
        due = self._last + BEAT
        if now - due > STALL_MIN:  # the beat is overdue: the loop is (or just was) blocked
            total += max(0.0, min(end, now) - max(start, due))
        for first, last in reversed(self._stalls):
            if last <= start:
                break
            total += max(0.0, min(last, end) - max(first, start))
        return total

    async def run(self, on_stall: Callable[[float], None]) -> None:
        """The heartbeat task: beats until cancelled; ``on_stall`` hears each stall's length."""
        while True:
            await asyncio.sleep(BEAT)
            if stall := self.beat():
                on_stall(stall)
