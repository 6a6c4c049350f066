"""Real Dovecot and Postfix on loopback for the mail probe tests (a pytest plugin).

The session fixture ``mail_servers`` starts private instances on 127.0.0.1,
high free ports, with every config, socket, queue, log and mailbox under one
tmp dir; the system instances (stopped by .ci/setup-mail-servers.sh) are
never touched:

* Dovecot (``dovecot -F -c FILE``, own base_dir and state_dir): IMAP (+STARTTLS),
  IMAPS, POP3 (+STLS), POP3S, users from a passwd-file, Maildir mailboxes, and
  an auth socket that Postfix uses for SASL;
* Postfix (``postfix -c DIR start``, own config/queue/data directories):
  smtpd on a high port for ``mail.test``, and a submission port that requires
  STARTTLS and SASL AUTH; both deliver with virtual(8) into the same Maildirs
  that Dovecot serves.

Certificates come from ``trustme`` (``ca_file`` trusts them). Postfix's master
only runs as root, so outside CI a non-root run skips these tests; with
CI=true missing binaries or privileges are failures (``tests.conftest.require``).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.conftest import require, require_tool

HOST = "127.0.0.1"
DOMAIN = "mail.test"
STARTUP_SECONDS = 20.0
# The mailboxes belong to Debian's "mail" user: it exists everywhere, is not
# root (which Dovecot and virtual(8) refuse) and is no login account.
VMAIL_USER = "mail"


@dataclass(frozen=True, slots=True)
class MailPorts:
    smtp: int
    submission: int
    imap: int
    imaps: int
    pop3: int
    pop3s: int


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A test account: its address (also its login), password, and Maildir."""

    user: str
    password: str
    password_file: Path
    maildir: Path

    def deliver(self, message: bytes | str, *, flags: str = "") -> Path:
        """Put ``message`` into the Maildir atomically (tmp/ then rename), as a
        delivery agent would: into new/ without flags, else into cur/ with them."""
        data = message.encode() if isinstance(message, str) else message
        data = data.replace(b"\r\n", b"\n")  # Maildir files use bare LF
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.probed-test"
        tmp = self.maildir / "tmp" / name
        tmp.write_bytes(data)
        _chown_vmail(tmp)
        final = (
            self.maildir / "cur" / f"{name}:2,{''.join(sorted(flags))}"
            if flags
            else self.maildir / "new" / name
        )
        tmp.rename(final)
        return final

    def files(self) -> list[Path]:
        """Every message file, in new/ and cur/."""
        return sorted(
            p for sub in ("new", "cur") for p in (self.maildir / sub).iterdir() if p.is_file()
        )

    def clear(self) -> None:
        """Remove every message (Dovecot resyncs its index from the directory)."""
        for path in self.files():
            path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class MailServers:
    """Where the servers listen and who may log in.

    ``user``/``password_file``/``maildir`` are the main test account
    (``probe@mail.test``); ``other`` is a second account whose mail the main
    one never sees (for "not delivered" cases).
    """

    host: str
    domain: str
    ports: MailPorts
    ca_file: Path
    account: Mailbox
    other: Mailbox
    root: Path

    @property
    def user(self) -> str:
        return self.account.user

    @property
    def password(self) -> str:
        return self.account.password

    @property
    def password_file(self) -> Path:
        return self.account.password_file

    @property
    def maildir(self) -> Path:
        return self.account.maildir

    def deliver(self, message: bytes | str, *, flags: str = "") -> Path:
        return self.account.deliver(message, flags=flags)

    def clear(self) -> None:
        self.account.clear()
        self.other.clear()

    def logs(self) -> str:
        """Both servers' logs, for assertion messages."""
        parts = []
        for name in ("dovecot.log", "postfix.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


def _vmail_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(VMAIL_USER)
    return entry.pw_uid, entry.pw_gid


def _chown_vmail(path: Path) -> None:
    uid, gid = _vmail_ids()
    os.chown(path, uid, gid)


def _free_ports(count: int) -> list[int]:
    """Distinct free ports, picked by the kernel (bound together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_for_ports(
    ports: list[int], alive: Callable[[], bool] | None, what: str, logs: list[Path]
) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    pending = list(ports)
    while pending:
        port = pending[0]
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            pending.pop(0)
            continue
        if alive is not None and not alive():
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if pending:
        text = "".join(p.read_text(errors="replace")[-3000:] for p in logs if p.exists())
        raise RuntimeError(f"{what} did not listen on {pending}:\n{text or '(no log)'}")


def _make_account(root: Path, local: str, password: str) -> Mailbox:
    uid, gid = _vmail_ids()
    maildir = root / "mail" / DOMAIN / local / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    for path in (maildir.parent, maildir, *(maildir / s for s in ("tmp", "new", "cur"))):
        os.chown(path, uid, gid)
    secret = root / "secrets" / f"{local}.pass"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(password + "\n")
    return Mailbox(
        user=f"{local}@{DOMAIN}", password=password, password_file=secret, maildir=maildir
    )


def _write_certificates(root: Path) -> tuple[Path, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", HOST, f"mx.{DOMAIN}")
    tls = root / "tls"
    tls.mkdir()
    ca_file, chain, key = tls / "ca.pem", tls / "server.pem", tls / "server.key"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key))
    with chain.open("wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())
    key.chmod(0o600)
    return ca_file, chain, key


# --- Dovecot ---------------------------------------------------------------


def _dovecot_conf(root: Path, ports: MailPorts, chain: Path, key: Path, auth: Path) -> str:
    uid, gid = _vmail_ids()
    dh = Path("/usr/share/dovecot/dh.pem")
    return f"""\
instance_name = probed-test-{root.name}
base_dir = {root}/dovecot-run
state_dir = {root}/dovecot-state
log_path = {root}/dovecot.log
protocols = imap pop3
listen = {HOST}
shutdown_clients = yes
first_valid_uid = {uid}
mail_location = maildir:~/Maildir
# The probes test plain LOGIN/USER too, so plaintext auth is allowed without TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
ssl = yes
ssl_cert = <{chain}
ssl_key = <{key}
{f"ssl_dh = <{dh}" if dh.exists() else ""}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/dovecot.passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/dovecot.passwd
  default_fields = uid={uid} gid={gid}
}}
service imap-login {{
  inet_listener imap {{
    port = {ports.imap}
  }}
  inet_listener imaps {{
    port = {ports.imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {ports.pop3}
  }}
  inet_listener pop3s {{
    port = {ports.pop3s}
    ssl = yes
  }}
}}
# No growing per-IP delay after failed logins: the tests fail logins on
# purpose, from one IP. The first failure still waits auth_failure_delay (2s).
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener {auth.name} {{
    mode = 0666
  }}
}}
"""


def _start_dovecot(
    root: Path, ports: MailPorts, chain: Path, key: Path, accounts: list[Mailbox]
) -> tuple[subprocess.Popen[bytes], Path]:
    binary = require_tool("dovecot")
    (root / "dovecot-state").mkdir()
    # Relative listener names live in base_dir; Postfix gets the full path.
    auth = root / "dovecot-run" / "auth-postfix"
    passwd = root / "dovecot.passwd"
    passwd.write_text(
        "".join(f"{a.user}:{{PLAIN}}{a.password}::::{a.maildir.parent}::\n" for a in accounts)
    )
    conf = root / "dovecot.conf"
    conf.write_text(_dovecot_conf(root, ports, chain, key, auth))
    with (root / "dovecot.stderr").open("wb") as stderr:
        proc = subprocess.Popen(
            [binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    _wait_for_ports(
        [ports.imap, ports.imaps, ports.pop3, ports.pop3s],
        lambda: proc.poll() is None,
        "dovecot",
        [root / "dovecot.stderr", root / "dovecot.log"],
    )
    return proc, auth


def _stop_dovecot(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- Postfix ---------------------------------------------------------------

_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{host}:{smtp} inet n - n - - smtpd
{host}:{submission} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _postfix_main_cf(
    root: Path, chain: Path, key: Path, auth: Path, accounts: list[Mailbox]
) -> str:
    uid, gid = _vmail_ids()
    mailboxes = ", ".join(f"{a.user}={a.maildir.relative_to(root / 'mail')}/" for a in accounts)
    return f"""\
