"""The http probe against a real aiohttp server on loopback, and against misbehaving ones."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import http_parser, web
from pydantic import ValidationError

from probed.daemon.runner import TestOutcome, run_test
from probed.daemon.scheduler import Scheduler
from probes import REGISTRY
from probes import http as http_module
from probes.base import CheckBase, Transcript
from probes.http import MAX_BODY, PROBE, HttpCheck, SharedSession, shared_session
from tests.daemon_helpers import wait_for
from tests.fakeservers import (
    HugeLine,
    LoopbackPKI,
    closed_port,
    drip,
    fake_server,
    hang,
    reply_after_request,
    tls_handshake_failure,
)

TIMEOUT = 0.5
MARGIN = 1.0  # generous: a loaded CI machine must not turn a timeout test red
MiB = 1024 * 1024


def http_check(url: str, **fields: object) -> HttpCheck:
    return HttpCheck.model_validate({"name": "web", "type": "http", "url": url, **fields})


SHARED = False  # set per test by the ``sessions`` fixture


@pytest.fixture(autouse=True, params=["own session", "shared session"])
def sessions(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test twice: with a session of its own (``probed probe``) and with the
    session the daemon's tests share."""
    monkeypatch.setattr(f"{__name__}.SHARED", request.param == "shared session")


async def probe(url: str, **fields: object) -> tuple[TestOutcome, Transcript]:
    check = http_check(url, **fields)
    transcript = Transcript(check.secrets())
    if not SHARED:
        return await run_test(PROBE, check, transcript), transcript
    async with shared_session():
        return await run_test(PROBE, check, transcript), transcript


def app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="all systems nominal")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def protected(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") == "Bearer s3cret":
            return web.Response(text="welcome")
        return web.Response(status=401)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (2 * MAX_BODY) + b"needle")

    application = web.Application()
    application.router.add_get("/", ok)
    application.router.add_get("/status/{code}", status)
    application.router.add_get("/moved", moved)
    application.router.add_get("/loop", loop)
    application.router.add_get("/protected", protected)
    application.router.add_get("/big", big)
    return application


@contextlib.asynccontextmanager
async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """The app on 127.0.0.1 (an ephemeral port); yields its base URL."""
    runner = web.AppRunner(app())
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = runner.addresses[0][1]
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def site() -> AsyncIterator[str]:
    async with serve() as base:
        yield base


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPKI:
    return LoopbackPKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> LoopbackPKI:
    return LoopbackPKI.create(tmp_path_factory.mktemp("other-pki"))


# --- status, body, redirects --------------------------------------------------------------


async def test_expected_status_passes_with_status_url_and_size(site: str) -> None:
    outcome, _ = await probe(f"{site}/")
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details == {
        "status": 200,
        "url": f"{site}/",
        "response_bytes": len("all systems nominal"),
    }


async def test_unexpected_status_fails_with_code_phrase_and_expectation(site: str) -> None:
    outcome, _ = await probe(f"{site}/status/503")
    assert not outcome.ok
    assert outcome.result.reason == "HTTP 503 Service Unavailable (expected 200)"
    assert outcome.result.details["status"] == 503


async def test_any_listed_status_passes(site: str) -> None:
    outcome, _ = await probe(f"{site}/status/204", expect_status=[200, 204])
    assert outcome.ok, outcome.result.reason


async def test_status_outside_the_list_names_every_expected_code(site: str) -> None:
    outcome, _ = await probe(f"{site}/status/500", expect_status=[200, 204])
    assert outcome.result.reason == "HTTP 500 Internal Server Error (expected 200, 204)"


async def test_body_matching_regex_passes(site: str) -> None:
    outcome, _ = await probe(f"{site}/", body_regex=r"systems\s+nominal")
    assert outcome.ok, outcome.result.reason


async def test_body_not_matching_regex_fails_naming_the_pattern(site: str) -> None:
    outcome, _ = await probe(f"{site}/", body_regex="^ok$")
    assert not outcome.ok
    assert outcome.result.reason == "body did not match /^ok$/"


