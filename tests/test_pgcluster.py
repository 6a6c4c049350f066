"""The private PostgreSQL cluster the store tests use: password login on loopback, restartable."""

from __future__ import annotations

import psycopg
import pytest

from tests.pgcluster import PgCluster


def test_role_logs_in_with_its_password_over_tcp(pg_cluster: PgCluster, pg_dsn: str) -> None:
    database = pg_dsn.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.conninfo(database)) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == ("probed", database)


def test_wrong_password_is_refused(pg_cluster: PgCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_cluster.conninfo().replace(pg_cluster.password, "wrong"))


def test_stopped_cluster_refuses_and_comes_back(pg_cluster: PgCluster) -> None:
    pg_cluster.stop()
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg_cluster.conninfo(), connect_timeout=2)
    finally:
        pg_cluster.start()
    with psycopg.connect(pg_cluster.conninfo()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
