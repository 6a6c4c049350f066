"""Misbehaving servers on loopback, for any line- or byte-oriented protocol.

    async with fake_server(send(b"garbage\\r\\n")) as port:
        ...  # connect to 127.0.0.1:port

A handler is an async callable taking ``(reader, writer)``, exactly like an
``asyncio.start_server`` callback. The helper closes every connection and
cancels every handler when the block ends, and swallows the connection errors
a handler gets when the probe hangs up on it, so a handler only has to
misbehave. Handlers below are protocol-agnostic: give them the bytes your
protocol expects (``b"220 mx"`` for SMTP, ``b"HTTP/1.1 200 OK\\r\\n"`` for HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import ClassVar, TypeAlias

import trustme

Handler: TypeAlias = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# Errors a handler sees when the client hangs up on it, which is the point.
_HANGUP_ERRORS = (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError)


@contextlib.asynccontextmanager
async def fake_server(
    handler: Handler, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve ``handler`` on ``host`` (an ephemeral port, yielded) until the block ends."""
    tasks: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.add(writer)
        try:
            await handler(reader, writer)
        except (*_HANGUP_ERRORS, asyncio.CancelledError):
            # Cancelled only by the teardown below. Ending normally keeps
            # asyncio's start_server callback from logging the cancellation.
            pass
        finally:
            writer.transport.abort()
            tasks.discard(task)
            writers.discard(writer)

    server = await asyncio.start_server(on_connect, host, 0, ssl=ssl_context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in list(writers):
            writer.transport.abort()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def closed_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that nothing listens on (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, host, 0)
    port: int = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


async def _until_client_closes(reader: asyncio.StreamReader) -> None:
    """Read and discard what the client sends until it hangs up."""
    while await reader.read(65536):
        pass


async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept the connection and never say a word."""
    await _until_client_closes(reader)


def send(data: bytes, *, then_close: bool = False) -> Handler:
    """Send ``data`` at once, then wait for the client to hang up (or close first)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if not then_close:
            await _until_client_closes(reader)

    return handler


def close_after(data: bytes) -> Handler:
    """Send ``data`` (say half a greeting) and close the connection."""
    return send(data, then_close=True)


def reply_after_request(response: bytes, *, then_close: bool = True) -> Handler:
    """Wait for the client's first bytes (a request), then send ``response``.

    For protocols where the client speaks first, such as HTTP: answering
    before the request arrives would test a different failure.
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await reader.read(65536):
            return
        await send(response, then_close=then_close)(reader, writer)

    return handler


def drip(data: bytes, *, interval: float = 1.0) -> Handler:
    """Send ``data`` one byte per ``interval`` seconds: alive, but hopelessly slow."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(interval)
        await _until_client_closes(reader)

    return handler


class HugeLine:
    """Stream ``prefix`` then ``size`` bytes without a newline, counting what went out.

    The bytes are written in 64 KiB chunks with ``drain()``, so the server
    itself stays small and stops as soon as the client stops reading or hangs
    up; ``sent`` then tells how far it got.
    """

    CHUNK = 64 * 1024

    def __init__(
        self, size: int = 10 * 1024 * 1024, *, prefix: bytes = b"", wait_for_request: bool = False
    ) -> None:
        self.size = size
        self.prefix = prefix
        self.wait_for_request = wait_for_request
        self.sent = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.wait_for_request and not await reader.read(65536):
            return
        writer.write(self.prefix)
        chunk = b"A" * self.CHUNK
        while self.sent < self.size:
            piece = chunk[: self.size - self.sent]
            writer.write(piece)
            await writer.drain()
            self.sent += len(piece)
        await _until_client_closes(reader)


# A TLS record: fatal alert (2), handshake_failure (40), what a server sends
# when it cannot agree on anything with the client's ClientHello.
TLS_HANDSHAKE_FAILURE_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])


async def tls_handshake_failure(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the client's ClientHello, answer with a fatal handshake_failure alert, close."""
    if await reader.read(65536):
        writer.write(TLS_HANDSHAKE_FAILURE_ALERT)
        await writer.drain()


@dataclasses.dataclass(frozen=True)
class LoopbackPKI:
    """A private CA (from trustme) and server contexts for 127.0.0.1.

    ``ca_file`` is the CA certificate in PEM, as a check's ``ca_file`` takes it.
    """

    ca: trustme.CA
    ca_file: str

    @classmethod
    def create(cls, directory: Path) -> LoopbackPKI:
        ca = trustme.CA()
        ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(ca=ca, ca_file=str(ca_file))

    def server_context(
        self,
        identity: str = "127.0.0.1",
        *,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> ssl.SSLContext:
        """A server context with a fresh certificate for ``identity``."""
        cert = self.ca.issue_cert(identity, not_before=not_before, not_after=not_after)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    def expired_server_context(self, identity: str = "127.0.0.1") -> ssl.SSLContext:
        now = datetime.datetime.now(datetime.UTC)
        return self.server_context(
            identity,
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )


Reply: TypeAlias = bytes | Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedLineServer:
    """A line protocol server (SMTP, POP3): greets, then one reply per command word.

    Subclasses give the greeting, the defaults and the answer to unknown commands;
    tests override any reply by keyword (``FakePop3(PASS=b"-ERR ...")``), or give
    a coroutine to misbehave. Everything received is kept in ``received``.
    """

    GREETING: ClassVar[bytes] = b""
    UNKNOWN: ClassVar[bytes] = b""
    DEFAULTS: ClassVar[dict[str, Reply]] = {}

    def __init__(self, greeting: bytes | None = None, **replies: Reply) -> None:
        self.greeting = self.GREETING if greeting is None else greeting
        self.replies = {**self.DEFAULTS, **replies}
        self.received: list[str] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting + b"\r\n")
        while line := await reader.readline():
            self.received.append(line.decode().rstrip("\r\n"))
            command = self.received[-1].split(" ")[0].upper()
            reply = self.replies.get(command, self.UNKNOWN)
            if callable(reply):
                await reply(reader, writer)
                continue
            writer.write(reply + b"\r\n")
            await writer.drain()
            if command == "QUIT":
                return
