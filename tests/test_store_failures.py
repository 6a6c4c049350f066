"""The compact failed-test encoding (probed/store/failures.py): what goes in comes out.

Pure round trips of the record encoding, the same through the product's Store
on both engines (hypothesis), and a version 4 store with rows migrating
forward on both engines.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probed.store import failures, migrations
from probed.store.base import FailedTest, Store, open_store
from probed.store.failures import Record
from tests.pgcluster import PgCluster
from tests.store_engines import Engine

EVER = (-math.inf, math.inf)
NOV = 1_793_491_200.0  # 2026-11-01T00:00:00Z

times = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
recent = st.floats(min_value=NOV - 3 * 86400, max_value=NOV + 3 * 86400)
durations = st.integers(0, 10**9).map(lambda us: us / 1_000_000)  # whole microseconds
# texts PostgreSQL can hold (no NUL), any other Unicode
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(times, durations, st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**32))
def test_a_record_comes_back_bit_for_bit(
    at: float, duration: float, reason: int, transcript: int, passes: int
) -> None:
    r = Record(at, duration, reason, transcript, passes)
    data = failures.encode(r)
    assert failures.decode(failures.week_of(at), data) == [r]
    assert math.copysign(1.0, failures.decode(failures.week_of(at), data)[0].at) == math.copysign(
        1.0, at
    )


@given(st.lists(st.tuples(recent, durations, st.integers(0, 300)), max_size=40))
def test_records_appended_to_a_week_come_back_in_order(
    tests: list[tuple[float, float, int]],
) -> None:
    week = failures.week_of(NOV)
    records = [Record(at, d, n, n, n) for at, d, n in tests]
    data = b"".join(failures.encode(r) for r in records if failures.week_of(r.at) == week)
    assert failures.decode(week, data) == [r for r in records if failures.week_of(r.at) == week]


def test_a_typical_failed_test_takes_about_twelve_bytes() -> None:
    size = len(failures.encode(Record(NOV + 3600.123456, 0.012, 3, 7, 59)))
    assert size <= 12


def test_a_truncated_row_is_an_error_not_a_shorter_history() -> None:
    data = failures.encode(Record(NOV, 0.5, 1, 0))
    with pytest.raises(ValueError, match="ends inside a record"):
        failures.decode(failures.week_of(NOV), data[:-2])


def test_the_texts_cache_starts_afresh_past_its_bound_between_operations() -> None:
    texts = failures.Texts()
    texts.MAX_CACHED = 3
    wanted = ["a", "b", "c", "d"]
    assert texts.missing(wanted) == wanted
    texts.learn(enumerate(wanted, 1))  # one operation may exceed it: nothing it needs is lost
    assert [texts.ids[t] for t in wanted] == [1, 2, 3, 4]
    assert texts.missing(["d"]) == ["d"]  # the next one starts afresh
    assert texts.ids == {"": 0} and texts.unknown([0]) == []


# ------------------------------------------------ through the product's Store


def run(engine: Engine, body: Callable[[Store], object]) -> None:
    async def main() -> None:
        store = await engine.open(engine.url(), location="fra1")
        try:
            await body(store)  # type: ignore[misc]
        finally:
            await store.close()

    asyncio.run(main())


failed_tests = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # check
        recent,
        durations,
        st.sampled_from(["refused", "HTTP 503", "timeout after 5.0s"]) | texts,
        st.just("") | texts,
        st.integers(0, 3),  # passes before it
    ),
    max_size=25,
    unique_by=lambda t: (t[0], t[1]),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(failed_tests, st.tuples(recent, recent).map(sorted))
def test_every_failed_test_comes_back_with_its_time_duration_reason_and_transcript(
    engine: Engine, tests: list[tuple[str, float, float, str, str, int]], window: list[float]
) -> None:
    async def body(store: Store) -> None:
        ids = {c: await store.check_id("web", c, "http") for c in ("a", "b")}
        for check, at, duration, reason, transcript, passes in tests:
            for i in range(passes):
                await store.record_pass(ids[check], at - 1 - i, interval=60.0)
            failed = FailedTest(check, at, duration, reason, transcript)
            await store.record_failure(ids[check], failed, interval=60.0)
        for check in ("a", "b"):
            want = sorted(
                (FailedTest(c, at, d, r, t, "fra1") for c, at, d, r, t, _ in tests if c == check),
                key=lambda t: t.at,
            )
            assert await store.failed_tests("web", check, EVER) == want
            lo, hi = window
            assert await store.failed_tests("web", check, (lo, hi)) == [
                t for t in want if lo <= t.at <= hi
            ]
            assert await store.failed_tests("web", check, EVER, location="other") == []

    run(engine, body)


async def test_a_retried_failure_is_stored_once_and_a_pass_run_it_ends_is_folded(
    engine: Engine,
) -> None:
    url = engine.url()
    store = await engine.open(url, location="fra1")
    cid = await store.check_id("web", "a", "http")
    for at in (NOV, NOV + 60):
        await store.record_pass(cid, at, interval=60.0)
    await store.flush()
    test = FailedTest("a", NOV + 120, 0.25, "refused", "S: nothing")
    await store.record_failure(cid, test, interval=60.0)
    await store.record_failure(cid, test, interval=60.0)  # the spool's retry of a lost answer
    await store.record_failure(cid, FailedTest("a", NOV + 180, 0.5, "refused"), interval=60.0)
    assert [t.at for t in await store.failed_tests("web", "a", EVER)] == [NOV + 120, NOV + 180]
    await engine.crash(store)
    again = await engine.open(url, location="fra1")
    try:  # the run is the two failed tests after the folded pass run
        run = await again.restore_run(cid)
        assert run is not None and (run.first_at, run.count) == (NOV + 120, 2)
    finally:
        await again.close()


async def test_a_long_outage_fills_one_small_row_after_another(engine: Engine) -> None:
    url = engine.url()
    store = await engine.open(url, location="fra1")
    try:
        cid = await store.check_id("web", "a", "http")
        ats = [NOV + 10 * i for i in range(2 * failures.PART_TESTS + 5)]
        for n, at in enumerate(ats, 1):
            test = FailedTest("a", at, 0.5, "timeout after 5.0s")
            await store.record_failure(cid, test, interval=10.0)
            if n % failures.PART_TESTS in (0, 1):  # retried at a row's end and start
                await store.record_failure(cid, test, interval=10.0)
        assert [t.at for t in await store.failed_tests("web", "a", EVER)] == ats
        run = await store.restore_run(cid)
        assert run is not None and (run.first_at, run.count) == (ats[0], len(ats))
    finally:
        await store.close()
    parts = raw(url, "SELECT part, count FROM failure_weeks ORDER BY part")
    assert parts == [(0, 128), (1, 128), (2, 5)]


def raw(url: str, sql: str) -> list[tuple[object, ...]]:
    """Rows of the store's database through a connection of its own."""
    if url.startswith("sqlite://"):
        with sqlite3.connect(url.removeprefix("sqlite://")) as db:
            return db.execute(sql).fetchall()
    import psycopg

    with psycopg.connect(url) as conn:  # the password through PGPASSFILE
        return conn.execute(sql.encode()).fetchall()


