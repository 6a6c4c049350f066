"""Quorum outages told once across every daemon that shares the store.

With several locations (or a check's ``quorum`` above 1), a location's own
outage is a ``location_outage_opened``/``_closed`` event (P3, from the daemon
that saw it), and the check's ``outage_opened``/``_closed`` follows the quorum
(docs/sla-rules.md, "Several locations"): whichever daemon first sees the
quorum reached (or lost) claims a unique key in the store's ledger
(:func:`probed.core.quorum.next_transition`) and queues the event in the same
transaction (:meth:`probed.store.base.Store.announce`); the others find the
key taken and say nothing. ``service_down``/``service_up`` follow the same
ledger: a service is down while any of its checks' quorum outages is open.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from probed.core import quorum
from probed.core.accounting import Interval, OutageSpan
from probed.core.events import Event, EventKind, Severity
from probed.core.quorum import TOLD_LEDGER, CheckVerdict
from probed.core.times import iso
from probed.hooks.budget import Router
from probed.logs import log
from probed.store.base import StorageError, Store
from probes.base import CheckBase

LOOKBACK = 3600.0  # seconds of coverage read for a majority vote; outages are read whole
LOCATIONS_TTL = 60.0  # how long the list of locations in the store is trusted
SERVICE = "*"  # the ledger's name for the service itself (no check is called that)


def open_checks(told: Iterable[str]) -> set[str]:
    """Checks whose latest quorum outage the ledger has opened and not closed."""
    opened: dict[str, int] = {}
    for key in told:
        check, _, kind = key.rpartition("/")[0].partition("/")
        opened[check] = opened.get(check, 0) + (1 if kind == "opened" else -1)
    return {check for check, n in opened.items() if n > 0 and check != SERVICE}


def down_now(verdict: CheckVerdict, now: float, tolerance: float) -> OutageSpan | None:
    """The open quorum outage, unless its latest failed test is older than ``tolerance``
    (a location that died inside an outage leaves it open in the store for ever)."""
    span = quorum.ongoing(verdict)
    return span if span is not None and span.end >= now - tolerance else None


class QuorumWatch:
    """Called after each change of this location's outages, and on every refresh."""

    def __init__(
        self, store: Store, router: Router, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.router = router
        self.clock = clock
        self.down: dict[str, set[str]] = {}  # per service, checks the ledger has down
        self._locations: tuple[float, int] = (-LOCATIONS_TTL, 0)
        self.active = False  # some check followed a quorum: service state comes from here
        # told (service, down) whenever the ledger's view of a service is read
        self.on_service: Callable[[str, bool], None] | None = None

    async def shared(self, check: CheckBase) -> bool:
        """Whether the check's outages follow a quorum: several locations, or quorum > 1."""
        checked_at, count = self._locations
        now = self.clock()
        if check.quorum == 1 and now - checked_at >= LOCATIONS_TTL:
            try:
                count = len(await self.store.locations())
            except StorageError as exc:  # the store is down: keep what we knew, ask again later
                log.warning("quorum.locations_unknown", reason=str(exc), locations=count)
            self._locations = (now, count)
        shared = check.quorum != 1 or count > 1
        self.active = self.active or shared
        return shared

    async def observe(self, service: str, check: CheckBase, at: float) -> None:
        verdict = await self._verdict(service, check, at)
        tolerance = 2 * check.interval + check.timeout
        span = down_now(verdict, at, tolerance)
        told = await self.store.announced(service, TOLD_LEDGER)
        decided = quorum.next_transition(told, check.name, span is not None)
        if decided is not None:
            last = span or (verdict.outages[-1] if verdict.outages else None)
            kind: EventKind = "outage_opened" if decided[0] == "opened" else "outage_closed"
            event = _check_event(kind, service, check, last, at, self._severity(service, told))
            if await self._tell(service, decided[1], event):
                told = told | {decided[1]}
        await self._service(service, told, at)

    async def refresh(self, services: Mapping[str, Iterable[CheckBase]]) -> None:
        """Re-decide every check the ledger has down (its last daemon may be gone)."""
        now = self.clock()
        for service, checks in services.items():
            down = open_checks(await self.store.announced(service, TOLD_LEDGER))
            for check in [c for c in checks if c.name in down] if down else ():  # usually none
                await self.observe(service, check, now)
            self._set_down(service, open_checks(await self.store.announced(service, TOLD_LEDGER)))

    def _set_down(self, service: str, down: set[str]) -> None:
        self.down[service] = down
        if self.on_service is not None and self.active:
            self.on_service(service, bool(down))

    def service_up(self, service: str) -> bool:
        return not self.down.get(service)

    async def states(
        self, service: str, checks: Iterable[CheckBase], now: float
    ) -> dict[str, dict[str, object]]:
        """The live view per check: the quorum's verdict and every location's own state
        (``down``: in an outage, ``up``: testing, ``unmonitored``: not testing now)."""
        window: Interval = (now - LOOKBACK, now + 1.0)
        outages = await self.store.outages(service, window)
        names = sorted({o.location for o in outages} | set(await self.store.locations()))
        coverage = {n: await self.store.coverage(service, window, now, location=n) for n in names}
        found: dict[str, dict[str, object]] = {}
        for check in checks:
            tolerance = 2 * check.interval + check.timeout
            own = [o for o in outages if o.check == check.name]
            records = [
                quorum.LocationRecord(
                    n, tuple(o for o in own if o.location == n), tuple(coverage[n])
                )
                for n in names
            ]
            verdict = quorum.check_verdict(check.name, records, check.quorum)
            found[check.name] = {
                "quorum": check.quorum,
                "verdict": "down" if down_now(verdict, now, tolerance) else "up",
                "locations": [_location_state(r, now, tolerance) for r in records],
            }
        return found

    async def _verdict(self, service: str, check: CheckBase, at: float) -> CheckVerdict:
        window: Interval = (at - LOOKBACK, at + 1.0)
        outages = [o for o in await self.store.outages(service, window) if o.check == check.name]
        names = sorted({o.location for o in outages} | set(await self.store.locations()))
        records = []
        for name in names:
            coverage = await self.store.coverage(service, window, at, location=name)
            own = tuple(o for o in outages if o.location == name)
            records.append(quorum.LocationRecord(name, own, tuple(coverage)))
        return quorum.check_verdict(check.name, records, check.quorum)

    async def _service(self, service: str, told: frozenset[str], at: float) -> None:
        down = open_checks(told)
        self._set_down(service, down)
        decided = quorum.next_transition(told, SERVICE, bool(down))
        if decided is None:
            return
        up = decided[0] == "closed"
        event = Event(
            "service_up" if up else "service_down",
            service,
            at,
            severity="P2" if up else self._severity(service, told),
            summary=f"service {service} is {'up' if up else 'down'}",
        )
        await self._tell(service, decided[1], event)

    def _severity(self, service: str, told: frozenset[str]) -> Severity:
        # the Recorder's rule would need every check's size; a quorum outage is P2, as an
        # isolated outage is, unless the ledger has more than one check of the service down
        return "P1" if len(open_checks(told)) > 1 else "P2"

    async def _tell(self, service: str, key: str, event: Event) -> bool:
        routed = self.router.route(event)
        entries = [] if routed is None else [routed]
        if not await self.store.announce(service, TOLD_LEDGER, [key], event.at, entries):
            return False
        self.router.wake(h for e in entries for h in e.hooks)
        log.warning(
            f"quorum.{event.kind}",
            service=service,
            check=event.check,
            locations=event.extra.get("locations"),
            key=key,
        )
        return True


def _location_state(
    record: quorum.LocationRecord, now: float, tolerance: float
) -> dict[str, object]:
    outage = next((o for o in record.outages if o.open and o.end >= now - tolerance), None)
    testing = any(a <= now <= b + 1.0 for a, b in record.coverage)
    state = "down" if outage is not None else ("up" if testing else "unmonitored")
    return {
        "location": record.location,
        "state": state,
        "outage_start": None if outage is None else iso(outage.start),
    }


def _check_event(
    kind: EventKind,
    service: str,
    check: CheckBase,
    span: OutageSpan | None,
    at: float,
    severity: Severity,
) -> Event:
    name = check.name
    if span is None:  # closed before any daemon read it back: nothing more to say
        return Event(kind, service, at, check=name, severity=severity)
    closed = kind == "outage_closed"
    downtime = span.end - span.start
    summary = (
        f"{service}/{name} is up again after {downtime:.0f}s of downtime"
        if closed
        else f"{service}/{name} is down at {', '.join(span.locations)}: "
        f"{span.reasons[-1] if span.reasons else 'failed'}"
    )
    return Event(
        kind,
        service,
        at,
        check=name,
        severity=severity,
        outage_id=span.id,
        start=span.start,
        end=span.end,
        failed_tests=span.failed_tests,
        downtime_seconds=downtime if closed else None,
        reasons=span.reasons,
        summary=summary,
        extra={"locations": ",".join(span.locations), "quorum": str(check.quorum)},
    )
