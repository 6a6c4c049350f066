"""The real daemon while its store cannot be written: nothing recorded is lost.

Two real faults: SQLite on a small tmpfs that fills up (then is cleaned up),
and the private PostgreSQL cluster stopped for a few seconds (then started
again); and one fake: the network to PostgreSQL goes silent (a proxy drops
everything and closes nothing), where only the daemon's own bound on a store
operation (``storage_timeout``) gets it to spool instead of hanging. During
the fault a check goes down and comes back; probing, /metrics and /healthz
(503 with the reason) keep working; afterwards every failed test the target
answered is in the store, the outage is whole, and each hook event was
delivered once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage, sqlite_storage
from tests.faults import BlackHoleProxy, drain, fill, small_tmpfs
from tests.hooks_receiver import Receiver
from tests.pgcluster import PgCluster

pytestmark = pytest.mark.e2e
INTERVAL = 0.3
WIDE = (0.0, 4e9)


Fault = tuple[DaemonStorage, Callable[[], object], Callable[[], None]]


@asynccontextmanager
async def full_disk(tmp_path: Path) -> AsyncIterator[Fault]:
    with small_tmpfs(tmp_path / "mnt") as mount:
        yield sqlite_storage(mount), lambda: fill(mount), lambda: drain(mount)


def postgresql_storage(pg_cluster: PgCluster, url: str, extra: str = "") -> DaemonStorage:
    lines = f"storage: {url}\nstorage_password_file: {pg_cluster.password_file}\n{extra}"
    return DaemonStorage("postgresql", url, lines)


@asynccontextmanager
async def stopped_postgresql(pg_cluster: PgCluster, pg_dsn: str) -> AsyncIterator[Fault]:
    try:
        yield postgresql_storage(pg_cluster, pg_dsn), pg_cluster.stop, pg_cluster.start
    finally:
        if not pg_cluster.running():
            pg_cluster.start()


@asynccontextmanager
async def silent_network(pg_cluster: PgCluster, pg_dsn: str) -> AsyncIterator[Fault]:
    async with BlackHoleProxy("127.0.0.1", pg_cluster.port) as proxy:
        daemon_url = pg_dsn.replace(f":{pg_cluster.port}/", f":{proxy.port}/")
        # the daemon goes through the proxy; the test reads the store directly
        storage = postgresql_storage(pg_cluster, daemon_url, "storage_timeout: 1s")
        yield DaemonStorage("postgresql", pg_dsn, storage.lines), proxy.cut, proxy.mend


@asynccontextmanager
async def down_during_a_fault(
    tmp_path: Path, storage: DaemonStorage, inject: Callable[[], object]
) -> AsyncIterator[tuple[DaemonProcess, ScriptedHTTP, Receiver]]:
    """A daemon whose check "site" (a webhook hook: pager) passed three times; then the
    store's fault is injected and the site goes down. Stopped cleanly at the end."""
    async with ScriptedHTTP({"site": [True] * 3}) as http, Receiver() as hooks:
        hook = f'hooks:\n  - {{type: webhook, name: pager, url: "{hooks.url("/h")}"}}\n'
        config = http_config(tmp_path, http.port, ["site"], INTERVAL, hook, storage.lines)
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(lambda: http.counts.get("site", 0) >= 3, what="three passes")
            await asyncio.to_thread(inject)  # the target keeps answering meanwhile
            http.down.add("site")
            yield daemon, http, hooks
        finally:
            http.down.clear()
            assert await daemon.stop() == 0


FAULTS = ["sqlite-disk-full", "postgresql-stopped", "postgresql-network-silent"]


def fault_of(
    fault: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AbstractAsyncContextManager[Fault]:
    if fault == "sqlite-disk-full":
        return full_disk(tmp_path)
    cluster, dsn = request.getfixturevalue("pg_cluster"), request.getfixturevalue("pg_dsn")
    return (stopped_postgresql if fault == "postgresql-stopped" else silent_network)(cluster, dsn)


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_store_fault_during_an_outage_loses_nothing(
    fault: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with fault_of(fault, tmp_path, request) as (storage, inject, heal):
        async with down_during_a_fault(tmp_path, storage, inject) as (daemon, http, hooks):
            health = await wait_for(lambda: _unhealthy(daemon), what="/healthz 503")
            assert "records spooled" in health
            await wait_for(lambda: http.failed.get("site", 0) >= 6, what="six failures")
            fails = await daemon.metric("probed_probes_total", check="site", result="fail")
            assert fails is not None and fails >= 5  # /metrics keeps counting
            assert await daemon.metric("probed_check_up", check="site") == 0.0
            spooled = await daemon.metric("probed_store_spool_records")
            assert spooled is not None and spooled >= 5
            # the outage's events wait too: an event goes out from the outbox, its
            # durable record (retried after a restart, sent once, the store's outage id)
            assert hooks.requests == []
            http.down.clear()
            passes = http.counts["site"]
            await wait_for(lambda: http.counts["site"] >= passes + 3, what="passes again")
            await asyncio.to_thread(heal)
            await wait_for(lambda: _healthy(daemon), timeout=60, what="/healthz 200 again")
            assert await daemon.metric("probed_store_spool_records") == 0.0
            await wait_for(lambda: len(hooks.requests) >= 4, what="the hook events")
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


@pytest.mark.parametrize("fault", ["sqlite-disk-full", "postgresql-stopped"])
async def test_status_during_a_fault_shows_no_provisional_outage_id(
    fault: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """/api/v1/status answers during a store fault and never shows the spool's
    provisional outage id: null while the opening waits, then the id reports and
    ``--incident`` know. Hook counts need the store: null while it cannot be read."""
    async with fault_of(fault, tmp_path, request) as (storage, inject, heal):
        async with down_during_a_fault(tmp_path, storage, inject) as (daemon, _, _):
            await wait_for(lambda: _unhealthy(daemon), what="/healthz 503")
            during = await wait_for(lambda: _with_open_outage(daemon), what="an open outage")
            await asyncio.to_thread(heal)
            await wait_for(lambda: _healthy(daemon), timeout=60, what="/healthz 200 again")
            after = await _with_open_outage(daemon)
        async with storage.reading() as store:
            [outage] = await store.outages("web", WIDE)
    [opened] = during["services"][0]["open_outages"]
    assert opened["id"] is None  # its opening waited in the spool: no id to show yet
    [pager] = during["hooks"]
    if fault == "postgresql-stopped":  # nothing can be read
        assert pager == {"hook": "pager", "undelivered": None, "dead_letters": None}
    else:  # a full disk is still read
        assert pager["hook"] == "pager" and pager["undelivered"] == 0
    assert after is not None
    [still_open] = after["services"][0]["open_outages"]
    assert still_open["id"] == outage.id and outage.id > 0


async def _with_open_outage(daemon: DaemonProcess) -> dict[str, Any] | None:
    """The status when it shows an open outage."""
    status: dict[str, Any] = await daemon.json("/api/v1/status")
    return status if status["services"][0]["open_outages"] else None


async def _unhealthy(daemon: DaemonProcess) -> str | None:
    code, body = await daemon.get("/healthz")
    return body if code == 503 and "spooled" in body else None


async def _healthy(daemon: DaemonProcess) -> bool:
    code, _ = await daemon.get("/healthz")
    return code == 200
