"""Database rows into records, the same for both engines (the SELECTs list columns alike)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from probed.core.accounting import ExclusionSpan, OutageSpan
from probed.store.base import DeadLetter, OutboxRow

# database rows are untyped: each value is converted where it is read


def outage_span(r: Sequence[Any]) -> OutageSpan:
    """id, check name, start, last_failed, failed_tests, reasons, closed_at, location."""
    return OutageSpan(
        check=str(r[1]),
        start=float(r[2]),
        end=float(r[3]),
        failed_tests=int(r[4]),
        reasons=_reasons(r[5]),
        open=r[6] is None,
        id=int(r[0]),
        location=str(r[7]),
    )


@lru_cache(maxsize=1024)
def _reasons(text: str) -> tuple[str, ...]:
    """An outage's reasons column: the same few lists of reasons come back for thousands."""
    return tuple(json.loads(text))


def outbox_row(r: Sequence[Any], due: float, *, claimed: bool) -> OutboxRow:
    """id, hook, event_json, created_at, attempts, next_attempt_at, location."""
    return OutboxRow(
        id=int(r[0]),
        hook=str(r[1]),
        payload=str(r[2]),
        created_at=float(r[3]),
        attempts=int(r[4]),
        next_attempt_at=due,
        location=str(r[6]),
        claimed=claimed,
    )


def exclusion_span(r: Sequence[Any]) -> ExclusionSpan:
    """id, service, start, end, kind, reason, by, created_at, revoked_at/_by/_reason."""
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


def dead_letter(r: Sequence[Any]) -> DeadLetter:
    """id, hook, event_json, created_at, attempts, dead_at, last_error."""
    return DeadLetter(
        int(r[0]), str(r[1]), str(r[2]), float(r[3]), int(r[4]), float(r[5]), str(r[6] or "")
    )
