"""``workers: N``: the real daemon with its tests run by worker processes (loopback only)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from probed import config as config_mod
from probed.daemon.workers import shard
from probed.store.base import open_store
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.test_e2e_stalls import STALL, STALL_AT, stalled_daemon

pytestmark = pytest.mark.e2e
INTERVAL = 0.2
U, D = True, False
NAMES = [f"c{i}" for i in range(8)]
# one check of each worker fails 4 times in a row: one outage each
SCRIPTS = {"c0": [U] * 3 + [D] * 4 + [U] * 3, "c5": [U] * 2 + [D] + [U] + [D] * 3 + [U] * 3}


def _workers(n: int) -> str:
    return f"workers: {n}\n"


async def _stored(config: Path) -> dict[str, Any]:
    """Each check's failed tests and outages, from the store (after the daemon stopped)."""
    store = await open_store(config_mod.load(config))
    window = (0.0, time.time() + 60)
    try:
        failed = {n: await store.failed_tests("web", n, window) for n in NAMES}
        outages = await store.outages("web", window)
    finally:
        await store.close()
    return {"failed": failed, "outages": outages}


async def _scripted_run(tmp: Path, workers: int) -> tuple[dict[str, Any], DaemonProcess]:
    tmp.mkdir()  # noqa: ASYNC240  # a test's own directory
    async with ScriptedHTTP({n: list(s) for n, s in SCRIPTS.items()}) as http:
        # a longer timeout than elsewhere: two runs must not differ by a timeout under load
        config = http_config(tmp, http.port, NAMES, 2 * INTERVAL, extra=_workers(workers))
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(
                lambda: (
                    all(http.counts.get(n, 0) >= len(s) + 2 for n, s in SCRIPTS.items())
                    and all(http.counts.get(n, 0) >= 3 for n in NAMES)
                ),
                what="the scripts to play out and every check tested",
            )
        finally:
            assert await daemon.stop() == 0
    return await _stored(config), daemon


def _shape(stored: dict[str, Any]) -> dict[str, Any]:
    """What must be the same whatever runs the tests: failed tests per check (reasons),
    each outage's check, size and its first and last failed test."""
    failed = stored["failed"]
    outages = {}
    for o in stored["outages"]:
        times = [f.at for f in failed[o.check]]
        outages[o.check] = (
            o.failed_tests,
            o.open,
            times.index(o.start),
            times.index(o.end),
            o.reasons,
        )
    return {"failed": {n: [f.reason for f in tests] for n, tests in failed.items()}, **outages}


async def test_two_workers_split_the_checks_and_store_what_one_process_stores(
    tmp_path: Path,
) -> None:
    one, _ = await _scripted_run(tmp_path / "one", 1)
    two, daemon = await _scripted_run(tmp_path / "two", 2)
    ready = daemon.events("worker.ready")
    assert sorted(e["worker"] for e in ready) == [0, 1]
    events = [e["event"] for e in daemon.log]  # READY=1 follows daemon.started
    assert events.index("daemon.started") > max(
        i for i, e in enumerate(events) if e == "worker.ready"
    )
    assert {e["worker"]: e["checks"] for e in ready} == {
        w: sum(shard(("web", n), 2) == w for n in NAMES) for w in (0, 1)
    }
    assert {shard(("web", n), 2) for n in SCRIPTS} == {0, 1}  # a failing check on each
    assert _shape(two) == _shape(one)
    assert not daemon.events("worker.died")
    reason = "HTTP 503 Service Unavailable (expected 200)"
    assert _shape(two)["c0"] == (4, False, 0, 3, (reason,))
    assert _shape(two)["c5"] == (3, False, 1, 3, (reason,))


def _worker_pid(daemon: DaemonProcess, worker: int) -> int:
    return int([e for e in daemon.events("worker.ready") if e["worker"] == worker][-1]["pid"])


