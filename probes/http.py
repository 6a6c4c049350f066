"""HTTP(S): one request, the status it answers and, optionally, what its body says."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextvars import ContextVar
from http import HTTPStatus
from http.cookies import BaseCookie, SimpleCookie
from typing import ClassVar, Literal

import aiohttp
from aiohttp.connector import Connection
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.typedefs import LooseCookies
from pydantic import Field, field_validator
from yarl import URL

from probes.base import (
    CaFile,
    CheckBase,
    DetailValue,
    ProbeFailure,
    ProbeResult,
    ProbeType,
    Regex,
    Transcript,
    certificate_details,
    describe_error,
    shared_ssl_context,
)

MAX_BODY = 1024 * 1024  # read at most this much of a body, for the regex and the byte count
MAX_REDIRECTS = 10
USER_AGENT = "probed (availability probe)"
_SHOWN_HEADERS = ("Location", "Content-Type", "Content-Length", "Server")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
_TOO_LONG = re.compile(r"Got more than (\d+) bytes")


class HttpCheck(CheckBase):
    type: Literal["http"]
    url: str
    method: str = Field(default="GET", pattern=r"^[A-Z]+$")
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    body_regex: Regex | None = None
    follow_redirects: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    tls_verify: bool = True
    ca_file: CaFile = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(
                f'expected an http:// or https:// URL like https://example.net/, got "{url}"'
            )
        return url

    @field_validator("expect_status")
    @classmethod
    def _status_codes(cls, codes: list[int]) -> list[int]:
        if bad := [code for code in codes if not 100 <= code <= 599]:
            raise ValueError(f"expected HTTP status codes (100..599), got {bad}")
        return codes

    def secrets(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.headers.items() if k.lower() in _SECRET_HEADERS)

    def target(self) -> str:
        return self.url


class _Response(aiohttp.ClientResponse):
    """Keeps the TLS facts: aiohttp may release the connection inside ``start()``."""

    tls: dict[str, DetailValue]

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        self.tls = certificate_details(
            transport.get_extra_info("ssl_object") if transport else None
        )
        return await super().start(connection)


_NO_URL = URL()


class _TestCookies(aiohttp.DummyCookieJar):
    """The shared session's jar: a test's own cookies, and nobody else's.

    Each test gets an empty jar (made only when a server sets a cookie), so a
    redirect's ``Set-Cookie`` reaches the next hop of the same test, as a new
    visitor's browser would send it, and never a later test.
    """

    def update_cookies(self, cookies: LooseCookies, response_url: URL = _NO_URL) -> None:
        if (jar := _test_jar()) is not None:
            jar.update_cookies(cookies, response_url)

    def update_cookies_from_headers(self, headers: Sequence[str], response_url: URL) -> None:
        if (jar := _test_jar()) is not None:
            jar.update_cookies_from_headers(headers, response_url)

    def filter_cookies(self, request_url: URL) -> BaseCookie[str]:
        jar = _TEST_COOKIES.get(None)
        return jar[0].filter_cookies(request_url) if jar else SimpleCookie()


# The running test's jar, in a list so that the jar is made on the first cookie only.
_TEST_COOKIES: ContextVar[list[aiohttp.CookieJar]] = ContextVar("probed_http_cookies")


def _test_jar() -> aiohttp.CookieJar | None:
    holder = _TEST_COOKIES.get(None)
    if holder is None:  # not inside probe(): nobody may see it
        return None
    if not holder:
        holder.append(aiohttp.CookieJar())
    return holder[0]


def _session(*, shared: bool) -> aiohttp.ClientSession:
    # Every test opens a fresh TCP connection (force_close: a connection is never
    # kept for a later test, and an SLA measures whether *new* visitors get in),
    # resolves the name afresh (no DNS cache) and sees only its own cookies.
    # Shared by all tests of a daemon (see SharedSession), it has no connection
    # limit: the scheduler's concurrency is the limit, and one hung server then
    # holds only its own connection. The TLS context (~15 ms to build) is shared too.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0, use_dns_cache=False),
        timeout=aiohttp.ClientTimeout(total=None),  # the scheduler owns the deadline
        headers={"User-Agent": USER_AGENT},
        response_class=_Response,
        cookie_jar=_TestCookies() if shared else None,
    )


class SharedSession:
    """One session for every HTTP test on an event loop while at least one holder holds it.

    A session costs ~100 us of CPU to make and close, a large part of a test on
    loopback. The scheduler holds it while it runs; a test outside any holder
    (``probed probe``, a test of the probe) makes a session of its own.
    """

    _by_loop: ClassVar[dict[asyncio.AbstractEventLoop, SharedSession]] = {}

    def __init__(self) -> None:
        self.holders = 0
        self.session: aiohttp.ClientSession | None = None  # made by the first test

    @classmethod
    def hold(cls) -> None:
        """One more holder on the running loop."""
        loop = asyncio.get_running_loop()
        cls._by_loop.setdefault(loop, cls()).holders += 1

    @classmethod
    async def release(cls) -> None:
        """One holder less; the last one closes the session (after its tests ended)."""
        loop = asyncio.get_running_loop()
        shared = cls._by_loop.get(loop)
        if shared is None:
            return
        shared.holders -= 1
        if shared.holders <= 0:
            del cls._by_loop[loop]
            if shared.session is not None:
                await shared.session.close()

    @classmethod
    def current(cls) -> aiohttp.ClientSession | None:
        shared = cls._by_loop.get(asyncio.get_running_loop())
        if shared is None:
            return None
        if shared.session is None or shared.session.closed:
            shared.session = _session(shared=True)
        return shared.session


@contextlib.asynccontextmanager
async def shared_session() -> AsyncIterator[None]:
    """Every HTTP test on this loop shares one session inside the block."""
    SharedSession.hold()
    try:
        yield
    finally:
        await SharedSession.release()


async def probe(check: HttpCheck, transcript: Transcript) -> ProbeResult:
    """One request; pass when the status is expected and the body matches."""
    shared = SharedSession.current()
    if shared is None:
        async with _session(shared=False) as private:
            return await _request(private, check, transcript)
    token = _TEST_COOKIES.set([])
    try:
        return await _request(shared, check, transcript)
    finally:
        _TEST_COOKIES.reset(token)


async def _request(
    session: aiohttp.ClientSession, check: HttpCheck, transcript: Transcript
) -> ProbeResult:
    url = URL(check.url)
    ssl_context = shared_ssl_context(verify=check.tls_verify, ca_file=check.ca_file)
    _request_lines(transcript, check.method, url, check.headers)
    try:
        async with session.request(
            check.method,
            url,
            headers=check.headers,
            allow_redirects=check.follow_redirects,
            max_redirects=MAX_REDIRECTS,
            ssl=ssl_context,
        ) as response:
            _response_lines(transcript, response)
            body = await _read_body(response)
    except aiohttp.ClientError as exc:
        raise ProbeFailure(_reason(exc)) from exc
    return _verdict(check, response, body, transcript)


def _verdict(
    check: HttpCheck, response: aiohttp.ClientResponse, body: bytes, transcript: Transcript
) -> ProbeResult:
    details: dict[str, DetailValue] = {
        "status": response.status,
        "url": str(response.url),
        "response_bytes": len(body),
    }
    if isinstance(response, _Response):
        details.update(response.tls)
    if response.status not in check.expect_status:
        expected = ", ".join(str(code) for code in check.expect_status)
        reason = f"HTTP {response.status} {_phrase(response)}".rstrip()
        return ProbeResult.failed(f"{reason} (expected {expected})", **details)
    if check.body_regex is not None:
        text = body.decode(_charset(response), errors="replace")
        if len(body) == MAX_BODY:
            transcript.note(f"body matched against its first {MAX_BODY} bytes only")
        if not check.body_regex.search(text):
            return ProbeResult.failed(f"body did not match /{check.body_regex.pattern}/", **details)
    return ProbeResult.passed(**details)


async def _read_body(response: aiohttp.ClientResponse) -> bytes:
    """At most MAX_BODY bytes: a huge or endless body costs a bounded read, then a hang-up."""
    body = bytearray()
    try:
        while len(body) < MAX_BODY and (chunk := await response.content.read(MAX_BODY - len(body))):
            body += chunk
    except aiohttp.ClientPayloadError as exc:
        if isinstance(exc.__cause__, ContentEncodingError):
            encoding = response.headers.get("Content-Encoding")
            raise ProbeFailure(f"invalid HTTP body: cannot decode {encoding}") from exc
        length = response.content_length
        of = f" of {length}" if length is not None else ""
        raise ProbeFailure(f"connection closed mid-body ({len(body)}{of} bytes)") from exc
    return bytes(body)


def _reason(exc: aiohttp.ClientError) -> str:
    """aiohttp's exceptions, as the short reasons an outage report shows."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return describe_error(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed for {exc.host}: {describe_error(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return describe_error(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        # aiohttp hands over the partial message when the status line had arrived.
        partial = not isinstance(exc.message, str)
        return "connection closed mid-headers" if partial else "connection closed before response"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects (more than {MAX_REDIRECTS})"
    if isinstance(exc, aiohttp.ClientResponseError):  # the response could not be parsed
        return _invalid_response(exc.message)
    if isinstance(exc, aiohttp.RedirectClientError):
        return f"redirect to an unusable URL: {exc}"
    return describe_error(exc)


