"""Benchmark: the same daemon on SQLite and on PostgreSQL, side by side; a month's report on both.

1. **Live** (``--live``, on by default): ``bench/http_checks.py``'s measurement
   twice with the same arguments, first with the embedded SQLite store, then
   with a private PostgreSQL cluster (``initdb`` into a temp dir, a free
   loopback port, fsync on as in production). Prints the daemon's CPU
   seconds per 1 000 tests, PostgreSQL's (postmaster and backends), schedule
   lag p50/p99, peak RSS and the store size after the run, in two columns.
2. **Month** (``--month``): synthesises one month of ``--month-checks``
   checks at ``--month-interval`` with ``--month-fail-ratio`` of the tests
   failing at random (each a ``failed_tests`` row with a transcript; two in a
   row are an outage), writes it into both stores in bulk, then times
   ``probed report --month`` (a subprocess, wall time) and measures each
   store's size.

Everything runs on 127.0.0.1; the cluster is removed at the end.

    .venv/bin/python bench/stores.py --checks 10000 --interval 10 --duration 60
    .venv/bin/python bench/stores.py --checks 10000 --fail-ratio 0.1 --no-month
    .venv/bin/python bench/stores.py --no-live --month-checks 10000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import http_checks  # noqa: E402  (bench/ is on sys.path when run as a script)

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


def month_config(path: Path, storage: str, args: argparse.Namespace, extra: str = "") -> Path:
    lines = ["timezone: UTC", f"storage: {storage}", extra, "services:"]
    for s, names in services(args).items():
        lines += [f"  {s}:", "    objective: 99.5", "    checks:"]
        lines += [
            f'      - {{name: {n}, type: http, url: "http://127.0.0.1:9/{n}", interval: {args.month_interval:g}s, timeout: 1s}}'
            for n in names
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def services(args: argparse.Namespace) -> dict[str, list[str]]:
    per = math.ceil(args.month_checks / args.month_services)
    out: dict[str, list[str]] = {}
    for i in range(args.month_checks):
        out.setdefault(f"svc{i // per:03d}", []).append(f"c{i:05d}")
    return out


def synthesise(
    check_id: int, args: argparse.Namespace, rng: random.Random
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    """One check's month: failed tests at random (geometric gaps), the pass runs between, outages."""
    interval, p = args.month_interval, args.month_fail_ratio
    tests = int(MONTH_SECONDS / interval)
    fails: list[tuple[object, ...]] = []
    runs: list[tuple[object, ...]] = []
    outages: list[tuple[object, ...]] = []
    log_q = math.log(1.0 - p)
    i, run_first = 0, 0
    streak: list[int] = []
    while True:
        i += int(math.log(1.0 - rng.random()) / log_q)  # passes before the next failure
        if i >= tests:
            break
        if i > run_first:
            runs.append(
                (
                    check_id,
                    MONTH_START + run_first * interval,
                    MONTH_START + (i - 1) * interval,
                    i - run_first,
                )
            )
            outages += _outage(check_id, streak, interval)
            streak = []
        fails.append((check_id, MONTH_START + i * interval, 0.01, "HTTP 503", TRANSCRIPT))
        streak.append(i)
        i += 1
        run_first = i
    if tests > run_first:
        runs.append(
            (
                check_id,
                MONTH_START + run_first * interval,
                MONTH_START + (tests - 1) * interval,
                tests - run_first,
            )
        )
    outages += _outage(check_id, streak, interval)
    return fails, runs, outages


def _outage(check_id: int, streak: list[int], interval: float) -> list[tuple[object, ...]]:
    if len(streak) < 2:
        return []
    start, last = MONTH_START + streak[0] * interval, MONTH_START + streak[-1] * interval
    return [(check_id, start, last, len(streak), '["HTTP 503"]', last + interval)]


def batches(
    args: argparse.Namespace, ids: list[int]
) -> Iterator[tuple[list[tuple[object, ...]], ...]]:
    rng = random.Random(args.seed)
    for k in range(0, len(ids), 200):
        fails: list[tuple[object, ...]] = []
        runs: list[tuple[object, ...]] = []
        outages: list[tuple[object, ...]] = []
        for cid in ids[k : k + 200]:
            f, r, o = synthesise(cid, args, rng)
            fails += f
            runs += r
            outages += o
        yield fails, runs, outages


async def check_ids(storage: str, args: argparse.Namespace, password: str | None) -> list[int]:
    """Create the schema and the checks through the product's own store."""
    from probed.store.base import open_store

    if storage.startswith("postgresql"):
        from probed.store.postgresql import PostgresStore

        store = await PostgresStore.open(storage, location="bench", password=password)
    else:
        store = await open_store(storage, location="bench")
    try:
        return [
            await store.check_id(s, n, "http") for s, names in services(args).items() for n in names
        ]
    finally:
        await store.close()


SEGMENT = (
    "INSERT INTO segments (check_id, first_at, last_at, interval, timeout, tests, location, seen_at)"
    " VALUES ({p}, {p}, {p}, {p}, 1, {p}, 'bench', {p})"
)


