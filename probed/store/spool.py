"""The write spool: probing goes on while the store cannot be written.

:class:`Spool` wraps any :class:`~probed.store.base.Store` (SQLite or
PostgreSQL) and is itself one. While the store answers, every call goes
straight through. When a write of the recording path fails (disk full,
read-only file, I/O error, PostgreSQL down or unreachable), that write and
every later one wait in memory, in the order they were made, and a
background task retries them with backoff (0.5 s doubling to 30 s). Once a
write succeeds again the spool is written out oldest first, then calls go
straight through again. ``writable()`` (``/healthz``) answers the reason and
the number of records waiting until the spool is empty.

What is spooled: passing and failed tests, coverage flushes, outages
(opened, extended, closed) and hook events (the outbox). An outage opened
during a fault gets a provisional negative id at once; it is mapped to the
store's id when the open is written, and later updates, closes and the
``outage_id`` of spooled hook events use the real one. Exclusions and
budget announcements are not spooled: the API answers 503 / the next
refresh tries again.

The spool holds at most ``limit`` records (100 000 by default: about 100 s
of 10 000 checks at 10 s, days of a few hundred checks). Past it, the
oldest *droppable* record goes first: a passing test that does not end a
failure run (losing it only turns coverage into unmonitored time, never
into downtime). Only when nothing droppable is left does the oldest record
of any kind go. Every drop is counted per kind (``dropped``, exported as
``probed_store_spool_dropped_total{kind}``) and logged once per fault.

The spool is memory: a crash or ``kill -9`` during a fault loses what it
holds (``close`` tries to write it out before a clean stop).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from probed.core.accounting import ExclusionSpan, Interval, OutageSpan
from probed.core.outages import FailureRun
from probed.logs import log
from probed.store.base import (
    DeadLetter,
    FailedTest,
    NewExclusion,
    OutboxEntry,
    OutboxRow,
    ServiceReads,
    StorageError,
    Store,
    StoredOutage,
)

SPOOL_LIMIT = 100_000
RETRY_FIRST = 0.5  # seconds before the first retry; doubles up to RETRY_MAX
RETRY_MAX = 30.0
CLOSE_DEADLINE = 10.0  # seconds ``close`` spends writing out a spool
YIELD_EVERY = 500  # records written before the drainer lets other tasks run

Kind: TypeAlias = Literal["pass", "failure", "outage", "event"]
KINDS: tuple[Kind, ...] = ("pass", "failure", "outage", "event")


@dataclass(slots=True, eq=False)
class _Record:
    kind: Kind
    droppable: bool
    write: Callable[[], Awaitable[None]]
    dropped: bool = False
    done: bool = False


class Spool:
    """A :class:`Store` that keeps the recording path's writes while the store is unwritable."""

    def __init__(
        self,
        inner: Store,
        *,
        limit: int = SPOOL_LIMIT,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self.inner = inner
        self.limit = limit
        self.retry_first = retry_first
        self.retry_max = retry_max
        self.dropped: Counter[Kind] = Counter()
        self.error: str | None = None  # the last write error while records wait
        self._queue: deque[_Record] = deque()  # every waiting record, in order
        self._droppable: deque[_Record] = deque()  # the same records, by class,
        self._kept: deque[_Record] = deque()  # to find the oldest victim in O(1)
        self._waiting = 0  # records in the queue not dropped nor written
        self._ids: dict[int, int | None] = {}  # provisional outage id -> store id
        self._next_id = -1
        self._drainer: asyncio.Task[None] | None = None
        self._retry_now = asyncio.Event()  # cuts a backoff short (at close)
        # told when a spool was written out: hook events it held can be delivered now
        self.on_written: Callable[[], None] | None = None
        self._fault_at = 0.0
        self._warned_drop = False

    # ----------------------------------------------------------- state

    @property
    def records(self) -> int:
        """Records waiting to be written (``probed_store_spool_records``)."""
        return self._waiting

    @property
    def location(self) -> str:
        return self.inner.location

    @property
    def describe(self) -> str:
        return self.inner.describe

    async def writable(self) -> str | None:
        if self._queue:
            return f"store not writable: {self.error}; {self._waiting} records spooled, retrying"
        return await self.inner.writable()

    # ---------------------------------------------------- the machinery

    async def _write(
        self, kind: Kind, write: Callable[[], Awaitable[None]], *, droppable: bool = False
    ) -> None:
        if not self._queue:
            try:
                await write()
                return
            except StorageError as exc:
                self._fault(exc)
        self._append(_Record(kind, droppable, write))

    def _fault(self, exc: StorageError) -> None:
        self.error = str(exc)
        self._fault_at = time.monotonic()
        self._warned_drop = False
        log.warning("store.unwritable", store=self.inner.describe, reason=self.error)

    def _append(self, record: _Record) -> None:
        if self._waiting >= self.limit:
            self._drop_oldest()
        self._queue.append(record)
        (self._droppable if record.droppable else self._kept).append(record)
        self._waiting += 1
        if len(self._queue) > 2 * self.limit:  # dropped records linger: compact
            self._queue = deque(r for r in self._queue if not r.dropped)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="store-spool")

    def _drop_oldest(self) -> None:
        for pool in (self._droppable, self._kept):
            while pool:
                victim = pool.popleft()
                if victim.dropped or victim.done:
                    continue
                victim.dropped = True
                self._waiting -= 1
                self.dropped[victim.kind] += 1
                if not self._warned_drop:
                    self._warned_drop = True
                    log.error(
                        "store.spool_full",
                        limit=self.limit,
                        dropping=victim.kind,
                        reason=self.error,
                    )
                return

    async def _drain(self) -> None:
        delay = self.retry_first
        written = 0
        while self._queue:
            record = self._queue[0]
            if not record.dropped:
                try:
                    await record.write()
                except StorageError as exc:
                    self.error = str(exc)
                    try:
                        await asyncio.wait_for(self._retry_now.wait(), delay)
                    except TimeoutError:
                        pass
                    delay = min(delay * 2, self.retry_max)
                    continue
                record.done = True
                self._waiting -= 1
                written += 1
                delay = self.retry_first
                if written % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            self._queue.popleft()
        self._droppable.clear()
        self._kept.clear()
        self.error = None
        if self.on_written is not None:
            self.on_written()
        log.info(
            "store.spool_written",
            store=self.inner.describe,
            records=written,
            fault_seconds=round(time.monotonic() - self._fault_at, 3),
            dropped=dict(self.dropped),
        )

    def _real_id(self, outage_id: int) -> int | None:
        """The store's id for a (possibly provisional) outage id; None if its open was dropped."""
        return self._ids.get(outage_id) if outage_id < 0 else outage_id

    def _payload(self, payload: str) -> str:
        """An outbox payload with provisional outage ids replaced by the store's."""
        if not self._ids or '"outage_id": -' not in payload:
            return payload
        data = json.loads(payload)
        event = data.get("event")
        if isinstance(event, dict) and isinstance(event.get("outage_id"), int):
            event["outage_id"] = self._real_id(event["outage_id"])
        return json.dumps(data)

    # --------------------------------------------- the recording path

    async def record_pass(
        self,
        check_id: int,
        at: float,
        *,
        interval: float,
        test_timeout: float = 0.0,
        durable: bool = False,
    ) -> None:
        async def write() -> None:
            await self.inner.record_pass(
                check_id, at, interval=interval, test_timeout=test_timeout, durable=durable
            )

        # a pass that ends a failure run (durable) keeps two runs apart: never dropped first
        await self._write("pass", write, droppable=not durable)

    async def record_failure(
        self,
        check_id: int,
        test: FailedTest,
        *,
        interval: float,
        test_timeout: float = 0.0,
    ) -> None:
        async def write() -> None:
            await self.inner.record_failure(
                check_id, test, interval=interval, test_timeout=test_timeout
            )

        await self._write("failure", write)

    async def record_unmonitored(self, check_id: int) -> None:
        async def write() -> None:
            await self.inner.record_unmonitored(check_id)

        # in order with the check's passes; never dropped (it ends coverage, it never adds any)
        await self._write("pass", write)

    async def restart_segments(self) -> None:
        async def write() -> None:
            await self.inner.restart_segments()

        await self._write("pass", write)  # in order: passes before it belong to the old segment

    async def flush(self) -> None:
        if self._queue:
            return  # the drainer writes; the store's own buffer is flushed in order
        try:
            await self.inner.flush()
        except StorageError as exc:
            self._fault(exc)
            self._append(_Record("pass", True, self.inner.flush))

    async def open_outage(self, check_id: int, run: FailureRun) -> int:
        if not self._queue:
            try:
                return await self.inner.open_outage(check_id, run)
            except StorageError as exc:
                self._fault(exc)
        provisional = self._next_id
        self._next_id -= 1
        self._ids[provisional] = None

        async def write() -> None:
            self._ids[provisional] = await self.inner.open_outage(check_id, run)

        self._append(_Record("outage", False, write))
        return provisional

    async def update_outage(self, outage_id: int, run: FailureRun) -> None:
        async def write() -> None:
            real = self._real_id(outage_id)
            if real is not None:
                await self.inner.update_outage(real, replace(run, outage_id=real))

        await self._write("outage", write)

    async def close_outage(self, outage_id: int, run: FailureRun, closed_at: float) -> None:
        async def write() -> None:
            real = self._real_id(outage_id)
            if real is not None:
                await self.inner.close_outage(real, replace(run, outage_id=real), closed_at)

        await self._write("outage", write)

    async def enqueue(self, entries: Sequence[OutboxEntry], now: float) -> None:
        async def write() -> None:
            await self.inner.enqueue(
                [replace(e, payload=self._payload(e.payload)) for e in entries], now
            )

        await self._write("event", write)

    def resolve(self, outage_id: int) -> int | None:
        """The store's id of an outage opened while spooling (None until written)."""
        return self._real_id(outage_id)

    # ------------------------------------------------- everything else

    async def check_id(self, service: str, check: str, type_: str) -> int:
        return await self.inner.check_id(service, check, type_)

    async def check_ids(self, checks: Sequence[tuple[str, str, str]]) -> list[int]:
        return await self.inner.check_ids(checks)

    async def start_session(self) -> None:
        await self.inner.start_session()

    async def restore_run(self, check_id: int) -> FailureRun | None:
        return await self.inner.restore_run(check_id)

    async def restore_runs(self, check_ids: Sequence[int]) -> dict[int, FailureRun]:
        return await self.inner.restore_runs(check_ids)

    async def outages(
        self, service: str, window: Interval, *, location: str | None = None
    ) -> list[OutageSpan]:
        return await self.inner.outages(service, window, location=location)

    async def outage(self, outage_id: int) -> StoredOutage | None:
        real = self._real_id(outage_id)
        return None if real is None else await self.inner.outage(real)

    async def failed_tests(
        self, service: str, check: str, window: Interval, *, location: str | None = None
    ) -> list[FailedTest]:
        return await self.inner.failed_tests(service, check, window, location=location)

    async def coverage(
        self, service: str, window: Interval, now: float, *, location: str | None = None
    ) -> list[Interval]:
        return await self.inner.coverage(service, window, now, location=location)

    async def first_test_at(self, service: str, *, location: str | None = None) -> float | None:
        return await self.inner.first_test_at(service, location=location)

    async def month_reads(self, window: Interval, now: float) -> dict[str, ServiceReads]:
        return await self.inner.month_reads(window, now)

    async def locations(self) -> list[str]:
        return await self.inner.locations()

    async def add_exclusion(
        self, new: NewExclusion, *, created_at: float | None = None
    ) -> ExclusionSpan:
        return await self.inner.add_exclusion(new, created_at=created_at)

    async def revoke_exclusion(
        self, exclusion_id: int, *, by: str, reason: str, at: float | None = None
    ) -> ExclusionSpan:
        return await self.inner.revoke_exclusion(exclusion_id, by=by, reason=reason, at=at)

    async def exclusion(self, exclusion_id: int) -> ExclusionSpan | None:
        return await self.inner.exclusion(exclusion_id)

    async def exclusions(self, window: Interval | None = None) -> list[ExclusionSpan]:
        return await self.inner.exclusions(window)

    async def generation(self) -> int:
        return await self.inner.generation()

    async def claim(self, hook: str, now: float, lease: float) -> OutboxRow | None:
        return await self.inner.claim(hook, now, lease)

    async def delivered(self, row_id: int, at: float) -> None:
        await self.inner.delivered(row_id, at)

    async def failed(self, row_id: int, reason: str, next_attempt_at: float) -> None:
        await self.inner.failed(row_id, reason, next_attempt_at)

    async def history(self, hook: str) -> list[OutboxRow]:
        return await self.inner.history(hook)

    async def dead_letter(self, row_id: int, reason: str, at: float) -> None:
        await self.inner.dead_letter(row_id, reason, at)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return await self.inner.dead_letters(limit)

    async def undelivered(self) -> dict[str, int]:
        return await self.inner.undelivered()

    async def announced(self, service: str, month: str) -> frozenset[str]:
        return await self.inner.announced(service, month)

    async def announce(
        self,
        service: str,
        month: str,
        whats: Sequence[str],
        at: float,
        entries: Sequence[OutboxEntry],
    ) -> bool:
        return await self.inner.announce(service, month, whats, at, entries)

    async def close(self) -> None:
        """Write out what waits (for at most CLOSE_DEADLINE), then close the store."""
        if self._drainer is not None and not self._drainer.done():
            self._retry_now.set()
            try:
                async with asyncio.timeout(CLOSE_DEADLINE):
                    await asyncio.shield(self._drainer)
            except TimeoutError:
                self._drainer.cancel()
                log.error(
                    "store.spool_lost",
                    store=self.inner.describe,
                    records=self._waiting,
                    reason=self.error,
                )
        await self.inner.close()
