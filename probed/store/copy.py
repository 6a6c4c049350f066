"""``probed store copy``: move a whole history from one store to another (SQLite ↔ PostgreSQL).

Both stores are brought to the current schema through the product's own
migrations, then every table is copied row by row with its ids, so outage
ids (``probed report --incident 42``), exclusion ids and the hooks' outbox
stay what they were. The target must be empty: a copy never merges two
histories. Stop the daemon that writes the source first; what it writes
during the copy is not copied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from probed.store.base import StorageError, open_store

# parents before children (checks are referenced by the result tables)
TABLES = (
    "checks",
    "texts",
    "pass_runs",
    "failure_weeks",
    "segments",
    "outages",
    "exclusions",
    "outbox",
    "hook_announcements",
    "meta",
)
OWN_META = ("schema_version", "store")  # each store keeps its own
CHUNK = 5000


class _Side(Protocol):
    def columns(self, table: str) -> list[str]: ...
    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]: ...
    def count(self, table: str) -> int: ...
    def load(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int: ...
    def finish(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Copied:
    table: str
    rows: int


def _quoted(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


class _Sqlite:
    def __init__(self, path: Path, *, target: bool) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        # one transaction: a consistent snapshot to read, or all-or-nothing to write
        self.db.execute("BEGIN IMMEDIATE" if target else "BEGIN")

    def columns(self, table: str) -> list[str]:
        return [str(r[1]) for r in self.db.execute(f"PRAGMA table_info({table})")]

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        yield from self.db.execute(f"SELECT {_quoted(columns)} FROM {table}")

    def count(self, table: str) -> int:
        return int(self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def load(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
        marks = ", ".join("?" for _ in columns)
        cur = self.db.executemany(
            f"INSERT OR REPLACE INTO {table} ({_quoted(columns)}) VALUES ({marks})", rows
        )
        return cur.rowcount

    def finish(self) -> None:
        self.db.execute("COMMIT")

    def close(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self.db.close()


class _Postgres:
    def __init__(self, conninfo: str) -> None:
        import psycopg

        self.conn = psycopg.connect(conninfo)  # one transaction until finish()

    def columns(self, table: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def rows(self, table: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        with self.conn.cursor(name=f"copy_{table}") as cur:  # server-side: bounded memory
            cur.execute(f"SELECT {_quoted(columns)} FROM {table}")
            while chunk := cur.fetchmany(CHUNK):
                yield from chunk

    def count(self, table: str) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def load(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
        if table == "meta":  # the target's own keys are left out by the caller; upsert the rest
            n = 0
            for row in rows:
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    row,
                )
                n += 1
            return n
        n = 0
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY {table} ({_quoted(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
                n += 1
        return n

    def finish(self) -> None:
        # identity columns continue after the copied ids
        for table in TABLES:
            if "id" in self.columns(table):
                self.conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT COALESCE(max(id), 0) + 1 FROM {table}), false)"
                )
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


async def _side(url: str, password: str | None, *, target: bool) -> _Side:
    """Migrate the store through the product, then open a raw connection for the copy."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        store = await open_store(url, location="copy")
        await store.close()
        return _Sqlite(Path(store.describe), target=target)
    if scheme in ("postgresql", "postgres"):
        from psycopg.conninfo import make_conninfo

        from probed.store.postgresql import PostgresStore

        store = await PostgresStore.open(url, location="copy", password=password)
        await store.close()
        extra = {"password": password} if password is not None else {}
        return _Postgres(make_conninfo(url, **extra))
    raise StorageError(f'unknown storage "{scheme}://": expected sqlite:// or postgresql://')


async def copy_store(
    source_url: str,
    target_url: str,
    *,
    source_password: str | None = None,
    target_password: str | None = None,
) -> list[Copied]:
    """Copy every table; raises StorageError when the target already holds a history."""
    source = await _side(source_url, source_password, target=False)
    try:
        target = await _side(target_url, target_password, target=True)
        try:
            busy = [t for t in TABLES if t != "meta" and target.count(t)]
            if busy:
                raise StorageError(
                    f"the target {target_url} is not empty ({', '.join(busy)}): a copy never"
                    " merges two histories; use a new database"
                )
            copied = [_copy_table(source, target, t) for t in TABLES]
            target.finish()
            return copied
        finally:
            target.close()
    finally:
        source.close()


def _copy_table(source: _Side, target: _Side, table: str) -> Copied:
    wanted = set(target.columns(table))
    columns = [c for c in source.columns(table) if c in wanted]
    rows = source.rows(table, columns)
    if table == "meta":
        rows = (r for r in rows if r[columns.index("key")] not in OWN_META)
    return Copied(table, target.load(table, columns, rows))
