"""The daemon: startup → main loop → shutdown with a deadline.

Signal handlers only set flags; the main loop acts on them. The pieces:
:class:`Monitor` turns each test's outcome into stored verdicts, outage state,
metrics and events; :class:`Accountant` keeps the in-memory snapshot that
``/metrics`` serves; :class:`probed.daemon.scheduler.Scheduler` runs the tests.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry

from probed import config as config_mod
from probed.config import Config
from probed.core import accounting
from probed.core.events import Event, EventKind, Severity
from probed.core.outages import FailureRun, OutageChange, Tracker
from probed.daemon.clock import SessionClock
from probed.daemon.downclock import DownClock
from probed.daemon.metrics import Metrics, ServiceSnapshot, Snapshot
from probed.daemon.runner import TestOutcome
from probed.daemon.scheduler import CheckKey, Scheduler
from probed.daemon.sdnotify import Notifier
from probed.hooks import BudgetWatch, Dispatcher
from probed.logs import log
from probed.reports.figures import previous_month, service_exclusions, service_month
from probed.store.sqlite import FailedTest, SqliteStore
from probes.base import CheckBase, Transcript

FLUSH_EVERY = 2.0  # seconds between batched writes of passing tests
REFRESH_EVERY = 10.0  # seconds between recomputations of the month's figures
TRANSCRIPT_TAIL = 20  # lines of a failed test's transcript kept as evidence
EXCLUSIONS_AHEAD = 3600.0  # seconds of exclusions kept in memory beyond each refresh
HOOKS_STOP_DEADLINE = 5.0  # seconds for hook deliveries in flight at shutdown


@dataclass(slots=True)
class _CheckState:
    check_id: int
    check: CheckBase
    tracker: Tracker


class Monitor:
    """Outcome handling: store first (durable), then metrics, then events."""

    def __init__(
        self,
        store: SqliteStore,
        metrics: Metrics,
        emit: Callable[[Event], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.down_clock = DownClock(monotonic)  # the burn-rate counter
        self.metrics = metrics
        self.emit = emit
        self.checks: dict[CheckKey, _CheckState] = {}
        self._down: dict[str, int] = {}  # checks in outage, per service: O(1) service state
        self._size: dict[str, int] = {}
        self.changed = asyncio.Event()  # an outage changed: figures are stale
        self._bugs_logged: set[tuple[str, str, str]] = set()  # (service, check, exception type)

    def configure(self, config: Config) -> None:
        """Adopt a (new) config: keep the failure runs of unchanged checks, restore new ones."""
        wanted: dict[CheckKey, CheckBase] = {(s.name, c.name): c for s, c in config.all_checks()}
        for key in [k for k in self.checks if k not in wanted]:
            old = self.checks.pop(key)
            self.metrics.remove_check(key[0], key[1], old.check.type)
        for key, check in wanted.items():
            state = self.checks.get(key)
            if state is None:
                cid = self.store.check_id(key[0], key[1], check.type)
                state = _CheckState(
                    cid, check, Tracker(check.failures_to_down, self.store.restore_run(cid))
                )
                self.checks[key] = state
                if state.tracker.run is not None:
                    log.info(
                        "outage.restored" if state.tracker.in_outage else "failure_run.restored",
                        service=key[0],
                        check=key[1],
                        failed_tests=state.tracker.run.count,
                    )
            state.check = check
            state.tracker.failures_to_down = check.failures_to_down
            self.metrics.init_check(key[0], key[1], check.type, up=not state.tracker.in_outage)
        self._down = {}
        self._size = {}  # checks per service, for the severity of an event
        for (service, _), state in self.checks.items():
            self._down[service] = self._down.get(service, 0) + state.tracker.in_outage
            self._size[service] = self._size.get(service, 0) + 1
        for service, down in self._down.items():
            self.down_clock.set_down(service, bool(down))

    def service_up(self) -> dict[str, bool]:
        up: dict[str, bool] = {}
        for (service, _), state in self.checks.items():
            up[service] = up.get(service, True) and not state.tracker.in_outage
        return up

    def open_outages(self, service: str) -> list[tuple[str, FailureRun]]:
        return [
            (key[1], s.tracker.run)
            for key, s in self.checks.items()
            if key[0] == service and s.tracker.in_outage and s.tracker.run is not None
        ]

    async def on_outcome(
        self, service: str, check: CheckBase, outcome: TestOutcome, transcript: Transcript
    ) -> None:
        if outcome.error is not None:
            self._probe_bug(service, check, outcome.error)
            return
        state = self.checks[(service, check.name)]
        result = outcome.result
        was_up = self._down.get(service, 0) == 0
        was_in_outage = state.tracker.in_outage
        change = state.tracker.observe(outcome.started_at, result.ok, result.reason)
        if state.tracker.in_outage != was_in_outage:
            self._down[service] = self._down.get(service, 0) + (
                1 if state.tracker.in_outage else -1
            )
        if result.ok:
            self.store.record_pass(state.check_id, outcome.started_at, check.interval)
        else:
            tail = "\n".join(transcript.lines[-TRANSCRIPT_TAIL:])
            self.store.record_failure(
                state.check_id,
                outcome.started_at,
                check.interval,
                FailedTest(check.name, outcome.started_at, outcome.duration, result.reason, tail),
            )
            log.info(
                "probe.failed",
                service=service,
                check=check.name,
                reason=result.reason,
                duration=round(outcome.duration, 3),
            )
        if change is not None:
            self._apply(service, state, change)
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
        if was_up != is_up:
            self.down_clock.set_down(service, not is_up)
            self._service_changed(service, is_up, outcome.started_at)

    def clock_stepped(self, seconds: float) -> None:
        """Move every open failure run with the timeline: its duration stays what elapsed."""
        for state in self.checks.values():
            run = state.tracker.run
            if run is None:
                continue
            state.tracker.run = run = run.shifted(seconds)
            if run.outage_id is not None:
                self.store.update_outage(run.outage_id, run)
        self.store.restart_segments()
        self.changed.set()

    def _probe_bug(self, service: str, check: CheckBase, error: Exception) -> None:
        """Not a verdict: nothing is stored (the time shows as unmonitored), the failure run
        neither grows nor ends, and the operator sees "probed is broken", once per type."""
        kind = type(error).__name__
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

    def _apply(self, service: str, state: _CheckState, change: OutageChange) -> None:
        run = change.run
        if run.outage_id is None:  # opened now, or a restored run that crossed the threshold
            oid = self.store.open_outage(state.check_id, run)
            state.tracker.bind_outage(oid)
            run = replace(run, outage_id=oid)
        if change.kind == "closed":
            self.store.close_outage(run.outage_id or 0, run, change.at)
            self.store.end_pass_run_now(state.check_id)
        elif change.kind == "extended":
            self.store.update_outage(run.outage_id or 0, run)
        if (
            change.kind != "extended"
        ):  # an open outage's growth is picked up by the periodic refresh
            self.changed.set()
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
            self.emit(event)
        elif change.kind == "closed":
            downtime = run.last_at - run.first_at
            log.warning(
                "outage.closed",
                service=service,
                check=name,
                downtime_seconds=round(downtime, 3),
                failed_tests=run.count,
            )
            self.emit(
                replace(
                    event,
                    kind="outage_closed",
                    downtime_seconds=downtime,
                    summary=f"{service}/{name} is up again after {downtime:.0f}s of downtime",
                )
            )

    def _severity(self, service: str) -> Severity:
        """P1 (global) when a majority of the service's checks are down, else P2 (isolated)."""
        down, size = self._down.get(service, 0), self._size.get(service, 0)
        return "P1" if size and down * 2 > size else "P2"

    def _service_changed(self, service: str, up: bool, at: float) -> None:
        kind: EventKind = "service_up" if up else "service_down"
        log.warning(f"service.{'up' if up else 'down'}", service=service)
        self.emit(
            Event(
                kind,
                service,
                at,
                severity=self._severity(service) if not up else "P2",
                summary=f"service {service} is {'up' if up else 'down'}",
            )
        )


