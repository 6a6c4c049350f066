"""IMAP: greeting, STARTTLS or implicit TLS, LOGIN, EXAMINE, the newest header, LOGOUT.

Mail is "available" when its headers can be retrieved: the probe opens the
mailbox read-only (EXAMINE) and, when it holds mail, fetches the newest
message's header with ``BODY.PEEK[HEADER]``, which never sets ``\\Seen``.

:class:`_Protocol` is a small IMAP client (RFC 3501) for the few commands the
probes send, one at a time: tagged answers, untagged lines and literals, a
bounded line and session size, a greeting that fails at once when it is not
``* OK``, STARTTLS that refuses injected data, a transcript, and commands that
fail as soon as the connection drops instead of waiting for the deadline. It
replaced aioimaplib, whose task, timer and event per command cost about as much
CPU as the rest of a test (bench/vs_blackbox.py). :class:`ImapSession` is shared
with the mailflow probe.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from typing import Literal, cast

from pydantic import Field

from probes.base import (
    CheckBase,
    DetailValue,
    MailEndpoint,
    ProbeFailure,
    ProbeResult,
    ProbeType,
    Transcript,
    certificate_details,
    describe_error,
    shared_ssl_context,
)

MAX_LINE = 64 * 1024  # any line without its literals; RFC 7162 asks clients to accept 8 KiB
MAX_SESSION = 8 * 1024 * 1024  # all bytes of one session: headers and search results are small
MAX_LINES = 10_000  # lines of one session: a few dozen per command, ~500 for a long mailflow poll
# Dovecot ends its answers with timings, "(0.001 + 0.000 secs).": dropped from
# reasons, or every failed test would have a reason of its own.
_TIMINGS = re.compile(r"\s*\(\d+\.\d+(?: \+ \d+\.\d+)* secs\)\.?$")
_EXISTS = re.compile(rb"^(\d+) EXISTS$", re.IGNORECASE)
_LITERAL = re.compile(rb"\{(\d{1,12})\}$")  # a line announcing a literal of that many bytes
_TAGGED = re.compile(rb"^[A-Za-z0-9.]+ (?:OK|NO|BAD)\b", re.IGNORECASE)  # someone's answer
_CONTROL = re.compile(r"[\x00\r\n]")


class ImapServer(MailEndpoint):
    """Where and as whom to log in; the imap check and mailflow's ``receive:`` share it."""

    PLAIN_PORT, TLS_PORT = 143, 993
    NEEDS_LOGIN = "imap needs username and password_file (a mailbox needs a login)"

    mailbox: str = Field(default="INBOX", pattern=r"^[^\x00-\x1f]+$")

    def target(self) -> str:
        return self.endpoint()


class ImapCheck(CheckBase, ImapServer):
    type: Literal["imap"]

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def target(self) -> str:
        return ImapServer.target(self)


