"""The mailflow probe: a real round trip Postfix -> Maildir -> Dovecot, and broken legs."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError

from probed.daemon.runner import TestOutcome, run_test
from probes import REGISTRY
from probes.base import Transcript
from probes.mailflow import MARKER, PROBE, MailflowCheck
from tests.fakeservers import fake_server, hang, send, tls_handshake_failure
from tests.mailservers import MailServers

DEADLINE = 3.0
POLL = 0.1


def flow_check(
    send_leg: Mapping[str, object], receive: Mapping[str, object], **fields: object
) -> MailflowCheck:
    return MailflowCheck.model_validate(
        {
            "name": "roundtrip",
            "type": "mailflow",
            "timeout": DEADLINE,
            "poll_interval": POLL,
            "send": send_leg,
            "receive": receive,
            **fields,
        }
    )


def submission(mail: MailServers, **fields: object) -> dict[str, object]:
    """Authenticated submission with STARTTLS, from and to the test account."""
    return {
        "host": mail.host,
        "port": mail.ports.submission,
        "starttls": True,
        "ca_file": str(mail.ca_file),
        "username": mail.user,
        "password_file": str(mail.password_file),
        "mail_from": mail.user,
        "rcpt_to": mail.user,
        **fields,
    }


def mx(mail: MailServers, **fields: object) -> dict[str, object]:
    """Plain port-25 style delivery from outside, no login."""
    return {
        "host": mail.host,
        "port": mail.ports.smtp,
        "mail_from": "monitor@example.org",
        "rcpt_to": mail.user,
        **fields,
    }


def imaps(mail: MailServers, **fields: object) -> dict[str, object]:
    return {
        "type": "imap",
        "host": mail.host,
        "port": mail.ports.imaps,
        "tls": True,
        "ca_file": str(mail.ca_file),
        "username": mail.user,
        "password_file": str(mail.password_file),
        **fields,
    }


def pop3(mail: MailServers, **fields: object) -> dict[str, object]:
    return {
        "type": "pop3",
        "host": mail.host,
        "port": mail.ports.pop3,
        "starttls": True,
        "ca_file": str(mail.ca_file),
        "username": mail.user,
        "password_file": str(mail.password_file),
        **fields,
    }


@pytest.fixture(autouse=True)
async def _let_tls_connections_finish_closing() -> AsyncIterator[None]:
    """A TLS transport closed with close() (aiosmtplib after QUIT, Pop3Client) still
    exchanges close_notify on the next turns of the loop. The daemon's loop lives
    on; a test's loop ends with the test, and a socket it never closed is a
    ResourceWarning (an error here). A short wait lets it finish."""
    yield
    await asyncio.sleep(0.1)


async def run(check: MailflowCheck) -> tuple[TestOutcome, Transcript]:
    transcript = Transcript(check.secrets())
    outcome = await run_test(PROBE, check, transcript)
    # The probe's own deadline comes first: the scheduler's cut-off never names it.
    assert outcome.duration < check.timeout, outcome
    return outcome, transcript


def wait_for_files(files: Callable[[], list[Path]], count: int, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(files()) >= count:
            return
        time.sleep(0.05)


# --- real round trips --------------------------------------------------------


@pytest.mark.servers
async def test_round_trip_through_submission_and_imap(mail: MailServers) -> None:
    outcome, transcript = await run(flow_check(submission(mail), imaps(mail)))
    assert outcome.ok, (outcome.result.reason, transcript.lines, mail.logs())
    delivery = outcome.result.details["delivery_seconds"]
    assert isinstance(delivery, float)
    assert 0 < delivery < DEADLINE
    assert mail.account.files() == []  # the probe message was deleted
    text = "\n".join(transcript.lines)
    assert mail.password not in text
    assert "AUTH ********" in text
    assert any("UID STORE" in line and "\\Deleted" in line for line in transcript.lines)


@pytest.mark.servers
async def test_round_trip_through_mx_and_pop3(mail: MailServers) -> None:
    mail.deliver("Subject: someone else's mail\r\n\r\nkeep me\r\n")
    outcome, transcript = await run(flow_check(mx(mail), pop3(mail)))
    assert outcome.ok, (outcome.result.reason, transcript.lines, mail.logs())
    delivery = outcome.result.details["delivery_seconds"]
    assert isinstance(delivery, float)
    assert delivery > 0
    remaining = mail.account.files()
    assert len(remaining) == 1  # only the probe's own message went
    assert b"keep me" in remaining[0].read_bytes()


@pytest.mark.servers
async def test_a_message_that_never_arrives_is_reported_before_the_deadline(
    mail: MailServers,
) -> None:
    # Postfix delivers, but to another mailbox than the one the probe watches.
    check = flow_check(submission(mail, rcpt_to=mail.other.user), imaps(mail), timeout=1.5)
    outcome, _ = await run(check)
    assert outcome.result.reason == "not delivered within 1.5s"
    wait_for_files(mail.other.files, 1)
    assert len(mail.other.files()) == 1
    assert mail.account.files() == []


@pytest.mark.servers
async def test_not_delivered_over_pop3_too(mail: MailServers) -> None:
    check = flow_check(mx(mail, rcpt_to=mail.other.user), pop3(mail), timeout=1.5)
    outcome, _ = await run(check)
    assert outcome.result.reason == "not delivered within 1.5s"


@pytest.mark.servers
@pytest.mark.parametrize(
    ("rcpt_to", "reason"),
    [
        (
            "nobody@mail.test",
            "send: SMTP 550 5.1.1 <nobody@mail.test>: Recipient address rejected:"
            " User unknown in virtual mailbox table",
        ),
        ("someone@example.com", "send: SMTP 554 5.7.1 <someone@example.com>: Relay access denied"),
    ],
    ids=["unknown-user", "relay-denied"],
)
async def test_a_refused_recipient_fails_the_send_leg(
    mail: MailServers, rcpt_to: str, reason: str
) -> None:
    outcome, transcript = await run(flow_check(mx(mail, rcpt_to=rcpt_to), imaps(mail)))
    assert outcome.result.reason == reason
    assert transcript.lines[-2].startswith("S: 5")  # the refusal is in the transcript


@pytest.mark.servers
async def test_wrong_submission_password_fails_the_send_leg(
    mail: MailServers, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-it\n")
    check = flow_check(submission(mail, password_file=str(wrong)), imaps(mail), timeout=5)
    outcome, transcript = await run(check)
    assert outcome.result.reason.startswith("send: SMTP 535 5.7.8 "), outcome.result.reason
    assert "not-it" not in "\n".join(transcript.lines)


@pytest.mark.servers
async def test_receive_login_failure_is_found_before_anything_is_sent(
    mail: MailServers, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-it\n")
    check = flow_check(submission(mail), imaps(mail, password_file=str(wrong)), timeout=5)
    outcome, transcript = await run(check)
    assert outcome.result.reason == (
        "receive: IMAP LOGIN failed: [AUTHENTICATIONFAILED] Authentication failed."
    )
    assert not any("MAIL FROM" in line for line in transcript.lines)
    time.sleep(0.3)
    assert mail.account.files() == []


@pytest.mark.servers
async def test_untrusted_receive_certificate(mail: MailServers) -> None:
    receive = imaps(mail)
    del receive["ca_file"]
    outcome, _ = await run(flow_check(submission(mail), receive))
    assert outcome.result.reason == (
        "receive: TLS handshake failed: unable to get local issuer certificate"
    )


@pytest.mark.servers
async def test_stale_probe_messages_are_cleaned_up(mail: MailServers) -> None:
    old = mail.deliver(f"{MARKER}: roundtrip\r\nSubject: probed mailflow old\r\n\r\nx\r\n")
    three_days_ago = time.time() - 3 * 86400  # a Maildir message's arrival time is its mtime
    os.utime(old, (three_days_ago, three_days_ago))
    recent = mail.deliver(f"{MARKER}: roundtrip\r\nSubject: probed mailflow late\r\n\r\nx\r\n")
    outcome, _ = await run(flow_check(submission(mail), imaps(mail)))
    assert outcome.ok, outcome.result.reason
    names = [p.name.split(":")[0] for p in mail.account.files()]
    assert names == [recent.name]  # a message from today might still be awaited elsewhere


# --- broken legs (fake servers) ------------------------------------------------


@pytest.mark.servers
@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (hang, "send: timeout after 1.0s"),
        (send(b"554 no service here\r\n"), "send: SMTP 554 no service here"),
        (send(b"220 ok\r\n", then_close=False), "send: timeout after 1.0s"),
    ],
    ids=["never-answers", "554-greeting", "silent-after-greeting"],
)
async def test_broken_smtp_server(mail: MailServers, handler: object, reason: str) -> None:
    async with fake_server(handler) as port:  # type: ignore[arg-type]
        check = flow_check(
            {"host": mail.host, "port": port, "mail_from": "a@b.example", "rcpt_to": mail.user},
            imaps(mail),
            timeout=1.0,
        )
        outcome, _ = await run(check)
    assert outcome.result.reason == reason


@pytest.mark.servers
async def test_smtp_tls_handshake_failure(mail: MailServers) -> None:
    async with fake_server(tls_handshake_failure) as port:
        send_leg = {
            "host": mail.host,
            "port": port,
            "tls": True,
            "mail_from": "a@b.example",
            "rcpt_to": mail.user,
        }
        outcome, _ = await run(flow_check(send_leg, imaps(mail), timeout=1.0))
    assert outcome.result.reason.startswith("send: TLS handshake failed: ")


async def test_broken_imap_server_fails_the_receive_leg(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    async with fake_server(send(b"garbage\r\n")) as port:
        receive = {
            "type": "imap",
            "host": "127.0.0.1",
            "port": port,
            "username": "u",
            "password_file": str(secret),
        }
        send_leg = {"host": "127.0.0.1", "port": 9, "mail_from": "a@b.example", "rcpt_to": "u@b"}
        outcome, _ = await run(flow_check(send_leg, receive, timeout=1.0))
    assert outcome.result.reason == "receive: IMAP greeting: expected * OK, got 'garbage'"


async def test_silent_imap_server_times_out_the_receive_leg(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("s3cret\n")
    async with fake_server(hang) as port:
        receive = {
            "type": "imap",
            "host": "127.0.0.1",
            "port": port,
            "username": "u",
            "password_file": str(secret),
        }
        send_leg = {"host": "127.0.0.1", "port": 9, "mail_from": "a@b.example", "rcpt_to": "u@b"}
        outcome, _ = await run(flow_check(send_leg, receive, timeout=1.0))
    assert outcome.result.reason == "receive: timeout after 1.0s"


# --- config ------------------------------------------------------------------


def test_poll_interval_must_fit_in_the_deadline(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("x\n")
    receive = {"type": "imap", "host": "h", "username": "u", "password_file": str(secret)}
    send_leg = {"host": "h", "mail_from": "a@b.example", "rcpt_to": "c@d.example"}
    with pytest.raises(ValidationError, match="poll_interval"):
        flow_check(send_leg, receive, timeout=2, poll_interval=5)
    check = flow_check(send_leg, receive, timeout="2m", interval="5m", poll_interval="2s")
    assert (check.timeout, check.poll_interval) == (120.0, 2.0)
    assert (check.send.port, check.receive.port) == (25, 143)


def test_receive_type_is_imap_or_pop3(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("x\n")
    receive = {"type": "jmap", "host": "h", "username": "u", "password_file": str(secret)}
    send_leg = {"host": "h", "mail_from": "a@b.example", "rcpt_to": "c@d.example"}
    with pytest.raises(ValidationError, match="'imap', 'pop3'"):
        flow_check(send_leg, receive)


def test_registered() -> None:
    assert REGISTRY["mailflow"] is PROBE
