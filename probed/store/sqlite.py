"""Storage: what was tested, what failed and why, outages, coverage, exclusions.

The store grows with failures and state changes, not with passing tests:

- ``failed_tests``: every failed test, one row, with its reason (evidence);
- ``pass_runs``: consecutive passing tests of a check, one row updated in batches;
- ``segments``: when the daemon was testing a check (one row per check and
  daemon session, extended in batches); monitoring gaps are what lies between;
- ``outages``: one row per outage, maintained from the outage state machine;
- ``exclusions``: flagged windows, revoked but never deleted.

A failed test is committed before the next test of its check starts, together
with the pending pass run it ends, so a crash or ``kill -9`` loses no recorded
failure and cannot merge two failure runs. Passes are flushed every few
seconds; a crash loses at most that much coverage, never a verdict that
changes downtime.

SQLite in WAL mode lets ``probed report`` and ``probed exclude`` use the file
while the daemon runs. Everything sits behind :class:`Store` so a shared
PostgreSQL store can come later.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from probed.core.accounting import ExclusionSpan, Interval, OutageSpan
from probed.core.outages import FailureRun

SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE checks (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        UNIQUE (service, name)
    );
    CREATE TABLE pass_runs (
        id INTEGER PRIMARY KEY,
        check_id INTEGER NOT NULL REFERENCES checks(id),
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        count INTEGER NOT NULL
    );
    CREATE INDEX pass_runs_check ON pass_runs (check_id, last_at);
    CREATE TABLE failed_tests (
        id INTEGER PRIMARY KEY,
        check_id INTEGER NOT NULL REFERENCES checks(id),
        at REAL NOT NULL,
        duration REAL NOT NULL,
        reason TEXT NOT NULL,
        transcript TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX failed_tests_check ON failed_tests (check_id, at);
    CREATE TABLE segments (
        id INTEGER PRIMARY KEY,
        check_id INTEGER NOT NULL REFERENCES checks(id),
        first_at REAL NOT NULL,
        last_at REAL NOT NULL,
        interval REAL NOT NULL,
        tests INTEGER NOT NULL
    );
    CREATE INDEX segments_check ON segments (check_id, last_at);
    CREATE TABLE outages (
        id INTEGER PRIMARY KEY,
        check_id INTEGER NOT NULL REFERENCES checks(id),
        start REAL NOT NULL,
        last_failed REAL NOT NULL,
        failed_tests INTEGER NOT NULL,
        reasons TEXT NOT NULL,
        closed_at REAL
    );
    CREATE INDEX outages_time ON outages (last_failed, start);
    CREATE TABLE exclusions (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        start REAL NOT NULL,
        "end" REAL NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        by TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL,
        revoked_by TEXT,
        revoke_reason TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
}


class StorageError(Exception):
    """The store cannot be opened or written; the message says why."""


@dataclass(frozen=True, slots=True)
class FailedTest:
    check: str
    at: float
    duration: float
    reason: str
    transcript: str = ""


@dataclass(slots=True)
class _Pending:
    """Unflushed state of one check: its pass run and coverage segment."""

    run_id: int | None = None
    run_first: float = 0.0
    run_last: float = 0.0
    run_count: int = 0
    run_dirty: bool = False
    seg_id: int | None = None
    seg_first: float = 0.0
    seg_last: float = 0.0
    seg_tests: int = 0
    seg_interval: float = 0.0
    seg_dirty: bool = False


class Store(Protocol):
    """What the daemon, the report and the API need from storage."""

    def check_id(self, service: str, check: str, type_: str) -> int: ...
    def record_pass(self, check_id: int, at: float, interval: float) -> None: ...
    def record_failure(
        self, check_id: int, at: float, interval: float, test: FailedTest
    ) -> None: ...
    def open_outage(self, check_id: int, run: FailureRun) -> int: ...
    def update_outage(self, outage_id: int, run: FailureRun) -> None: ...
    def restart_segments(self) -> None: ...
    def close_outage(self, outage_id: int, run: FailureRun, closed_at: float) -> None: ...
    def flush(self) -> None: ...
    def restore_run(self, check_id: int) -> FailureRun | None: ...
    def outages(self, service: str, window: Interval) -> list[OutageSpan]: ...
    def coverage(self, service: str, window: Interval, now: float) -> list[Interval]: ...
    def first_test_at(self, service: str) -> float | None: ...
    def exclusions(self, window: Interval | None = None) -> list[ExclusionSpan]: ...
    def close(self) -> None: ...


class SqliteStore:
    """The embedded store. One instance per thread; all calls are synchronous and short."""

    def __init__(self, path: Path | str, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._pending: dict[int, _Pending] = {}
        self._names: dict[int, str] = {}
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            self.db = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None)
            self.db.execute("PRAGMA busy_timeout = 10000")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: a commit survives a process crash (kill -9);
                # only an OS crash or power loss can drop the last commits.
                self.db.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
            self._check_version()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open store {self.path}: {exc}") from None

    # ---------------------------------------------------------- schema

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._tx():
                self._script(_MIGRATIONS[target])
                self.db.execute(f"PRAGMA user_version = {target}")

    def _script(self, script: str) -> None:
        # executescript() would COMMIT our transaction; run statements one by one
        for statement in script.split(";"):
            if statement.strip():
                self.db.execute(statement)

    def _check_version(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"store {self.path} has schema {version}, newer than this probed ({SCHEMA_VERSION})"
            )
        if self.readonly and version == 0:
            raise StorageError(f"store {self.path} is empty: has the daemon run yet?")

    def _tx(self) -> _Transaction:
        return _Transaction(self.db)

    # ---------------------------------------------------------- writes

    def check_id(self, service: str, check: str, type_: str) -> int:
        row = self.db.execute(
            "SELECT id, type FROM checks WHERE service = ? AND name = ?", (service, check)
        ).fetchone()
        if row is None:
            cur = self.db.execute(
                "INSERT INTO checks (service, name, type) VALUES (?, ?, ?)", (service, check, type_)
            )
            row = (cur.lastrowid, type_)
        elif row[1] != type_:
            self.db.execute("UPDATE checks SET type = ? WHERE id = ?", (type_, row[0]))
        self._names[int(row[0])] = check
        return int(row[0])

    def _extend_segment(self, p: _Pending, at: float, interval: float) -> None:
        if p.seg_tests == 0 or interval != p.seg_interval:
            p.seg_id, p.seg_first, p.seg_interval, p.seg_tests = None, at, interval, 0
        p.seg_last = max(p.seg_last, at) if p.seg_tests else at
        p.seg_tests += 1
        p.seg_dirty = True

    def record_pass(self, check_id: int, at: float, interval: float) -> None:
        p = self._pending.setdefault(check_id, _Pending())
        if p.seg_dirty and interval != p.seg_interval:
            self._flush_one(check_id, p)
        self._extend_segment(p, at, interval)
        if p.run_count == 0:
            p.run_id, p.run_first = None, at
        p.run_last = at
        p.run_count += 1
        p.run_dirty = True

    def record_failure(self, check_id: int, at: float, interval: float, test: FailedTest) -> None:
        p = self._pending.setdefault(check_id, _Pending())
        with self._tx():
            if p.seg_dirty and interval != p.seg_interval:
                self._flush_one(check_id, p)
            self._extend_segment(p, at, interval)
            self._flush_one(check_id, p)  # the pass run this failure ends, and coverage
            p.run_count, p.run_id = 0, None
            self.db.execute(
                "INSERT INTO failed_tests (check_id, at, duration, reason, transcript) VALUES (?, ?, ?, ?, ?)",
                (check_id, at, test.duration, test.reason, test.transcript),
            )

    def end_pass_run_now(self, check_id: int) -> None:
        """Persist the pass that closed a failure run before anything else happens."""
        p = self._pending.get(check_id)
        if p is not None:
            with self._tx():
                self._flush_one(check_id, p)

    def _flush_one(self, check_id: int, p: _Pending) -> None:
        if p.run_dirty and p.run_count:
            if p.run_id is None:
                cur = self.db.execute(
                    "INSERT INTO pass_runs (check_id, first_at, last_at, count) VALUES (?, ?, ?, ?)",
                    (check_id, p.run_first, p.run_last, p.run_count),
                )
                p.run_id = cur.lastrowid
            else:
                self.db.execute(
                    "UPDATE pass_runs SET last_at = ?, count = ? WHERE id = ?",
                    (p.run_last, p.run_count, p.run_id),
                )
        p.run_dirty = False
        if p.seg_dirty:
            if p.seg_id is None:
                cur = self.db.execute(
                    "INSERT INTO segments (check_id, first_at, last_at, interval, tests) VALUES (?, ?, ?, ?, ?)",
                    (check_id, p.seg_first, p.seg_last, p.seg_interval, p.seg_tests),
                )
                p.seg_id = cur.lastrowid
            else:
                self.db.execute(
                    "UPDATE segments SET last_at = ?, tests = ? WHERE id = ?",
                    (p.seg_last, p.seg_tests, p.seg_id),
                )
        p.seg_dirty = False

    def flush(self) -> None:
        """Write every pending pass run and segment in one transaction."""
        dirty = [(cid, p) for cid, p in self._pending.items() if p.run_dirty or p.seg_dirty]
        if not dirty:
            return
        with self._tx():
            for check_id, p in dirty:
                self._flush_one(check_id, p)

    def open_outage(self, check_id: int, run: FailureRun) -> int:
        cur = self.db.execute(
            "INSERT INTO outages (check_id, start, last_failed, failed_tests, reasons) VALUES (?, ?, ?, ?, ?)",
            (check_id, run.first_at, run.last_at, run.count, json.dumps(list(run.reasons))),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def update_outage(self, outage_id: int, run: FailureRun) -> None:
        # start too: a clock step moves an open run as a whole (see restart_segments)
        self.db.execute(
            "UPDATE outages SET start = ?, last_failed = ?, failed_tests = ?, reasons = ? WHERE id = ?",
            (run.first_at, run.last_at, run.count, json.dumps(list(run.reasons)), outage_id),
        )

    def restart_segments(self) -> None:
        """After a clock step: what was recorded stays, the next test starts a new pass run
        and coverage segment, so that no segment spans the step."""
        self.flush()
        for p in self._pending.values():
            p.seg_tests, p.seg_id, p.run_count, p.run_id = 0, None, 0, None

    def close_outage(self, outage_id: int, run: FailureRun, closed_at: float) -> None:
        self.db.execute(
            "UPDATE outages SET last_failed = ?, failed_tests = ?, reasons = ?, closed_at = ? WHERE id = ?",
            (run.last_at, run.count, json.dumps(list(run.reasons)), closed_at, outage_id),
        )

    # ----------------------------------------------------------- reads

    def restore_run(self, check_id: int) -> FailureRun | None:
        """The check's failure run that had not ended when the daemon stopped."""
        row = self.db.execute(
            "SELECT MAX(last_at) FROM pass_runs WHERE check_id = ?", (check_id,)
        ).fetchone()
        last_pass = row[0] if row and row[0] is not None else float("-inf")
        fails = self.db.execute(
            "SELECT at, reason FROM failed_tests WHERE check_id = ? AND at > ? ORDER BY at",
            (check_id, last_pass),
        ).fetchall()
        if not fails:
            return None
        run = FailureRun(first_at=fails[0][0], last_at=fails[0][0], count=1, reasons=(fails[0][1],))
        for at, reason in fails[1:]:
            run = run.with_failure(at, reason)
        outage = self.db.execute(
            "SELECT id FROM outages WHERE check_id = ? AND closed_at IS NULL AND start = ?",
            (check_id, run.first_at),
        ).fetchone()
        return FailureRun(
            run.first_at, run.last_at, run.count, run.reasons, outage[0] if outage else None
        )

    def _check_ids(self, service: str) -> dict[int, str]:
        rows = self.db.execute(
            "SELECT id, name FROM checks WHERE service = ?", (service,)
        ).fetchall()
        return {int(r[0]): str(r[1]) for r in rows}

    def services(self) -> list[str]:
        return [
            str(r[0])
            for r in self.db.execute("SELECT DISTINCT service FROM checks ORDER BY service")
        ]

    def outages(self, service: str, window: Interval) -> list[OutageSpan]:
        rows = self.db.execute(
            """SELECT o.id, c.name, o.start, o.last_failed, o.failed_tests, o.reasons, o.closed_at
               FROM outages o JOIN checks c ON c.id = o.check_id
               WHERE c.service = ? AND o.last_failed >= ? AND o.start < ? ORDER BY o.start, o.id""",
            (service, window[0], window[1]),
        ).fetchall()
        return [
            OutageSpan(
                check=r[1],
                start=r[2],
                end=r[3],
                failed_tests=r[4],
                reasons=tuple(json.loads(r[5])),
                open=r[6] is None,
                id=r[0],
            )
            for r in rows
        ]

    def outage(self, outage_id: int) -> tuple[str, OutageSpan, float | None] | None:
        """One outage by id: (service, span, closed_at)."""
        r = self.db.execute(
            """SELECT o.id, c.name, o.start, o.last_failed, o.failed_tests, o.reasons, o.closed_at, c.service
               FROM outages o JOIN checks c ON c.id = o.check_id WHERE o.id = ?""",
            (outage_id,),
        ).fetchone()
        if r is None:
            return None
        span = OutageSpan(
            check=r[1],
            start=r[2],
            end=r[3],
            failed_tests=r[4],
            reasons=tuple(json.loads(r[5])),
            open=r[6] is None,
            id=r[0],
        )
        return str(r[7]), span, r[6]

    def failed_tests(self, service: str, check: str, window: Interval) -> list[FailedTest]:
        rows = self.db.execute(
            """SELECT f.at, f.duration, f.reason, f.transcript FROM failed_tests f
               JOIN checks c ON c.id = f.check_id
               WHERE c.service = ? AND c.name = ? AND f.at >= ? AND f.at <= ? ORDER BY f.at""",
            (service, check, window[0], window[1]),
        ).fetchall()
        return [
            FailedTest(check=check, at=r[0], duration=r[1], reason=r[2], transcript=r[3])
            for r in rows
        ]

    def coverage(self, service: str, window: Interval, now: float) -> list[Interval]:
        """When the daemon was testing this service: each test covers one interval."""
        rows = self.db.execute(
            """SELECT s.first_at, s.last_at + s.interval FROM segments s
               JOIN checks c ON c.id = s.check_id
               WHERE c.service = ? AND s.last_at + s.interval > ? AND s.first_at < ?""",
            (service, window[0], window[1]),
        ).fetchall()
        spans = [(float(a), min(float(b), now)) for a, b in rows]
        spans += self._pending_coverage(set(self._check_ids(service)), now)
        return [(a, b) for a, b in spans if b > a]

    def _pending_coverage(self, check_ids: set[int], now: float) -> list[Interval]:
        return [
            (p.seg_first, min(p.seg_last + p.seg_interval, now))
            for cid, p in self._pending.items()
            if cid in check_ids and p.seg_tests and p.seg_dirty  # flushed ones are in the table
        ]

    def first_test_at(self, service: str) -> float | None:
        row = self.db.execute(
            "SELECT MIN(s.first_at) FROM segments s JOIN checks c ON c.id = s.check_id WHERE c.service = ?",
            (service,),
        ).fetchone()
        stored = row[0] if row else None
        ids = self._check_ids(service)  # once: it is a query
        pending = [p.seg_first for cid, p in self._pending.items() if p.seg_tests and cid in ids]
        candidates = [x for x in [stored, *pending] if x is not None]
        return min(candidates) if candidates else None

    def raw_verdicts(self, service: str, check: str) -> list[tuple[float, bool, str]]:
        """The check's test history rebuilt from failures and pass runs (for verification)."""
        cid = self.db.execute(
            "SELECT id FROM checks WHERE service = ? AND name = ?", (service, check)
        ).fetchone()
        if cid is None:
            return []
        fails = [
            (a, False, r)
            for a, r in self.db.execute(
                "SELECT at, reason FROM failed_tests WHERE check_id = ?", (cid[0],)
            )
        ]
        passes: list[tuple[float, bool, str]] = []
        for first, last in self.db.execute(
            "SELECT first_at, last_at FROM pass_runs WHERE check_id = ?", (cid[0],)
        ):
            passes += [(first, True, ""), (last, True, "")]
        return sorted(fails + passes)

    # ------------------------------------------------------ exclusions

    def add_exclusion(
        self,
        *,
        service: str,
        start: float,
        end: float,
        kind: str,
        reason: str,
        by: str,
        created_at: float | None = None,
    ) -> ExclusionSpan:
        created = time.time() if created_at is None else created_at
        with self._tx():
            cur = self.db.execute(
                """INSERT INTO exclusions (service, start, "end", kind, reason, by, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (service, start, end, kind, reason, by, created),
            )
            self._bump("exclusions_generation")
        assert cur.lastrowid is not None
        found = self.exclusion(cur.lastrowid)
        assert found is not None
        return found

    def revoke_exclusion(
        self, exclusion_id: int, *, by: str, reason: str, at: float | None = None
    ) -> ExclusionSpan:
        when = time.time() if at is None else at
        with self._tx():
            cur = self.db.execute(
                "UPDATE exclusions SET revoked_at = ?, revoked_by = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL",
                (when, by, reason, exclusion_id),
            )
            if cur.rowcount != 1:
                existing = self.exclusion(exclusion_id)
                raise KeyError(
                    f"exclusion {exclusion_id} "
                    + ("is already revoked" if existing else "does not exist")
                )
            self._bump("exclusions_generation")
        found = self.exclusion(exclusion_id)
        assert found is not None
        return found

    def _bump(self, key: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            (key,),
        )

    def generation(self, key: str = "exclusions_generation") -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    _EXCLUSION_COLUMNS = 'id, service, start, "end", kind, reason, by, created_at, revoked_at, revoked_by, revoke_reason'

    def exclusion(self, exclusion_id: int) -> ExclusionSpan | None:
        row = self.db.execute(
            f"SELECT {self._EXCLUSION_COLUMNS} FROM exclusions WHERE id = ?", (exclusion_id,)
        ).fetchone()
        return _exclusion(row) if row else None

    def exclusions(self, window: Interval | None = None) -> list[ExclusionSpan]:
        if window is None:
            rows = self.db.execute(
                f"SELECT {self._EXCLUSION_COLUMNS} FROM exclusions ORDER BY start, id"
            )
        else:
            rows = self.db.execute(
                f'SELECT {self._EXCLUSION_COLUMNS} FROM exclusions WHERE "end" > ? AND start < ? ORDER BY start, id',
                window,
            )
        return [_exclusion(r) for r in rows]

    def close(self) -> None:
        if not self.readonly:
            self.flush()
        self.db.close()

    def writable(self) -> str | None:
        """None when a write succeeds now, else the reason (for /healthz)."""
        try:
            with self._tx():
                self.db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('healthz', ?)",
                    (str(time.time()),),
                )
        except sqlite3.Error as exc:
            return f"store not writable: {exc}"
        return None


def _exclusion(r: Sequence[Any]) -> ExclusionSpan:  # sqlite rows are untyped
    return ExclusionSpan(
        id=int(r[0]),
        service=str(r[1]),
        start=float(r[2]),
        end=float(r[3]),
        kind=str(r[4]),
        reason=str(r[5]),
        by=str(r[6]),
        created_at=float(r[7]),
        revoked_at=None if r[8] is None else float(r[8]),
        revoked_by=None if r[9] is None else str(r[9]),
        revoke_reason=None if r[10] is None else str(r[10]),
    )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, nesting-safe (an inner block joins the outer one)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.outer:
            return
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")


def open_store(path: Path | str, *, readonly: bool = False) -> SqliteStore:
    return SqliteStore(path, readonly=readonly)
