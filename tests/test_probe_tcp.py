"""The tcp probe against loopback servers that behave, and against ones that do not."""

from __future__ import annotations

import datetime
import ssl
import tracemalloc
from pathlib import Path

import pytest
from pydantic import ValidationError

from probed.daemon.runner import TestOutcome, run_test
from probes import REGISTRY
from probes.base import Transcript
from probes.tcp import MAX_BANNER, PROBE, TcpCheck
from tests.fakeservers import (
    Handler,
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

TIMEOUT = 0.5
MARGIN = 1.0  # generous: a loaded CI machine must not turn a timeout test red
MiB = 1024 * 1024
GREETING = b"220 mx.example.net ESMTP ready\r\n"


def tcp_check(port: int, **fields: object) -> TcpCheck:
    return TcpCheck.model_validate(
        {"name": "port", "type": "tcp", "host": "127.0.0.1", "port": port, **fields}
    )


async def probe(port: int, **fields: object) -> tuple[TestOutcome, Transcript]:
    transcript = Transcript()
    return await run_test(PROBE, tcp_check(port, **fields), transcript), transcript


async def probe_server(
    handler: Handler, ssl_context: ssl.SSLContext | None = None, **fields: object
) -> TestOutcome:
    async with fake_server(handler, ssl_context=ssl_context) as port:
        outcome, _ = await probe(port, **fields)
    return outcome


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPKI:
    return LoopbackPKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPKI:
    return LoopbackPKI.create(tmp_path_factory.mktemp("other-pki"))


# --- connecting and greeting ----------------------------------------------------------------


async def test_open_port_passes_without_waiting_for_a_banner() -> None:
    # The server never speaks: without expect_banner, accepting is enough.
    outcome = await probe_server(hang, timeout=TIMEOUT)
    assert outcome.ok, outcome.result.reason
    assert outcome.duration < TIMEOUT


async def test_closed_port_is_connection_refused() -> None:
    outcome, _ = await probe(await closed_port())
    assert outcome.result.reason == "connection refused"


async def test_banner_matching_regex_passes_and_is_recorded() -> None:
    async with fake_server(send(GREETING)) as port:
        outcome, transcript = await probe(port, expect_banner="^220 ")
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details == {"banner": "220 mx.example.net ESMTP ready"}
    assert transcript.lines == [
        f"* connecting to 127.0.0.1:{port}",
        "S: 220 mx.example.net ESMTP ready",
    ]


async def test_banner_not_matching_regex_fails_quoting_the_banner() -> None:
    outcome = await probe_server(send(b"SSH-2.0-OpenSSH_9.6\r\n"), expect_banner="^220")
    assert outcome.result.reason == 'banner did not match /^220/: got "SSH-2.0-OpenSSH_9.6"'


async def test_garbage_banner_is_quoted_with_escapes() -> None:
    outcome = await probe_server(send(b"\x00\xff\xfegarbage\r\n"), expect_banner="^220")
    assert outcome.result.reason == r'banner did not match /^220/: got "\x00\xff\xfegarbage"'


async def test_long_banner_is_shortened_in_the_reason() -> None:
    outcome = await probe_server(send(b"X" * 500 + b"\r\n"), expect_banner="^220")
    assert outcome.result.reason == f'banner did not match /^220/: got "{"X" * 80}..."'


async def test_server_closing_before_banner_fails() -> None:
    outcome = await probe_server(close_after(b""), expect_banner="^220")
    assert outcome.result.reason == "connection closed before banner"


async def test_server_closing_mid_greeting_fails_quoting_what_arrived() -> None:
    outcome = await probe_server(close_after(b"220 mx.exa"), expect_banner="^220")
    assert outcome.result.reason == 'connection closed mid-banner: got "220 mx.exa"'


# --- misbehaving servers, through the runner's timeout --------------------------------------


async def test_silent_server_times_out_on_time_when_a_banner_is_expected() -> None:
    outcome = await probe_server(hang, expect_banner="^220", timeout=TIMEOUT)
    assert outcome.result.reason == "timeout after 0.5s"
    assert TIMEOUT <= outcome.duration < TIMEOUT + MARGIN


async def test_server_dripping_one_byte_per_second_times_out_on_time() -> None:
    outcome = await probe_server(drip(GREETING), expect_banner="^220", timeout=TIMEOUT)
    assert outcome.result.reason == "timeout after 0.5s"
    assert TIMEOUT <= outcome.duration < TIMEOUT + MARGIN


async def test_endless_line_fails_fast_without_buffering_it() -> None:
    huge = HugeLine(10 * MiB)
    tracemalloc.start()
    try:
        outcome = await probe_server(huge, expect_banner="^220", timeout=TIMEOUT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.result.reason == f"banner line longer than {MAX_BANNER} bytes"
    assert outcome.duration < TIMEOUT
    assert peak < 2 * MiB


# --- TLS ------------------------------------------------------------------------------------


async def test_tls_with_trusted_ca_passes_and_reports_certificate_expiry(
    pki: LoopbackPKI,
) -> None:
    not_after = datetime.datetime(2031, 5, 17, 12, 0, tzinfo=datetime.UTC)
    context = pki.server_context(not_after=not_after)
    outcome = await probe_server(
        send(GREETING), context, tls=True, ca_file=pki.ca_file, expect_banner="^220"
    )
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert outcome.result.details["cert_not_after"] == not_after.timestamp()


async def test_tls_with_untrusted_certificate_fails_the_handshake(
    pki: LoopbackPKI, other_pki: LoopbackPKI
) -> None:
    outcome = await probe_server(
        send(GREETING), pki.server_context(), tls=True, ca_file=other_pki.ca_file
    )
    assert outcome.result.reason == "TLS handshake failed: unable to get local issuer certificate"


async def test_tls_without_verification_accepts_an_untrusted_certificate(
    pki: LoopbackPKI,
) -> None:
    outcome = await probe_server(send(GREETING), pki.server_context(), tls=True, tls_verify=False)
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details["tls_version"] in ("TLSv1.2", "TLSv1.3")


async def test_tls_with_expired_certificate_fails(pki: LoopbackPKI) -> None:
    outcome = await probe_server(
        send(GREETING), pki.expired_server_context(), tls=True, ca_file=pki.ca_file
    )
    assert outcome.result.reason == "TLS handshake failed: certificate has expired"


async def test_server_rejecting_the_handshake_fails_with_the_alert() -> None:
    outcome = await probe_server(tls_handshake_failure, tls=True)
    assert outcome.result.reason == "TLS handshake failed: SSLV3_ALERT_HANDSHAKE_FAILURE"


async def test_plain_text_server_on_a_tls_check_fails_the_handshake() -> None:
    outcome = await probe_server(send(GREETING), tls=True, timeout=TIMEOUT)
    assert outcome.result.reason == "TLS handshake failed: WRONG_VERSION_NUMBER"


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, 65536])
def test_port_outside_1_to_65535_is_rejected(port: int) -> None:
    with pytest.raises(ValidationError, match="port"):
        tcp_check(port)


def test_invalid_banner_regex_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"invalid regular expression /\[/"):
        tcp_check(25, expect_banner="[")


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        tcp_check(993, tls=True, ca_file=str(tmp_path / "nope.pem"))


@pytest.mark.parametrize(
    ("host", "target"), [("mx1.example.net", "mx1.example.net:25"), ("::1", "[::1]:25")]
)
def test_target_is_host_and_port(host: str, target: str) -> None:
    check = TcpCheck.model_validate({"name": "mx", "type": "tcp", "host": host, "port": 25})
    assert check.target() == target


def test_probe_is_registered_as_tcp() -> None:
    assert REGISTRY["tcp"] is PROBE
