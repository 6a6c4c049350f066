"""What the status page shows, kept off the request path.

The page handler must never query the database (like ``/metrics``): the
current state comes from the monitor's in-memory outage trackers, the month's
figures from the accountant's snapshot, and the slow parts (the 90-day
strip, recent incidents, upcoming maintenance) from a :class:`History` cache
that :meth:`StatusBoard.run` refreshes in the background: every
``HISTORY_EVERY`` seconds, and within a second of an outage opening or
closing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

from probed.config import Config, Service
from probed.core import accounting
from probed.core.accounting import ExclusionSpan, OutageSpan
from probed.core.maintenance import expand
from probed.logs import log
from probed.reports.timeline import counted_downtime
from probed.web.days import Day, day_strip

if TYPE_CHECKING:
    from probed.daemon.view import DaemonView

HISTORY_DAYS = 90
RECENT_SECONDS = 7 * 86400  # closed incidents stay listed this long
UPCOMING_SECONDS = 14 * 86400  # maintenance announced this far ahead
HISTORY_EVERY = 60.0  # seconds between background refreshes of the history
WATCH_EVERY = 1.0  # seconds between looks at the open outages (in memory)

State: TypeAlias = Literal["up", "P2", "P1", "maintenance", "unknown"]
STATE_LABELS: dict[State, str] = {
    "up": "Operational",
    "P2": "Partial outage (P2)",
    "P1": "Major outage (P1)",
    "maintenance": "In maintenance",
    "unknown": "Not monitored yet",
}


@dataclass(frozen=True, slots=True)
class History:
    """One service's slow-changing part of the page, computed from the store."""

    days: tuple[Day, ...] = ()
    recent: tuple[OutageSpan, ...] = ()  # outages that ended in the last RECENT_SECONDS
    windows: tuple[ExclusionSpan, ...] = ()  # live exclusions from now to UPCOMING_SECONDS


@dataclass(frozen=True, slots=True)
class Incident:
    id: int | None
    check: str
    start: float
    end: float | None  # None: still open
    downtime_seconds: float
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceView:
    name: str
    public: bool
    state: State
    availability: float | None
    objective: float
    budget_seconds: float | None
    budget_left_seconds: float | None
    days: tuple[Day, ...]
    open: tuple[Incident, ...]
    recent: tuple[Incident, ...]
    windows: tuple[ExclusionSpan, ...]
    targets: tuple[tuple[str, str], ...]  # (check, host:port or URL), public services only

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.state]

    @property
    def budget_ratio(self) -> float | None:
        if not self.budget_seconds or self.budget_left_seconds is None:
            return None
        return max(min(self.budget_left_seconds / self.budget_seconds, 1.0), 0.0)


@dataclass(frozen=True, slots=True)
class PageView:
    title: str
    logo_text: str
    refresh: float
    generated_at: float
    timezone: str
    services: tuple[ServiceView, ...]

    @property
    def overall(self) -> State:
        states = {s.state for s in self.services}
        for worst in ("P1", "P2", "maintenance"):
            if worst in states:
                return worst
        return "up"


async def load_history(daemon: DaemonView, service: Service, now: float) -> History:
    """Read one service's last 90 days from the store (background only)."""
    store, tz = daemon.store, daemon.config.timezone
    span = (now - (HISTORY_DAYS + 1) * 86400, now)
    outages = await store.outages(service.name, span)
    soon = (span[0], now + UPCOMING_SECONDS)
    stored = [e for e in await store.exclusions(soon) if e.applies_to(service.name)]
    exclusions = stored + expand(service.maintenance, service=service.name, tz=tz, span=soon)
    live = [x for x in exclusions if x.live]
    days = day_strip(
        tz=tz,
        now=now,
        count=HISTORY_DAYS,
        downtime=counted_downtime(outages, (), span),
        excluded=[x.interval for x in live],
        coverage=await store.coverage(service.name, span, now),
        first_test_at=await store.first_test_at(service.name),
        objective=service.policy.objective,
    )
    recent = [o for o in outages if not o.open and o.end >= now - RECENT_SECONDS]
    windows = sorted((x for x in live if x.end > now), key=lambda x: x.start)
    return History(
        days=tuple(days),
        recent=tuple(sorted(recent, key=lambda o: o.start, reverse=True)),
        windows=tuple(windows),
    )


