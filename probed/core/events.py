"""Event records that outage detection emits and stores, metrics and hooks consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

EventKind: TypeAlias = Literal[
    "outage_opened",  # a check's failure run reached failures_to_down
    "outage_extended",  # another failed test in an open outage
    "outage_closed",  # the first passing test after an outage
    "service_down",  # the first check of a service went into an outage
    "service_up",  # the last open outage of a service closed
    "budget_threshold",  # a share of the month's error budget was used (50/80/100 %)
    "objective_missed",  # the month's availability fell below the objective
    # Several locations: one location's own outage (the quorum decides outage_opened/closed).
    "location_outage_opened",
    "location_outage_closed",
]
Severity: TypeAlias = Literal["P1", "P2", "P3"]


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable event. Times are UTC epoch seconds."""

    kind: EventKind
    service: str
    at: float
    check: str | None = None
    severity: Severity = "P2"
    outage_id: int | None = None
    start: float | None = None  # first failed test of the outage
    end: float | None = None  # last failed test (downtime ends here)
    failed_tests: int = 0
    downtime_seconds: float | None = None
    reasons: tuple[str, ...] = ()
    summary: str = ""
    extra: dict[str, str | float | int | None] = field(default_factory=dict)
