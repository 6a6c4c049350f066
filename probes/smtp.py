"""SMTP: the 220 banner and EHLO, optional STARTTLS and AUTH, an optional envelope test, QUIT.

The SLA counts a mail server as available when it hands out its SMTP headers:
the banner and the EHLO reply. With ``mail_from``/``rcpt_to`` the probe also
asks whether the envelope would be accepted (MAIL FROM, RCPT TO, then RSET).
It never sends DATA, so a probe never queues a message.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPResponse
from pydantic import Field, model_validator

from probes.base import (
    CheckBase,
    MailEndpoint,
    ProbeFailure,
    ProbeResult,
    ProbeType,
    Transcript,
    certificate_details,
    describe_error,
)

# Not the machine's FQDN (aiosmtplib's default): socket.getfqdn() is a blocking
# DNS lookup that can eat the test's timeout, often yields "localhost" or a bare
# name that receivers with reject_non_fqdn_helo_hostname refuse, and makes one
# check behave differently on each probe host. ".localhost" is reserved (RFC
# 6761), so the default is a valid FQDN that never claims somebody else's name.
# Where receivers demand a name with DNS, set helo_name.
DEFAULT_HELO_NAME = "probed.localhost"

_HELO_NAME = r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*[A-Za-z0-9-]+$|^\[[0-9A-Za-z:.]+\]$"
_ADDRESS = r"^[^\s<>]*$"


class SmtpCheck(CheckBase, MailEndpoint):
    PLAIN_PORT, TLS_PORT = 25, 465

    type: Literal["smtp"]
    helo_name: str = Field(default=DEFAULT_HELO_NAME, max_length=255, pattern=_HELO_NAME)
    mail_from: str | None = Field(default=None, pattern=_ADDRESS)  # "" is the null sender <>
    rcpt_to: str | None = Field(default=None, min_length=1, pattern=_ADDRESS)

    @model_validator(mode="after")
    def _envelope_pair(self) -> SmtpCheck:
        if (self.mail_from is None) != (self.rcpt_to is None):
            raise ValueError("mail_from and rcpt_to go together (the envelope test)")
        return self

    def secrets(self) -> tuple[str, ...]:
        if not self.password:
            return ()
        # AUTH sends base64, which a plain-text mask would miss: PLAIN's
        # "\0user\0password" and LOGIN's password line.
        plain = f"\0{self.username}\0{self.password}".encode()
        return (
            self.password,
            base64.b64encode(plain).decode(),
            base64.b64encode(self.password.encode()).decode(),
        )

    def target(self) -> str:
        return f"{self.host}:{self.port}"


async def probe(check: SmtpCheck, transcript: Transcript) -> ProbeResult:
    # timeout=None: the scheduler's asyncio.timeout is the one deadline.
    smtp = aiosmtplib.SMTP(
        hostname=check.host,
        port=check.port,
        local_hostname=check.helo_name,
        timeout=None,
        use_tls=check.tls,
        start_tls=False,
        tls_context=check.ssl_context() if check.tls or check.starttls else None,
    )
    try:
        return await _dialogue(smtp, check, transcript)
    except aiosmtplib.SMTPException as exc:
        raise ProbeFailure(smtp_reason(exc)) from exc
    finally:
        # Abort, not close: asyncio's graceful TLS close waits up to 30 s for the
        # peer's close_notify, and the test is over once QUIT is answered.
        if isinstance(smtp.transport, asyncio.Transport):
            smtp.transport.abort()
        smtp.close()


async def _dialogue(smtp: aiosmtplib.SMTP, check: SmtpCheck, transcript: Transcript) -> ProbeResult:
    transcript.note(f"connect {check.target()}{' (implicit TLS)' if check.tls else ''}")
    banner = await _exchange(transcript, "greeting", None, smtp.connect())
    extensions = await _ehlo(smtp, check, transcript)
    if check.starttls:
        if not smtp.supports_extension("starttls"):
            raise ProbeFailure("SMTP server does not offer STARTTLS")
        await _exchange(transcript, "STARTTLS", "STARTTLS", smtp.starttls())
        extensions = await _ehlo(smtp, check, transcript)  # RFC 3207: forget pre-TLS state
    tls = certificate_details(smtp.get_transport_info("ssl_object"))
    if tls:
        transcript.note(", ".join(f"{key}={value}" for key, value in tls.items()))
    if check.username is not None and check.password is not None:
        await _authenticate(smtp, check.username, check.password, transcript)
    if check.mail_from is not None and check.rcpt_to is not None:
        await _exchange(
            transcript, "MAIL FROM", f"MAIL FROM:<{check.mail_from}>", smtp.mail(check.mail_from)
        )
        await _exchange(
            transcript, "RCPT TO", f"RCPT TO:<{check.rcpt_to}>", smtp.rcpt(check.rcpt_to)
        )
        await _exchange(transcript, "RSET", "RSET", smtp.rset())
    await _quit(smtp, transcript)
    return ProbeResult.passed(
        banner=banner.message.split("\n", 1)[0], extensions=",".join(extensions), **tls
    )


async def _ehlo(smtp: aiosmtplib.SMTP, check: SmtpCheck, transcript: Transcript) -> list[str]:
    """EHLO; HELO only when EHLO is not understood (RFC 5321 4.1.4). Extension names."""
    try:
        reply = await _exchange(
            transcript, "EHLO", f"EHLO {check.helo_name}", smtp.ehlo(hostname=check.helo_name)
        )
    except ProbeFailure as failure:
        cause = failure.__cause__
        if not isinstance(cause, aiosmtplib.SMTPHeloError) or cause.code not in (500, 502):
            raise
        await _exchange(
            transcript, "HELO", f"HELO {check.helo_name}", smtp.helo(hostname=check.helo_name)
        )
        return []
    names = (
        line.split(maxsplit=1)[0].upper() for line in reply.message.split("\n")[1:] if line.strip()
    )
    return list(dict.fromkeys(names))


async def _authenticate(
    smtp: aiosmtplib.SMTP, username: str, password: str, transcript: Transcript
) -> None:
    if not smtp.supports_extension("auth"):
        raise ProbeFailure("SMTP server does not offer AUTH")
    methods = smtp.server_auth_methods
    # The payload is written masked here, whatever secrets the transcript knows.
    if "plain" in methods:
        call = smtp.auth_plain(username, password)
        await _exchange(transcript, "AUTH", "AUTH PLAIN ********", call)
    elif "login" in methods:
        call = smtp.auth_login(username, password)
        await _exchange(transcript, "AUTH", "AUTH LOGIN ********", call)
    else:
        offered = " ".join(methods).upper() or "none"
        raise ProbeFailure(f"SMTP AUTH failed: no PLAIN or LOGIN mechanism (offered: {offered})")


async def _quit(smtp: aiosmtplib.SMTP, transcript: Transcript) -> None:
    """QUIT politely. The server has answered everything the test asks by now, so a
    refused or dropped QUIT is noted, not failed (a hang still runs into the timeout)."""
    try:
        # execute_command, not quit(): quit() closes gracefully (see probe()).
        await _exchange(transcript, "QUIT", "QUIT", smtp.execute_command(b"QUIT"))
    except (ProbeFailure, aiosmtplib.SMTPException) as exc:
        reason = str(exc) if isinstance(exc, ProbeFailure) else smtp_reason(exc)
        transcript.note(f"ignored at QUIT: {reason}")


async def _exchange(
    transcript: Transcript, step: str, command: str | None, call: Awaitable[SMTPResponse]
) -> SMTPResponse:
    """One command and its reply, both recorded; a refusal becomes the step's reason."""
    if command is not None:
        transcript.client(command)
    try:
        reply = await call
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code < 0:  # aiosmtplib's marker for a reply it could not parse
            raise ProbeFailure(_garbled(step, exc.message)) from exc
        _record(transcript, exc.code, exc.message)
        raise ProbeFailure(_refused(step, exc.code, exc.message)) from exc
    _record(transcript, reply.code, reply.message)
    return reply


