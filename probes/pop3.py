"""POP3: greeting, CAPA, STLS or implicit TLS, USER/PASS, STAT, ``TOP 1 0``, QUIT.

Hosting SLAs define mail availability as "the ability to retrieve SMTP and POP
headers": the probe logs in and, when the mailbox holds mail, fetches the
headers of one message with TOP, which neither marks nor deletes it.

No maintained asyncio POP3 client exists, so :class:`Pop3Client` is a small
one on asyncio streams (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS). The mailflow
probe uses it too, to receive its round-trip message.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from types import TracebackType
from typing import Literal

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
)

MAX_LINE = 8 * 1024  # any line; RFC 1939 status lines are at most 512 octets
MAX_RESPONSE = 1024 * 1024  # a multi-line response, unless the caller says otherwise
_CLOSE_GRACE = 1.0  # seconds for the TLS goodbye after QUIT
_AUTH_COMMANDS = frozenset({"USER", "PASS"})


class Pop3Error(ProbeFailure):
    """The server refused a command (``-ERR``) or answered something else than ``+OK``."""

    def __init__(self, message: str, *, command: str, reply: str) -> None:
        super().__init__(message)
        self.command = command
        self.reply = reply

    @property
    def code(self) -> str | None:
        """The RFC 2449 response code (``AUTH``, ``IN-USE``, ``SYS/TEMP``), if any."""
        match = re.match(r"-ERR \[([^\]]+)\]", self.reply)
        return match.group(1).upper() if match else None


class Pop3Client:
    """One POP3 session. Every line is bounded, and so is every multi-line response.

    ``await Pop3Client.connect(...)`` reads the greeting; then ``capa``, ``stls``,
    ``login``, ``stat``, ``uidl``, ``top``, ``retr``, ``dele``, ``quit``. Use it as
    an async context manager (or call ``close``) so the connection never leaks.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transcript: Transcript
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.transcript = transcript
        self.greeting = ""
        self.capabilities: list[str] | None = None  # None: not asked, or CAPA unsupported

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        transcript: Transcript | None = None,
    ) -> Pop3Client:
        """Connect (implicit TLS with ``ssl_context``) and read a ``+OK`` greeting."""
        # limit= bounds StreamReader's buffer: a line without newline fails at
        # MAX_LINE instead of being buffered whole.
        reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context, limit=MAX_LINE)
        client = cls(reader, writer, transcript if transcript is not None else Transcript())
        try:
            client.greeting = await client._read_greeting()
        except BaseException:
            client.close()
            raise
        return client

    async def __aenter__(self) -> Pop3Client:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        obj: ssl.SSLObject | None = self._writer.get_extra_info("ssl_object")
        return obj

    def has_capability(self, name: str) -> bool:
        return any(c.split()[0].upper() == name.upper() for c in self.capabilities or [] if c)

    async def capa(self) -> list[str]:
        """RFC 2449 capabilities; ``[]`` (and ``capabilities = None``) if CAPA is refused."""
        try:
            await self._command("CAPA")
        except Pop3Error:
            self.capabilities = None
            return []
        lines = (await self._read_data(MAX_LINE * 8)).decode("utf-8", "replace").splitlines()
        self.capabilities = [line.strip() for line in lines if line.strip()]
        self.transcript.server(" ".join(self.capabilities) + " .")
        return self.capabilities

    async def stls(self, ssl_context: ssl.SSLContext, server_hostname: str) -> None:
        """RFC 2595 STLS: upgrade this connection to TLS; cached capabilities are dropped."""
        await self._command("STLS")
        # Bytes that arrived after "+OK" were sent in clear text before the
        # handshake and would be read as if they came through TLS (the
        # STARTTLS injection of CVE-2011-0411). StreamReader has no public peek.
        if getattr(self._reader, "_buffer", b""):
            raise ProbeFailure("POP3 server sent data after STLS reply")
        await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        self.capabilities = None

    async def login(self, user: str, password: str) -> None:
        """USER/PASS (RFC 1939). The transcript shows the password masked."""
        await self._command("USER", user)
        await self._command("PASS", password, shown="PASS ********")

    async def stat(self) -> tuple[int, int]:
        """Number of messages and mailbox size in octets."""
        reply = await self._command("STAT")
        match = re.match(r"(\d+) (\d+)", reply)
        if match is None:
            raise Pop3Error(
                f"POP3 STAT: malformed reply {reply[:80]!r}", command="STAT", reply=reply
            )
        return int(match.group(1)), int(match.group(2))

    async def uidl(self) -> dict[int, str]:
        """Message number → unique id, for every message."""
        await self._command("UIDL")
        lines = (await self._read_data(MAX_RESPONSE)).decode("utf-8", "replace").splitlines()
        pairs = (line.split(maxsplit=1) for line in lines)
        return {int(p[0]): p[1].strip() for p in pairs if len(p) == 2 and p[0].isdigit()}

    async def top(self, which: int, lines: int = 0, *, max_bytes: int = MAX_RESPONSE) -> bytes:
        """The headers (and ``lines`` body lines) of message ``which``, dot-unstuffed."""
        await self._command("TOP", which, lines)
        data = await self._read_data(max_bytes)
        self.transcript.note(f"{len(data)} bytes")
        return data

    async def retr(self, which: int, *, max_bytes: int = MAX_RESPONSE) -> bytes:
        """The whole message ``which``, dot-unstuffed."""
        await self._command("RETR", which)
        data = await self._read_data(max_bytes)
        self.transcript.note(f"{len(data)} bytes")
        return data

    async def dele(self, which: int) -> None:
        """Mark message ``which`` deleted; the server removes it at QUIT."""
        await self._command("DELE", which)

    async def quit(self) -> None:
        """QUIT and close. The server commits DELEs before it answers (RFC 1939 6)."""
        try:
            await self._command("QUIT")
            if self.ssl_object is None:
                return  # in clear text there is no goodbye to wait for: close() below
            self._writer.close()
            # A graceful close (TLS close_notify) when the peer cooperates, never
            # a long one: asyncio would otherwise wait up to 30 s for the goodbye.
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(_CLOSE_GRACE):
                    await self._writer.wait_closed()
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection at once (no TLS goodbye): for failures and cancellation."""
        self._writer.transport.abort()

    async def _read_greeting(self) -> str:
        line = await self._read_line()
        self.transcript.server(line)
        if line.startswith("+OK"):
            return line[3:].strip()
        text = line if line.startswith("-ERR") else f"expected +OK, got {line[:80]!r}"
        raise Pop3Error(f"POP3 greeting: {text}", command="", reply=line)

    async def _command(self, command: str, *args: str | int, shown: str | None = None) -> str:
        """Send one command, read its status line, return the text after ``+OK``."""
        line = " ".join([command, *map(str, args)])
        if "\r" in line or "\n" in line:
            raise ValueError(f"POP3 {command} argument contains a line break")
        self.transcript.client(shown or line)
        self._writer.write(line.encode() + b"\r\n")
        await self._writer.drain()
        reply = await self._read_line()
        self.transcript.server(reply)
        if reply.startswith("+OK"):
            return reply[3:].strip()
        prefix = "POP3 " if command in _AUTH_COMMANDS else f"POP3 {command}: "
        text = reply if reply.startswith("-ERR") else f"expected +OK, got {reply[:80]!r}"
        raise Pop3Error(prefix + text, command=command, reply=reply)

    async def _read_line(self) -> str:
        try:
            raw = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ProbeFailure("POP3 line too long") from None
        except asyncio.IncompleteReadError:
            raise ProbeFailure("connection closed by server") from None
        return raw.rstrip(b"\r\n").decode("utf-8", "replace")

    async def _read_data(self, max_bytes: int) -> bytes:
        """A multi-line response body up to the lone ".", dot-unstuffed (RFC 1939 3).

        Body lines may be longer than MAX_LINE (mail is not always polite): an
        overlong line is taken in pieces, and only the total is bounded.
        """
        body = bytearray()
        line_start = True
        while True:
            try:
                chunk, whole = await self._reader.readuntil(b"\n"), True
            except asyncio.LimitOverrunError as exc:
                chunk, whole = await self._reader.readexactly(exc.consumed), False
            except asyncio.IncompleteReadError:
                raise ProbeFailure("connection closed by server") from None
            if line_start and whole and chunk.rstrip(b"\r\n") == b".":
                return bytes(body)
            if line_start and chunk.startswith(b"."):
                chunk = chunk[1:]
            if len(body) + len(chunk) > max_bytes:
                raise ProbeFailure(f"POP3 response too large (over {max_bytes} bytes)")
            body += chunk
            line_start = whole


class Pop3Server(MailEndpoint):
    """Where and as whom to log in; the pop3 check and mailflow's ``receive:`` share it."""

    PLAIN_PORT, TLS_PORT = 110, 995
    NEEDS_LOGIN = "pop3 needs username and password_file (headers need a login)"


