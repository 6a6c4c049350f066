"""What both engines share: passing tests and coverage buffered in memory, written in batches.

Passing tests only extend two rows per check (``pass_runs``, ``segments``),
so :class:`BufferedStore` keeps them on the event loop and hands the dirty
ones to its engine in one batch per ``flush``. A failed test, and the pass
that ends a failure run, write their check's buffer in the same transaction
as themselves. An engine (SQLite, PostgreSQL) implements the few abstract
methods: write a batch, mark segments stopped, read stored coverage.

A durable write either commits or leaves the buffer as it was, so a retry
of the same call (the write spool retries) writes exactly what the first
attempt would have: no test is counted twice.
"""

from __future__ import annotations

import asyncio
import copy
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from probed.core.accounting import Interval, OutageSpan
from probed.core.outages import FailureRun
from probed.store import failures
from probed.store.base import LIVE_AFTER_FLUSH, FailedTest, ServiceReads
from probed.store.failures import Record, Texts


def _week(at: float) -> int:
    """The week of a window's end; an infinite end is a week beyond any test."""
    return failures.week_of(min(max(at, -1e15), 1e15))


@dataclass(slots=True)
class Segment:
    """Coverage of one check by this daemon session: consecutive tests at one cadence."""

    first: float
    last: float
    interval: float
    timeout: float
    tests: int = 1
    id: int | None = None


@dataclass(slots=True)
class Pending:
    """Unflushed state of one check, kept on the event loop."""

    run_first: float = 0.0
    run_last: float = 0.0
    run_count: int = 0
    run_id: int | None = None
    run_dirty: bool = False
    segment: Segment | None = None
    seg_dirty: bool = False
    finished: tuple[Segment, ...] = ()  # cadence changed, not written yet (rare: no list each)
    flying: Segment | None = None  # handed to the engine, not committed yet: still pending


@dataclass(frozen=True, slots=True)
class RunWrite:
    check_id: int
    id: int | None  # None: insert
    first: float
    last: float
    count: int


@dataclass(frozen=True, slots=True)
class SegWrite:
    check_id: int
    id: int | None  # None: insert
    first: float
    last: float
    interval: float
    timeout: float
    tests: int


@dataclass(frozen=True, slots=True)
class FailureWrite:
    """A failed test to append to its week's row, with the pass run it ends folded in."""

    check_id: int
    test: FailedTest
    reason: int  # text ids
    transcript: int
    passes: int  # tests of the pass run this one ends (0: none pending)
    run_id: int | None  # that run's ``pass_runs`` row, deleted in the same transaction

    def row(self) -> tuple[int, float, bytes]:
        """week, at, record bytes."""
        t = self.test
        record = Record(t.at, t.duration, self.reason, self.transcript, self.passes)
        return failures.week_of(t.at), t.at, failures.encode(record)


@dataclass(slots=True)
class _Batch:
    """What one transaction writes for buffered checks; ids come back in the same order."""

    runs: list[RunWrite] = field(default_factory=list)
    segments: list[SegWrite] = field(default_factory=list)
    run_owners: list[Pending] = field(default_factory=list)
    seg_owners: list[Segment] = field(default_factory=list)
    finished: list[tuple[Pending, int]] = field(default_factory=list)  # taken per check


def _take(check_id: int, p: Pending, batch: _Batch) -> None:
    """Move one check's dirty state into ``batch`` (the caller holds the write lock)."""
    for seg in p.finished:
        batch.segments.append(_seg_write(check_id, seg))
        batch.seg_owners.append(seg)
    batch.finished.append((p, len(p.finished)))  # dropped once written
    if p.run_dirty and p.run_count:
        batch.runs.append(RunWrite(check_id, p.run_id, p.run_first, p.run_last, p.run_count))
        batch.run_owners.append(p)
    p.run_dirty = False
    s = p.segment
    if p.seg_dirty and s is not None:
        batch.segments.append(_seg_write(check_id, s))
        batch.seg_owners.append(s)
        p.flying = s  # a reader sees it pending until the engine has committed it
    p.seg_dirty = False


def _seg_write(check_id: int, s: Segment) -> SegWrite:
    return SegWrite(check_id, s.id, s.first, s.last, s.interval, s.timeout, s.tests)


def covered_until(end: float, seen_at: float | None, now: float) -> float:
    """Where a stored segment's coverage ends for a reader: ``now`` while a live daemon
    vouches for it (flushed at most LIVE_AFTER_FLUSH ago while on time), else its end."""
    live = seen_at is not None and seen_at <= end and 0.0 <= now - seen_at <= LIVE_AFTER_FLUSH
    return now if live else min(end, now)


