"""Benchmark: the same daemon on SQLite and on PostgreSQL, side by side; a month's report on both.

1. **Live** (``--live``, on by default): ``bench/http_checks.py``'s measurement
   twice with the same arguments, first with the embedded SQLite store, then
   with a private PostgreSQL cluster (``initdb`` into a temp dir, a free
   loopback port, fsync on as in production). Prints the daemon's CPU
   seconds per 1 000 tests, PostgreSQL's (postmaster and backends), schedule
   lag p50/p99, peak RSS and the store size after the run, in two columns.
2. **Month** (``--month``): ``bench/month.py`` with ``--month-checks``
   checks at ``--month-interval`` and ``--month-fail-ratio`` of the tests
   failing at random, on both stores: their size and the wall time of
   ``probed report --month``.

Everything runs on 127.0.0.1; the cluster is removed at the end.

    .venv/bin/python bench/stores.py --checks 10000 --interval 10 --duration 60
    .venv/bin/python bench/stores.py --checks 10000 --fail-ratio 0.1 --no-month
    .venv/bin/python bench/stores.py --no-live --month-checks 10000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import http_checks  # noqa: E402  (bench/ is on sys.path when run as a script)
import month as month_bench  # noqa: E402

from tests.pgcluster import PgCluster, _service_user, find_bindir  # noqa: E402

LIVE_ROWS = (
    "tests done (probed_probes_total)",
    "probes/s",
    "CPU seconds per 1 000 tests",
    "database server CPU per 1 000 tests (--db-pid)",
    "schedule lag p50",
    "schedule lag p99",
    "peak RSS (VmHWM)",
    "database size after stop",
    "database rows",
    "error log lines",
)
MONTH = "2026-11"  # 30 days
MONTH_START = 1_793_491_200.0  # 2026-11-01T00:00:00Z
MONTH_SECONDS = 30 * 86400
TRANSCRIPT = "\n".join(
    ["> GET /fail HTTP/1.1", "> Host: 127.0.0.1", "< HTTP/1.1 503 Service Unavailable"] * 3
)


def start_cluster() -> PgCluster:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit(
            "PostgreSQL (initdb, pg_ctl) is not installed: run .ci/setup-postgresql.sh"
        )
    cluster = PgCluster(
        bindir,
        Path(tempfile.mkdtemp(prefix="probed-bench-pg-")),
        run_as=_service_user(),
        durable=True,
    )
    cluster.init()
    os.environ["PROBED_BENCH_PGPASSWORD"] = cluster.password
    return cluster


# ------------------------------------------------------------------ live run


def live(args: argparse.Namespace, cluster: PgCluster) -> None:
    tables: dict[str, list[tuple[str, str]]] = {}
    for name in ("sqlite", "postgresql"):
        run_args = http_checks.parse_args(args.http_args)
        if name == "postgresql":
            run_args.storage = cluster.dsn(cluster.create_database())
            run_args.storage_password_file = str(cluster.password_file)
            run_args.db_pid = cluster.pid
        print(f"\n===== {name} =====", flush=True)
        table: list[tuple[str, str]] = []
        http_checks.run(run_args, table)
        tables[name] = table
    print("\n===== side by side =====")
    width = max(len(k) for k in LIVE_ROWS)
    values = {name: dict(t) for name, t in tables.items()}
    print(f"{'':<{width}}  {'SQLite':<40}  PostgreSQL")
    for key in LIVE_ROWS:
        print(
            f"{key:<{width}}  {values['sqlite'].get(key, 'n/a'):<40}  "
            f"{values['postgresql'].get(key, 'n/a')}"
        )


# ------------------------------------------------------------ month report


def month(args: argparse.Namespace, cluster: PgCluster) -> None:
    """bench/month.py with the --month-* options, on both engines."""
    month_bench.run(
        month_bench.parse_args(
            [
                f"--checks={args.month_checks}",
                f"--services={args.month_services}",
                f"--interval={args.month_interval}",
                f"--fail-ratio={args.month_fail_ratio}",
                f"--repeat={args.month_repeat}",
                f"--seed={args.seed}",
            ]
        ),
        cluster,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--no-live", dest="live", action="store_false", help="skip the live runs")
    p.add_argument("--no-month", dest="month", action="store_false", help="skip the month report")
    p.add_argument("--month-checks", type=int, default=10000)
    p.add_argument("--month-services", type=int, default=100)
    p.add_argument("--month-interval", type=float, default=60.0, help="seconds between tests")
    p.add_argument("--month-fail-ratio", type=float, default=0.01)
    p.add_argument("--month-repeat", type=int, default=3, help="report runs per store")
    p.add_argument("--seed", type=int, default=1)
    args, rest = p.parse_known_args(argv)
    args.http_args = rest  # everything else goes to http_checks.py (--checks, --duration, ...)
    if not 0 < args.month_fail_ratio < 1:
        p.error("--month-fail-ratio must be within (0, 1)")
    http_checks.parse_args(rest)  # fail early on a bad option
    return args


def main() -> int:
    args = parse_args()
    cluster = start_cluster()
    try:
        if args.live:
            live(args, cluster)
        if args.month:
            month(args, cluster)
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
