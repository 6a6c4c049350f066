"""The shared store: PostgreSQL, written by several probed daemons, read by every report.

``storage: postgresql://USER@HOST:PORT/DB`` (``?sslmode=verify-full`` and any
other libpq parameter may follow). The password comes from
``storage_password_file:`` (or the systemd credential of that name), from
libpq's ``PGPASSFILE`` / ``~/.pgpass``, or is not needed (peer or
certificate authentication); a password inside the URL is refused.

**Driver: psycopg 3 with psycopg_pool, not asyncpg.** psycopg talks through
libpq itself, so ``sslmode``, ``sslrootcert``, ``PGPASSFILE``, service files,
``target_session_attrs`` and every ``PG*`` variable behave exactly as in
``psql`` and the operator's other tools; asyncpg re-implements a subset of
libpq's parameters in Python, and each difference would be ours to explain.
asyncpg's faster binary protocol buys little here: passes and coverage are
written in batches, so the daemon sends a few statements per second plus one
transaction per failed test (``bench/stores.py`` measures the cost).

Rules kept here, beyond the interface's:

- one transaction per durable step (a failed test with the pass run it
  ends; a flush of every buffered pass run and segment; an outage change;
  an exclusion; a set of outbox rows);
- ids come from ``INSERT … ON CONFLICT … RETURNING`` (checks, outages,
  failed tests), so two daemons, or a retry after a lost answer, never
  create a row twice;
- migrations run once, in one transaction under an advisory lock: daemons
  starting together wait for the first and then find the schema current;
- outbox rows are claimed with ``FOR UPDATE SKIP LOCKED`` on the hook's
  oldest undelivered row only: one daemon delivers each event, in order;
- no operation waits forever: each one (getting a connection included) is
  bounded by ``storage_timeout`` (10 s), then fails as StorageError and the
  daemon's spool takes over. A network that drops packets without refusing
  them would otherwise hold a query until the kernel gives up (minutes);
  libpq's TCP keepalives and ``tcp_user_timeout`` also close such a
  connection. Schema migrations are not bounded (they may wait for another
  daemon's, and a large store's may take long).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from probed.core.accounting import ExclusionSpan, Interval, OutageSpan
from probed.core.outages import FailureRun
from probed.store import failures, migrations
from probed.store.base import (
    LIVE_AFTER_FLUSH,
    STORE_TIMEOUT,
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
from probed.store.rows import exclusion_span, outage_span, outbox_row

if TYPE_CHECKING:
    from probed.config import Config

POOL_SIZE = 4  # the recorder, flushes, the API and hooks rarely need more at once
CONNECT_TIMEOUT = 5  # seconds for libpq to connect (unless the URL says otherwise)
ACQUIRE_TIMEOUT = 2.0  # seconds to wait for a pooled connection: a down server fails fast
MIGRATION_LOCK = migrations.APPLICATION_ID  # the advisory lock key
# libpq's defaults unless the URL sets them: notice a dead peer of an idle connection
# within about 10 + 3 x 5 s, and give up on unacknowledged data after the timeout
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5}
KEEPALIVE_COUNT = 3

Cursor = psycopg.AsyncCursor[tuple[Any, ...]]
# one failed test appended to the last row of its week unless that row is full or ends
# with this very test (a retry); RETURNING nothing then (failures.PART_TESTS)
_APPEND = (
    "INSERT INTO failure_weeks (check_id, location, week, part, last_at, count, data)"
    " VALUES (%(check_id)s, %(location)s, %(week)s, (SELECT COALESCE(max(part), 0) FROM failure_weeks"
    " WHERE check_id = %(check_id)s AND location = %(location)s AND week = %(week)s), %(last_at)s, 1, %(data)s)"
    " ON CONFLICT (check_id, location, week, part) DO UPDATE SET"
    " data = failure_weeks.data || EXCLUDED.data, last_at = EXCLUDED.last_at,"
    f" count = failure_weeks.count + 1 WHERE failure_weeks.count < {failures.PART_TESTS}"
    " AND failure_weeks.last_at <> EXCLUDED.last_at RETURNING count"
)
_LAST_PART = (
    "SELECT part, last_at FROM failure_weeks WHERE check_id = %(check_id)s AND location = %(location)s"
    " AND week = %(week)s ORDER BY part DESC LIMIT 1"
)
_INSERT_PART = (
    "INSERT INTO failure_weeks (check_id, location, week, part, last_at, count, data)"
    " VALUES (%(check_id)s, %(location)s, %(week)s, %(part)s, %(last_at)s, %(count)s, %(data)s)"
)


def check_url(url: str) -> dict[str, str]:
    """The URL's libpq parameters; ValueError for a malformed URL or one with a password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"not a PostgreSQL URL: {exc}") from None
    if "password" in params:
        raise ValueError(
            "the URL contains a password: put it in storage_password_file: "
            "(or PGPASSFILE), like postgresql://probed@db.example.net:5432/probed"
        )
    return {k: str(v) for k, v in params.items() if v is not None}


