"""Benchmark: a synthesised month in the store; its size and ``probed report --month`` time.

Synthesises one month (2026-11, 30 days) of ``--checks`` HTTP checks tested
every ``--interval`` with ``--fail-ratio`` of the tests failing at random
(geometric gaps; two failed tests in a row are an outage), writes it in bulk
in the product's own encoding (``probed/store/failures.py``: the packed
``failure_weeks`` rows, texts once, the pass runs failed tests end folded into
their records) into SQLite and into a private PostgreSQL cluster, then prints
per engine: rows, store size, bytes per failed test, and the wall and CPU time
(user + system of the report process) of ``probed report --month 2026-11
--format json`` (a subprocess, best and worst of ``--repeat`` runs).

    .venv/bin/python bench/month.py                       # 10 000 checks at 60 s, 1 %
    .venv/bin/python bench/month.py --checks 1000 --engines sqlite
    .venv/bin/python bench/month.py --source /tmp/other-tree --save-json /tmp/before

``--source`` runs the report from another source tree (to measure a patch);
``--save-json DIR`` keeps each engine's report (``generated_at`` left out) for a
diff between two trees: the same seed synthesises the same month.

Everything runs on 127.0.0.1; the cluster is removed at the end (the SQLite
file stays in the printed workdir). ``bench/stores.py --month`` runs the same.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from probed.store import failures  # noqa: E402
from probed.store.failures import Record  # noqa: E402
from tests.pgcluster import PgCluster  # noqa: E402

MONTH = "2026-11"  # 30 days
MONTH_START = 1_793_491_200.0  # 2026-11-01T00:00:00Z
MONTH_SECONDS = 30 * 86400
LOCATION = "bench"
REASON, TRANSCRIPT = 1, 2  # their ids in texts
TEXTS = (
    (REASON, "HTTP 503"),
    (
        TRANSCRIPT,
        "\n".join(
            ["> GET /fail HTTP/1.1", "> Host: 127.0.0.1", "< HTTP/1.1 503 Service Unavailable"] * 3
        ),
    ),
)
Row = tuple[object, ...]


@dataclass
class Month:
    week_rows: list[Row]  # check_id, location, week, part, last_at, count, data
    runs: list[Row]  # the pass run still going on at the end of the month
    outages: list[Row]
    failed: int = 0


def synthesise(check_id: int, args: argparse.Namespace, rng: random.Random, into: Month) -> None:
    """One check's month: failed tests at random (geometric gaps), each with the count of
    the passes before it, the last pass run, and the outages (two or more in a row)."""
    interval, tests = args.interval, int(MONTH_SECONDS / args.interval)
    log_q = math.log(1.0 - args.fail_ratio)
    records: list[Record] = []
    i, run_first, streak = 0, 0, []
    while True:
        i += int(math.log(1.0 - rng.random()) / log_q)  # passes before the next failure
        if i >= tests:
            break
        if i > run_first:
            into.outages += _outage(check_id, streak, interval)
            streak = []
        at = MONTH_START + i * interval
        records.append(Record(at, 0.01, REASON, TRANSCRIPT, i - run_first))
        into.failed += 1
        streak.append(i)
        i += 1
        run_first = i
    if tests > run_first:
        first, end = MONTH_START + run_first * interval, MONTH_START + (tests - 1) * interval
        into.runs.append((check_id, first, end, tests - run_first))
    into.outages += _outage(check_id, streak, interval)
    into.week_rows += [astuple(b) for b in failures.blocks(check_id, LOCATION, records)]


def _outage(check_id: int, streak: list[int], interval: float) -> list[Row]:
    if len(streak) < 2:
        return []
    start, last = MONTH_START + streak[0] * interval, MONTH_START + streak[-1] * interval
    return [(check_id, start, last, len(streak), '["HTTP 503"]', last + interval)]


def batches(args: argparse.Namespace, ids: list[int]) -> Iterator[Month]:
    rng = random.Random(args.seed)
    for k in range(0, len(ids), 200):
        month = Month([], [], [])
        for cid in ids[k : k + 200]:
            synthesise(cid, args, rng, month)
        yield month


def services(args: argparse.Namespace) -> dict[str, list[str]]:
    per = math.ceil(args.checks / args.services)
    out: dict[str, list[str]] = {}
    for i in range(args.checks):
        out.setdefault(f"svc{i // per:03d}", []).append(f"c{i:05d}")
    return out


def month_config(path: Path, storage: str, args: argparse.Namespace, extra: str = "") -> Path:
    lines = ["timezone: UTC", f"storage: {storage}", extra, "services:"]
    for s, names in services(args).items():
        lines += [f"  {s}:", "    objective: 99.5", "    checks:"]
        lines += [
            f'      - {{name: {n}, type: http, url: "http://127.0.0.1:9/{n}",'
            f" interval: {args.interval:g}s, timeout: 1s}}"
            for n in names
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def check_ids(storage: str, args: argparse.Namespace, password: str | None) -> list[int]:
    """Create the schema and the checks through the product's own store."""
    from probed.store.base import open_store
    from probed.store.postgresql import PostgresStore

    if storage.startswith("postgresql"):
        store = await PostgresStore.open(storage, location=LOCATION, password=password)
    else:
        store = await open_store(storage, location=LOCATION)
    try:
        return [
            await store.check_id(s, n, "http") for s, names in services(args).items() for n in names
        ]
    finally:
        await store.close()


