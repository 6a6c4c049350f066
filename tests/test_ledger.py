"""The daemon's incremental figures equal the full computation from the store, at every step.

Histories are driven through the daemon's own Recorder and Accountant over a
real SQLite store (behind the write spool, as in the daemon): tests passing
and failing, exclusions added and revoked, reloads that add and remove checks
and change quorums, months going by, and another location writing into the
same store. After every step the accountant's snapshot (month to date and
previous month) must equal ``probed.reports.figures.service_month`` read from
the store at the same instant: the full computation ``probed report`` does.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probed.config import Config, Service
from probed.core import accounting
from probed.core.accounting import Policy
from probed.core.events import Event
from probed.core.ledger import MonthLedger, single_location_figures
from probed.core.quorum import Quorum
from probed.daemon.accountant import Accountant
from probed.daemon.downclock import DownClock
from probed.daemon.recorder import Recorder
from probed.daemon.runner import TestOutcome
from probed.reports.figures import MonthInputs, previous_month, service_month
from probed.store.base import NewExclusion, Store, open_store
from probed.store.spool import Spool
from probes.base import ProbeResult, Transcript
from tests.store_histories import StubCheck, local

SERVICE = "web"
NAMES = ("a", "b", "c")
START = local("2026-02-28 22:00", "UTC")


def _config(tz: str, checks: tuple[StubCheck, ...]) -> Config:
    policy = Policy(objective=0.999, minimum=0.99)
    return Config(
        path=Path("probed.yaml"),
        timezone=tz,
        storage_path=None,
        listen_host="127.0.0.1",
        listen_port=0,
        api_token=None,
        concurrency=10,
        services={SERVICE: Service(SERVICE, policy, checks)},
        location="here",
    )


def _check(name: str, quorum: Quorum, threshold: int) -> StubCheck:
    return StubCheck(
        name=name, interval=60.0, timeout=5.0, failures_to_down=threshold, quorum=quorum
    )


@dataclass
class Daemon:
    """The daemon's outcome and figures paths over one store, on a simulated clock."""

    path: Path
    tz: str
    now: float = START
    config: Config | None = None
    others: Recorder | None = None
    exclusions: list[int] = field(default_factory=list)

    async def open(self, checks: tuple[StubCheck, ...]) -> None:
        url = f"sqlite://{self.path}"
        self.store: Store = Spool(await open_store(url, location="here", clock=self._now))
        self.recorder = Recorder(self.store, self._emit)
        self.config = _config(self.tz, checks)
        await self.recorder.start([(SERVICE, c) for c in checks])
        self.accountant = Accountant(
            self.store,
            self.recorder.service_up,
            DownClock(),
            clock=self._now,
            pending_writes=lambda: self.store.records if isinstance(self.store, Spool) else 0,
        )
        self.accountant.settle_after = 60.0  # settle often: the property is about settling
        self.accountant.resettle_every = 180.0

    def _now(self) -> float:
        return self.now

    async def _emit(self, event: Event) -> None:
        pass

    async def test(self, name: str, ok: bool, *, elsewhere: bool = False) -> None:
        assert self.config is not None
        service = self.config.services[SERVICE]
        check = service.check(name) or _check(name, 1, 1)
        if not elsewhere and service.check(name) is None:
            return
        recorder = self.recorder
        if elsewhere:
            recorder = await self._elsewhere(check)
        result = ProbeResult.passed() if ok else ProbeResult.failed(f"refused {name}")
        outcome = TestOutcome(started_at=self.now, duration=0.01, result=result)
        await recorder.record(SERVICE, check, outcome, Transcript())

    async def _elsewhere(self, check: StubCheck) -> Recorder:
        if self.others is None:
            store = await open_store(f"sqlite://{self.path}", location="there", clock=self._now)
            self.others = Recorder(store, self._emit)
            await self.others.start([(SERVICE, _check(n, 1, 1)) for n in NAMES])
        return self.others

    async def reload(self, checks: tuple[StubCheck, ...]) -> None:
        await self.recorder.configure([(SERVICE, c) for c in checks])
        self.config = _config(self.tz, checks)

    async def exclude(self, start: float, length: float, every: bool) -> None:
        new = NewExclusion("*" if every else SERVICE, start, start + length, "dos", "x", "ops")
        self.exclusions.append((await self.store.add_exclusion(new, created_at=self.now)).id)

    async def revoke(self, which: int) -> None:
        if self.exclusions:
            xid = self.exclusions.pop(which % len(self.exclusions))
            await self.store.revoke_exclusion(xid, by="lead", reason="wrong", at=self.now)

    async def assert_identical(self) -> None:
        assert self.config is not None
        # the recorder's index of open outages (the status page's look every second)
        every = self.recorder.checks.values()
        runs = [s.tracker.run for s in every if s.tracker.in_outage and s.tracker.run]
        assert sorted(map(repr, self.recorder.open_runs())) == sorted(map(repr, runs))
        await self.accountant.refresh(self.config)
        snap = self.accountant.snapshot().services[SERVICE]
        service = self.config.services[SERVICE]
        month = accounting.month_of(self.now, self.tz)
        for got, m in ((snap.month_to_date, month), (snap.previous_month, previous_month(month))):
            assert got == await service_month(self.store, service, m, self.tz, self.now), m

    async def close(self) -> None:
        await self.store.close()
        if self.others is not None:
            await self.others.store.close()


