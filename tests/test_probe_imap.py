"""The IMAP probe: real Dovecot on loopback, and servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar, TypeAlias

import pytest
from pydantic import ValidationError

from probed import eventloop
from probed.daemon.runner import TestOutcome, run_test
from probes import REGISTRY
from probes.base import Transcript
from probes.imap import MAX_LINE, MAX_LINES, MAX_SESSION, PROBE, ImapCheck
from tests.conftest import require
from tests.fakeservers import (
    HugeLine,
    LoopbackPKI,
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
TIMEOUT = 1.0
MARGIN = 1.0  # generous: a loaded CI machine must not turn a timeout test red
MESSAGE = "From: sender@example.org\r\nSubject: hello\r\n\r\nbody\r\n"

Reply: TypeAlias = (
    bytes | Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
)


def imap_check(**fields: object) -> ImapCheck:
    return ImapCheck.model_validate({"name": "imap", "type": "imap", "host": HOST, **fields})


def real_check(mail: MailServers, **fields: object) -> ImapCheck:
    defaults = {
        "port": mail.ports.imap,
        "username": mail.user,
        "password_file": str(mail.password_file),
        "timeout": 10,
    }
    return imap_check(**{**defaults, **fields})


async def run(check: ImapCheck) -> tuple[TestOutcome, Transcript]:
    transcript = Transcript(check.secrets())
    return await run_test(PROBE, check, transcript), transcript


def seen_flags(mail: MailServers) -> list[str]:
    """Maildir info flags of every message ("" for one still in new/)."""
    return [p.name.partition(":2,")[2] for p in mail.account.files()]


class FakeImap:
    """A scripted IMAP server: one reply per command name, the client's tag filled in."""

    DEFAULTS: ClassVar[dict[str, Reply]] = {
        "CAPABILITY": b"* CAPABILITY IMAP4rev1 STARTTLS\r\n{tag} OK done",
        "LOGIN": b"{tag} OK logged in",
        "EXAMINE": b"* 0 EXISTS\r\n{tag} OK [READ-ONLY] done",
        "LOGOUT": b"* BYE bye\r\n{tag} OK done",
    }

    def __init__(self, greeting: bytes = b"* OK fake IMAP ready", **replies: Reply) -> None:
        self.greeting = greeting
        self.replies = {**self.DEFAULTS, **replies}

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting + b"\r\n")
        while line := await reader.readline():
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            command = rest.split(b" ")[0].decode().upper()
            reply = self.replies.get(command, b"{tag} BAD unknown command")
            if callable(reply):
                await reply(tag, reader, writer)
                continue
            writer.write(reply.replace(b"{tag}", tag) + b"\r\n")
            await writer.drain()


# --- real Dovecot ------------------------------------------------------------


@pytest.mark.servers
async def test_plain_login_on_empty_mailbox_passes(mail: MailServers) -> None:
    outcome, transcript = await run(real_check(mail))
    assert outcome.ok, (outcome.result.reason, transcript.lines)
    assert outcome.result.details["exists"] == 0
    assert "header_bytes" not in outcome.result.details
    assert "tls_version" not in outcome.result.details


@pytest.mark.servers
async def test_newest_header_is_fetched_and_stays_unseen(mail: MailServers) -> None:
    mail.deliver("Subject: older\r\n\r\nx\r\n", flags="S")
    mail.deliver(MESSAGE)
    outcome, transcript = await run(real_check(mail))
    assert outcome.ok, (outcome.result.reason, transcript.lines)
    assert outcome.result.details["exists"] == 2
    # the newest message's header, CRLF and the blank line included
    assert outcome.result.details["header_bytes"] == len(MESSAGE.split("\r\n\r\n")[0]) + 4
    assert sorted(seen_flags(mail)) == ["", "S"]  # the new one has no \Seen flag
    assert any("BODY.PEEK[HEADER]" in line for line in transcript.lines)