class Pop3Check(CheckBase, Pop3Server):
    type: Literal["pop3"]

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def target(self) -> str:
        return self.endpoint()


async def probe(check: Pop3Check, transcript: Transcript) -> ProbeResult:
    context = check.ssl_context() if check.tls or check.starttls else None
    transcript.note(f"connect {check.target()}{' (implicit TLS)' if check.tls else ''}")
    client = await Pop3Client.connect(
        check.host, check.port, ssl_context=context if check.tls else None, transcript=transcript
    )
    async with client:
        await client.capa()
        if context is not None and check.starttls:
            # Without CAPA we cannot know; STLS itself then answers.
            if client.capabilities is not None and not client.has_capability("STLS"):
                raise ProbeFailure("POP3 server does not offer STLS")
            await client.stls(context, check.host)
            await client.capa()  # RFC 2595 4: capabilities may differ under TLS
        details: dict[str, DetailValue] = certificate_details(client.ssl_object)
        if details:
            transcript.note(", ".join(f"{key}={value}" for key, value in details.items()))
        await client.login(check.username or "", check.password or "")  # both set: _needs_login
        count, size = await client.stat()
        details.update(messages=count, mailbox_bytes=size)
        if count:
            details["header_bytes"] = len(await client.top(1, 0))
        try:
            await client.quit()
        except (ProbeFailure, OSError) as exc:  # the headers are in: QUIT is courtesy
            transcript.note(f"ignored at QUIT: {describe_error(exc)}")
        return ProbeResult.passed(**details)


PROBE = ProbeType(name="pop3", config=Pop3Check, run=probe)
