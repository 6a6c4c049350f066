"""The SMTP probe: real Postfix and aiosmtpd on loopback, and servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest
from aiosmtpd.smtp import SMTP as AiosmtpdServer
from aiosmtpd.smtp import AuthResult, LoginPassword

from probed.daemon.runner import TestOutcome, run_test
from probes.base import Transcript
from probes.smtp import PROBE, SmtpCheck
from tests.fakeservers import (
    HugeLine,
    Reply,
    ScriptedLineServer,
    close_after,
    closed_port,
    drip,
    fake_server,
    hang,
    send,
    tls_handshake_failure,
)
from tests.mailservers import MailServers

HOST = "127.0.0.1"
USER = "probe@example.test"
PASSWORD = "smtp-Secret-42"


class FakeSmtp(ScriptedLineServer):
    """A scripted SMTP server: one reply per verb, everything received kept."""

    GREETING = b"220 fake.example.test ESMTP"
    UNKNOWN = b"502 5.5.2 command not recognized"
    DEFAULTS: ClassVar[dict[str, Reply]] = {
        "EHLO": b"250-fake.example.test\r\n250-PIPELINING\r\n250 8BITMIME",
        "HELO": b"250 fake.example.test",
        "QUIT": b"221 2.0.0 bye",
    }


@pytest.fixture
def password_file(tmp_path: Path) -> str:
    path = tmp_path / "smtp.pass"
    path.write_text(PASSWORD + "\n")
    return str(path)


def make_check(port: int, **fields: Any) -> SmtpCheck:
    values: dict[str, Any] = {
        "name": "smtp",
        "type": "smtp",
        "host": HOST,
        "port": port,
        "timeout": 0.5,
        **fields,
    }
    return SmtpCheck.model_validate(values)


async def probe(check: SmtpCheck) -> tuple[TestOutcome, Transcript]:
    transcript = Transcript(check.secrets())
    return await run_test(PROBE, check, transcript), transcript


def assert_no_secret(transcript: Transcript, password: str, user: str = USER) -> None:
    plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    login = base64.b64encode(password.encode()).decode()
    for line in transcript.lines:
        assert password not in line
        assert plain not in line
        assert login not in line


# --- config -------------------------------------------------------------------


def test_default_port_is_25_and_465_with_implicit_tls() -> None:
    base = {"name": "s", "type": "smtp", "host": "mx"}
    assert SmtpCheck.model_validate(base).port == 25
    assert SmtpCheck.model_validate({**base, "tls": True}).port == 465
    assert SmtpCheck.model_validate({**base, "starttls": True, "port": 587}).port == 587


def test_helo_name_defaults_to_a_reserved_fqdn() -> None:
    check = SmtpCheck.model_validate({"name": "s", "type": "smtp", "host": "mx"})
    assert check.helo_name == "probed.localhost"


@pytest.mark.parametrize("bad", ["two words", "crlf\r\nRSET", ""])
def test_helo_name_must_be_a_hostname(bad: str) -> None:
    with pytest.raises(ValueError, match="helo_name"):
        SmtpCheck.model_validate({"name": "s", "type": "smtp", "host": "mx", "helo_name": bad})


def test_envelope_needs_both_addresses() -> None:
    with pytest.raises(ValueError, match="mail_from and rcpt_to go together"):
        SmtpCheck.model_validate({"name": "s", "type": "smtp", "host": "mx", "mail_from": "a@b"})


def test_secrets_cover_the_base64_auth_payloads(password_file: str) -> None:
    check = make_check(25, username=USER, password_file=password_file)
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    assert set(check.secrets()) == {PASSWORD, plain, base64.b64encode(PASSWORD.encode()).decode()}


# --- against misbehaving servers ------------------------------------------------


async def test_banner_and_ehlo_extensions_are_reported() -> None:
    server = FakeSmtp()
    async with fake_server(server) as port:
        outcome, transcript = await probe(make_check(port))
    assert outcome.ok, outcome.result.reason
    assert dict(outcome.result.details) == {
        "banner": "fake.example.test ESMTP",
        "extensions": "PIPELINING,8BITMIME",
    }
    assert server.received == ["EHLO probed.localhost", "QUIT"]
    assert transcript.lines[1:4] == [
        "S: 220 fake.example.test ESMTP",
        "C: EHLO probed.localhost",
        "S: 250-fake.example.test",
    ]


async def test_too_many_connections_banner_is_the_reason() -> None:
    async with fake_server(send(b"421 too many connections\r\n")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "SMTP 421 too many connections"


async def test_multiline_refusal_banner_is_joined() -> None:
    banner = b"554-mx.example.test no SMTP service here\r\n554 5.3.2 try later\r\n"
    async with fake_server(send(banner)) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "SMTP 554 mx.example.test no SMTP service here 5.3.2 try later"


async def test_garbage_greeting_is_quoted_in_the_reason() -> None:
    async with fake_server(send(b"SSH-2.0-OpenSSH_9.2p1\r\n")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "SMTP greeting malformed: 'SSH-2.0-OpenSSH_9.2p1'"


async def test_silent_server_times_out() -> None:
    async with fake_server(hang) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "timeout after 0.5s"


async def test_server_dripping_one_byte_per_second_times_out() -> None:
    async with fake_server(drip(b"220 slow.example.test ESMTP\r\n")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "timeout after 0.5s"


async def test_close_in_the_middle_of_the_banner() -> None:
    async with fake_server(close_after(b"220 half a ban")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "connection closed by server"


async def test_nothing_listening_is_connection_refused() -> None:
    outcome, _ = await probe(make_check(await closed_port()))
    assert outcome.result.reason == "connection refused"


async def test_huge_line_fails_fast_with_bounded_memory() -> None:
    process = psutil.Process()
    async with fake_server(HugeLine(prefix=b"220 ")) as port:
        await probe(make_check(port))  # warm-up: first-use allocations are not growth
        before = process.memory_info().rss
        outcome, _ = await probe(make_check(port))
        grown = process.memory_info().rss - before
    assert outcome.result.reason == "SMTP line too long"
    assert outcome.duration < 0.25
    assert grown < 4 * 1024 * 1024, f"RSS grew by {grown} bytes"


async def test_ehlo_not_understood_falls_back_to_helo() -> None:
    server = FakeSmtp(EHLO=b"500 5.5.1 what?")
    async with fake_server(server) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details["extensions"] == ""
    assert server.received == ["EHLO probed.localhost", "HELO probed.localhost", "QUIT"]


async def test_ehlo_refused_is_the_reason() -> None:
    async with fake_server(FakeSmtp(EHLO=b"554 5.7.1 you are blocked")) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.result.reason == "SMTP EHLO refused: 554 5.7.1 you are blocked"


async def test_starttls_not_offered_fails_before_anything_else() -> None:
    server = FakeSmtp()
    async with fake_server(server) as port:
        outcome, _ = await probe(make_check(port, starttls=True))
    assert outcome.result.reason == "SMTP server does not offer STARTTLS"
    assert server.received == ["EHLO probed.localhost"]


async def test_starttls_refused_is_the_reason() -> None:
    server = FakeSmtp(
        EHLO=b"250-fake.example.test\r\n250 STARTTLS", STARTTLS=b"454 4.7.0 TLS not available"
    )
    async with fake_server(server) as port:
        outcome, _ = await probe(make_check(port, starttls=True))
    assert outcome.result.reason == "SMTP STARTTLS refused: 454 4.7.0 TLS not available"


async def test_tls_alert_during_starttls_is_a_handshake_failure(ca_file: str) -> None:
    async def go_ahead_then_alert(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(b"220 2.0.0 go ahead\r\n")
        await writer.drain()
        await tls_handshake_failure(reader, writer)
        await reader.read()

    server = FakeSmtp(EHLO=b"250-fake.example.test\r\n250 STARTTLS", STARTTLS=go_ahead_then_alert)
    async with fake_server(server) as port:
        outcome, _ = await probe(make_check(port, starttls=True, ca_file=ca_file))
    assert outcome.result.reason.startswith("TLS handshake failed: "), outcome.result.reason
    assert "HANDSHAKE_FAILURE" in outcome.result.reason


async def test_implicit_tls_handshake_failure(ca_file: str) -> None:
    async with fake_server(tls_handshake_failure) as port:
        outcome, _ = await probe(make_check(port, tls=True, ca_file=ca_file))
    assert outcome.result.reason.startswith("TLS handshake failed: "), outcome.result.reason


async def test_untrusted_certificate_fails_unless_verification_is_off(
    server_tls: ssl.SSLContext,
) -> None:
    async with fake_server(FakeSmtp(), ssl_context=server_tls) as port:
        verified, _ = await probe(make_check(port, tls=True))
        unverified, _ = await probe(make_check(port, tls=True, tls_verify=False))
    assert verified.result.reason.startswith("TLS handshake failed: "), verified.result.reason
    assert "certificate" in verified.result.reason
    assert unverified.ok, unverified.result.reason
    assert str(unverified.result.details["tls_version"]).startswith("TLSv1.")


async def test_auth_not_offered_fails(password_file: str) -> None:
    async with fake_server(FakeSmtp()) as port:
        outcome, _ = await probe(make_check(port, username=USER, password_file=password_file))
    assert outcome.result.reason == "SMTP server does not offer AUTH"


async def test_auth_refusal_echoing_the_payload_stays_masked(password_file: str) -> None:
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
    server = FakeSmtp(
        EHLO=b"250-fake.example.test\r\n250 AUTH PLAIN",
        AUTH=b"535 5.7.8 bad credentials " + plain,
    )
    async with fake_server(server) as port:
        outcome, transcript = await probe(
            make_check(port, username=USER, password_file=password_file)
        )
    assert outcome.result.reason.startswith("SMTP AUTH failed: 535 5.7.8 bad credentials")
    assert server.received[1] == f"AUTH PLAIN {plain.decode()}"
    assert "C: AUTH PLAIN ********" in transcript.lines
    assert "S: 535 5.7.8 bad credentials ********" in transcript.lines
    assert_no_secret(transcript, PASSWORD)


async def test_quit_dropped_after_the_dialogue_is_only_noted() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    async with fake_server(FakeSmtp(QUIT=hang_up)) as port:
        outcome, _ = await probe(make_check(port))
    assert outcome.ok, outcome.result.reason


# --- against aiosmtpd with implicit TLS (Postfix here has no port 465) ----------


class Mailbox:
    """aiosmtpd handler: mail.test only, and DATA must never arrive."""

    def __init__(self) -> None:
        self.data_seen = False

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if not address.endswith("@example.test"):
            return f"550 5.1.2 <{address}>: Recipient address rejected: Domain not found"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.data_seen = True
        return "250 OK"


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)  # handled=True would mean "I replied"


@contextlib.asynccontextmanager
async def aiosmtpd_tls(
    server_tls: ssl.SSLContext, handler: Mailbox, **options: Any
) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: AiosmtpdServer(
            handler,
            hostname="mx.example.test",
            authenticator=_authenticate,
            auth_require_tls=False,  # aiosmtpd only counts STARTTLS; this is implicit TLS
            loop=loop,
            **options,
        ),
        HOST,
        0,
        ssl=server_tls,
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("mechanism", "exclude"), [("PLAIN", ["LOGIN"]), ("LOGIN", ["PLAIN"])])
async def test_implicit_tls_with_auth_and_envelope(
    server_tls: ssl.SSLContext, ca_file: str, password_file: str, mechanism: str, exclude: list[str]
) -> None:
    handler = Mailbox()
    async with aiosmtpd_tls(server_tls, handler, auth_exclude_mechanism=exclude) as port:
        check = make_check(
            port,
            tls=True,
            ca_file=ca_file,
            username=USER,
            password_file=password_file,
            mail_from=USER,
            rcpt_to="someone@example.test",
            timeout=5,
        )
        outcome, transcript = await probe(check)
    assert outcome.ok, (outcome.result.reason, transcript.lines)
    assert str(outcome.result.details["tls_version"]).startswith("TLSv1.")
    assert isinstance(outcome.result.details["cert_not_after"], float)
    assert f"C: AUTH {mechanism} ********" in transcript.lines
    assert "C: RSET" in transcript.lines
    assert not handler.data_seen
    assert_no_secret(transcript, PASSWORD)


async def test_implicit_tls_wrong_password(
    server_tls: ssl.SSLContext, ca_file: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    async with aiosmtpd_tls(server_tls, Mailbox()) as port:
        check = make_check(
            port, tls=True, ca_file=ca_file, username=USER, password_file=str(wrong), timeout=5
        )
        outcome, transcript = await probe(check)
    assert outcome.result.reason == "SMTP AUTH failed: 535 5.7.8 Authentication credentials invalid"
    assert_no_secret(transcript, "not-the-password")


async def test_envelope_to_unknown_domain_is_refused(
    server_tls: ssl.SSLContext, ca_file: str
) -> None:
    handler = Mailbox()
    async with aiosmtpd_tls(server_tls, handler) as port:
        check = make_check(
            port, tls=True, ca_file=ca_file, mail_from="", rcpt_to="x@unknown.invalid", timeout=5
        )
        outcome, transcript = await probe(check)
    assert outcome.result.reason == (
        "SMTP RCPT TO refused: 550 5.1.2 <x@unknown.invalid>: "
        "Recipient address rejected: Domain not found"
    )
    assert "C: MAIL FROM:<>" in transcript.lines
    assert not handler.data_seen


# --- against real Postfix -------------------------------------------------------------


def postfix_check(mail: MailServers, port_name: str, **fields: Any) -> SmtpCheck:
    values: dict[str, Any] = {"ca_file": str(mail.ca_file), "timeout": 10, **fields}
    return make_check(getattr(mail.ports, port_name), **values)


@pytest.mark.servers
async def test_postfix_plain_banner_and_extensions(mail: MailServers) -> None:
    outcome, transcript = await probe(postfix_check(mail, "smtp"))
    assert outcome.ok, (outcome.result.reason, transcript.lines, mail.logs())
    assert outcome.result.details["banner"] == "mx.mail.test ESMTP probed-test"
    extensions = str(outcome.result.details["extensions"]).split(",")
    assert {"PIPELINING", "STARTTLS", "8BITMIME"} <= set(extensions)
    assert "tls_version" not in outcome.result.details


@pytest.mark.servers
async def test_postfix_starttls(mail: MailServers) -> None:
    outcome, transcript = await probe(postfix_check(mail, "smtp", starttls=True))
    assert outcome.ok, (outcome.result.reason, transcript.lines, mail.logs())
    assert str(outcome.result.details["tls_version"]).startswith("TLSv1.")
    assert isinstance(outcome.result.details["cert_not_after"], float)
    assert "STARTTLS" not in str(outcome.result.details["extensions"]).split(",")


@pytest.mark.servers
async def test_postfix_starttls_with_untrusted_certificate_fails(mail: MailServers) -> None:
    outcome, _ = await probe(postfix_check(mail, "smtp", starttls=True, ca_file=None))
    assert outcome.result.reason.startswith("TLS handshake failed: "), outcome.result.reason


@pytest.mark.servers
async def test_postfix_submission_auth_after_starttls(mail: MailServers) -> None:
    check = postfix_check(
        mail, "submission", starttls=True, username=mail.user, password_file=str(mail.password_file)
    )
    outcome, transcript = await probe(check)
    assert outcome.ok, (outcome.result.reason, transcript.lines, mail.logs())
    assert "C: AUTH PLAIN ********" in transcript.lines
    assert any(line.startswith("S: 235 ") for line in transcript.lines)
    assert_no_secret(transcript, mail.password, mail.user)


@pytest.mark.servers
async def test_postfix_submission_wrong_password(mail: MailServers, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    check = postfix_check(
        mail, "submission", starttls=True, username=mail.user, password_file=str(wrong)
    )
    outcome, transcript = await probe(check)
    assert outcome.result.reason.startswith("SMTP AUTH failed: 535 5.7.8 "), outcome.result.reason
    assert_no_secret(transcript, "not-the-password", mail.user)


@pytest.mark.servers
async def test_postfix_submission_offers_no_auth_before_starttls(mail: MailServers) -> None:
    check = postfix_check(
        mail, "submission", username=mail.user, password_file=str(mail.password_file)
    )
    outcome, _ = await probe(check)
    assert outcome.result.reason == "SMTP server does not offer AUTH"


@pytest.mark.servers
async def test_postfix_accepts_envelope_and_nothing_is_delivered(mail: MailServers) -> None:
    check = postfix_check(mail, "smtp", starttls=True, mail_from=mail.user, rcpt_to=mail.user)
    outcome, transcript = await probe(check)
    assert outcome.ok, (outcome.result.reason, transcript.lines, mail.logs())
    sent = [line for line in transcript.lines if line.startswith("C: ")]
    assert sent[-3:] == [f"C: RCPT TO:<{mail.user}>", "C: RSET", "C: QUIT"]
    assert not any(line.startswith("C: DATA") for line in transcript.lines)
    await asyncio.sleep(0.3)
    assert mail.account.files() == []


@pytest.mark.servers
async def test_postfix_refuses_unknown_recipient(mail: MailServers) -> None:
    rcpt = f"nobody@{mail.domain}"
    outcome, _ = await probe(postfix_check(mail, "smtp", mail_from=mail.user, rcpt_to=rcpt))
    assert outcome.result.reason.startswith(
        f"SMTP RCPT TO refused: 550 5.1.1 <{rcpt}>: Recipient address rejected"
    ), outcome.result.reason
