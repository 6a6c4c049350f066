"""The SQLite store: durable failures, batched passes, restorable runs, exclusions kept forever."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probed.core.outages import FailureRun, Tracker, detect_outages
from probed.store.sqlite import FailedTest, SqliteStore


def fail(at: float, reason: str = "refused") -> FailedTest:
    return FailedTest(check="c", at=at, duration=0.01, reason=reason)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read through a second connection, as another process would."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_failed_test_is_committed_before_record_failure_returns(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    cid = store.check_id("mail", "pop3", "pop3")
    store.record_pass(cid, 0.0, 60.0)
    store.record_failure(cid, 60.0, 60.0, fail(60.0))
    # no flush, no close: another connection already sees the failure and the pass it ended
    assert rows(tmp_path / "p.db", "SELECT at, reason FROM failed_tests") == [(60.0, "refused")]
    assert rows(tmp_path / "p.db", "SELECT first_at, last_at, count FROM pass_runs") == [
        (0.0, 0.0, 1)
    ]


def test_passes_are_one_row_per_run_not_per_test(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    cid = store.check_id("web", "home", "http")
    for i in range(1000):
        store.record_pass(cid, float(i), 1.0)
    store.flush()
    for i in range(1000, 2000):
        store.record_pass(cid, float(i), 1.0)
    store.flush()
    assert rows(tmp_path / "p.db", "SELECT first_at, last_at, count FROM pass_runs") == [
        (0.0, 1999.0, 2000)
    ]
    assert rows(tmp_path / "p.db", "SELECT count(*) FROM segments") == [(1,)]


def test_restore_run_returns_the_unfinished_failure_run_and_its_outage(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = SqliteStore(path)
    cid = store.check_id("mail", "imap", "imap")
    store.record_pass(cid, 0.0, 60.0)
    store.record_failure(cid, 60.0, 60.0, fail(60.0, "a"))
    store.record_failure(cid, 120.0, 60.0, fail(120.0, "b"))
    oid = store.open_outage(cid, FailureRun(60.0, 120.0, 2, ("a", "b")))
    # simulate kill -9: no close(), a new connection
    again = SqliteStore(path)
    run = again.restore_run(again.check_id("mail", "imap", "imap"))
    assert run == FailureRun(60.0, 120.0, 2, ("a", "b"), oid)


def test_restore_run_is_empty_after_a_pass_closed_the_run(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    store = SqliteStore(path)
    cid = store.check_id("mail", "imap", "imap")
    store.record_failure(cid, 60.0, 60.0, fail(60.0))
    store.record_pass(cid, 120.0, 60.0)
    store.end_pass_run_now(cid)
    assert SqliteStore(path).restore_run(cid) is None


def test_coverage_has_a_gap_where_the_daemon_was_stopped(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    first = SqliteStore(path)
    cid = first.check_id("web", "home", "http")
    for t in (0.0, 10.0, 20.0):
        first.record_pass(cid, t, 10.0)
    first.close()
    second = SqliteStore(path)  # a new daemon session: a new segment
    for t in (100.0, 110.0):
        second.record_pass(second.check_id("web", "home", "http"), t, 10.0)
    second.flush()
    assert sorted(second.coverage("web", (0.0, 1000.0), now=1000.0)) == [
        (0.0, 30.0),
        (100.0, 120.0),
    ]
    assert second.first_test_at("web") == 0.0


def test_a_discarded_test_slot_is_unmonitored_not_tested(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    cid = store.check_id("web", "home", "http")
    store.record_pass(cid, 0.0, 10.0)
    store.record_pass(cid, 10.0, 10.0)
    store.record_unmonitored(cid)  # the test at 20 s was discarded (a loop stall)
    store.record_pass(cid, 30.0, 10.0)
    store.flush()
    assert sorted(store.coverage("web", (0.0, 1000.0), now=1000.0)) == [(0.0, 20.0), (30.0, 40.0)]


def test_exclusions_are_revoked_never_deleted(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "p.db")
    e = store.add_exclusion(
        service="mail", start=0.0, end=60.0, kind="dos", reason="flood", by="ops"
    )
    gen = store.generation()
    revoked = store.revoke_exclusion(e.id, by="lead", reason="not a DoS after all")
    assert store.generation() == gen + 1
    assert revoked.revoked_by == "lead" and revoked.revoke_reason == "not a DoS after all"
    assert [x.id for x in store.exclusions()] == [e.id]
    with pytest.raises(KeyError, match="already revoked"):
        store.revoke_exclusion(e.id, by="x", reason="y")
    with pytest.raises(KeyError, match="does not exist"):
        store.revoke_exclusion(999, by="x", reason="y")


def test_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    from probed.store.sqlite import StorageError

    path = tmp_path / "p.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StorageError, match="newer than this probed"):
        SqliteStore(path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), max_size=40), st.integers(min_value=1, max_value=3))
def test_stored_outages_equal_batch_detection_on_raw_records(
    oks: list[bool], threshold: int
) -> None:
    """What the daemon stores incrementally equals recomputing from failed tests and pass runs."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "p.db")
        cid = store.check_id("s", "c", "tcp")
        tracker = Tracker(threshold)
        for i, ok in enumerate(oks):
            at = float(i)
            change = tracker.observe(at, ok, "r")
            if ok:
                store.record_pass(cid, at, 1.0)
            else:
                store.record_failure(cid, at, 1.0, fail(at, "r"))
            if change is None:
                continue
            run = change.run
            if run.outage_id is None:
                tracker.bind_outage(store.open_outage(cid, run))
                run = tracker.run or run
            if change.kind == "closed":
                store.close_outage(run.outage_id or 0, run, at)
                store.end_pass_run_now(cid)
            elif change.kind == "extended":
                store.update_outage(run.outage_id or 0, run)
        store.flush()
        stored = [(o.start, o.end, o.failed_tests, o.open) for o in store.outages("s", (-1.0, 1e9))]
        batch = detect_outages("c", store.raw_verdicts("s", "c"), threshold)
        assert stored == [(o.start, o.end, o.failed_tests, o.open) for o in batch]
        store.close()