def _record(transcript: Transcript, code: int, message: str) -> None:
    lines = message.split("\n")
    for i, line in enumerate(lines):
        transcript.server(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}")


_REFUSED = {"greeting": "SMTP ", "AUTH": "SMTP AUTH failed: "}


def _refused(step: str, code: int, message: str) -> str:
    """``SMTP 421 too many connections``, ``SMTP RCPT TO refused: 550 5.1.1 ...``."""
    prefix = _REFUSED.get(step, f"SMTP {step} refused: ")
    return f"{prefix}{code} {' '.join(message.split())}"


def _garbled(step: str, message: str) -> str:
    if message == "Response too long":  # a line over 8 KiB or a reply over 32 KiB
        return "SMTP line too long"
    line = message.removeprefix("Malformed SMTP response line:").strip()
    return f"SMTP {step} malformed: {line[:80]!r}"


def smtp_reason(exc: aiosmtplib.SMTPException) -> str:
    """A short reason for an aiosmtplib error that is not a server's refusal."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code < 0:
            return _garbled("reply", exc.message)
        return _refused("greeting", exc.code, exc.message)
    upgrading = "while upgrading transport" in exc.message
    cause = exc.__cause__
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected) or isinstance(
        cause, aiosmtplib.SMTPServerDisconnected
    ):
        return (
            "TLS handshake failed: connection closed"
            if upgrading
            else "connection closed by server"
        )
    if upgrading:  # SSLProtocol aborts a handshake the peer never completes
        return "TLS handshake failed: connection aborted"
    if isinstance(cause, OSError):  # connect() wraps refused, unreachable, TLS errors
        return describe_error(cause)
    return f"SMTP {exc.message}"


PROBE = ProbeType(name="smtp", config=SmtpCheck, run=probe)
