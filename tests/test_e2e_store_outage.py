"""The real daemon while its store cannot be written: nothing recorded is lost.

Two real faults: SQLite on a small tmpfs that fills up (then is cleaned up),
and the private PostgreSQL cluster stopped for a few seconds (then started
again). During the fault a check goes down and comes back; probing, /metrics
and /healthz (503 with the reason) keep working; afterwards every failed test
the target answered is in the store, the outage is whole, and each hook
event was delivered once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage, sqlite_storage
from tests.faults import drain, fill, small_tmpfs
from tests.hooks_receiver import Receiver
from tests.pgcluster import PgCluster

pytestmark = pytest.mark.e2e
INTERVAL = 0.3
WIDE = (0.0, 4e9)


@contextmanager
def full_disk(
    tmp_path: Path,
) -> Iterator[tuple[DaemonStorage, Callable[[], object], Callable[[], None]]]:
    with small_tmpfs(tmp_path / "mnt") as mount:
        yield sqlite_storage(mount), lambda: fill(mount), lambda: drain(mount)


@contextmanager
def stopped_postgresql(
    pg_cluster: PgCluster, pg_dsn: str
) -> Iterator[tuple[DaemonStorage, Callable[[], object], Callable[[], None]]]:
    storage = DaemonStorage(
        "postgresql",
        pg_dsn,
        f"storage: {pg_dsn}\nstorage_password_file: {pg_cluster.password_file}",
    )
    try:
        yield storage, pg_cluster.stop, pg_cluster.start
    finally:
        if not pg_cluster.running():
            pg_cluster.start()


@pytest.mark.parametrize("fault", ["sqlite-disk-full", "postgresql-stopped"])
async def test_a_store_fault_during_an_outage_loses_nothing(
    fault: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if fault == "sqlite-disk-full":
        context = full_disk(tmp_path)
    else:
        context = stopped_postgresql(
            request.getfixturevalue("pg_cluster"), request.getfixturevalue("pg_dsn")
        )
    with context as (storage, inject, heal):
        async with ScriptedHTTP({"site": [True] * 3}) as http, Receiver() as hooks:
            hook = f'hooks:\n  - {{type: webhook, name: pager, url: "http://127.0.0.1:{hooks.port}/h"}}\n'
            config = http_config(tmp_path, http.port, ["site"], INTERVAL, hook, storage.lines)
            daemon = await DaemonProcess(config).start()
            try:
                await wait_for(lambda: http.counts.get("site", 0) >= 3, what="three passes")
                await asyncio.to_thread(inject)  # the target keeps answering meanwhile
                http.down.add("site")
                health = await wait_for(lambda: _unhealthy(daemon), what="/healthz 503")
                assert "records spooled" in health
                await wait_for(lambda: http.failed.get("site", 0) >= 6, what="six failures")
                fails = await daemon.metric("probed_probes_total", check="site", result="fail")
                assert fails is not None and fails >= 5  # /metrics keeps counting
                assert await daemon.metric("probed_check_up", check="site") == 0.0
                spooled = await daemon.metric("probed_store_spool_records")
                assert spooled is not None and spooled >= 5
                http.down.clear()
                passes = http.counts["site"]
                await wait_for(lambda: http.counts["site"] >= passes + 3, what="passes again")
                await asyncio.to_thread(heal)
                await wait_for(lambda: _healthy(daemon), timeout=60, what="/healthz 200 again")
                assert await daemon.metric("probed_store_spool_records") == 0.0
                await wait_for(lambda: len(hooks.requests) >= 4, what="the hook events")
            finally:
                assert await daemon.stop() == 0
        served = http.failed["site"]
        store = await storage.open()
        try:
            stored = await store.failed_tests("web", "site", WIDE)
            outages = await store.outages("web", WIDE)
        finally:
            await store.close()
    # every failed test the target answered is stored; a test can also have timed out
    # before the answer arrived (a loaded machine), then it is stored as a timeout
    answered = [f for f in stored if f.reason.startswith("HTTP 503")]
    late = [f for f in stored if f.reason.startswith("timeout after")]
    assert len(answered) + len(late) == len(stored)
    assert len(answered) <= served <= len(stored)
    assert [f.at for f in stored] == sorted(f.at for f in stored)
    [outage] = outages
    during = [f for f in stored if outage.start <= f.at <= outage.end]
    assert outage.failed_tests == len(during) and not outage.open and outage.id > 0
    assert (outage.start, outage.end) == (during[0].at, during[-1].at)
    assert set(answered) <= set(during)  # a stall can add a lone timeout, never split the run
    events = [b["event"] for b in hooks.bodies()]
    assert sorted(events) == ["outage_closed", "outage_opened", "service_down", "service_up"]
    assert {b["outage_id"] for b in hooks.bodies() if b["event"].startswith("outage")} == {
        outage.id
    }
    assert daemon.events("store.unwritable") and daemon.events("store.spool_written")
    assert not daemon.events("store.spool_full")


async def _unhealthy(daemon: DaemonProcess) -> str | None:
    code, body = await daemon.get("/healthz")
    return body if code == 503 and "spooled" in body else None


async def _healthy(daemon: DaemonProcess) -> bool:
    code, _ = await daemon.get("/healthz")
    return code == 200