class BufferedStore(ABC):
    """The test-result half of a :class:`~probed.store.base.Store`, over an engine's batch writes."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._pending: dict[int, Pending] = {}
        self._services: dict[int, str] = {}  # check id -> service, for pending coverage
        # per service, the checks whose coverage may wait for a flush (pruned when read): a
        # reader of the coverage looks at the checks tested since the last flush, not at all
        self._unflushed: dict[str, set[int]] = {}
        self._lock = asyncio.Lock()  # buffered state handed to the engine: one writer at a time
        self.texts = Texts()  # the texts dictionary's committed ids

    # ------------------------------------------------------ the engine

    @property
    @abstractmethod
    def location(self) -> str: ...

    @abstractmethod
    async def _check_id(self, service: str, check: str, type_: str) -> int: ...

    @abstractmethod
    async def _unfinished(self, check_ids: Sequence[int]) -> list[int]:
        """The checks whose latest failed test at this location is after their latest pass."""

    @abstractmethod
    async def _check_ids(self, checks: Sequence[tuple[str, str, str]]) -> list[int]: ...

    @abstractmethod
    async def _write_batch(
        self,
        runs: Sequence[RunWrite],
        segments: Sequence[SegWrite],
        failure: FailureWrite | None,
        seen_at: float,
    ) -> tuple[list[int], list[int]]:
        """One transaction: pass runs, segments (``seen_at`` = now) and the failed test;
        returns the ids of the runs and segments, in order."""

    @abstractmethod
    async def _intern(self, texts: Sequence[str]) -> list[tuple[int, str]]:
        """Commit these texts into ``texts`` (each once); their (id, text)."""

    @abstractmethod
    async def _lookup(self, ids: Sequence[int]) -> list[tuple[int, str]]:
        """The (id, text) of stored texts."""

    @abstractmethod
    async def _failure_rows(
        self, service: str, check: str, weeks: tuple[int, int], location: str | None
    ) -> list[tuple[str, int, bytes]]:
        """(location, week, data) of the check's ``failure_weeks`` rows within ``weeks``."""

    @abstractmethod
    async def _restore_rows(self, check_id: int) -> tuple[float, list[tuple[str, int, bytes]]]:
        """This location's last stored pass (``-inf`` without one) and its rows from then on."""

    @abstractmethod
    async def _open_outage(self, check_id: int) -> OutageSpan | None:
        """This location's latest open outage of the check."""

    @abstractmethod
    async def close_outage(self, outage_id: int, run: FailureRun, closed_at: float) -> None: ...

    @abstractmethod
    async def _stopped(self, segment_ids: Sequence[int] | None) -> None:
        """These segments (None: every one of this location's) are no longer live."""

    @abstractmethod
    async def _stored_coverage(
        self, service: str, window: Interval, now: float, location: str | None
    ) -> list[Interval]: ...

    @abstractmethod
    async def _stored_first_test_at(self, service: str, location: str | None) -> float | None: ...

    @abstractmethod
    async def _stored_month_reads(self, window: Interval, now: float) -> dict[str, ServiceReads]:
        """:meth:`month_reads` of the stored rows alone (coverage not filtered)."""

    # ------------------------------------------------------ test results

    async def check_id(self, service: str, check: str, type_: str) -> int:
        cid = await self._check_id(service, check, type_)
        self._services[cid] = service
        return cid

    async def check_ids(self, checks: Sequence[tuple[str, str, str]]) -> list[int]:
        ids = await self._check_ids(checks)
        for (service, _, _), cid in zip(checks, ids, strict=True):
            self._services[cid] = service
        return ids

    def _extend(self, check_id: int, at: float, interval: float, timeout: float) -> Pending:
        p = self._pending.get(check_id)
        if p is None:
            p = self._pending[check_id] = Pending()
        s = p.segment
        if s is None or (s.interval, s.timeout) != (interval, timeout):
            if s is not None and p.seg_dirty:
                p.finished += (s,)
            p.segment = Segment(at, at, interval, timeout)
        else:
            s.last = max(s.last, at)
            s.tests += 1
        p.seg_dirty = True
        self._touch(check_id)
        return p

    def _touch(self, check_id: int) -> None:
        service = self._services.get(check_id)
        if service is not None:
            self._unflushed.setdefault(service, set()).add(check_id)

    @staticmethod
    def _passed(p: Pending, at: float) -> None:
        if p.run_count == 0:
            p.run_id, p.run_first = None, at
        p.run_last = at
        p.run_count += 1
        p.run_dirty = True

    async def record_pass(
        self,
        check_id: int,
        at: float,
        *,
        interval: float,
        test_timeout: float = 0.0,
        durable: bool = False,
    ) -> None:
        if not durable:
            self._passed(self._extend(check_id, at, interval, test_timeout), at)
            return
        async with self._durable(check_id):
            self._passed(self._extend(check_id, at, interval, test_timeout), at)
            await self._write_locked([check_id])

    async def record_failure(
        self, check_id: int, test: FailedTest, *, interval: float, test_timeout: float = 0.0
    ) -> None:
        reason, transcript = await self._text_ids(test.reason, test.transcript)
        async with self._durable(check_id):
            p = self._extend(check_id, test.at, interval, test_timeout)
            fold = FailureWrite(check_id, test, reason, transcript, p.run_count, p.run_id)
            p.run_dirty = False  # the pass run becomes part of the failed test's record
            await self._write_locked([check_id], failure=fold)
            p.run_count, p.run_id, p.run_dirty = 0, None, False

    async def _text_ids(self, *texts: str) -> list[int]:
        missing = self.texts.missing(texts)
        if missing:
            self.texts.learn(await self._intern(missing))
        return [self.texts.ids[t] for t in texts]

    async def failed_tests(
        self, service: str, check: str, window: Interval, *, location: str | None = None
    ) -> list[FailedTest]:
        weeks = (_week(window[0]), _week(window[1]))
        rows = await self._failure_rows(service, check, weeks, location)
        found = [
            (loc, r) for loc, r in failures.decode_rows(rows) if window[0] <= r.at <= window[1]
        ]
        await self._known(r for _, r in found)
        found.sort(key=lambda lr: (lr[1].at, lr[0]))
        return [self.texts.failed_test(check, loc, r) for loc, r in found]

    async def _known(self, records: Iterable[Record]) -> None:
        unknown = self.texts.unknown(failures.text_ids(records))
        if unknown:
            self.texts.learn(await self._lookup(unknown))

    async def restore_run(self, check_id: int) -> FailureRun | None:
        """The check's unfinished failure run. An open outage is its durable record on the
        daemon's timeline (moved with every clock step, unlike the failed tests stored
        before a step): the run continues it, with any failed test stored after its row."""
        last_pass, rows = await self._restore_rows(check_id)
        fails = failures.trailing((r for _, r in failures.decode_rows(rows)), last_pass)
        await self._known(fails)
        reason = self.texts.texts
        outage = await self._open_outage(check_id)
        if outage is not None:
            run = FailureRun(
                outage.start, outage.end, outage.failed_tests, outage.reasons, outage.id
            )
            if not fails and last_pass > outage.end:  # a pass ended it before its row closed
                await self.close_outage(outage.id or 0, run, last_pass)
                return None
            # the kill came between a failed test's write and its outage row's update: those
            # tests come right after the row's last one, never in the future of this clock
            # (where tests stored before a backward step are)
            now, behind = self.clock(), len(fails) - outage.failed_tests
            later = [r for r in fails if outage.end < r.at <= now][:behind] if behind > 0 else []
            for r in later:
                run = run.with_failure(r.at, reason[r.reason])
            return run
        if not fails:
            return None
        run = FailureRun(fails[0].at, fails[0].at, 1, (reason[fails[0].reason],))
        for r in fails[1:]:
            run = run.with_failure(r.at, reason[r.reason])
        return run

    async def restore_runs(self, check_ids: Sequence[int]) -> dict[int, FailureRun]:
        found: dict[int, FailureRun] = {}
        for cid in await self._unfinished(check_ids):  # only those: few, whatever the config
            run = await self.restore_run(cid)
            if run is not None:
                found[cid] = run
        return found

    async def record_unmonitored(self, check_id: int) -> None:
        """The check's test was discarded (a stall of the daemon): its coverage segment ends
        here, so the time until its next test is a gap, not coverage."""
        p = self._pending.get(check_id)
        if p is not None and p.segment is not None:
            if p.seg_dirty:
                p.finished += (p.segment,)  # written by the next flush
                self._touch(check_id)
            p.segment, p.seg_dirty = None, False

    async def flush(self) -> None:
        dirty = [c for c, p in self._pending.items() if p.run_dirty or p.seg_dirty or p.finished]
        async with self._lock:
            await self._write_locked(dirty)

    async def restart_segments(self) -> None:
        await self.flush()
        for p in self._pending.values():  # the next test starts a new run and segment
            p.segment, p.seg_dirty, p.run_count, p.run_id = None, False, 0, None

    def _durable(self, check_id: int) -> _Durable:
        return _Durable(self, check_id)

    async def _write_locked(
        self, check_ids: Sequence[int], *, failure: FailureWrite | None = None
    ) -> None:
        batch = _Batch()
        for cid in check_ids:
            _take(cid, self._pending[cid], batch)
        if not (batch.runs or batch.segments or failure):
            return
        try:
            run_ids, seg_ids = await self._write_batch(
                batch.runs, batch.segments, failure, self.clock()
            )
        except BaseException:
            for owner in batch.run_owners:  # written again by the next attempt
                owner.run_dirty = True
            for cid in check_ids:
                self._pending[cid].seg_dirty = self._pending[cid].segment is not None
                self._touch(cid)
            raise
        finally:
            for cid in check_ids:
                self._pending[cid].flying = None
        for owner, run_id in zip(batch.run_owners, run_ids, strict=True):
            owner.run_id = run_id
        for seg, seg_id in zip(batch.seg_owners, seg_ids, strict=True):
            seg.id = seg_id
        for p, written in batch.finished:
            p.finished = p.finished[written:]

    # ---------------------------------------------------------- coverage

    # The pending segments are read before the stored ones: a flush that runs while the
    # store is read moves a segment from one to the other, and read in the other order it
    # would be in neither (a day without tests on the status page).

    async def coverage(
        self, service: str, window: Interval, now: float, *, location: str | None = None
    ) -> list[Interval]:
        pending = (
            [
                (s.first, min(s.last + s.interval + s.timeout, now))
                for s in self._pending_segments(service)
            ]
            if location in (None, self.location)
            else []
        )
        spans = await self._stored_coverage(service, window, now, location) + pending
        return [(a, b) for a, b in spans if b > a]

    async def first_test_at(self, service: str, *, location: str | None = None) -> float | None:
        pending = (
            [s.first for s in self._pending_segments(service)]
            if location in (None, self.location)
            else []
        )
        stored = await self._stored_first_test_at(service, location)
        candidates = [x for x in [stored, *pending] if x is not None]
        return min(candidates) if candidates else None

    async def month_reads(self, window: Interval, now: float) -> dict[str, ServiceReads]:
        pending = {service: list(self._pending_segments(service)) for service in self._unflushed}
        found = await self._stored_month_reads(window, now)
        for service, segments in pending.items():
            if segments:  # as coverage() and first_test_at() add them
                reads = found.setdefault(service, ServiceReads())
                reads.coverage.setdefault(self.location, []).extend(
                    (s.first, min(s.last + s.interval + s.timeout, now)) for s in segments
                )
                stored = [] if reads.first_test_at is None else [reads.first_test_at]
                reads.first_test_at = min([*stored, *(s.first for s in segments)])
        for reads in found.values():
            spans = {
                name: [(a, b) for a, b in got if b > a] for name, got in reads.coverage.items()
            }
            reads.coverage = {name: kept for name, kept in spans.items() if kept}
        return found

    def _pending_segments(self, service: str) -> Iterator[Segment]:
        """The service's segments not written yet (checks tested since the last flush)."""
        ids = self._unflushed.get(service, set())
        for cid in list(ids):
            p = self._pending.get(cid)
            dirty = p is not None and p.segment is not None and p.seg_dirty
            if p is None or not (p.finished or dirty or p.flying):
                ids.discard(cid)  # written meanwhile
                continue
            yield from p.finished
            if p.flying is not None and not (dirty and p.flying is p.segment):
                yield p.flying
            if dirty and p.segment is not None:
                yield p.segment

    def _written_segments(self) -> list[int]:
        return [p.segment.id for p in self._pending.values() if p.segment and p.segment.id]

    async def start_session(self) -> None:
        await self._stopped(None)

    async def _stop_session(self) -> None:
        """At close: write what is buffered, then stop vouching for this session's segments."""
        await self.flush()
        await self._stopped(self._written_segments())


class _Durable:
    """Holds the write lock around a durable write; a failed write restores the check's buffer."""

    def __init__(self, store: BufferedStore, check_id: int) -> None:
        self.store = store
        self.check_id = check_id
        self.before: Pending | None = None

    async def __aenter__(self) -> None:
        await self.store._lock.acquire()
        self.before = copy.deepcopy(self.store._pending.get(self.check_id))

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is not None:
                if self.before is None:
                    self.store._pending.pop(self.check_id, None)
                else:
                    self.store._pending[self.check_id] = self.before
                    self.store._touch(self.check_id)
        finally:
            self.store._lock.release()
