"""Mail servers for ``probed demo``: SMTP, POP3 and IMAP on loopback, sharing one mailbox.

A demo prop, not a mail server: one user, plain text, messages in memory, run
in the demo's own event loop, and just enough of each protocol for probed's
probes (probes/smtp.py, pop3.py, imap.py and mailflow.py). The probes' own
tests talk to real Dovecot and Postfix instead (tests/mailservers.py).

Each listener follows a :class:`Script`: the connections it turns away the
way a server in trouble does (SMTP ``421``, POP3 ``-ERR``, IMAP ``* BYE``),
or accepts and then leaves unanswered until the client gives up.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Any, ClassVar, cast

from aiosmtpd.smtp import SMTP

DOMAIN = "demo.test"  # RFC 2606: never a real domain
HOSTNAME = f"mail.{DOMAIN}"
_HANGUPS = (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError)


@dataclass
class Script:
    """Which of a listener's connections (counted from 0) fail, and how."""

    down: range = range(0)
    hang: bool = False  # fail by saying nothing (the client times out) instead of refusing
    connections: int = 0

    def next_is_up(self) -> bool:
        n, self.connections = self.connections, self.connections + 1
        return n not in self.down


@dataclass(eq=False)
class Message:
    uid: int
    data: bytes  # CRLF line ends
    arrived: float
    flags: set[str] = field(default_factory=set)

    @property
    def header(self) -> bytes:
        end = self.data.find(b"\r\n\r\n")
        return self.data if end < 0 else self.data[: end + 4]

    def header_values(self, name: str) -> list[str]:
        return [str(v) for v in BytesHeaderParser().parsebytes(self.header).get_all(name, [])]


@dataclass
class Mailbox:
    """The demo user's mailbox; every server reads and changes this one list."""

    address: str
    password: str
    messages: list[Message] = field(default_factory=list)
    next_uid: int = 1

    def deliver(self, data: bytes) -> None:
        data = re.sub(rb"\r?\n", b"\r\n", data)
        self.messages.append(Message(self.next_uid, data, time.time()))
        self.next_uid += 1

    def remove(self, gone: Iterable[Message]) -> None:
        drop = set(map(id, gone))
        self.messages[:] = [m for m in self.messages if id(m) not in drop]


# ---------------------------------------------------------------- SMTP (aiosmtpd)


class _Delivery:
    """aiosmtpd handler: mail for the mailbox's address goes into it; no one else is here."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.lower() != self.mailbox.address:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self.mailbox.deliver(envelope.original_content)
        return "250 2.0.0 delivered to the demo mailbox"


class _Turnaway(asyncio.Protocol):
    """A connection the script fails: one refusal line and close, or silence (``b""``)."""

    def __init__(self, refusal: bytes) -> None:
        self.refusal = refusal

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.refusal:  # not isinstance(WriteTransport): uvloop's transports are not
            cast(asyncio.WriteTransport, transport).write(self.refusal)
            transport.close()


class _Smtp(SMTP):
    """aiosmtpd's protocol, remembering its connection so that stop() can end it."""

    def __init__(self, handler: _Delivery, live: weakref.WeakSet[asyncio.BaseTransport]) -> None:
        # hostname given: aiosmtpd's default is socket.getfqdn(), a blocking DNS lookup
        super().__init__(handler, hostname=HOSTNAME, ident="probed demo SMTP")
        self.demo_live = live

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.demo_live.add(transport)
        super().connection_made(transport)


class SmtpServer:
    """aiosmtpd's SMTP protocol on 127.0.0.1 in this event loop (its Controller needs a thread)."""

    refusal = b"421 4.3.2 too many connections, try again later\r\n"

    def __init__(self, mailbox: Mailbox, script: Script | None = None) -> None:
        self.script = script or Script()
        self._handler = _Delivery(mailbox)
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _protocol(self) -> asyncio.BaseProtocol:
        if self.script.next_is_up():
            return _Smtp(self._handler, self._transports)
        return _Turnaway(b"" if self.script.hang else self.refusal)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._transports):
            transport.close()


# ---------------------------------------------------------------- line servers


