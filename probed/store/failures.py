"""The compact encoding of failed tests, the same on both engines (pure, no I/O).

A month of 10 000 checks with 1 % failing tests is 4.3 million failed tests;
one row each cost ~274 bytes. Here the failed tests of one check and
location in one week (7 days of UTC epoch time) are a ``failure_weeks`` row
whose ``data`` is the concatenation of their records, appended
(``data || record``) in the same transaction as before, so a failed test is
durable before its check's next test. A row holds at most ``PART_TESTS``
records (about 1.5 KB): a check that fails for a long time at a short
interval fills parts 0, 1, 2, ... of its week, so an append never rewrites
more than one small row.

One record, five unsigned LEB128 varints (~12 bytes for a typical test):

1. ``at``: the IEEE-754 bits of ``at`` minus those of the week's start
   (modulo 2**64). Exact: ``at`` comes back bit for bit.
2. ``duration`` in microseconds, zigzag-encoded (1 µs resolution; a
   duration given in whole microseconds comes back equal).
3. the reason: an id into ``texts`` (a dictionary of reasons and
   transcripts, each text stored once; 0 is the empty text);
4. the transcript: an id into ``texts`` likewise;
5. the passing tests of the pass run this failed test ended (0 when none
   was pending in this daemon session): the run is kept as this count instead
   of a ``pass_runs`` row; its tests' times are in the coverage segments.

``failure_weeks.last_at`` is the ``at`` of the last record appended to a row:
a write retried after a lost answer (the spool, a PostgreSQL restart)
carries the same ``at`` and is not appended twice.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from probed.store.base import FailedTest

WEEK = 7 * 86400
PART_TESTS = 128  # records per row at most
_MASK = 2**64 - 1
_DOUBLE = struct.Struct("<d")
_LONG = struct.Struct("<q")


@dataclass(frozen=True, slots=True)
class Record:
    """One failed test as stored: texts by id."""

    at: float
    duration: float
    reason: int
    transcript: int
    passes: int = 0  # the pass run this test ended, folded in


def week_of(at: float) -> int:
    return math.floor(at / WEEK)


def digest(text: str) -> bytes:
    """The dictionary key of a text (``texts.digest``)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _bits(x: float) -> int:
    return int(_LONG.unpack(_DOUBLE.pack(x))[0])


def _float(bits: int) -> float:
    return float(_DOUBLE.unpack(_LONG.pack(bits))[0])


def _varint(n: int, out: bytearray) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _signed(n: int) -> int:
    n &= _MASK
    return n - 2**64 if n >= 2**63 else n


def _unzigzag(n: int) -> int:
    return n >> 1 if not n & 1 else -((n + 1) >> 1)


def encode(r: Record) -> bytes:
    """The bytes of one record in a row of ``week_of(r.at)``."""
    out = bytearray()
    _varint((_bits(r.at) - _bits(float(week_of(r.at) * WEEK))) & _MASK, out)
    _varint(_zigzag(round(r.duration * 1_000_000)), out)
    for n in (r.reason, r.transcript, r.passes):
        if n < 0:
            raise ValueError(f"a record field cannot be negative: {n}")
        _varint(n, out)
    return bytes(out)


def decode(week: int, data: bytes) -> list[Record]:
    """Every record of one ``failure_weeks`` row, in the order appended."""
    base = _bits(float(week * WEEK))
    fields: list[int] = []
    records: list[Record] = []
    n = shift = 0
    for byte in data:
        n |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
            continue
        fields.append(n)
        n = shift = 0
        if len(fields) == 5:
            at, us, reason, transcript, passes = fields
            records.append(
                Record(
                    _float(_signed(base + at)),
                    _unzigzag(us) / 1_000_000,
                    reason,
                    transcript,
                    passes,
                )
            )
            fields = []
    if fields or shift:
        raise ValueError(f"a failure_weeks row of week {week} ends inside a record")
    return records


def decode_rows(rows: Iterable[tuple[str, int, bytes]]) -> Iterator[tuple[str, Record]]:
    """(location, record) of rows of ``location, week, data``."""
    for location, week, data in rows:
        for r in decode(int(week), bytes(data)):
            yield str(location), r


def text_ids(records: Iterable[Record]) -> set[int]:
    return {i for r in records for i in (r.reason, r.transcript) if i}


def trailing(records: Iterable[Record], last_pass: float) -> list[Record]:
    """The failed tests no pass has ended yet, oldest first: those after ``last_pass``
    (the last stored pass run), from the last one that ended a folded pass run."""
    after = sorted((r for r in records if r.at > last_pass), key=lambda r: r.at)
    starts = [i for i, r in enumerate(after) if r.passes]
    return after[starts[-1] :] if starts else after


@dataclass(frozen=True, slots=True)
class Block:
    """One ``failure_weeks`` row to insert (the v5 migration)."""

    check_id: int
    location: str
    week: int
    part: int
    last_at: float
    count: int
    data: bytes


def blocks(check_id: int, location: str, records: Iterable[Record]) -> Iterator[Block]:
    """One check's and location's records, in time order, as ``failure_weeks`` rows."""
    week: int | None = None
    data = bytearray()
    part, count, last = 0, 0, 0.0
    for r in records:
        if week_of(r.at) != week or count == PART_TESTS:
            if week is not None:
                yield Block(check_id, location, week, part, last, count, bytes(data))
            part = part + 1 if week_of(r.at) == week else 0
            week, data, count = week_of(r.at), bytearray(), 0
        data += encode(r)
        count, last = count + 1, r.at
    if week is not None:
        yield Block(check_id, location, week, part, last, count, bytes(data))


def pack(
    rows: Iterable[tuple[int, str, float, float, str, str]], ids: Mapping[str, int]
) -> Iterator[Block]:
    """Rows of ``check_id, location, at, duration, reason, transcript`` ordered by check,
    location and time (the ``failed_tests`` table) as ``failure_weeks`` rows."""
    for (check_id, location), group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        records = (Record(float(at), float(d), ids[r], ids[t]) for _, _, at, d, r, t in group)
        yield from blocks(int(check_id), str(location), records)


class Texts:
    """The in-process half of the ``texts`` dictionary: ids both ways, filled on use.

    An id is cached only once its row is committed (it never changes after). The
    cache is bounded: transcripts that differ test after test (a date in a
    header) would otherwise grow it for as long as the daemon runs; past
    ``MAX_CACHED`` texts it starts afresh, before an operation asks what it lacks."""

    MAX_CACHED = 20_000

    def __init__(self) -> None:
        self.ids: dict[str, int] = {"": 0}
        self.texts: dict[int, str] = {0: ""}

    def missing(self, texts: Iterable[str]) -> list[str]:
        self._bound()
        return sorted({t for t in texts if t not in self.ids})

    def unknown(self, ids: Iterable[int]) -> list[int]:
        self._bound()
        return sorted({i for i in ids if i not in self.texts})

    def _bound(self) -> None:
        if len(self.ids) > self.MAX_CACHED or len(self.texts) > self.MAX_CACHED:
            self.ids, self.texts = {"": 0}, {0: ""}

    def learn(self, pairs: Iterable[tuple[object, object]]) -> None:
        for i, text in pairs:
            self.ids[str(text)] = int(str(i))
            self.texts[int(str(i))] = str(text)

    def failed_test(self, check: str, location: str, r: Record) -> FailedTest:
        return FailedTest(
            check, r.at, r.duration, self.texts[r.reason], self.texts[r.transcript], location
        )
