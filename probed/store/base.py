"""The storage seam: one async :class:`Store` interface and the records it speaks.

The daemon, the API, the reports, incidents, exclusions, the hooks' outbox and
the budget announcements use a store only through this interface; nothing
else touches a database connection. Implementations: ``probed.store.sqlite``
(embedded, one machine) and ``probed.store.postgresql`` (shared by several
daemons). :func:`open_store` picks one from the storage URL.

Rules every implementation keeps (``tests/test_store_contract.py`` checks them):

- **Durability.** ``record_failure`` and ``record_pass(..., durable=True)`` are
  committed before they return, together with the check's pending pass run
  and coverage: a crash loses no recorded failure and no pass that ended a
  failure run. Other passes and coverage are buffered and written by
  ``flush`` (the daemon calls it every few seconds); a crash loses at most
  that much coverage, never a verdict that changes downtime.
- **Identity.** A store belongs to one *location* (the probing instance,
  default the host name). Every row it writes carries that location; check
  ids are shared by all locations. Reads take ``location=None`` for "every
  location" or a name for one of them, and return the location of each
  record where it matters (outages, failed tests).
- **Order.** Each hook's outbox rows are delivered oldest first: only the
  hook's oldest undelivered row can be claimed, and a claim is a lease that
  another instance sharing the database respects.
- **Errors.** Every failure to read or write is a :class:`StorageError` with
  a message for humans; a damaged or foreign database at open is a
  :class:`DamagedStore`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from probed.core.accounting import ExclusionSpan, Interval, OutageSpan
from probed.core.outages import FailureRun

if TYPE_CHECKING:
    from probed.config import Config


FLUSH_EVERY = 2.0  # seconds between the daemon's writes of buffered passes and coverage
LIVE_AFTER_FLUSH = 2 * FLUSH_EVERY + 1.0
"""A segment written this recently by a running daemon covers up to ``now`` for readers
in other processes: its unflushed tail is not a monitoring gap."""


# PostgreSQL: how long one store operation (or the wait for a connection and its
# query) may take before the store counts as unreachable (config ``storage_timeout``)
STORE_TIMEOUT = 10.0


class StorageError(Exception):
    """The store cannot be opened, read or written; the message says why."""


class DamagedStore(StorageError):
    """The database exists but is damaged or is not a probed store; never written to."""


class UnknownExclusion(LookupError):
    """No exclusion has this id."""


class AlreadyRevoked(LookupError):
    """The exclusion was revoked before; a revocation is never overwritten."""


def default_location() -> str:
    """The instance identity used when the config names none: the host name."""
    return socket.gethostname() or "localhost"


# --------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class FailedTest:
    """One failed test: the evidence behind downtime."""

    check: str
    at: float  # when the test started (UTC epoch seconds)
    duration: float
    reason: str
    transcript: str = ""
    location: str = ""  # who tested; filled in by reads


@dataclass(slots=True)
class ServiceReads:
    """One service's share of :meth:`Store.month_reads`."""

    outages: list[OutageSpan] = field(default_factory=list)  # by start
    coverage: dict[str, list[Interval]] = field(default_factory=dict)  # by location
    first_test_at: float | None = None


@dataclass(frozen=True, slots=True)
class StoredOutage:
    """One outage looked up by id (``probed report --incident``)."""

    service: str
    span: OutageSpan  # ``span.location`` says who saw it
    closed_at: float | None  # the passing test that ended it; None while open


@dataclass(frozen=True, slots=True)
class NewExclusion:
    """What a caller flags; the store adds id, location and created_at."""

    service: str  # or ``accounting.ALL_SERVICES``
    start: float
    end: float
    kind: str
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event to deliver to some hooks; ``payload`` is the hooks' own JSON envelope."""

    hooks: tuple[str, ...]
    payload: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A hook event given up: why and when (``/api/v1/status``)."""

    id: int
    hook: str
    payload: str
    created_at: float
    attempts: int
    dead_at: float
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event for one hook.

    ``claimed`` says whether this instance now holds the row's lease and
    should deliver it. An unclaimed row is the hook's oldest undelivered row
    that is not due yet (or leased by another instance): look again at
    ``next_attempt_at``.
    """

    id: int
    hook: str
    payload: str
    created_at: float
    attempts: int
    next_attempt_at: float
    location: str  # who enqueued it
    claimed: bool = False


