"""Several locations writing one store through the daemon's own Recorder, read back as
quorum figures (docs/sla-rules.md, "Several locations"). Each store engine runs it."""

from __future__ import annotations

import json
from collections.abc import Iterable

from probed.config import Service
from probed.core.accounting import Policy, ServiceFigures
from probed.core.events import Event
from probed.core.quorum import Quorum
from probed.daemon.recorder import Recorder
from probed.daemon.runner import TestOutcome
from probed.hooks.quorum import QuorumWatch
from probed.reports.figures import month_report, service_month
from probed.reports.incident import incident_evidence, render_incident
from probed.store.base import OutboxEntry, Store
from probes.base import ProbeResult, Transcript
from tests.store_engines import Engine
from tests.store_histories import StubCheck
from tests.test_accounting import at

MINUTE = 60.0
START = at("2026-10-04 10:00")


class Location:
    """One daemon: its own store connection under its location name, and a Recorder."""

    def __init__(self, engine: Engine, url: str, name: str, check: StubCheck) -> None:
        self.engine, self.url, self.name, self.check = engine, url, name, check
        self.now = START
        self.events: list[Event] = []

    async def open(self) -> Location:
        self.store: Store = await self.engine.open(self.url, location=self.name, clock=self.clock)
        self.recorder = Recorder(self.store, self._emit)
        await self.recorder.start([("mail", self.check)])
        return self

    def clock(self) -> float:
        return self.now

    async def _emit(self, event: Event) -> None:
        self.events.append(event)

    async def test(self, when: float, ok: bool) -> None:
        self.now = when
        result = ProbeResult.passed() if ok else ProbeResult.failed(f"refused at {self.name}")
        outcome = TestOutcome(started_at=when, duration=0.01, result=result)
        await self.recorder.record("mail", self.check, outcome, Transcript())


def minutes(first: int, last: int) -> set[int]:
    return set(range(first, last + 1))


async def run(
    engine: Engine,
    quorum: Quorum,
    failing: dict[str, set[int]],
    stops: dict[str, int] | None = None,
) -> tuple[ServiceFigures, list[Location]]:
    """Every location tests once a minute from 10:00 to 11:00 (or until it stops)."""
    check = StubCheck(name="pop3", interval=MINUTE, timeout=5.0, quorum=quorum)
    service = Service("mail", Policy(objective=0.995), (check,))
    url = engine.url()
    daemons = [await Location(engine, url, name, check).open() for name in sorted(failing)]
    for minute in range(61):
        for d in daemons:
            if minute < (stops or {}).get(d.name, 61):
                await d.test(START + minute * MINUTE, minute not in failing[d.name])
    for d in daemons:
        await d.store.flush()
    now = START + 61 * MINUTE
    figures = await service_month(daemons[0].store, service, "2026-10", "UTC", now)
    assert [figures] == await month_report(daemons[0].store, _config(service), "2026-10", now)
    for d in daemons:
        await d.store.close()
    return figures, daemons


def _config(service: Service) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(services={service.name: service}, timezone="UTC")


def _rows(figures: ServiceFigures) -> Iterable[tuple[str, float]]:
    return [(loc.location, loc.downtime_seconds) for loc in figures.locations]


async def test_two_locations_agreeing_bill_exactly_their_overlap(engine: Engine) -> None:
    # sla-rules.md's worked example: A down 10:00-10:10, B 10:05-10:20, C up.
    figures, _ = await run(engine, 2, {"a": minutes(0, 10), "b": minutes(5, 20), "c": set()})
    assert figures.downtime_seconds == 5 * MINUTE
    [outage] = figures.outages
    assert outage.span.locations == ("a", "b")
    assert [(m.location, m.start, m.end) for m in outage.span.members] == [
        ("a", START, START + 10 * MINUTE),
        ("b", START + 5 * MINUTE, START + 20 * MINUTE),
    ]
    assert list(_rows(figures)) == [("a", 600.0), ("b", 900.0), ("c", 0.0)]
    assert figures.advisories == ()


async def test_one_location_failing_alone_bills_nothing_and_is_advised(engine: Engine) -> None:
    figures, _ = await run(engine, 2, {"a": set(), "b": minutes(30, 40), "c": set()})
    assert (figures.downtime_seconds, figures.outages) == (0.0, ())
    [advisory] = figures.advisories
    assert (advisory.location, advisory.check, advisory.downtime_seconds) == ("b", "pop3", 600.0)
    assert list(_rows(figures)) == [("a", 0.0), ("b", 600.0), ("c", 0.0)]


async def test_a_stopped_location_is_its_own_unmonitored_time_and_majority_holds(
    engine: Engine,
) -> None:
    # c stops at 10:30; a and b fail together 10:40-10:45: 2 of the 2 still testing.
    figures, _ = await run(
        engine,
        "majority",
        {"a": minutes(40, 45), "b": minutes(40, 45), "c": set()},
        stops={"c": 30},
    )
    assert figures.downtime_seconds == 5 * MINUTE
    assert figures.unmonitored_seconds == 0.0  # a and b kept testing
    c = next(loc for loc in figures.locations if loc.location == "c")
    # c's last test at 10:29 covers its interval and timeout, up to 10:30:05
    assert c.unmonitored_seconds == 61 * MINUTE - 30 * MINUTE - 5.0


