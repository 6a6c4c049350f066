"""A probing worker (``workers: N``): runs the tests of its shard of the checks.

Started by :class:`probed.daemon.workers.WorkerPool` as
``python -m probed.daemon.worker FD INDEX LOG_FORMAT LOG_LEVEL`` with one end
of a stream socket as FD. It has no store: it runs the
:class:`~probed.daemon.scheduler.Scheduler` with its own loop-stall detector
(a failed test that overlapped a stall is discarded here, by the same rule
as in one process) and streams every outcome to the main process, which
records it (:mod:`probed.daemon.wire`). It stops on ``("stop", grace)``, on
SIGTERM or SIGINT (systemd signals the whole control group), and at once
when the main process is gone (end of the stream).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
from typing import cast

import structlog

from probed import eventloop
from probed.daemon import heap
from probed.daemon.runner import TestOutcome
from probed.daemon.scheduler import CheckKey, Scheduler
from probed.daemon.stalls import StallMeter
from probed.daemon.wire import ALIVE_EVERY, BATCH_EVERY, Wire, encode, frame, read
from probed.logs import LogFormat, log
from probed.logs import configure as configure_logs
from probes.base import CheckBase, Transcript

APPLY_SLICE = 1000  # checks (re)started between two turns of the loop
STALL_LOGGED = 0.25  # seconds: a loop stall at least this long is logged (as in the main process)


class Worker:
    def __init__(self, writer: asyncio.StreamWriter, concurrency: int) -> None:
        self._writer = writer
        self._outcomes: list[Wire] = []
        self._lags: list[float] = []
        self._beats: list[float] = []
        self.stalls = StallMeter(on_beat=lambda late: self._beats.append(late))
        self.scheduler = Scheduler(
            self._on_outcome,
            concurrency=concurrency,
            on_lag=lambda lag: self._lags.append(lag),
            stalls=self.stalls,
            on_discard=self._on_discard,
        )
        self.stop = asyncio.Event()
        self.grace = 1.0
        self.by_signal = False  # stopped by SIGTERM/SIGINT (systemd stops the whole group)

    def signalled(self) -> None:
        self.by_signal = True
        self.stop.set()

    async def _on_outcome(
        self, service: str, check: CheckBase, outcome: TestOutcome, transcript: Transcript
    ) -> None:
        self._outcomes.append(encode(service, check.name, outcome, transcript))

    async def _on_discard(
        self, service: str, check: CheckBase, outcome: TestOutcome, stalled: float
    ) -> None:
        self._outcomes.append(encode(service, check.name, outcome, None, stalled))

    async def apply(self, changed: list[tuple[str, CheckBase]], removed: list[CheckKey]) -> None:
        """Only what changed, a slice at a time: the tests in flight keep running."""
        self.scheduler.update((), removed)
        for start in range(0, len(changed), APPLY_SLICE):
            self.scheduler.update(changed[start : start + APPLY_SLICE], ())
            await asyncio.sleep(0)
        jobs = self.scheduler.jobs.values()
        self.grace = max((job.check.timeout for job in jobs), default=0.0) + 1.0

    async def send(self) -> None:
        """Batches to the main process until stopped; the last one after the scheduler stopped."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(BATCH_EVERY)
            if self._outcomes or time.monotonic() - last >= ALIVE_EVERY:
                self.flush()
                last = time.monotonic()
                await self._writer.drain()

    def flush(self) -> None:
        batch = ("batch", self._outcomes, self._lags, self._beats)
        self._outcomes, self._lags, self._beats = [], [], []
        self._writer.write(frame(batch))

    async def listen(self, reader: asyncio.StreamReader) -> None:
        """Messages from the main process; its end of the stream stops the worker at once."""
        while (message := await read(reader)) is not None:
            if message[0] == "checks":
                await self.apply(message[1], message[2])
                # as the main process does: full collections skip the checks' long-lived objects
                if message[3]:  # the first shard: collect once, then say it is scheduled
                    gc.collect()
                    gc.freeze()
                    self._writer.write(frame(("ready", os.getpid())))
                else:
                    gc.freeze()
            elif message[0] == "stop":
                self.grace = float(message[1])
                self.stop.set()
        self.grace = 0.0
        self.stop.set()


def _log_stall(seconds: float) -> None:
    if seconds >= STALL_LOGGED:
        log.warning("scheduler.loop_stalled", stalled_seconds=round(seconds, 3))


async def serve(fd: int, concurrency: int) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    worker = Worker(writer, concurrency)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.signalled)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # reloads go through the main process
    seconds = os.environ.get("PROBED_TEST_STALL_ON_SIGUSR2")
    if seconds:  # tests only, as in the main process
        loop.add_signal_handler(signal.SIGUSR2, time.sleep, float(seconds))
    heartbeat = asyncio.create_task(worker.stalls.run(_log_stall))
    listener = asyncio.create_task(worker.listen(reader))
    sender = asyncio.create_task(worker.send())
    for task in (heartbeat, listener, sender):  # one ending (a bug, a lost main) stops it all
        task.add_done_callback(lambda _: worker.stop.set())
    await worker.stop.wait()
    await worker.scheduler.stop(worker.grace)  # tests in flight end at their timeout
    for task in (heartbeat, listener, sender):
        task.cancel()
    for result in await asyncio.gather(heartbeat, listener, sender, return_exceptions=True):
        if isinstance(result, Exception):  # a bug in the worker: it exits, and is started again
            log.error("worker.crashed", exc_info=result)
    try:
        worker.flush()
        if worker.by_signal:  # not a crash: the main process is being stopped too
            writer.write(frame(("bye",)))
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    except ConnectionError:
        pass  # the main process is gone: nobody to tell


def main(argv: list[str]) -> int:
    fd, index, log_format, log_level, concurrency = argv
    heap.pin_mmap_threshold()  # before its shard of checks arrives (docs/scale.md)
    configure_logs(cast(LogFormat, log_format), log_level)
    structlog.contextvars.bind_contextvars(worker=int(index))
    eventloop.install()  # as in the main process
    log.info("worker.started", pid=os.getpid())
    asyncio.run(serve(int(fd), int(concurrency)))
    log.info("worker.stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