INSERTS = {
    "texts": "INSERT INTO texts (id, digest, text) VALUES ({p}, {p}, {p})",
    "failure_weeks": "INSERT INTO failure_weeks (check_id, location, week, part, last_at,"
    " count, data) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
    "pass_runs": "INSERT INTO pass_runs (check_id, first_at, last_at, count, location)"
    f" VALUES ({{p}}, {{p}}, {{p}}, {{p}}, '{LOCATION}')",
    "outages": "INSERT INTO outages (check_id, start, last_failed, failed_tests, reasons,"
    f" closed_at, location) VALUES ({{p}}, {{p}}, {{p}}, {{p}}, {{p}}, {{p}}, '{LOCATION}')",
    "segments": "INSERT INTO segments (check_id, first_at, last_at, interval, timeout, tests,"
    f" location, seen_at) VALUES ({{p}}, {{p}}, {{p}}, {{p}}, 1, {{p}}, '{LOCATION}', {{p}})",
}


def rows_of(args: argparse.Namespace, ids: list[int]) -> Iterator[tuple[str, list[Row], int]]:
    """(table, rows, failed tests in them) in bulk, parents first."""
    yield "texts", [(i, failures.digest(t), t) for i, t in TEXTS], 0
    for m in batches(args, ids):
        yield "failure_weeks", m.week_rows, m.failed
        yield "pass_runs", m.runs, 0
        yield "outages", m.outages, 0
    end = MONTH_START + MONTH_SECONDS - args.interval
    tests = int(MONTH_SECONDS / args.interval)
    yield "segments", [(cid, MONTH_START, end, args.interval, tests, end) for cid in ids], 0


def fill(execute_many: object, args: argparse.Namespace, ids: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {"failed tests": 0}
    for table, rows, failed in rows_of(args, ids):
        execute_many(table, rows)  # type: ignore[operator]
        counts[table] = counts.get(table, 0) + len(rows)
        counts["failed tests"] += failed
    return counts


def fill_sqlite(path: Path, args: argparse.Namespace, ids: list[int]) -> dict[str, int]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    counts = fill(lambda t, rows: db.executemany(INSERTS[t].format(p="?"), rows), args, ids)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return counts


def fill_postgresql(conninfo: str, args: argparse.Namespace, ids: list[int]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        counts = fill(lambda t, rows: cur.executemany(INSERTS[t].format(p="%s"), rows), args, ids)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")
    return counts


@dataclass
class Run:
    wall: float
    cpu: float  # the report process's user + system seconds
    size: int  # bytes of JSON


def report_run(config: Path, args: argparse.Namespace) -> Run:
    env = {**os.environ, "PYTHONPATH": str(args.source)}
    cmd = [sys.executable, "-m", "probed.cli", "report", "-c", str(config), "--month", MONTH]
    cmd += ["--format", "json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(
        cmd, capture_output=True, env=env, cwd=args.source, timeout=600, check=False
    )
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]!r}")
    if args.save_json is not None:  # generated_at aside, to diff two trees' reports
        lines = done.stdout.decode().splitlines(keepends=True)
        text = "".join(line for line in lines if '"generated_at"' not in line)
        (args.save_json / f"{config.stem}.json").write_text(text, encoding="utf-8")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(seconds, cpu, len(done.stdout))


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def measure_sqlite(args: argparse.Namespace, work: Path) -> dict[str, str]:
    path = work / "probed.db"
    ids = asyncio.run(check_ids(f"sqlite://{path}", args, None))
    t0 = time.monotonic()
    counts = fill_sqlite(path, args, ids)
    fill_s = time.monotonic() - t0
    config = month_config(work / "sqlite.yaml", f"sqlite://{path}", args)
    runs = [report_run(config, args) for _ in range(args.repeat)]
    size = sum(p.stat().st_size for p in work.glob("probed.db*"))
    return row(counts, fill_s, runs, size)


