"""``probed store copy``: a history moved from SQLite to PostgreSQL reports exactly as before."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from probed.core.accounting import month_of
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.hooks_receiver import Receiver
from tests.pgcluster import PgCluster

pytestmark = pytest.mark.e2e
U, D = True, False
SCRIPTS = {"www": [U] * 2 + [D] * 3 + [U] * 3, "api": [U] + [D] + [U] * 4 + [D] * 2 + [U] * 2}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "probed.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok(*args: str) -> str:
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


# the running month's period (and so availability and unmonitored time) grows with "now"
GROWS_WITH_NOW = {"period_seconds", "availability", "unmonitored_seconds", "met", "status"}
GROWS_WITH_NOW |= {"error_budget_remaining_seconds", "credit_percent", "partial", "period_end"}


GROWS_WITH_NOW |= {"generated_at"}


def stable(data: Any) -> Any:
    """The report without what depends on when it is asked."""
    if isinstance(data, dict):
        return {k: stable(v) for k, v in data.items() if k not in GROWS_WITH_NOW}
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


def report(config: Path, *extra: str) -> Any:
    return stable(json.loads(ok("report", "-c", str(config), "--format", "json", *extra)))


async def test_a_copied_history_reports_exactly_as_before(
    tmp_path: Path, pg_cluster: PgCluster, pg_dsn: str
) -> None:
    async with ScriptedHTTP(SCRIPTS) as http, Receiver() as hooks:
        hook = (
            f'hooks:\n  - {{type: webhook, name: pager, url: "http://127.0.0.1:{hooks.port}/h"}}\n'
        )
        sqlite_config = http_config(tmp_path, http.port, list(SCRIPTS), 0.2, hook)
        daemon = await DaemonProcess(sqlite_config).start()
        try:
            await wait_for(
                lambda: all(http.counts.get(c, 0) >= len(s) + 1 for c, s in SCRIPTS.items()),
                what="the scripts to play out",
            )
        finally:
            assert await daemon.stop() == 0
    now = time.time()
    month = month_of(now, "UTC")
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60))
    ok(
        "exclude",
        "add",
        "-c",
        str(sqlite_config),
        "--service",
        "web",
        "--start",
        start,
        "--end",
        end,
        "--kind",
        "maintenance",
        "--reason",
        "patching",
        "--by",
        "alice",
    )
    added = ok(
        "exclude",
        "add",
        "-c",
        str(sqlite_config),
        "--all",
        "--start",
        start,
        "--end",
        end,
        "--kind",
        "dos",
        "--reason",
        "flood",
        "--by",
        "alice",
    ).strip()
    ok("exclude", "revoke", "-c", str(sqlite_config), added, "--reason", "was not")
    before = report(sqlite_config, "--month", month)
    [service] = before["services"]
    assert len(service["outages"]) == 2  # www (3 failed tests) and api (2)
    incident = str(service["outages"][0]["id"])
    incident_before = report(sqlite_config, "--incident", incident)
    exclusions_before = ok(
        "exclude", "list", "-c", str(sqlite_config), "--revoked", "--format", "json"
    )

    copied = ok(
        "store",
        "copy",
        "--from",
        f"sqlite://{tmp_path}/probed.db",
        "--to",
        pg_dsn,
        "--to-password-file",
        str(pg_cluster.password_file),
    )
    assert "failure_weeks" in copied and "outbox" in copied
    pg_config = tmp_path / "pg.yaml"
    pg_config.write_text(
        sqlite_config.read_text(encoding="utf-8").replace(
            f"storage: sqlite://{tmp_path}/probed.db",
            f"storage: {pg_dsn}\nstorage_password_file: {pg_cluster.password_file}",
        ),
        encoding="utf-8",
    )
    assert report(pg_config, "--month", month) == before
    assert report(pg_config, "--incident", incident) == incident_before
    assert (
        ok("exclude", "list", "-c", str(pg_config), "--revoked", "--format", "json")
        == exclusions_before
    )
    # new rows continue after the copied ids
    new = ok(
        "exclude",
        "add",
        "-c",
        str(pg_config),
        "--all",
        "--start",
        start,
        "--end",
        end,
        "--kind",
        "other",
        "--reason",
        "after the move",
        "--by",
        "bob",
    ).strip()
    assert int(new) == int(added) + 1

    again = cli(
        "store",
        "copy",
        "--from",
        f"sqlite://{tmp_path}/probed.db",
        "--to",
        pg_dsn,
        "--to-password-file",
        str(pg_cluster.password_file),
    )
    assert again.returncode == 1
    assert "is not empty" in again.stderr and "never merges two histories" in again.stderr
