"""Where the daemons of end-to-end tests keep their history: SQLite or PostgreSQL (a plugin).

``daemon_storage`` is parametrised over both engines; ``lines`` go into the
config (``http_config(..., storage=daemon_storage.lines)``) and ``open()``
reads what the daemon wrote through the product's own store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from probed.store.base import Store, open_store


@dataclass(frozen=True)
class DaemonStorage:
    name: str
    url: str
    lines: str  # the config's storage: (and storage_password_file:) lines

    async def open(self, location: str = "reader") -> Store:
        """The store, read-only, as ``probed report`` opens it (libpq finds the password
        through PGPASSFILE, set by the cluster fixture)."""
        return await open_store(self.url, location=location, readonly=True)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Store]:
        """``open()`` for the length of a ``with`` block (what another process would see)."""
        store = await self.open()
        try:
            yield store
        finally:
            await store.close()


def sqlite_storage(tmp: Path) -> DaemonStorage:
    url = f"sqlite://{tmp}/probed.db"
    return DaemonStorage("sqlite", url, f"storage: {url}")


@pytest.fixture(params=["sqlite", "postgresql"])
def daemon_storage(request: pytest.FixtureRequest, tmp_path: Path) -> DaemonStorage:
    if request.param == "sqlite":
        return sqlite_storage(tmp_path)
    cluster = request.getfixturevalue("pg_cluster")
    url = request.getfixturevalue("pg_dsn")
    return DaemonStorage(
        "postgresql", url, f"storage: {url}\nstorage_password_file: {cluster.password_file}"
    )