async def test_a_killed_worker_is_restarted_and_its_gap_is_unmonitored_not_failed(
    tmp_path: Path,
) -> None:
    mine = [n for n in NAMES if shard(("web", n), 2) == 1]  # worker 0 has no check
    async with ScriptedHTTP() as http:
        config = http_config(tmp_path, http.port, mine, INTERVAL, extra=_workers(2))
        daemon = await DaemonProcess(config).start()
        try:
            victim = _worker_pid(daemon, 1)
            await wait_for(lambda: all(http.counts.get(n, 0) >= 3 for n in mine), what="tests")
            os.kill(victim, signal.SIGKILL)
            await wait_for(lambda: daemon.events("worker.died"), what="the death logged")
            await wait_for(lambda: len(daemon.events("worker.ready")) == 3, what="a restart")
            assert _worker_pid(daemon, 1) != victim
            counts = {n: http.counts[n] for n in mine}
            await wait_for(
                lambda: all(http.counts[n] >= counts[n] + 3 for n in mine),
                what="the new worker testing its checks",
            )
            restarts = await daemon.metric("probed_worker_restarts_total")
            report = await daemon.json("/api/v1/report")
        finally:
            assert await daemon.stop() == 0
    [died] = daemon.events("worker.died")
    assert died["worker"] == 1 and died["returncode"] == -signal.SIGKILL
    assert restarts == 1.0
    assert report["services"][0]["unmonitored_seconds"] > 0
    assert report["services"][0]["downtime_seconds"] == 0
    stored = await _stored(config)
    assert all(tests == [] for tests in stored["failed"].values()), stored["failed"]
    assert len(mine) >= 2


async def test_a_reload_adds_and_removes_checks_across_workers(tmp_path: Path) -> None:
    removed, kept, added = ["c0", "c4"], ["c1", "c5"], ["c8", "c6"]
    for names in (removed, kept, added):  # one of each on either worker
        assert sorted(shard(("web", n), 2) for n in names) == [0, 1]
    first, later = removed + kept, kept + added
    async with ScriptedHTTP() as http:
        config = http_config(tmp_path, http.port, first, INTERVAL, extra=_workers(2))
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(lambda: all(http.counts.get(n, 0) >= 2 for n in first), what="tests")
            http_config(tmp_path, http.port, later, INTERVAL, extra=_workers(2))
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            await wait_for(lambda: daemon.events("config.reloaded"), what="the reload")
            gone = {n: http.counts[n] for n in removed}
            await wait_for(
                lambda: all(http.counts.get(n, 0) >= 3 for n in later), what="new checks tested"
            )
            counts = {n: http.counts[n] for n in later}
            await wait_for(
                lambda: all(http.counts[n] >= counts[n] + 2 for n in later), what="more tests"
            )
        finally:
            assert await daemon.stop() == 0
    [reloaded] = daemon.events("config.reloaded")
    assert sorted(reloaded["added"]) == sorted(f"web/{n}" for n in added)
    assert sorted(reloaded["removed"]) == sorted(f"web/{n}" for n in removed)
    # a removed check is tested at most once more (a test in flight at the reload)
    assert all(http.counts[n] <= gone[n] + 1 for n in removed)
    assert len(daemon.events("worker.ready")) == 2  # no worker was restarted for it


async def test_sigterm_to_the_whole_group_stops_the_workers_and_then_the_daemon(
    tmp_path: Path,
) -> None:
    """As systemd stops a unit: SIGTERM to every process; no worker counts as dead."""
    async with ScriptedHTTP() as http:
        config = http_config(tmp_path, http.port, NAMES, INTERVAL, extra=_workers(2))
        daemon = await DaemonProcess(config).start()
        await wait_for(lambda: all(http.counts.get(n, 0) >= 2 for n in NAMES), what="tests")
        pids = [_worker_pid(daemon, w) for w in (0, 1)]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        # the workers may be done before the main process hears its own signal
        await wait_for(lambda: len(daemon.events("worker.stopped")) == 2, what="workers done")
        assert await daemon.stop(timeout=INTERVAL + 10) == 0
    assert not [pid for pid in pids if _alive(pid)]
    names = [e["event"] for e in daemon.log]
    assert names.count("worker.stopped") == 2
    assert "worker.died" not in names
    assert names.index("daemon.stopped") > max(
        i for i, name in enumerate(names) if name == "worker.stopped"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_stalled_worker_records_no_failure_against_a_healthy_server(
    tmp_path: Path,
) -> None:
    """The stall rules hold inside a worker: its loop blocked for twice the timeout while
    a healthy server answers is no failed test (docs/sla-rules.md)."""
    worker = shard(("web", "site"), 2)
    daemon = await stalled_daemon(tmp_path, _workers(2), lambda d: _worker_pid(d, worker))
    stalls = daemon.events("scheduler.loop_stalled")
    # the injected stalls were seen by the worker's own detector (a loaded machine may
    # add short stalls of any process, not these)
    injected = [
        e for e in stalls if e["stalled_seconds"] >= STALL - 0.1 and e.get("worker") == worker
    ]
    assert len(injected) >= len(STALL_AT), stalls