@dataclass(slots=True)
class StatusBoard:
    """The status page's model: live state plus the cached history."""

    daemon: DaemonView
    clock: Callable[[], float] = time.time
    histories: dict[str, History] = field(default_factory=dict)
    _seen_open: frozenset[int | None] = frozenset()

    async def refresh(self) -> None:
        now = self.clock()
        config = self.daemon.config
        self.histories = {
            name: await load_history(self.daemon, config.services[name], now)
            for name in config.status_page.services
            if name in config.services
        }
        self._seen_open = self._open_ids()

    def _open_ids(self) -> frozenset[int | None]:
        recorder = self.daemon.recorder  # looked at every second: O(outages), not O(checks)
        return frozenset(recorder.outage_id(run) for run in recorder.open_runs())

    async def run(self) -> None:
        """Refresh the history now, every HISTORY_EVERY s, and when an outage opens or closes."""
        last = -HISTORY_EVERY
        while True:
            if time.monotonic() - last >= HISTORY_EVERY or self._open_ids() != self._seen_open:
                try:
                    await self.refresh()
                except Exception as exc:  # a store hiccup must not end the page's refreshes
                    log.error("status_page.refresh_failed", error=str(exc))
                last = time.monotonic()
            await asyncio.sleep(WATCH_EVERY)

    def view(self) -> PageView:
        """The page as of now, from memory only."""
        d, now = self.daemon, self.clock()
        config = d.config
        snapshot = d.accountant.snapshot()
        services = []
        for name in config.status_page.services:
            service = config.services.get(name)
            if service is None:
                continue
            history = self.histories.get(name, History())
            month = snapshot.services.get(name)
            figures = month.month_to_date if month else None
            services.append(_service_view(d, config, service, history, figures, now))
        page = config.status_page
        return PageView(
            title=page.title,
            logo_text=page.logo_text,
            refresh=page.refresh,
            generated_at=now,
            timezone=config.timezone,
            services=tuple(services),
        )


def _state(daemon: DaemonView, service: Service, history: History, now: float) -> State:
    trackers = [daemon.recorder.checks.get((service.name, c.name)) for c in service.checks]
    down = sum(1 for t in trackers if t is not None and t.tracker.in_outage)
    if any(x.start <= now < x.end for x in history.windows):
        return "maintenance"
    if down:
        # the same rule as the hook events: a majority of checks down is global
        return "P1" if down * 2 > len(trackers) else "P2"
    return "up"


def _open_incidents(daemon: DaemonView, service: Service) -> list[Incident]:
    return [
        Incident(run.outage_id, check, run.first_at, None, run.last_at - run.first_at, run.reasons)
        for check, run in daemon.recorder.open_outages(service.name)
    ]


def _recent(history: History, open_ids: set[int | None]) -> list[Incident]:
    return [
        Incident(o.id, o.check, o.start, o.end, o.end - o.start, o.reasons)
        for o in history.recent
        if o.id not in open_ids
    ]


def _service_view(
    daemon: DaemonView,
    config: Config,
    service: Service,
    history: History,
    figures: accounting.ServiceFigures | None,
    now: float,
) -> ServiceView:
    opened = _open_incidents(daemon, service)
    no_tests = figures is None or figures.period_seconds <= 0
    state = _state(daemon, service, history, now)
    return ServiceView(
        name=service.name,
        public=service.public,
        state="unknown" if no_tests and state == "up" else state,
        availability=None if no_tests or figures is None else figures.availability,
        objective=service.policy.objective,
        budget_seconds=None if figures is None else figures.error_budget_seconds,
        budget_left_seconds=None if figures is None else figures.error_budget_remaining_seconds,
        days=history.days,
        open=tuple(opened),
        recent=tuple(_recent(history, {i.id for i in opened})),
        windows=tuple(x for x in history.windows if x.start - now <= UPCOMING_SECONDS),
        targets=_targets(service) if service.public else (),
    )


def _targets(service: Service) -> tuple[tuple[str, str], ...]:
    return tuple((c.name, c.target()) for c in service.checks)


def visible(config: Config, name: str) -> bool:
    return name in config.status_page.services and name in config.services
