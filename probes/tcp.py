"""TCP: the port accepts a connection, optionally completes TLS and greets as expected."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from probes.base import (
    CaFile,
    CheckBase,
    ProbeFailure,
    ProbeResult,
    ProbeType,
    Regex,
    Transcript,
    certificate_details,
    shared_ssl_context,
)

MAX_BANNER = 4096  # one line, bounded: a server streaming bytes without a newline is a failure
_SHOWN = 80


class TcpCheck(CheckBase):
    type: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tls: bool = False
    tls_verify: bool = True
    ca_file: CaFile = None
    expect_banner: Regex | None = None

    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


async def probe(check: TcpCheck, transcript: Transcript) -> ProbeResult:
    """Connect (and handshake); when a banner is expected, read one line and match it."""
    ssl_context = (
        shared_ssl_context(verify=check.tls_verify, ca_file=check.ca_file) if check.tls else None
    )
    transcript.note(f"connecting to {check.target()}{' with TLS' if check.tls else ''}")
    reader, writer = await asyncio.open_connection(
        check.host,
        check.port,
        ssl=ssl_context,
        server_hostname=check.host if ssl_context else None,
        limit=MAX_BANNER,
    )
    try:
        details = certificate_details(writer.get_extra_info("ssl_object"))
        if details:
            transcript.note(f"TLS {details['tls_version']}")
        if check.expect_banner is None:
            return ProbeResult.passed(**details)
        banner = await _read_banner(reader)
        transcript.server(_escaped(banner))
        details["banner"] = _shown(banner)
        if not check.expect_banner.search(banner):
            pattern = check.expect_banner.pattern
            return ProbeResult.failed(
                f'banner did not match /{pattern}/: got "{_shown(banner)}"', **details
            )
        return ProbeResult.passed(**details)
    finally:
        # abort(), not close(): a polite TLS close waits for the server's
        # close_notify, which a hostile server never sends, and there is
        # nothing of ours left to flush.
        writer.transport.abort()
        await asyncio.sleep(0)  # let the loop run the close it scheduled


async def _read_banner(reader: asyncio.StreamReader) -> str:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise ProbeFailure(f"banner line longer than {MAX_BANNER} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ProbeFailure("connection closed before banner") from None
        raise ProbeFailure(
            f'connection closed mid-banner: got "{_shown(_text(exc.partial))}"'
        ) from None
    return _text(line).rstrip("\r\n")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


def _escaped(text: str) -> str:
    """Control characters as escapes: a server must not drive the operator's terminal."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _shown(text: str) -> str:
    """A server's words fit for a reason: one short line."""
    escaped = _escaped(text)
    return escaped if len(escaped) <= _SHOWN else escaped[:_SHOWN] + "..."


PROBE = ProbeType(name="tcp", config=TcpCheck, run=probe)
