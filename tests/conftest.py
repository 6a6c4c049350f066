"""Shared test helpers. Server fixtures live in their own modules (see pytest_plugins)."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import pytest
import trustme
from hypothesis import settings

# No wall-time thresholds: hypothesis' default 200 ms deadline fails property tests at
# random on a loaded machine (seen while several suites shared 2 cores).
settings.register_profile("probed", deadline=None)
settings.load_profile("probed")

pytest_plugins: list[str] = [
    "tests.mailservers",
    "tests.pgcluster",
    "tests.store_engines",
    "tests.daemon_storage",
]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, why: str) -> None:
    """Skip when a real server or tool is missing, except in CI where that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{why} (CI=true: real servers are required, see .ci/run)")
    pytest.skip(why)


def require_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    require(path is not None, f"{name} is not installed")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """A private CA for fake TLS servers on loopback."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context
