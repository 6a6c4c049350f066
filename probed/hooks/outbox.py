"""The durable outbox, seen from the hooks: envelopes in, rows to deliver out.

The rows live in the store (:class:`probed.store.base.Store`'s outbox
operations), one per event and hook. A row is committed before anyone tries
to deliver it, and marked delivered right after its transport succeeded, so
events survive restarts and crashes. The only way to see one twice is a crash
(or a shutdown deadline) between a receiver's answer and that mark; every
payload carries an ``id`` for receivers that must deduplicate.

Rows stay after delivery: they are few (state changes, not tests), they are
the hooks' audit trail, and the Alertmanager hook rebuilds its firing alerts
from them at start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from probed.hooks.base import Envelope
from probed.store.base import OutboxEntry, OutboxRow, Store


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    hook: str
    envelope: Envelope
    attempts: int
    next_attempt_at: float
    claimed: bool  # this instance holds the lease and delivers it now
    created_at: float = 0.0


def _row(r: OutboxRow) -> Row:
    envelope = Envelope.loads(r.payload)
    return Row(r.id, r.hook, envelope, r.attempts, r.next_attempt_at, r.claimed, r.created_at)


def entry(hooks: Iterable[str], envelope: Envelope) -> OutboxEntry:
    return OutboxEntry(tuple(hooks), envelope.dumps())


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, hooks: Iterable[str], envelope: Envelope, now: float) -> None:
        await self.store.enqueue([entry(hooks, envelope)], now)

    async def claim(self, hook: str, now: float, lease: float) -> Row | None:
        """The hook's oldest undelivered row: a hook's events go out in order."""
        found = await self.store.claim(hook, now, lease)
        return None if found is None else _row(found)

    async def delivered(self, row_id: int, at: float) -> None:
        await self.store.delivered(row_id, at)

    async def failed(self, row_id: int, reason: str, next_attempt_at: float) -> None:
        await self.store.failed(row_id, reason, next_attempt_at)

    async def dead_letter(self, row_id: int, reason: str, at: float) -> None:
        await self.store.dead_letter(row_id, reason, at)

    async def history(self, hook: str) -> list[Envelope]:
        """The hook's delivered envelopes, oldest first."""
        return [Envelope.loads(r.payload) for r in await self.store.history(hook)]

    async def pending(self) -> dict[str, int]:
        """Undelivered rows per hook name (configured or not)."""
        return await self.store.undelivered()
