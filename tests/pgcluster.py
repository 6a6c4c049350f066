"""A private PostgreSQL cluster on loopback for the tests (a pytest plugin).

The session fixture ``pg_cluster`` runs ``initdb`` into a fresh temp dir,
starts ``postgres`` with ``pg_ctl`` on a free 127.0.0.1 port with its unix
socket in that dir, and creates a login role with a password; ``pg_dsn``
gives each test its own empty database. The system's cluster (stopped by
.ci/setup-postgresql.sh) is never touched, and no fixed port is used.

``initdb`` and ``postgres`` refuse to run as root, so a root run (CI) runs
them as Debian's ``postgres`` user (``runuser``), with the temp dir handed to
it. Outside CI a missing PostgreSQL skips; with CI=true it fails
(``tests.conftest.require``).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.conftest import require

HOST = "127.0.0.1"
ROLE = "probed"
SERVICE_USER = "postgres"  # Debian's postgresql-common creates it
START_SECONDS = 30
TEMPLATE = "probed_template"  # migrated once per session; test databases are copies


def find_bindir() -> Path | None:
    """Where ``initdb``/``pg_ctl`` live: pg_config, Debian's versioned dirs, then PATH."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += [Path(p) for p in versions]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _version_key(path: str) -> tuple[int, ...]:
    part = Path(path).parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit())


@dataclass
class PgCluster:
    """One private cluster; ``stop()``/``start()`` simulate a database outage."""

    bindir: Path
    base: Path
    port: int = 0
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    run_as: str | None = None  # a user to run the server as (when we are root)
    durable: bool = False  # fsync as in production (benchmarks); tests skip it for speed

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    @property
    def password_file(self) -> Path:
        """The role's password alone, as ``storage_password_file:`` expects it."""
        return self.base / "password"

    @property
    def pgpass(self) -> Path:
        """A libpq password file for this cluster (``PGPASSFILE``)."""
        return self.base / "pgpass"

    def dsn(self, database: str = "postgres") -> str:
        """The ``storage:`` URL (no password: that comes from the password file)."""
        return f"postgresql://{ROLE}@{HOST}:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        """A libpq conninfo with the password, for the tests' own connections."""
        return (
            f"host={HOST} port={self.port} dbname={database} user={ROLE} password={self.password}"
        )

    def _run(self, *argv: str, timeout: float = START_SECONDS) -> str:
        cmd = [str(a) for a in argv]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def init(self) -> None:
        self.socket_dir.mkdir()
        superpw = self.base / "superpw"
        superpw.write_text(self.password + "\n", encoding="utf-8")
        self.password_file.write_text(self.password + "\n", encoding="utf-8")
        self.pgpass.write_text(f"{HOST}:*:*:{ROLE}:{self.password}\n", encoding="utf-8")
        self.pgpass.chmod(0o600)  # libpq ignores a password file others can read
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.base, self.socket_dir, superpw):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            self.bindir / "initdb",
            "-D",
            str(self.data),
            "-U",
            ROLE,
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            f"--pwfile={superpw}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        superpw.unlink()
        self.port = _free_port()
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"\nlisten_addresses = '{HOST}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "max_connections = 200\n"
            )
            if not self.durable:
                conf.write("fsync = off\nfull_page_writes = off\n")
        self.start()
        self.psql(f"CREATE DATABASE {TEMPLATE}")
        # in a thread: the session fixture may be set up while an event loop runs
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _migrate(self.dsn(TEMPLATE), self.password)).result()

    def start(self) -> None:
        self._run(
            self.bindir / "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            str(START_SECONDS),
            "start",
        )

    @property
    def pid(self) -> int:
        """The postmaster's process id (its first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` disconnects clients, as a restart would)."""
        self._run(self.bindir / "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, timeout=10, check=False).returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL over the unix socket as the cluster's superuser; returns unaligned rows."""
        return self._run(
            self.bindir / "psql" if (self.bindir / "psql").exists() else "psql",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            ROLE,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-XAtqc",
            sql,
        )

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database: a copy of an already migrated probed store (fast: no DDL per
        test), or empty (``migrated=False``, for tests of the migrations themselves)."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        template = f" TEMPLATE {TEMPLATE} STRATEGY FILE_COPY" if migrated else ""
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}{template}")
        return name

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            if self.running():
                self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


async def _migrate(dsn: str, password: str) -> None:
    from probed.store.postgresql import PostgresStore

    store = await PostgresStore.open(dsn, location="template", password=password)
    await store.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _service_user() -> str | None:
    """None when we may run the server ourselves, else the unprivileged user to use."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        require(False, f"running as root needs a {SERVICE_USER!r} user for PostgreSQL")
    require(shutil.which("runuser") is not None, "runuser is not installed")
    return SERVICE_USER


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    require(bindir is not None, "PostgreSQL (initdb, pg_ctl) is not installed")
    assert bindir is not None
    cluster = PgCluster(bindir, Path(tempfile.mkdtemp(prefix="probed-pg-")), run_as=_service_user())
    saved = os.environ.get("PGPASSFILE")
    try:
        cluster.init()
        # stores opened from a bare URL (the contract suite, daemons the tests start)
        # find the password the way libpq does: PGPASSFILE
        os.environ["PGPASSFILE"] = str(cluster.pgpass)
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = saved
        cluster.destroy()


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> str:
    """A fresh database per test; the ``storage:`` URL of it (password: ``pg_cluster.password_file``)."""
    if not pg_cluster.running():
        pg_cluster.start()  # a test that stopped the server and failed before starting it
    return pg_cluster.dsn(pg_cluster.create_database())
