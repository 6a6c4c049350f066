"""Run the real daemon as a subprocess and talk to it over HTTP (loopback only)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ANSWER_SECONDS = 60.0


class DaemonProcess:
    """``probed run`` in a subprocess; its port comes from the daemon.started log line."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.log: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 20.0) -> DaemonProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "probed.cli",
                "run",
                "-c",
                str(self.config),
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = await loop.run_in_executor(None, self.proc.stderr.readline)  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"daemon exited early with {self.proc.wait()}: {self.log}")
            self._record(line)
            if self.log and self.log[-1].get("event") == "daemon.started":
                self.port = int(str(self.log[-1]["listen"]).rsplit(":", 1)[1])
                self._reader = asyncio.create_task(self._drain())
                return self
        raise AssertionError("daemon did not start in time")

    def _record(self, line: str) -> None:
        try:
            self.log.append(json.loads(line))
        except ValueError:
            self.log.append({"event": "raw", "line": line.rstrip()})

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, self.proc.stderr.readline):
            self._record(line)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("event") == name]

    async def get(self, path: str) -> tuple[int, str]:
        """One GET; a daemon that does not answer within a minute fails the test (never hangs)."""
        timeout = aiohttp.ClientTimeout(total=ANSWER_SECONDS)
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.get(f"http://127.0.0.1:{self.port}{path}") as r,
        ):
            return r.status, await r.text()

    async def json(self, path: str) -> Any:
        status, text = await self.get(path)
        assert status == 200, text
        return json.loads(text)

    async def metric(self, name: str, **labels: str) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        _, text = await self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        loop = asyncio.get_running_loop()
        code = await loop.run_in_executor(None, lambda: self.proc.wait(timeout))  # type: ignore[union-attr]
        await self._close()
        return code

    async def _close(self) -> None:
        if self._reader is not None:
            await self._reader
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    async def kill9(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        await self._close()


async def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll an (async or sync) condition until it is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class ScriptedHTTP:
    """A loopback HTTP server answering each path's n-th request per a script (True = 200).

    After a script ends the path answers ``after`` (default: up). ``down`` makes a
    path fail until cleared, for tests that switch a server off and on.
    """

    scripts: dict[str, list[bool]] = field(default_factory=dict)
    after: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # 503 answers per path
    down: set[str] = field(default_factory=set)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        script = self.scripts.get(name, [])
        up = (script[n] if n < len(script) else self.after) and name not in self.down
        if not up:
            self.failed[name] = self.failed.get(name, 0) + 1
        return web.Response(text="ok") if up else web.Response(status=503, text="down")

    async def __aenter__(self) -> ScriptedHTTP:
        app = web.Application()
        app.router.add_get("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def http_config(
    tmp: Path,
    port: int,
    names: list[str],
    interval: float = 0.2,
    extra: str = "",
    storage: str | None = None,
) -> Path:
    """A config of HTTP checks; ``storage`` is the storage line(s), default SQLite in ``tmp``."""
    checks = "\n".join(
        f'      - {{name: {n}, type: http, url: "http://127.0.0.1:{port}/{n}"}}' for n in names
    )
    path = tmp / "probed.yaml"
    path.write_text(
        f"timezone: UTC\n{storage or f'storage: sqlite://{tmp}/probed.db'}\nlisten: 127.0.0.1:0\n"
        f"defaults: {{interval: {interval}s, timeout: {interval * 0.75:.3f}s, failures_to_down: 2}}\n"
        f"{extra}"
        f"services:\n  web:\n    objective: 99.5\n    checks:\n{checks}\n",
        encoding="utf-8",
    )
    return path
