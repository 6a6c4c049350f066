"""The POP3 probe and client: real Dovecot on loopback, and servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest

from probed.daemon.runner import TestOutcome, run_test
from probes.base import Transcript
from probes.pop3 import MAX_RESPONSE, PROBE, Pop3Check, Pop3Client, Pop3Error
from tests.fakeservers import (
    HugeLine,
    Reply,
    ScriptedLineServer,
    close_after,
    drip,
    fake_server,
    hang,
    send,
    tls_handshake_failure,
)
from tests.mailservers import MailServers

PASSWORD = "pop-Secret-42"
HOST = "127.0.0.1"


class FakePop3(ScriptedLineServer):
    """A scripted POP3 server: one reply per command name, everything received kept."""

    GREETING = b"+OK fake POP3 ready"
    UNKNOWN = b"-ERR unknown command"
    DEFAULTS: ClassVar[dict[str, Reply]] = {
        "CAPA": b"+OK\r\nUSER\r\nTOP\r\nUIDL\r\n.",
        "USER": b"+OK",
        "PASS": b"+OK logged in",
        "STAT": b"+OK 0 0",
        "QUIT": b"+OK bye",
    }


@pytest.fixture
def password_file(tmp_path: Path) -> str:
    path = tmp_path / "pop3.pass"
    path.write_text(PASSWORD + "\n")
    return str(path)


@pytest.fixture
def make_check(password_file: str) -> Callable[..., Pop3Check]:
    def make(port: int, **fields: Any) -> Pop3Check:
        values: dict[str, Any] = {
            "name": "pop3",
            "type": "pop3",
            "host": HOST,
            "port": port,
            "username": "probe@example.test",
            "password_file": password_file,
            "timeout": 0.5,
            **fields,
        }
        return Pop3Check.model_validate(values)

    return make


async def probe(check: Pop3Check) -> tuple[TestOutcome, Transcript]:
    transcript = Transcript(check.secrets())
    return await run_test(PROBE, check, transcript), transcript


# --- config -------------------------------------------------------------------


def test_default_port_is_110_and_995_with_implicit_tls(password_file: str) -> None:
    base = {"name": "p", "type": "pop3", "host": "mail", "username": "u"}
    plain = Pop3Check.model_validate({**base, "password_file": password_file})
    tls = Pop3Check.model_validate({**base, "password_file": password_file, "tls": True})
    assert (plain.port, tls.port) == (110, 995)
    assert plain.target() == "mail:110"


def test_check_without_credentials_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="needs username and password_file"):
        Pop3Check.model_validate({"name": "p", "type": "pop3", "host": "mail"})


def test_password_is_a_secret(make_check: Callable[..., Pop3Check]) -> None:
    assert make_check(110).secrets() == (PASSWORD,)


# --- against misbehaving servers ------------------------------------------------


async def test_login_stat_and_quit_pass_on_an_empty_mailbox(
    make_check: Callable[..., Pop3Check],
) -> None:
    server = FakePop3()
    async with fake_server(server) as port:
        outcome, transcript = await probe(make_check(port))
    assert outcome.ok, outcome.result.reason
    assert dict(outcome.result.details) == {"messages": 0, "mailbox_bytes": 0}
    assert server.received == [
        "CAPA",
        "USER probe@example.test",
        f"PASS {PASSWORD}",
        "STAT",
        "QUIT",
    ]
    assert "C: PASS ********" in transcript.lines
    assert not any(PASSWORD in line for line in transcript.lines)


async def test_headers_of_first_message_are_fetched_with_top_and_unstuffed(
    make_check: Callable[..., Pop3Check],
) -> None:
    headers = b"Subject: hi\r\n..leading dot\r\n\r\n"
    top = b"+OK\r\nSubject: hi\r\n...leading dot\r\n\r\n."
    server = FakePop3(STAT=b"+OK 2 4096", TOP=top)
    async with fake_server(server) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details["messages"] == 2
    assert outcome.result.details["mailbox_bytes"] == 4096
    assert outcome.result.details["header_bytes"] == len(headers)
    assert "TOP 1 0" in server.received
    assert not any(line.startswith(("RETR", "DELE")) for line in server.received)


async def test_silent_server_times_out(make_check: Callable[..., Pop3Check]) -> None:
    async with fake_server(hang) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "timeout after 0.5s"


async def test_server_dripping_one_byte_per_second_times_out(
    make_check: Callable[..., Pop3Check],
) -> None:
    async with fake_server(drip(b"+OK slow server ready\r\n")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "timeout after 0.5s"


async def test_err_greeting_is_the_reason(make_check: Callable[..., Pop3Check]) -> None:
    async with fake_server(FakePop3(greeting=b"-ERR [SYS/TEMP] too many connections")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "POP3 greeting: -ERR [SYS/TEMP] too many connections"


async def test_garbage_greeting_is_quoted_in_the_reason(
    make_check: Callable[..., Pop3Check],
) -> None:
    async with fake_server(send(b"SSH-2.0-OpenSSH_9.2p1\r\n")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "POP3 greeting: expected +OK, got 'SSH-2.0-OpenSSH_9.2p1'"


async def test_close_in_the_middle_of_the_greeting(make_check: Callable[..., Pop3Check]) -> None:
    async with fake_server(close_after(b"+OK half a gree")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "connection closed by server"


async def test_huge_line_fails_fast_with_bounded_memory(
    make_check: Callable[..., Pop3Check],
) -> None:
    process = psutil.Process()
    async with fake_server(HugeLine(prefix=b"+OK ")) as port:
        await probe(make_check(port))  # warm-up: first-use allocations are not growth
        before = process.memory_info().rss
        outcome, _ = await probe(make_check(port))
        grown = process.memory_info().rss - before
    assert outcome.result.reason == "POP3 line too long"
    assert outcome.duration < 0.25
    assert grown < 4 * 1024 * 1024, f"RSS grew by {grown} bytes"


async def test_huge_multiline_response_is_cut_at_the_bound(
    make_check: Callable[..., Pop3Check],
) -> None:
    async def endless_top(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK\r\n")
        line = b"X-Filler: " + b"y" * 1000 + b"\r\n"
        for _ in range(2 * MAX_RESPONSE // len(line)):
            writer.write(line)
            await writer.drain()
        await reader.read()

    async with fake_server(FakePop3(STAT=b"+OK 1 999999999", TOP=endless_top)) as port:
        outcome, _ = await probe(make_check(port, timeout=5))
    assert outcome.result.reason == f"POP3 response too large (over {MAX_RESPONSE} bytes)"


async def test_wrong_password_reports_the_servers_words(
    make_check: Callable[..., Pop3Check],
) -> None:
    server = FakePop3(PASS=b"-ERR [AUTH] Authentication failed.")
    async with fake_server(server) as port:
        outcome, transcript = await probe(make_check(port))
    assert outcome.result.reason == "POP3 -ERR [AUTH] Authentication failed."
    assert "STAT" not in server.received
    assert not any(PASSWORD in line for line in transcript.lines)


async def test_starttls_without_stls_capability_fails(
    make_check: Callable[..., Pop3Check], ca_file: str
) -> None:
    server = FakePop3()
    async with fake_server(server) as port:
        outcome, _ = await probe(make_check(port, starttls=True, ca_file=ca_file))
    assert outcome.result.reason == "POP3 server does not offer STLS"
    assert not any(line.startswith(("USER", "PASS")) for line in server.received)


async def test_data_injected_after_stls_reply_is_refused(
    make_check: Callable[..., Pop3Check], ca_file: str
) -> None:
    server = FakePop3(
        CAPA=b"+OK\r\nSTLS\r\nUSER\r\n.", STLS=b"+OK begin TLS\r\n+OK injected in clear text"
    )
    async with fake_server(server) as port:
        outcome, _ = await probe(make_check(port, starttls=True, ca_file=ca_file))
    assert outcome.result.reason == "POP3 server sent data after STLS reply"
    assert not any(line.startswith(("USER", "PASS")) for line in server.received)


async def test_tls_alert_during_stls_is_a_handshake_failure(
    make_check: Callable[..., Pop3Check], ca_file: str
) -> None:
    async def stls_then_alert(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK begin TLS\r\n")
        await writer.drain()
        await tls_handshake_failure(reader, writer)
        await reader.read()

    server = FakePop3(CAPA=b"+OK\r\nSTLS\r\n.", STLS=stls_then_alert)
    async with fake_server(server) as port:
        outcome, _ = await probe(make_check(port, starttls=True, ca_file=ca_file))
    assert outcome.result.reason.startswith("TLS handshake failed: "), outcome.result.reason
    assert "HANDSHAKE_FAILURE" in outcome.result.reason


async def test_implicit_tls_handshake_failure(
    make_check: Callable[..., Pop3Check], ca_file: str
) -> None:
    async with fake_server(tls_handshake_failure) as port:
        outcome, _ = await probe(make_check(port, tls=True, ca_file=ca_file))
    assert outcome.result.reason.startswith("TLS handshake failed: "), outcome.result.reason


async def test_implicit_tls_reports_version_and_certificate_expiry(
    make_check: Callable[..., Pop3Check], ca_file: str, server_tls: ssl.SSLContext
) -> None:
    async with fake_server(FakePop3(), ssl_context=server_tls) as port:
        outcome, _ = await probe(make_check(port, tls=True, ca_file=ca_file))
    assert outcome.ok, outcome.result.reason
    assert str(outcome.result.details["tls_version"]).startswith("TLSv1.")
    assert isinstance(outcome.result.details["cert_not_after"], float)


async def test_untrusted_certificate_fails_unless_verification_is_off(
    make_check: Callable[..., Pop3Check], server_tls: ssl.SSLContext
) -> None:
    async with fake_server(FakePop3(), ssl_context=server_tls) as port:
        verified, _ = await probe(make_check(port, tls=True))
        unverified, _ = await probe(make_check(port, tls=True, tls_verify=False))
    assert verified.result.reason.startswith("TLS handshake failed: "), verified.result.reason
    assert "certificate" in verified.result.reason
    assert unverified.ok, unverified.result.reason


async def test_quit_refused_after_headers_is_only_noted(
    make_check: Callable[..., Pop3Check],
) -> None:
    async with fake_server(FakePop3(QUIT=b"-ERR some deleted messages not removed")) as port:
        outcome, transcript = await probe(make_check(port))
    assert outcome.ok, outcome.result.reason
    assert any(line.startswith("* ignored at QUIT: POP3 QUIT: -ERR") for line in transcript.lines)


async def test_client_refuses_line_breaks_in_arguments() -> None:
    async with fake_server(FakePop3()) as port, await Pop3Client.connect(HOST, port) as client:
        with pytest.raises(ValueError, match="line break"):
            await client.login("probe\r\nDELE 1", "x")


async def test_client_error_carries_the_rfc2449_response_code() -> None:
    server = FakePop3(USER=b"-ERR [IN-USE] mailbox locked by another session")
    async with fake_server(server) as port, await Pop3Client.connect(HOST, port) as client:
        with pytest.raises(Pop3Error) as caught:
            await client.login("probe", "x")
    assert caught.value.code == "IN-USE"
    assert caught.value.command == "USER"
    assert str(caught.value) == "POP3 -ERR [IN-USE] mailbox locked by another session"


async def test_client_uidl_retr_dele_against_a_scripted_server() -> None:
    server = FakePop3(
        UIDL=b"+OK\r\n1 aaa\r\n2 bbb\r\n.",
        RETR=b"+OK 20 octets\r\nSubject: x\r\n\r\n..body\r\n.",
        DELE=b"+OK marked",
    )
    async with fake_server(server) as port, await Pop3Client.connect(HOST, port) as client:
        assert client.greeting == "fake POP3 ready"
        assert await client.uidl() == {1: "aaa", 2: "bbb"}
        assert await client.retr(2) == b"Subject: x\r\n\r\n.body\r\n"
        await client.dele(2)
        await client.quit()
    assert server.received == ["UIDL", "RETR 2", "DELE 2", "QUIT"]


# --- against real Dovecot ---------------------------------------------------------------

MESSAGE = "From: a@mail.test\nTo: probe@mail.test\nSubject: probe {n}\n\n.line with a dot\n"


@pytest.fixture
def dovecot(mail: MailServers) -> tuple[MailServers, Callable[..., Pop3Check]]:
    def make(port_name: str, **fields: Any) -> Pop3Check:
        values: dict[str, Any] = {
            "name": "pop3",
            "type": "pop3",
            "host": mail.host,
            "port": getattr(mail.ports, port_name),
            "username": mail.user,
            "password_file": str(mail.password_file),
            "ca_file": str(mail.ca_file),
            "timeout": 10,
            **fields,
        }
        return Pop3Check.model_validate(values)

    return mail, make


@pytest.mark.servers
@pytest.mark.parametrize(
    ("port_name", "fields"),
    [("pop3", {}), ("pop3", {"starttls": True}), ("pop3s", {"tls": True})],
    ids=["plain", "stls", "pop3s"],
)
async def test_dovecot_empty_mailbox_passes(
    dovecot: tuple[MailServers, Callable[..., Pop3Check]], port_name: str, fields: dict[str, Any]
) -> None:
    mail, make = dovecot
    outcome, transcript = await probe(make(port_name, **fields))
    assert outcome.ok, (outcome.result.reason, transcript.lines, mail.logs())
    details = outcome.result.details
    assert (details["messages"], details["mailbox_bytes"]) == (0, 0)
    assert "header_bytes" not in details
    if fields:
        assert str(details["tls_version"]).startswith("TLSv1.")
        assert isinstance(details["cert_not_after"], float)
    else:
        assert "tls_version" not in details
    assert not any(mail.password in line for line in transcript.lines)


@pytest.mark.servers
async def test_dovecot_headers_are_retrieved_and_the_message_stays(
    dovecot: tuple[MailServers, Callable[..., Pop3Check]],
) -> None:
    mail, make = dovecot
    mail.deliver(MESSAGE.format(n=1))
    outcome, transcript = await probe(make("pop3", starttls=True))
    assert outcome.ok, (outcome.result.reason, transcript.lines, mail.logs())
    assert outcome.result.details["messages"] == 1
    header_bytes = outcome.result.details["header_bytes"]
    assert isinstance(header_bytes, int)
    assert 0 < header_bytes < len(MESSAGE) + 10
    assert "C: TOP 1 0" in transcript.lines
    assert len(mail.account.files()) == 1  # TOP neither deletes nor expunges
    again, _ = await probe(make("pop3", starttls=True))
    assert again.result.details["messages"] == 1


@pytest.mark.servers
async def test_dovecot_wrong_password(
    dovecot: tuple[MailServers, Callable[..., Pop3Check]], tmp_path: Path
) -> None:
    _, make = dovecot
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    outcome, transcript = await probe(make("pop3s", tls=True, password_file=str(wrong)))
    assert outcome.result.reason == "POP3 -ERR [AUTH] Authentication failed."
    assert not any("not-the-password" in line for line in transcript.lines)


@pytest.mark.servers
async def test_dovecot_certificate_without_ca_file_is_untrusted(
    dovecot: tuple[MailServers, Callable[..., Pop3Check]],
) -> None:
    _, make = dovecot
    outcome, _ = await probe(make("pop3", starttls=True, ca_file=None))
    assert outcome.result.reason.startswith("TLS handshake failed: "), outcome.result.reason


@pytest.mark.servers
async def test_dovecot_client_receive_and_delete_round(
    dovecot: tuple[MailServers, Callable[..., Pop3Check]],
) -> None:
    """The client calls the mailflow probe makes: find by UIDL, RETR, DELE, QUIT commits."""
    mail, _ = dovecot
    mail.deliver(MESSAGE.format(n=1))
    mail.deliver(MESSAGE.format(n=2))
    context = ssl.create_default_context(cafile=str(mail.ca_file))
    async with await Pop3Client.connect(mail.host, mail.ports.pop3s, ssl_context=context) as client:
        assert "STLS" not in (await client.capa())  # already TLS
        await client.login(mail.user, mail.password)
        assert (await client.stat())[0] == 2
        uids = await client.uidl()
        assert sorted(uids) == [1, 2]
        assert len(set(uids.values())) == 2
        body = await client.retr(2)
        assert b"Subject: probe" in body
        assert b"\n.line with a dot" in body  # dot-unstuffed
        await client.dele(2)
        await client.quit()
    assert len(mail.account.files()) == 1
