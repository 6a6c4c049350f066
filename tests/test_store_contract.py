"""The Store contract: every engine keeps the same guarantees (probed/store/base.py).

Each test runs once per engine (``engine`` fixture, tests/store_engines.py).
"Another process" is a second store instance on the same URL; "kill -9" is
``engine.crash``, which drops buffered state without flushing it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from probed.core.outages import FailureRun
from probed.store.base import (
    LIVE_AFTER_FLUSH,
    AlreadyRevoked,
    FailedTest,
    NewExclusion,
    OutboxEntry,
    Store,
    UnknownExclusion,
)
from tests.store_engines import Engine
from tests.store_histories import History, StubCheck, Writer, assert_store_equals_pure, histories

EVER = (-math.inf, math.inf)


def fail(at: float, reason: str = "refused", check: str = "pop3") -> FailedTest:
    return FailedTest(check=check, at=at, duration=0.01, reason=reason)


async def reader(engine: Engine, url: str) -> Store:
    return await engine.open(url, location="reader", readonly=True)


# --------------------------------------------------------------- durability


async def test_a_failed_test_is_durable_when_record_failure_returns(engine: Engine) -> None:
    url = engine.url()
    store = await engine.open(url)
    cid = await store.check_id("mail", "pop3", "pop3")
    await store.record_pass(cid, 0.0, interval=60.0)
    await store.record_failure(cid, fail(60.0), interval=60.0)
    await engine.crash(store)
    other = await reader(engine, url)
    [stored] = await other.failed_tests("mail", "pop3", EVER)
    await other.close()
    assert (stored.at, stored.reason, stored.location) == (60.0, "refused", "here")


async def test_restore_run_returns_the_unfinished_run_and_its_outage(engine: Engine) -> None:
    url = engine.url()
    store = await engine.open(url)
    cid = await store.check_id("mail", "imap", "imap")
    await store.record_pass(cid, 0.0, interval=60.0)
    await store.record_failure(cid, fail(60.0, "a"), interval=60.0)
    await store.record_failure(cid, fail(120.0, "b"), interval=60.0)
    oid = await store.open_outage(cid, FailureRun(60.0, 120.0, 2, ("a", "b")))
    await engine.crash(store)
    again = await engine.open(url)
    run = await again.restore_run(await again.check_id("mail", "imap", "imap"))
    await again.close()
    assert run == FailureRun(60.0, 120.0, 2, ("a", "b"), oid)


async def test_a_durable_pass_ends_the_run_across_a_crash(engine: Engine) -> None:
    url = engine.url()
    store = await engine.open(url)
    cid = await store.check_id("mail", "imap", "imap")
    await store.record_failure(cid, fail(60.0), interval=60.0)
    await store.record_pass(cid, 120.0, interval=60.0, durable=True)
    await engine.crash(store)
    again = await engine.open(url)
    assert await again.restore_run(cid) is None
    await again.close()


@pytest.mark.parametrize("step", [3600.0, -5400.0])
async def test_a_restored_run_continues_its_outage_moved_by_a_clock_step(
    engine: Engine, step: float
) -> None:
    """Failed tests stored before a step keep the old timeline; the outage row was moved
    with it. The run restored after a crash is the row's, plus the failed test stored
    after the row's last update (the kill came between the two writes)."""
    url = engine.url()
    store = await engine.open(url)
    cid = await store.check_id("mail", "imap", "imap")
    t = 6000.0
    await store.record_failure(cid, fail(t, "a"), interval=60.0)
    await store.record_failure(cid, fail(t + 60, "a"), interval=60.0)
    oid = await store.open_outage(cid, FailureRun(t, t + 60, 2, ("a",)))
    await store.update_outage(oid, FailureRun(t + step, t + 60 + step, 2, ("a",), oid))
    await store.record_failure(cid, fail(t + 120 + step, "b"), interval=60.0)
    await engine.crash(store)
    again = await engine.open(url)
    [(restored_cid, run)] = (await again.restore_runs([cid])).items()
    await again.close()
    assert restored_cid == cid
    assert run == FailureRun(t + step, t + 120 + step, 3, ("a", "b"), oid)