class _Protocol(asyncio.Protocol):
    """The IMAP wire (RFC 3501): lines and literals in, one command at a time out.

    Every line and literal is bounded, and so is the whole session; a failure (a
    refusal of the link, a drop, garbage) wakes the greeting or the command that
    waits, so that it fails at once instead of at the deadline.
    """

    def __init__(self, transcript: Transcript) -> None:
        self.transcript = transcript
        self.transport: asyncio.Transport | None = None
        self.step = "greeting"
        self.error: ProbeFailure | None = None
        self.received = 0
        self.lines = 0
        self.preauth = False  # greeted with PREAUTH: logged in already
        self.tls_tag: bytes | None = None  # STARTTLS's tag, while its answer is awaited
        self.buffer = b""  # the start of a line still coming
        self._greeted = False
        self._waiter: asyncio.Future[None] | None = None  # the greeting or the command
        self._tag = b""  # the command in flight, with a space
        # its untagged lines ("* " dropped) and literals (bytearrays)
        self._untagged: list[bytes | bytearray] = []
        self._literal: bytearray | None = None  # a literal being read
        self._literal_left = 0
        self.status = ""  # the tagged answer: OK, NO or BAD
        self.text = ""  # and its text

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def fail(self, error: ProbeFailure) -> None:
        """The session is over: whatever waits (the greeting, a command) raises ``error``."""
        if self.error is None:
            self.error = error
        self._wake()
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Until the greeting, or the answer to the command just sent; its failure, if
        it came first (one that came after the answer is the next command's)."""
        if self.error is None and self._awaiting():
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self.error is not None and self._awaiting():
            raise self.error

    def _awaiting(self) -> bool:
        return not self._greeted or bool(self._tag)

    def send(self, tag: str, line: str, shown: str | None = None) -> None:
        self.transcript.client(f"{tag} {shown or line}")
        self._tag, self._untagged = tag.encode() + b" ", []
        assert self.transport is not None
        self.transport.write(f"{tag} {line}\r\n".encode())

    def untagged(self) -> list[bytes | bytearray]:
        return self._untagged

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        self.lines += data.count(b"\n")
        try:
            if self.received > MAX_SESSION:
                raise ProbeFailure(
                    f"IMAP {self.step}: response too large (over {MAX_SESSION} bytes)"
                )
            if self.lines > MAX_LINES:
                raise ProbeFailure(f"IMAP {self.step}: response too large (over {MAX_LINES} lines)")
            self._parse(self.buffer + data if self.buffer else data)
        except ProbeFailure as failure:
            self.fail(failure)

    def _parse(self, data: bytes) -> None:
        start = 0
        while start < len(data) and self.error is None:
            if self._literal is not None:
                piece = data[start : start + self._literal_left]
                self._literal += piece
                self._literal_left -= len(piece)
                start += len(piece)
                if not self._literal_left:
                    self._untagged.append(self._literal)
                    self._literal = None
                continue
            end = data.find(b"\r\n", start)
            if end < 0:
                break
            self._line(data[start:end])
            start = end + 2
        self.buffer = data[start:] if self.error is None else b""
        if len(self.buffer) > MAX_LINE:
            raise ProbeFailure(f"IMAP {self.step}: line longer than {MAX_LINE} bytes")

    def _line(self, line: bytes) -> None:
        if line:
            self.transcript.server(line.decode("utf-8", "replace"))
        if self.tls_tag == b"":
            # Sent in clear text after STARTTLS's OK, to be read as if it came
            # through TLS: the STARTTLS injection of CVE-2011-0411.
            raise ProbeFailure("IMAP server sent data after its STARTTLS answer")
        if not self._greeted:
            if line:
                self._greeting(line.decode("utf-8", "replace"))
            return
        if self._tag and line.startswith(self._tag):
            status, _, text = line[len(self._tag) :].partition(b" ")
            self.status, self.text = (
                status.decode("ascii", "replace").upper(),
                text.decode("utf-8", "replace"),
            )
            if self._tag == self.tls_tag:
                self.tls_tag = b""
            self._tag = b""
            self._wake()
            return
        if self._tag and _TAGGED.match(line) and not line.startswith(b"* "):
            raise ProbeFailure(f"IMAP {self.step}: protocol error: unexpected answer {line[:80]!r}")
        if line.endswith(b"}") and (literal := _LITERAL.search(line)):
            self._literal, self._literal_left = bytearray(), int(literal.group(1))
        if self._tag and line.startswith(b"* "):
            self._untagged.append(line[2:])

    def _greeting(self, text: str) -> None:
        status = text.split(" ", 2)[1].upper() if text.startswith("* ") else ""
        if status in ("OK", "PREAUTH"):
            self._greeted, self.preauth = True, status == "PREAUTH"
            self._wake()
        elif status == "BYE":
            self.fail(ProbeFailure(f"IMAP greeting: {text[2:]}"))
        else:
            self.fail(ProbeFailure(f"IMAP greeting: expected * OK, got {text[:80]!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = describe_error(exc) if exc is not None else "connection closed by server"
        self.fail(ProbeFailure(f"IMAP {self.step}: {reason}"))


class ImapSession:
    """One logged-in conversation; every call fails fast with ``IMAP <step>: ...``."""

    def __init__(self, protocol: _Protocol, server: ImapServer) -> None:
        self._protocol = protocol
        self._server = server
        self._tags = 0
        self.capabilities: frozenset[str] = frozenset()

    @classmethod
    async def connect(cls, server: ImapServer, transcript: Transcript) -> ImapSession:
        """Connect, read the greeting, negotiate TLS, read capabilities."""
        loop = asyncio.get_running_loop()
        context = (
            shared_ssl_context(verify=server.tls_verify, ca_file=server.ca_file)
            if server.tls or server.starttls
            else None
        )
        transcript.note(f"connect {server.target()}{' (implicit TLS)' if server.tls else ''}")
        _, protocol = await loop.create_connection(
            lambda: _Protocol(transcript),
            server.host,
            server.port,
            ssl=context if server.tls else None,
        )
        session = cls(protocol, server)
        try:
            await protocol.wait()  # the greeting
            await session._capability()
            if context is not None and server.starttls:
                await session._starttls(loop, context)
        except BaseException:
            session.close()
            raise
        return session

    @property
    def tls_details(self) -> dict[str, DetailValue]:
        transport = self._protocol.transport
        return certificate_details(transport.get_extra_info("ssl_object") if transport else None)

    async def login(self) -> None:
        if self._protocol.preauth:  # greeted with PREAUTH
            return
        if "LOGINDISABLED" in self.capabilities:
            raise ProbeFailure("IMAP LOGIN disabled by the server until TLS (use tls or starttls)")
        user, password = _quoted(self._server.username or ""), _quoted(self._server.password or "")
        await self._command("LOGIN", f"{user} {password}", shown=f"{user} ********")
        await self._capability()  # servers may announce more after login

    async def open_mailbox(self, *, read_only: bool) -> int:
        """EXAMINE (read-only) or SELECT the configured mailbox; its EXISTS count."""
        name = "EXAMINE" if read_only else "SELECT"
        lines = await self._command(name, _quoted(self._server.mailbox))
        counts = [int(m.group(1)) for line in lines if (m := _EXISTS.match(line))]
        if not counts:
            raise ProbeFailure(f"IMAP {name}: no EXISTS count in the answer")
        return counts[-1]

    async def peek_header(self, message: int) -> bytes | None:
        """Message ``message``'s header, leaving it unseen; None if it vanished meanwhile."""
        try:
            lines = await self._command("FETCH", f"{message} (BODY.PEEK[HEADER])")
        except ProbeFailure as failure:
            if "EXPUNGEISSUED" in str(failure):  # deleted by another client since EXAMINE
                return None
            raise
        return next((bytes(line) for line in lines if isinstance(line, bytearray)), None)

    async def noop(self) -> None:
        """Lets the server report mail that arrived since the last command."""
        await self._command("NOOP")

    async def uid_search(self, *criteria: str) -> list[int]:
        lines = await self._command("UID SEARCH", " ".join(criteria))
        found: list[int] = []
        for line in lines:
            if line[:7].upper() == b"SEARCH " or line.upper() == b"SEARCH":
                found += [int(word) for word in line.split()[1:] if word.isdigit()]
        return found

    async def delete(self, uids: list[int]) -> None:
        """Flag ``uids`` \\Deleted and expunge them (only them, with UIDPLUS)."""
        uid_set = ",".join(map(str, uids))
        await self._command("UID STORE", rf"{uid_set} +FLAGS.SILENT (\Deleted)")
        if "UIDPLUS" in self.capabilities:
            await self._command("UID EXPUNGE", uid_set)
        else:
            await self._command("EXPUNGE")

    async def logout(self) -> None:
        """LOGOUT, then close. The work is done by now: a refusal or a drop is only noted."""
        try:
            await self._command("LOGOUT")
        except ProbeFailure as failure:
            self._protocol.transcript.note(f"ignored at LOGOUT: {failure}")
        finally:
            self.close()

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.abort()

    async def _starttls(self, loop: asyncio.AbstractEventLoop, context: ssl.SSLContext) -> None:
        if "STARTTLS" not in self.capabilities:
            raise ProbeFailure("IMAP server does not offer STARTTLS")
        await self._command("STARTTLS", tls=True)
        if self._protocol.error is not None:  # see _Protocol._line
            raise self._protocol.error
        if self._protocol.buffer:
            raise ProbeFailure("IMAP server sent data after its STARTTLS answer")
        self._protocol.tls_tag = None
        assert self._protocol.transport is not None
        transport = await loop.start_tls(
            self._protocol.transport, self._protocol, context, server_hostname=self._server.host
        )
        assert transport is not None
        self._protocol.transport = transport
        await self._capability()  # RFC 3501 6.2.1: forget what was said in clear text

    async def _capability(self) -> None:
        lines = await self._command("CAPABILITY")
        words = b" ".join(line for line in lines if line[:11].upper() == b"CAPABILITY ")
        self.capabilities = frozenset(words.decode("ascii", "replace").upper().split())

    async def _command(
        self, step: str, args: str = "", *, shown: str | None = None, tls: bool = False
    ) -> list[bytes | bytearray]:
        """Send ``step`` (``UID SEARCH``) with ``args``; its untagged lines ("* " dropped)
        and literals (bytearrays), in order, once the server said OK."""
        if _CONTROL.search(args):  # would end the line early: a second command
            raise ValueError(f"IMAP {step}: NUL, CR and LF are not allowed in arguments")
        protocol = self._protocol
        protocol.step = step
        if protocol.error is not None:
            raise protocol.error
        self._tags += 1
        tag = f"A{self._tags}"
        line = f"{step} {args}" if args else step
        if tls:
            protocol.tls_tag = tag.encode() + b" "
        protocol.send(tag, line, shown=f"{step} {shown}" if shown else None)
        await protocol.wait()
        if protocol.status != "OK":
            text = _TIMINGS.sub("", protocol.text)
            raise ProbeFailure(f"IMAP {step} failed: {text}".rstrip())
        return protocol.untagged()


def _quoted(text: str) -> str:
    """An RFC 3501 quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def probe(check: ImapCheck, transcript: Transcript) -> ProbeResult:
    session = await ImapSession.connect(check, transcript)
    try:
        details = session.tls_details
        await session.login()
        exists = await session.open_mailbox(read_only=True)
        details["exists"] = exists
        if exists:
            header = await session.peek_header(exists)
            details["header_bytes"] = len(header) if header is not None else 0
            transcript.note(f"newest header: {details['header_bytes']} bytes")
        await session.logout()
    finally:
        session.close()
    return ProbeResult.passed(**details)


PROBE = ProbeType(name="imap", config=ImapCheck, run=probe)