class _LineServer:
    """asyncio.start_server on 127.0.0.1 with a Script; a subclass holds the dialogue."""

    refusal: ClassVar[bytes]

    def __init__(self, mailbox: Mailbox, script: Script | None = None) -> None:
        self.mailbox = mailbox
        self.script = script or Script()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self.script.next_is_up():
                await self.session(reader, writer)
            elif self.script.hang:
                await reader.read()  # until the client gives up
            else:
                writer.write(self.refusal)
                await writer.drain()
        except _HANGUPS:
            pass  # the client hung up: the probe's business, not the server's
        finally:
            self._writers.discard(writer)
            writer.close()

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------- POP3 (RFC 1939)


def _dot_stuffed(data: bytes) -> bytes:
    """A multi-line POP3 answer's body: lines starting with "." doubled, "." at the end."""
    lines = data.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


_POP3_OPEN = {"CAPA", "USER", "PASS", "QUIT"}  # before login


class Pop3Server(_LineServer):
    refusal = b"-ERR [SYS/TEMP] too many connections, try again later\r\n"

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialogue = _Pop3Session(self.mailbox)
        writer.write(b"+OK probed demo POP3 ready\r\n")
        while not dialogue.done and (line := await reader.readline()):
            writer.write(dialogue.answer(line.decode("utf-8", "replace")))
            await writer.drain()


