"""The real daemon with a webhook hook: an outage reaches a loopback receiver, in order."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage
from tests.hooks_receiver import Receiver

pytestmark = pytest.mark.e2e
U, D = True, False


async def test_daemon_sends_outage_and_service_events_to_a_webhook(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    (tmp_path / "hmac.key").write_text("e2e-secret\n")
    async with Receiver() as receiver, ScriptedHTTP({"site": [U, U, D, D, D, U]}) as http:
        hooks = (
            "hooks:\n"
            f'  - {{type: webhook, name: team, url: "{receiver.url("/probed")}",'
            f" secret_file: {tmp_path}/hmac.key}}\n"
        )
        config = http_config(
            tmp_path, http.port, ["site"], extra=hooks, storage=daemon_storage.lines
        )
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(lambda: len(receiver.requests) >= 4, 30, "four hook deliveries")
        finally:
            assert await daemon.stop() == 0
    bodies = receiver.bodies("/probed")
    assert [(b["event"], b["service"], b["check"]) for b in bodies] == [
        ("outage_opened", "web", "site"),
        ("service_down", "web", None),
        ("outage_closed", "web", "site"),
        ("service_up", "web", None),
    ]
    opened, _, closed, _ = bodies
    assert opened["severity"] == "P1"  # the service's only check is down: all of it
    assert opened["outage_id"] == closed["outage_id"]
    assert closed["failed_tests"] == 3 and closed["downtime_seconds"] > 0
    for request in receiver.requests:
        mac = hmac.new(b"e2e-secret", request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Probed-Signature"] == f"sha256={mac}"
    delivered = [e for e in daemon.log if e.get("event") == "hook.delivered"]
    assert [e["kind"] for e in delivered] == [b["event"] for b in bodies]
    assert all(e["hook"] == "team" for e in delivered)
