"""Coverage is merged by the database: the same intervals as the rule in Python.

``Store.coverage`` returns the union of the service's segments, worked out in
SQL (``probed.store.buffered.COVERAGE_SQL``) so that 100 000 checks' segments
never reach Python as 100 000 rows. These tests write arbitrary segment rows
(overlapping, touching, duplicated, live or not, other services and
locations) and compare each engine's answer with the rule written plainly:
a segment covers ``[first_at, last_at + interval + timeout)``, up to ``now``
while a live daemon vouches for it, never past ``now``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from probed.core.accounting import Interval, union
from probed.store.base import LIVE_AFTER_FLUSH, Store
from probed.store.buffered import UNION_PART, union_in_parts
from tests.store_engines import Engine

SERVICES = ("web", "mail")
LOCATIONS = ("here", "there")


@dataclass(frozen=True)
class Row:
    service: str
    location: str
    first: float
    last: float
    interval: float
    timeout: float
    seen: float | None


def expected(
    rows: list[Row], service: str, window: Interval, now: float, location: str | None
) -> list[Interval]:
    """The rule, one segment at a time, then accounting's union."""
    spans = []
    for r in rows:
        end = r.last + r.interval + r.timeout
        if r.service != service or location not in (None, r.location):
            continue
        recent = r.seen is not None and r.seen >= now - LIVE_AFTER_FLUSH
        if not (r.first < window[1] and (end > window[0] or recent)):
            continue
        live = r.seen is not None and r.seen <= end and 0.0 <= now - r.seen <= LIVE_AFTER_FLUSH
        spans.append((r.first, now if live else min(end, now)))
    return union(spans)


async def insert(store: Store, rows: list[Row]) -> None:
    """Segment rows as any daemon could have left them (written here directly)."""
    ids = await store.check_ids([(r.service, f"c{i}", "http") for i, r in enumerate(rows)])
    values = [
        (cid, r.location, r.first, r.last, r.interval, r.timeout, r.seen)
        for cid, r in zip(ids, rows, strict=True)
    ]
    sql = (
        "INSERT INTO segments (check_id, location, first_at, last_at, interval, timeout,"
        " tests, seen_at) VALUES ({0}, {0}, {0}, {0}, {0}, {0}, 1, {0})"
    )
    from probed.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        await store._call(store._db.db.executemany, sql.format("?"), values)
        return
    from probed.store.postgresql import PostgresStore

    assert isinstance(store, PostgresStore)
    async with store._cursor() as cur:
        await cur.executemany(sql.format("%s"), values)


# a few instants, so that segments share, touch and nest their ends often
instants = st.sampled_from([0.0, 0.5, 1.0, 2.5, 3.0, 4.0, 7.5, 10.0, 12.25, 20.0])
times = st.one_of(instants, st.floats(0.0, 25.0, allow_nan=False))
row = st.builds(
    lambda service, location, first, length, interval, timeout, seen: Row(
        service, location, first, first + length, interval, timeout, seen
    ),
    st.sampled_from(SERVICES[:1] * 3 + SERVICES[1:]),
    st.sampled_from(LOCATIONS),
    times,
    st.one_of(st.just(0.0), times),
    st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    st.sampled_from([0.0, 0.25, 1.0]),
    st.one_of(st.none(), times),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(row, max_size=25),
    window=st.one_of(st.just((0.0, 30.0)), st.tuples(times, times).map(sorted).map(tuple)),
    now=st.one_of(st.just(30.0), times),
    location=st.sampled_from([None, *LOCATIONS]),
)
@example(  # touching segments make one interval
    rows=[
        Row("web", "here", 0.0, 0.5, 1.0, 0.0, None),
        Row("web", "here", 1.5, 2.0, 1.0, 0.0, None),
    ],
    window=(0.0, 30.0),
    now=30.0,
    location=None,
)
def test_the_merged_coverage_is_the_union_of_each_segments_coverage(
    engine: Engine, rows: list[Row], window: Interval, now: float, location: str | None
) -> None:
    async def read() -> list[Interval]:
        store = await engine.open(engine.url(), location="reader")
        try:
            await insert(store, rows)
            return await store.coverage("web", window, now, location=location)
        finally:
            await store.close()

    assert asyncio.run(read()) == expected(rows, "web", window, now, location)


@given(st.lists(st.tuples(times, times), max_size=3 * UNION_PART // 100))
def test_a_union_merged_in_parts_is_the_union(spans: list[Interval]) -> None:
    spans = spans * 100  # more than one part, duplicates across parts
    assert union_in_parts(spans) == union(spans)
