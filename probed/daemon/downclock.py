"""How long each service was down while this daemon watched: the burn-rate counter.

Prometheus computes burn rates as ``rate()`` of this counter: a restart resets
it (``rate()`` handles resets) and a monitoring gap adds nothing, so neither
invents downtime. Time inside a maintenance window is not counted: planned
work is not billed and must not page once the window ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class DownClock:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic  # wall clock steps add nothing
        self._total: dict[str, float] = {}
        self._since: dict[str, float] = {}  # when each total was last brought up to date
        self._down: set[str] = set()
        self._paused: set[str] = set()

    def _advance(self, service: str, now: float) -> None:
        if service in self._down and service not in self._paused:
            self._total[service] = self._total.get(service, 0.0) + now - self._since[service]
        self._since[service] = now

    def set_down(self, service: str, down: bool) -> None:
        self._advance(service, self.monotonic())
        (self._down.add if down else self._down.discard)(service)

    def set_paused(self, service: str, paused: bool) -> None:
        """Paused while a maintenance window covers now."""
        self._advance(service, self.monotonic())
        (self._paused.add if paused else self._paused.discard)(service)

    def totals(self, services: Iterable[str]) -> dict[str, float]:
        now = self.monotonic()
        for service in services:
            self._advance(service, now)
        return {service: self._total.get(service, 0.0) for service in self._since}