def test_packing_splits_a_busy_week_into_rows_of_at_most_part_tests() -> None:
    rows = [(1, "x", NOV + i, 0.1, "r", "") for i in range(300)]
    blocks = list(failures.pack(rows, {"r": 1, "": 0}))
    assert [(b.part, b.count) for b in blocks] == [(0, 128), (1, 128), (2, 44)]
    decoded = [r.at for b in blocks for r in failures.decode(b.week, b.data)]
    assert decoded == [NOV + i for i in range(300)]
    assert blocks[-1].last_at == NOV + 299


# ---------------------------------------------- a version 4 store migrates


V4_TESTS = [  # check, location, at, duration, reason, transcript
    (1, "fra1", NOV + 10.5, 0.012, "refused", "S: -ERR"),
    (1, "fra1", NOV + 70.25, 5.0, "timeout after 5.0s", ""),
    (1, "fra1", NOV + 86400 + 1, 0.1, "refused", "S: -ERR"),
    (1, "ams1", NOV + 11.0, 0.2, "refused", "S: -ERR\nS: bye"),
    (2, "fra1", NOV - 1.0, 1.5, "HTTP 503", "< HTTP/1.1 503"),
    # imap down for long at 10 s: more failed tests in its week than one row holds
    *((2, "fra1", NOV + 3600 + 10 * i, 0.001, "HTTP 503", "") for i in range(300)),
]