async def test_an_open_outage_a_durable_pass_ended_is_closed_on_restore(engine: Engine) -> None:
    url = engine.url()
    store = await engine.open(url)
    cid = await store.check_id("mail", "imap", "imap")
    await store.record_failure(cid, fail(60.0), interval=60.0)
    await store.record_failure(cid, fail(120.0), interval=60.0)
    oid = await store.open_outage(cid, FailureRun(60.0, 120.0, 2, ("refused",)))
    await store.record_pass(cid, 180.0, interval=60.0, durable=True)
    await engine.crash(store)  # before the outage's row was closed
    again = await engine.open(url)
    assert await again.restore_runs([cid]) == {}
    [outage] = await again.outages("mail", EVER)
    stored = await again.outage(oid)
    await again.close()
    assert (outage.open, outage.start, outage.end, outage.failed_tests) == (False, 60, 120, 2)
    assert stored is not None and stored.closed_at == 180.0


async def test_runs_are_restored_per_location(engine: Engine) -> None:
    url = engine.url()
    here = await engine.open(url, location="fra1")
    cid = await here.check_id("mail", "imap", "imap")
    await here.record_failure(cid, fail(60.0), interval=60.0)
    there = await engine.open(url, location="ams1")
    assert await there.check_id("mail", "imap", "imap") == cid  # check ids are shared
    assert await there.restore_run(cid) is None
    assert (await here.restore_run(cid)) == FailureRun(60.0, 60.0, 1, ("refused",))
    await there.close()
    await here.close()


async def test_check_ids_register_a_whole_config_in_one_call_like_check_id(
    engine: Engine,
) -> None:
    url = engine.url()
    store = await engine.open(url)
    known = await store.check_id("mail", "imap", "imap")
    checks = [("mail", "imap", "imap"), ("web", "home", "http"), ("mail", "pop3", "pop3")]
    ids = await store.check_ids(checks)
    assert ids[0] == known and len(set(ids)) == 3
    other = await engine.open(url, location="ams1")
    assert await other.check_ids(list(reversed(checks))) == list(reversed(ids))  # shared ids
    assert await other.check_ids([("web", "home", "tcp")]) == [ids[1]]  # its type changed
    assert await other.check_id("web", "home", "tcp") == ids[1]
    assert await store.check_ids([]) == []
    await other.close()
    await store.close()


async def test_restore_runs_gives_restore_run_of_every_check_that_has_a_run(
    engine: Engine,
) -> None:
    url = engine.url()
    store = await engine.open(url)
    names = ["passing", "failing", "down", "ended", "never"]
    ids = await store.check_ids([("mail", n, "imap") for n in names])
    passing, failing, down, ended, _ = ids
    await store.record_pass(passing, 0.0, interval=60.0)
    await store.record_failure(failing, fail(60.0, "a", "failing"), interval=60.0)
    for at in (60.0, 120.0):
        await store.record_failure(down, fail(at, "b", "down"), interval=60.0)
    await store.open_outage(down, FailureRun(60.0, 120.0, 2, ("b", "b")))
    await store.record_failure(ended, fail(60.0, "c", "ended"), interval=60.0)
    await store.record_pass(ended, 120.0, interval=60.0, durable=True)
    await engine.crash(store)
    again = await engine.open(url)
    runs = await again.restore_runs(ids)
    assert sorted(runs) == sorted([failing, down])
    for cid in ids:
        assert runs.get(cid) == await again.restore_run(cid)
    elsewhere = await engine.open(url, location="ams1")
    assert await elsewhere.restore_runs(ids) == {}  # runs are per location
    await elsewhere.close()
    await again.close()


async def _recorded(engine: Engine, url: str, script: str, start: float) -> Writer:
    check = StubCheck(name="pop3", interval=60.0, timeout=5.0, failures_to_down=1)
    writer = Writer(engine, url, [check])
    await writer.open()
    for n, c in enumerate(script):
        await writer.test(start + 60.0 * n, 0, c == "P")
    return writer


