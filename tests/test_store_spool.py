"""The write spool: while the store cannot be written nothing recorded is lost, and order holds.

Faults are injected at the store boundary (a real store whose writes raise
StorageError while ``fault`` is set), and on PostgreSQL also for real: the
private cluster is stopped and started again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from probed.core.outages import FailureRun
from probed.store.base import FailedTest, OutboxEntry, StorageError, Store, open_store
from probed.store.spool import Spool
from tests.daemon_helpers import wait_for
from tests.pgcluster import PgCluster

T0 = 1_790_000_000.0
WINDOW = (T0 - 3600, T0 + 3600)
WRITES = {
    "record_pass",
    "record_failure",
    "flush",
    "open_outage",
    "update_outage",
    "close_outage",
    "enqueue",
}


class FaultyStore:
    """A real store whose writes fail with ``fault`` as the reason while it is set."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.fault: str | None = None
        self.attempts = 0

    async def close(self) -> None:
        """The fixture closes the real store (the tests read it after the spool closed)."""

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in WRITES:
            return attr

        async def write(*args: Any, **kwargs: Any) -> Any:
            self.attempts += 1
            if self.fault is not None:
                raise StorageError(self.fault)
            return await attr(*args, **kwargs)

        return write


@pytest.fixture(params=["sqlite", "postgresql"])
async def real_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, str, PgCluster | None]]:
    if request.param == "sqlite":
        url, cluster = f"sqlite://{tmp_path / 'probed.db'}", None
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = request.getfixturevalue("pg_dsn")
    from probed.store.postgresql import PostgresStore

    store: Store = (
        await PostgresStore.open(url, location="here", password=cluster.password)
        if cluster
        else await open_store(url, location="here")
    )
    yield store, url, cluster
    await store.close()


def failed(at: float, reason: str = "HTTP 503") -> FailedTest:
    return FailedTest("web", at, 0.01, reason)


async def test_failures_during_a_fault_are_written_in_order_once_the_store_is_back(
    real_store: tuple[Store, str, PgCluster | None],
) -> None:
    store, _, _ = real_store
    faulty = FaultyStore(store)
    spool = Spool(faulty, retry_first=0.01, retry_max=0.05)  # type: ignore[arg-type]
    cid = await spool.check_id("svc", "web", "http")
    await spool.record_pass(cid, T0, interval=1, test_timeout=0.5)
    faulty.fault = "disk I/O error"
    for i in range(1, 4):
        await spool.record_failure(cid, failed(T0 + i), interval=1, test_timeout=0.5)
    run = FailureRun(T0 + 1, T0 + 2, 2, ("HTTP 503",))
    provisional = await spool.open_outage(cid, run)
    assert provisional < 0
    payload = json.dumps({"id": "e1", "event": {"kind": "outage_opened", "outage_id": provisional}})
    await spool.enqueue([OutboxEntry(("hook",), payload)], T0 + 2)
    await spool.update_outage(provisional, run.with_failure(T0 + 3, "HTTP 503"))
    await spool.record_pass(cid, T0 + 4, interval=1, test_timeout=0.5, durable=True)
    await spool.close_outage(provisional, run.with_failure(T0 + 3, "HTTP 503"), T0 + 4)

    reason = await spool.writable()
    assert reason is not None and "disk I/O error" in reason and "records spooled" in reason
    assert spool.records == 8
    assert await store.failed_tests("svc", "web", WINDOW) == []

    faulty.fault = None
    await wait_for(lambda: spool.records == 0, 10, "the spool to be written")
    assert await spool.writable() is None
    stored = await store.failed_tests("svc", "web", WINDOW)
    assert [f.at for f in stored] == [T0 + 1, T0 + 2, T0 + 3]
    real = spool.resolve(provisional)
    assert real is not None and real > 0
    [outage] = await store.outages("svc", WINDOW)
    assert (outage.id, outage.start, outage.end, outage.failed_tests, outage.open) == (
        real,
        T0 + 1,
        T0 + 3,
        3,
        False,
    )
    row = await store.claim("hook", T0 + 10, 30)
    assert row is not None and json.loads(row.payload)["event"]["outage_id"] == real
    assert dict(spool.dropped) == {}


