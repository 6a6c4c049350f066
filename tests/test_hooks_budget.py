"""Budget and objective events: worked examples on the pure core, then the persisted shell."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from probed.core import accounting
from probed.core.accounting import OutageSpan, Policy, ServiceFigures
from probed.core.events import Event
from probed.hooks.budget import BudgetWatch, budget_news
from probed.store.base import OutboxEntry, Store, open_store

NOVEMBER = accounting.month_period("2026-11", "UTC")  # 30 days: 2 592 000 s
BUDGET = 2592.0  # 99.9 % of November: 43.2 minutes


def figures(
    downtime: float,
    *,
    now: float | None = None,
    first_test: float | None = None,
    start: float = NOVEMBER[0] + 3600,
) -> ServiceFigures:
    outages = [OutageSpan("home", start, start + downtime, 3)] if downtime else []
    return accounting.service_figures(
        service="web",
        policy=Policy(objective=0.999),
        month="2026-11",
        tz="UTC",
        outages=outages,
        exclusions=[],
        coverage=[NOVEMBER],
        first_test_at=NOVEMBER[0] if first_test is None else first_test,
        now=NOVEMBER[1] - 1 if now is None else now,
    )


def told(
    downtime: float, announced: set[str] | None = None, **kw: float
) -> list[tuple[str, object]]:
    news = budget_news(figures(downtime, **kw), announced or set())
    return [(e.kind, e.extra.get("threshold_percent")) for e in news.events]


def test_half_the_budget_is_told_once_as_50_percent() -> None:
    news = budget_news(figures(BUDGET / 2), set())
    [event] = news.events
    assert news.announce == {"budget_50"}
    assert event.kind == "budget_threshold"
    assert event.severity == "P3"
    assert (
        event.summary == "web has used 50% of its error budget for 2026-11 (21.6 of 43.2 minutes)"
    )
    assert event.extra["month_end"] == "2026-12-01T00:00:00Z"
    assert event.extra["budget_used_percent"] == 50.0
    assert budget_news(figures(BUDGET / 2), {"budget_50"}).events == ()


def test_below_half_the_budget_tells_nothing() -> None:
    assert told(BUDGET * 0.49) == []
    assert told(0) == []


def test_a_jump_past_two_thresholds_tells_only_the_highest() -> None:
    news = budget_news(figures(BUDGET * 0.9), set())
    assert news.announce == {"budget_50", "budget_80"}
    assert [(e.kind, e.extra["threshold_percent"]) for e in news.events] == [
        ("budget_threshold", 80)
    ]


def test_next_threshold_after_an_earlier_one() -> None:
    assert told(BUDGET * 0.85, {"budget_50"}) == [("budget_threshold", 80)]


def test_budget_used_up_is_p2_and_the_objective_is_missed_once_exceeded() -> None:
    assert told(BUDGET, {"budget_50", "budget_80"}) == [("budget_threshold", 100)]
    news = budget_news(figures(BUDGET + 60), {"budget_50", "budget_80", "budget_100"})
    [missed] = news.events
    assert news.announce == {"objective_missed"}
    assert missed.kind == "objective_missed"
    assert missed.severity == "P2"
    assert missed.summary == (
        "web cannot meet its 99.9% objective for 2026-11: 44.2 minutes of downtime"
    )


def test_early_in_the_month_a_short_outage_is_not_a_missed_objective() -> None:
    # one day in, 10 minutes down: 99.3 % so far, but the month can still make 99.9 %
    day_one = NOVEMBER[0] + 86400
    f = figures(600, now=day_one)
    assert not f.met
    assert told(600, now=day_one) == []


def test_a_partial_month_can_miss_before_the_budget_is_used() -> None:
    # monitoring began on the 29th: a two-day period, where 30 minutes down misses 99.9 %
    late = NOVEMBER[1] - 2 * 86400
    f = figures(1800, first_test=late, start=late + 600, now=NOVEMBER[1] - 3600)
    news = budget_news(f, set())
    assert news.announce == {"budget_50", "objective_missed"}
    assert [e.kind for e in news.events] == ["budget_threshold", "objective_missed"]


def test_nothing_tested_yet_tells_nothing() -> None:
    f = figures(0, now=NOVEMBER[0] - 10)
    assert f.period_seconds == 0
    assert budget_news(f, set()).events == ()


class Router:
    """The dispatcher's routing, reduced to a list of what was queued."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def route(self, event: Event) -> OutboxEntry | None:
        self.events.append(event)
        return OutboxEntry(("hook",), "{}")

    def wake(self, hooks: Iterable[str]) -> None:
        pass


async def observe(store: Store, router: Router, *spent: float) -> None:
    watch = BudgetWatch(store, router)
    for used in spent:
        await watch.observe([figures(BUDGET * used)])


async def test_watch_persists_announcements_so_a_restart_repeats_none(tmp_path: Path) -> None:
    router = Router()
    store = await open_store(tmp_path / "p.db")
    await observe(store, router, 0.6)
    await observe(store, router, 0.6)
    await store.close()
    store = await open_store(tmp_path / "p.db")  # a restarted daemon
    await observe(store, router, 0.6, 0.81)
    assert await store.undelivered() == {"hook": 2}  # queued with the announcement
    await store.close()
    assert [e.extra["threshold_percent"] for e in router.events] == [50, 80]


async def test_watch_tells_each_month_afresh(tmp_path: Path) -> None:
    router = Router()
    store = await open_store(tmp_path / "p.db")
    await store.announce("web", "2026-10", ["budget_50"], 0.0, [])
    await observe(store, router, 0.6)
    await store.close()
    assert [(e.extra["month"], e.extra["threshold_percent"]) for e in router.events] == [
        ("2026-11", 50)
    ]
