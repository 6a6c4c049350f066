"""The real mail servers the probe tests rely on: every port answers as it should."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from tests.mailservers import MailServers

pytestmark = pytest.mark.servers


async def _greeting(servers: MailServers, port: int, *, tls: bool) -> bytes:
    context = ssl.create_default_context(cafile=str(servers.ca_file)) if tls else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            servers.host, port, ssl=context, server_hostname="localhost" if tls else None
        ),
        5,
    )
    try:
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("service", "tls", "expected"),
    [
        ("smtp", False, b"220 "),
        ("submission", False, b"220 "),
        ("imap", False, b"* OK "),
        ("imaps", True, b"* OK "),
        ("pop3", False, b"+OK "),
        ("pop3s", True, b"+OK "),
    ],
)
async def test_each_port_greets(
    mail_servers: MailServers, service: str, tls: bool, expected: bytes
) -> None:
    port = getattr(mail_servers.ports, service)
    greeting = await _greeting(mail_servers, port, tls=tls)
    assert greeting.startswith(expected), (service, greeting, mail_servers.logs())


async def test_submission_offers_starttls_and_auth_only_after_tls(
    mail_servers: MailServers,
) -> None:
    reader, writer = await asyncio.open_connection(mail_servers.host, mail_servers.ports.submission)
    try:
        await reader.readline()
        writer.write(b"EHLO probe.test\r\n")
        lines = []
        while not (line := await asyncio.wait_for(reader.readline(), 5)).startswith(b"250 "):
            lines.append(line)
        lines.append(line)
    finally:
        writer.close()
        await writer.wait_closed()
    assert b"250-STARTTLS\r\n" in lines
    assert not any(b"AUTH" in line for line in lines)  # smtpd_tls_auth_only


def test_a_delivered_message_lands_in_new(mail: MailServers) -> None:
    path = mail.deliver("Subject: hello\r\n\r\nbody\r\n")
    assert path.parent == mail.maildir / "new"
    assert mail.account.files() == [path]
    assert path.read_bytes() == b"Subject: hello\n\nbody\n"
