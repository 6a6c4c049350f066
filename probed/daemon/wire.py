"""What the main process and its probing workers say to each other (``workers: N``).

One stream socket per worker carries length-prefixed pickled messages, each a
tuple whose first item names it. Both ends are probed itself (the worker is
a child the main process started), so pickle is a private encoding here,
never read from anywhere else.

main → worker: ``("checks", [(service, check), ...], removed_keys, first)``
(the checks to add or change and the keys to drop; the ``first`` message of a
worker is its whole shard, answered by ``ready``), ``("stop", until)``: its
tests in flight end by ``until``, a ``time.monotonic()`` instant (the same clock
in every process of the machine).

worker → main: ``("ready", pid)`` once its checks are scheduled, then
``("batch", outcomes, lags, beats)`` every :data:`BATCH_EVERY` seconds (and at
least every :data:`ALIVE_EVERY` seconds, empty, as a sign of life):
``outcomes`` are :data:`Wire` tuples of plain values, ``lags`` the tests'
schedule lags and ``beats`` the worker loop's heartbeat lateness, both for
the main process' histograms; ``("bye",)`` last when a signal stopped it.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
import traceback
from collections.abc import Callable
from typing import Any

from probed.daemon.runner import TestOutcome
from probes.base import DetailValue, ProbeResult, Transcript

BATCH_EVERY = 0.05  # seconds between a worker's batches of outcomes
ALIVE_EVERY = 1.0  # a worker sends at least this often, an empty batch when idle
BUG_TEXT = 8000  # characters of a probe bug's traceback sent
BIG = 1 << 20  # bytes: a longer message is unpickled in a thread
TAIL = 20  # lines of a failed test's transcript sent (the recorder keeps as many)
_HEADER = struct.Struct("!I")

# (service, check, started_mono, duration, ok, reason, transcript tail, delivery_seconds,
#  cert_not_after, probe-bug type or "", stalled seconds: > 0 when discarded for a loop stall)
Wire = tuple[
    str, str, float, float, bool, str, tuple[str, ...], float | None, float | None, str, float
]


class RemoteProbeBug(Exception):
    """A probe crashed in a worker: its exception type and traceback, as text."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


def frame(message: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None at the end of the stream (the other side is gone)."""
    try:
        size = _HEADER.unpack(await reader.readexactly(_HEADER.size))[0]
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    if size > BIG:  # a shard of 50 000 checks: ~1 s of unpickling, off the loop
        return await asyncio.to_thread(_loads, body)
    return _loads(body)


def _loads(body: bytes) -> tuple[Any, ...]:
    message: tuple[Any, ...] = pickle.loads(body)
    return message


def _traceback(error: Exception) -> str:
    """A probe bug's traceback for the main process' log (the worker has no store)."""
    return "".join(traceback.format_exception(error))[-BUG_TEXT:]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def encode(
    service: str,
    check: str,
    outcome: TestOutcome,
    transcript: Transcript | None,
    stalled: float = 0.0,
) -> Wire:
    result = outcome.result
    details = result.details
    tail = tuple(transcript.lines[-TAIL:]) if transcript is not None and not result.ok else ()
    bug = "" if outcome.error is None else type(outcome.error).__name__
    reason = result.reason if outcome.error is None else _traceback(outcome.error)
    return (
        service,
        check,
        outcome.started_mono,
        outcome.duration,
        result.ok,
        reason,
        tail,
        _number(details.get("delivery_seconds")),
        _number(details.get("cert_not_after")),
        bug,
        stalled,
    )


def decode(wire: Wire, clock: Callable[[float], float]) -> tuple[TestOutcome, Transcript, float]:
    """The outcome, its time from the main process' ``clock`` (monotonic time is the same
    in every process), its transcript's tail and the stall that discarded it (0 when it is
    a verdict)."""
    _, _, mono, duration, ok, reason, tail, delivery, expiry, bug, stalled = wire
    details: dict[str, DetailValue] = {}
    if delivery is not None:
        details["delivery_seconds"] = delivery
    if expiry is not None:
        details["cert_not_after"] = expiry
    transcript = Transcript()
    if tail:
        transcript.lines.extend(tail)
    error = RemoteProbeBug(bug, reason) if bug else None  # reason: the traceback
    outcome = TestOutcome(
        started_at=clock(mono),
        duration=duration,
        result=ProbeResult(ok, reason, details),
        error=error,
        started_mono=mono,
    )
    return outcome, transcript, stalled
