"""The store engines the contract tests run against (a pytest plugin, see conftest).

``engine`` is parametrised by engine name; ``engine.url()`` is a fresh, empty
store each call. Each engine added here (e.g. "postgresql" with a private
cluster, tests/pgcluster.py) runs the whole contract suite and the figures property test.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from probed.store.base import Store, open_store
from probed.store.sqlite import SqliteStore

ENGINES = ["sqlite", "postgresql"]


@dataclass
class Engine:
    name: str
    url: Callable[[], str]  # a new empty store per call
    crash: Callable[[Store], Awaitable[None]]  # drop the store as kill -9 would: no flush

    async def open(
        self,
        url: str,
        *,
        location: str = "here",
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> Store:
        return await open_store(url, location=location, readonly=readonly, clock=clock)


async def crash_sqlite(store: Store) -> None:
    assert isinstance(store, SqliteStore)
    await store._call(store._db.close)  # buffered passes and coverage are lost
    store._executor.shutdown()


async def crash_postgresql(store: Store) -> None:
    from probed.store.postgresql import PostgresStore

    assert isinstance(store, PostgresStore)
    await store.pool.close()  # connections dropped; buffered passes and coverage are lost


def sqlite_engine(base: Path) -> Engine:
    counter = itertools.count()
    return Engine("sqlite", lambda: f"sqlite://{base}/store-{next(counter)}.db", crash_sqlite)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    if request.param == "sqlite":
        return sqlite_engine(tmp_path_factory.mktemp("stores"))
    if request.param == "postgresql":
        # a new database per url(); the password reaches libpq through PGPASSFILE
        cluster = request.getfixturevalue("pg_cluster")
        return Engine(
            "postgresql", lambda: cluster.dsn(cluster.create_database()), crash_postgresql
        )
    raise AssertionError(f"unknown engine {request.param}")
