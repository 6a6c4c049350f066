"""What only the PostgreSQL store has: its URL and password, libpq's parameters, several
daemons on one database (migrations once, no duplicates, each outbox row claimed once)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from probed import config as config_mod
from probed.config import ConfigError
from probed.store.base import DamagedStore, FailedTest, OutboxEntry, StorageError, open_store
from probed.store.buffered import FailureWrite
from probed.store.postgresql import PostgresStore
from tests.pgcluster import PgCluster

T0 = 1_790_000_000.0


def write_config(tmp_path: Path, storage: str, extra: str = "") -> Path:
    path = tmp_path / "probed.yaml"
    path.write_text(
        f"storage: {storage}\n{extra}\nservices:\n  web:\n    objective: 99.5\n    checks:\n"
        '      - {name: site, type: http, url: "http://127.0.0.1:9/"}\n',
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------- config


def test_a_password_in_the_url_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, "postgresql://probed:s3cret@db.example.net/probed")
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}:1: storage: ")
    assert "contains a password: put it in storage_password_file:" in problem
    assert "s3cret" not in problem


def test_the_password_file_is_relative_to_the_config_and_read_by_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    (tmp_path / "db.pass").write_text("pa ss\n", encoding="utf-8")
    path = write_config(
        tmp_path,
        "postgresql://probed@db.example.net:5432/probed?sslmode=verify-full",
        "storage_password_file: db.pass",
    )
    for secrets in (True, False):  # report and exclude (secrets=False) open the store too
        config = config_mod.load(path, secrets=secrets)
        assert config.storage_password == "pa ss"
        assert (
            config.storage_url
            == "postgresql://probed@db.example.net:5432/probed?sslmode=verify-full"
        )
        assert config.storage_path is None
    assert "pa ss" not in repr(config)
    assert "storage postgresql://probed@db.example.net:5432/probed" in config_mod.summary(config)


def test_a_password_file_needs_a_postgresql_storage(tmp_path: Path) -> None:
    (tmp_path / "db.pass").write_text("x\n", encoding="utf-8")
    path = write_config(tmp_path, "sqlite://probed.db", "storage_password_file: db.pass")
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert info.value.problems == [
        f"{path}:2: storage_password_file: only a postgresql:// storage takes a password"
    ]


def test_a_storage_timeout_needs_a_postgresql_storage(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite://probed.db", "storage_timeout: 5s")
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert info.value.problems == [
        f"{path}:2: storage_timeout: only a postgresql:// storage takes a timeout"
        " (SQLite is a local file)"
    ]


def test_a_missing_password_file_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "postgresql://probed@127.0.0.1/probed", "storage_password_file: nope.pass"
    )
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert "storage_password_file: cannot read secret file nope.pass" in info.value.problems[0]


# -------------------------------------------------------- connections


async def test_the_config_password_file_opens_the_store(
    tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass either
    path = write_config(
        tmp_path, pg_dsn, f"storage_password_file: {pg_cluster.password_file}\nlocation: fra1"
    )
    store = await open_store(config_mod.load(path))
    try:
        assert store.location == "fra1" and await store.writable() is None
    finally:
        await store.close()
    with pytest.raises(StorageError, match="password"):
        await open_store(pg_dsn, location="fra1")  # no password from anywhere


async def test_libpq_reads_pgpassfile_and_sslmode(pg_dsn: str) -> None:
    """PGPASSFILE (set by the cluster fixture) supplies the password; sslmode is libpq's."""
    store = await open_store(f"{pg_dsn}?sslmode=disable", location="here")
    await store.close()
    with pytest.raises(StorageError, match="server does not support SSL"):
        await open_store(f"{pg_dsn}?sslmode=require", location="here")


