"""The hook interface: a config model with filters, one immutable envelope, a transport.

A transport module holds one delivery dialogue and nothing else: the
dispatcher owns the outbox, ordering, retries, timeouts and logging. It wraps
every ``send`` in ``asyncio.timeout(config.timeout)`` and turns whatever a
transport raises into a short reason with :func:`describe`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import aiohttp
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from yarl import URL

from probed.core.events import Event, EventKind, Severity
from probed.core.times import iso
from probes.base import Duration, describe_error

# outage_extended fires on every failed test of an open outage: opt-in only.
DEFAULT_EVENTS: tuple[EventKind, ...] = (
    "outage_opened",
    "outage_closed",
    "service_down",
    "service_up",
    "budget_threshold",
    "objective_missed",
)
_RANK: dict[Severity, int] = {"P1": 1, "P2": 2, "P3": 3}


class HookError(Exception):
    """A delivery failed; the message is the reason, verbatim."""


class PermanentHookError(HookError):
    """The receiver refused the event for good (HTTP 400, 401, 403, 404, 410; exec exit 2):
    retrying cannot help, so the event is dead-lettered and the hook goes on."""


PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 410})


class HookConfig(BaseModel):
    """Fields every hook has: which events reach it, and how long a delivery may take."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: str
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    events: tuple[EventKind, ...] = Field(default=DEFAULT_EVENTS, min_length=1)
    services: tuple[str, ...] = ()  # empty: every service
    min_severity: Severity = "P3"  # P1 only the global outages, P3 everything
    timeout: Duration = 10.0
    max_age: Duration | None = None  # undelivered this long after the event: dead-lettered
    # exclusion kinds during which this hook says nothing about the services they cover
    mute_during: tuple[Literal["dos", "maintenance", "other"], ...] = ("maintenance",)

    def accepts(self, event: Event) -> bool:
        return (
            event.kind in self.events
            and (not self.services or event.service in self.services)
            and _RANK[event.severity] <= _RANK[self.min_severity]
        )


def _http_url(url: str) -> str:
    parsed = URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f'expected an http:// or https:// URL like https://example.net/, got "{url}"'
        )
    return url


HttpUrl = Annotated[str, AfterValidator(_http_url)]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event on its way to one hook. ``id`` is the same for every hook (idempotency key)."""

    id: str
    event: Event

    def payload(self) -> dict[str, Any]:
        """The public JSON every transport sends (webhook body, exec stdin)."""
        e = self.event
        return {
            "id": self.id,
            "event": e.kind,
            "service": e.service,
            "check": e.check,
            "severity": e.severity,
            "summary": e.summary,
            "at": iso(e.at),
            "start": iso(e.start),
            "end": iso(e.end),
            "outage_id": e.outage_id,
            "failed_tests": e.failed_tests,
            "downtime_seconds": e.downtime_seconds,
            "reasons": list(e.reasons),
            "extra": dict(e.extra),
        }

    def dumps(self) -> str:
        """The outbox form: lossless (epoch seconds), not the public payload."""
        return json.dumps({"id": self.id, "event": dataclasses.asdict(self.event)})

    @classmethod
    def loads(cls, text: str) -> Envelope:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(Event)}
        fields = {k: v for k, v in data["event"].items() if k in known}
        fields["reasons"] = tuple(fields.get("reasons", ()))
        return cls(id=str(data["id"]), event=Event(**fields))


class Hook(Protocol):
    """A transport: deliver one envelope or raise (HookError with a reason, or any I/O error)."""

    async def send(self, envelope: Envelope) -> None: ...


@runtime_checkable
class Resending(Protocol):
    """A transport whose receiver forgets state unless reminded (Alertmanager).

    The dispatcher replays the hook's delivered envelopes into ``restore`` at
    start and calls ``resend`` every ``resend_every`` seconds while it is idle.
    """

    resend_every: float

    def restore(self, delivered: Sequence[Envelope]) -> None: ...

    async def resend(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HookType:
    """A registry entry: the hook's config model and how to build its transport."""

    name: str
    config: type[HookConfig]
    build: Callable[[Any, aiohttp.ClientSession], Hook]  # Any: the entry's own config model


def describe(exc: BaseException, timeout: float) -> str:
    """Whatever a delivery raised, as a short reason for the log and the outbox."""
    if isinstance(exc, HookError):
        return str(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timeout after {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return describe_error(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed before response"
    return describe_error(exc)


async def post_json(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> None:
    """POST a JSON body; anything but a 2xx answer is a HookError naming the status."""
    headers = {"Content-Type": "application/json", **headers}
    async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
        if not 200 <= response.status < 300:
            text = (await response.text(errors="replace")).strip().splitlines()
            detail = f": {text[0][:200]}" if text else ""
            error = PermanentHookError if response.status in PERMANENT_STATUSES else HookError
            raise error(f"HTTP {response.status} {response.reason or ''}".rstrip() + detail)