# ------------------------------------------------------------- interface


class Store(Protocol):
    """Everything probed stores and reads. All methods may raise :class:`StorageError`."""

    @property
    def location(self) -> str:
        """This instance's identity, written into every row."""
        ...

    @property
    def describe(self) -> str:
        """Where the store is, for messages (a path or a URL without password)."""
        ...

    # --------------------------------------------------- test results

    async def check_id(self, service: str, check: str, type_: str) -> int:
        """The shared id of a check (created on first use; its type is kept current)."""
        ...

    async def check_ids(self, checks: Sequence[tuple[str, str, str]]) -> list[int]:
        """``check_id`` of many ``(service, check, type)`` at once, in order: one call
        for a whole config (100 000 checks start in seconds)."""
        ...

    async def record_pass(
        self,
        check_id: int,
        at: float,
        *,
        interval: float,
        test_timeout: float = 0.0,
        durable: bool = False,
    ) -> None:
        """A passing test. Buffered until ``flush`` unless ``durable`` (the pass that
        ends a failure run must be durable before the check's next failure)."""
        ...

    async def record_failure(
        self, check_id: int, test: FailedTest, *, interval: float, test_timeout: float = 0.0
    ) -> None:
        """A failed test, durable on return together with the pass run it ends."""
        ...

    async def record_unmonitored(self, check_id: int) -> None:
        """A test slot without a verdict (discarded, e.g. during a loop stall): the check's
        coverage segment ends at its previous test, so the slot counts as unmonitored."""
        ...

    async def flush(self) -> None:
        """Write buffered passes and coverage, and tell readers this instance is alive."""
        ...

    async def start_session(self) -> None:
        """This instance starts probing: earlier sessions of its location are over, so
        their unflushed tails (e.g. before a ``kill -9``) count as gaps from now on."""
        ...

    async def restart_segments(self) -> None:
        """After a clock step: what is buffered is written, and each check's next test
        starts a new pass run and coverage segment, so that none spans the step."""
        ...

    async def restore_run(self, check_id: int) -> FailureRun | None:
        """This location's failure run of the check that no pass has ended yet,
        bound to its open outage row if it has one (after a restart)."""
        ...

    async def restore_runs(self, check_ids: Sequence[int]) -> dict[int, FailureRun]:
        """``restore_run`` of many checks at once; checks without a run are left out."""
        ...

    # --------------------------------------------------------- outages

    async def open_outage(self, check_id: int, run: FailureRun) -> int:
        """Store a new outage (durable); returns its id."""
        ...

    async def update_outage(self, outage_id: int, run: FailureRun) -> None: ...

    async def close_outage(self, outage_id: int, run: FailureRun, closed_at: float) -> None: ...

    async def outages(
        self, service: str, window: Interval, *, location: str | None = None
    ) -> list[OutageSpan]:
        """Outages of the service's checks touching ``window``, by start."""
        ...

    async def outage(self, outage_id: int) -> StoredOutage | None: ...

    async def failed_tests(
        self, service: str, check: str, window: Interval, *, location: str | None = None
    ) -> list[FailedTest]:
        """Failed tests of one check with ``window[0] <= at <= window[1]``, by time."""
        ...

    async def coverage(
        self, service: str, window: Interval, now: float, *, location: str | None = None
    ) -> list[Interval]:
        """When the service was being tested (overlapping spans; callers take the union).

        A test covers its interval plus its timeout: only a real gap (no test
        of a check for longer than that) is unmonitored time. Coverage not yet
        flushed by a live daemon is not a gap."""
        ...

    async def first_test_at(self, service: str, *, location: str | None = None) -> float | None: ...

    async def month_reads(self, window: Interval, now: float) -> dict[str, ServiceReads]:
        """What ``probed report`` reads for every service at once, keyed by service:
        :meth:`outages` touching ``window``, :meth:`coverage` per location, and
        :meth:`first_test_at` (every location's). A few queries instead of a few per
        service; each service's reads are those the per-service methods return."""
        ...

    async def locations(self) -> list[str]:
        """Every location that has written test results, sorted."""
        ...

    # ------------------------------------------------------ exclusions

    async def add_exclusion(
        self, new: NewExclusion, *, created_at: float | None = None
    ) -> ExclusionSpan: ...

    async def revoke_exclusion(
        self, exclusion_id: int, *, by: str, reason: str, at: float | None = None
    ) -> ExclusionSpan:
        """Mark it revoked (kept for the audit trail). Raises :class:`UnknownExclusion`
        or :class:`AlreadyRevoked`."""
        ...

    async def exclusion(self, exclusion_id: int) -> ExclusionSpan | None: ...

    async def exclusions(self, window: Interval | None = None) -> list[ExclusionSpan]:
        """Live and revoked exclusions touching ``window`` (all when None), by start."""
        ...

    async def generation(self) -> int:
        """A counter bumped by every exclusion change, by any process or instance."""
        ...

    # ---------------------------------------------------------- outbox

    async def enqueue(self, entries: Sequence[OutboxEntry], now: float) -> None:
        """Commit one row per entry and hook, in order, before anyone delivers them."""
        ...

    async def claim(self, hook: str, now: float, lease: float) -> OutboxRow | None:
        """The hook's oldest undelivered row, or None when it has none.

        When it is due and nobody else holds it, it is leased to this instance
        until ``now + lease`` and returned with ``claimed=True``."""
        ...

    async def delivered(self, row_id: int, at: float) -> None:
        """The row's transport succeeded: it is never delivered again."""
        ...

    async def failed(self, row_id: int, reason: str, next_attempt_at: float) -> None:
        """The attempt failed: count it, keep the reason, release the lease until then."""
        ...

    async def history(self, hook: str) -> list[OutboxRow]:
        """The hook's delivered rows, oldest first (Alertmanager rebuilds its alerts)."""
        ...

    async def dead_letter(self, row_id: int, reason: str, at: float) -> None:
        """Give the row up (a permanent refusal, or too old): never claimed again, kept
        with its reason for ``dead_letters``; the hook goes on with its next row."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead-lettered rows of every hook, newest first."""
        ...

    async def undelivered(self) -> dict[str, int]:
        """Undelivered rows per hook name, configured or not."""
        ...

    # ------------------------------------------- budget announcements

    async def announced(self, service: str, month: str) -> frozenset[str]:
        """What was already told about the service's month (e.g. ``budget_80``)."""
        ...

    async def announce(
        self,
        service: str,
        month: str,
        whats: Sequence[str],
        at: float,
        entries: Sequence[OutboxEntry],
    ) -> bool:
        """Record ``whats`` as told and enqueue ``entries`` in one transaction.

        Returns False (and enqueues nothing) when every one of ``whats`` was
        already told, e.g. by another instance sharing the database."""
        ...

    # ------------------------------------------------------- lifecycle

    async def writable(self) -> str | None:
        """None when a write succeeds now, else the reason (for ``/healthz``)."""
        ...

    async def close(self) -> None:
        """Flush (unless read-only), mark this instance's coverage as no longer live,
        and release the connection."""
        ...


