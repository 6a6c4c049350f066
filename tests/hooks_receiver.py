"""A loopback HTTP receiver for hook tests: records every POST, answers ``status``."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def free_port() -> int:
    """A port nothing listens on (yet): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Receiver:
    port: int = 0
    status: int = 200
    requests: list[Received] = field(default_factory=list)
    # per request: a status to refuse this body with (None: accept it); seen lists them all
    refuse: Callable[[Any], int | None] | None = None
    seen: list[Any] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.status != 200:
            return web.Response(status=self.status, text="receiver is down for maintenance")
        if self.refuse is not None:
            self.seen.append(json.loads(body))
            status = self.refuse(self.seen[-1])
            if status is not None:
                return web.Response(status=status, text="no such tenant")
        self.requests.append(Received(request.path, dict(request.headers), body))
        return web.Response(text="ok")

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.json() for r in self.requests if path is None or r.path == path]

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"