class Accountant:
    """Recomputes month-to-date and previous-month figures into a snapshot."""

    def __init__(
        self, store: SqliteStore, monitor: Monitor, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.monitor = monitor
        self.clock = clock
        self._figures: dict[str, ServiceSnapshot] = {}
        self._excluding: dict[str, tuple[accounting.ExclusionSpan, ...]] = {}
        self.generation = -1
        self.refreshed_at = 0.0
        # hooks: told the month-to-date figures after each refresh (budget events)
        self.on_refresh: Callable[[list[accounting.ServiceFigures]], None] | None = None

    def refresh(self, config: Config) -> None:
        now = self.clock()
        month = accounting.month_of(now, config.timezone)
        prev = previous_month(month)
        figures: dict[str, ServiceSnapshot] = {}
        for service in config.services.values():
            figures[service.name] = ServiceSnapshot(
                objective=service.policy.objective,
                month_to_date=service_month(self.store, service, month, config.timezone, now),
                previous_month=service_month(self.store, service, prev, config.timezone, now),
            )
        self._figures = figures
        ahead = (now, now + EXCLUSIONS_AHEAD)
        self._excluding = {
            s.name: tuple(
                e for e in service_exclusions(self.store, s, config.timezone, ahead) if e.live
            )
            for s in config.services.values()
        }
        self.generation = self.store.generation()
        self.refreshed_at = now
        if self.on_refresh is not None:
            self.on_refresh([s.month_to_date for s in figures.values() if s.month_to_date])

    def stale(self) -> bool:
        """True when exclusions changed (e.g. by ``probed exclude`` from another process)."""
        return self.store.generation() != self.generation

    def active_kinds(self, service: str, at: float) -> frozenset[str]:
        """Kinds of the live exclusions and maintenance windows covering ``at``."""
        spans = self._excluding.get(service, ())
        return frozenset(e.kind for e in spans if e.start <= at < e.end)

    def snapshot(self) -> Snapshot:
        now = self.clock()
        active = {s: self.active_kinds(s, now) for s in self._excluding}
        clock = self.monitor.down_clock
        for service, kinds in active.items():
            clock.set_paused(service, "maintenance" in kinds)
        return Snapshot(
            services=self._figures,
            service_up=self.monitor.service_up(),
            down_seconds=clock.totals(active),
            exclusion_active=active,
        )


@dataclass(frozen=True, slots=True)
class ReloadState:
    """Reloads done since start; the last one's verdict and problems."""

    generation: int = 0
    successful: bool = True
    problems: tuple[str, ...] = ()


class Daemon:
    def __init__(self, config_path: str, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self.reloads = ReloadState()  # what GET /-/reload and `probed reload` see
        self.registry = CollectorRegistry()
        self.store = SqliteStore(config.storage_path)
        self.clock = SessionClock()  # tests' times: anchor + monotonic elapsed
        self.sinks: list[Callable[[Event], None]] = []
        self.metrics = Metrics(self.registry, lambda: self.accountant.snapshot())
        self.monitor = Monitor(self.store, self.metrics, self._emit)
        self.accountant = Accountant(self.store, self.monitor, clock=self.clock.now)
        # hooks: events go to a durable outbox in the store; delivery runs in run()
        self.dispatcher = Dispatcher(self.store, config.hooks, muted=self._muted)
        self.sinks.append(self.dispatcher.submit)
        self.accountant.on_refresh = BudgetWatch(self.dispatcher.outbox, self._emit).observe
        # called after the monitor handled a test, so outage state includes it (the demo's live view)
        self.observers: list[Callable[[str, CheckBase, TestOutcome], None]] = []
        self.scheduler = Scheduler(
            self._on_outcome,
            concurrency=config.concurrency,
            on_lag=self.metrics.schedule_lag.observe,
        )

    async def _on_outcome(
        self, service: str, check: CheckBase, outcome: TestOutcome, transcript: Transcript
    ) -> None:
        # on the session's timeline, even for a test that started before a clock step
        outcome = replace(outcome, started_at=self.clock.at(outcome.started_mono))
        await self.monitor.on_outcome(service, check, outcome, transcript)
        for observe in self.observers:
            observe(service, check, outcome)

    def _muted(self, event: Event) -> frozenset[str]:
        return self.accountant.active_kinds(event.service, event.at)

    def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        from probed.api import ApiServer  # local: the API imports the daemon's types

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        # acted on at once, not at the next tick: `probed reload` waits for the result
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.call_soon(self.reload))
        self.monitor.configure(self.config)
        self.accountant.refresh(self.config)
        api = ApiServer(self)
        await api.start(self.config.listen_host, self.config.listen_port)
        self.scheduler.set_checks((s.name, c) for s, c in self.config.all_checks())
        log.info(
            "daemon.started",
            checks=len(self.monitor.checks),
            listen=f"{self.config.listen_host}:{api.port}",
            storage=str(self.config.storage_path),
        )
        await self.dispatcher.start()  # hooks
        self.notifier.ready()
        try:
            await self._main_loop()
        finally:
            self.notifier.stopping()
            log.info("daemon.stopping")
            grace = max((c.timeout for _, c in self.config.all_checks()), default=1.0) + 1.0
            await self.scheduler.stop(grace)
            await api.stop()
            await self.dispatcher.stop(HOOKS_STOP_DEADLINE)  # hooks
            self.store.close()
            log.info("daemon.stopped")
        return 0

    async def _main_loop(self) -> None:
        last_flush = last_refresh = time.monotonic()
        watchdog = self.notifier.watchdog_interval()
        tick = min(1.0, watchdog) if watchdog else 1.0  # watchdog_interval() is already half
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=tick)
            except TimeoutError:
                pass
            step = self.clock.check()
            if step is not None:
                log.warning("clock.stepped", seconds=round(step, 3))
                self.monitor.clock_stepped(step)
            now = time.monotonic()
            if now - last_flush >= FLUSH_EVERY:
                self.store.flush()
                last_flush = now
            if (
                self.monitor.changed.is_set()
                or now - last_refresh >= REFRESH_EVERY
                or self.accountant.stale()
            ):
                self.monitor.changed.clear()
                self.accountant.refresh(self.config)
                last_refresh = now
            if self.scheduler.running or not self.scheduler.jobs:
                self.notifier.watchdog()  # only while tests really run: systemd restarts a stuck daemon
            self.notifier.status(self.status_line())

    def status_line(self) -> str:
        down = sum(s.tracker.in_outage for s in self.monitor.checks.values())
        return f"{len(self.monitor.checks)} checks, {down} in outage"

    def _reload_refused(self, problems: list[str]) -> tuple[str, ...]:
        log.error("config.reload_failed", problems=problems)
        self.metrics.reload_ok.set(0)
        return tuple(problems)

    def reload(self) -> bool:
        """SIGHUP or POST /-/reload: apply a new config, or keep the old one when it is bad."""
        self.notifier.reloading()
        try:
            problems = self._reload()
        finally:
            self.notifier.ready()
        self.reloads = ReloadState(self.reloads.generation + 1, not problems, problems)
        return not problems

    def _reload(self) -> tuple[str, ...]:
        """The problems that refused the new config; none when it was applied."""
        try:
            new = config_mod.load(self.config_path)
            if new.storage_path != self.config.storage_path or (
                new.listen_host,
                new.listen_port,
            ) != (self.config.listen_host, self.config.listen_port):
                raise config_mod.ConfigError(
                    ["storage and listen cannot change on reload; restart probed"]
                )
        except config_mod.ConfigError as exc:
            return self._reload_refused(exc.problems)
        except Exception as exc:  # a loader bug must not kill a daemon that is measuring
            log.exception("config.reload_crashed")
            return self._reload_refused([f"{self.config_path}: {type(exc).__name__}: {exc}"])
        self.config = new
        self.monitor.configure(new)
        self.dispatcher.configure(new.hooks)  # hooks
        added, removed = self.scheduler.set_checks((s.name, c) for s, c in new.all_checks())
        self.accountant.refresh(new)
        self.metrics.config_applied()
        log.info(
            "config.reloaded",
            added=[f"{s}/{c}" for s, c in added],
            removed=[f"{s}/{c}" for s, c in removed],
        )
        return ()