async def test_body_is_read_only_up_to_one_mebibyte(site: str) -> None:
    outcome, transcript = await probe(f"{site}/big", body_regex="needle")
    assert outcome.result.reason == "body did not match /needle/"
    assert outcome.result.details["response_bytes"] == MAX_BODY
    assert f"* body matched against its first {MAX_BODY} bytes only" in transcript.lines


async def test_redirect_is_followed_by_default(site: str) -> None:
    outcome, transcript = await probe(f"{site}/moved")
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details["url"] == f"{site}/"
    host = site.removeprefix("http://")
    volatile = ("S: Server:", "S: Content-Length:")
    assert [line for line in transcript.lines if not line.startswith(volatile)] == [
        "C: GET /moved HTTP/1.1",
        f"C: Host: {host}",
        "S: HTTP/1.1 302 Found",
        "S: Location: /",
        "S: Content-Type: text/plain; charset=utf-8",
        "C: GET / HTTP/1.1",
        f"C: Host: {host}",
        "S: HTTP/1.1 200 OK",
        "S: Content-Type: text/plain; charset=utf-8",
    ]


async def test_redirect_not_followed_when_disabled_is_judged_by_its_status(site: str) -> None:
    outcome, _ = await probe(f"{site}/moved", follow_redirects=False)
    assert outcome.result.reason == "HTTP 302 Found (expected 200)"


async def test_redirect_loop_fails(site: str) -> None:
    outcome, _ = await probe(f"{site}/loop")
    assert outcome.result.reason == "too many redirects (more than 10)"


async def test_configured_headers_are_sent_and_secrets_masked(site: str) -> None:
    outcome, transcript = await probe(
        f"{site}/protected", headers={"Authorization": "Bearer s3cret"}
    )
    assert outcome.ok, outcome.result.reason
    assert "C: Authorization: ********" in transcript.lines
    assert not any("s3cret" in line for line in transcript.lines)


async def test_closed_port_is_connection_refused() -> None:
    outcome, _ = await probe(f"http://127.0.0.1:{await closed_port()}/")
    assert outcome.result.reason == "connection refused"


# --- TLS ------------------------------------------------------------------------------------


async def test_https_with_trusted_ca_passes_and_reports_certificate_expiry(
    pki: LoopbackPKI,
) -> None:
    not_after = datetime.datetime(2031, 5, 17, 12, 0, tzinfo=datetime.UTC)
    async with serve(pki.server_context(not_after=not_after)) as base:
        outcome, transcript = await probe(f"{base}/", ca_file=pki.ca_file)
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert outcome.result.details["cert_not_after"] == not_after.timestamp()
    assert any("certificate valid until 2031-05-17T12:00:00Z" in line for line in transcript.lines)


async def test_https_with_untrusted_certificate_fails_the_handshake(
    pki: LoopbackPKI, other_pki: LoopbackPKI
) -> None:
    async with serve(pki.server_context()) as base:
        outcome, _ = await probe(f"{base}/", ca_file=other_pki.ca_file)
    assert outcome.result.reason == "TLS handshake failed: unable to get local issuer certificate"


async def test_https_without_verification_passes_an_untrusted_certificate(
    pki: LoopbackPKI,
) -> None:
    async with serve(pki.server_context()) as base:
        outcome, _ = await probe(f"{base}/", tls_verify=False)
    assert outcome.ok, outcome.result.reason
    assert outcome.result.details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    # Python reports no certificate fields when it did not verify the chain.
    assert "cert_not_after" not in outcome.result.details


async def test_https_with_expired_certificate_fails(pki: LoopbackPKI) -> None:
    async with serve(pki.expired_server_context()) as base:
        outcome, _ = await probe(f"{base}/", ca_file=pki.ca_file)
    assert outcome.result.reason == "TLS handshake failed: certificate has expired"


async def test_https_with_certificate_for_another_name_fails(pki: LoopbackPKI) -> None:
    async with serve(pki.server_context("www.example.net")) as base:
        outcome, _ = await probe(f"{base}/", ca_file=pki.ca_file)
    assert outcome.result.reason == (
        "TLS handshake failed: IP address mismatch, certificate is not valid for '127.0.0.1'."
    )


