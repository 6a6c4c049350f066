"""What only the SQLite store does: its file, its schema history, its refusals."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from probed.store import migrations
from probed.store.base import StorageError, open_store

EVER = (-math.inf, math.inf)


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read through a second connection, as another process would."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


async def test_passes_are_one_row_per_run_not_per_test(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "p.db")
    cid = await store.check_id("web", "home", "http")
    for i in range(1000):
        await store.record_pass(cid, float(i), interval=1.0)
    await store.flush()
    for i in range(1000, 2000):
        await store.record_pass(cid, float(i), interval=1.0)
    await store.close()
    assert rows(tmp_path / "p.db", "SELECT first_at, last_at, count FROM pass_runs") == [
        (0.0, 1999.0, 2000)
    ]
    assert rows(tmp_path / "p.db", "SELECT count(*) FROM segments") == [(1,)]


def schema_1_store(path: Path) -> None:
    """A store as probed wrote it before version 2, hook tables made on the fly."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    for statement in migrations.MIGRATIONS[0].sqlite:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(migrations._OUTBOX_V1)
    db.execute(migrations._ANNOUNCEMENTS_V1)
    db.executescript(
        """
        INSERT INTO checks VALUES (1, 'mail', 'pop3', 'pop3');
        INSERT INTO pass_runs VALUES (1, 1, 0.0, 60.0, 2);
        INSERT INTO failed_tests VALUES (1, 1, 120.0, 0.5, 'refused', 'S: -ERR');
        INSERT INTO failed_tests VALUES (2, 1, 180.0, 0.5, 'refused', '');
        INSERT INTO segments VALUES (1, 1, 0.0, 180.0, 60.0, 4);
        INSERT INTO outages VALUES (1, 1, 120.0, 180.0, 2, '["refused"]', NULL);
        INSERT INTO exclusions VALUES
            (1, 'mail', 100.0, 200.0, 'dos', 'flood', 'ops', 300.0, NULL, NULL, NULL);
        INSERT INTO meta VALUES ('exclusions_generation', '1');
        INSERT INTO outbox (hook, event_json, created_at, next_attempt_at)
            VALUES ('team', '{"id": "x"}', 130.0, 130.0);
        INSERT INTO hook_announcements VALUES ('mail', '1970-01', 'budget_50', 150.0);
        """
    )
    db.close()


async def test_a_schema_1_store_migrates_forward_keeping_every_record(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    schema_1_store(path)
    store = await open_store(path, location="fra1")
    cid = await store.check_id("mail", "pop3", "pop3")
    assert cid == 1
    run = await store.restore_run(cid)  # the open outage continues, as this location's
    assert run is not None and (run.first_at, run.count, run.outage_id) == (120.0, 2, 1)
    [outage] = await store.outages("mail", EVER, location="fra1")
    assert (outage.start, outage.end, outage.open) == (120.0, 180.0, True)
    tests = await store.failed_tests("mail", "pop3", EVER)
    assert [(t.at, t.transcript, t.location) for t in tests] == [
        (120.0, "S: -ERR", "fra1"),
        (180.0, "", "fra1"),
    ]
    assert await store.coverage("mail", (0.0, 1000.0), now=1000.0) == [(0.0, 240.0)]
    assert [e.reason for e in await store.exclusions()] == ["flood"]
    assert await store.generation() == 1
    row = await store.claim("team", now=200.0, lease=30.0)
    assert row is not None and row.claimed and row.payload == '{"id": "x"}'
    assert await store.announced("mail", "1970-01") == frozenset({"budget_50"})
    await store.close()
    version, app = rows(path, "PRAGMA user_version")[0][0], rows(path, "PRAGMA application_id")
    assert (version, app) == (migrations.SCHEMA_VERSION, [(migrations.APPLICATION_ID,)])


async def test_a_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    await (await open_store(path)).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StorageError, match="newer than this probed"):
        await open_store(path)


async def test_report_on_a_missing_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="has the daemon run yet"):
        await open_store(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()
