"""The one path from a test's outcome to stored verdicts, outage state and events.

For each test, in this order: the check's :class:`~probed.core.outages.Tracker`
sees the verdict; the store records it (a failed test, and the pass that ends
a failure run, durable before the next test of the check); the outage row is
opened, extended or closed; metrics are updated; events go to the sinks
(the hooks' durable outbox). The daemon and the tests use this same class.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace

from probed.core.events import Event, EventKind, Severity
from probed.core.outages import FailureRun, OutageChange, Tracker
from probed.daemon.downclock import DownClock
from probed.daemon.metrics import Metrics
from probed.daemon.runner import TestOutcome
from probed.daemon.scheduler import CheckKey
from probed.daemon.wire import RemoteProbeBug
from probed.hooks.quorum import QuorumWatch
from probed.logs import log
from probed.store.base import FailedTest, Store
from probes.base import CheckBase, Transcript

TRANSCRIPT_TAIL = 20  # lines of a failed test's transcript kept as evidence


@dataclass(slots=True)
class CheckState:
    check_id: int
    check: CheckBase
    tracker: Tracker


class Recorder:
    """Outcome handling: store first (durable), then metrics, then events."""

    def __init__(
        self,
        store: Store,
        emit: Callable[[Event], Awaitable[None]],
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        resolve: Callable[[int], int | None] = lambda outage_id: outage_id,
    ) -> None:
        self.store = store
        # the store's id of an outage id the store gave (the spool's provisional ids
        # are negative; None while the opening waits in the spool)
        self._resolve = resolve
        self.down_clock = DownClock(monotonic)  # the burn-rate counter
        self.emit = emit
        self.metrics = metrics
        self.checks: dict[CheckKey, CheckState] = {}
        self._down: dict[str, int] = {}  # checks in outage, per service: O(1) service state
        self._open: set[CheckKey] = set()  # the checks in an outage (readers check the tracker)
        self._size: dict[str, int] = {}
        self.changed = asyncio.Event()  # an outage opened or closed: figures are stale
        self._moved = 0.0  # all clock steps so far: a record() spanning one moves its run too
        self._bugs_logged: set[tuple[str, str, str]] = set()  # (service, check, exception type)
        # several locations: outage and service events follow the quorum (set by the daemon)
        self.quorum: QuorumWatch | None = None

    async def start(self, wanted: Iterable[tuple[str, CheckBase]]) -> None:
        """A new probing session: the store learns it, then the checks are adopted."""
        await self.store.start_session()
        await self.configure(wanted)

    async def configure(self, wanted: Iterable[tuple[str, CheckBase]]) -> None:
        """Adopt a (new) set of checks: keep the failure runs of unchanged checks,
        restore new ones from the store."""
        by_key: dict[CheckKey, CheckBase] = {(s, c.name): c for s, c in wanted}
        for key in [k for k in self.checks if k not in by_key]:
            old = self.checks.pop(key)
            if self.metrics is not None:
                self.metrics.remove_check(key[0], key[1], old.check.type)
        await self._restore([(k, c) for k, c in by_key.items() if k not in self.checks])
        for key, check in by_key.items():
            state = self.checks[key]
            state.check = check
            state.tracker.failures_to_down = check.failures_to_down
            if self.metrics is not None:
                self.metrics.init_check(key[0], key[1], check.type, up=not state.tracker.in_outage)
        self._down, self._size = {}, {}  # checks per service, for the severity of an event
        self._open = {key for key, state in self.checks.items() if state.tracker.in_outage}
        for (service, _), state in self.checks.items():
            self._down[service] = self._down.get(service, 0) + state.tracker.in_outage
            self._size[service] = self._size.get(service, 0) + 1
        for service, down in self._down.items():
            self.down_clock.set_down(service, bool(down))

    async def _restore(self, new: list[tuple[CheckKey, CheckBase]]) -> None:
        """New checks: registered and their failure runs restored, in two store calls."""
        if not new:
            return
        ids = await self.store.check_ids([(key[0], key[1], check.type) for key, check in new])
        runs = await self.store.restore_runs(ids)
        for (key, check), cid in zip(new, ids, strict=True):
            run = runs.get(cid)
            tracker = Tracker(check.failures_to_down, run)
            self.checks[key] = CheckState(cid, check, tracker)
            if run is not None:
                log.info(
                    "outage.restored" if tracker.in_outage else "failure_run.restored",
                    service=key[0],
                    check=key[1],
                    failed_tests=run.count,
                )

    def service_up(self) -> dict[str, bool]:
        """O(services), from the outage counts; with several locations, the quorum's."""
        down = self._down
        watch = self.quorum if self.quorum is not None and self.quorum.active else None
        if watch is not None:  # the quorum's verdict, the same from every daemon
            return {service: watch.service_up(service) for service in list(self._size)}
        return {service: not down.get(service, 0) for service in list(self._size)}

    def in_outage(self) -> int:
        """Checks in an outage now, O(services)."""
        return sum(self._down.values())

    def open_runs(self) -> list[FailureRun]:
        """Every check's open outage, O(outages): what changes when one opens or closes."""
        found = []
        for key in self._open:
            state = self.checks.get(key)
            if state is not None and state.tracker.in_outage and state.tracker.run is not None:
                found.append(state.tracker.run)
        return found

    def open_outages(self, service: str) -> list[tuple[str, FailureRun]]:
        """The service's open outages, each with its :meth:`outage_id`."""
        return [
            (key[1], replace(s.tracker.run, outage_id=self.outage_id(s.tracker.run)))
            for key, s in self.checks.items()
            if key[0] == service and s.tracker.in_outage and s.tracker.run is not None
        ]

    def outage_id(self, run: FailureRun) -> int | None:
        """The id the store gave the run's outage, as reports and incidents know it;
        None while its opening waits in the spool (a provisional id is never shown)."""
        return None if run.outage_id is None else self._resolve(run.outage_id)

    async def record(
        self, service: str, check: CheckBase, outcome: TestOutcome, transcript: Transcript
    ) -> None:
        if outcome.error is not None:
            self._probe_bug(service, check, outcome.error)
            return
        state = self.checks[(service, check.name)]
        result = outcome.result
        was_up = self._down.get(service, 0) == 0
        # the new state is worked out on a copy and shown (status, metrics) only once the
        # store holds it: nobody sees an outage that has no row, or no id, yet
        before = state.tracker
        moved_before = self._moved
        tracker = Tracker(before.failures_to_down, before.run)
        change = tracker.observe(outcome.started_at, result.ok, result.reason)
        if tracker.in_outage != before.in_outage:
            self._down[service] = self._down.get(service, 0) + (1 if tracker.in_outage else -1)
        await self._store(state, outcome, transcript, durable=result.ok and before.run is not None)
        if not result.ok:
            log.info(
                "probe.failed",
                service=service,
                check=check.name,
                reason=result.reason,
                duration=round(outcome.duration, 3),
            )
        if change is not None:
            await self._apply(service, state, tracker, change)
        tracker.failures_to_down = state.tracker.failures_to_down  # a reload may have changed it
        if self._moved != moved_before:  # a clock step while this test was being stored
            await self._move(tracker, self._moved - moved_before)
        state.tracker = tracker
        if tracker.in_outage:
            self._open.add((service, check.name))
        else:
            self._open.discard((service, check.name))
        if self.metrics is not None:
            delivery = result.details.get("delivery_seconds")
            expiry = result.details.get("cert_not_after")
            self.metrics.observe_test(
                service,
                check.name,
                check.type,
                result.ok,
                outcome.duration,
                float(delivery) if isinstance(delivery, int | float) else None,
                float(expiry) if isinstance(expiry, int | float) else None,
            )
            self.metrics.set_check_up(service, check.name, check.type, not state.tracker.in_outage)
        is_up = self._down.get(service, 0) == 0
        if was_up != is_up and not await self._shared(check):  # else the quorum decides
            self.down_clock.set_down(service, not is_up)
            await self._service_changed(service, is_up, outcome.started_at)

    async def clock_stepped(self, seconds: float) -> None:
        """Move every open failure run with the timeline: its duration stays what elapsed."""
        self._moved += seconds
        for state in self.checks.values():
            await self._move(state.tracker, seconds)
        await self.store.restart_segments()
        self.changed.set()

    async def _move(self, tracker: Tracker, seconds: float) -> None:
        run = tracker.run
        if run is not None:
            tracker.run = run = run.shifted(seconds)
            if run.outage_id is not None:
                await self.store.update_outage(run.outage_id, run)

    async def discard(
        self, service: str, check: CheckBase, outcome: TestOutcome, stalled: float
    ) -> None:
        """A failed test the daemon's own stall may have caused: no verdict, unmonitored
        (docs/sla-rules.md, "Timeouts and daemon stalls")."""
        state = self.checks.get((service, check.name))
        if state is None:
            return  # workers: N: a reload removed it while a worker tested it
        await self.store.record_unmonitored(state.check_id)
        if self.metrics is not None:
            self.metrics.discarded.labels("loop_stall").inc()
        log.warning(
            "scheduler.test_discarded",
            service=service,
            check=check.name,
            reason=outcome.result.reason,
            stalled_seconds=round(stalled, 3),
        )

    async def unmonitored(self, keys: Iterable[CheckKey]) -> None:
        """These checks' tests were lost (a worker process died): their coverage ends at
        their last test, the time until their next one is unmonitored, never downtime."""
        for key in keys:
            state = self.checks.get(key)
            if state is not None:
                await self.store.record_unmonitored(state.check_id)

    def _probe_bug(self, service: str, check: CheckBase, error: Exception) -> None:
        """Not a verdict: nothing is stored (the time shows as unmonitored), the failure run
        neither grows nor ends, and the operator sees "probed is broken", once per type."""
        kind = error.kind if isinstance(error, RemoteProbeBug) else type(error).__name__
        if self.metrics is not None:
            self.metrics.count_probe_error(service, check.name, check.type, kind)
        key = (service, check.name, kind)
        if key in self._bugs_logged:
            log.debug("probe.bug", service=service, check=check.name, error=kind)
            return
        self._bugs_logged.add(key)
        log.error(
            "probe.bug",
            service=service,
            check=check.name,
            type=check.type,
            error=kind,
            exc_info=error,
            note="a bug in probed: the test is discarded, not billed",
        )

    async def _store(
        self, state: CheckState, outcome: TestOutcome, transcript: Transcript, *, durable: bool
    ) -> None:
        check = state.check
        if outcome.result.ok:
            # the pass that ends a failure run is durable: after a crash the run must not
            # continue into the next failure (two runs would merge into one outage)
            await self.store.record_pass(
                state.check_id,
                outcome.started_at,
                interval=check.interval,
                test_timeout=check.timeout,
                durable=durable,
            )
            return
        tail = "\n".join(transcript.lines[-TRANSCRIPT_TAIL:])
        failed = FailedTest(
            check.name, outcome.started_at, outcome.duration, outcome.result.reason, tail
        )
        await self.store.record_failure(
            state.check_id, failed, interval=check.interval, test_timeout=check.timeout
        )

    async def _apply(
        self, service: str, state: CheckState, tracker: Tracker, change: OutageChange
    ) -> None:
        run = change.run
        if run.outage_id is None:  # opened now, or a restored run that crossed the threshold
            oid = await self.store.open_outage(state.check_id, run)
            tracker.bind_outage(oid)
            run = replace(run, outage_id=oid)
        if change.kind == "closed":
            await self.store.close_outage(run.outage_id or 0, run, change.at)
        elif change.kind == "extended":
            await self.store.update_outage(run.outage_id or 0, run)
            return  # an open outage's growth is picked up by the periodic refresh
        self.changed.set()
        if await self._shared(state.check):
            await self._located(service, state, change, run)
            return
        name = state.check.name
        event = Event(
            "outage_opened",
            service,
            change.at,
            check=name,
            severity=self._severity(service),
            outage_id=run.outage_id,
            start=run.first_at,
            end=run.last_at,
            failed_tests=run.count,
            reasons=run.reasons,
            summary=f"{service}/{name} is down: {run.reasons[-1] if run.reasons else 'failed'}",
        )
        if change.kind == "opened":
            log.warning(
                "outage.opened",
                service=service,
                check=name,
                start=run.first_at,
                reasons=list(run.reasons),
            )
            await self.emit(event)
            return
        downtime = run.last_at - run.first_at
        log.warning(
            "outage.closed",
            service=service,
            check=name,
            downtime_seconds=round(downtime, 3),
            failed_tests=run.count,
        )
        await self.emit(
            replace(
                event,
                kind="outage_closed",
                downtime_seconds=downtime,
                summary=f"{service}/{name} is up again after {downtime:.0f}s of downtime",
            )
        )

    async def _shared(self, check: CheckBase) -> bool:
        return self.quorum is not None and await self.quorum.shared(check)

    async def _located(
        self, service: str, state: CheckState, change: OutageChange, run: FailureRun
    ) -> None:
        """This location's own outage (P3), then the quorum's verdict, told once."""
        assert self.quorum is not None
        name, where = state.check.name, self.store.location
        closed = change.kind == "closed"
        downtime = run.last_at - run.first_at
        log.info(
            f"location_outage.{change.kind}",
            service=service,
            check=name,
            location=where,
            reasons=list(run.reasons),
        )
        await self.emit(
            Event(
                "location_outage_closed" if closed else "location_outage_opened",
                service,
                change.at,
                check=name,
                severity="P3",
                outage_id=run.outage_id,
                start=run.first_at,
                end=run.last_at,
                failed_tests=run.count,
                downtime_seconds=downtime if closed else None,
                reasons=run.reasons,
                summary=f"{service}/{name} is {'up again' if closed else 'down'} at {where}",
                extra={"location": where},
            )
        )
        await self.quorum.observe(service, state.check, change.at)

    def _severity(self, service: str) -> Severity:
        """P1 (global) when a majority of the service's checks are down, else P2 (isolated)."""
        down, size = self._down.get(service, 0), self._size.get(service, 0)
        return "P1" if size and down * 2 > size else "P2"

    async def _service_changed(self, service: str, up: bool, at: float) -> None:
        kind: EventKind = "service_up" if up else "service_down"
        log.warning(f"service.{'up' if up else 'down'}", service=service)
        await self.emit(
            Event(
                kind,
                service,
                at,
                severity=self._severity(service) if not up else "P2",
                summary=f"service {service} is {'up' if up else 'down'}",
            )
        )