Step = tuple[str, int, int, bool, float]

steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["test"] * 24 + ["gap", "month", "exclude", "revoke", "reload", "elsewhere"]
        ),
        st.integers(0, len(NAMES) - 1),
        st.integers(0, 5),
        st.booleans(),
        st.floats(0.0, 1.0),
    ),
    min_size=10,
    max_size=60,
)

quorums: st.SearchStrategy[Quorum] = st.sampled_from([1, 1, 2, "majority"])


async def _run(
    tmp: Path,
    tz: str,
    history: list[Step],
    setup: list[tuple[Quorum, int]],
    failing: float,
) -> int:
    daemon = Daemon(tmp / "store.db", tz)
    configured = tuple(_check(n, q, t) for n, (q, t) in zip(NAMES, setup, strict=True))
    await daemon.open(configured[:2])
    try:
        for kind, index, small, flag, x in history:
            await _step(daemon, configured, kind, index, small, flag, x, failing)
            await daemon.assert_identical()
        return daemon.accountant.full_reads
    finally:
        await daemon.close()


async def _step(
    daemon: Daemon,
    configured: tuple[StubCheck, ...],
    kind: str,
    index: int,
    small: int,
    flag: bool,
    x: float,
    failing: float,
) -> None:
    if kind == "test":
        daemon.now += 20.0 + 100.0 * x
        await daemon.test(NAMES[index], ok=x >= failing)
    elif kind == "gap":
        daemon.now += 3600.0 * (1 + small)  # the daemon saw nothing for hours
    elif kind == "month":
        daemon.now += 86400.0 * (1 + 3 * small)  # days: across a month boundary or two
    elif kind == "exclude":
        await daemon.exclude(daemon.now - 3600.0 * small * x, 600.0 * (1 + small), flag)
    elif kind == "revoke":
        await daemon.revoke(index)
    elif kind == "reload":
        kept = tuple(c for i, c in enumerate(configured) if i != index or flag)
        await daemon.reload(kept)
    elif kind == "elsewhere":
        daemon.now += 10.0
        await daemon.test(NAMES[index], ok=flag, elsewhere=True)


@settings(
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    tz=st.sampled_from(["UTC", "America/New_York"]),
    history=steps,
    setup=st.lists(st.tuples(quorums, st.integers(1, 2)), min_size=3, max_size=3),
    failing=st.sampled_from([0.3, 0.8]),
)
def test_incremental_figures_equal_the_full_computation_at_every_step(
    tz: str,
    history: list[Step],
    setup: list[tuple[Quorum, int]],
    failing: float,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), tz, history, setup, failing))