async def test_a_pass_lost_in_a_crash_does_not_merge_two_failure_runs(engine: Engine) -> None:
    """Issue 8.1: F P P [kill -9] F F P is two outages, the second of 2 tests."""
    url = engine.url()
    before = await _recorded(engine, url, "FPP", 0.0)
    await engine.crash(before.store)  # the second pass was only buffered
    after = await _recorded(engine, url, "FFP", 600.0)
    outages = await after.store.outages("web", EVER)
    await after.store.close()
    assert [(o.start, o.end, o.failed_tests) for o in outages] == [
        (0.0, 0.0, 1),
        (600.0, 660.0, 2),
    ]


# ----------------------------------------------------------------- coverage


async def test_coverage_has_a_gap_where_the_daemon_was_stopped(engine: Engine) -> None:
    url = engine.url()
    first = await engine.open(url)
    cid = await first.check_id("web", "home", "http")
    for t in (0.0, 10.0, 20.0):
        await first.record_pass(cid, t, interval=10.0, test_timeout=2.0)
    await first.close()
    second = await engine.open(url)  # a new daemon session: a new segment
    for t in (100.0, 110.0):
        await second.record_pass(cid, t, interval=10.0, test_timeout=2.0)
    await second.flush()
    assert sorted(await second.coverage("web", (0.0, 1000.0), now=1000.0)) == [
        (0.0, 32.0),
        (100.0, 122.0),
    ]
    assert await second.first_test_at("web") == 0.0
    assert await second.first_test_at("web", location="elsewhere") is None
    await second.close()


async def test_a_discarded_test_slot_is_unmonitored_not_tested(engine: Engine) -> None:
    store = await engine.open(engine.url())
    cid = await store.check_id("web", "home", "http")
    await store.record_pass(cid, 0.0, interval=10.0, test_timeout=2.0)
    await store.record_pass(cid, 10.0, interval=10.0, test_timeout=2.0)
    await store.record_unmonitored(cid)  # the test at 20 s was discarded (a loop stall)
    await store.record_pass(cid, 30.0, interval=10.0, test_timeout=2.0)
    before_flush = sorted(await store.coverage("web", (0.0, 1000.0), now=1000.0))
    await store.flush()
    after_flush = sorted(await store.coverage("web", (0.0, 1000.0), now=1000.0))
    await store.close()
    assert before_flush == after_flush == [(0.0, 22.0), (30.0, 42.0)]


async def test_a_flush_during_a_read_hides_no_coverage(engine: Engine) -> None:
    """Coverage read while a flush runs: each segment is pending or stored, never neither
    (the status page once showed "no tests" for a day full of them)."""
    store = await engine.open(engine.url())
    cid = await store.check_id("web", "home", "http")
    await store.record_pass(cid, 0.0, interval=10.0, test_timeout=2.0)
    await store.record_pass(cid, 10.0, interval=10.0, test_timeout=2.0)
    engine_write = store._write_batch  # type: ignore[attr-defined]
    written, release = asyncio.Event(), asyncio.Event()

    async def slow_write(*args: Any) -> Any:
        await release.wait()
        result = await engine_write(*args)
        written.set()
        return result

    store._write_batch = slow_write  # type: ignore[attr-defined]
    # the flush has taken the segment, the engine has not committed it yet
    flush = asyncio.create_task(store.flush())
    await asyncio.sleep(0)
    in_flight = await store.coverage("web", (0.0, 100.0), now=100.0)
    first_in_flight = await store.first_test_at("web")
    # the flush commits while the stored half is being read
    stored_read = store._stored_coverage  # type: ignore[attr-defined]

    async def read_then_commit(*args: Any) -> Any:
        rows = await stored_read(*args)
        release.set()
        await written.wait()
        return rows

    store._stored_coverage = read_then_commit  # type: ignore[attr-defined]
    during_commit = await store.coverage("web", (0.0, 100.0), now=100.0)
    await flush
    await store.close()
    assert first_in_flight == 0.0
    assert in_flight == during_commit == [(0.0, 22.0)]