compatibility_level = 3.6
queue_directory = {root}/postfix-spool
data_directory = {root}/postfix-data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
myhostname = mx.{DOMAIN}
mydomain = {DOMAIN}
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_banner = $myhostname ESMTP probed-test
biff = no
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled in tests
relayhost =
relay_domains =
default_transport = error:5.7.1 outbound mail is disabled in tests
in_flow_delay = 0
virtual_mailbox_domains = {DOMAIN}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = inline:{{ {mailboxes} }}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = {uid}
smtpd_tls_cert_file = {chain}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = {auth}
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
"""


def _postfix(binary: str, conf_dir: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary, "-c", str(conf_dir), command],
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        check=False,
    )


def _start_postfix(
    root: Path,
    ports: MailPorts,
    chain: Path,
    key: Path,
    auth: Path,
    accounts: list[Mailbox],
) -> tuple[str, Path]:
    binary = require_tool("postfix")
    conf_dir = root / "postfix-etc"
    conf_dir.mkdir()
    (root / "postfix-spool").mkdir()
    (root / "postfix-data").mkdir()
    shutil.chown(root / "postfix-data", "postfix", grp.getgrnam("postfix").gr_name)
    (conf_dir / "main.cf").write_text(_postfix_main_cf(root, chain, key, auth, accounts))
    (conf_dir / "master.cf").write_text(
        _MASTER_CF.format(host=HOST, smtp=ports.smtp, submission=ports.submission)
    )
    # "check" creates the queue's subdirectories with Postfix's ownerships.
    for command in ("check", "start"):
        done = _postfix(binary, conf_dir, command)
        if done.returncode != 0:
            raise RuntimeError(f"postfix {command} failed:\n{done.stdout}{done.stderr}")
    _wait_for_ports([ports.smtp, ports.submission], None, "postfix", [root / "postfix.log"])
    return binary, conf_dir


def _master_pid(root: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((root / "postfix-spool" / "pid" / "master.pid").read_text().split()[0])
    return None


def _stop_postfix(binary: str, conf_dir: Path, root: Path) -> None:
    pid = _master_pid(root)
    _postfix(binary, conf_dir, "stop")
    if pid is None:
        return
    # "stop" returns before the master exits (and leaves master.pid behind);
    # a master that ignored it must not outlive the session.
    deadline = time.monotonic() + 10
    proc = Path(f"/proc/{pid}/cmdline")
    while proc.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        if b"master" in proc.read_bytes():
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_mail_servers() -> Iterator[MailServers]:
    """Start Dovecot and Postfix under a fresh tmp dir; stop both and remove it after."""
    require_tool("dovecot")
    require_tool("postfix")
    require(os.geteuid() == 0, "the real mail servers need root (Postfix's master refuses)")
    # Not pytest's tmp_path: its parents are 0700, and Dovecot's login and
    # mail processes and Postfix's daemons run as other users that must traverse it.
    root = Path(tempfile.mkdtemp(prefix="probed-mail-"))
    root.chmod(0o755)
    dovecot: subprocess.Popen[bytes] | None = None
    postfix: tuple[str, Path] | None = None
    try:
        ports = MailPorts(*_free_ports(6))
        ca_file, chain, key = _write_certificates(root)
        account = _make_account(root, "probe", "probe-secret-" + uuid.uuid4().hex[:8])
        other = _make_account(root, "other", "other-secret-" + uuid.uuid4().hex[:8])
        dovecot, auth = _start_dovecot(root, ports, chain, key, [account, other])
        postfix = _start_postfix(root, ports, chain, key, auth, [account, other])
        yield MailServers(
            host=HOST,
            domain=DOMAIN,
            ports=ports,
            ca_file=ca_file,
            account=account,
            other=other,
            root=root,
        )
    finally:
        if postfix is not None:
            _stop_postfix(*postfix, root)
        if dovecot is not None:
            _stop_dovecot(dovecot)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mail_servers() -> Iterator[MailServers]:
    """Real Dovecot + Postfix on loopback, for the whole session."""
    with running_mail_servers() as servers:
        yield servers


@pytest.fixture
def mail(mail_servers: MailServers) -> Iterator[MailServers]:
    """The servers with both mailboxes emptied before and after the test."""
    mail_servers.clear()
    yield mail_servers
    mail_servers.clear()
