"""Mailflow: send a message over SMTP, wait until it is in the mailbox, delete it.

The round trip an SLA means by "mail works": the probe logs in to the
mailbox first (a receive leg that cannot log in would only leave mail behind),
sends a small message whose Subject carries a unique token, then polls the
mailbox (IMAP ``UID SEARCH HEADER Subject``, or POP3 ``UIDL`` + ``TOP``) every
``poll_interval`` until the token shows up, and deletes what it sent.

``timeout`` is the delivery deadline. The probe reports "not delivered within
..." itself, a little before the scheduler's hard cut-off, so the reason names
what went wrong instead of a bare ``timeout after ...``. ``delivery_seconds``
(from the server's 250 after DATA to the poll that saw the message) feeds
the ``probed_mailflow_delivery_seconds`` histogram.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import uuid
from collections.abc import Awaitable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Annotated, Literal, Protocol, TypeVar

import aiosmtplib
from pydantic import Field, model_validator

from probes.base import (
    CheckBase,
    Duration,
    MailEndpoint,
    ProbeFailure,
    ProbeResult,
    ProbeType,
    Transcript,
    describe_error,
    shared_ssl_context,
)
from probes.imap import ImapServer, ImapSession
from probes.pop3 import Pop3Client, Pop3Server
from probes.smtp import DEFAULT_HELO_NAME, smtp_reason

MAX_MARGIN = 1.0  # seconds before the hard timeout at which the probe gives up itself
POP3_SCAN = 50  # newest unseen messages whose headers one POP3 poll reads
MARKER = "X-Probed-Mailflow"  # header on every probe message, for stale clean-up
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
_T = TypeVar("_T")


class SendSettings(MailEndpoint):
    """The SMTP leg: where to submit, as whom, and the envelope."""

    PLAIN_PORT, TLS_PORT = 25, 465  # as for the smtp check

    helo_name: str = Field(default=DEFAULT_HELO_NAME, max_length=255, pattern=r"^[\w.\[\]:-]+$")
    mail_from: str = Field(min_length=3, pattern=r"^[^\s<>]+@[^\s<>]+$")
    rcpt_to: str = Field(min_length=3, pattern=r"^[^\s<>]+@[^\s<>]+$")


class ImapReceive(ImapServer):
    type: Literal["imap"]


class Pop3Receive(Pop3Server):
    type: Literal["pop3"]


class MailflowCheck(CheckBase):
    type: Literal["mailflow"]
    send: SendSettings
    receive: Annotated[ImapReceive | Pop3Receive, Field(discriminator="type")]
    poll_interval: Duration = 2.0

    @model_validator(mode="after")
    def _poll_within_deadline(self) -> MailflowCheck:
        if self.poll_interval >= self.timeout:
            raise ValueError(
                f"poll_interval ({self.poll_interval:g}s) must be shorter than"
                f" timeout ({self.timeout:g}s), the delivery deadline"
            )
        return self

    def secrets(self) -> tuple[str, ...]:
        found = [p for p in (self.send.password, self.receive.password) if p]
        if self.send.password:  # AUTH PLAIN and LOGIN send it base64-encoded
            plain = f"\0{self.send.username}\0{self.send.password}".encode()
            found += [base64.b64encode(plain).decode()]
            found += [base64.b64encode(self.send.password.encode()).decode()]
        return tuple(found)

    def target(self) -> str:
        return f"{self.send.host}:{self.send.port} -> {self.receive.host}:{self.receive.port}"


class _Receiver(Protocol):
    deleted: bool  # False when the message arrived but could not be removed

    async def open(self) -> None: ...  # log in once before sending: the leg works
    async def take(self, token: str) -> bool: ...  # one poll; deletes the message if found
    async def finish(self) -> None: ...
    def abort(self) -> None: ...


class _ImapReceiver:
    """One session for the whole wait: NOOP lets the server report new mail."""

    def __init__(self, server: ImapServer, transcript: Transcript) -> None:
        self._server = server
        self._transcript = transcript
        self._session: ImapSession | None = None
        self._polled = False
        self.deleted = True

    async def open(self) -> None:
        self._session = await ImapSession.connect(self._server, self._transcript)
        await self._session.login()
        await self._session.open_mailbox(read_only=False)
        # Messages that arrived after an earlier test gave up would pile up.
        day = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
        before = f"{day.day}-{_MONTHS[day.month - 1]}-{day.year}"
        stale = await self._session.uid_search("HEADER", MARKER, '""', "BEFORE", before)
        if stale:
            await self._session.delete(stale)

    async def take(self, token: str) -> bool:
        assert self._session is not None
        if self._polled:
            await self._session.noop()
        self._polled = True
        found = await self._session.uid_search("HEADER", "Subject", token)
        if found:
            try:
                await self._session.delete(found)
            except ProbeFailure as failure:  # delivered is what counts; the rest is noted
                self._transcript.note(f"probe message not deleted: {failure}")
                self.deleted = False
        return bool(found)

    async def finish(self) -> None:
        if self._session is not None:
            await self._session.logout()

    def abort(self) -> None:
        if self._session is not None:
            self._session.close()


class _Pop3Receiver:
    """A new session per poll: a POP3 session never shows mail that arrives during it."""

    def __init__(self, server: Pop3Receive, transcript: Transcript) -> None:
        self._server = server
        self._transcript = transcript
        self._client: Pop3Client | None = None
        self._scanned: set[str] = set()
        self.deleted = True

    async def _login(self) -> Pop3Client:
        server = self._server
        context = (
            shared_ssl_context(verify=server.tls_verify, ca_file=server.ca_file)
            if server.tls or server.starttls
            else None
        )
        self._transcript.note(f"connect {server.host}:{server.port}")
        self._client = client = await Pop3Client.connect(
            server.host,
            server.port,
            ssl_context=context if server.tls else None,
            transcript=self._transcript,
        )
        if context is not None and server.starttls:
            await client.stls(context, server.host)
        await client.login(server.username or "", server.password or "")
        return client

    async def open(self) -> None:
        client = await self._login()
        self._scanned.update((await client.uidl()).values())  # nothing there yet is ours
        await client.quit()

    async def take(self, token: str) -> bool:
        client = await self._login()
        found = await self._find(client, token)
        try:
            if found is not None:
                await client.dele(found)
            await client.quit()  # commits DELE
        except (ProbeFailure, OSError) as exc:
            if found is None:
                raise
            self._transcript.note(f"probe message not deleted: {describe_error(exc)}")
            self.deleted = False
        return found is not None

    async def _find(self, client: Pop3Client, token: str) -> int | None:
        """The number of the message with ``token``, reading each header once per test."""
        listing = sorted((await client.uidl()).items(), reverse=True)  # newest first
        fresh = [(n, uid) for n, uid in listing if uid not in self._scanned][:POP3_SCAN]
        for number, uid in fresh:
            self._scanned.add(uid)
            if token.encode() in await client.top(number, 0):
                return number
        return None

    async def finish(self) -> None:
        pass

    def abort(self) -> None:
        if self._client is not None:
            self._client.close()


def _message(check: MailflowCheck, token: str) -> bytes:
    message = EmailMessage()
    message["From"] = check.send.mail_from
    message["To"] = check.send.rcpt_to
    message["Subject"] = f"probed mailflow {token}"
    message["Date"] = formatdate(usegmt=True)
    # The domain is given: make_msgid's default is a blocking DNS lookup.
    message["Message-ID"] = make_msgid(token, domain=check.send.helo_name)
    message[MARKER] = check.name
    message.set_content("A test message from probed; it is deleted once it has arrived.\n")
    return message.as_bytes()


async def _reply(transcript: Transcript, shown: str | None, call: Awaitable[_T]) -> _T:
    if shown is not None:
        transcript.client(shown)
    try:
        reply = await call
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code >= 0:
            _record(transcript, exc.code, exc.message)
        raise
    if isinstance(reply, aiosmtplib.SMTPResponse):
        _record(transcript, reply.code, reply.message)
    return reply


def _record(transcript: Transcript, code: int, message: str) -> None:
    lines = message.split("\n")
    for i, line in enumerate(lines):
        transcript.server(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}")


async def _send(check: MailflowCheck, token: str, transcript: Transcript) -> None:
    settings = check.send
    context = (
        shared_ssl_context(verify=settings.tls_verify, ca_file=settings.ca_file)
        if settings.tls or settings.starttls
        else None
    )
    smtp = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        local_hostname=settings.helo_name,
        timeout=None,  # the probe's deadline is the one that counts
        use_tls=settings.tls,
        start_tls=False,
        tls_context=context,
    )
    transcript.note(f"connect {settings.host}:{settings.port}")
    try:
        await _reply(transcript, None, smtp.connect())
        await _reply(transcript, f"EHLO {settings.helo_name}", smtp.ehlo())
        if settings.starttls:
            if not smtp.supports_extension("starttls"):
                raise ProbeFailure("SMTP server does not offer STARTTLS")
            await _reply(transcript, "STARTTLS", smtp.starttls())
            await _reply(transcript, f"EHLO {settings.helo_name}", smtp.ehlo())
        if settings.username is not None and settings.password is not None:
            await _reply(
                transcript, "AUTH ********", smtp.login(settings.username, settings.password)
            )
        await _reply(transcript, f"MAIL FROM:<{settings.mail_from}>", smtp.mail(settings.mail_from))
        await _reply(transcript, f"RCPT TO:<{settings.rcpt_to}>", smtp.rcpt(settings.rcpt_to))
        await _reply(transcript, "DATA", smtp.data(_message(check, token)))
        try:
            await _reply(transcript, "QUIT", smtp.quit())
        except aiosmtplib.SMTPException as exc:  # the message is queued: QUIT is courtesy
            transcript.note(f"ignored at QUIT: {smtp_reason(exc)}")
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code < 0:
            raise ProbeFailure(smtp_reason(exc)) from exc
        raise ProbeFailure(f"SMTP {exc.code} {' '.join(exc.message.split())}") from exc
    except aiosmtplib.SMTPException as exc:
        raise ProbeFailure(smtp_reason(exc)) from exc
    finally:
        smtp.close()


async def _leg(name: str, work: Awaitable[_T]) -> _T:
    """``work``, its failure prefixed with the leg (``send: SMTP 554 ...``)."""
    try:
        return await work
    except Exception as exc:  # asyncio.timeout cancels rather than raising in here
        raise ProbeFailure(f"{name}: {describe_error(exc)}") from exc


async def probe(check: MailflowCheck, transcript: Transcript) -> ProbeResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + check.timeout - min(MAX_MARGIN, check.timeout / 10)
    token = f"probed-{uuid.uuid4().hex}"
    receiver: _Receiver = (
        _ImapReceiver(check.receive, transcript)
        if isinstance(check.receive, ImapReceive)
        else _Pop3Receiver(check.receive, transcript)
    )
    leg = "receive"
    try:
        async with asyncio.timeout_at(deadline) as limit:
            await _leg("receive", receiver.open())
            leg = "send"
            await _leg("send", _send(check, token, transcript))
            sent = loop.time()
            leg, polls = "deliver", 1
            while not await _leg("receive", receiver.take(token)):
                await asyncio.sleep(check.poll_interval)
                polls += 1
            delivery = loop.time() - sent
            transcript.note(f"delivered after {delivery:.3f}s ({polls} polls)")
            leg = "finish"
            await _leg("receive", receiver.finish())
    except TimeoutError:
        if not limit.expired():
            raise
        if leg == "deliver":
            raise ProbeFailure(f"not delivered within {check.timeout:.1f}s") from None
        if leg == "finish":  # delivered and deleted; only LOGOUT hung
            return _delivered(delivery, polls, receiver)
        # The deadline's own figure, like the scheduler's: reasons stay identical.
        raise ProbeFailure(f"{leg}: timeout after {check.timeout:.1f}s") from None
    finally:
        receiver.abort()
    return _delivered(delivery, polls, receiver)


def _delivered(seconds: float, polls: int, receiver: _Receiver) -> ProbeResult:
    return ProbeResult.passed(
        delivery_seconds=round(seconds, 3), polls=polls, deleted=receiver.deleted
    )


PROBE = ProbeType(name="mailflow", config=MailflowCheck, run=probe)
