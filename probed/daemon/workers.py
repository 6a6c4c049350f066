"""``workers: N``: the tests run in N worker processes, everything else in this one.

Each worker (:mod:`probed.daemon.worker`, a fresh interpreter, never a fork
of this running loop) owns a stable shard of the checks: crc32 of
``service/check`` modulo N, so a reload moves no check to another worker. It
schedules and runs its checks' tests and streams the outcomes back
(:mod:`probed.daemon.wire`); this process records them as it records the
one-process :class:`~probed.daemon.scheduler.Scheduler`'s, in each check's
order, each test's time on this process' timeline (``clock``).
:class:`WorkerPool` has the scheduler's interface (``set_checks``, ``stop``,
``running``, ``jobs``) so the daemon drives either.

A worker that dies is a bug of probed, never downtime of a customer: its
tests in flight are simply not done, its checks' coverage ends at their last
test (``on_lost``: the time until the new worker tests them again is
unmonitored, as after a discarded test), the death is logged as
``worker.died`` and counted in ``probed_worker_restarts_total``, and the
worker is started again after a backoff (1 s, doubling up to 30 s; back to
1 s once one ran for a minute).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import zlib
from collections import ChainMap
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from probed.daemon.scheduler import CheckKey, DiscardHandler, OutcomeHandler
from probed.daemon.wire import Wire, decode, frame, read
from probed.logs import log, settings
from probes.base import CheckBase

RESTART_MIN = 1.0  # seconds before a dead worker is started again, doubling ...
RESTART_MAX = 30.0  # ... up to this
STABLE = 60.0  # a worker that ran this long restarts after RESTART_MIN again
HEARD = 10.0  # a worker not heard from for this long (a batch comes every second) is not
# running: the systemd watchdog is no longer fed
SILENT = 30.0  # seconds without a message: the worker is stuck, it is killed and started again
BYE_WAIT = 5.0  # seconds for this process' own stop after a worker stopped on a signal
EXIT_WAIT = 5.0  # seconds for a worker to exit once its stream ended
STOP_MARGIN = 2.0  # seconds past the stop grace before a worker is killed
BIG = 1000  # a message with more checks than this is pickled in a thread, off the loop


Entry = tuple[str, CheckBase]
# each worker's new checks, its checks to (re)start and those it drops; added, removed overall
_Plan = tuple[
    list[tuple[dict[CheckKey, CheckBase], list[Entry], list[CheckKey]]],
    list[CheckKey],
    list[CheckKey],
]


def shard(key: CheckKey, workers: int) -> int:
    """The worker that owns a check: the same for the same name, whatever else changes."""
    return zlib.crc32(f"{key[0]}/{key[1]}".encode()) % workers


@dataclass(slots=True)
class _Slot:
    index: int
    checks: dict[CheckKey, CheckBase] = field(default_factory=dict)  # its shard
    outbox: asyncio.Queue[tuple[Any, ...]] | None = None  # to the running worker
    ready: bool = False  # its checks are scheduled
    heard: float = 0.0  # monotonic time of its last message
    pid: int = 0
    bye: bool = False  # it said it stopped on a signal (systemd stops the whole group)


class WorkerPool:
    def __init__(
        self,
        size: int,
        handler: OutcomeHandler,
        *,
        clock: Callable[[float], float],
        concurrency: int,
        on_discard: DiscardHandler,
        on_lag: Callable[[float], None],
        on_beat: Callable[[float], None],
        on_restart: Callable[[], None],
        on_lost: Callable[[list[CheckKey]], Awaitable[None]],
    ) -> None:
        self.size = size
        self._handler, self._on_discard = handler, on_discard
        self._clock = clock  # a monotonic instant (shared by all processes) -> the test's time
        self._on_lag, self._on_beat, self._on_restart = on_lag, on_beat, on_restart
        self._on_lost = on_lost  # told a dead worker's checks: their coverage ends there
        self._concurrency = max(1, -(-concurrency // size))  # the cap, shared out
        self._slots = [_Slot(i) for i in range(size)]
        self._supervisors: list[asyncio.Task[None]] = []
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._grace = 0.0
        self._all_ready = asyncio.Event()
        self._planned = asyncio.Event()  # the shards are known: a started worker gets its own

    @property
    def jobs(self) -> Mapping[CheckKey, CheckBase]:
        """Every check, the workers' shards chained (no second dict of 100 000 entries)."""
        return ChainMap(*(s.checks for s in self._slots))

    @property
    def running(self) -> bool:
        """Every worker runs its checks and was heard from lately (the watchdog's condition)."""
        now = time.monotonic()
        return not self._stopping.is_set() and all(
            s.ready and now - s.heard < HEARD for s in self._slots
        )

    def pids(self) -> list[int]:
        """Each worker's process id (0 while it is not running)."""
        return [s.pid if s.ready else 0 for s in self._slots]

    def problems(self) -> list[str]:
        return [f"worker {s.index} is not running" for s in self._slots if not s.ready]

    async def set_checks(
        self, checks: Iterable[tuple[str, CheckBase]]
    ) -> tuple[list[CheckKey], list[CheckKey]]:
        """Give each worker its shard (only what changed); returns (added, removed) overall.

        The shards and their differences are worked out in a thread: comparing 100 000
        checks takes seconds of pure Python, and the loop keeps recording meanwhile."""
        plan = await asyncio.to_thread(self._plan, list(checks))
        return self._install(*plan)

    def _plan(self, checks: list[tuple[str, CheckBase]]) -> _Plan:
        shards: list[dict[CheckKey, CheckBase]] = [{} for _ in self._slots]
        added: list[CheckKey] = []
        for service, check in checks:
            key = (service, check.name)
            index = shard(key, self.size)
            shards[index][key] = check
            if key not in self._slots[index].checks:  # only the loop replaces it, after this
                added.append(key)
        changes = []
        removed: list[CheckKey] = []
        for slot, new in zip(self._slots, shards, strict=True):
            old = slot.checks
            changed = [(k[0], c) for k, c in new.items() if k not in old or old[k] != c]
            gone = [k for k in old if k not in new]
            changes.append((new, changed, gone))
            removed += gone
        return changes, added, removed

    def _install(
        self,
        changes: list[tuple[dict[CheckKey, CheckBase], list[Entry], list[CheckKey]]],
        added: list[CheckKey],
        removed: list[CheckKey],
    ) -> tuple[list[CheckKey], list[CheckKey]]:
        for slot, (new, changed, gone) in zip(self._slots, changes, strict=True):
            slot.checks = new
            if slot.outbox is not None and (changed or gone):
                slot.outbox.put_nowait(("checks", changed, gone, False))
        self._planned.set()
        self.start()
        return added, removed

    def start(self) -> None:
        """Start the worker processes (once): a fresh interpreter takes about a second to
        import probed, time the daemon spends meanwhile on its store and its checks' state.
        Each gets its shard as soon as :meth:`set_checks` has worked them out."""
        if not self._supervisors:
            self._supervisors = [
                asyncio.create_task(self._supervise(s), name=f"worker {s.index}")
                for s in self._slots
            ]

    async def ready(self) -> None:
        """Returns once every worker has scheduled its first shard."""
        await self._all_ready.wait()

    async def stop(self, grace: float) -> None:
        """Workers let their tests in flight end (within ``grace``) and send the last outcomes."""
        self._grace = grace
        self._stopping.set()
        for slot in self._slots:
            if slot.outbox is not None:
                slot.outbox.put_nowait(("stop", grace))
        if not self._supervisors:
            return
        _, late = await asyncio.wait(self._supervisors, timeout=grace + STOP_MARGIN)
        for index, process in self._processes.items():
            if process.returncode is None and late:
                log.error("worker.killed", worker=index, note="did not stop in time")
                process.kill()
        await asyncio.gather(*self._supervisors, return_exceptions=True)

    async def _supervise(self, slot: _Slot) -> None:
        backoff = RESTART_MIN
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                code = await self._run(slot)
            except Exception as exc:  # e.g. no file descriptor left to start it with
                log.error("worker.start_failed", worker=slot.index, error=repr(exc))
                code = None
            if slot.bye:  # the signal that stopped it stops this process too, in a moment
                try:
                    await asyncio.wait_for(self._stopping.wait(), BYE_WAIT)
                except TimeoutError:
                    pass
            if self._stopping.is_set():
                return
            self._on_restart()
            try:
                await self._on_lost(list(slot.checks))
            except Exception as exc:  # the store: the next pass starts a segment anyway
                log.error("worker.gap_not_recorded", worker=slot.index, error=repr(exc))
            log.error(
                "worker.died",
                worker=slot.index,
                returncode=code,
                restart_in=backoff,
                note="a bug in probed: its tests in flight are not done (unmonitored), not failed",
            )
            if time.monotonic() - began >= STABLE:
                backoff = RESTART_MIN
            try:
                await asyncio.wait_for(self._stopping.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, RESTART_MAX)

    async def _run(self, slot: _Slot) -> int | None:
        """One worker process, from start to exit; returns its exit status."""
        slot.bye = False
        ours, theirs = socket.socketpair()
        fmt, level = settings()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "probed.daemon.worker",
                str(theirs.fileno()),
                str(slot.index),
                fmt,
                level,
                str(self._concurrency),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._processes[slot.index] = process
        reader, writer = await asyncio.open_connection(sock=ours)
        outbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(outbox, writer))
        try:
            await self._first(slot, outbox)
            ended = await self._receive(slot, reader)
        finally:
            slot.outbox, slot.ready = None, False
            self._all_ready.clear()
            sender.cancel()
            writer.close()
        try:  # after its stream ended a worker exits at once
            return await asyncio.wait_for(process.wait(), EXIT_WAIT if ended else 0.0)
        except TimeoutError:
            process.kill()  # stuck: it is started again
            return await process.wait()

    async def _first(self, slot: _Slot, outbox: asyncio.Queue[tuple[Any, ...]]) -> None:
        """The worker's whole shard first, once it is known (or at once: ``stop``)."""
        planned = asyncio.ensure_future(self._planned.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((planned, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            planned.cancel()
            stopping.cancel()
        slot.outbox = outbox  # from now on set_checks sends it what changed
        outbox.put_nowait(("checks", [(k[0], c) for k, c in slot.checks.items()], [], True))
        if self._stopping.is_set():
            outbox.put_nowait(("stop", self._grace))

    @staticmethod
    async def _send(outbox: asyncio.Queue[tuple[Any, ...]], writer: asyncio.StreamWriter) -> None:
        while True:
            message = await outbox.get()
            if message[0] == "checks" and len(message[1]) > BIG:
                data = await asyncio.to_thread(frame, message)  # 100 000 checks: ~1 s
            else:
                data = frame(message)
            try:
                writer.write(data)
                await writer.drain()
            except ConnectionError:
                return  # it stopped or died: the receiving side sees its end

    async def _receive(self, slot: _Slot, reader: asyncio.StreamReader) -> bool:
        """The worker's messages until its stream ends (True: it stopped or died) or it is
        silent for too long (False: it is stuck)."""
        while True:
            try:
                message = await asyncio.wait_for(read(reader), SILENT)
            except TimeoutError:
                log.error("worker.unresponsive", worker=slot.index, silent_seconds=SILENT)
                return False
            if message is None:
                return True
            slot.heard = time.monotonic()
            if message[0] == "batch":
                await self._batch(slot, *message[1:])
            elif message[0] == "bye":
                slot.bye = True
            elif message[0] == "ready":
                slot.pid, slot.ready = int(message[1]), True
                log.info("worker.ready", worker=slot.index, pid=slot.pid, checks=len(slot.checks))
                if all(s.ready for s in self._slots):
                    self._all_ready.set()

    async def _batch(
        self, slot: _Slot, outcomes: list[Wire], lags: list[float], beats: list[float]
    ) -> None:
        for lag in lags:
            self._on_lag(lag)
        for late in beats:
            self._on_beat(late)
        for wire in outcomes:
            service, name = wire[0], wire[1]
            check = slot.checks.get((service, name))
            if check is None:
                continue  # removed by a reload while it was tested
            outcome, transcript, stalled = decode(wire, self._clock)
            try:
                if stalled > 0:
                    await self._on_discard(service, check, outcome, stalled)
                else:
                    await self._handler(service, check, outcome, transcript)
            except Exception as exc:  # e.g. the store is full: keep recording, say so loudly
                log.error(
                    "scheduler.outcome_failed", service=service, check=check.name, error=repr(exc)
                )