async def test_server_rejecting_the_handshake_fails_with_the_alert() -> None:
    async with fake_server(tls_handshake_failure) as port:
        outcome, _ = await probe(f"https://127.0.0.1:{port}/")
    assert outcome.result.reason == "TLS handshake failed: SSLV3_ALERT_HANDSHAKE_FAILURE"


# --- misbehaving servers, through the runner's timeout --------------------------------------


async def test_server_that_never_answers_times_out_on_time() -> None:
    async with fake_server(hang) as port:
        outcome, transcript = await probe(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert outcome.result.reason == "timeout after 0.5s"
    assert TIMEOUT <= outcome.duration < TIMEOUT + MARGIN
    assert transcript.lines[0] == "C: GET / HTTP/1.1"


async def test_server_dripping_one_byte_per_second_times_out_on_time() -> None:
    async with fake_server(drip(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as port:
        outcome, _ = await probe(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert outcome.result.reason == "timeout after 0.5s"
    assert TIMEOUT <= outcome.duration < TIMEOUT + MARGIN


async def test_garbage_instead_of_http_is_an_invalid_response() -> None:
    async with fake_server(reply_after_request(b"\x00\xffgarbage\r\n\r\n")) as port:
        outcome, _ = await probe(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
    # aiohttp's C and pure-Python parsers word the evidence differently.
    assert outcome.result.reason.startswith("invalid HTTP response: bad status line ")
    assert "garbage" in outcome.result.reason
    assert outcome.duration < TIMEOUT


async def test_server_closing_before_answering_fails() -> None:
    async with fake_server(reply_after_request(b"")) as port:
        outcome, _ = await probe(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert outcome.result.reason == "connection closed before response"


async def test_server_closing_mid_headers_fails() -> None:
    async with fake_server(reply_after_request(b"HTTP/1.1 200 OK\r\nContent-Ty")) as port:
        outcome, _ = await probe(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
    # Only aiohttp's C parser (the one its wheels ship) hands over the partial
    # headers; the pure-Python one (AIOHTTP_NO_EXTENSIONS) cannot tell the cases apart.
    c_parser = http_parser.HttpResponseParser.__module__ == "aiohttp._http_parser"
    expected = "connection closed mid-headers" if c_parser else "connection closed before response"
    assert outcome.result.reason == expected


async def test_server_closing_mid_body_fails_with_bytes_received() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"
    async with fake_server(reply_after_request(response)) as port:
        outcome, transcript = await probe(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert outcome.result.reason == "connection closed mid-body (5 of 100 bytes)"
    assert "S: HTTP/1.1 200 OK" in transcript.lines


async def test_body_that_cannot_be_decoded_fails() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"
    async with fake_server(reply_after_request(response)) as port:
        outcome, _ = await probe(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
    assert outcome.result.reason == "invalid HTTP body: cannot decode gzip"


async def test_endless_header_line_fails_fast_without_buffering_it() -> None:
    huge = HugeLine(10 * MiB, prefix=b"HTTP/1.1 200 OK\r\nX-Filler: ", wait_for_request=True)
    async with fake_server(huge) as port:
        tracemalloc.start()
        try:
            outcome, _ = await probe(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert outcome.result.reason == "HTTP response line longer than 8190 bytes"
    assert outcome.duration < TIMEOUT
    assert peak < 2 * MiB


async def test_endless_body_is_cut_at_one_mebibyte_without_buffering_it() -> None:
    huge = HugeLine(10 * MiB, prefix=b"HTTP/1.1 200 OK\r\n\r\n", wait_for_request=True)
    async with fake_server(huge) as port:
        tracemalloc.start()
        try:
            outcome, _ = await probe(f"http://127.0.0.1:{port}/", body_regex="ok", timeout=TIMEOUT)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert outcome.result.reason == "body did not match /ok/"
    assert outcome.result.details["response_bytes"] == MAX_BODY
    assert peak < 5 * MiB


async def test_hung_server_does_not_delay_other_checks(site: str) -> None:
    # More stuck requests than aiohttp's default pool (100): a shared,
    # limited connector would make the healthy check queue behind them.
    stuck_count = 120
    arrived = 0
    all_stuck = asyncio.Event()

    async def counting_hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == stuck_count:
            all_stuck.set()
        await hang(reader, writer)

    async with fake_server(counting_hang) as port:
        stuck = [
            asyncio.create_task(probe(f"http://127.0.0.1:{port}/", timeout=5))
            for _ in range(stuck_count)
        ]
        try:
            async with asyncio.timeout(5):
                await all_stuck.wait()
            outcome, _ = await probe(f"{site}/", timeout=5)
        finally:
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
    assert outcome.ok, outcome.result.reason
    assert outcome.duration < 1.0


async def test_each_test_of_a_shared_session_opens_its_own_connection() -> None:
    peers: list[tuple[str, int]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        await reader.readuntil(b"\r\n\r\n")
        # keep-alive offered: only the client's choice can close the connection
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
        await writer.drain()
        await reader.read()  # until the client hangs up

    async with fake_server(answer) as port, shared_session():
        check = http_check(f"http://127.0.0.1:{port}/")
        for _ in range(2):
            outcome = await run_test(PROBE, check, Transcript())
            assert outcome.ok, outcome.result.reason
    assert len(peers) == 2
    assert peers[0] != peers[1]  # two connections, from two source ports


def cookie_app(seen: list[str | None]) -> web.Application:
    async def set_cookie(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        raise web.HTTPFound("/landing", headers={"Set-Cookie": "visitor=42; Path=/"})

    async def landing(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        return web.Response(text="hello")

    application = web.Application()
    application.router.add_get("/", set_cookie)
    application.router.add_get("/landing", landing)
    return application


async def test_a_cookie_reaches_the_redirect_of_its_test_and_never_the_next_test() -> None:
    seen: list[str | None] = []
    runner = web.AppRunner(cookie_app(seen))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        # a name, not an IP: cookie jars refuse cookies from IP addresses
        url = f"http://localhost:{runner.addresses[0][1]}/"
        async with shared_session():
            for _ in range(2):
                outcome, _ = await probe(url)
                assert outcome.ok, outcome.result.reason
    finally:
        await runner.cleanup()
    # each test: no cookie on its first request, its own cookie on the redirect
    assert seen == [None, "visitor=42", None, "visitor=42"]


async def test_the_scheduler_shares_one_session_and_closes_it_when_it_stops(
    site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[aiohttp.ClientSession] = []
    request = http_module._request

    async def spy(session: aiohttp.ClientSession, *args: Any) -> Any:
        sessions.append(session)
        return await request(session, *args)

    monkeypatch.setattr(http_module, "_request", spy)
    outcomes: list[TestOutcome] = []

    async def handler(service: str, check: CheckBase, outcome: TestOutcome, t: Transcript) -> None:
        outcomes.append(outcome)

    scheduler = Scheduler(handler, concurrency=10)
    scheduler.set_checks([("s", http_check(f"{site}/", interval=0.3, timeout=0.25))])
    try:
        await wait_for(lambda: len(outcomes) >= 3, timeout=10, what="three tests")
    finally:
        await scheduler.stop(grace=1.0)
    assert len(sessions) >= 3
    assert len(set(map(id, sessions))) == 1
    assert sessions[0].closed
    assert SharedSession.current() is None  # the next test makes its own


# --- configuration --------------------------------------------------------------------------


def test_invalid_body_regex_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"invalid regular expression /\(/: missing \)"):
        http_check("http://127.0.0.1/", body_regex="(")


@pytest.mark.parametrize("url", ["ftp://example.net/", "example.net", "http:///path"])
def test_only_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(ValidationError, match="expected an http:// or https:// URL"):
        http_check(url)


def test_status_codes_outside_100_to_599_are_rejected() -> None:
    with pytest.raises(ValidationError, match=r"got \[42\]"):
        http_check("http://127.0.0.1/", expect_status=[200, 42])


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        http_check("https://127.0.0.1/", ca_file=str(tmp_path / "nope.pem"))


def test_target_is_the_url_and_defaults_are_a_plain_get() -> None:
    check = http_check("https://webmail.example.net/")
    assert check.target() == "https://webmail.example.net/"
    assert (check.method, check.expect_status, check.follow_redirects, check.tls_verify) == (
        "GET",
        [200],
        True,
        True,
    )


def test_probe_is_registered_as_http() -> None:
    assert REGISTRY["http"] is PROBE
