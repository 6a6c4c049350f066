"""A bug in probed is logged as a bug, never recorded as the customer's downtime."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import pytest

from probed.daemon.runner import run_test
from probes.base import CheckBase, ProbeResult, ProbeType, Transcript
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for


class BugCheck(CheckBase):
    type: Literal["bug"] = "bug"


def raising(exc: Exception) -> ProbeType:
    async def probe(check: BugCheck, transcript: Transcript) -> ProbeResult:
        raise exc

    return ProbeType("bug", BugCheck, probe)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionRefusedError(), "connection refused"),
        (TimeoutError(), "connection timed out"),
        (EOFError(), "EOFError"),
    ],
)
async def test_expected_io_errors_stay_failed_tests_with_short_reasons(
    exc: Exception, reason: str
) -> None:
    outcome = await run_test(raising(exc), BugCheck(name="b"))
    assert (outcome.ok, outcome.result.reason, outcome.error) == (False, reason, None)


@pytest.mark.parametrize(
    "exc", [AttributeError("'NoneType' has no 'x'"), TypeError("bad"), KeyError(1)]
)
async def test_an_unexpected_exception_is_carried_as_a_bug(exc: Exception) -> None:
    outcome = await run_test(raising(exc), BugCheck(name="b"))
    assert outcome.error is exc
    assert outcome.result.reason.startswith("probe error (a bug in probed): ")


# A probe bug injected into the real daemon: the http probe crashes on paths ending in /buggy.
SITECUSTOMIZE = """
import dataclasses
import probes

_real = probes.REGISTRY["http"]

async def _run(check, transcript):
    if check.url.endswith("/buggy"):
        return None.status  # AttributeError, as a real probe bug would
    return await _real.run(check, transcript)

probes.REGISTRY["http"] = dataclasses.replace(_real, run=_run)
"""


@pytest.mark.e2e
async def test_a_probe_bug_is_logged_once_counted_and_never_billed(tmp_path: Path) -> None:
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    async with ScriptedHTTP() as http:
        config = http_config(tmp_path, http.port, ["buggy"], interval=0.2)
        env = {"PYTHONPATH": f"{tmp_path / 'inject'}:{':'.join(sys.path)}"}
        daemon = await DaemonProcess(config, env=env).start()
        try:
            labels = {"service": "web", "check": "buggy", "type": "http"}
            await wait_for(
                lambda: daemon.metric(
                    "probed_probe_errors_total", error="AttributeError", **labels
                ),
                what="probe errors counted",
            )
            await wait_for(
                lambda: _at_least(daemon, "probed_probe_errors_total", 5, **labels),
                what="five crashed tests",
            )
            status = await daemon.json("/api/v1/status")
            report = await daemon.json("/api/v1/report")
            fails = await daemon.metric("probed_probes_total", result="fail", **labels)
        finally:
            assert await daemon.stop() == 0
    [bug] = daemon.events("probe.bug")  # once per check and exception type
    assert (bug["level"], bug["check"], bug["error"]) == ("error", "buggy", "AttributeError")
    assert "Traceback" in bug["exception"] and "None.status" in bug["exception"]
    assert not daemon.events("probe.failed") and not daemon.events("outage.opened")
    [web] = report["services"]
    assert (web["downtime_seconds"], web["outages"]) == (0.0, [])
    [buggy] = status["services"][0]["checks"]
    assert (buggy["state"], buggy["failed_tests"]) == ("up", 0)
    assert fails == 0
    assert all(json.dumps(e) for e in daemon.log)


async def _at_least(daemon: DaemonProcess, name: str, n: float, **labels: str) -> bool:
    value = await daemon.metric(name, **labels)
    return value is not None and value >= n
