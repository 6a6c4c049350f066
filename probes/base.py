"""The probe interface: a check's config model, a frozen result, a transcript.

A probe module holds one protocol dialogue and nothing else. The scheduler
owns timeouts, timing, storage, metrics and logging: it wraps every call in
``asyncio.timeout(check.timeout)`` and turns any exception a probe raises into
a failed test whose reason comes from :func:`describe_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import math
import os
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from probed.core.quorum import Quorum
from probed.core.quorum import validate as parse_quorum

DetailValue: TypeAlias = str | int | float | bool | None

_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,12})?)\s*(ms|s|m|h)?\s*$")
MAX_DURATION = 7 * 86400.0  # a week: no interval, timeout or window of probed is longer
MAX_FAILURES_TO_DOWN = 1000
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """``500ms``, ``30s``, ``5m``, ``1h`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f'expected a duration like 30s, got "{value}"')
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_DURATION:  # also refuses NaN and infinity
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise ValueError(
            f"expected a duration above 0 and at most 168h ({MAX_DURATION:g}s) like 30s, got {shown}"
        )
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
# How many probing locations must agree before the check is down (docs: "Several locations").
QuorumSetting = Annotated[Quorum, BeforeValidator(parse_quorum)]


def number_in(low: float, high: float, *, whole: bool = False, above: bool = False) -> Any:
    """A validator refusing NaN, infinities and numbers outside ``low..high``, naming the range.

    ``above``: ``low`` itself is excluded. Other types are left to the field's own type.
    """
    kind = "a whole number" if whole else "a number"
    lo, hi = (int(x) if float(x).is_integer() else x for x in (low, high))
    span = f"above {lo} and at most {hi}" if above else f"from {lo} to {hi}"

    def check(value: object) -> object:
        if isinstance(value, str):  # "1e30" in quotes: still a number, still out of range
            try:
                value = float(value)
            except ValueError:
                return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        inside = (low < value if above else low <= value) and value <= high
        if not (math.isfinite(value) and inside and (not whole or float(value).is_integer())):
            raise ValueError(f"expected {kind} {span}, got {value!r}")
        return int(value) if whole else value

    return BeforeValidator(check)


FailuresToDown = Annotated[int, number_in(1, MAX_FAILURES_TO_DOWN, whole=True)]


def _compile_regex(value: object) -> object:
    if isinstance(value, str):
        try:
            return re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression /{value}/: {exc}") from None
    return value


# A regular expression compiled when the config loads, so a typo is a config error.
Regex = Annotated[re.Pattern[str], BeforeValidator(_compile_regex)]


class ProbeFailure(Exception):
    """A protocol-level failure; its message is the test's reason verbatim."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one run of a probe found. Duration is measured by the scheduler."""

    ok: bool
    reason: str = ""
    details: Mapping[str, DetailValue] = field(default_factory=dict)

    @classmethod
    def passed(cls, **details: DetailValue) -> ProbeResult:
        return cls(ok=True, details=details)

    @classmethod
    def failed(cls, reason: str, **details: DetailValue) -> ProbeResult:
        return cls(ok=False, reason=reason, details=details)


class Transcript:
    """The protocol dialogue of one run, with every known secret masked.

    ``probed probe`` prints it; the daemon keeps only the last lines of a
    failed test's transcript (bounded), so a hostile server cannot grow it.
    """

    MAX_LINES: ClassVar[int] = 200
    MAX_LINE: ClassVar[int] = 300

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self._secrets = tuple(s for s in secrets if s)
        self.lines: list[str] = []

    def _add(self, prefix: str, text: str) -> None:
        for secret in self._secrets:
            text = text.replace(secret, "********")
        if len(text) > self.MAX_LINE:
            text = text[: self.MAX_LINE] + f"... ({len(text)} chars)"
        if len(self.lines) >= self.MAX_LINES:
            del self.lines[0]
        self.lines.append(f"{prefix} {text}")

    def client(self, text: str) -> None:
        """A line the probe sent (``C: EHLO probe``)."""
        self._add("C:", text)

    def server(self, text: str) -> None:
        """A line the server sent (``S: 220 mx ready``)."""
        self._add("S:", text)

    def note(self, text: str) -> None:
        """Something the probe observed (``*  TLS 1.3, certificate expires ...``)."""
        self._add("*", text)


@dataclass(frozen=True, slots=True)
class LoadContext:
    """How the config being validated resolves paths and whether it reads secrets."""

    base: Path | None = None  # the config file's directory
    read_secrets: bool = True


_LOADING: ContextVar[LoadContext] = ContextVar(
    "probed_config_loading",
    default=LoadContext(),  # noqa: B039  # a frozen dataclass, never mutated
)


@contextlib.contextmanager
def loading(base: Path | None, *, read_secrets: bool = True) -> Iterator[None]:
    """Validate config models relative to ``base``; ``read_secrets=False`` for commands that
    do not probe (report, exclude, reload), which must work without the probes' secrets."""
    token = _LOADING.set(LoadContext(base, read_secrets))
    try:
        yield
    finally:
        _LOADING.reset(token)


def reads_secrets() -> bool:
    return _LOADING.get().read_secrets


def config_path(path: str) -> Path:
    """A path from the config: relative ones are relative to the config file's directory."""
    base = _LOADING.get().base
    candidate = Path(path)
    return candidate if candidate.is_absolute() or base is None else base / candidate


def _existing_ca_file(value: str | None) -> str | None:
    if value is None:
        return None
    resolved = config_path(value)
    if not resolved.is_file():
        raise ValueError(f"ca_file {value} does not exist")
    return str(resolved)


# A PEM file of CAs to trust, resolved against the config file's directory when relative.
CaFile = Annotated[str | None, AfterValidator(_existing_ca_file)]


def read_secret(path: str) -> str:
    """Read a secret file; relative names are looked up in systemd's credentials first,
    then relative to the config file's directory."""
    candidate = config_path(path)
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not Path(path).is_absolute() and cred_dir and (Path(cred_dir) / path).is_file():
        candidate = Path(cred_dir) / path
    try:
        return candidate.read_text(encoding="utf-8").strip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path}: {exc.strerror or exc}") from None


class CheckBase(BaseModel):
    """Fields every check has. Each probe module subclasses it with its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    type: str
    interval: Duration = 60.0
    timeout: Duration = 10.0
    failures_to_down: FailuresToDown = 2
    quorum: QuorumSetting = 1

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> CheckBase:
        if self.timeout >= self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be shorter than interval ({self.interval:g}s)"
            )
        return self

    def secrets(self) -> tuple[str, ...]:
        """Values to mask in transcripts and logs."""
        return ()

    def target(self) -> str:
        """A short human description of what is probed (``mx1:25``)."""
        return self.name


class Credentials(BaseModel):
    """``username`` with ``password_file`` (or a systemd credential name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str | None = None
    password_file: str | None = None
    password: str | None = Field(default=None, exclude=True, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _load_password(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "password" in data:
                raise ValueError("inline passwords are not allowed: use password_file")
            if data.get("password_file") and reads_secrets():
                data = {**data, "password": read_secret(str(data["password_file"]))}
        return data

    @model_validator(mode="after")
    def _pair(self) -> Credentials:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        return self


class TLSOptions(BaseModel):
    """``tls`` (implicit), ``starttls`` (upgrade), ``ca_file``, ``tls_verify``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tls: bool = False
    starttls: bool = False
    tls_verify: bool = True
    ca_file: CaFile = None

    @model_validator(mode="after")
    def _one_mode(self) -> TLSOptions:
        if self.tls and self.starttls:
            raise ValueError("choose tls (implicit TLS) or starttls, not both")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """A shared, cached context (building one costs ~15 ms); never modify it."""
        return shared_ssl_context(verify=self.tls_verify, ca_file=self.ca_file)


class MailEndpoint(TLSOptions, Credentials):
    """A mail server to talk to: host, and a port that defaults by TLS mode.

    Shared by the smtp, pop3 and imap checks and both legs of mailflow, so
    that each protocol only states its ports and whether it needs a login.
    """

    PLAIN_PORT: ClassVar[int] = 0
    TLS_PORT: ClassVar[int] = 0  # implicit TLS (465, 995, 993)
    NEEDS_LOGIN: ClassVar[str] = ""  # when set: the error for a missing username

    host: str = Field(min_length=1, pattern=r"^\S+$")
    port: int = Field(ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("port") is None:
            return {**data, "port": cls.TLS_PORT if data.get("tls") is True else cls.PLAIN_PORT}
        return data

    @model_validator(mode="after")
    def _needs_login(self) -> MailEndpoint:
        if self.NEEDS_LOGIN and self.username is None:
            raise ValueError(self.NEEDS_LOGIN)
        return self

    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


def make_ssl_context(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """A client context: verification on unless explicitly disabled (lab use)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def shared_ssl_context(*, verify: bool = True, ca_file: str | None = None) -> ssl.SSLContext:
    """Like :func:`make_ssl_context`, built once per (verify, ca_file, file version).

    Building a context loads the CA store, ~15 ms of CPU: at 1000 tests a second
    that cost would exceed a core. A context is safe to share between
    connections; callers must not modify the one they get.
    """
    version = os.stat(ca_file).st_mtime_ns if ca_file else 0
    return _cached_ssl_context(verify, ca_file, version)


@functools.lru_cache(maxsize=64)
def _cached_ssl_context(verify: bool, ca_file: str | None, _version: int) -> ssl.SSLContext:
    return make_ssl_context(verify=verify, ca_file=ca_file)


def certificate_details(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, DetailValue]:
    """TLS version and peer certificate expiry (epoch seconds) when verified."""
    if ssl_object is None:
        return {}
    details: dict[str, DetailValue] = {"tls_version": ssl_object.version()}
    cert = ssl_object.getpeercert()
    if cert and "notAfter" in cert:
        details["cert_not_after"] = float(ssl.cert_time_to_seconds(str(cert["notAfter"])))
    return details


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EPIPE: "connection closed by peer",
}


# What a probe meets when a server or the network misbehaves: a failed test with a
# short reason. Any other exception type is a bug in probed (see run_test).
EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    ProbeFailure,
    OSError,  # refused, reset, unreachable, DNS, TLS (ssl.SSLError), TimeoutError
    EOFError,  # asyncio.IncompleteReadError: the server closed mid-answer
    asyncio.LimitOverrunError,  # a line beyond a stream's limit
)


def describe_error(exc: BaseException) -> str:
    """Turn an exception from a probe into a short, precise reason."""
    if isinstance(exc, ProbeFailure):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {(exc.strerror or str(exc)).lower()}"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by server"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):  # asyncio raises some without an errno
        return "connection reset by peer"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


ProbeFunc: TypeAlias = Callable[[Any, Transcript], Awaitable[ProbeResult]]


@dataclass(frozen=True, slots=True)
class ProbeType:
    """A registry entry: the check's config model and the probe coroutine."""

    name: str
    config: type[CheckBase]
    run: ProbeFunc
