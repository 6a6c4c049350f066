"""Validated exclusion requests, shared by the command line and the HTTP API."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from probed.config import Config
from probed.core.accounting import ExclusionSpan
from probed.core.times import iso, parse_time

Kind = Literal["dos", "maintenance", "other"]
MAX_WINDOW = 366 * 86400.0
# Bidirectional overrides reorder what a terminal shows ("Trojan Source").
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _printable(value: str) -> str:
    """Reports print ``reason`` and ``by`` on terminals and in Markdown: an ESC, a CR/LF
    or a NUL there could forge report lines, so they are refused, never stored."""
    for ch in value:
        if unicodedata.category(ch) == "Cc" or ch in _BIDI:
            raise ValueError(f"must not contain control characters (found U+{ord(ch):04X})")
    return value


Text = Annotated[str, AfterValidator(_printable)]


class ExclusionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str = Field(min_length=1, max_length=200)
    start: str = Field(min_length=1, max_length=64)
    end: str = Field(min_length=1, max_length=64)
    kind: Kind
    reason: Text = Field(min_length=1, max_length=2000)
    by: Text = Field(min_length=1, max_length=200)


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Text = Field(min_length=1, max_length=2000)
    by: Text = Field(default="api", min_length=1, max_length=200)


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(body)"
    return InvalidRequest(field, str(first["msg"]).removeprefix("Value error, "))


def resolve(request: ExclusionRequest, config: Config) -> tuple[str, float, float]:
    """Check the service and the window; returns (service, start, end) as epoch seconds."""
    if request.service != "*" and request.service not in config.services:
        known = ", ".join(sorted(config.services))
        raise InvalidRequest(
            "service", f'unknown service "{request.service}" (known: {known}, or "*" for all)'
        )
    try:
        start = parse_time(request.start, config.timezone)
    except ValueError as exc:
        raise InvalidRequest("start", str(exc)) from None
    try:
        end = parse_time(request.end, config.timezone)
    except ValueError as exc:
        raise InvalidRequest("end", str(exc)) from None
    if end <= start:
        raise InvalidRequest("end", "the end must be after the start")
    if end - start > MAX_WINDOW:
        raise InvalidRequest("end", "an exclusion is at most one year long")
    return request.service, start, end


def to_json(e: ExclusionSpan) -> dict[str, object]:
    return {
        "id": e.id,
        "service": e.service,
        "start": iso(e.start),
        "end": iso(e.end),
        "kind": e.kind,
        "reason": e.reason,
        "by": e.by,
        "created_at": iso(e.created_at),
        "revoked": e.revoked_at is not None,
        "revoked_at": iso(e.revoked_at),
        "revoked_by": e.revoked_by,
        "revoke_reason": e.revoke_reason,
    }