async def test_one_location_with_quorum_one_reports_as_before(engine: Engine) -> None:
    figures, _ = await run(engine, 1, {"a": minutes(5, 9)})
    assert figures.downtime_seconds == 4 * MINUTE
    assert (figures.locations, figures.advisories) == ((), ())


async def test_incident_of_a_location_outage_shows_the_billed_quorum_outage(engine: Engine) -> None:
    check = StubCheck(name="pop3", interval=MINUTE, timeout=5.0, quorum=2)
    url = engine.url()
    failing = {"a": minutes(0, 10), "b": minutes(5, 20), "c": minutes(40, 45)}
    daemons = [await Location(engine, url, name, check).open() for name in failing]
    for minute in range(61):
        for d in daemons:
            await d.test(START + minute * MINUTE, minute not in failing[d.name])
    store = daemons[0].store
    config = _config(Service("mail", Policy(objective=0.995), (check,)))
    now = START + 61 * MINUTE
    ids = {o.location: o.id for o in await store.outages("mail", (START, now))}
    billed = await incident_evidence(store, config, ids["b"] or 0, now)  # type: ignore[arg-type]
    assert billed is not None and billed.billed
    assert (billed.outage.start, billed.outage.end) == (START + 5 * MINUTE, START + 10 * MINUTE)
    assert billed.downtime_seconds == 5 * MINUTE
    assert {t.location for t in billed.failed_tests} == {"a", "b"}
    assert len(billed.failed_tests) == 11 + 16
    doc = json.loads(render_incident(billed, "json"))
    assert doc["locations"] == ["a", "b"] and doc["billed"] is True
    # text shows the configured zone with its abbreviation, as every text report does
    assert "locations agreeing: a 2026-10-04 10:00:00 UTC" in render_incident(billed, "text")
    alone = await incident_evidence(store, config, ids["c"] or 0, now)  # type: ignore[arg-type]
    assert alone is not None and not alone.billed
    assert alone.downtime_seconds == 0.0
    assert "NOT BILLED: location c's outage never reached the quorum" in render_incident(
        alone, "text"
    )
    for d in daemons:
        await d.store.close()


class KindRouter:
    """Routes each event to a hook named after its kind: the outbox then counts them."""

    def route(self, event: Event) -> OutboxEntry | None:
        return OutboxEntry((event.kind,), json.dumps({"check": event.check, "at": event.at}))

    def wake(self, hooks: Iterable[str]) -> None:
        pass


async def test_a_quorum_outage_is_told_once_by_three_daemons(engine: Engine) -> None:
    check = StubCheck(name="pop3", interval=MINUTE, timeout=5.0, quorum=2)
    url = engine.url()
    failing = {"a": minutes(0, 10), "b": minutes(5, 20), "c": minutes(40, 45)}
    daemons = [await Location(engine, url, name, check).open() for name in failing]
    for d in daemons:
        d.recorder.quorum = QuorumWatch(d.store, KindRouter(), clock=d.clock)
    for minute in range(61):
        for d in daemons:
            await d.test(START + minute * MINUTE, minute not in failing[d.name])
            if minute in (7, 8, 12, 42):  # every daemon also sees the quorum at once
                assert d.recorder.quorum is not None
                await d.recorder.quorum.observe("mail", check, d.now)
    told = await daemons[0].store.undelivered()
    assert told == {"outage_opened": 1, "outage_closed": 1, "service_down": 1, "service_up": 1}
    assert {d.name: [e.kind for e in d.events] for d in daemons} == {
        name: ["location_outage_opened", "location_outage_closed"] for name in "abc"
    }
    assert all(
        e.severity == "P3" and e.extra["location"] == d.name for d in daemons for e in d.events
    )
    assert all(d.recorder.service_up() == {"mail": True} for d in daemons)
    for d in daemons:
        await d.store.close()


async def test_the_live_view_shows_each_location_and_the_quorum_verdict(engine: Engine) -> None:
    check = StubCheck(name="pop3", interval=MINUTE, timeout=5.0, quorum=2)
    url = engine.url()
    failing = {"a": minutes(0, 10), "b": minutes(5, 20), "c": set()}
    daemons = [await Location(engine, url, name, check).open() for name in failing]
    seen = {}
    for minute in range(12):
        for d in daemons:
            if d.name != "c" or minute < 3:  # c stops after its test at 10:02
                await d.test(START + minute * MINUTE, minute not in failing[d.name])
                await d.store.flush()  # a daemon flushes every few seconds
        if minute in (8, 11):
            watch = QuorumWatch(daemons[0].store, KindRouter(), clock=daemons[0].clock)
            seen[minute] = (await watch.states("mail", [check], START + minute * MINUTE))["pop3"]
    states = {m: {loc["location"]: loc["state"] for loc in s["locations"]} for m, s in seen.items()}  # type: ignore[attr-defined]
    assert states == {
        8: {"a": "down", "b": "down", "c": "unmonitored"},
        11: {"a": "up", "b": "down", "c": "unmonitored"},
    }
    assert (seen[8]["verdict"], seen[11]["verdict"], seen[8]["quorum"]) == ("down", "up", 2)
    for d in daemons:
        await d.store.close()
