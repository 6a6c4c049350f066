"""Daemon lifecycle with real signals: sd_notify, SIGHUP reload, clean stop."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage

pytestmark = pytest.mark.e2e
INTERVAL = 0.2


class NotifySocket:
    """A real NOTIFY_SOCKET: an AF_UNIX datagram socket collecting what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def poll(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def seen(self, key: str, value: str | None = None) -> int:
        return sum(1 for m in self.poll() if key in m and (value is None or m[key] == value))

    def close(self) -> None:
        self.sock.close()


async def test_sd_notify_ready_status_watchdog_reload_and_stopping(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    async with ScriptedHTTP() as http:
        config = http_config(tmp_path, http.port, ["site"], INTERVAL, "", daemon_storage.lines)
        daemon = DaemonProcess(
            config, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
        )
        await daemon.start()
        try:
            await wait_for(lambda: notify.seen("READY", "1"), what="READY=1")
            first = notify.poll()[0]
            # READY=1 comes once storage is open and the scheduler runs, never before
            assert "READY" in first or "STATUS" not in first
            await wait_for(lambda: notify.seen("WATCHDOG", "1") >= 2, what="watchdog pings")
            await wait_for(
                lambda: any("1 checks, 0 in outage" in m.get("STATUS", "") for m in notify.poll()),
                what="STATUS line",
            )
            daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            await wait_for(lambda: notify.seen("RELOADING", "1"), what="RELOADING=1")
            await wait_for(lambda: notify.seen("READY", "1") >= 2, what="READY=1 after the reload")
        finally:
            assert await daemon.stop() == 0
    assert notify.seen("STOPPING", "1") == 1
    notify.close()


async def test_sighup_applies_a_good_config_and_keeps_the_old_one_when_bad(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with ScriptedHTTP() as http:
        storage = daemon_storage.lines
        config = http_config(tmp_path, http.port, ["keep", "drop"], INTERVAL, "", storage)
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(lambda: http.counts.get("drop", 0) >= 2, what="both checks running")
            http.down.add("keep")  # 'keep' goes into an outage that must survive the reload
            await wait_for(lambda: _failed(daemon, "keep", 3), what="an outage on keep")

            good = config.read_text()
            config.write_text(good.replace("interval: 0.2s", 'interval: "fast"'))
            daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            await wait_for(
                lambda: daemon.events("config.reload_failed"), what="the reload to be refused"
            )
            assert await daemon.metric("probed_config_last_reload_successful") == 0.0
            before = http.counts["drop"]
            await wait_for(
                lambda: http.counts["drop"] >= before + 2, what="the old config to keep running"
            )

            config.write_text(good.replace("name: drop", "name: added").replace("/drop", "/added"))
            daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            await wait_for(
                lambda: daemon.events("config.reloaded"), what="the reload to be applied"
            )
            assert await daemon.metric("probed_config_last_reload_successful") == 1.0
            [reloaded] = daemon.events("config.reloaded")
            assert reloaded["added"] == ["web/added"] and reloaded["removed"] == ["web/drop"]
            await wait_for(lambda: http.counts.get("added", 0) >= 2, what="the new check to run")
            stopped_at = http.counts["drop"]
            failed_before = (await _status(daemon, "keep"))["failed_tests"]
            await wait_for(
                lambda: _failed(daemon, "keep", failed_before + 2), what="the outage to go on"
            )
            assert http.counts["drop"] <= stopped_at + 1  # at most one test was already in flight
            assert await daemon.metric("probed_check_up", check="drop") is None
            assert len(daemon.events("outage.opened")) == 1  # the same outage, not a new one
        finally:
            assert await daemon.stop() == 0


async def _status(daemon: DaemonProcess, check: str) -> dict:
    status = await daemon.json("/api/v1/status")
    return next(c for c in status["services"][0]["checks"] if c["check"] == check)


async def _failed(daemon: DaemonProcess, check: str, at_least: int) -> bool:
    c = await _status(daemon, check)
    return c["state"] == "down" and c["failed_tests"] >= at_least


async def test_bad_config_at_startup_exits_78_with_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "services:\n  web:\n    objective: 99.5\n    checks:\n      - {name: x, type: nope}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "probed.cli",
        "run",
        "-c",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 78
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"{path}:5: services.web.checks[0].type: unknown check type"
    )


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_storage_that_cannot_be_opened_is_one_line_and_exit_1(
    tmp_path: Path, engine: str
) -> None:
    if engine == "sqlite":  # a directory that cannot be created: a file is in the way
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        storage = f"sqlite://{blocker}/sub/probed.db"
    else:  # nothing listens on the port: refused (no cluster needed)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            storage = f"postgresql://probed@127.0.0.1:{s.getsockname()[1]}/probed"
    path = tmp_path / "probed.yaml"
    path.write_text(
        f"storage: {storage}\nlisten: 127.0.0.1:0\nservices:\n  web:\n"
        "    objective: 99\n    checks:\n      - {name: x, type: tcp, host: 127.0.0.1, port: 9}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "probed.cli",
        "run",
        "-c",
        str(path),
        "--log-format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "Traceback" not in err.decode()
    named = storage.removeprefix("sqlite://")  # SQLite names its file
    assert f"probed: cannot open store {named}" in err.decode()
    if engine == "postgresql":
        assert "refused" in err.decode()  # libpq's own reason
