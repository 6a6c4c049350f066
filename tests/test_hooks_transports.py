"""Apprise and exec hooks, each against the real thing on this machine."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from probed.core.events import Event
from probed.hooks.apprise_hook import AppriseConfig
from probed.hooks.exec import ExecConfig
from tests.daemon_helpers import wait_for
from tests.hooks_receiver import Receiver, free_port
from tests.test_hooks_delivery import dispatching, none_undelivered, opened

# apprise's e-mail plugin imports the stdlib's deprecated imghdr when its plugins load
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

CLOSED = Event(
    "outage_closed",
    "web",
    1_790_000_100.0,
    check="home",
    outage_id=7,
    start=1_789_999_940.0,
    end=1_790_000_000.0,
    failed_tests=3,
    downtime_seconds=60.0,
    reasons=("connection refused",),
    summary="web/home is up again after 60s of downtime",
)


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# ------------------------------------------------------------------ apprise


def apprise_hook(*urls: str, **fields: Any) -> AppriseConfig:
    return AppriseConfig.model_validate({"type": "apprise", "name": "ap", "urls": urls, **fields})


async def test_apprise_json_url_reaches_a_local_receiver(tmp_path: Path) -> None:
    async with Receiver() as receiver:
        hook = apprise_hook(f"json://127.0.0.1:{receiver.port}/notify")
        async with dispatching(tmp_path / "p.db", hook) as dispatcher:
            await dispatcher.submit(opened(severity="P1"))
            await dispatcher.submit(CLOSED)
            await wait_for(lambda: len(receiver.requests) == 2, 20, "two apprise posts")
    down, up = receiver.bodies("/notify")
    assert down["title"] == "[P1] probed: web/home"
    assert down["message"].splitlines()[0] == "web/home is down: connection refused"
    assert "reason: connection refused" in down["message"]
    assert down["type"] == "failure"
    assert up["type"] == "success"
    assert up["message"].startswith("web/home is up again after 60s of downtime")


async def test_apprise_urls_can_come_from_a_secret_file(tmp_path: Path) -> None:
    async with Receiver() as receiver:
        secret = tmp_path / "apprise.urls"
        secret.write_text(f"# team chat\n\njson://127.0.0.1:{receiver.port}/secret\n")
        hook = apprise_hook(urls_file=str(secret))
        async with dispatching(tmp_path / "p.db", hook) as dispatcher:
            await dispatcher.submit(opened())
            await wait_for(lambda: receiver.requests, 20, "the apprise post")
    assert receiver.requests[0].path == "/secret"


async def test_apprise_failure_is_retried_with_a_reason(tmp_path: Path) -> None:
    port = free_port()
    hook = apprise_hook(f"json://127.0.0.1:{port}/notify")
    async with dispatching(tmp_path / "p.db", hook) as dispatcher:
        with capture_logs() as logs:
            await dispatcher.submit(opened())
            await wait_for(lambda: any(e["event"] == "hook.failed" for e in logs), 20)
        async with Receiver(port=port) as receiver:
            await wait_for(lambda: receiver.requests, 20, "the retried post")
    failed = next(e for e in logs if e["event"] == "hook.failed")
    assert failed["reason"].startswith("apprise: ")


# --------------------------------------------------------------------- exec


async def test_exec_gets_the_event_as_json_on_stdin_and_in_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = script(
        tmp_path / "hook.sh",
        f"cat >> {out}.json; echo >> {out}.json\n"
        f'echo "$PROBED_EVENT|$PROBED_SERVICE|$PROBED_CHECK|$PROBED_SEVERITY|$PROBED_SUMMARY'
        f'|$PROBED_REASON|$PROBED_START|$PROBED_DOWNTIME_SECONDS|$PROBED_EVENT_ID" >> {out}.env\n',
    )
    hook = ExecConfig.model_validate({"type": "exec", "name": "x", "command": [command]})
    async with dispatching(tmp_path / "p.db", hook) as dispatcher:
        await dispatcher.submit(opened(severity="P1"))
        await dispatcher.submit(CLOSED)
        await wait_for(lambda: none_undelivered(tmp_path / "p.db"), 10, "both deliveries")
    down, up = [json.loads(line) for line in (tmp_path / "out.json").read_text().splitlines()]
    assert (down["event"], down["severity"], down["check"]) == ("outage_opened", "P1", "home")
    assert (up["event"], up["downtime_seconds"]) == ("outage_closed", 60.0)
    env = (tmp_path / "out.env").read_text().splitlines()
    assert env == [
        "outage_opened|web|home|P1|web/home is down: connection refused|connection refused"
        f"|2026-09-21T14:12:20Z||{down['id']}",
        "outage_closed|web|home|P2|web/home is up again after 60s of downtime|connection refused"
        f"|2026-09-21T14:12:20Z|60.0|{up['id']}",
    ]


async def test_exec_non_zero_exit_is_a_failed_delivery_retried_later(tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    command = script(
        tmp_path / "flaky.sh",
        f'cat > /dev/null\nif [ ! -e {marker} ]; then touch {marker}; echo "pager is busy" >&2; exit 3; fi\n'
        f"echo ok >> {tmp_path}/done\n",
    )
    hook = ExecConfig.model_validate({"type": "exec", "name": "x", "command": [command]})
    async with dispatching(tmp_path / "p.db", hook) as dispatcher:
        with capture_logs() as logs:
            await dispatcher.submit(opened())
            await wait_for(lambda: (tmp_path / "done").exists(), 10, "the retry")
            # the script has run; the dispatcher logs the delivery once it has exited
            await wait_for(lambda: any(e["event"] == "hook.delivered" for e in logs), 10)
    assert [(e["event"], e.get("reason")) for e in logs if e["event"].startswith("hook.")] == [
        ("hook.failed", "exit status 3: pager is busy"),
        ("hook.delivered", None),
    ]


async def test_exec_past_its_timeout_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    command = script(tmp_path / "slow.sh", f"echo $$ > {pidfile}\nexec sleep 30\n")
    hook = ExecConfig.model_validate(
        {"type": "exec", "name": "x", "command": [command], "timeout": "300ms"}
    )
    async with dispatching(tmp_path / "p.db", hook) as dispatcher:
        with capture_logs() as logs:
            await dispatcher.submit(opened())
            await wait_for(lambda: any(e["event"] == "hook.failed" for e in logs), 10)
    failed = next(e for e in logs if e["event"] == "hook.failed")
    assert failed["reason"] == "timeout after 0.3s"
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"hook command {pid} still runs after its timeout")