async def test_storage_timeout_and_keepalives_reach_libpq_unless_the_url_sets_them(
    tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    password = f"storage_password_file: {pg_cluster.password_file}"
    path = write_config(tmp_path, pg_dsn, f"{password}\nstorage_timeout: 2.5s")
    config = config_mod.load(path)
    assert config.storage_timeout == 2.5
    for target, user_timeout, idle in (
        (config, "2500", "10"),
        (f"{pg_dsn}?keepalives_idle=30", "10000", "30"),
    ):
        store = await open_store(target, location="here")
        assert isinstance(store, PostgresStore)
        try:
            async with store.pool.connection() as conn:
                params = conn.info.get_parameters()
        finally:
            await store.close()
        assert (params["tcp_user_timeout"], params["keepalives_idle"]) == (user_timeout, idle)
        assert (params["keepalives"], params["keepalives_count"]) == ("1", "3")


async def test_an_operation_past_storage_timeout_fails_and_the_store_recovers(
    pg_cluster: PgCluster, pg_dsn: str
) -> None:
    """A statement that waits (here on a lock another session holds) fails as a
    StorageError after the bound; its query is cancelled and the store works again."""
    store = await PostgresStore.open(pg_dsn, location="here", operation_timeout=0.5)
    database = pg_dsn.rsplit("/", 1)[1]
    try:
        async with await psycopg.AsyncConnection.connect(pg_cluster.conninfo(database)) as locker:
            await locker.execute("BEGIN")
            await locker.execute("LOCK TABLE exclusions IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StorageError, match=r"no answer within 0\.5s \(storage_timeout"):
                await store.exclusions()
            await locker.execute("ROLLBACK")
        assert await store.exclusions() == []
        assert await store.writable() is None
    finally:
        await store.close()


async def test_a_database_with_other_tables_is_refused_untouched(
    pg_cluster: PgCluster,
) -> None:
    database = pg_cluster.create_database(migrated=False)
    pg_cluster.psql("CREATE TABLE invoices (id int)", database)
    with pytest.raises(DamagedStore, match="has 1 tables but is not a probed store"):
        await open_store(pg_cluster.dsn(database), location="here")
    tables = pg_cluster.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database
    )
    assert tables.split() == ["invoices"]


# ----------------------------------------------------- several daemons


async def test_daemons_starting_together_migrate_once_and_share_check_ids(
    pg_cluster: PgCluster,
) -> None:
    dsn = pg_cluster.dsn(pg_cluster.create_database(migrated=False))
    stores = await asyncio.gather(*(open_store(dsn, location=f"loc{i}") for i in range(6)))
    try:
        ids = await asyncio.gather(*(s.check_id("web", "site", "http") for s in stores))
        assert len(set(ids)) == 1
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM checks").fetchone() == (1,)
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
            assert version.fetchone() is not None
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_retried_write_never_stores_a_row_twice(pg_dsn: str) -> None:
    store = await open_store(pg_dsn, location="here")
    assert isinstance(store, PostgresStore)
    try:
        cid = await store.check_id("web", "site", "http")
        test = FailedTest("site", T0, 0.1, "HTTP 503")
        # the same write arriving twice, as after a commit whose answer was lost
        for _ in range(2):
            await store._write_batch([], [], FailureWrite(cid, test, 0, 0, 0, None), T0)
        from probed.core.outages import FailureRun

        run = FailureRun(T0, T0 + 1, 2, ("HTTP 503",))
        assert await store.open_outage(cid, run) == await store.open_outage(cid, run)
        assert len(await store.failed_tests("web", "site", (T0 - 1, T0 + 1))) == 1
        assert len(await store.outages("web", (T0 - 1, T0 + 10))) == 1
    finally:
        await store.close()


async def test_several_daemons_deliver_each_outbox_row_once_in_order(pg_dsn: str) -> None:
    stores = [await open_store(pg_dsn, location=f"loc{i}") for i in range(4)]
    try:
        await stores[0].enqueue([OutboxEntry(("hook",), f'{{"id": "{n}"}}') for n in range(20)], T0)
        delivered: list[tuple[str, str]] = []

        async def deliver(store: object) -> None:
            assert isinstance(store, PostgresStore)
            for _ in range(200):  # bounded
                row = await store.claim("hook", T0 + 1, lease=60)
                if row is None:
                    return
                if row.claimed:
                    delivered.append((store.location, row.payload))
                    await store.delivered(row.id, T0 + 1)
                else:
                    await asyncio.sleep(0.001)

        await asyncio.gather(*(deliver(s) for s in stores))
    finally:
        for s in stores:
            await s.close()
    assert [p for _, p in delivered] == [f'{{"id": "{n}"}}' for n in range(20)]