def _v4_statements(engine: str) -> list[str]:
    steps = migrations.pending(engine, 0, "fra1")[:4]  # type: ignore[arg-type]
    assert [s.version for s in steps] == [1, 2, 3, 4]
    return [s for step in steps for s in [*step.statements, *step.then]]


def _v4_rows(p: str) -> list[tuple[str, list[tuple[object, ...]]]]:
    return [
        (
            f"INSERT INTO checks (id, service, name, type) VALUES ({p}, {p}, {p}, 'pop3')",
            [(1, "mail", "pop3"), (2, "mail", "imap")],
        ),
        (
            "INSERT INTO failed_tests (check_id, location, at, duration, reason, transcript)"
            f" VALUES ({p}, {p}, {p}, {p}, {p}, {p})",
            list(V4_TESTS),
        ),
        (
            "INSERT INTO pass_runs (check_id, location, first_at, last_at, count)"
            f" VALUES ({p}, {p}, {p}, {p}, {p})",
            [(1, "fra1", NOV + 80, NOV + 200, 3)],
        ),
    ]


def v4_sqlite(path: Path) -> str:
    db = sqlite3.connect(path, isolation_level=None)
    for statement in _v4_statements("sqlite"):
        db.execute(statement)
    db.execute("PRAGMA user_version = 4")
    for sql, rows in _v4_rows("?"):
        db.executemany(sql, rows)
    db.close()
    return f"sqlite://{path}"


def v4_postgresql(cluster: PgCluster) -> str:
    import psycopg

    database = cluster.create_database(migrated=False)
    with psycopg.connect(cluster.conninfo(database)) as conn:
        for statement in _v4_statements("postgresql"):
            conn.execute(statement.encode())
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '4')")
        for sql, rows in _v4_rows("%s"):
            conn.cursor().executemany(sql, rows)
    return cluster.dsn(database)


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
async def test_a_version_4_store_migrates_its_failed_tests_forward(
    engine_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if engine_name == "sqlite":
        url = v4_sqlite(tmp_path / "v4.db")
    else:
        url = v4_postgresql(request.getfixturevalue("pg_cluster"))
    store = await open_store(url, location="fra1")
    try:
        for cid, name in ((1, "pop3"), (2, "imap")):
            want = sorted(
                (
                    FailedTest(name, at, d, r, t, loc)
                    for c, loc, at, d, r, t in V4_TESTS
                    if c == cid
                ),
                key=lambda t: (t.at, t.location),
            )
            assert await store.failed_tests("mail", name, EVER) == want
        assert await store.locations() == ["ams1", "fra1"]
        # fra1's pop3 passed after its failures of the first day: only the later one is open
        run = await store.restore_run(1)
        assert run is not None and (run.first_at, run.count) == (NOV + 86400 + 1, 1)
        # new failed tests go on after the converted ones, texts shared
        await store.record_failure(1, FailedTest("pop3", NOV + 86460, 0.3, "refused"), interval=60)
        assert [
            t.at for t in await store.failed_tests("mail", "pop3", (NOV + 86400, NOV + 9e4))
        ] == [
            NOV + 86400 + 1,
            NOV + 86460,
        ]
    finally:
        await store.close()
