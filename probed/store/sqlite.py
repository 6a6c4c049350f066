"""The embedded store: one SQLite file in WAL mode (``storage: sqlite:///path``).

:check_idlass:`SqliteStore` implements :check_idlass:`probed.store.base.Store`. Its
connection lives in one dedicated thread (a single-worker executor) and every
statement runs there, so the event loop never blocks on the disk; each call
is a short transaction. Passing tests and coverage are buffered in memory on
the event loop and written by ``flush``; failed tests, the pass that ends a
failure run and outage changes are committed before the call returns.

WAL lets ``probed report`` and ``probed exclude`` use the file while the
daemon runs. The store refuses, without writing anything, a file that is not
a probed store or is damaged (:check_idlass:`DamagedStore`), and stops writing when
its file was deleted or replaced under it (it would write into an unlinked
inode and lose everything at exit).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from probed.core.accounting import ExclusionSpan, Interval, OutageSpan
from probed.core.outages import FailureRun
from probed.store import failures, migrations
from probed.store.base import (
    LIVE_AFTER_FLUSH,
    AlreadyRevoked,
    DamagedStore,
    DeadLetter,
    NewExclusion,
    OutboxEntry,
    OutboxRow,
    ServiceReads,
    StorageError,
    StoredOutage,
    UnknownExclusion,
)
from probed.store.buffered import (
    BufferedStore,
    FailureWrite,
    RunWrite,
    SegWrite,
    covered_until,
)
from probed.store.rows import dead_letter, exclusion_span, outage_span, outbox_row

T = TypeVar("T")
# one failed test appended to the last row of its week unless that row is full or ends
# with this very test (a retry); RETURNING nothing then (failures.PART_TESTS)
_APPEND = (
    "INSERT INTO failure_weeks (check_id, location, week, part, last_at, count, data)"
    " VALUES (:check_id, :location, :week, (SELECT COALESCE(MAX(part), 0) FROM failure_weeks"
    " WHERE check_id = :check_id AND location = :location AND week = :week), :last_at, 1, :data)"
    " ON CONFLICT (check_id, location, week, part) DO UPDATE SET"
    " data = CAST(data || excluded.data AS BLOB), last_at = excluded.last_at,"
    f" count = count + 1 WHERE count < {failures.PART_TESTS} AND last_at <> excluded.last_at"
    " RETURNING count"
)
_LAST_PART = (
    "SELECT part, last_at FROM failure_weeks WHERE check_id = :check_id AND location = :location"
    " AND week = :week ORDER BY part DESC LIMIT 1"
)
_INSERT_PART = (
    "INSERT INTO failure_weeks (check_id, location, week, part, last_at, count, data)"
    " VALUES (:check_id, :location, :week, :part, :last_at, :count, :data)"
)
_HEADER = b"SQLite format 3\x00"
RESTORE_CHUNK = 10_000  # check ids per statement when restoring failure runs


# ------------------------------------------------------------- the store


class SqliteStore(BufferedStore):
    """The async store over one SQLite file; create it with :meth:`open`."""

    def __init__(
        self, db: _Db, executor: ThreadPoolExecutor, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(clock)
        self._db = db
        self._executor = executor
        self.path = db.path
        self.readonly = db.readonly

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        location: str,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> SqliteStore:
        executor = ThreadPoolExecutor(1, thread_name_prefix="probed-sqlite")
        loop = asyncio.get_running_loop()
        try:
            db = await loop.run_in_executor(
                executor, partial(_Db, path, location=location, readonly=readonly)
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db, executor, clock)

    @property
    def location(self) -> str:
        return self._db.location

    @property
    def describe(self) -> str:
        return str(self.path)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))
        except sqlite3.OperationalError as exc:  # locked, read-only, disk full, I/O error
            raise StorageError(f"store {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # malformed pages and the like
            raise _damaged(self.path, exc) from None

    # ---------------------------------------------------- test results

    async def _check_id(self, service: str, check: str, type_: str) -> int:
        return await self._call(self._db.check_id, service, check, type_)

    async def _check_ids(self, checks: Sequence[tuple[str, str, str]]) -> list[int]:
        return await self._call(self._db.check_ids, checks)

    async def _write_batch(
        self,
        runs: Sequence[RunWrite],
        segments: Sequence[SegWrite],
        failure: FailureWrite | None,
        seen_at: float,
    ) -> tuple[list[int], list[int]]:
        return await self._call(self._db.write, runs, segments, failure, seen_at)

    async def _intern(self, texts: Sequence[str]) -> list[tuple[int, str]]:
        return await self._call(self._db.intern, texts)

    async def _lookup(self, ids: Sequence[int]) -> list[tuple[int, str]]:
        return await self._call(self._db.lookup, ids)

    async def _failure_rows(
        self, service: str, check: str, weeks: tuple[int, int], location: str | None
    ) -> list[tuple[str, int, bytes]]:
        return await self._call(self._db.failure_rows, service, check, weeks, location)

    async def _restore_rows(self, check_id: int) -> tuple[float, list[tuple[str, int, bytes]]]:
        return await self._call(self._db.restore_rows, check_id)

    async def _open_outage(self, check_id: int) -> OutageSpan | None:
        return await self._call(self._db.latest_open_outage, check_id)

    async def _stopped(self, segment_ids: Sequence[int] | None) -> None:
        await self._call(self._db.stopped, segment_ids)

    async def _unfinished(self, check_ids: Sequence[int]) -> list[int]:
        return await self._call(self._db.unfinished, check_ids)

    # --------------------------------------------------------- outages

    async def open_outage(self, check_id: int, run: FailureRun) -> int:
        return await self._call(self._db.open_outage, check_id, run)

    async def update_outage(self, outage_id: int, run: FailureRun) -> None:
        await self._call(self._db.update_outage, outage_id, run, None)

    async def close_outage(self, outage_id: int, run: FailureRun, closed_at: float) -> None:
        await self._call(self._db.update_outage, outage_id, run, closed_at)

    async def outages(
        self, service: str, window: Interval, *, location: str | None = None
    ) -> list[OutageSpan]:
        return await self._call(self._db.outages, service, window, location)

    async def outage(self, outage_id: int) -> StoredOutage | None:
        return await self._call(self._db.outage, outage_id)

    async def _stored_coverage(
        self, service: str, window: Interval, now: float, location: str | None
    ) -> list[Interval]:
        return await self._call(self._db.coverage, service, window, now, location)

    async def _stored_first_test_at(self, service: str, location: str | None) -> float | None:
        return await self._call(self._db.first_test_at, service, location)

    async def _stored_month_reads(self, window: Interval, now: float) -> dict[str, ServiceReads]:
        return await self._call(self._db.month_reads, window, now)

    async def locations(self) -> list[str]:
        return await self._call(self._db.locations)

    # ------------------------------------------------------ exclusions

    async def add_exclusion(
        self, new: NewExclusion, *, created_at: float | None = None
    ) -> ExclusionSpan:
        return await self._call(self._db.add_exclusion, new, created_at)

    async def revoke_exclusion(
        self, exclusion_id: int, *, by: str, reason: str, at: float | None = None
    ) -> ExclusionSpan:
        return await self._call(self._db.revoke_exclusion, exclusion_id, by, reason, at)

    async def exclusion(self, exclusion_id: int) -> ExclusionSpan | None:
        return await self._call(self._db.exclusion, exclusion_id)

    async def exclusions(self, window: Interval | None = None) -> list[ExclusionSpan]:
        return await self._call(self._db.exclusions, window)

    async def generation(self) -> int:
        return await self._call(self._db.generation)

    # ---------------------------------------------------------- outbox

    async def enqueue(self, entries: Sequence[OutboxEntry], now: float) -> None:
        await self._call(self._db.enqueue, entries, now)

    async def claim(self, hook: str, now: float, lease: float) -> OutboxRow | None:
        return await self._call(self._db.claim, hook, now, lease)

    async def delivered(self, row_id: int, at: float) -> None:
        await self._call(self._db.delivered, row_id, at)

    async def failed(self, row_id: int, reason: str, next_attempt_at: float) -> None:
        await self._call(self._db.failed, row_id, reason, next_attempt_at)

    async def history(self, hook: str) -> list[OutboxRow]:
        return await self._call(self._db.history, hook)

    async def dead_letter(self, row_id: int, reason: str, at: float) -> None:
        await self._call(self._db.dead_letter, row_id, reason, at)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return await self._call(self._db.dead_letters, limit)

    async def undelivered(self) -> dict[str, int]:
        return await self._call(self._db.undelivered)

    async def announced(self, service: str, month: str) -> frozenset[str]:
        return await self._call(self._db.announced, service, month)

    async def announce(
        self,
        service: str,
        month: str,
        whats: Sequence[str],
        at: float,
        entries: Sequence[OutboxEntry],
    ) -> bool:
        return await self._call(self._db.announce, service, month, whats, at, entries)

    # ------------------------------------------------------- lifecycle

    async def writable(self) -> str | None:
        return await self._call(self._db.writable)

    async def close(self) -> None:
        try:
            if not self.readonly:
                await self._stop_session()
        finally:
            await self._call(self._db.close)
            self._executor.shutdown(wait=True)


# ------------------------------------------------- the connection's thread


class _Db:
    """The connection and every statement; used only from the store's thread."""

    def __init__(self, path: Path, *, location: str, readonly: bool) -> None:
        self.path = Path(path)
        self.location = location
        self.readonly = readonly
        self.broken: str | None = None  # why writes are refused (file deleted or replaced)
        if readonly and not self.path.exists():
            raise StorageError(f"no store at {self.path}: has the daemon run yet?")
        _check_header(self.path)
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            self.db = sqlite3.connect(
                uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            self.inode = _inode(self.path)  # writes stop if the file is deleted or replaced
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open store {self.path}: {exc}") from None
        try:
            self._identify()
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: a commit survives a process crash (kill -9);
                # only an OS crash or power loss can drop the last commits.
                self.db.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise _damaged(self.path, exc) from None
        except BaseException:
            self.db.close()
            raise

    # -------------------------------------------------------- schema

    def _identify(self) -> None:
        """Refuse, before any write, a file that is not a probed store or is damaged."""
        self.db.execute("PRAGMA busy_timeout = 10000")
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        app = int(self.db.execute("PRAGMA application_id").fetchone()[0])
        tables = {
            str(r[0])
            for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        ok = app == migrations.APPLICATION_ID or (
            app == 0 and version == 1 and {"checks", "meta"} <= tables  # written before version 2
        )
        if not ok and (tables or version or app):
            raise DamagedStore(
                f"the file at {self.path} is not a probed store (no probed schema); "
                "point storage: at a new file"
            )
        if version > migrations.SCHEMA_VERSION:
            raise StorageError(
                f"store {self.path} has schema {version}, newer than this probed"
                f" ({migrations.SCHEMA_VERSION})"
            )
        if self.readonly and version == 0:
            raise StorageError(f"store {self.path} is empty: has the daemon run yet?")
        row = self.db.execute("PRAGMA quick_check(1)").fetchone()
        if row is None or row[0] != "ok":
            raise _damaged(self.path, row[0] if row else "quick_check gave no answer")

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        for step in migrations.pending("sqlite", version, self.location):
            with self._tx():
                for statement in step.statements:
                    self.db.execute(statement)
                if step.convert:
                    self._convert_failed_tests()
                for statement in step.then:
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {step.version}")

    def _convert_failed_tests(self) -> None:
        """Version 5: the ``failed_tests`` rows into ``texts`` and ``failure_weeks``."""
        texts = [
            str(r[0])
            for r in self.db.execute(
                "SELECT reason FROM failed_tests UNION SELECT transcript FROM failed_tests"
            )
        ]
        ids = dict((t, i) for i, t in self.intern(texts, commit=False))
        ids[""] = 0
        rows = self.db.execute(
            "SELECT check_id, location, at, duration, reason, transcript FROM failed_tests"
            " ORDER BY check_id, location, at"
        )
        self.db.executemany(
            _INSERT_PART,
            (asdict(b) for b in failures.pack(rows, ids)),
        )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT; refuses to write into a deleted or replaced file."""
        if not self.readonly:
            self._check_file()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _check_file(self) -> None:
        if self.broken is None and _inode(self.path) != self.inode:
            self.broken = (
                f"the store file {self.path} was deleted or replaced while probed ran;"
                " nothing more is written to it: restart probed"
            )
        if self.broken is not None:
            raise StorageError(self.broken)

    # -------------------------------------------------------- writes

    def check_id(self, service: str, check: str, type_: str) -> int:
        row = self.db.execute(
            "SELECT id, type FROM checks WHERE service = ? AND name = ?", (service, check)
        ).fetchone()
        if row is not None and row[1] == type_:
            return int(row[0])
        with self._tx():
            self.db.execute(
                "INSERT INTO checks (service, name, type) VALUES (?, ?, ?) "
                "ON CONFLICT (service, name) DO UPDATE SET type = excluded.type",
                (service, check, type_),
            )
            found = self.db.execute(
                "SELECT id FROM checks WHERE service = ? AND name = ?", (service, check)
            ).fetchone()
        return int(found[0])

    def check_ids(self, checks: Sequence[tuple[str, str, str]]) -> list[int]:
        """Every check's id: one read of the table, one transaction for the new ones."""
        known = {
            (str(service), str(name)): (int(cid), str(type_))
            for cid, service, name, type_ in self.db.execute(
                "SELECT id, service, name, type FROM checks"
            )
        }
        changed = [c for c in checks if known.get((c[0], c[1]), (0, None))[1] != c[2]]
        if changed:
            with self._tx():
                self.db.executemany(
                    "INSERT INTO checks (service, name, type) VALUES (?, ?, ?) "
                    "ON CONFLICT (service, name) DO UPDATE SET type = excluded.type",
                    changed,
                )
                for service, name, type_ in changed:
                    row = self.db.execute(
                        "SELECT id FROM checks WHERE service = ? AND name = ?", (service, name)
                    ).fetchone()
                    known[(service, name)] = (int(row[0]), type_)
        return [known[(service, name)][0] for service, name, _ in checks]

    def write(
        self,
        runs: Sequence[RunWrite],
        segments: Sequence[SegWrite],
        failure: FailureWrite | None,
        seen_at: float,
    ) -> tuple[list[int], list[int]]:
        """One transaction: pass runs, segments, and the failed test they end."""
        with self._tx():
            run_ids = [self._run(r) for r in runs]
            seg_ids = [self._segment(s, seen_at) for s in segments]
            if failure is not None:
                if failure.run_id is not None:  # folded into the failed test's record
                    self.db.execute("DELETE FROM pass_runs WHERE id = ?", (failure.run_id,))
                self._append(failure)
        return run_ids, seg_ids

    def _append(self, failure: FailureWrite) -> None:
        week, at, data = failure.row()
        key = {"check_id": failure.check_id, "location": self.location, "week": week}
        if self.db.execute(_APPEND, {**key, "last_at": at, "data": data}).fetchall():
            return
        part, last_at = self.db.execute(_LAST_PART, key).fetchone()
        if last_at != at:  # full: the next part
            self.db.execute(
                _INSERT_PART, {**key, "part": part + 1, "last_at": at, "count": 1, "data": data}
            )

    def intern(self, texts: Sequence[str], *, commit: bool = True) -> list[tuple[int, str]]:
        with self._tx() if commit else nullcontext():
            self.db.executemany(
                "INSERT INTO texts (digest, text) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING",
                [(failures.digest(t), t) for t in texts if t],
            )
            return [
                (
                    int(
                        self.db.execute(
                            "SELECT id FROM texts WHERE digest = ?", (failures.digest(t),)
                        ).fetchone()[0]
                    ),
                    t,
                )
                for t in texts
                if t
            ]

    def lookup(self, ids: Sequence[int]) -> list[tuple[int, str]]:
        found: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ", ".join("?" for _ in chunk)
            found += self.db.execute(f"SELECT id, text FROM texts WHERE id IN ({marks})", chunk)
        return [(int(i), str(t)) for i, t in found]

    def _run(self, r: RunWrite) -> int:
        if r.id is not None:
            self.db.execute(
                "UPDATE pass_runs SET last_at = ?, count = ? WHERE id = ?", (r.last, r.count, r.id)
            )
            return r.id
        cur = self.db.execute(
            "INSERT INTO pass_runs (check_id, first_at, last_at, count, location)"
            " VALUES (?, ?, ?, ?, ?)",
            (r.check_id, r.first, r.last, r.count, self.location),
        )
        return int(cur.lastrowid or 0)

    def _segment(self, s: SegWrite, seen_at: float) -> int:
        if s.id is not None:
            self.db.execute(
                "UPDATE segments SET last_at = ?, tests = ?, seen_at = ? WHERE id = ?",
                (s.last, s.tests, seen_at, s.id),
            )
            return s.id
        cur = self.db.execute(
            "INSERT INTO segments (check_id, first_at, last_at, interval, timeout, tests,"
            " seen_at, location) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (s.check_id, s.first, s.last, s.interval, s.timeout, s.tests, seen_at, self.location),
        )
        return int(cur.lastrowid or 0)

    def stopped(self, segment_ids: Sequence[int] | None) -> None:
        """These segments (None: all of this location's) are no longer live."""
        with self._tx():
            if segment_ids is None:
                self.db.execute(
                    "UPDATE segments SET seen_at = NULL WHERE location = ? AND seen_at IS NOT NULL",
                    (self.location,),
                )
            else:
                self.db.executemany(
                    "UPDATE segments SET seen_at = NULL WHERE id = ?", [(i,) for i in segment_ids]
                )

    def open_outage(self, check_id: int, run: FailureRun) -> int:
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO outages (check_id, start, last_failed, failed_tests, reasons, location)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    check_id,
                    run.first_at,
                    run.last_at,
                    run.count,
                    json.dumps(list(run.reasons)),
                    self.location,
                ),
            )
        return int(cur.lastrowid or 0)

    def update_outage(self, outage_id: int, run: FailureRun, closed_at: float | None) -> None:
        with self._tx():
            self.db.execute(  # start too: a clock step moves an open run as a whole
                "UPDATE outages SET start = ?, last_failed = ?, failed_tests = ?, reasons = ?,"
                " closed_at = COALESCE(?, closed_at) WHERE id = ?",
                (
                    run.first_at,
                    run.last_at,
                    run.count,
                    json.dumps(list(run.reasons)),
                    closed_at,
                    outage_id,
                ),
            )

    # --------------------------------------------------------- reads

    def unfinished(self, check_ids: Sequence[int]) -> list[int]:
        """The checks whose latest failed test here is after their latest pass here: two
        index lookups per check, one statement per chunk."""
        found: list[int] = []
        for at in range(0, len(check_ids), RESTORE_CHUNK):
            chunk = check_ids[at : at + RESTORE_CHUNK]
            rows = self.db.execute(
                "SELECT c.id FROM checks c WHERE c.id IN (SELECT value FROM json_each(?))"
                " AND ((SELECT MAX(f.last_at) FROM failure_weeks f"
                "      WHERE f.check_id = c.id AND f.location = ?)"
                " > COALESCE((SELECT MAX(p.last_at) FROM pass_runs p"
                "      WHERE p.check_id = c.id AND p.location = ?), -1e308)"
                " OR EXISTS (SELECT 1 FROM outages o WHERE o.check_id = c.id"
                "      AND o.location = ? AND o.closed_at IS NULL))",
                (json.dumps([int(c) for c in chunk]), self.location, self.location, self.location),
            ).fetchall()
            found += [int(cid) for (cid,) in rows]
        return found

    def restore_rows(self, check_id: int) -> tuple[float, list[tuple[str, int, bytes]]]:
        row = self.db.execute(
            "SELECT MAX(last_at) FROM pass_runs WHERE check_id = ? AND location = ?",
            (check_id, self.location),
        ).fetchone()
        last_pass = float(row[0]) if row and row[0] is not None else float("-inf")
        first_week = failures.week_of(last_pass) if math.isfinite(last_pass) else -(2**62)
        rows = self.db.execute(
            "SELECT location, week, data FROM failure_weeks WHERE check_id = ? AND location = ?"
            " AND week >= ?",
            (check_id, self.location, first_week),
        ).fetchall()
        return last_pass, rows

    def latest_open_outage(self, check_id: int) -> OutageSpan | None:
        row = self.db.execute(
            self._OUTAGE + " WHERE o.check_id = ? AND o.location = ? AND o.closed_at IS NULL"
            " ORDER BY o.id DESC LIMIT 1",
            (check_id, self.location),
        ).fetchone()
        return None if row is None else outage_span(row)

    _OUTAGE = (
        "SELECT o.id, c.name, o.start, o.last_failed, o.failed_tests, o.reasons, o.closed_at,"
        " o.location, c.service FROM outages o JOIN checks c ON c.id = o.check_id"
    )

    def outages(self, service: str, window: Interval, location: str | None) -> list[OutageSpan]:
        rows = self.db.execute(
            self._OUTAGE + " WHERE c.service = ? AND o.last_failed >= ? AND o.start < ?"
            " AND (? IS NULL OR o.location = ?) ORDER BY o.start, o.id",
            (service, window[0], window[1], location, location),
        ).fetchall()
        return [outage_span(r) for r in rows]

    def outage(self, outage_id: int) -> StoredOutage | None:
        r = self.db.execute(self._OUTAGE + " WHERE o.id = ?", (outage_id,)).fetchone()
        return None if r is None else StoredOutage(str(r[8]), outage_span(r), r[6])

    def failure_rows(
        self, service: str, check: str, weeks: tuple[int, int], location: str | None
    ) -> list[tuple[str, int, bytes]]:
        return self.db.execute(
            """SELECT f.location, f.week, f.data FROM failure_weeks f
               JOIN checks c ON c.id = f.check_id
               WHERE c.service = ? AND c.name = ? AND f.week >= ? AND f.week <= ?
               AND (? IS NULL OR f.location = ?)""",
            (service, check, weeks[0], weeks[1], location, location),
        ).fetchall()

    def coverage(
        self, service: str, window: Interval, now: float, location: str | None
    ) -> list[Interval]:
        """Stored segments. A segment that a live daemon flushed while its check was on
        time (``seen_at``, at most LIVE_AFTER_FLUSH ago) reaches to ``now``: its tail is
        tests not flushed yet, not a gap."""
        rows = self.db.execute(
            """SELECT s.first_at, s.last_at + s.interval + s.timeout, s.seen_at FROM segments s
               JOIN checks c ON c.id = s.check_id
               WHERE c.service = ? AND s.first_at < ?
               AND (s.last_at + s.interval + s.timeout > ? OR s.seen_at >= ?)
               AND (? IS NULL OR s.location = ?)""",
            (service, window[1], window[0], now - LIVE_AFTER_FLUSH, location, location),
        ).fetchall()
        return [(float(a), covered_until(float(b), seen, now)) for a, b, seen in rows]

    def first_test_at(self, service: str, location: str | None) -> float | None:
        row = self.db.execute(
            "SELECT MIN(s.first_at) FROM segments s JOIN checks c ON c.id = s.check_id"
            " WHERE c.service = ? AND (? IS NULL OR s.location = ?)",
            (service, location, location),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def month_reads(self, window: Interval, now: float) -> dict[str, ServiceReads]:
        found: dict[str, ServiceReads] = {}
        for r in self.db.execute(
            self._OUTAGE + " WHERE o.last_failed >= ? AND o.start < ? ORDER BY o.start, o.id",
            window,
        ):
            found.setdefault(r[8], ServiceReads()).outages.append(outage_span(r))
        for service, location, a, b, seen in self.db.execute(
            """SELECT c.service, s.location, s.first_at, s.last_at + s.interval + s.timeout,
               s.seen_at FROM segments s JOIN checks c ON c.id = s.check_id
               WHERE s.first_at < ? AND (s.last_at + s.interval + s.timeout > ? OR s.seen_at >= ?)""",
            (window[1], window[0], now - LIVE_AFTER_FLUSH),
        ):
            spans = found.setdefault(service, ServiceReads()).coverage.setdefault(location, [])
            spans.append((float(a), covered_until(float(b), seen, now)))
        for service, first in self.db.execute(
            "SELECT c.service, MIN(s.first_at) FROM segments s JOIN checks c ON c.id = s.check_id"
            " GROUP BY c.service"
        ):
            found.setdefault(service, ServiceReads()).first_test_at = float(first)
        return found

    def locations(self) -> list[str]:
        rows = self.db.execute(
            "SELECT DISTINCT location FROM segments UNION SELECT DISTINCT location FROM failure_weeks"
        )
        return sorted(str(r[0]) for r in rows)

    # ---------------------------------------------------- exclusions

    _EXCLUSION = (
        'SELECT id, service, start, "end", kind, reason, by, created_at, revoked_at,'
        " revoked_by, revoke_reason FROM exclusions"
    )

    def add_exclusion(self, new: NewExclusion, created_at: float | None) -> ExclusionSpan:
        created = time.time() if created_at is None else created_at
        with self._tx():
            cur = self.db.execute(
                """INSERT INTO exclusions (service, start, "end", kind, reason, by, created_at,
                   location) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    new.service,
                    new.start,
                    new.end,
                    new.kind,
                    new.reason,
                    new.by,
                    created,
                    self.location,
                ),
            )
            self._bump("exclusions_generation")
        found = self.exclusion(int(cur.lastrowid or 0))
        assert found is not None
        return found

    def revoke_exclusion(
        self, exclusion_id: int, by: str, reason: str, at: float | None
    ) -> ExclusionSpan:
        when = time.time() if at is None else at
        with self._tx():
            cur = self.db.execute(
                "UPDATE exclusions SET revoked_at = ?, revoked_by = ?, revoke_reason = ?"
                " WHERE id = ? AND revoked_at IS NULL",
                (when, by, reason, exclusion_id),
            )
            if cur.rowcount != 1:
                if self.exclusion(exclusion_id) is None:
                    raise UnknownExclusion(f"exclusion {exclusion_id} does not exist")
                raise AlreadyRevoked(f"exclusion {exclusion_id} is already revoked")
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

    def generation(self) -> int:
        row = self.db.execute(
            "SELECT value FROM meta WHERE key = 'exclusions_generation'"
        ).fetchone()
        return int(row[0]) if row else 0

    def exclusion(self, exclusion_id: int) -> ExclusionSpan | None:
        row = self.db.execute(self._EXCLUSION + " WHERE id = ?", (exclusion_id,)).fetchone()
        return exclusion_span(row) if row else None

    def exclusions(self, window: Interval | None) -> list[ExclusionSpan]:
        if window is None:
            rows = self.db.execute(self._EXCLUSION + " ORDER BY start, id")
        else:
            rows = self.db.execute(
                self._EXCLUSION + ' WHERE "end" > ? AND start < ? ORDER BY start, id', window
            )
        return [exclusion_span(r) for r in rows]

    # -------------------------------------------------------- outbox

    def enqueue(self, entries: Sequence[OutboxEntry], now: float) -> None:
        with self._tx():
            self._enqueue(entries, now)

    def _enqueue(self, entries: Sequence[OutboxEntry], now: float) -> None:
        self.db.executemany(
            "INSERT INTO outbox (hook, event_json, created_at, next_attempt_at, location)"
            " VALUES (?, ?, ?, ?, ?)",
            [(hook, e.payload, now, now, self.location) for e in entries for hook in e.hooks],
        )

    _ROW = "SELECT id, hook, event_json, created_at, attempts, next_attempt_at, location"

    def claim(self, hook: str, now: float, lease: float) -> OutboxRow | None:
        with self._tx():
            r = self.db.execute(
                self._ROW + ", claimed_by, claimed_until FROM outbox"
                " WHERE hook = ? AND delivered_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT 1",
                (hook,),
            ).fetchone()
            if r is None:
                return None
            due = float(r[5])
            if r[7] not in (None, self.location) and r[8] is not None and r[8] > now:
                due = max(due, float(r[8]))  # another instance holds it
            if due > now:
                return outbox_row(r, due, claimed=False)
            self.db.execute(
                "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id = ?",
                (self.location, now + lease, r[0]),
            )
        return outbox_row(r, due, claimed=True)

    def delivered(self, row_id: int, at: float) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL,"
                " claimed_by = NULL, claimed_until = NULL WHERE id = ? AND delivered_at IS NULL",
                (at, row_id),
            )

    def failed(self, row_id: int, reason: str, next_attempt_at: float) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " claimed_by = NULL, claimed_until = NULL WHERE id = ?",
                (reason, next_attempt_at, row_id),
            )

    def history(self, hook: str) -> list[OutboxRow]:
        rows = self.db.execute(
            self._ROW + " FROM outbox WHERE hook = ? AND delivered_at IS NOT NULL ORDER BY id",
            (hook,),
        )
        return [outbox_row(r, float(r[5]), claimed=False) for r in rows]

    def dead_letter(self, row_id: int, reason: str, at: float) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE outbox SET dead_at = ?, last_error = ?, claimed_by = NULL,"
                " claimed_until = NULL WHERE id = ? AND delivered_at IS NULL",
                (at, reason, row_id),
            )

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        rows = self.db.execute(
            "SELECT id, hook, event_json, created_at, attempts, dead_at, last_error FROM outbox"
            " WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [dead_letter(r) for r in rows]

    def undelivered(self) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT hook, COUNT(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL"
            " GROUP BY hook"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    def announced(self, service: str, month: str) -> frozenset[str]:
        rows = self.db.execute(
            "SELECT what FROM hook_announcements WHERE service = ? AND month = ?", (service, month)
        )
        return frozenset(str(r[0]) for r in rows)

    def announce(
        self,
        service: str,
        month: str,
        whats: Sequence[str],
        at: float,
        entries: Sequence[OutboxEntry],
    ) -> bool:
        with self._tx():
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO hook_announcements (service, month, what, at, location)"
                " VALUES (?, ?, ?, ?, ?)",
                [(service, month, what, at, self.location) for what in whats],
            )
            if self.db.total_changes == before:
                return False
            self._enqueue(entries, at)
        return True

    # ----------------------------------------------------- lifecycle

    def writable(self) -> str | None:
        if self.readonly:
            return "store opened read-only"
        try:
            with self._tx():
                self.db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('healthz', ?)",
                    (str(time.time()),),
                )
        except StorageError as exc:
            return str(exc)
        except sqlite3.Error as exc:
            return f"store not writable: {exc}"
        return None

    def close(self) -> None:
        self.db.close()


# ------------------------------------------------------------- helpers


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _check_header(path: Path) -> None:
    """A non-empty file that does not start like an SQLite database is refused unread."""
    try:
        with path.open("rb") as f:
            head = f.read(len(_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot open store {path}: {exc.strerror or exc}") from None
    if head and head != _HEADER:
        raise DamagedStore(
            f"the store at {path} is damaged or not an SQLite database (bad header);"
            f" try sqlite3 {path} '.recover'"
        )


def _damaged(path: Path, problem: object) -> DamagedStore:
    text = " ".join(str(problem).replace("*** in database main ***", "").split())  # one line
    return DamagedStore(f"the store at {path} is damaged: {text}; try sqlite3 {path} '.recover'")
