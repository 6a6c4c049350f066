"""The daemon's event loop: numeric addresses are answered without uvloop's thread pool."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from probed import eventloop
from tests.conftest import require


@pytest.fixture
def installed() -> Iterator[None]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        require(False, "uvloop is not installed (pip install -e '.[speed]')")
    eventloop.install()
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(None)


@pytest.mark.usefixtures("installed")
def test_a_numeric_address_is_answered_at_once_as_the_libc_answers_it() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert type(loop).__module__ == eventloop.__name__  # uvloop, with the fast path
        for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            # sock_connect()'s call: type 0. Answered without waiting on anything:
            pending = loop.getaddrinfo(host, 8080, family=family)
            with pytest.raises(StopIteration) as done:
                pending.send(None)
            assert done.value.value == socket.getaddrinfo(host, 8080, family)

    asyncio.run(main())


@pytest.mark.usefixtures("installed")
def test_names_are_still_looked_up_and_connections_still_made() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo("localhost", "8080", type=socket.SOCK_STREAM)  # /etc/hosts
        assert ("127.0.0.1", 8080) in [entry[4][:2] for entry in found]
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with socket.socket() as sock:
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", port))  # aiohttp's way in
                assert sock.getpeername() == ("127.0.0.1", port)

    asyncio.run(main())