def _invalid_response(message: str) -> str:
    """Condense a parser message (several lines, a caret) into one line with the evidence."""
    if too_long := _TOO_LONG.search(message):
        return f"HTTP response line longer than {too_long.group(1)} bytes"
    lines = [line.strip() for line in message.splitlines() if line.strip() not in ("", "^")]
    head = lines[0].rstrip(":") if lines else "unparseable"
    evidence = next((line for line in lines[1:] if line.startswith(("b'", 'b"'))), "")
    text = f"{head[:1].lower()}{head[1:]} {evidence[:60]}".rstrip()
    return f"invalid HTTP response: {text}"


def _request_lines(
    transcript: Transcript, method: str, url: URL, headers: Mapping[str, str] = {}
) -> None:
    transcript.client(f"{method} {url.raw_path_qs} HTTP/1.1")
    transcript.client(f"Host: {url.raw_authority}")
    for name, value in headers.items():
        transcript.client(f"{name}: {value}")  # secrets are masked by the transcript


def _response_lines(transcript: Transcript, response: aiohttp.ClientResponse) -> None:
    """Each hop's status line and a few headers; the request of every redirect."""
    for number, hop in enumerate((*response.history, response)):
        if number:  # the first request was logged before it was sent
            _request_lines(transcript, hop.method, hop.url)
        version = f"{hop.version.major}.{hop.version.minor}" if hop.version else "1.1"
        transcript.server(f"HTTP/{version} {hop.status} {hop.reason or ''}".rstrip())
        for name in _SHOWN_HEADERS:
            if name in hop.headers:
                transcript.server(f"{name}: {hop.headers[name]}")
    tls = response.tls if isinstance(response, _Response) else {}
    if tls:
        expiry = tls.get("cert_not_after")
        until = (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expiry))
            if isinstance(expiry, float)
            else "(not verified)"
        )
        transcript.note(f"TLS {tls.get('tls_version')}, certificate valid until {until}")


def _phrase(response: aiohttp.ClientResponse) -> str:
    # The standard phrase keeps reasons stable (outage reports group by them);
    # a server's own wording is only used for codes the standard does not name.
    try:
        return HTTPStatus(response.status).phrase
    except ValueError:
        return (response.reason or "")[:60]


def _charset(response: aiohttp.ClientResponse) -> str:
    try:
        return codecs.lookup(response.charset or "utf-8").name
    except LookupError:
        return "utf-8"


PROBE = ProbeType(name="http", config=HttpCheck, run=probe)