async def test_a_late_test_within_its_timeout_leaves_no_gap(engine: Engine) -> None:
    store = await engine.open(engine.url())
    cid = await store.check_id("web", "home", "http")
    for t in (0.0, 10.4, 20.9):  # each one started late, within the timeout
        await store.record_pass(cid, t, interval=10.0, test_timeout=1.0)
    spans = await store.coverage("web", (0.0, 25.0), now=25.0)
    await store.close()
    assert min(a for a, _ in spans) == 0.0 and max(b for _, b in spans) == 25.0
    assert all(b >= a2 for (_, b), (a2, _) in zip(sorted(spans), sorted(spans)[1:], strict=False))


async def test_a_live_daemons_unflushed_tail_is_no_gap_for_another_process(
    engine: Engine,
) -> None:
    """Issue 8.3: ``probed report`` beside a running daemon sees no unmonitored time."""
    url = engine.url()
    clock = [0.0]
    daemon = await engine.open(url, clock=lambda: clock[0])
    cid = await daemon.check_id("web", "home", "http")
    for n in range(7):  # tests every 0.5 s; flushed at 1.0 s only
        clock[0] = n * 0.5
        await daemon.record_pass(cid, clock[0], interval=0.5, test_timeout=0.4)
        if n == 2:
            await daemon.flush()
    other = await reader(engine, url)
    now = 3.0
    assert await other.coverage("web", (0.0, now), now) == [(0.0, now)]
    # a daemon that stopped flushing (crashed) shows the gap once the flush is overdue
    later = 1.0 + LIVE_AFTER_FLUSH + 1.0
    assert await other.coverage("web", (0.0, later), later) == [(0.0, 1.0 + 0.5 + 0.4)]
    await other.close()
    await daemon.close()


async def test_a_cleanly_stopped_daemon_is_not_live(engine: Engine) -> None:
    url = engine.url()
    clock = [0.0]
    daemon = await engine.open(url, clock=lambda: clock[0])
    cid = await daemon.check_id("web", "home", "http")
    await daemon.record_pass(cid, 0.0, interval=1.0, test_timeout=0.5)
    await daemon.close()
    other = await reader(engine, url)
    assert await other.coverage("web", (0.0, 3.0), 3.0) == [(0.0, 1.5)]
    await other.close()


# -------------------------------------------------------- outages, locations


async def test_month_reads_are_every_services_own_reads(engine: Engine) -> None:
    """``probed report``'s one read of the store: per service, what outages(),
    coverage() per location and first_test_at() give, unflushed coverage included."""
    url = engine.url()
    fra = await engine.open(url, location="fra1")
    ams = await engine.open(url, location="ams1")
    pop3 = await fra.check_id("mail", "pop3", "pop3")
    home = await ams.check_id("web", "home", "http")
    for t in (0.0, 60.0, 120.0):
        await fra.record_pass(pop3, t, interval=60.0)
        await ams.record_pass(home, t + 1.0, interval=60.0)
    await fra.flush()
    await fra.record_pass(pop3, 180.0, interval=60.0)  # still pending in fra1
    await fra.record_pass(await fra.check_id("idle", "tcp", "tcp"), 190.0, interval=60.0)
    await ams.record_failure(home, fail(181.0, check="home"), interval=60.0)
    await ams.record_failure(home, fail(241.0, check="home"), interval=60.0)
    await ams.open_outage(home, FailureRun(181.0, 241.0, 2, ("refused",)))
    await fra.record_failure(pop3, fail(2000.0), interval=60.0)  # after the window
    await fra.open_outage(pop3, FailureRun(2000.0, 2000.0, 1, ("refused",)))
    window, now = (0.0, 1000.0), 250.0
    reads = await fra.month_reads(window, now)
    assert set(reads) == {"mail", "web", "idle"}
    for service, got in reads.items():
        assert got.outages == await fra.outages(service, window)
        assert got.first_test_at == await fra.first_test_at(service)
        for name in ("fra1", "ams1"):
            own = await fra.coverage(service, window, now, location=name)
            assert sorted(got.coverage.get(name, [])) == sorted(own), (service, name)
    assert [o.check for o in reads["web"].outages] == ["home"] and not reads["mail"].outages
    await ams.close()
    await fra.close()