def describe_url(url: str) -> str:
    """The URL as shown in messages: it never holds a password (``check_url``)."""
    return url


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class PostgresStore(BufferedStore):
    """A :class:`~probed.store.base.Store` on PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        url: str,
        *,
        location: str,
        readonly: bool,
        clock: Callable[[], float] = time.time,
        operation_timeout: float = STORE_TIMEOUT,
    ) -> None:
        super().__init__(clock)
        self.pool = pool
        self.url = url
        self.readonly = readonly
        self.operation_timeout = operation_timeout
        self._location = location

    @property
    def location(self) -> str:
        return self._location

    @property
    def describe(self) -> str:
        return describe_url(self.url)

    # ---------------------------------------------------------- plumbing

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        location: str,
        readonly: bool = False,
        password: str | None = None,
        clock: Callable[[], float] = time.time,
        operation_timeout: float = STORE_TIMEOUT,
    ) -> PostgresStore:
        try:
            params = check_url(url)
        except ValueError as exc:
            raise StorageError(f"storage {url}: {exc}") from None
        extra: dict[str, Any] = {"application_name": f"probed {location}"[:63]}
        defaults = {
            "connect_timeout": CONNECT_TIMEOUT,
            **KEEPALIVES,
            "keepalives_count": KEEPALIVE_COUNT,
            "tcp_user_timeout": int(operation_timeout * 1000),
        }
        extra |= {key: value for key, value in defaults.items() if key not in params}
        if password is not None:
            extra["password"] = password
        conninfo = make_conninfo(url, **extra)
        try:  # once directly: libpq's own reason (password, TLS, refused) at once
            first = await psycopg.AsyncConnection.connect(conninfo)
        except psycopg.Error as exc:
            raise StorageError(f"cannot open store {url}: {_reason(exc)}") from None
        await first.close()
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={"autocommit": True},
            timeout=ACQUIRE_TIMEOUT,
            name="probed-store",
            open=False,
        )
        store = cls(
            pool,
            url,
            location=location,
            readonly=readonly,
            clock=clock,
            operation_timeout=operation_timeout,
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT + 1)
        except PoolTimeout:
            await pool.close()
            raise StorageError(
                f"cannot open store {url}: no connection within {CONNECT_TIMEOUT + 1}s"
            ) from None
        try:
            await (store._check_version() if readonly else store._migrate())
        except BaseException:
            await pool.close()
            raise
        return store

    @asynccontextmanager
    async def _cursor(
        self, *, transaction: bool = True, bounded: bool = True
    ) -> AsyncIterator[Cursor]:
        """A cursor on a pooled connection, in one transaction; every failure a StorageError.

        ``bounded``: the whole block (connection, statements, commit) fails after
        ``operation_timeout`` seconds; psycopg then cancels the query (or closes the connection
        when the server cannot be reached) before the error is raised."""
        try:
            async with (
                asyncio.timeout(self.operation_timeout if bounded else None),
                self.pool.connection() as conn,
            ):
                if transaction:
                    async with conn.transaction(), conn.cursor() as cur:
                        yield cur
                else:
                    async with conn.cursor() as cur:
                        yield cur
        except PoolTimeout:  # a psycopg.Error: first
            raise StorageError(
                f"store {self.describe}: no connection within {ACQUIRE_TIMEOUT:g}s"
                " (is PostgreSQL up and reachable?)"
            ) from None
        except psycopg.Error as exc:
            raise StorageError(f"store {self.describe}: {_reason(exc)}") from None
        except TimeoutError:
            raise StorageError(
                f"store {self.describe}: no answer within {self.operation_timeout:g}s"
                " (storage_timeout; is the network to PostgreSQL up?)"
            ) from None

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._cursor(transaction=False) as cur:
            await cur.execute(sql, params)
            return await cur.fetchall()

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    # ------------------------------------------------------------ schema

    async def _version(self, cur: Cursor) -> int:
        await cur.execute("SELECT to_regclass('meta') IS NOT NULL")
        if not (await cur.fetchone() or (False,))[0]:
            await cur.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
            tables = (await cur.fetchone() or (0,))[0]
            if tables:
                raise DamagedStore(
                    f"the database of {self.describe} has {tables} tables but is not a probed"
                    " store; probed never writes to it (use an empty database)"
                )
            return 0
        await cur.execute("SELECT key, value FROM meta WHERE key IN ('schema_version', 'store')")
        meta: dict[str, str] = {str(k): str(v) for k, v in await cur.fetchall()}
        if meta.get("schema_version") is None:
            raise DamagedStore(f"{self.describe} has a meta table but no probed schema version")
        return int(meta["schema_version"])

    async def _migrate(self) -> None:
        async with self._cursor(bounded=False) as cur:
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            version = await self._version(cur)
            self._newer(version)
            for step in migrations.pending("postgresql", version, self.location):
                # one round trip per version (simple query protocol: no parameters)
                await cur.execute(";\n".join(step.statements).encode())
                if step.convert:
                    await self._convert_failed_tests(cur)
                await cur.execute(
                    ";\n".join(
                        [
                            *step.then,
                            "INSERT INTO meta (key, value) VALUES ('schema_version',"
                            f" '{step.version:d}') ON CONFLICT (key) DO UPDATE"
                            " SET value = EXCLUDED.value",
                        ]
                    ).encode()
                )

    async def _convert_failed_tests(self, cur: Cursor) -> None:
        """Version 5: the ``failed_tests`` rows into ``texts`` and ``failure_weeks``."""
        await cur.execute(
            "SELECT reason FROM failed_tests UNION SELECT transcript FROM failed_tests"
        )
        texts = [str(r[0]) for r in await cur.fetchall()]
        ids = {t: i for i, t in await self._interned(cur, texts)}
        ids[""] = 0
        await cur.execute("SELECT DISTINCT check_id FROM failed_tests ORDER BY 1")
        for (check_id,) in await cur.fetchall():  # one check at a time: bounded memory
            await cur.execute(
                "SELECT check_id, location, at, duration, reason, transcript FROM failed_tests"
                " WHERE check_id = %s ORDER BY location, at",
                (check_id,),
            )
            rows = await cur.fetchall()
            await cur.executemany(
                _INSERT_PART,
                [asdict(b) for b in failures.pack(rows, ids)],
            )

    async def _check_version(self) -> None:
        async with self._cursor(transaction=False) as cur:
            version = await self._version(cur)
        self._newer(version)
        if version == 0:
            raise StorageError(f"store {self.describe} is empty: has the daemon run yet?")

    def _newer(self, version: int) -> None:
        if version > migrations.SCHEMA_VERSION:
            raise StorageError(
                f"store {self.describe} has schema {version}, newer than this probed"
                f" ({migrations.SCHEMA_VERSION})"
            )

    # ----------------------------------------------------- test results

    async def _check_id(self, service: str, check: str, type_: str) -> int:
        async with self._cursor() as cur:
            await cur.execute(
                "INSERT INTO checks (service, name, type) VALUES (%s, %s, %s)"
                " ON CONFLICT (service, name) DO UPDATE SET type = EXCLUDED.type"
                " WHERE checks.type <> EXCLUDED.type RETURNING id",
                (service, check, type_),
            )
            row = await cur.fetchone()
            if row is None:  # it existed with this type: nothing was updated, nothing returned
                await cur.execute(
                    "SELECT id FROM checks WHERE service = %s AND name = %s", (service, check)
                )
                row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    async def _check_ids(self, checks: Sequence[tuple[str, str, str]]) -> list[int]:
        """Every check's id: one read of the table, one transaction for the new ones."""
        known = {
            (str(service), str(name)): (int(cid), str(type_))
            for cid, service, name, type_ in await self._rows(
                "SELECT id, service, name, type FROM checks"
            )
        }
        changed = [c for c in checks if known.get((c[0], c[1]), (0, None))[1] != c[2]]
        if changed:
            async with self._cursor() as cur:
                await cur.execute(
                    "INSERT INTO checks (service, name, type)"
                    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])"
                    " ON CONFLICT (service, name) DO UPDATE SET type = EXCLUDED.type"
                    " RETURNING id, service, name, type",
                    ([c[0] for c in changed], [c[1] for c in changed], [c[2] for c in changed]),
                )
                for cid, service, name, type_ in await cur.fetchall():
                    known[(str(service), str(name))] = (int(cid), str(type_))
        return [known[(service, name)][0] for service, name, _ in checks]

    async def _write_batch(
        self,
        runs: Sequence[RunWrite],
        segments: Sequence[SegWrite],
        failure: FailureWrite | None,
        seen_at: float,
    ) -> tuple[list[int], list[int]]:
        """One transaction; updates and inserts each as one pipelined batch."""
        async with self._cursor() as cur:
            run_ids = await self._runs(cur, runs)
            seg_ids = await self._segments(cur, segments, seen_at)
            if failure is not None:
                if failure.run_id is not None:  # folded into the failed test's record
                    await cur.execute("DELETE FROM pass_runs WHERE id = %s", (failure.run_id,))
                await self._append(cur, failure)
        return run_ids, seg_ids

    async def _append(self, cur: Cursor, failure: FailureWrite) -> None:
        week, at, data = failure.row()
        key = {"check_id": failure.check_id, "location": self.location, "week": week}
        await cur.execute(_APPEND, {**key, "last_at": at, "data": data})
        if await cur.fetchone() is not None:
            return
        await cur.execute(_LAST_PART, key)
        part, last_at = await cur.fetchone() or (0, at)
        if last_at != at:  # full: the next part
            new = {**key, "part": part + 1, "last_at": at, "count": 1, "data": data}
            await cur.execute(_INSERT_PART, new)

    async def _intern(self, texts: Sequence[str]) -> list[tuple[int, str]]:
        async with self._cursor() as cur:
            return await self._interned(cur, texts)

    @staticmethod
    async def _interned(cur: Cursor, texts: Sequence[str]) -> list[tuple[int, str]]:
        wanted = [t for t in texts if t]
        if not wanted:
            return []
        await cur.executemany(
            "INSERT INTO texts (digest, text) VALUES (%s, %s) ON CONFLICT (digest) DO NOTHING",
            [(failures.digest(t), t) for t in wanted],
        )
        await cur.execute(
            "SELECT id, digest FROM texts WHERE digest = ANY(%s)",
            ([failures.digest(t) for t in wanted],),
        )
        by_digest = {bytes(d): int(i) for i, d in await cur.fetchall()}
        return [(by_digest[failures.digest(t)], t) for t in wanted]

    async def _lookup(self, ids: Sequence[int]) -> list[tuple[int, str]]:
        rows = await self._rows("SELECT id, text FROM texts WHERE id = ANY(%s)", (list(ids),))
        return [(int(i), str(t)) for i, t in rows]

    async def _failure_rows(
        self, service: str, check: str, weeks: tuple[int, int], location: str | None
    ) -> list[tuple[str, int, bytes]]:
        rows = await self._rows(
            "SELECT f.location, f.week, f.data FROM failure_weeks f"
            " JOIN checks c ON c.id = f.check_id WHERE c.service = %s AND c.name = %s"
            " AND f.week >= %s AND f.week <= %s AND (%s::text IS NULL OR f.location = %s)",
            (service, check, weeks[0], weeks[1], location, location),
        )
        return [(str(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    async def _restore_rows(self, check_id: int) -> tuple[float, list[tuple[str, int, bytes]]]:
        row = await self._one(
            "SELECT max(last_at) FROM pass_runs WHERE check_id = %s AND location = %s",
            (check_id, self.location),
        )
        last_pass = float(row[0]) if row and row[0] is not None else float("-inf")
        first_week = failures.week_of(last_pass) if math.isfinite(last_pass) else -(2**62)
        rows = await self._rows(
            "SELECT location, week, data FROM failure_weeks WHERE check_id = %s"
            " AND location = %s AND week >= %s",
            (check_id, self.location, first_week),
        )
        return last_pass, [(str(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    async def _open_outage(self, check_id: int) -> OutageSpan | None:
        row = await self._one(
            self._OUTAGE + " WHERE o.check_id = %s AND o.location = %s AND o.closed_at IS NULL"
            " ORDER BY o.id DESC LIMIT 1",
            (check_id, self.location),
        )
        return None if row is None else outage_span(row)

    async def _runs(self, cur: Cursor, runs: Sequence[RunWrite]) -> list[int]:
        updates = [(r.last, r.count, r.id) for r in runs if r.id is not None]
        if updates:
            await cur.executemany(
                "UPDATE pass_runs SET last_at = %s, count = %s WHERE id = %s", updates
            )
        inserts = [
            (r.check_id, r.first, r.last, r.count, self.location) for r in runs if r.id is None
        ]
        new = await self._insert(
            cur,
            "INSERT INTO pass_runs (check_id, first_at, last_at, count, location)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            inserts,
        )
        return [r.id if r.id is not None else next(new) for r in runs]

    async def _segments(
        self, cur: Cursor, segments: Sequence[SegWrite], seen_at: float
    ) -> list[int]:
        updates = [(s.last, s.tests, seen_at, s.id) for s in segments if s.id is not None]
        if updates:
            await cur.executemany(
                "UPDATE segments SET last_at = %s, tests = %s, seen_at = %s WHERE id = %s",
                updates,
            )
        inserts = [
            (s.check_id, s.first, s.last, s.interval, s.timeout, s.tests, seen_at, self.location)
            for s in segments
            if s.id is None
        ]
        new = await self._insert(
            cur,
            "INSERT INTO segments (check_id, first_at, last_at, interval, timeout, tests,"
            " seen_at, location) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            inserts,
        )
        return [s.id if s.id is not None else next(new) for s in segments]

    @staticmethod
    async def _insert(cur: Cursor, sql: str, rows: Sequence[tuple[Any, ...]]) -> Iterator[int]:
        """Insert rows in one pipelined batch; the new ids, in order."""
        if not rows:
            return iter(())
        await cur.executemany(sql, rows, returning=True)
        ids: list[int] = []
        while True:
            row = await cur.fetchone()
            assert row is not None
            ids.append(int(row[0]))
            if not cur.nextset():
                break
        return iter(ids)

    async def _stopped(self, segment_ids: Sequence[int] | None) -> None:
        async with self._cursor() as cur:
            if segment_ids is None:
                await cur.execute(
                    "UPDATE segments SET seen_at = NULL WHERE location = %s AND seen_at IS NOT NULL",
                    (self.location,),
                )
            elif segment_ids:
                await cur.execute(
                    "UPDATE segments SET seen_at = NULL WHERE id = ANY(%s)", (list(segment_ids),)
                )

    async def _unfinished(self, check_ids: Sequence[int]) -> list[int]:
        """The checks whose latest failed test here is after their latest pass here: one
        statement, two index lookups per check."""
        rows = await self._rows(
            "SELECT c.id FROM unnest(%s::bigint[]) AS c(id)"
            " WHERE (SELECT max(f.last_at) FROM failure_weeks f"
            "        WHERE f.check_id = c.id AND f.location = %s)"
            " > coalesce((SELECT max(p.last_at) FROM pass_runs p"
            "        WHERE p.check_id = c.id AND p.location = %s), '-infinity'::float8)"
            " OR EXISTS (SELECT 1 FROM outages o WHERE o.check_id = c.id"
            "        AND o.location = %s AND o.closed_at IS NULL)",
            ([int(c) for c in check_ids], self.location, self.location, self.location),
        )
        return [int(cid) for (cid,) in rows]

    # ----------------------------------------------------------- outages

    async def open_outage(self, check_id: int, run: FailureRun) -> int:
        async with self._cursor() as cur:
            await cur.execute(
                "INSERT INTO outages (check_id, start, last_failed, failed_tests, reasons, location)"
                " VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (check_id, location, start) DO UPDATE SET"
                " last_failed = EXCLUDED.last_failed, failed_tests = EXCLUDED.failed_tests,"
                " reasons = EXCLUDED.reasons RETURNING id",
                (check_id, run.first_at, run.last_at, run.count, _reasons(run), self.location),
            )
            return await _returned_id(cur)

    async def update_outage(self, outage_id: int, run: FailureRun) -> None:
        await self._update_outage(outage_id, run, None)

    async def close_outage(self, outage_id: int, run: FailureRun, closed_at: float) -> None:
        await self._update_outage(outage_id, run, closed_at)

    async def _update_outage(
        self, outage_id: int, run: FailureRun, closed_at: float | None
    ) -> None:
        async with self._cursor() as cur:
            await cur.execute(  # start too: a clock step moves an open run as a whole
                "UPDATE outages SET start = %s, last_failed = %s, failed_tests = %s,"
                " reasons = %s, closed_at = COALESCE(%s, closed_at) WHERE id = %s",
                (run.first_at, run.last_at, run.count, _reasons(run), closed_at, outage_id),
            )

    _OUTAGE = (
        "SELECT o.id, c.name, o.start, o.last_failed, o.failed_tests, o.reasons, o.closed_at,"
        " o.location, c.service FROM outages o JOIN checks c ON c.id = o.check_id"
    )

    async def outages(
        self, service: str, window: Interval, *, location: str | None = None
    ) -> list[OutageSpan]:
        rows = await self._rows(
            self._OUTAGE + " WHERE c.service = %s AND o.last_failed >= %s AND o.start < %s"
            " AND (%s::text IS NULL OR o.location = %s) ORDER BY o.start, o.id",
            (service, window[0], window[1], location, location),
        )
        return [outage_span(r) for r in rows]

    async def outage(self, outage_id: int) -> StoredOutage | None:
        row = await self._one(self._OUTAGE + " WHERE o.id = %s", (outage_id,))
        if row is None:
            return None
        return StoredOutage(service=str(row[8]), span=outage_span(row), closed_at=row[6])

    # --------------------------------------------------------- coverage

    async def _stored_coverage(
        self, service: str, window: Interval, now: float, location: str | None
    ) -> list[Interval]:
        rows = await self._rows(
            "SELECT s.first_at, s.last_at + s.interval + s.timeout, s.seen_at FROM segments s"
            " JOIN checks c ON c.id = s.check_id WHERE c.service = %s AND s.first_at < %s"
            " AND (s.last_at + s.interval + s.timeout > %s OR s.seen_at >= %s)"
            " AND (%s::text IS NULL OR s.location = %s)",
            (service, window[1], window[0], now - LIVE_AFTER_FLUSH, location, location),
        )
        return [(float(a), covered_until(float(b), seen, now)) for a, b, seen in rows]

    async def _stored_first_test_at(self, service: str, location: str | None) -> float | None:
        row = await self._one(
            "SELECT min(s.first_at) FROM segments s JOIN checks c ON c.id = s.check_id"
            " WHERE c.service = %s AND (%s::text IS NULL OR s.location = %s)",
            (service, location, location),
        )
        return None if row is None or row[0] is None else float(row[0])

    async def _stored_month_reads(self, window: Interval, now: float) -> dict[str, ServiceReads]:
        found: dict[str, ServiceReads] = {}
        async with self._cursor(transaction=False) as cur:
            await cur.execute(
                self._OUTAGE + " WHERE o.last_failed >= %s AND o.start < %s ORDER BY o.start, o.id",
                window,
            )
            for r in await cur.fetchall():
                found.setdefault(str(r[8]), ServiceReads()).outages.append(outage_span(r))
            await cur.execute(
                "SELECT c.service, s.location, s.first_at, s.last_at + s.interval + s.timeout,"
                " s.seen_at FROM segments s JOIN checks c ON c.id = s.check_id"
                " WHERE s.first_at < %s AND (s.last_at + s.interval + s.timeout > %s"
                " OR s.seen_at >= %s)",
                (window[1], window[0], now - LIVE_AFTER_FLUSH),
            )
            for service, location, a, b, seen in await cur.fetchall():
                reads = found.setdefault(str(service), ServiceReads())
                spans = reads.coverage.setdefault(str(location), [])
                spans.append((float(a), covered_until(float(b), seen, now)))
            await cur.execute(
                "SELECT c.service, min(s.first_at) FROM segments s"
                " JOIN checks c ON c.id = s.check_id GROUP BY c.service"
            )
            for service, first in await cur.fetchall():
                found.setdefault(str(service), ServiceReads()).first_test_at = float(first)
        return found

    async def locations(self) -> list[str]:
        rows = await self._rows(
            "SELECT DISTINCT location FROM segments UNION SELECT DISTINCT location FROM failure_weeks"
            " ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    # ------------------------------------------------------- exclusions

    _EXCLUSION = (
        'SELECT id, service, start, "end", kind, reason, "by", created_at, revoked_at,'
        " revoked_by, revoke_reason FROM exclusions"
    )

    async def add_exclusion(
        self, new: NewExclusion, *, created_at: float | None = None
    ) -> ExclusionSpan:
        created = time.time() if created_at is None else created_at
        async with self._cursor() as cur:
            await cur.execute(
                'INSERT INTO exclusions (service, start, "end", kind, reason, "by", created_at,'
                " location) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
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
            exclusion_id = await _returned_id(cur)
            await self._bump(cur)
            await cur.execute(self._EXCLUSION + " WHERE id = %s", (exclusion_id,))
            return exclusion_span(await _fetched(cur))

    async def revoke_exclusion(
        self, exclusion_id: int, *, by: str, reason: str, at: float | None = None
    ) -> ExclusionSpan:
        when = time.time() if at is None else at
        async with self._cursor() as cur:
            await cur.execute(
                "UPDATE exclusions SET revoked_at = %s, revoked_by = %s, revoke_reason = %s"
                " WHERE id = %s AND revoked_at IS NULL",
                (when, by, reason, exclusion_id),
            )
            if cur.rowcount != 1:
                await cur.execute("SELECT 1 FROM exclusions WHERE id = %s", (exclusion_id,))
                if await cur.fetchone() is None:
                    raise UnknownExclusion(f"exclusion {exclusion_id} does not exist")
                raise AlreadyRevoked(f"exclusion {exclusion_id} is already revoked")
            await self._bump(cur)
            await cur.execute(self._EXCLUSION + " WHERE id = %s", (exclusion_id,))
            return exclusion_span(await _fetched(cur))

    async def _bump(self, cur: Cursor) -> None:
        await cur.execute(
            "INSERT INTO meta (key, value) VALUES ('exclusions_generation', '1')"
            " ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text"
        )

    async def exclusion(self, exclusion_id: int) -> ExclusionSpan | None:
        row = await self._one(self._EXCLUSION + " WHERE id = %s", (exclusion_id,))
        return exclusion_span(row) if row else None

    async def exclusions(self, window: Interval | None = None) -> list[ExclusionSpan]:
        if window is None:
            rows = await self._rows(self._EXCLUSION + " ORDER BY start, id")
        else:
            rows = await self._rows(
                self._EXCLUSION + ' WHERE "end" > %s AND start < %s ORDER BY start, id', window
            )
        return [exclusion_span(r) for r in rows]

    async def generation(self) -> int:
        row = await self._one("SELECT value FROM meta WHERE key = 'exclusions_generation'")
        return int(row[0]) if row else 0

    # ----------------------------------------------------------- outbox

    _OUTBOX = (
        "SELECT id, hook, event_json, created_at, attempts, next_attempt_at, location,"
        " claimed_by, claimed_until FROM outbox"
    )

    async def enqueue(self, entries: Sequence[OutboxEntry], now: float) -> None:
        rows = [(h, e.payload, now, now, self.location) for e in entries for h in e.hooks]
        if not rows:
            return
        async with self._cursor() as cur:
            await self._enqueue(cur, rows)

    async def _enqueue(self, cur: Cursor, rows: Sequence[tuple[Any, ...]]) -> None:
        await cur.executemany(
            "INSERT INTO outbox (hook, event_json, created_at, next_attempt_at, location)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows,
        )

    async def claim(self, hook: str, now: float, lease: float) -> OutboxRow | None:
        async with self._cursor() as cur:
            await cur.execute(
                "SELECT id FROM outbox WHERE hook = %s AND delivered_at IS NULL AND dead_at IS NULL"
                " ORDER BY id LIMIT 1",
                (hook,),
            )
            head = await cur.fetchone()
            if head is None:
                return None
            # only the oldest row may be claimed (order); a row another daemon is
            # claiming right now is skipped, not waited for: it is theirs
            await cur.execute(
                self._OUTBOX + " WHERE id = %s AND delivered_at IS NULL AND dead_at IS NULL"
                " FOR UPDATE SKIP LOCKED",
                head,
            )
            row = await cur.fetchone()
            if row is None:
                return OutboxRow(int(head[0]), hook, "", now, 0, now + lease, "", claimed=False)
            free = row[7] is None or row[7] == self.location or (row[8] or 0.0) <= now
            if not (free and row[5] <= now):
                due = max(row[5], row[8] or 0.0) if not free else row[5]
                return outbox_row(row, due, claimed=False)
            await cur.execute(
                "UPDATE outbox SET claimed_by = %s, claimed_until = %s WHERE id = %s",
                (self.location, now + lease, row[0]),
            )
            return outbox_row(row, float(row[5]), claimed=True)

    async def delivered(self, row_id: int, at: float) -> None:
        async with self._cursor() as cur:
            await cur.execute(
                "UPDATE outbox SET delivered_at = %s, claimed_by = NULL, claimed_until = NULL,"
                " attempts = attempts + 1 WHERE id = %s",
                (at, row_id),
            )

    async def failed(self, row_id: int, reason: str, next_attempt_at: float) -> None:
        async with self._cursor() as cur:
            await cur.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_attempt_at = %s,"
                " claimed_by = NULL, claimed_until = NULL WHERE id = %s",
                (reason, next_attempt_at, row_id),
            )

    async def history(self, hook: str) -> list[OutboxRow]:
        rows = await self._rows(
            self._OUTBOX + " WHERE hook = %s AND delivered_at IS NOT NULL ORDER BY id", (hook,)
        )
        return [outbox_row(r, float(r[5]), claimed=False) for r in rows]

    async def dead_letter(self, row_id: int, reason: str, at: float) -> None:
        async with self._cursor() as cur:
            await cur.execute(
                "UPDATE outbox SET dead_at = %s, last_error = %s, claimed_by = NULL,"
                " claimed_until = NULL WHERE id = %s AND delivered_at IS NULL",
                (at, reason, row_id),
            )

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._rows(
            "SELECT id, hook, event_json, created_at, attempts, dead_at, last_error FROM outbox"
            " WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC LIMIT %s",
            (limit,),
        )
        return [
            DeadLetter(
                int(r[0]),
                str(r[1]),
                str(r[2]),
                float(r[3]),
                int(r[4]),
                float(r[5]),
                str(r[6] or ""),
            )
            for r in rows
        ]

    async def undelivered(self) -> dict[str, int]:
        rows = await self._rows(
            "SELECT hook, count(*) FROM outbox WHERE delivered_at IS NULL AND dead_at IS NULL"
            " GROUP BY hook"
        )
        return {str(h): int(n) for h, n in rows}

    async def announced(self, service: str, month: str) -> frozenset[str]:
        rows = await self._rows(
            "SELECT what FROM hook_announcements WHERE service = %s AND month = %s",
            (service, month),
        )
        return frozenset(str(r[0]) for r in rows)

    async def announce(
        self,
        service: str,
        month: str,
        whats: Sequence[str],
        at: float,
        entries: Sequence[OutboxEntry],
    ) -> bool:
        async with self._cursor() as cur:
            await cur.executemany(
                "INSERT INTO hook_announcements (service, month, what, at, location)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING what",
                [(service, month, w, at, self.location) for w in whats],
                returning=True,
            )
            told = 0
            for _ in whats:
                told += await cur.fetchone() is not None
                cur.nextset()
            if not told:
                return False
            rows = [(h, e.payload, at, at, self.location) for e in entries for h in e.hooks]
            if rows:
                await self._enqueue(cur, rows)
            return True

    # -------------------------------------------------------- lifecycle

    async def writable(self) -> str | None:
        try:
            async with self._cursor() as cur:
                await cur.execute(
                    "INSERT INTO meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (f"healthz {self.location}", str(time.time())),
                )
        except StorageError as exc:
            return f"store not writable: {exc}"
        return None

    async def close(self) -> None:
        try:
            if not self.readonly:
                await self._stop_session()
        finally:
            await self.pool.close()


async def _fetched(cur: Cursor) -> tuple[Any, ...]:
    row = await cur.fetchone()
    assert row is not None
    return row


async def _returned_id(cur: Cursor) -> int:
    """The id a RETURNING gave (then on to the next result of an executemany)."""
    row = await cur.fetchone()
    cur.nextset()
    assert row is not None
    return int(row[0])


def _reasons(run: FailureRun) -> str:
    return json.dumps(list(run.reasons))


async def open_store(
    target: str | Path | Config,
    *,
    location: str,
    readonly: bool = False,
    clock: Callable[[], float] = time.time,
) -> PostgresStore:
    """Open the store of a config (its password file was read with it) or of a bare URL
    (then libpq finds the password: PGPASSFILE, ~/.pgpass, PGPASSWORD)."""
    if isinstance(target, str | Path):
        url, password, bound = str(target), None, STORE_TIMEOUT
    else:
        url, password = target.storage_url, target.storage_password
        bound = target.storage_timeout
    return await PostgresStore.open(
        url,
        location=location,
        readonly=readonly,
        password=password,
        clock=clock,
        operation_timeout=bound,
    )