def measure_postgresql(args: argparse.Namespace, work: Path, cluster: PgCluster) -> dict[str, str]:
    import psycopg

    database = cluster.create_database()
    dsn = cluster.dsn(database)
    ids = asyncio.run(check_ids(dsn, args, cluster.password))
    t0 = time.monotonic()
    counts = fill_postgresql(cluster.conninfo(database), args, ids)
    fill_s = time.monotonic() - t0
    extra = f"storage_password_file: {cluster.password_file}"
    config = month_config(work / "pg.yaml", dsn, args, extra)
    runs = [report_run(config, args) for _ in range(args.repeat)]
    with psycopg.connect(cluster.conninfo(database)) as conn:
        found = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return row(counts, fill_s, runs, int(found[0]) if found else 0)


def row(counts: dict[str, int], fill_s: float, runs: list[Run], size: int) -> dict[str, str]:
    times = sorted(r.wall for r in runs)
    cpu = sorted(r.cpu for r in runs)
    failed = counts["failed tests"]
    return {
        "failed tests": str(failed),
        "rows (failure_weeks / pass_runs / outages)": " / ".join(
            str(counts.get(t, 0)) for t in ("failure_weeks", "pass_runs", "outages")
        ),
        "bulk fill": f"{fill_s:.1f} s",
        "probed report --month (wall, best / worst)": f"{times[0]:.2f} s / {times[-1]:.2f} s",
        "probed report --month (CPU, best / worst)": f"{cpu[0]:.2f} s / {cpu[-1]:.2f} s",
        "report JSON size": f"{runs[0].size / 2**10:.0f} KiB",
        "store size": mib(size),
        "store bytes per failed test": f"{size / max(failed, 1):.1f} B",
    }


def run(args: argparse.Namespace, cluster: PgCluster | None) -> dict[str, dict[str, str]]:
    work = Path(tempfile.mkdtemp(prefix="probed-bench-month-"))
    results: dict[str, dict[str, str]] = {}
    if "sqlite" in args.engines:
        results["sqlite"] = measure_sqlite(args, work)
    if "postgresql" in args.engines and cluster is not None:
        results["postgresql"] = measure_postgresql(args, work, cluster)
    print(
        f"\n===== month {MONTH}: {args.checks} checks in {args.services} services,"
        f" every {args.interval:g}s, {args.fail_ratio:.1%} of tests failing ====="
    )
    keys = list(next(iter(results.values())))
    width = max(len(k) for k in keys)
    print(f"{'':<{width}}  " + "  ".join(f"{name:<36}" for name in results))
    for key in keys:
        print(f"{key:<{width}}  " + "  ".join(f"{r[key]:<36}" for r in results.values()))
    print(f"workdir: {work}")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--checks", type=int, default=10000)
    p.add_argument("--services", type=int, default=100)
    p.add_argument("--interval", type=float, default=60.0, help="seconds between tests")
    p.add_argument("--fail-ratio", type=float, default=0.01)
    p.add_argument("--repeat", type=int, default=3, help="report runs per store")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--source", type=Path, default=ROOT, help="run the report from this source tree")
    p.add_argument(
        "--save-json",
        type=Path,
        help="write each engine's report here (sqlite.json, pg.json; generated_at left out)",
    )
    p.add_argument(
        "--engines", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    args = p.parse_args(argv)
    if not 0 < args.fail_ratio < 1:
        p.error("--fail-ratio must be within (0, 1)")
    args.engines = args.engines.split(",")
    return args


def main() -> int:
    args = parse_args()
    cluster = None
    if "postgresql" in args.engines:
        from stores import start_cluster

        cluster = start_cluster()
    try:
        run(args, cluster)
    finally:
        if cluster is not None:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
