"""What a store has seen but not yet written: per check, its pass run and coverage segment.

Passing tests only extend two rows per check (``pass_runs``, ``segments``),
so a store buffers them here and writes the dirty ones in batches. A failed
test (or the pass that ends a failure run) writes its check's buffer in the
same transaction as itself.

A write either commits or changes nothing: a store takes a
:meth:`PendingChecks.snapshot` before a transaction and restores it when the
transaction fails, so retrying the same call (the write spool does) writes
exactly what the first attempt would have.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class Pending:
    """One check's unwritten pass run and segment (ids are None until inserted)."""

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
    seg_timeout: float = 0.0
    seg_dirty: bool = False

    @property
    def dirty(self) -> bool:
        return (self.run_dirty and self.run_count > 0) or self.seg_dirty

    def new_segment_needed(self, interval: float, timeout: float) -> bool:
        """A changed interval or timeout starts a new segment (the old one must be written)."""
        return self.seg_tests > 0 and (interval, timeout) != (self.seg_interval, self.seg_timeout)

    def extend(self, at: float, interval: float, timeout: float) -> None:
        """Count one test (pass or fail) in the coverage segment."""
        if self.seg_tests == 0 or self.new_segment_needed(interval, timeout):
            self.seg_id, self.seg_first, self.seg_tests = None, at, 0
            self.seg_interval, self.seg_timeout = interval, timeout
        self.seg_last = max(self.seg_last, at) if self.seg_tests else at
        self.seg_tests += 1
        self.seg_dirty = True

    def passed(self, at: float) -> None:
        if self.run_count == 0:
            self.run_id, self.run_first = None, at
        self.run_last = at
        self.run_count += 1
        self.run_dirty = True

    def failed(self) -> None:
        """After the failure and the run it ends are written: the next pass starts a new run."""
        self.run_id, self.run_count, self.run_dirty = None, 0, False

    def written(self) -> None:
        self.run_dirty = self.seg_dirty = False


class PendingChecks:
    """Every check's :class:`Pending`, by check id."""

    def __init__(self) -> None:
        self.checks: dict[int, Pending] = {}

    def get(self, check_id: int) -> Pending:
        p = self.checks.get(check_id)
        if p is None:
            p = self.checks[check_id] = Pending()
        return p

    def dirty(self) -> list[tuple[int, Pending]]:
        return [(cid, p) for cid, p in self.checks.items() if p.dirty]

    def unflushed(self, check_ids: Iterable[int]) -> list[Pending]:
        """Buffers with tests not written yet (their coverage is not in the table)."""
        return [
            p for cid in check_ids if (p := self.checks.get(cid)) and p.seg_dirty and p.seg_tests
        ]

    def snapshot(self, check_ids: Iterable[int]) -> dict[int, Pending]:
        return {cid: copy.copy(p) for cid in check_ids if (p := self.checks.get(cid)) is not None}

    def restore(self, snapshot: dict[int, Pending], check_ids: Iterable[int]) -> None:
        """Undo a failed transaction: back to the snapshot (checks new since then vanish)."""
        for cid in check_ids:
            if cid in snapshot:
                self.checks[cid] = snapshot[cid]
            else:
                self.checks.pop(cid, None)
