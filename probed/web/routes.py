"""HTTP surface of the status page: ``/``, ``/status``, its CSS and JS, and the badges.

Everything here is safe to publish behind a reverse proxy: no token, no
transcript, and hosts, ports and failure reasons only for services marked
``public: true``. Handlers read memory only (:mod:`probed.web.board`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from probed.reports.html import availability_text, duration_text, environment
from probed.web.badge import render_badge, service_badge
from probed.web.board import StatusBoard, visible

if TYPE_CHECKING:
    from probed.daemon.view import DaemonView

STATIC = {"status.css": "text/css", "status.js": "text/javascript"}
# The page loads only its own CSS and JS: a published page cannot be made to run
# anyone else's script, even if escaping failed somewhere.
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class StatusRoutes:
    def __init__(self, daemon: DaemonView) -> None:
        self.board = StatusBoard(daemon)
        self.daemon = daemon

    def install(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.get("/", self.root),
                web.get("/status", self.status),
                web.get("/status/static/{name}", self.static),
                web.get("/badge/{service}.svg", self.badge),
            ]
        )
        app.cleanup_ctx.append(self._background)

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self.board.run(), name="status-page-history")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def root(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("status")  # relative: works behind a proxy that adds a prefix

    async def status(self, request: web.Request) -> web.Response:
        page = (
            environment()
            .get_template("status.html.j2")
            .render(
                page=self.board.view(),
                duration=duration_text,
                availability=availability_text,
            )
        )
        return web.Response(text=page, content_type="text/html", headers=HEADERS)

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = resources.files("probed").joinpath("static", name).read_bytes()
        return web.Response(
            body=body,
            content_type=STATIC[name],
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    async def badge(self, request: web.Request) -> web.Response:
        name = request.match_info["service"]
        if not visible(self.daemon.config, name):
            raise web.HTTPNotFound()
        snapshot = self.daemon.accountant.snapshot().services.get(name)
        svg = render_badge(service_badge(name, snapshot.month_to_date if snapshot else None))
        return web.Response(
            text=svg,
            content_type="image/svg+xml",
            headers={"Cache-Control": "max-age=60", "X-Content-Type-Options": "nosniff"},
        )