def fill_sqlite(path: Path, args: argparse.Namespace, ids: list[int]) -> dict[str, int]:
    db = sqlite3.connect(path, isolation_level=None)
    counts = {"failed_tests": 0, "pass_runs": 0, "outages": 0}
    db.execute("BEGIN")
    for fails, runs, outages in batches(args, ids):
        db.executemany(
            "INSERT INTO failed_tests (check_id, at, duration, reason, transcript, location)"
            " VALUES (?, ?, ?, ?, ?, 'bench')",
            fails,
        )
        db.executemany(
            "INSERT INTO pass_runs (check_id, first_at, last_at, count, location) VALUES (?, ?, ?, ?, 'bench')",
            runs,
        )
        db.executemany(
            "INSERT INTO outages (check_id, start, last_failed, failed_tests, reasons, closed_at, location)"
            " VALUES (?, ?, ?, ?, ?, ?, 'bench')",
            outages,
        )
        counts["failed_tests"] += len(fails)
        counts["pass_runs"] += len(runs)
        counts["outages"] += len(outages)
    end = MONTH_START + MONTH_SECONDS - args.month_interval
    tests = int(MONTH_SECONDS / args.month_interval)
    db.executemany(
        SEGMENT.format(p="?"),
        [(cid, MONTH_START, end, args.month_interval, tests, end) for cid in ids],
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return counts


def fill_postgresql(conninfo: str, args: argparse.Namespace, ids: list[int]) -> dict[str, int]:
    import psycopg

    counts = {"failed_tests": 0, "pass_runs": 0, "outages": 0}
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        for fails, runs, outages in batches(args, ids):
            with cur.copy(
                "COPY failed_tests (check_id, at, duration, reason, transcript) FROM STDIN"
            ) as copy:
                for row in fails:
                    copy.write_row(row)
            with cur.copy("COPY pass_runs (check_id, first_at, last_at, count) FROM STDIN") as copy:
                for row in runs:
                    copy.write_row(row)
            with cur.copy(
                "COPY outages (check_id, start, last_failed, failed_tests, reasons, closed_at) FROM STDIN"
            ) as copy:
                for row in outages:
                    copy.write_row(row)
            counts["failed_tests"] += len(fails)
            counts["pass_runs"] += len(runs)
            counts["outages"] += len(outages)
        end = MONTH_START + MONTH_SECONDS - args.month_interval
        tests = int(MONTH_SECONDS / args.month_interval)
        cur.executemany(
            SEGMENT.format(p="%s"),
            [(cid, MONTH_START, end, args.month_interval, tests, end) for cid in ids],
        )
        for table in ("failed_tests", "pass_runs", "outages"):
            cur.execute(f"UPDATE {table} SET location = 'bench' WHERE location <> 'bench'")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return counts


def report_seconds(config: Path, env: dict[str, str]) -> tuple[float, int]:
    cmd = [
        sys.executable,
        "-m",
        "probed.cli",
        "report",
        "-c",
        str(config),
        "--month",
        MONTH,
        "--format",
        "json",
    ]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=600, check=False)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-2000:]}"
        )
    return seconds, len(done.stdout)


def month(args: argparse.Namespace, cluster: PgCluster) -> None:
    import psycopg

    work = Path(tempfile.mkdtemp(prefix="probed-bench-month-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results: dict[str, dict[str, str]] = {}

    sqlite_path = work / "probed.db"
    ids = asyncio.run(check_ids(f"sqlite://{sqlite_path}", args, None))
    t0 = time.monotonic()
    counts = fill_sqlite(sqlite_path, args, ids)
    fill_s = time.monotonic() - t0
    config = month_config(work / "sqlite.yaml", f"sqlite://{sqlite_path}", args)
    runs = [report_seconds(config, env) for _ in range(args.month_repeat)]
    size = sum(p.stat().st_size for p in work.glob("probed.db*"))
    results["sqlite"] = _month_row(counts, fill_s, runs, size)

    database = cluster.create_database()
    dsn = cluster.dsn(database)
    ids = asyncio.run(check_ids(dsn, args, cluster.password))
    t0 = time.monotonic()
    counts = fill_postgresql(cluster.conninfo(database), args, ids)
    fill_s = time.monotonic() - t0
    config = month_config(
        work / "pg.yaml", dsn, args, f"storage_password_file: {cluster.password_file}"
    )
    runs = [report_seconds(config, env) for _ in range(args.month_repeat)]
    with psycopg.connect(cluster.conninfo(database)) as conn:
        found = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    results["postgresql"] = _month_row(counts, fill_s, runs, int(found[0]) if found else 0)

    print(
        f"\n===== month {MONTH}: {args.month_checks} checks in {args.month_services} services,"
        f" every {args.month_interval:g}s, {args.month_fail_ratio:.1%} of tests failing ====="
    )
    keys = list(results["sqlite"])
    width = max(len(k) for k in keys)
    print(f"{'':<{width}}  {'SQLite':<36}  PostgreSQL")
    for key in keys:
        print(f"{key:<{width}}  {results['sqlite'][key]:<36}  {results['postgresql'][key]}")
    print(f"workdir: {work}")


def _month_row(
    counts: dict[str, int], fill_s: float, runs: list[tuple[float, int]], size: int
) -> dict[str, str]:
    times = sorted(t for t, _ in runs)
    return {
        "rows (failed_tests / pass_runs / outages)": " / ".join(str(v) for v in counts.values()),
        "bulk fill": f"{fill_s:.1f} s",
        "probed report --month (wall, best / worst)": f"{times[0]:.2f} s / {times[-1]:.2f} s",
        "report JSON size": f"{runs[0][1] / 2**10:.0f} KiB",
        "store size": http_checks.mib(size),
    }


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