# --------------------------------------------------------------- factory


def storage_url(target: str | Path | Config) -> str:
    """The storage URL of a config, a URL, or a bare SQLite path."""
    if isinstance(target, Path):
        return f"sqlite://{target}"
    if isinstance(target, str):
        return target if "://" in target else f"sqlite://{target}"
    return target.storage_url


async def open_store(
    target: str | Path | Config,
    *,
    location: str | None = None,
    readonly: bool = False,
    clock: Callable[[], float] = time.time,
) -> Store:
    """Open the store a URL names: ``sqlite:///path`` or ``postgresql://user@host/db``.

    ``location`` defaults to the config's ``location:`` (or the host name).
    ``clock`` is the wall clock the store stamps its liveness with (tests
    inject one). Raises :class:`StorageError` (or :class:`DamagedStore`) with
    a message that names the store."""
    url = storage_url(target)
    if location is None:
        location = default_location() if isinstance(target, str | Path) else target.location
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from probed.store.sqlite import SqliteStore

        return await SqliteStore.open(
            Path(url.removeprefix("sqlite://")), location=location, readonly=readonly, clock=clock
        )
    if scheme in ("postgresql", "postgres"):
        try:
            from probed.store import postgresql  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            raise StorageError("postgresql store not available in this probed") from None
        # the PostgreSQL store takes the config itself: its password comes from a file
        store: Store = await postgresql.open_store(
            target, location=location, readonly=readonly, clock=clock
        )
        return store
    raise StorageError(f'unknown storage "{scheme}://": expected sqlite:// or postgresql://')
