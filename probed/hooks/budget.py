"""Error budget and objective events from the month's figures, each told once.

``budget_news`` is pure: a service's month-to-date figures and what was
already announced for that service and month in, what to announce out.
:class:`BudgetWatch` is the shell: it keeps the announcements in the store
(so a restart repeats none) and queues the events in the same transaction as
the announcement (:meth:`probed.store.base.Store.announce`).

- ``budget_threshold``: downtime reached 50, 80 or 100 % of the month's error
  budget. Only the highest threshold newly reached is told (a jump from 10 to
  90 % is one event, "80 %"), the lower ones count as told.
- ``objective_missed``: the month can no longer meet its objective: even with
  no more downtime this month, its availability at the end of the month would
  stay below the objective. An exclusion added later may change the figures;
  the announcement stands.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Set
from dataclasses import dataclass
from typing import Protocol

from probed.core import accounting
from probed.core.accounting import ServiceFigures
from probed.core.events import Event
from probed.core.times import iso
from probed.logs import log
from probed.store.base import OutboxEntry, Store

THRESHOLDS = (50, 80, 100)  # percent of the month's error budget
MISSED = "objective_missed"
_LOG_NAMES = {"budget_threshold": "budget.threshold_reached", MISSED: "budget.objective_missed"}


@dataclass(frozen=True, slots=True)
class BudgetNews:
    # keys to record as told: budget_50, budget_80, budget_100, objective_missed
    announce: frozenset[str]
    events: tuple[Event, ...]


def budget_used(f: ServiceFigures) -> float:
    """Downtime as a share of the month's error budget (inf when the budget is zero)."""
    if f.error_budget_seconds > 0:
        return f.downtime_seconds / f.error_budget_seconds
    return math.inf if f.downtime_seconds > 0 else 0.0


def certainly_missed(f: ServiceFigures) -> bool:
    """Below the objective even if the rest of the month has no downtime at all."""
    month_end = accounting.month_period(f.month, f.timezone)[1]
    final_period = f.period_seconds + max(0.0, month_end - f.period_end)
    return final_period > 0 and f.downtime_seconds > (1 - f.objective) * final_period


def budget_news(f: ServiceFigures, announced: Set[str]) -> BudgetNews:
    if f.period_seconds <= 0:
        return BudgetNews(frozenset(), ())
    used = budget_used(f)
    reached = [t for t in THRESHOLDS if used * 100 >= t]
    new = [t for t in reached if f"budget_{t}" not in announced]
    keys = {f"budget_{t}" for t in new}
    events = [_threshold_event(f, max(new), used)] if new else []
    if MISSED not in announced and certainly_missed(f):
        keys.add(MISSED)
        events.append(_missed_event(f))
    return BudgetNews(frozenset(keys), tuple(events))


def _month_extra(f: ServiceFigures) -> dict[str, str | float | int | None]:
    return {
        "month": f.month,
        "month_end": iso(accounting.month_period(f.month, f.timezone)[1]),
        "objective": f.objective,
        "availability": f.availability,
        "error_budget_seconds": f.error_budget_seconds,
        "error_budget_remaining_seconds": f.error_budget_remaining_seconds,
    }


def _threshold_event(f: ServiceFigures, threshold: int, used: float) -> Event:
    minutes = f"{f.downtime_seconds / 60:.1f} of {f.error_budget_seconds / 60:.1f} minutes"
    return Event(
        "budget_threshold",
        f.service,
        f.period_end,
        severity="P2" if threshold >= 100 else "P3",
        downtime_seconds=f.downtime_seconds,
        summary=f"{f.service} has used {threshold}% of its error budget for {f.month} ({minutes})",
        extra={
            **_month_extra(f),
            "threshold_percent": threshold,
            "budget_used_percent": round(used * 100, 2) if math.isfinite(used) else None,
        },
    )


def _missed_event(f: ServiceFigures) -> Event:
    return Event(
        "objective_missed",
        f.service,
        f.period_end,
        severity="P2",
        downtime_seconds=f.downtime_seconds,
        summary=(
            f"{f.service} cannot meet its {f.objective * 100:g}% objective for {f.month}: "
            f"{f.downtime_seconds / 60:.1f} minutes of downtime"
        ),
        extra={**_month_extra(f), "credit_percent": f.credit_percent},
    )


class Router(Protocol):
    """Where events go: the hooks' dispatcher."""

    def route(self, event: Event) -> OutboxEntry | None: ...
    def wake(self, hooks: Iterable[str]) -> None: ...


class BudgetWatch:
    """Called with the month-to-date figures after every refresh of the figures."""

    def __init__(
        self, store: Store, router: Router, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.router = router
        self.clock = clock

    async def observe(self, figures: Iterable[ServiceFigures]) -> None:
        for f in figures:
            news = budget_news(f, await self.store.announced(f.service, f.month))
            if not news.announce:
                continue
            entries = [e for e in map(self.router.route, news.events) if e is not None]
            # told and queued together, or neither (and once, whichever instance is first)
            if not await self.store.announce(
                f.service, f.month, sorted(news.announce), self.clock(), entries
            ):
                continue
            self.router.wake(h for e in entries for h in e.hooks)
            for event in news.events:
                log.warning(
                    _LOG_NAMES[event.kind],
                    service=f.service,
                    month=f.month,
                    threshold_percent=event.extra.get("threshold_percent"),
                    downtime_seconds=round(f.downtime_seconds, 3),
                )
