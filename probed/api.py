"""The daemon's HTTP server: /metrics, /healthz and the JSON API under /api/v1."""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from probed.core import accounting
from probed.core.times import iso
from probed.daemon.view import DaemonView
from probed.exclusions import (
    ExclusionRequest,
    InvalidRequest,
    RevokeRequest,
    from_validation_error,
    resolve,
    to_json,
)
from probed.hooks.base import Envelope
from probed.httplog import BadRequestLog
from probed.logs import log
from probed.reports.figures import month_report
from probed.reports.html import gather_extras, render_html
from probed.reports.render import MonthReport, to_json_dict
from probed.store.base import AlreadyRevoked, NewExclusion, StorageError, UnknownExclusion
from probed.web.routes import StatusRoutes

MAX_BODY = 64 * 1024
SHUTDOWN_GRACE = 1.0  # seconds for API requests in flight when the daemon stops


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


class ApiServer:
    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        self.app.add_routes(
            [
                web.get("/metrics", self.metrics),
                web.get("/healthz", self.healthz),
                web.get("/api/v1/status", self.status),
                web.get("/api/v1/report", self.report),
                web.get("/api/v1/exclusions", self.list_exclusions),
                web.post("/api/v1/exclusions", self.add_exclusion),
                web.post("/api/v1/exclusions/{id}/revoke", self.revoke_exclusion),
                web.get("/-/reload", self.reload_state),
                web.post("/-/reload", self.reload),
            ]
        )
        StatusRoutes(daemon).install(self.app)  # /status, /badge: the published face
        # requests in flight at shutdown get SHUTDOWN_GRACE, not aiohttp's 60 s: SIGTERM must
        # end the daemon within the longest test timeout + 1 s
        self.runner = web.AppRunner(
            self.app, access_log=None, logger=BadRequestLog(), shutdown_timeout=SHUTDOWN_GRACE
        )
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here (port 0 in tests)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        await self.runner.cleanup()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body larger than {MAX_BODY} bytes")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise
        except StorageError as exc:
            log.error("api.storage_failed", path=request.path, reason=str(exc))
            return _error(503, f"the store failed: {exc}")

    # ------------------------------------------------------------ reads

    async def metrics(self, request: web.Request) -> web.Response:
        body = await self.daemon.metrics_body()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        problems = self.daemon.health_problems()
        store_problem = await self.daemon.store.writable()
        if store_problem and store_problem not in problems:
            problems.append(store_problem)
        if problems:
            return web.Response(status=503, text="; ".join(problems) + "\n")
        return web.Response(text="ok\n")

    async def status(self, request: web.Request) -> web.Response:
        d = self.daemon
        services = []
        watch = d.recorder.quorum
        for service in d.config.services.values():
            checks = []
            located = (
                await watch.states(service.name, service.checks, time.time())
                if watch is not None and watch.active
                else {}
            )
            for check in service.checks:
                state = d.recorder.checks.get((service.name, check.name))
                run = state.tracker.run if state else None
                checks.append(
                    located.get(check.name, {})
                    | {
                        "check": check.name,
                        "type": check.type,
                        "target": check.target(),
                        "interval_seconds": check.interval,
                        "timeout_seconds": check.timeout,
                        "state": "down"
                        if state and state.tracker.in_outage
                        else ("failing" if run else "up"),
                        "failed_tests": run.count if run else 0,
                    }
                )
            outages = [
                {
                    "check": name,
                    "start": iso(run.first_at),
                    "last_failed": iso(run.last_at),
                    "failed_tests": run.count,
                    "reasons": list(run.reasons),
                    "id": run.outage_id,
                }
                for name, run in d.recorder.open_outages(service.name)
            ]
            services.append(
                {
                    "service": service.name,
                    "up": d.recorder.service_up().get(service.name, True),
                    "objective": service.policy.objective,
                    "checks": checks,
                    "open_outages": outages,
                }
            )
        hooks = await self._hooks_status()
        return web.json_response(
            {"generated_at": iso(time.time()), "services": services, "hooks": hooks}
        )

    async def _hooks_status(self) -> list[dict[str, Any]]:
        """Per hook: events waiting, and the latest dead letters with their reasons.

        Both are null while the store cannot be read (PostgreSQL down): the rest of
        the status is the daemon's memory and answers anyway."""
        store = self.daemon.store
        try:
            waiting = await store.undelivered()
            letters = await store.dead_letters()
        except StorageError:
            unknown = {"undelivered": None, "dead_letters": None}
            return [{"hook": h.name} | unknown for h in self.daemon.config.hooks]
        dead: dict[str, list[dict[str, Any]]] = {}
        for letter in letters:
            event = Envelope.loads(letter.payload).event
            dead.setdefault(letter.hook, []).append(
                {
                    "id": letter.id,
                    "kind": event.kind,
                    "service": event.service,
                    "created_at": iso(letter.created_at),
                    "dead_at": iso(letter.dead_at),
                    "attempts": letter.attempts,
                    "reason": letter.reason,
                }
            )
        names = [*(h.name for h in self.daemon.config.hooks), *sorted(set(dead) | set(waiting))]
        return [
            {"hook": name, "undelivered": waiting.get(name, 0), "dead_letters": dead.get(name, [])}
            for name in dict.fromkeys(names)
        ]

    async def report(self, request: web.Request) -> web.Response:
        d = self.daemon
        now = time.time()
        month = request.query.get("month") or accounting.month_of(now, d.config.timezone)
        service = request.query.get("service")
        try:
            accounting.parse_month(month)
        except ValueError as exc:
            return _error(400, str(exc), "month")
        if service is not None and service not in d.config.services:
            return _error(404, f'unknown service "{service}"', "service")
        figures = await month_report(d.store, d.config, month, now, service)
        report = MonthReport(
            month=month, timezone=d.config.timezone, generated_at=now, services=tuple(figures)
        )
        if request.query.get("format") == "html":
            extras = await gather_extras(d.store, d.config, report, now)
            return web.Response(text=render_html(report, extras, now), content_type="text/html")
        return web.json_response(to_json_dict(report))

    async def list_exclusions(self, request: web.Request) -> web.Response:
        d = self.daemon
        window = None
        if "month" in request.query:
            try:
                window = accounting.month_period(request.query["month"], d.config.timezone)
            except ValueError as exc:
                return _error(400, str(exc), "month")
        include_revoked = request.query.get("revoked", "true") != "false"
        rows = [
            to_json(e)
            for e in await d.store.exclusions(window)
            if include_revoked or e.revoked_at is None
        ]
        return web.json_response({"exclusions": rows})

    # ----------------------------------------------------------- writes

    def _authorized(self, request: web.Request) -> web.Response | None:
        token = self.daemon.config.api_token
        if token is None:
            return _error(403, "the write API is disabled: set api_token_file in the config")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # The scheme is case-insensitive (RFC 9110); only the token is secret.
        matches = hmac.compare_digest(given.strip().encode(), token.encode())
        if scheme.lower() != "bearer" or not matches:
            return _error(401, "missing or wrong bearer token")
        return None

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            raise InvalidRequest("(body)", "malformed JSON") from None
        if not isinstance(body, dict):
            raise InvalidRequest("(body)", "expected a JSON object")
        return body

    async def add_exclusion(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied:
            return denied
        d = self.daemon
        try:
            body = await self._json_body(request)
            try:
                parsed = ExclusionRequest.model_validate(body)
            except ValidationError as exc:
                raise from_validation_error(exc) from None
            service, start, end = resolve(parsed, d.config)
        except InvalidRequest as exc:
            return _error(400, exc.message, exc.field)
        new = NewExclusion(service, start, end, parsed.kind, parsed.reason, parsed.by)
        stored = await d.store.add_exclusion(new)
        log.info("exclusion.added", id=stored.id, service=service, kind=parsed.kind, by=parsed.by)
        await d.exclusions_changed()
        return web.json_response(to_json(stored), status=201)

    async def revoke_exclusion(self, request: web.Request) -> web.Response:
        denied = self._authorized(request)
        if denied:
            return denied
        d = self.daemon
        raw_id = request.match_info["id"]
        if not (raw_id.isascii() and raw_id.isdigit() and len(raw_id) <= 18):
            # bounded: SQLite integers are 64-bit and overflow would be a 500
            return _error(400, "the exclusion id is a number", "id")
        exclusion_id = int(raw_id)
        try:
            body = await self._json_body(request)
            try:
                parsed = RevokeRequest.model_validate(body)
            except ValidationError as exc:
                raise from_validation_error(exc) from None
        except InvalidRequest as exc:
            return _error(400, exc.message, exc.field)
        try:
            stored = await d.store.revoke_exclusion(
                exclusion_id, by=parsed.by, reason=parsed.reason
            )
        except UnknownExclusion as exc:
            return _error(404, str(exc), "id")
        except AlreadyRevoked as exc:
            return _error(409, str(exc), "id")
        log.info("exclusion.revoked", id=exclusion_id, by=parsed.by)
        await d.exclusions_changed()
        return web.json_response(to_json(stored))

    # ----------------------------------------------------------- reload

    def _reload_json(self) -> dict[str, Any]:
        state = self.daemon.reloads
        return {
            "generation": state.generation,
            "status": "applied" if state.successful else "refused",
            "problems": list(state.problems),
        }

    async def reload_state(self, request: web.Request) -> web.Response:
        """The last reload's verdict: what `probed reload` polls after its SIGHUP."""
        return web.json_response(self._reload_json())

    async def reload(self, request: web.Request) -> web.Response:
        """Reload now; answers when the new config is applied (200) or refused (422)."""
        denied = self._authorized(request)
        if denied:
            return denied
        applied = await self.daemon.reload()
        return web.json_response(self._reload_json(), status=200 if applied else 422)
