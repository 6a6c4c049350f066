"""Benchmark: several daemons (one per location) probing the same checks into one PostgreSQL.

Starts a private PostgreSQL cluster on 127.0.0.1 (tests/pgcluster.py, fsync on),
a multi-process loopback HTTP responder (bench/http_checks.py's), and
``--daemons`` real daemons (``probed run --location``) with the same
``--checks`` HTTP checks at ``--interval``. After ``--duration`` seconds it
reads each daemon's ``/metrics``, stops them, and prints:

- tests done by all daemons, and the daemons' CPU seconds per 1 000 tests;
- PostgreSQL's CPU seconds (its whole process tree) per 1 000 tests;
- the wall time of ``probed report --month`` (quorum figures over every
  location) for the month, run after the daemons stopped.

Traffic stays on 127.0.0.1; the run is bounded by ``--duration`` plus fixed
deadlines.

    .venv/bin/python bench/locations.py --daemons 3 --checks 5000 --interval 10 --duration 60
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from http_checks import ServerPool, wait_started  # noqa: E402

from probed.core import accounting  # noqa: E402
from tests.pgcluster import PgCluster, _service_user, find_bindir  # noqa: E402

NAMES = ("fra1", "ams1", "par1", "lon1", "waw1")


def write_config(
    args: argparse.Namespace, workdir: Path, name: str, port: int, pg: PgCluster, dsn: str
) -> Path:
    lines = [
        "timezone: UTC",
        f"storage: {dsn}",
        f"storage_password_file: {pg.password_file}",
        f"location: {name}",
        "listen: 127.0.0.1:0",
        f"concurrency: {args.concurrency}",
        f"defaults: {{interval: {args.interval:g}s, timeout: {args.timeout:g}s,"
        f" failures_to_down: 2, quorum: {args.quorum}}}",
        "services:",
    ]
    per = -(-args.checks // args.services)
    for s in range(args.services):
        lines += [f"  svc{s:02d}:", "    objective: 99.5", "    checks:"]
        for i in range(s * per, min(args.checks, (s + 1) * per)):
            lines.append(
                f'      - {{name: c{i:05d}, type: http, url: "http://127.0.0.1:{port}/ok/{i}"}}'
            )
    path = workdir / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tree_cpu(pid: int) -> float:
    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def tests_done(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("probed_probes_total{")
    )


def run(args: argparse.Namespace) -> int:
    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL is not installed (.ci/setup-postgresql.sh)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="probed-bench-loc-") as tmp:
        workdir = Path(tmp)
        # its own directory: the server may run as another user, who must reach it
        pg = PgCluster(
            bindir,
            Path(tempfile.mkdtemp(prefix="probed-pg-")),
            run_as=_service_user(),
            durable=True,
        )
        pg.init()
        servers = ServerPool(args.server_procs, args.duration + 600).start()
        daemons: list[tuple[str, subprocess.Popen[bytes], int, Path]] = []
        try:
            dsn = pg.dsn(pg.create_database())
            for name in NAMES[: args.daemons]:
                cfg = write_config(args, workdir, name, servers.port, pg, dsn)
                log = workdir / f"{name}.log"
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "probed.cli",
                        "run",
                        "-c",
                        str(cfg),
                        "--log-format",
                        "json",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log.open("wb"),
                )
                port = wait_started(log, proc, _NoSampler())
                daemons.append((name, proc, port, cfg))
            pg_before = tree_cpu(pg.pid)
            cpu_before = [tree_cpu(p.pid) for _, p, _, _ in daemons]
            done_before = [tests_done(port) for _, _, port, _ in daemons]
            time.sleep(args.duration)  # the measured window: the daemons run meanwhile
            done = sum(tests_done(port) for _, _, port, _ in daemons) - sum(done_before)
            cpu = sum(tree_cpu(p.pid) for _, p, _, _ in daemons) - sum(cpu_before)
            pg_cpu = tree_cpu(pg.pid) - pg_before
        finally:
            for _, proc, _, _ in daemons:
                proc.send_signal(signal.SIGTERM)
            for _, proc, _, _ in daemons:
                proc.wait(120)
            servers.stop()
        month = accounting.month_of(time.time(), "UTC")
        started = time.monotonic()
        report = subprocess.run(
            [
                sys.executable,
                "-m",
                "probed.cli",
                "report",
                "-c",
                str(daemons[0][3]),
                "--month",
                month,
                "--format",
                "json",
            ],
            capture_output=True,
            timeout=600,
            check=False,
        )
        report_seconds = time.monotonic() - started
        pg.destroy()
    print(
        f"daemons: {args.daemons} x {args.checks} checks every {args.interval:g}s, quorum {args.quorum}"
    )
    print(f"window: {args.duration:g}s, tests done: {done:.0f} ({done / args.duration:.0f}/s)")
    print(f"daemon CPU per 1 000 tests: {1000 * cpu / max(done, 1):.3f} s (all daemons)")
    print(f"PostgreSQL CPU per 1 000 tests: {1000 * pg_cpu / max(done, 1):.3f} s")
    print(f"probed report --month {month}: {report_seconds:.2f} s wall (exit {report.returncode})")
    return 0


class _NoSampler:
    def sample(self) -> None:
        pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--daemons", type=int, default=3, choices=range(1, len(NAMES) + 1))
    p.add_argument("--checks", type=int, default=5000)
    p.add_argument("--services", type=int, default=10)
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--quorum", default="2")
    p.add_argument("--concurrency", type=int, default=1000)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--server-procs", type=int, default=2)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run(parse_args()))