async def test_outages_carry_their_location_and_can_be_read_per_location(engine: Engine) -> None:
    url = engine.url()
    fra = await engine.open(url, location="fra1")
    ams = await engine.open(url, location="ams1")
    cid = await fra.check_id("mail", "pop3", "pop3")
    await fra.record_failure(cid, fail(60.0), interval=60.0)
    await ams.record_failure(cid, fail(61.0), interval=60.0)
    a = await fra.open_outage(cid, FailureRun(60.0, 60.0, 1, ("refused",)))
    b = await ams.open_outage(cid, FailureRun(61.0, 61.0, 1, ("refused",)))
    await ams.close_outage(b, FailureRun(61.0, 61.0, 1, ("refused",)), 121.0)
    both = await fra.outages("mail", EVER)
    assert [(o.id, o.location, o.open) for o in both] == [(a, "fra1", True), (b, "ams1", False)]
    assert [o.id for o in await fra.outages("mail", EVER, location="ams1")] == [b]
    found = await fra.outage(b)
    assert found is not None and found.service == "mail" and found.closed_at == 121.0
    assert found.span.location == "ams1" and await fra.outage(999_999) is None
    tests = await ams.failed_tests("mail", "pop3", EVER, location="fra1")
    assert [(t.at, t.location) for t in tests] == [(60.0, "fra1")]
    assert await fra.locations() == ["ams1", "fra1"]
    await ams.close()
    await fra.close()


async def test_update_outage_keeps_growing_one_row(engine: Engine) -> None:
    store = await engine.open(engine.url())
    cid = await store.check_id("web", "home", "http")
    oid = await store.open_outage(cid, FailureRun(0.0, 60.0, 2, ("a",)))
    await store.update_outage(oid, FailureRun(0.0, 120.0, 3, ("a", "b")))
    [span] = await store.outages("web", EVER)
    await store.close()
    assert (span.end, span.failed_tests, span.reasons, span.open) == (120.0, 3, ("a", "b"), True)


async def test_a_shifted_run_moves_its_whole_outage(engine: Engine) -> None:
    """A clock step moves an open run as a whole (start too): its downtime stays what
    elapsed, open or closed (docs/sla-rules.md, "Clock steps")."""
    store = await engine.open(engine.url())
    cid = await store.check_id("web", "home", "http")
    run = FailureRun(10_000.0, 10_060.0, 2, ("a",))
    oid = await store.open_outage(cid, run)
    await store.update_outage(oid, run := run.shifted(3600.0))  # the clock jumped ahead
    [moved] = await store.outages("web", EVER)
    run = run.shifted(-5400.0).with_failure(8320.0, "b")  # then back, then one more failure
    await store.close_outage(oid, run, 8350.0)
    [ended] = await store.outages("web", EVER)
    await store.close()
    assert (moved.start, moved.end, moved.open) == (13_600.0, 13_660.0, True)
    assert (ended.start, ended.end, ended.failed_tests, ended.open) == (8200.0, 8320.0, 3, False)


# --------------------------------------------------------------- exclusions


async def test_exclusions_are_revoked_never_deleted(engine: Engine) -> None:
    url = engine.url()
    store = await engine.open(url)
    e = await store.add_exclusion(NewExclusion("mail", 0.0, 60.0, "dos", "flood", "ops"))
    generation = await store.generation()
    revoked = await store.revoke_exclusion(e.id, by="lead", reason="not a DoS after all")
    assert await store.generation() == generation + 1
    assert revoked.revoked_by == "lead" and revoked.revoke_reason == "not a DoS after all"
    assert [x.id for x in await store.exclusions()] == [e.id]
    with pytest.raises(AlreadyRevoked, match="already revoked"):
        await store.revoke_exclusion(e.id, by="x", reason="y")
    with pytest.raises(UnknownExclusion, match="does not exist"):
        await store.revoke_exclusion(999, by="x", reason="y")
    other = await reader(engine, url)  # another process sees the audit trail
    [seen] = await other.exclusions((30.0, 90.0))
    assert await other.exclusions((60.0, 90.0)) == []  # [start, end) is half-open
    assert seen == revoked and await other.exclusion(999) is None
    await other.close()
    await store.close()


