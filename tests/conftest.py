"""Shared test helpers. Server fixtures live in their own modules (see pytest_plugins)."""

from __future__ import annotations

import os
import shutil

import pytest

pytest_plugins: list[str] = ["tests.mailservers"]

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