class _Pop3Session:
    """One POP3 session. The maildrop is fixed at login; DELE takes effect at QUIT."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.user = ""
        self.maildrop: list[Message] | None = None
        self.deleted: set[int] = set()  # message numbers
        self.done = False

    def answer(self, line: str) -> bytes:
        verb, *args = line.split() or [""]
        command = getattr(self, f"pop3_{verb.upper()}", None)
        if command is None or (self.maildrop is None and verb.upper() not in _POP3_OPEN):
            return b"-ERR unknown command or not logged in\r\n"
        reply: bytes = command(args)
        return reply

    def _live(self) -> Iterator[tuple[int, Message]]:
        return ((n, m) for n, m in enumerate(self.maildrop or [], 1) if n not in self.deleted)

    def _pick(self, args: list[str]) -> Message | None:
        number = int(args[0]) if args and args[0].isdigit() else 0
        return dict(self._live()).get(number)

    def pop3_CAPA(self, args: list[str]) -> bytes:
        return b"+OK capabilities follow\r\n" + _dot_stuffed(b"USER\r\nUIDL\r\nTOP\r\n")

    def pop3_USER(self, args: list[str]) -> bytes:
        self.user = " ".join(args)
        return b"+OK\r\n"

    def pop3_PASS(self, args: list[str]) -> bytes:
        if self.user.lower() != self.mailbox.address or " ".join(args) != self.mailbox.password:
            return b"-ERR [AUTH] authentication failed\r\n"
        self.maildrop = list(self.mailbox.messages)
        return b"+OK %d messages\r\n" % len(self.maildrop)

    def pop3_STAT(self, args: list[str]) -> bytes:
        live = [m for _, m in self._live()]
        return b"+OK %d %d\r\n" % (len(live), sum(len(m.data) for m in live))

    def pop3_LIST(self, args: list[str]) -> bytes:
        body = b"".join(b"%d %d\r\n" % (n, len(m.data)) for n, m in self._live())
        return b"+OK listing follows\r\n" + _dot_stuffed(body)

    def pop3_UIDL(self, args: list[str]) -> bytes:
        body = b"".join(b"%d %d\r\n" % (n, m.uid) for n, m in self._live())
        return b"+OK unique ids follow\r\n" + _dot_stuffed(body)

    def pop3_TOP(self, args: list[str]) -> bytes:
        message = self._pick(args)
        if message is None or len(args) < 2 or not args[1].isdigit():
            return b"-ERR no such message\r\n"
        body = message.data[len(message.header) :].split(b"\r\n")[: int(args[1])]
        return b"+OK\r\n" + _dot_stuffed(message.header + b"".join(ln + b"\r\n" for ln in body))

    def pop3_RETR(self, args: list[str]) -> bytes:
        message = self._pick(args)
        if message is None:
            return b"-ERR no such message\r\n"
        return b"+OK %d octets\r\n" % len(message.data) + _dot_stuffed(message.data)

    def pop3_DELE(self, args: list[str]) -> bytes:
        if self._pick(args) is None:
            return b"-ERR no such message\r\n"
        self.deleted.add(int(args[0]))
        return b"+OK deleted\r\n"

    def pop3_NOOP(self, args: list[str]) -> bytes:
        return b"+OK\r\n"

    def pop3_RSET(self, args: list[str]) -> bytes:
        self.deleted.clear()
        return b"+OK\r\n"

    def pop3_QUIT(self, args: list[str]) -> bytes:
        if self.maildrop is not None:
            self.mailbox.remove(self.maildrop[n - 1] for n in self.deleted)
        self.done = True
        return b"+OK bye\r\n"


# ---------------------------------------------------------------- IMAP4rev1 (RFC 3501)

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\([^)]*\))|(\S+)')


def _words(line: str) -> list[str]:
    """Atoms, quoted strings (unquoted) and parenthesised lists (kept whole)."""
    return [
        re.sub(r"\\(.)", r"\1", q) if q or not (p or a) else p or a
        for q, p, a in _TOKEN.findall(line)
    ]


def _numbers(spec: str, largest: int) -> set[int]:
    """An IMAP sequence set (``1,4:6,9:*``) as numbers."""
    found: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition(":")
        a, b = (largest if x == "*" else int(x) for x in (low, high or low))
        found.update(range(min(a, b), max(a, b) + 1))
    return found


_Answer = tuple[list[bytes], str]  # untagged lines, then the tagged status
_IMAP_STATES = {  # the states a command is allowed in; others: any
    "LOGIN": ("new",),
    "SELECT": ("auth", "selected"),
    "EXAMINE": ("auth", "selected"),
    **{verb: ("selected",) for verb in ("FETCH", "SEARCH", "STORE", "EXPUNGE", "CLOSE")},
}


class ImapServer(_LineServer):
    refusal = b"* BYE too many connections, try again later\r\n"

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dialogue = _ImapSession(self.mailbox)
        writer.write(b"* OK probed demo IMAP ready\r\n")
        while not dialogue.done and (line := await reader.readline()):
            writer.write(dialogue.answer(line.decode("utf-8", "replace")))
            await writer.drain()


class _ImapSession:
    """One IMAP session on the live mailbox: message numbers are positions in it."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.state = "new"  # then "auth", "selected"
        self.read_only = True
        self.done = False

    def answer(self, line: str) -> bytes:
        """One command line's answer: untagged lines, then the tagged status line."""
        tag, *words = _words(line) or ["*"]
        uid = bool(words) and words[0].upper() == "UID"
        verb, *args = words[uid:] or [""]
        verb = verb.upper()
        command = getattr(self, f"imap_{verb}", None)
        allowed = _IMAP_STATES.get(verb)
        untagged: list[bytes] = []
        if command is None:
            status = "BAD unknown command"
        elif allowed is not None and self.state not in allowed:
            status = "BAD not allowed now"
        else:
            try:
                untagged, status = command(args, uid)
            except (IndexError, ValueError, StopIteration):  # missing or malformed arguments
                status = "BAD malformed arguments"
        return b"".join(untagged) + f"{tag} {status}\r\n".encode()

    def _pick(self, spec: str, uid: bool) -> list[tuple[int, Message]]:
        listed = list(enumerate(self.mailbox.messages, 1))
        if uid:
            wanted = _numbers(spec, max((m.uid for _, m in listed), default=0))
            return [(n, m) for n, m in listed if m.uid in wanted]
        wanted = _numbers(spec, len(listed))
        return [(n, m) for n, m in listed if n in wanted]

    def imap_CAPABILITY(self, args: list[str], uid: bool) -> _Answer:
        return [b"* CAPABILITY IMAP4rev1 UIDPLUS\r\n"], "OK CAPABILITY completed"

    def imap_NOOP(self, args: list[str], uid: bool) -> _Answer:
        exists = [b"* %d EXISTS\r\n" % len(self.mailbox.messages)]
        return exists if self.state == "selected" else [], "OK NOOP completed"

    def imap_LOGOUT(self, args: list[str], uid: bool) -> _Answer:
        self.done = True
        return [b"* BYE logging out\r\n"], "OK LOGOUT completed"

    def imap_LOGIN(self, args: list[str], uid: bool) -> _Answer:
        if args[0].lower() != self.mailbox.address or args[1] != self.mailbox.password:
            return [], "NO [AUTHENTICATIONFAILED] authentication failed"
        self.state = "auth"
        return [], "OK LOGIN completed"

    def imap_SELECT(self, args: list[str], uid: bool, verb: str = "SELECT") -> _Answer:
        if args[0].upper() != "INBOX":
            return [], "NO [NONEXISTENT] only INBOX here"
        self.state, self.read_only = "selected", verb == "EXAMINE"
        untagged = [
            b"* FLAGS (\\Deleted \\Seen)\r\n",
            b"* %d EXISTS\r\n" % len(self.mailbox.messages),
            b"* 0 RECENT\r\n",
            b"* OK [UIDVALIDITY 1] UIDs valid\r\n",
            b"* OK [UIDNEXT %d] predicted next UID\r\n" % self.mailbox.next_uid,
        ]
        mode = "READ-ONLY" if self.read_only else "READ-WRITE"
        return untagged, f"OK [{mode}] {verb} completed"

    def imap_EXAMINE(self, args: list[str], uid: bool) -> _Answer:
        return self.imap_SELECT(args, uid, "EXAMINE")

    def imap_FETCH(self, args: list[str], uid: bool) -> _Answer:
        if args[1].strip("()").upper() not in ("BODY.PEEK[HEADER]", "BODY[HEADER]"):
            return [], "BAD only BODY.PEEK[HEADER] here"
        picked = self._pick(args[0], uid)
        if not picked and not uid:  # deleted by another session since this one looked
            return [], "NO [EXPUNGEISSUED] no such message"
        untagged = []
        for n, m in picked:
            prefix = b"UID %d " % m.uid if uid else b""
            literal = b"{%d}\r\n%s" % (len(m.header), m.header)
            untagged.append(b"* %d FETCH (%sBODY[HEADER] %s)\r\n" % (n, prefix, literal))
        return untagged, "OK FETCH completed"

    def imap_SEARCH(self, args: list[str], uid: bool) -> _Answer:
        found = [m.uid if uid else n for n, m in self._pick("1:*", False) if _matches(m, args)]
        return [b"* SEARCH" + b"".join(b" %d" % x for x in found) + b"\r\n"], "OK SEARCH completed"

    def imap_STORE(self, args: list[str], uid: bool) -> _Answer:
        if self.read_only:
            return [], "NO mailbox is read-only"
        how, flags = args[1].upper(), set(args[2].strip("()").split())
        untagged = []
        for n, m in self._pick(args[0], uid):
            m.flags = {"+": m.flags | flags, "-": m.flags - flags}.get(how[0], flags)
            if not how.endswith(".SILENT"):
                untagged.append(b"* %d FETCH (FLAGS (%s))\r\n" % (n, " ".join(m.flags).encode()))
        return untagged, "OK STORE completed"

    def imap_EXPUNGE(self, args: list[str], uid: bool) -> _Answer:
        if self.read_only:
            return [], "NO mailbox is read-only"
        chosen = self._pick(args[0] if uid else "1:*", uid)
        gone = [(n, m) for n, m in chosen if "\\Deleted" in m.flags]
        self.mailbox.remove(m for _, m in gone)
        # highest number first: each EXPUNGE renumbers the messages after it
        return [b"* %d EXPUNGE\r\n" % n for n, _ in reversed(gone)], "OK EXPUNGE completed"

    def imap_CLOSE(self, args: list[str], uid: bool) -> _Answer:
        if not self.read_only:
            self.mailbox.remove(m for m in list(self.mailbox.messages) if "\\Deleted" in m.flags)
        self.state = "auth"
        return [], "OK CLOSE completed"


def _matches(message: Message, criteria: list[str]) -> bool:
    """SEARCH keys: ALL, HEADER name text, SUBJECT text, BEFORE date (all must hold)."""
    words = iter(criteria)
    for word in words:
        key = word.upper()
        if key in ("HEADER", "SUBJECT"):
            name = next(words) if key == "HEADER" else "Subject"
            text = next(words).lower()
            if not any(text in value.lower() for value in message.header_values(name)):
                return False
        elif key == "BEFORE":
            day = datetime.datetime.strptime(next(words), "%d-%b-%Y").replace(tzinfo=datetime.UTC)
            if message.arrived >= day.timestamp():
                return False
        elif key != "ALL":
            raise ValueError(f"unsupported search key {key}")
    return True