@pytest.mark.servers
async def test_starttls_upgrades_and_reports_the_certificate(mail: MailServers) -> None:
    mail.deliver(MESSAGE)
    outcome, transcript = await run(real_check(mail, starttls=True, ca_file=str(mail.ca_file)))
    assert outcome.ok, (outcome.result.reason, transcript.lines)
    assert outcome.result.details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert isinstance(outcome.result.details["cert_not_after"], float)
    assert outcome.result.details["exists"] == 1
    commands = [line.split()[2] for line in transcript.lines if line.startswith("C:")]
    assert commands[:3] == ["CAPABILITY", "STARTTLS", "CAPABILITY"]
    assert seen_flags(mail) == [""]


@pytest.mark.servers
@pytest.mark.parametrize("mode", ["plain", "starttls", "tls"])
def test_the_daemons_event_loop_runs_it_too(mail: MailServers, mode: str) -> None:
    """The daemon runs on uvloop, whose transports are not asyncio's classes."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        require(False, "uvloop is not installed (pip install -e '.[speed]')")
    tls = {"ca_file": str(mail.ca_file)}
    fields = {"plain": {}, "starttls": {"starttls": True, **tls}}.get(
        mode, {"port": mail.ports.imaps, "tls": True, **tls}
    )
    mail.deliver(MESSAGE)
    eventloop.install()
    try:
        outcome, transcript = asyncio.run(run(real_check(mail, **fields)))
    finally:
        asyncio.set_event_loop_policy(None)
    assert outcome.ok, (outcome.result.reason, transcript.lines)
    assert outcome.result.details["exists"] == 1
    assert outcome.result.details["header_bytes"] == len(MESSAGE.split("\r\n\r\n")[0]) + 4


@pytest.mark.servers
async def test_implicit_tls_on_imaps(mail: MailServers) -> None:
    check = real_check(mail, port=mail.ports.imaps, tls=True, ca_file=str(mail.ca_file))
    outcome, transcript = await run(check)
    assert outcome.ok, (outcome.result.reason, transcript.lines)
    assert outcome.result.details["tls_version"] in ("TLSv1.2", "TLSv1.3")


@pytest.mark.servers
@pytest.mark.parametrize("mode", ["tls", "starttls"])
async def test_untrusted_certificate_fails_the_handshake(mail: MailServers, mode: str) -> None:
    port = mail.ports.imaps if mode == "tls" else mail.ports.imap
    outcome, _ = await run(real_check(mail, port=port, **{mode: True}))
    assert not outcome.ok
    assert outcome.result.reason == ("TLS handshake failed: unable to get local issuer certificate")


@pytest.mark.servers
async def test_tls_verify_false_accepts_an_unknown_ca(mail: MailServers) -> None:
    check = real_check(mail, port=mail.ports.imaps, tls=True, tls_verify=False)
    outcome, _ = await run(check)
    assert outcome.ok, outcome.result.reason
    assert "cert_not_after" not in outcome.result.details  # not verified: not reported


@pytest.mark.servers
async def test_wrong_password_is_the_servers_refusal_and_stays_masked(
    mail: MailServers, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password\n")
    outcome, transcript = await run(real_check(mail, password_file=str(wrong)))
    assert not outcome.ok
    assert (
        outcome.result.reason == "IMAP LOGIN failed: [AUTHENTICATIONFAILED] Authentication failed."
    )
    text = "\n".join(transcript.lines)
    assert "not-the-password" not in text
    assert f'LOGIN "{mail.user}" ********' in text


@pytest.mark.servers
async def test_missing_mailbox_names_the_mailbox(mail: MailServers) -> None:
    outcome, _ = await run(real_check(mail, mailbox="Archive"))
    assert outcome.result.reason == "IMAP EXAMINE failed: Mailbox doesn't exist: Archive"


# --- servers that misbehave ------------------------------------------------


async def fault(handler: object, **fields: object) -> TestOutcome:
    async with fake_server(handler) as port:  # type: ignore[arg-type]
        check = imap_check(
            port=port,
            username="u",
            password_file=fields.pop("password_file"),
            timeout=TIMEOUT,
            **fields,
        )
        outcome, _ = await run(check)
    assert outcome.duration < TIMEOUT + MARGIN
    assert not outcome.ok
    return outcome


@pytest.fixture
def secret(tmp_path: Path) -> str:
    path = tmp_path / "imap.pass"
    path.write_text("s3cret\n")
    return str(path)


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (hang, f"timeout after {TIMEOUT:.1f}s"),
        (send(b"garbage\r\n"), "IMAP greeting: expected * OK, got 'garbage'"),
        (send(b"* BYE Too many connections\r\n"), "IMAP greeting: BYE Too many connections"),
        (close_after(b"* OK Dove"), "IMAP greeting: connection closed by server"),
        (drip(b"* OK slowly ready\r\n", interval=0.2), f"timeout after {TIMEOUT:.1f}s"),
    ],
    ids=["never-answers", "garbage", "bye", "closes-mid-greeting", "drip"],
)
async def test_broken_greeting(handler: object, reason: str, secret: str) -> None:
    outcome = await fault(handler, password_file=secret)
    assert outcome.result.reason == reason


async def test_ten_megabyte_line_is_cut_short(secret: str) -> None:
    huge = HugeLine(prefix=b"* OK ")
    tracemalloc.start()
    try:
        outcome = await fault(huge, password_file=secret)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.result.reason == f"IMAP greeting: line longer than {MAX_LINE} bytes"
    assert outcome.duration < TIMEOUT / 2  # cut at the limit, not at the deadline
    assert huge.sent < huge.size  # the probe hung up before the end of the line
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"


async def test_thousands_of_lines_in_one_answer_parse_without_recursing(secret: str) -> None:
    # aioimaplib, the parser before probes.imap's own, recursed once per line of a
    # chunk: 5 000 short lines used to end in "maximum recursion depth exceeded".
    lines = b"".join(b"* %d RECENT\r\n" % i for i in range(5_000))
    server = FakeImap(EXAMINE=lines + b"* 0 EXISTS\r\n{tag} OK [READ-ONLY] done")
    async with fake_server(server) as port:
        outcome, _ = await run(imap_check(port=port, username="u", password_file=secret))
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details["exists"] == 0


async def test_too_many_lines_is_a_response_too_large(secret: str) -> None:
    lines = b"* 1 RECENT\r\n" * (MAX_LINES + 10)
    outcome = await fault(FakeImap(EXAMINE=lines + b"{tag} OK done"), password_file=secret)
    assert outcome.result.reason == f"IMAP EXAMINE: response too large (over {MAX_LINES} lines)"


async def test_a_literal_beyond_the_session_bound_is_a_response_too_large(secret: str) -> None:
    huge = HugeLine(3 * MAX_SESSION, prefix=b"* 1 FETCH (BODY[HEADER] {%d}\r\n" % (4 * MAX_SESSION))

    async def fetch(tag: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await huge(reader, writer)

    server = FakeImap(EXAMINE=b"* 1 EXISTS\r\n{tag} OK done", FETCH=fetch)
    outcome = await fault(server, password_file=secret)
    assert outcome.result.reason == f"IMAP FETCH: response too large (over {MAX_SESSION} bytes)"
    assert huge.sent < huge.size


async def test_connection_refused(secret: str) -> None:
    check = imap_check(port=await closed_port(), username="u", password_file=secret)
    outcome, _ = await run(check)
    assert outcome.result.reason == "connection refused"


async def test_tls_handshake_failure(secret: str) -> None:
    outcome = await fault(tls_handshake_failure, password_file=secret, tls=True)
    assert outcome.result.reason == "TLS handshake failed: SSLV3_ALERT_HANDSHAKE_FAILURE"


async def test_expired_certificate(secret: str, tmp_path: Path) -> None:
    pki = LoopbackPKI.create(tmp_path)
    async with fake_server(FakeImap(), ssl_context=pki.expired_server_context()) as port:
        check = imap_check(
            port=port, tls=True, ca_file=pki.ca_file, username="u", password_file=secret
        )
        outcome, _ = await run(check)
    assert outcome.result.reason == "TLS handshake failed: certificate has expired"


async def test_starttls_handshake_failure(secret: str) -> None:
    async def starttls(
        tag: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(tag + b" OK begin TLS\r\n")
        await tls_handshake_failure(reader, writer)
        writer.close()

    outcome = await fault(FakeImap(STARTTLS=starttls), password_file=secret, starttls=True)
    assert outcome.result.reason == "TLS handshake failed: SSLV3_ALERT_HANDSHAKE_FAILURE"


async def test_starttls_not_offered(secret: str) -> None:
    server = FakeImap(CAPABILITY=b"* CAPABILITY IMAP4rev1\r\n{tag} OK done")
    outcome = await fault(server, password_file=secret, starttls=True)
    assert outcome.result.reason == "IMAP server does not offer STARTTLS"


async def test_data_injected_after_starttls_is_refused(secret: str) -> None:
    server = FakeImap(STARTTLS=b"{tag} OK begin TLS\r\n* OK injected")
    outcome = await fault(server, password_file=secret, starttls=True)
    assert outcome.result.reason == "IMAP server sent data after its STARTTLS answer"


async def test_connection_dropped_at_login_names_the_step(secret: str) -> None:
    async def drop(tag: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    outcome = await fault(FakeImap(LOGIN=drop), password_file=secret)
    assert outcome.result.reason == "IMAP LOGIN: connection closed by server"


async def test_login_refused_by_the_server(secret: str) -> None:
    server = FakeImap(LOGIN=b"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.")
    outcome = await fault(server, password_file=secret)
    assert (
        outcome.result.reason == "IMAP LOGIN failed: [AUTHENTICATIONFAILED] Authentication failed."
    )


async def test_logindisabled_says_tls_is_needed(secret: str) -> None:
    server = FakeImap(CAPABILITY=b"* CAPABILITY IMAP4rev1 LOGINDISABLED\r\n{tag} OK done")
    outcome = await fault(server, password_file=secret)
    assert outcome.result.reason == (
        "IMAP LOGIN disabled by the server until TLS (use tls or starttls)"
    )


async def test_examine_without_exists_is_a_failure(secret: str) -> None:
    server = FakeImap(EXAMINE=b"{tag} OK [READ-ONLY] done")
    outcome = await fault(server, password_file=secret)
    assert outcome.result.reason == "IMAP EXAMINE: no EXISTS count in the answer"


async def test_a_server_hanging_on_fetch_runs_into_the_timeout(secret: str) -> None:
    async def never(tag: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    server = FakeImap(EXAMINE=b"* 3 EXISTS\r\n{tag} OK done", FETCH=never)
    outcome = await fault(server, password_file=secret)
    assert outcome.result.reason == f"timeout after {TIMEOUT:.1f}s"


async def test_fake_implicit_tls_server_passes(secret: str, tmp_path: Path) -> None:
    pki = LoopbackPKI.create(tmp_path)
    server = FakeImap(
        EXAMINE=b"* 1 EXISTS\r\n{tag} OK done",
        FETCH=b"* 1 FETCH (BODY[HEADER] {12}\r\nSubject: x\r\n)\r\n{tag} OK done",
    )
    async with fake_server(server, ssl_context=pki.server_context()) as port:
        check = imap_check(
            port=port, tls=True, ca_file=pki.ca_file, username="u", password_file=secret
        )
        outcome, transcript = await run(check)
    assert outcome.ok, (outcome.result.reason, transcript.lines)
    assert outcome.result.details["header_bytes"] == 12
    assert "s3cret" not in "\n".join(transcript.lines)


# --- config ------------------------------------------------------------------


def test_port_defaults_by_mode(secret: str) -> None:
    assert imap_check(username="u", password_file=secret).port == 143
    assert imap_check(username="u", password_file=secret, tls=True).port == 993
    assert imap_check(username="u", password_file=secret, starttls=True).port == 143


def test_login_is_required() -> None:
    with pytest.raises(ValidationError, match="imap needs username and password_file"):
        imap_check()


def test_inline_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="inline passwords are not allowed"):
        imap_check(username="u", password="x")


def test_registered() -> None:
    assert REGISTRY["imap"] is PROBE
