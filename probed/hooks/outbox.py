"""The durable outbox: one row per event and hook, in the store's database.

A row is written (committed) before anyone tries to deliver it, and marked
delivered by a single UPDATE right after its transport succeeded, so events
survive restarts and crashes. The only way to see one twice is a crash (or a
shutdown deadline) between a receiver's answer and that UPDATE; every payload
carries an ``id`` for receivers that must deduplicate.

Rows stay after delivery: they are few (state changes, not tests), they are
the hooks' audit trail, and the Alertmanager hook rebuilds its firing alerts
from them at start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from probed.hooks.base import Envelope
from probed.store.sqlite import SqliteStore

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY,
        hook TEXT NOT NULL,
        event_json TEXT NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        delivered_at REAL,
        last_error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (hook, id) WHERE delivered_at IS NULL",
    """CREATE TABLE IF NOT EXISTS hook_announcements (
        service TEXT NOT NULL,
        month TEXT NOT NULL,
        what TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (service, month, what)
    )""",
)


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    hook: str
    envelope: Envelope
    attempts: int
    next_attempt_at: float


class Outbox:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.db = store.db
        with store._tx():
            for statement in _SCHEMA:
                self.db.execute(statement)

    def add(self, hooks: Iterable[str], envelope: Envelope, now: float) -> None:
        text = envelope.dumps()
        with self.store._tx():
            self.db.executemany(
                "INSERT INTO outbox (hook, event_json, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
                [(hook, text, now, now) for hook in hooks],
            )

    def next(self, hook: str) -> Row | None:
        """The hook's oldest undelivered row: a hook's events go out in order."""
        r = self.db.execute(
            "SELECT id, event_json, attempts, next_attempt_at FROM outbox "
            "WHERE hook = ? AND delivered_at IS NULL ORDER BY id LIMIT 1",
            (hook,),
        ).fetchone()
        if r is None:
            return None
        return Row(int(r[0]), hook, Envelope.loads(str(r[1])), int(r[2]), float(r[3]))

    def delivered(self, row_id: int, at: float) -> None:
        self.db.execute(
            "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL "
            "WHERE id = ? AND delivered_at IS NULL",
            (at, row_id),
        )

    def failed(self, row_id: int, reason: str, next_attempt_at: float) -> None:
        self.db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
            (reason, next_attempt_at, row_id),
        )

    def history(self, hook: str) -> list[Envelope]:
        """The hook's delivered envelopes, oldest first."""
        rows = self.db.execute(
            "SELECT event_json FROM outbox WHERE hook = ? AND delivered_at IS NOT NULL ORDER BY id",
            (hook,),
        )
        return [Envelope.loads(str(r[0])) for r in rows]

    def pending(self) -> dict[str, int]:
        """Undelivered rows per hook name (configured or not)."""
        rows = self.db.execute(
            "SELECT hook, COUNT(*) FROM outbox WHERE delivered_at IS NULL GROUP BY hook"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    # ------------------------------------------------ budget announcements

    def announced(self, service: str, month: str) -> set[str]:
        rows = self.db.execute(
            "SELECT what FROM hook_announcements WHERE service = ? AND month = ?", (service, month)
        )
        return {str(r[0]) for r in rows}

    def announce(self, service: str, month: str, whats: Sequence[str], at: float) -> None:
        with self.store._tx():
            self.db.executemany(
                "INSERT OR IGNORE INTO hook_announcements (service, month, what, at) VALUES (?, ?, ?, ?)",
                [(service, month, what, at) for what in whats],
            )