# --- worked examples -----------------------------------------------------------------


def test_a_refresh_reads_only_recent_outages_once_the_month_is_settled(tmp_path: Path) -> None:
    """Hundreds of outages an hour ago are read once; the next refreshes read none of them,
    and the figures still equal the full computation."""

    async def run() -> tuple[int, int]:
        daemon = Daemon(tmp_path / "store.db", "UTC")
        await daemon.open((_check("a", 1, 1),))
        try:
            for n in range(200):  # fail, pass: 100 outages of one test each
                daemon.now += 30.0
                await daemon.test("a", ok=n % 2 == 1)
            daemon.now += 3600.0
            await daemon.assert_identical()
            first = daemon.accountant.full_reads
            for _ in range(5):
                daemon.now += 10.0
                await daemon.test("a", ok=False)  # an open outage grows: a recent one
                await daemon.assert_identical()
            return first, daemon.accountant.full_reads
        finally:
            await daemon.close()

    first, after = asyncio.run(run())
    assert first == 2  # this month and the previous one, read in full once
    assert after == first  # then only the recent outages


def test_an_exclusion_added_later_reworks_the_settled_share_and_still_equals_the_full_sum() -> None:
    t0 = local("2026-03-10 12:00", "UTC")
    outages = [
        accounting.OutageSpan("a", t0, t0 + 600, 10, ("refused",), id=1, location="here"),
        accounting.OutageSpan("b", t0 + 300, t0 + 900, 5, ("refused",), id=2, location="here"),
        accounting.OutageSpan(
            "a", t0 + 4000, t0 + 4200, 3, ("slow",), open=True, id=3, location="here"
        ),
    ]
    quorums: dict[str, Quorum] = {"a": 1, "b": 1}
    ledger = MonthLedger.build("2026-03", "here", outages, quorums, horizon=t0 + 3600)
    assert ledger.horizon == t0 + 3600  # the open outage ends later: no need to go back
    assert [o.id for o in ledger.settled.outages] == [1, 2]
    service = Service(SERVICE, Policy(objective=0.999), (_check("a", 1, 1), _check("b", 1, 1)))
    coverage = [(t0 - 60, t0 + 4300)]
    for excluded in ([], [(t0 + 500, t0 + 700)]):
        exclusions = [
            accounting.ExclusionSpan(7, SERVICE, s, e, "dos", "x", "ops", t0) for s, e in excluded
        ]
        fast = single_location_figures(
            service=SERVICE,
            policy=service.policy,
            month="2026-03",
            tz="UTC",
            ledger=ledger,
            quorums=quorums,
            coverage=coverage,
            exclusions=exclusions,
            first_test_at=t0 - 60,
            now=t0 + 4300,
        )
        full = MonthInputs(
            service, "2026-03", "UTC", t0 + 4300, outages, {"here": coverage}, exclusions, t0 - 60
        ).figures()
        assert fast == full
    # a and b overlap 300 s; 900 s of settled downtime, 200 of the open outage
    assert full.downtime_seconds + full.excluded_seconds == 1100.0
    assert full.excluded_seconds == 200.0


# --- the pure ledger on generated months ---------------------------------------------

MARCH = local("2026-03-01 00:00", "UTC")


@st.composite
def months(draw: st.DrawFn) -> tuple[list[accounting.OutageSpan], float, float]:
    """Each check's outages: disjoint runs, the last one maybe open; a horizon and a now."""
    outages: list[accounting.OutageSpan] = []
    oid = 0
    for check in NAMES:
        t = MARCH + draw(st.floats(-7200, 7200))
        for _ in range(draw(st.integers(0, 6))):
            t += draw(st.floats(1, 3600))
            length = draw(st.sampled_from([0.0, 60.0, 600.0, 5000.0]))
            oid += 1
            outages.append(
                accounting.OutageSpan(check, t, t + length, 1, ("x",), id=oid, location="here")
            )
            t += length
        if outages and outages[-1].check == check and draw(st.booleans()):
            outages[-1] = replace(outages[-1], open=True)
    end = max([MARCH, *(o.end for o in outages)])
    now = end + draw(st.floats(0, 7200))
    horizon = MARCH + draw(st.floats(-3600, now - MARCH))
    return sorted(outages, key=lambda o: (o.start, o.id or 0)), horizon, now


