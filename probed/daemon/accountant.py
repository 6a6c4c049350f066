"""The month's figures, recomputed from the store into the snapshot ``/metrics`` serves."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from probed.config import Config
from probed.core import accounting
from probed.daemon.downclock import DownClock
from probed.daemon.metrics import ServiceSnapshot, Snapshot
from probed.reports.figures import previous_month, service_exclusions, service_month
from probed.store.base import Store

EXCLUSIONS_AHEAD = 3600.0  # seconds of exclusions kept in memory beyond each refresh


class Accountant:
    """Recomputes month-to-date and previous-month figures into a snapshot."""

    def __init__(
        self,
        store: Store,
        service_up: Callable[[], dict[str, bool]],
        down_clock: DownClock,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.service_up = service_up
        self.down_clock = down_clock
        self.clock = clock
        self._figures: dict[str, ServiceSnapshot] = {}
        self._excluding: dict[str, tuple[accounting.ExclusionSpan, ...]] = {}
        self.generation = -1
        self.refreshed_at = 0.0
        # hooks: told the month-to-date figures after each refresh (budget events)
        self.on_refresh: Callable[[list[accounting.ServiceFigures]], Awaitable[None]] | None = None

    async def refresh(self, config: Config) -> None:
        now = self.clock()
        generation = await self.store.generation()  # before reading: a change meanwhile is seen
        month = accounting.month_of(now, config.timezone)
        prev = previous_month(month)
        figures: dict[str, ServiceSnapshot] = {}
        where = await self.store.locations()  # once: it is a query
        for service in config.services.values():
            figures[service.name] = ServiceSnapshot(
                objective=service.policy.objective,
                month_to_date=await service_month(
                    self.store, service, month, config.timezone, now, where
                ),
                previous_month=await service_month(
                    self.store, service, prev, config.timezone, now, where
                ),
            )
        self._figures = figures
        ahead = (now, now + EXCLUSIONS_AHEAD)
        self._excluding = {
            s.name: tuple(
                e for e in await service_exclusions(self.store, s, config.timezone, ahead) if e.live
            )
            for s in config.services.values()
        }
        self.generation = generation
        self.refreshed_at = now
        if self.on_refresh is not None:
            await self.on_refresh([s.month_to_date for s in figures.values() if s.month_to_date])

    async def stale(self) -> bool:
        """True when exclusions changed (e.g. by ``probed exclude`` from another process)."""
        return await self.store.generation() != self.generation

    def active_kinds(self, service: str, at: float) -> frozenset[str]:
        """Kinds of the live exclusions and maintenance windows covering ``at``."""
        spans = self._excluding.get(service, ())
        return frozenset(e.kind for e in spans if e.start <= at < e.end)

    def snapshot(self) -> Snapshot:
        now = self.clock()
        active = {s: self.active_kinds(s, now) for s in self._excluding}
        for service, kinds in active.items():
            self.down_clock.set_paused(service, "maintenance" in kinds)
        return Snapshot(
            services=self._figures,
            service_up=self.service_up(),
            down_seconds=self.down_clock.totals(active),
            exclusion_active=active,
        )
