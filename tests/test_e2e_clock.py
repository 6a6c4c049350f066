"""Steps of the system clock never become downtime: the real daemon under libfaketime.

The daemon's wall clock is moved with libfaketime (its offset read from a file
on every call, the monotonic clock left alone, as asyncio needs) while a check
is in an outage; the outage must last what elapsed, not what the clock jumped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probed.daemon.clock import STEP_TOLERANCE, SessionClock
from tests.conftest import require
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage
from tests.test_e2e_exclusions import cli

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


class FakeClocks:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def test_time_is_the_anchor_plus_monotonic_elapsed() -> None:
    c = FakeClocks()
    clock = SessionClock(lambda: c.wall, lambda: c.mono)
    c.advance(10)
    c.wall += 0.4  # NTP slewing, below the tolerance: not a step
    assert clock.now() == 1_800_000_010.0
    assert clock.check() is None
    assert clock.now() == 1_800_000_010.0


@pytest.mark.parametrize("step", [3600.0, -5400.0, STEP_TOLERANCE + 0.5])
def test_a_step_is_reported_once_and_the_timeline_follows_it(step: float) -> None:
    c = FakeClocks()
    clock = SessionClock(lambda: c.wall, lambda: c.mono)
    c.advance(5)
    before = clock.at(c.mono)
    c.wall += step
    assert clock.now() == before  # between the step and its check: still the old timeline
    assert clock.check() == step
    assert clock.check() is None
    assert clock.now() == before + step
    c.advance(2)
    assert clock.now() == before + step + 2


# --- the real daemon under libfaketime --------------------------------------------


def faketime_env(offset: Path) -> dict[str, str]:
    """The wall clock offset by what ``offset`` says (re-read every second); monotonic left alone."""
    require(LIBFAKETIME.exists(), "libfaketime is not installed (.ci/setup-deploy-tools.sh)")
    offset.write_text("+0\n")
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_CACHE_DURATION": "1",  # re-read each second: cheap, and the daemon checks at 1 s
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


async def _step_in_an_outage(
    daemon: DaemonProcess, step_clock: Callable[[], object], *, failed_after: int
) -> None:
    """Once the daemon's outage is open, step its clock (``step_clock``), then wait for ``failed_after``
    failed tests recorded after the step (on a loaded machine some are discarded as
    overlapping a stall of the daemon's loop, by the rules: not verdicts)."""
    await wait_for(lambda: daemon.events("outage.opened"), what="outage opened")
    step_clock()
    await wait_for(lambda: daemon.events("clock.stepped"), what="clock.stepped")
    stepped_at = len(daemon.log)
    await wait_for(
        lambda: (
            sum(e.get("event") == "probe.failed" for e in daemon.log[stepped_at:]) >= failed_after
        ),
        what="failed tests after the step",
    )


async def _outage_through_a_step(
    tmp_path: Path, step: str, storage: DaemonStorage
) -> tuple[DaemonProcess, Any, Any, float]:
    """The daemon, its report, the incident and the seconds that really elapsed (an upper
    bound of any downtime: a loaded machine stretches it, the step must not)."""
    offset = tmp_path / "faketime"
    env = faketime_env(offset)
    began = time.monotonic()
    async with ScriptedHTTP() as http:
        http.down.add("site")
        config = http_config(tmp_path, http.port, ["site"], 0.5, "", storage.lines)
        daemon = await DaemonProcess(config, env=env).start()
        try:
            await _step_in_an_outage(daemon, lambda: offset.write_text(f"{step}\n"), failed_after=3)
            http.down.discard("site")
            await wait_for(lambda: daemon.events("outage.closed"), what="outage closed")
            elapsed = time.monotonic() - began
            report = await daemon.json("/api/v1/report")
        finally:
            assert await daemon.stop() == 0
    async with storage.reading() as store:
        # the outage open across the step (a loaded machine may add later ones)
        outage_id = min(o.id or 0 for o in await store.outages("web", (0.0, 4e9)))
    code, out, err = await cli(config, "report", "--incident", str(outage_id), "--format", "json")
    assert code == 0, err
    return daemon, report, json.loads(out), elapsed


@pytest.mark.e2e
@pytest.mark.parametrize(("step", "size"), [("+1h", 3600.0), ("-90m", -5400.0)])
async def test_a_clock_step_during_an_outage_is_logged_and_never_downtime(
    tmp_path: Path, step: str, size: float, daemon_storage: DaemonStorage
) -> None:
    daemon, report, incident, elapsed = await _outage_through_a_step(tmp_path, step, daemon_storage)
    assert elapsed < abs(size) / 10  # else the bounds below could not tell the step apart
    [stepped] = daemon.events("clock.stepped")  # once: a step is not seen again
    assert stepped["level"] == "warning"
    assert stepped["seconds"] == pytest.approx(size, abs=2)
    closed = daemon.events("outage.closed")[0]
    # was 3602 s (+1h) and -5397.5 s (-1.5h): now at most what really elapsed
    assert 0 < closed["downtime_seconds"] <= elapsed
    [web] = report["services"]
    assert web["outages"] and all(0 < o["downtime_seconds"] <= elapsed for o in web["outages"])
    assert 0 < web["downtime_seconds"] <= elapsed
    assert 0 < incident["downtime_seconds"] <= elapsed
    assert incident["start"] <= incident["end"]


@pytest.mark.e2e
@pytest.mark.parametrize(("step", "size"), [("+1h", 3600.0), ("-90m", -5400.0)])
async def test_kill_9_after_a_clock_step_restores_the_moved_outage(
    tmp_path: Path, step: str, size: float, daemon_storage: DaemonStorage
) -> None:
    """The failed tests before the step are stored on the old timeline, the open outage
    on the new one: the restarted daemon must continue that outage, not open another
    from the old timeline's first failed test (an hour of downtime) and leave it open."""
    offset = tmp_path / "faketime"
    env = faketime_env(offset)
    began = time.monotonic()
    async with ScriptedHTTP() as http:
        http.down.add("site")
        config = http_config(tmp_path, http.port, ["site"], 0.5, "", daemon_storage.lines)
        first = await DaemonProcess(config, env=env).start()
        await _step_in_an_outage(first, lambda: offset.write_text(f"{step}\n"), failed_after=2)
        await first.kill9()
        second = await DaemonProcess(config, env=env).start()  # the clock stays stepped
        try:
            await wait_for(
                lambda: second.events("probe.failed"), what="a failed test after restart"
            )
            http.down.discard("site")
            await wait_for(lambda: second.events("outage.closed"), what="outage closed")
            elapsed = time.monotonic() - began
            report = await second.json("/api/v1/report")
        finally:
            assert await second.stop() == 0
    assert elapsed < abs(size) / 10
    async with daemon_storage.reading() as store:
        outages = await store.outages("web", (0.0, 4e9))
    assert [o.open for o in outages] == [False] * len(outages)  # none left open forever
    assert all(0 < o.end - o.start <= elapsed for o in outages)
    [web] = report["services"]
    assert 0 < web["downtime_seconds"] <= elapsed
