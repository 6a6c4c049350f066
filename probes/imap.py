"""IMAP: greeting, STARTTLS or implicit TLS, LOGIN, EXAMINE, the newest header, LOGOUT.

Mail is "available" when its headers can be retrieved: the probe opens the
mailbox read-only (EXAMINE) and, when it holds mail, fetches the newest
message's header with ``BODY.PEEK[HEADER]``, which never sets ``\\Seen``.

aioimaplib parses the protocol (tags, untagged data, literals). What it lacks
for a monitor is added by :class:`_Protocol`: STARTTLS, a bounded line and
session size, a greeting that fails at once when it is not ``* OK``, a
transcript, and commands that fail as soon as the connection drops instead of
waiting for the deadline. :class:`ImapSession` is shared with the mailflow probe.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Coroutine, Iterator
from typing import Literal, TypeVar

from aioimaplib import (
    AUTH,
    CONNECTED,
    NONAUTH,
    SELECTED,
    Command,
    FetchCommand,
    IMAP4ClientProtocol,
    IncompleteRead,
    quoted,
)
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
# aioimaplib parses a chunk with one recursive call per line: it is fed at most
# this many lines at a time, so no server can make it recurse out of the stack.
LINES_PER_FEED = 64
# Dovecot ends its answers with timings, "(0.001 + 0.000 secs).": dropped from
# reasons, or every failed test would have a reason of its own.
_TIMINGS = re.compile(r"\s*\(\d+\.\d+(?: \+ \d+\.\d+)* secs\)\.?$")
_EXISTS = re.compile(rb"^(\d+) EXISTS$", re.IGNORECASE)
_T = TypeVar("_T")


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


class _Protocol(IMAP4ClientProtocol):  # type: ignore[misc]  # aioimaplib ships no types
    """aioimaplib's parser, with a transcript, bounds, and a fast failure when the link breaks."""

    incomplete_line: bytes  # aioimaplib's: the start of a line (or literal) still coming
    current_command: Command | None  # aioimaplib's: the command that line belongs to

    def __init__(self, loop: asyncio.AbstractEventLoop, transcript: Transcript) -> None:
        super().__init__(loop)
        self.transcript = transcript
        self.step = "greeting"
        self.greeted = asyncio.Event()  # set by the greeting, or by a failure before it
        self.error: ProbeFailure | None = None
        self.received = 0
        self.lines = 0
        self.tls_tag: bytes | None = None  # STARTTLS's tag, while its answer is awaited

    def fail(self, error: ProbeFailure) -> None:
        """The session is over: whatever waits (the greeting, a command) raises ``error``."""
        if self.error is None:
            self.error = error
        self.greeted.set()
        waiting = [self.pending_sync_command, *self.pending_async_commands.values()]
        for command in waiting:
            if command is not None:  # its execute() raises the error (Command.wait)
                command._exception = self.error
                command._event.set()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, d: bytes) -> None:
        self.received += len(d)
        lines = d.count(b"\n")
        self.lines += lines
        try:
            if self.received > MAX_SESSION:
                raise ProbeFailure(
                    f"IMAP {self.step}: response too large (over {MAX_SESSION} bytes)"
                )
            if self.lines > MAX_LINES:
                raise ProbeFailure(f"IMAP {self.step}: response too large (over {MAX_LINES} lines)")
            for piece in (d,) if lines <= LINES_PER_FEED else _pieces(d, LINES_PER_FEED):
                self._feed(piece)
                if self.error is not None:
                    return
            if len(self.incomplete_line) > MAX_LINE:
                raise ProbeFailure(f"IMAP {self.step}: line longer than {MAX_LINE} bytes")
        except ProbeFailure as failure:
            self.fail(failure)
        except Exception as exc:  # aioimaplib's Abort/Error on answers it cannot place
            self.fail(ProbeFailure(f"IMAP {self.step}: protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        reason = describe_error(exc) if exc is not None else "connection closed by server"
        self.fail(ProbeFailure(f"IMAP {self.step}: {reason}"))

    def _feed(self, data: bytes) -> None:
        """aioimaplib's data_received, without its debug log (it formats every chunk)."""
        try:
            self._handle_responses(
                self.incomplete_line + data, self._handle_line, self.current_command
            )
            self.incomplete_line = b""
            self.current_command = None
        except IncompleteRead as incomplete:
            self.current_command = incomplete.cmd
            self.incomplete_line = incomplete.data

    def send(self, line: str, scrub: str | None = None) -> None:
        """aioimaplib's send, with the transcript instead of its debug log."""
        shown = line.replace(quoted(scrub), "********") if scrub else line
        self.transcript.client(shown)
        self.transport.write(line.encode() + b"\r\n")

    def _handle_line(self, line: bytes, current_cmd: Command | None) -> Command | None:
        if line:
            self.transcript.server(line.decode("utf-8", "replace"))
        if self.tls_tag == b"":
            # Sent in clear text after STARTTLS's OK, to be read as if it came
            # through TLS: the STARTTLS injection of CVE-2011-0411.
            self.fail(ProbeFailure("IMAP server sent data after its STARTTLS answer"))
            return None
        if self.tls_tag and line.startswith(self.tls_tag + b" "):
            self.tls_tag = b""
        if self.state != CONNECTED:
            return super()._handle_line(line, current_cmd)
        if line:  # the greeting, handled here and now rather than in a task
            self._greeting(line.decode("utf-8", "replace"))
        return None

    def _greeting(self, text: str) -> None:
        status = text.split(" ", 2)[1].upper() if text.startswith("* ") else ""
        if status in ("OK", "PREAUTH"):
            self.state = NONAUTH if status == "OK" else AUTH
            self.greeted.set()
        elif status == "BYE":
            self.fail(ProbeFailure(f"IMAP greeting: {text[2:]}"))
        else:
            self.fail(ProbeFailure(f"IMAP greeting: expected * OK, got {text[:80]!r}"))


def _pieces(data: bytes, lines: int) -> Iterator[bytes]:
    """``data`` cut after every ``lines``-th newline (the last piece may hold fewer)."""
    start = end = 0
    while start < len(data):
        for _ in range(lines):
            end = data.find(b"\n", end) + 1
            if end == 0:
                end = len(data)
                break
        yield data[start:end]
        start = end


class ImapSession:
    """One logged-in conversation; every call fails fast with ``IMAP <step>: ...``."""

    def __init__(self, protocol: _Protocol, server: ImapServer) -> None:
        self._protocol = protocol
        self._server = server
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
            lambda: _Protocol(loop, transcript),
            server.host,
            server.port,
            ssl=context if server.tls else None,
        )
        session = cls(protocol, server)
        try:
            await session._run("greeting", protocol.greeted.wait())
            await session._capability()
            if context is not None and server.starttls:
                await session._starttls(loop, context)
        except BaseException:
            session.close()
            raise
        return session

    @property
    def tls_details(self) -> dict[str, DetailValue]:
        return certificate_details(self._protocol.transport.get_extra_info("ssl_object"))

    async def login(self) -> None:
        if self._protocol.state == AUTH:  # greeted with PREAUTH
            return
        if "LOGINDISABLED" in self.capabilities:
            raise ProbeFailure("IMAP LOGIN disabled by the server until TLS (use tls or starttls)")
        user, password = self._server.username or "", self._server.password or ""
        command = Command("LOGIN", self._tag(), quoted(user), quoted(password))
        await self._command(command, scrub=password)
        self._protocol.state = AUTH
        await self._capability()  # servers may announce more after login

    async def open_mailbox(self, *, read_only: bool) -> int:
        """EXAMINE (read-only) or SELECT the configured mailbox; its EXISTS count."""
        name = "EXAMINE" if read_only else "SELECT"
        lines = await self._command(Command(name, self._tag(), quoted(self._server.mailbox)))
        self._protocol.state = SELECTED
        counts = [int(m.group(1)) for line in lines if (m := _EXISTS.match(bytes(line)))]
        if not counts:
            raise ProbeFailure(f"IMAP {name}: no EXISTS count in the answer")
        return counts[-1]

    async def peek_header(self, message: int) -> bytes | None:
        """Message ``message``'s header, leaving it unseen; None if it vanished meanwhile."""
        command = FetchCommand(self._tag(), str(message), "(BODY.PEEK[HEADER])")
        try:
            lines = await self._command(command)
        except ProbeFailure as failure:
            if "EXPUNGEISSUED" in str(failure):  # deleted by another client since EXAMINE
                return None
            raise
        return next((bytes(line) for line in lines if isinstance(line, bytearray)), None)

    async def noop(self) -> None:
        """Lets the server report mail that arrived since the last command."""
        await self._command(Command("NOOP", self._tag()))

    async def uid_search(self, *criteria: str) -> list[int]:
        lines = await self._command(Command("SEARCH", self._tag(), *criteria, prefix="UID"))
        found: list[int] = []
        for line in lines[:-1]:  # the last one is the tagged status text
            text = bytes(line).decode("ascii", "replace").split()
            found += [int(word) for word in text if word.isdigit()]
        return found

    async def delete(self, uids: list[int]) -> None:
        """Flag ``uids`` \\Deleted and expunge them (only them, with UIDPLUS)."""
        uid_set = ",".join(map(str, uids))
        store = Command("STORE", self._tag(), uid_set, "+FLAGS.SILENT", r"(\Deleted)", prefix="UID")
        store.untagged_resp_name = "FETCH"
        await self._command(store)
        if "UIDPLUS" in self.capabilities:
            await self._command(Command("EXPUNGE", self._tag(), uid_set, prefix="UID"))
        else:
            await self._command(Command("EXPUNGE", self._tag()))

    async def logout(self) -> None:
        """LOGOUT, then close. The work is done by now: a refusal or a drop is only noted."""
        try:
            await self._command(Command("LOGOUT", self._tag()))
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
        tag = self._tag()
        self._protocol.tls_tag = tag.encode()
        await self._command(Command("STARTTLS", tag))
        if self._protocol.error is not None:  # see _Protocol._handle_line
            raise self._protocol.error
        if self._protocol.incomplete_line:
            raise ProbeFailure("IMAP server sent data after its STARTTLS answer")
        self._protocol.tls_tag = None
        transport = await loop.start_tls(
            self._protocol.transport, self._protocol, context, server_hostname=self._server.host
        )
        self._protocol.transport = transport
        await self._capability()  # RFC 3501 6.2.1: forget what was said in clear text

    async def _capability(self) -> None:
        lines = await self._command(Command("CAPABILITY", self._tag()))
        words = b" ".join(bytes(line) for line in lines[:-1]).decode("ascii", "replace").split()
        self.capabilities = frozenset(word.upper() for word in words)

    async def _command(self, command: Command, scrub: str | None = None) -> list[bytes]:
        """Run ``command``; its untagged lines and literals, then the tagged text, last."""
        step = command.name if not command.prefix else f"UID {command.name}"
        response = await self._run(step, self._protocol.execute(command, scrub=scrub))
        if response.result != "OK":
            text = b" ".join(bytes(line) for line in response.lines[-1:]).decode(errors="replace")
            raise ProbeFailure(f"IMAP {step} failed: {_TIMINGS.sub('', text)}".rstrip())
        lines: list[bytes] = response.lines
        return lines

    async def _run(self, step: str, work: Awaitable[_T]) -> _T:
        """``work``, unless the connection breaks first: then the failure, at once.

        No task of its own: :meth:`_Protocol.fail` wakes whatever ``work`` waits for
        (the greeting, the command in flight) and it raises the failure.
        """
        protocol = self._protocol
        protocol.step = step
        if protocol.error is not None:
            if isinstance(work, Coroutine):
                work.close()  # never started
            raise protocol.error
        return await work

    def _tag(self) -> str:
        tag: str = self._protocol.new_tag()
        return tag


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