async def test_past_the_limit_plain_passes_go_first_and_are_counted(
    real_store: tuple[Store, str, PgCluster | None],
) -> None:
    store, _, _ = real_store
    faulty = FaultyStore(store)
    spool = Spool(faulty, limit=5, retry_first=0.01, retry_max=0.05)  # type: ignore[arg-type]
    cid = await spool.check_id("svc", "web", "http")
    faulty.fault = "database or disk is full"
    await spool.record_failure(cid, failed(T0), interval=1, test_timeout=0.5)
    await spool.record_pass(cid, T0 + 1, interval=1, test_timeout=0.5, durable=True)  # ends the run
    for i in range(2, 10):
        await spool.record_pass(cid, T0 + i, interval=1, test_timeout=0.5)
    await spool.record_failure(cid, failed(T0 + 10), interval=1, test_timeout=0.5)
    assert spool.records == 5
    assert dict(spool.dropped) == {"pass": 6}  # 11 records, 5 kept: F, the run end, P, P, F

    faulty.fault = None
    await wait_for(lambda: spool.records == 0, 10, "the spool to be written")
    assert [f.at for f in await store.failed_tests("svc", "web", WINDOW)] == [T0, T0 + 10]
    # the pass between the two failures survived: two runs, not one
    assert await store.restore_run(cid) == FailureRun(T0 + 10, T0 + 10, 1, ("HTTP 503",))


async def test_with_nothing_droppable_left_the_oldest_record_goes(
    real_store: tuple[Store, str, PgCluster | None],
) -> None:
    store, _, _ = real_store
    faulty = FaultyStore(store)
    spool = Spool(faulty, limit=3, retry_first=0.01, retry_max=0.05)  # type: ignore[arg-type]
    cid = await spool.check_id("svc", "web", "http")
    faulty.fault = "read-only file system"
    for i in range(5):
        await spool.record_failure(cid, failed(T0 + i), interval=1, test_timeout=0.5)
    assert (spool.records, dict(spool.dropped)) == (3, {"failure": 2})
    faulty.fault = None
    await wait_for(lambda: spool.records == 0, 10, "the spool to be written")
    assert [f.at for f in await store.failed_tests("svc", "web", WINDOW)] == [
        T0 + 2,
        T0 + 3,
        T0 + 4,
    ]


async def test_retries_back_off(real_store: tuple[Store, str, PgCluster | None]) -> None:
    store, _, _ = real_store
    faulty = FaultyStore(store)
    spool = Spool(faulty, retry_first=0.05, retry_max=0.2)  # type: ignore[arg-type]
    cid = await spool.check_id("svc", "web", "http")
    faulty.fault = "disk I/O error"
    await spool.record_failure(cid, failed(T0), interval=1, test_timeout=0.5)
    await asyncio.sleep(1.0)
    # 0.05 + 0.1 + 0.2 + 0.2 + 0.2 + 0.2 = 0.95 s: about 7 attempts, not one per loop turn
    assert 3 <= faulty.attempts <= 10
    faulty.fault = None
    await spool.close()
    assert [f.at for f in await store.failed_tests("svc", "web", WINDOW)] == [T0]


async def test_close_writes_out_what_waits(real_store: tuple[Store, str, PgCluster | None]) -> None:
    store, _, _ = real_store
    faulty = FaultyStore(store)
    spool = Spool(faulty, retry_first=30, retry_max=30)  # type: ignore[arg-type]
    cid = await spool.check_id("svc", "web", "http")
    faulty.fault = "disk I/O error"
    await spool.record_failure(cid, failed(T0), interval=1, test_timeout=0.5)
    faulty.fault = None
    await spool.close()  # does not wait out the 30 s backoff
    assert [f.at for f in await store.failed_tests("svc", "web", WINDOW)] == [T0]


async def test_postgresql_stopped_and_started_loses_nothing(
    pg_cluster: PgCluster, pg_dsn: str
) -> None:
    from probed.store.postgresql import PostgresStore

    store = await PostgresStore.open(pg_dsn, location="here", password=pg_cluster.password)
    spool = Spool(store, retry_first=0.05, retry_max=0.2)
    try:
        cid = await spool.check_id("svc", "web", "http")
        await spool.record_failure(cid, failed(T0), interval=1, test_timeout=0.5)
        pg_cluster.stop()
        try:
            for i in range(1, 6):
                await spool.record_failure(cid, failed(T0 + i), interval=1, test_timeout=0.5)
            reason = await spool.writable()
            assert reason is not None and "5 records spooled" in reason
        finally:
            pg_cluster.start()
        await wait_for(lambda: spool.records == 0, 30, "the spool to be written")
        stored = await store.failed_tests("svc", "web", WINDOW)
        assert [f.at for f in stored] == [T0 + i for i in range(6)]
    finally:
        await spool.close()