@settings(max_examples=300)
@given(
    month=months(),
    quorums=st.lists(quorums, min_size=3, max_size=3),
    excluded=st.lists(st.tuples(st.floats(-7200, 40000), st.floats(0, 9000)), max_size=3),
    not_counted=st.booleans(),
    tested=st.booleans(),
)
def test_the_ledger_gives_the_full_computation_for_any_horizon(
    month: tuple[list[accounting.OutageSpan], float, float],
    quorums: list[Quorum],
    excluded: list[tuple[float, float]],
    not_counted: bool,
    tested: bool,
) -> None:
    outages, horizon, now = month
    span = accounting.month_period("2026-03", "UTC")
    inside = [o for o in outages if o.end >= span[0] and o.start < span[1]]
    configured = dict(zip(NAMES[:2], quorums, strict=False))  # "c" is no longer configured
    ledger = MonthLedger.build("2026-03", "here", inside, configured, horizon)
    ledger.update([o for o in inside if o.end >= max(ledger.horizon, span[0])], configured)
    assert ledger.valid
    exclusions = [
        accounting.ExclusionSpan(n, SERVICE, MARCH + s, MARCH + s + d, "dos", "x", "ops", 0.0)
        for n, (s, d) in enumerate(excluded)
    ]
    policy = Policy(0.999, excluded_time="not_counted" if not_counted else "not_downtime")
    checks = tuple(_check(n, q, 1) for n, q in configured.items())
    service = Service(SERVICE, policy, checks)
    coverage = [(MARCH - 60, now)] if tested else []  # untested: the outages alone measure
    first = MARCH - 60
    fast = single_location_figures(
        service=SERVICE,
        policy=policy,
        month="2026-03",
        tz="UTC",
        ledger=ledger,
        quorums=configured,
        coverage=coverage,
        exclusions=exclusions,
        first_test_at=first,
        now=now,
    )
    full = MonthInputs(
        service,
        "2026-03",
        "UTC",
        now,
        inside,
        {"here": coverage} if tested else {},
        exclusions,
        first,
    ).figures()
    assert fast == full


async def test_open_runs_follow_restores_reloads_and_closes(tmp_path: Path) -> None:
    """The recorder's index of open outages (looked at every second by the status page)
    holds an outage restored at startup, and drops it when it closes or its check goes."""

    async def emit(event: Event) -> None:
        pass

    url, check = f"sqlite://{tmp_path}/p.db", _check("home", 1, 2)
    first = Recorder(await open_store(url, location="here"), emit)
    await first.start([(SERVICE, check)])
    for at in (0.0, 60.0):
        failed = TestOutcome(started_at=at, duration=0.01, result=ProbeResult.failed("refused"))
        await first.record(SERVICE, check, failed, Transcript())
    assert [run.first_at for run in first.open_runs()] == [0.0]
    await first.store.close()
    again = Recorder(await open_store(url, location="here"), emit)  # a restart
    await again.start([(SERVICE, check), (SERVICE, _check("api", 1, 2))])
    assert [run.first_at for run in again.open_runs()] == [0.0]
    await again.configure([(SERVICE, _check("api", 1, 2))])  # a reload removes it
    assert again.open_runs() == []
    await again.configure([(SERVICE, check)])  # and brings it back, still down
    assert [run.first_at for run in again.open_runs()] == [0.0]
    passed = TestOutcome(started_at=120.0, duration=0.01, result=ProbeResult.passed())
    await again.record(SERVICE, check, passed, Transcript())
    assert again.open_runs() == []
    await again.store.close()
