"""The event loop probed runs on: uvloop when installed, asyncio's own otherwise.

uvloop's ``sock_connect()`` resolves its address with ``getaddrinfo(type=0)``,
which uvloop answers in its thread pool even for an IP address. aiohttp
connects every HTTP test that way, so each test paid a thread hand-off
(~60 us of CPU, and a context switch) to "resolve" an address that was already
numeric. :class:`_Loop` answers numeric hosts and ports at once, as the libc
does without any lookup (``AI_NUMERICHOST | AI_NUMERICSERV``), and leaves
names to uvloop. CPython's loop has the same gap (python/cpython#90980).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV

# getaddrinfo()'s entries: (family, type, proto, canonname, sockaddr), typed loosely
AddrInfo = tuple[Any, ...]


def numeric_addrinfo(
    host: bytes | str | None,
    port: bytes | str | int | None,
    family: int,
    type_: int,
    proto: int,
    flags: int,
) -> list[AddrInfo] | None:
    """The libc's own answer when ``host`` and ``port`` are numeric (it never blocks then),
    else None: a name needs a real lookup."""
    try:
        return socket.getaddrinfo(host, port, family, type_, proto, flags | NUMERIC)
    except (socket.gaierror, UnicodeError):
        return None


def install() -> None:
    """Make every ``asyncio.run`` of this process use uvloop with the numeric fast path."""
    try:
        import uvloop  # optional speed-up
    except ImportError:
        return

    class _Loop(uvloop.Loop):
        async def getaddrinfo(
            self,
            host: bytes | str | None,
            port: bytes | str | int | None,
            *,
            family: int = 0,
            type: int = 0,  # asyncio's keyword
            proto: int = 0,
            flags: int = 0,
        ) -> list[AddrInfo]:
            found = numeric_addrinfo(host, port, family, type, proto, flags)
            if found is not None:
                return found
            return await super().getaddrinfo(
                host, port, family=family, type=type, proto=proto, flags=flags
            )

    class _Policy(uvloop.EventLoopPolicy):  # type: ignore[misc]
        def _loop_factory(self) -> asyncio.AbstractEventLoop:
            return _Loop()

    asyncio.set_event_loop_policy(_Policy())
