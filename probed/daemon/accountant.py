"""The month's figures, kept up to date into the snapshot ``/metrics`` serves.

Each refresh reads only what can have changed since the last one, and works
the figures out in a worker thread, never on the event loop:

- a month's outages are kept in a :class:`~probed.core.ledger.MonthLedger`:
  closed outages that ended before its horizon are *settled* (worked out once),
  and each refresh reads only the month's later outages (an indexed query
  that returns a few rows). The horizon moves forward every ``RESETTLE_EVERY``
  seconds with one full read of the month; the ledger is rebuilt at once when
  the config, the clock or the spool (writes that waited while the store was
  unwritable) may have changed settled outages;
- exclusions, the first test and the coverage (one span per check's segment)
  are read each refresh: they are few rows, or, for the coverage, what the
  figures' unmonitored time needs;
- with several locations in the store, other daemons' rows are only known to
  the store: those months are read and recomputed in full at each refresh
  (bounded by the refresh period, in the worker thread).

The figures are exactly what ``probed report`` computes from the store at the
same instant (``tests/test_ledger.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

from probed.config import Config, Service
from probed.core import accounting, quorum
from probed.core.ledger import MonthLedger, single_location_figures
from probed.daemon.downclock import DownClock
from probed.daemon.metrics import ServiceSnapshot, Snapshot
from probed.reports.figures import month_inputs, previous_month, service_exclusions
from probed.store.base import Store

EXCLUSIONS_AHEAD = 3600.0  # seconds of exclusions kept in memory beyond each refresh
SETTLE_AFTER = 600.0  # seconds: a closed outage that ended this long ago is settled
RESETTLE_EVERY = 1800.0  # seconds between full reads of a month (the horizon moves on)


class Accountant:
    """Keeps month-to-date and previous-month figures in a snapshot."""

    def __init__(
        self,
        store: Store,
        service_up: Callable[[], dict[str, bool]],
        down_clock: DownClock,
        clock: Callable[[], float] = time.time,
        pending_writes: Callable[[], int] = lambda: 0,
    ) -> None:
        self.store = store
        self.service_up = service_up
        self.down_clock = down_clock
        self.clock = clock
        self.pending_writes = pending_writes  # records the spool still has to write
        self.settle_after = SETTLE_AFTER
        self.resettle_every = RESETTLE_EVERY
        self._figures: dict[str, ServiceSnapshot] = {}
        self._excluding: dict[str, tuple[accounting.ExclusionSpan, ...]] = {}
        self._ledgers: dict[tuple[str, str], tuple[MonthLedger, float]] = {}  # built at
        self._config: Config | None = None
        self._quorums: dict[str, dict[str, quorum.Quorum]] = {}
        self._spooling = False
        self._lock = asyncio.Lock()  # one refresh at a time: the ledgers are shared
        self.generation = -1
        self.refreshed_at = 0.0
        self.full_reads = 0  # months read in full (tests and benchmarks look)
        # hooks: told the month-to-date figures after each refresh (budget events)
        self.on_refresh: Callable[[list[accounting.ServiceFigures]], Awaitable[None]] | None = None

    def invalidate(self) -> None:
        """Forget every ledger (e.g. after a clock step moved open outages)."""
        self._ledgers.clear()

    async def refresh(self, config: Config) -> None:
        async with self._lock:
            figures = await self._refresh(config)
        if self.on_refresh is not None:
            await self.on_refresh([s.month_to_date for s in figures.values() if s.month_to_date])

    async def _refresh(self, config: Config) -> dict[str, ServiceSnapshot]:
        now = self.clock()
        generation = await self.store.generation()  # before reading: a change meanwhile is seen
        self._adopt(config)
        month = accounting.month_of(now, config.timezone)
        months = (month, previous_month(month))
        where = await self.store.locations()  # once: it is a query
        figures: dict[str, ServiceSnapshot] = {}
        for service in config.services.values():
            mtd, prev = [await self._month(service, m, config.timezone, now, where) for m in months]
            figures[service.name] = ServiceSnapshot(
                objective=service.policy.objective, month_to_date=mtd, previous_month=prev
            )
        wanted = {(s, m) for s in config.services for m in months}
        self._ledgers = {k: v for k, v in self._ledgers.items() if k in wanted}
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
        return figures

    def _adopt(self, config: Config) -> None:
        """A new config (quorums, checks) or writes still waiting: settled outages may
        differ from what the ledgers hold, so they are rebuilt."""
        if config is not self._config:
            self._config = config
            self._quorums = {
                s.name: {c.name: c.quorum for c in s.checks} for s in config.services.values()
            }
            self._ledgers.clear()
        spooling = self.pending_writes() > 0
        if spooling or self._spooling:  # the spool's writes land between two refreshes
            self._ledgers.clear()
        self._spooling = spooling

    async def _month(
        self, service: Service, month: str, tz: str, now: float, where: list[str]
    ) -> accounting.ServiceFigures:
        own = self.store.location
        if not set(where) <= {own}:  # other daemons' rows: the quorum needs all of them
            inputs = await month_inputs(self.store, service, month, tz, now, where)
            self.full_reads += 1
            return await asyncio.to_thread(inputs.figures)
        span = accounting.month_period(month, tz)
        quorums = self._quorums.get(service.name, {})
        ledger = await self._ledger(service.name, month, span, now, quorums)
        if ledger is None:  # an outage of another location: read and compute in full
            inputs = await month_inputs(self.store, service, month, tz, now, where)
            return await asyncio.to_thread(inputs.figures)
        exclusions = await service_exclusions(self.store, service, tz, span)
        first = await self.store.first_test_at(service.name)
        coverage = await self.store.coverage(service.name, span, now, location=own)
        return await asyncio.to_thread(
            lambda: single_location_figures(
                service=service.name,
                policy=service.policy,
                month=month,
                tz=tz,
                ledger=ledger,
                quorums=quorums,
                coverage=accounting.union(coverage),
                exclusions=exclusions,
                first_test_at=first,
                now=now,
            )
        )

    async def _ledger(
        self,
        service: str,
        month: str,
        span: accounting.Interval,
        now: float,
        quorums: Mapping[str, quorum.Quorum],
    ) -> MonthLedger | None:
        """The month's ledger brought up to date: its recent outages read, or, when it is
        missing, stale or invalid, every outage of the month read and settled."""
        key = (service, month)
        held = self._ledgers.get(key)
        if held is not None:
            ledger, built = held
            if built <= now < built + self.resettle_every and now >= ledger.horizon:
                recent = await self.store.outages(service, (max(ledger.horizon, span[0]), span[1]))
                ledger.update(recent, quorums)
                if ledger.valid:
                    return ledger
        outages = await self.store.outages(service, span)
        self.full_reads += 1
        if any(o.location != self.store.location for o in outages):
            self._ledgers.pop(key, None)
            return None
        horizon = min(now - self.settle_after, span[1])
        ledger = await asyncio.to_thread(
            MonthLedger.build, month, self.store.location, outages, quorums, horizon
        )
        self._ledgers[key] = (ledger, now)
        return ledger

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
