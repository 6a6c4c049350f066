"""The real daemon against a real loopback HTTP server: the SLA rules end to end."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage

pytestmark = pytest.mark.e2e
INTERVAL = 0.2
U, D = True, False
WIDE = (0.0, 4e9)


def outages_of(report: dict, check: str) -> list[dict]:
    [service] = report["services"]
    return [o for o in service["outages"] if o["check"] == check]


async def test_one_failed_test_is_no_downtime_and_four_are_three_intervals(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    scripts = {"single": [U] * 3 + [D] + [U] * 4, "four": [U] * 3 + [D] * 4 + [U] * 3}
    async with ScriptedHTTP(scripts) as http:
        config = http_config(tmp_path, http.port, list(scripts), INTERVAL, "", daemon_storage.lines)
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(
                lambda: all(http.counts.get(n, 0) >= len(s) + 1 for n, s in scripts.items()),
                what="both scripts to play out",
            )
            report = await daemon.json("/api/v1/report")
            metrics = {
                name: await daemon.metric("probed_probes_total", check=name, result="fail")
                for name in scripts
            }
        finally:
            assert await daemon.stop() == 0
    assert outages_of(report, "single") == []
    assert metrics == {"single": 1.0, "four": 4.0}
    [outage] = outages_of(report, "four")
    assert outage["failed_tests"] == 4
    assert outage["end"] is not None
    # downtime is from the first to the last failed test: 3 intervals, within scheduling jitter
    assert outage["downtime_seconds"] == pytest.approx(3 * INTERVAL, abs=0.08)
    assert report["services"][0]["downtime_seconds"] == pytest.approx(
        outage["downtime_seconds"], abs=1e-3
    )
    assert outage["reasons"] == ["HTTP 503 Service Unavailable (expected 200)"]


async def test_metrics_show_check_and_service_state_during_an_outage(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with ScriptedHTTP({"site": [U] * 2}) as http:
        config = http_config(tmp_path, http.port, ["site"], INTERVAL, "", daemon_storage.lines)
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(lambda: http.counts.get("site", 0) >= 2, what="two passing tests")
            assert await daemon.metric("probed_check_up", check="site") == 1.0
            http.down.add("site")
            await wait_for(
                lambda: _is(daemon.metric("probed_check_up", check="site"), 0.0), what="check down"
            )
            assert await daemon.metric("probed_service_up", service="web") == 0.0
            assert await daemon.metric("probed_probe_success", check="site", type="http") == 0.0
            status = await daemon.json("/api/v1/status")
            [svc] = status["services"]
            assert svc["up"] is False and svc["open_outages"][0]["check"] == "site"
            http.down.clear()
            await wait_for(
                lambda: _is(daemon.metric("probed_service_up", service="web"), 1.0), what="recovery"
            )
            code, body = await daemon.get("/healthz")
            assert (code, body) == (200, "ok\n")
        finally:
            assert await daemon.stop(signal.SIGINT) == 0
    assert daemon.events("outage.opened") and daemon.events("outage.closed")


async def _is(value: object, expected: float) -> bool:
    return (await value) == expected  # type: ignore[misc]


async def test_kill_9_mid_outage_loses_no_failed_test_and_the_outage_continues(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with ScriptedHTTP({"mx": [U] * 3}) as http:
        config_path = http_config(tmp_path, http.port, ["mx"], INTERVAL, "", daemon_storage.lines)
        first = await DaemonProcess(config_path).start()
        await wait_for(lambda: http.counts.get("mx", 0) >= 3, what="three passing tests")
        http.down.add("mx")
        status = await wait_for(lambda: _open_outage(first, min_failed=3), what="an open outage")
        start = status["start"]
        await first.kill9()
        stored_before = await _failed_tests(daemon_storage)
        served_fails = http.counts["mx"] - 3
        # every failed test the server answered before the kill is in the store
        assert len(stored_before) >= served_fails - 1  # the last one may have been cut mid-flight
        await asyncio.sleep(1.0)  # the daemon stays dead for a while: a monitoring gap
        gap_start = http.counts["mx"]
        second = await DaemonProcess(config_path).start()
        try:
            restored = second.events("outage.restored")
            assert restored and restored[0]["check"] == "mx"
            await wait_for(
                lambda: http.counts["mx"] >= gap_start + 3, what="three more failed tests"
            )
            http.down.clear()
            await wait_for(lambda: _outage_closed(second), what="the outage to close")
            report = await second.json("/api/v1/report")
        finally:
            assert await second.stop() == 0
    stored_after = await _failed_tests(daemon_storage)
    assert stored_after[: len(stored_before)] == stored_before
    [outage] = outages_of(report, "mx")
    assert outage["start"] == start  # one outage across the gap, from the first failed test
    # under load a test before the fault may time out: a lone failure, not in the outage
    async with daemon_storage.reading() as store:
        [stored_outage] = await store.outages("web", WIDE)
    first_at = stored_outage.start
    assert outage["failed_tests"] == len([at for at, _ in stored_after if at >= first_at])
    assert report["services"][0]["unmonitored_seconds"] > 0


async def _open_outage(daemon: DaemonProcess, min_failed: int) -> dict | None:
    status = await daemon.json("/api/v1/status")
    for o in status["services"][0]["open_outages"]:
        if o["failed_tests"] >= min_failed:
            return o
    return None


async def _outage_closed(daemon: DaemonProcess) -> bool:
    status = await daemon.json("/api/v1/status")
    return status["services"][0]["up"] is True


async def _failed_tests(storage: DaemonStorage) -> list[tuple[float, str]]:
    """Every failed test of mx as another process reads it through the product's store."""
    async with storage.reading() as store:
        return [(f.at, f.reason) for f in await store.failed_tests("web", "mx", WIDE)]
