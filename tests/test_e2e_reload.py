"""`probed reload` returns when the daemon has applied the new config, or exits 78 when
it refused it; POST /-/reload does the same over HTTP with the token."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config
from tests.daemon_storage import DaemonStorage

pytestmark = pytest.mark.e2e
TOKEN = "reload-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_with(
    tmp: Path, http_port: int, names: list[str], extra: str = "", storage: str | None = None
) -> Path:
    """A config on a fixed port: `probed reload` finds the daemon by the config's listen."""
    path = http_config(tmp, http_port, names, 0.2, extra, storage)
    text = re.sub(r"listen: 127\.0\.0\.1:0", f"listen: 127.0.0.1:{free_port()}", path.read_text())
    path.write_text(text)
    return path


def reload_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "probed.cli", "reload", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def check_names(daemon: DaemonProcess) -> list[str]:
    status = await daemon.json("/api/v1/status")
    return [c["check"] for s in status["services"] for c in s["checks"]]


async def test_reload_returns_once_the_new_check_runs_and_78_when_refused(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with ScriptedHTTP() as http:
        config = config_with(tmp_path, http.port, ["old"], storage=daemon_storage.lines)
        daemon = await DaemonProcess(config).start()
        try:
            assert daemon.proc is not None
            pid = str(daemon.proc.pid)
            text = config.read_text().replace(
                '/old"}',
                f'/old"}}\n      - {{name: new, type: http, url: "http://127.0.0.1:{http.port}/new"}}',
            )
            config.write_text(text)
            result = await asyncio.to_thread(reload_cli, config, "--pid", pid)
            assert (result.returncode, result.stdout) == (0, "reloaded\n"), result.stderr
            assert await check_names(daemon) == ["old", "new"]  # applied when the command returned
            assert await daemon.metric("probed_config_last_reload_successful") == 1.0

            config.write_text(text.replace("objective: 99.5", "objective: many"))
            result = await asyncio.to_thread(reload_cli, config, "--pid", pid)
            assert result.returncode == 78
            assert re.search(r"probed\.yaml:\d+: services\.web\.objective: ", result.stderr)
            assert "refused the new config" in result.stderr
            assert await check_names(daemon) == ["old", "new"]  # still the old config
            assert await daemon.metric("probed_config_last_reload_successful") == 0.0
        finally:
            assert await daemon.stop() == 0


async def test_post_reload_needs_the_token_and_answers_with_the_verdict(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    async with ScriptedHTTP() as http:
        token = "api_token_file: token\n"
        config = config_with(tmp_path, http.port, ["a"], token, daemon_storage.lines)
        daemon = await DaemonProcess(config).start()
        url = f"http://127.0.0.1:{daemon.port}/-/reload"
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(url) as response:
                    assert response.status == 401
                async with session.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    assert (r.status, (await r.json())["status"]) == (200, "applied")
            config.write_text(config.read_text().replace("services:", "servics:"))
            result = await asyncio.to_thread(reload_cli, config)  # no --pid: POST with the token
            assert result.returncode == 78
            assert "servics: unknown field" in result.stderr
        finally:
            assert await daemon.stop() == 0


async def test_reload_without_a_daemon_is_a_runtime_failure(tmp_path: Path) -> None:
    config = config_with(tmp_path, 9, ["a"])
    result = await asyncio.to_thread(reload_cli, config, "--pid", "999999")
    assert result.returncode == 1
    assert "cannot reach the daemon" in result.stderr