# ------------------------------------------------------------------- outbox


def entries(*payloads: str, hooks: tuple[str, ...] = ("a", "b")) -> list[OutboxEntry]:
    return [OutboxEntry(hooks, p) for p in payloads]


async def test_outbox_rows_go_out_oldest_first_per_hook(engine: Engine) -> None:
    store = await engine.open(engine.url())
    await store.enqueue(entries("1", "2"), now=10.0)
    first = await store.claim("a", now=10.0, lease=30.0)
    assert first is not None and first.claimed and first.payload == "1"
    await store.failed(first.id, "refused", next_attempt_at=20.0)
    waiting = await store.claim("a", now=11.0, lease=30.0)  # row 2 never overtakes row 1
    assert waiting is not None and not waiting.claimed
    assert (waiting.id, waiting.next_attempt_at) == (first.id, 20.0)
    again = await store.claim("a", now=20.0, lease=30.0)
    assert again is not None and again.claimed and again.attempts == 1
    await store.delivered(again.id, 21.0)
    second = await store.claim("a", now=21.0, lease=30.0)
    assert second is not None and second.payload == "2"
    other_hook = await store.claim("b", now=21.0, lease=30.0)  # hooks don't wait for each other
    assert other_hook is not None and other_hook.payload == "1"
    assert await store.undelivered() == {"a": 1, "b": 2}
    assert [r.payload for r in await store.history("a")] == ["1"]
    await store.delivered(second.id, 22.0)
    assert await store.claim("a", now=23.0, lease=30.0) is None
    await store.close()


async def test_a_claim_is_a_lease_other_instances_respect(engine: Engine) -> None:
    url = engine.url()
    here = await engine.open(url, location="fra1")
    there = await engine.open(url, location="ams1")
    await here.enqueue(entries("1", hooks=("a",)), now=0.0)
    mine = await here.claim("a", now=0.0, lease=30.0)
    assert mine is not None and mine.claimed and mine.location == "fra1"
    theirs = await there.claim("a", now=1.0, lease=30.0)
    assert theirs is not None and not theirs.claimed and theirs.next_attempt_at == 30.0
    expired = await there.claim("a", now=31.0, lease=30.0)  # the holder died: taken over
    assert expired is not None and expired.claimed
    await there.close()
    await here.close()


async def test_announcements_are_told_and_queued_once(engine: Engine) -> None:
    url = engine.url()
    here = await engine.open(url, location="fra1")
    there = await engine.open(url, location="ams1")
    assert await here.announce("web", "2026-11", ["budget_50"], 1.0, entries("e1"))
    assert not await there.announce("web", "2026-11", ["budget_50"], 2.0, entries("e2"))
    assert await there.announced("web", "2026-11") == frozenset({"budget_50"})
    assert await there.announced("web", "2026-12") == frozenset()
    assert await here.undelivered() == {"a": 1, "b": 1}
    await there.close()
    await here.close()


async def test_a_fresh_store_is_writable(engine: Engine) -> None:
    store = await engine.open(engine.url())
    assert await store.writable() is None
    assert store.location == "here" and store.describe
    await store.close()


# ------------------------------------------ figures through the product's path


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(histories())
def test_figures_through_the_store_equal_the_pure_computation(
    engine: Engine, history: History
) -> None:
    """Histories written through the daemon's Recorder (restarts included) give the same
    month figures, read back through the store, as accounting over the raw history."""
    assert_store_equals_pure(history, engine)
