"""The daemon's timeline: wall time as the session's anchor plus monotonic elapsed time.

A test's time is ``anchor_wall + (monotonic - anchor_mono)``, so elapsed time
inside one run of the daemon never depends on the system clock: when NTP or an
operator steps it, a failure run does not grow by the step (nor end before it
starts). :meth:`SessionClock.check` compares the timeline with the system clock
once per tick; a difference above :data:`STEP_TOLERANCE` is a step, and the
timeline is re-anchored to the system clock from then on. The caller moves
what spans the step (open failure runs, coverage segments), see
docs/sla-rules.md, "Clock steps".
"""

from __future__ import annotations

import time
from collections.abc import Callable

STEP_TOLERANCE = 1.0  # seconds; NTP slews smaller differences without stepping


class SessionClock:
    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._anchor_wall = wall()
        self._anchor_mono = monotonic()

    def at(self, mono: float) -> float:
        """The wall time of monotonic instant ``mono`` on the current timeline."""
        return self._anchor_wall + (mono - self._anchor_mono)

    def now(self) -> float:
        return self.at(self._monotonic())

    def check(self) -> float | None:
        """The size of a step of the system clock since the last check (re-anchored), or None."""
        mono, wall = self._monotonic(), self._wall()
        step = wall - self.at(mono)
        if abs(step) <= STEP_TOLERANCE:
            return None
        self._anchor_wall, self._anchor_mono = wall, mono
        return step
