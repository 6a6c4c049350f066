"""The daemon: startup → main loop → shutdown with a deadline.

Signal handlers only set flags; the main loop acts on them. The pieces:
:class:`~probed.daemon.recorder.Recorder` turns each test's outcome into
stored verdicts, outage state, metrics and events;
:class:`~probed.daemon.accountant.Accountant` keeps the in-memory snapshot that
``/metrics`` serves; :class:`~probed.daemon.scheduler.Scheduler` runs the tests;
the store (:func:`probed.store.base.open_store`) is the only I/O to the database.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace

from prometheus_client import CollectorRegistry

from probed import config as config_mod
from probed.api import ApiServer
from probed.config import Config
from probed.core import accounting
from probed.core.events import Event
from probed.daemon.accountant import Accountant
from probed.daemon.clock import SessionClock
from probed.daemon.metrics import Metrics, Snapshot, SpoolCollector
from probed.daemon.recorder import Recorder
from probed.daemon.reload import ReloadState
from probed.daemon.runner import TestOutcome
from probed.daemon.scheduler import CheckKey, Scheduler
from probed.daemon.sdnotify import Notifier
from probed.daemon.stalls import StallMeter
from probed.daemon.workers import WorkerPool
from probed.hooks import BudgetWatch, Dispatcher
from probed.hooks.quorum import QuorumWatch
from probed.logs import log
from probed.store.base import FLUSH_EVERY, StorageError, Store, open_store
from probed.store.spool import Spool
from probes.base import CheckBase, Transcript

REFRESH_EVERY = 10.0  # seconds between recomputations of the month's figures
HOOKS_STOP_DEADLINE = 5.0  # seconds for hook deliveries in flight at shutdown
STALL_LOGGED = 0.25  # seconds: a loop stall at least this long is logged


def _log_stall(seconds: float) -> None:
    if seconds >= STALL_LOGGED:
        log.warning("scheduler.loop_stalled", stalled_seconds=round(seconds, 3))


def _freeze_heap(*, collect: bool = True) -> None:
    """Move what startup (or a reload) built - the config, one task and tracker per
    check - out of the collector's reach: full collections then scan only what tests
    allocate, not 100 000 checks' worth of long-lived objects. A reload does not
    collect first (a full collection of 100 000 checks would stall the loop)."""
    if collect:
        gc.collect()
    gc.freeze()


def _install_test_stall(loop: asyncio.AbstractEventLoop) -> None:
    """Tests only: with PROBED_TEST_STALL_ON_SIGUSR2=SECONDS, SIGUSR2 blocks the loop that long."""
    seconds = os.environ.get("PROBED_TEST_STALL_ON_SIGUSR2")
    if seconds:
        loop.add_signal_handler(signal.SIGUSR2, time.sleep, float(seconds))


class Daemon:
    """Create it with :meth:`open` (it opens the store), then ``await run()``."""

    def __init__(
        self, config_path: str, config: Config, store: Store, *, location: str | None = None
    ) -> None:
        self.config_path = config_path
        self.location_override = location  # probed run --location: wins over the config
        self.config = config = self._located(config)
        self.notifier = Notifier()
        self._stop = asyncio.Event()
        self.reloads = ReloadState()  # what GET /-/reload and `probed reload` see
        self._reloading = asyncio.Lock()  # one reload at a time (SIGHUP and the API)
        self._tasks: set[asyncio.Task[bool]] = set()
        self.registry = CollectorRegistry()
        # writes that fail wait in the spool while probing goes on (docs/storage.md)
        self.spool = store if isinstance(store, Spool) else Spool(store)
        self.store: Store = self.spool
        self.storage_problem: str | None = None  # the last failed write, for /healthz
        self.clock = SessionClock()  # tests' times: the start's wall time + monotonic elapsed
        # the snapshot a scrape renders, taken on the loop (taking it updates daemon state)
        self._scraped = Snapshot()
        self.metrics = Metrics(
            self.registry,
            lambda: self._scraped,
            per_check_histograms=config.per_check_histograms,
            location=self.store.location,
        )
        self.registry.register(SpoolCollector(self.spool))
        self._rendering: asyncio.Future[bytes] | None = None
        self.recorder = Recorder(self.store, self._emit, self.metrics, resolve=self.spool.resolve)
        self.accountant = Accountant(
            self.store,
            self.recorder.service_up,
            self.recorder.down_clock,
            clock=self.clock.now,
            pending_writes=lambda: self.spool.records,
        )
        # hooks: events go to a durable outbox in the store; delivery runs in run()
        self.dispatcher = Dispatcher(
            self.store,
            config.hooks,
            muted=self._muted,
            on_dead_letter=lambda hook: self.metrics.dead_letters.labels(hook).inc(),
        )
        self.sinks = [self.dispatcher.submit]
        self.spool.on_written = lambda: self.dispatcher.wake(list(self.dispatcher.slots))
        budget = BudgetWatch(self.store, self.dispatcher)
        self.quorum = self.recorder.quorum = QuorumWatch(self.store, self.dispatcher)
        self.quorum.on_service = self.recorder.down_clock.set_down  # burn rate: the quorum's

        async def on_refresh(figures: list[accounting.ServiceFigures]) -> None:
            await budget.observe(figures)
            await self.quorum.refresh({s.name: s.checks for s in self.config.services.values()})

        self.accountant.on_refresh = on_refresh
        # called after the monitor handled a test, so outage state includes it (the demo's live view)
        self.observers: list[Callable[[str, CheckBase, TestOutcome], None]] = []
        self.stalls = StallMeter(on_beat=self.metrics.loop_lag.observe)
        self.scheduler: Scheduler | WorkerPool = self._probing(config)

    def _probing(self, config: Config) -> Scheduler | WorkerPool:
        """What runs the tests: this process' scheduler, or ``workers:`` processes."""
        if config.workers > 1:
            return WorkerPool(
                config.workers,
                self._record,
                clock=self.clock.at,
                concurrency=config.concurrency,
                on_discard=self.recorder.discard,
                on_lag=self.metrics.schedule_lag.observe,
                on_beat=self.metrics.loop_lag.observe,
                on_restart=self.metrics.worker_restarts.inc,
                on_lost=self.recorder.unmonitored,
            )
        return Scheduler(
            self._on_outcome,
            concurrency=config.concurrency,
            on_lag=self.metrics.schedule_lag.observe,
            stalls=self.stalls,
            on_discard=self.recorder.discard,
        )

    @classmethod
    async def open(cls, config_path: str, config: Config, *, location: str | None = None) -> Daemon:
        """Open the store the config names (raises StorageError) and build the daemon."""
        store = await open_store(config, location=location or config.location)
        return cls(config_path, config, store, location=location)

    async def _on_outcome(
        self, service: str, check: CheckBase, outcome: TestOutcome, transcript: Transcript
    ) -> None:
        # on the session's timeline, even for a test that started before a clock step
        outcome = replace(outcome, started_at=self.clock.at(outcome.started_mono))
        await self._record(service, check, outcome, transcript)

    async def _record(
        self, service: str, check: CheckBase, outcome: TestOutcome, transcript: Transcript
    ) -> None:
        """A test's outcome, its time already on the session's timeline."""
        if (service, check.name) not in self.recorder.checks:
            return  # workers: N: tested by a worker while a reload removed it
        try:
            await self.recorder.record(service, check, outcome, transcript)
        except StorageError as exc:
            self._storage_failed("store.write_failed", exc)
            raise
        for observe in self.observers:
            observe(service, check, outcome)

    async def metrics_body(self) -> bytes:
        """The /metrics body, rendered in a worker thread; concurrent scrapes share one render,
        and none keeps it after (100 000 checks' body is ~40 MB between two scrapes)."""
        if self._rendering is None or self._rendering.done():
            series = list(self.metrics.checks.values())  # the loop owns the dict
            self._scraped = self.accountant.snapshot()
            loop = asyncio.get_running_loop()
            self._rendering = loop.run_in_executor(None, self.metrics.render, series)
        rendering = self._rendering
        try:
            return await asyncio.shield(rendering)
        finally:
            if self._rendering is rendering and rendering.done():
                self._rendering = None  # the scrapes that shared it hold it until they send it

    def _muted(self, event: Event) -> frozenset[str]:
        return self.accountant.active_kinds(event.service, event.at)

    def _storage_failed(self, event: str, exc: StorageError) -> None:
        self.storage_problem = str(exc)
        log.error(event, reason=str(exc))

    async def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            await sink(event)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        # acted on at once, not at the next tick: `probed reload` waits for the result
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        _install_test_stall(loop)
        heartbeat = asyncio.create_task(self.stalls.run(_log_stall), name="heartbeat")
        if isinstance(self.scheduler, WorkerPool):
            self.scheduler.start()  # they import probed while the store learns the checks
        await self.recorder.start(self._checks(self.config))
        await self.accountant.refresh(self.config)
        api = ApiServer(self)
        await api.start(self.config.listen_host, self.config.listen_port)
        await self._set_checks(self.config)
        if isinstance(self.scheduler, WorkerPool):
            await self.scheduler.ready()  # READY=1 once every worker tests its checks
        _freeze_heap()
        log.info(
            "daemon.started",
            checks=len(self.recorder.checks),
            workers=self.config.workers,
            listen=f"{self.config.listen_host}:{api.port}",
            storage=self.store.describe,
            location=self.store.location,
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
            heartbeat.cancel()
            await api.stop()
            await self.dispatcher.stop(HOOKS_STOP_DEADLINE)  # hooks
            try:
                await self.store.close()
            except StorageError as exc:
                self._storage_failed("store.close_failed", exc)
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
            await self._check_clock()
            now = time.monotonic()
            if now - last_flush >= FLUSH_EVERY:
                await self._flush()
                last_flush = now
            try:
                if (
                    self.recorder.changed.is_set()
                    or now - last_refresh >= REFRESH_EVERY
                    or await self.accountant.stale()
                ):
                    self.recorder.changed.clear()
                    await self.accountant.refresh(self.config)
                    last_refresh = now
            except StorageError as exc:
                self._storage_failed("store.read_failed", exc)
            if self.scheduler.running or not self.scheduler.jobs:
                self.notifier.watchdog()  # only while tests really run: systemd restarts a stuck daemon
            self.notifier.status(self.status_line())

    async def _check_clock(self) -> None:
        step = self.clock.check()
        if step is None:
            return
        log.warning("clock.stepped", seconds=round(step, 3))
        try:
            await self.recorder.clock_stepped(step)
        except StorageError as exc:
            self._storage_failed("store.write_failed", exc)
        finally:
            self.accountant.invalidate()  # open outages moved with the timeline

    async def _set_checks(self, config: Config) -> tuple[list[CheckKey], list[CheckKey]]:
        """Start, change and stop tests; the (added, removed) checks."""
        checks = ((s.name, c) for s, c in config.all_checks())
        if isinstance(self.scheduler, WorkerPool):
            return await self.scheduler.set_checks(checks)
        return self.scheduler.set_checks(checks)

    def _located(self, config: Config) -> Config:
        if self.location_override is None:
            return config
        return replace(config, location=self.location_override)

    async def _flush(self) -> None:
        try:
            await self.store.flush()
        except StorageError as exc:
            self._storage_failed("store.flush_failed", exc)
        else:
            self.storage_problem = None

    def health_problems(self) -> list[str]:
        problems = []
        if isinstance(self.scheduler, WorkerPool):
            problems += self.scheduler.problems()
        elif not self.scheduler.running and self.scheduler.jobs:
            problems.append("scheduler is not running")
        if self.storage_problem:
            problems.append(self.storage_problem)
        return problems

    async def exclusions_changed(self) -> None:
        await self.accountant.refresh(self.config)

    @staticmethod
    def _checks(config: Config) -> list[tuple[str, CheckBase]]:
        return [(s.name, c) for s, c in config.all_checks()]

    def status_line(self) -> str:
        down = self.recorder.in_outage()
        return f"{len(self.recorder.checks)} checks, {down} in outage"

    def _reload_soon(self) -> None:
        task = asyncio.create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reload_refused(self, problems: list[str]) -> tuple[str, ...]:
        log.error("config.reload_failed", problems=problems)
        self.metrics.reload_ok.set(0)
        return tuple(problems)

    async def reload(self) -> bool:
        """SIGHUP or POST /-/reload: apply a new config, or keep the old one when it is bad."""
        async with self._reloading:
            self.notifier.reloading()
            try:
                problems = await self._reload()
            finally:
                self.notifier.ready()
            self.reloads = ReloadState(self.reloads.generation + 1, not problems, problems)
        return not problems

    async def _reload(self) -> tuple[str, ...]:
        """The problems that refused the new config; none when it was applied."""
        try:
            # parsed in a worker thread: 100 000 checks take seconds, the loop keeps probing
            new = self._located(await asyncio.to_thread(config_mod.load, self.config_path))
            if new.location != self.config.location:
                raise config_mod.ConfigError(["location cannot change on reload; restart probed"])
            if new.storage_url != self.config.storage_url or (
                new.listen_host,
                new.listen_port,
            ) != (self.config.listen_host, self.config.listen_port):
                raise config_mod.ConfigError(
                    ["storage and listen cannot change on reload; restart probed"]
                )
            if new.workers != self.config.workers:
                raise config_mod.ConfigError(["workers cannot change on reload; restart probed"])
        except config_mod.ConfigError as exc:
            return self._reload_refused(exc.problems)
        except Exception as exc:  # a loader bug must not kill a daemon that is measuring
            log.exception("config.reload_crashed")
            return self._reload_refused([f"{self.config_path}: {type(exc).__name__}: {exc}"])
        try:
            await self.recorder.configure(self._checks(new))
        except StorageError as exc:
            return self._reload_refused([str(exc)])
        new = config_mod.adopt_windows(self.config, new, time.time())
        self.config = new
        self.dispatcher.configure(new.hooks)  # hooks
        added, removed = await self._set_checks(new)
        _freeze_heap(collect=False)
        try:
            await self.accountant.refresh(new)
        except StorageError as exc:
            self._storage_failed("store.read_failed", exc)
        self.metrics.config_applied()
        log.info(
            "config.reloaded",
            added=[f"{s}/{c}" for s, c in added],
            removed=[f"{s}/{c}" for s, c in removed],
        )
        return ()
