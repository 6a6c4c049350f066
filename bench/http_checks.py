"""Benchmark: many HTTP checks against a loopback server, measured from outside the daemon.

Runs the real daemon (``python -m probed.cli run``) as a subprocess with a
generated config of ``--checks`` HTTP checks at ``--interval``, all pointing
at a tiny HTTP responder on 127.0.0.1 that runs in ``--server-procs``
separate processes (SO_REUSEPORT), so the server's CPU is never counted as
the daemon's. After ``--duration`` seconds it reads ``/metrics`` once, stops
the daemon with SIGTERM and prints:

- tests done vs. tests due by the schedule, and probes/s;
- the daemon's CPU seconds per 1 000 tests (user+system, psutil);
- peak RSS (psutil sampled every 0.5 s, and the kernel's VmHWM);
- schedule lag p50/p99 interpolated from ``probed_schedule_lag_seconds``;
- the SQLite store's size after a clean stop, and its row counts.

Traffic goes to 127.0.0.1 only. Every loop is bounded: the run ends after
``--duration`` (plus fixed startup/shutdown deadlines), and every server
process stops itself at a deadline even if this script is killed.

    .venv/bin/python bench/http_checks.py --checks 10000 --interval 10 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # phase() below: the daemon's own spreading of first runs

from probed.daemon.scheduler import phase  # noqa: E402

HOST = "127.0.0.1"
STARTUP_DEADLINE = 180.0  # seconds for the daemon to log daemon.started (config of 10k checks)
SHUTDOWN_DEADLINE = 60.0  # seconds for a clean SIGTERM stop
SCRAPE_DEADLINE = 120.0  # seconds for the final GET /metrics
SAMPLE_EVERY = 0.5  # seconds between RSS samples
PROGRESS_EVERY = 5.0  # seconds between progress lines on stderr
PING_EVERY = 0.5  # seconds between loop-stall pings
PR_SET_PDEATHSIG = 1

# ------------------------------------------------------------------ the server

_OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    b"Connection: close\r\n\r\nok\n"
)
_FAIL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\ndown\n"
)
_MAX_HEAD = 16 * 1024


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the bench process dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class _Responder(asyncio.Protocol):
    """Reads one request head, answers 200 (``/ok/...``) or 503 (``/fail/...``), closes.

    The server closes first, so TIME_WAIT stays on the server's side and the
    daemon's ephemeral ports are not used up.
    """

    def __init__(self, counts: list[int]) -> None:
        self.counts = counts
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            if len(self.buf) > _MAX_HEAD:
                self.transport.close()
            return
        target = self.buf.split(b" ", 2)[1] if self.buf.count(b" ") >= 2 else b"/"
        fail = target.startswith(b"/fail")
        self.counts[fail] += 1
        self.transport.write(_FAIL if fail else _OK)
        self.transport.close()
        self.buf = b""


def _serve(
    port: int,
    deadline: float,
    ready: Synchronized,  # type: ignore[type-arg]
    ok: Synchronized,  # type: ignore[type-arg]
    failed: Synchronized,  # type: ignore[type-arg]
) -> None:
    """One server process: answers until SIGTERM or ``deadline`` seconds, whichever first."""
    _die_with_parent()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    counts = [0, 0]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((HOST, port))
        sock.listen(4096)
        server = await loop.create_server(lambda: _Responder(counts), sock=sock)
        with ready.get_lock():
            ready.value += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=deadline)
        server.close()

    asyncio.run(main())
    ok.value, failed.value = counts[0], counts[1]


@dataclass
class ServerPool:
    procs: int
    deadline: float
    port: int = 0
    workers: list[mp.process.BaseProcess] = field(default_factory=list)
    counters: list[tuple[Synchronized, Synchronized]] = field(default_factory=list)  # type: ignore[type-arg]
    cpu_at_end: float = 0.0

    def start(self) -> ServerPool:
        ctx = mp.get_context("fork")
        # Reserve a port: a bound socket that never listens takes no connections,
        # but keeps the port ours until every worker has joined the SO_REUSEPORT group.
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((HOST, 0))
        self.port = holder.getsockname()[1]
        ready = ctx.Value("i", 0)
        for _ in range(self.procs):
            ok, failed = ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False)
            worker = ctx.Process(
                target=_serve, args=(self.port, self.deadline, ready, ok, failed), daemon=True
            )
            worker.start()
            self.workers.append(worker)
            self.counters.append((ok, failed))
        deadline = time.monotonic() + 20
        while ready.value < self.procs:
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP server processes did not start")
            time.sleep(0.05)
        holder.close()
        return self

    def cpu_seconds(self) -> float:
        total = 0.0
        for w in self.workers:
            with contextlib.suppress(psutil.Error, TypeError):
                t = psutil.Process(w.pid).cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> tuple[int, int]:
        self.cpu_at_end = self.cpu_seconds()
        for w in self.workers:
            if w.is_alive() and w.pid is not None:
                os.kill(w.pid, signal.SIGTERM)
        for w in self.workers:
            w.join(10)
            if w.is_alive():
                w.kill()
                w.join(5)
        return (
            sum(int(ok.value) for ok, _ in self.counters),
            sum(int(failed.value) for _, failed in self.counters),
        )


# ------------------------------------------------------------------ the config


def failing(index: int, ratio: float) -> bool:
    """Spread failing checks evenly: check i fails when floor((i+1)r) > floor(ir)."""
    return math.floor((index + 1) * ratio) > math.floor(index * ratio)


def check_keys(args: argparse.Namespace) -> Iterator[tuple[str, str, bool]]:
    """(service, check, fails) for every generated check."""
    per = math.ceil(args.checks / args.services)
    for i in range(args.checks):
        yield f"svc{i // per:02d}", f"c{i:05d}", failing(i, args.fail_ratio)


def write_config(args: argparse.Namespace, port: int, workdir: Path) -> Path:
    lines = [
        "timezone: UTC",
        f"storage: {args.storage or 'sqlite://' + str(workdir / 'probed.db')}",
        *(
            [f"storage_password_file: {args.storage_password_file}"]
            if args.storage_password_file
            else []
        ),
        f"listen: {HOST}:0",
        f"concurrency: {args.concurrency}",
        f"workers: {args.workers}",
        f"defaults: {{interval: {args.interval:g}s, timeout: {args.timeout:g}s, failures_to_down: 2}}",
        "services:",
    ]
    service = None
    for svc, name, fails in check_keys(args):
        if svc != service:
            lines += [f"  {svc}:", "    objective: 99.5", "    checks:"]
            service = svc
        prefix = "fail" if fails else "ok"
        lines.append(
            f'      - {{name: {name}, type: http, url: "http://{HOST}:{port}/{prefix}/{name}"}}'
        )
    config = workdir / "probed.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def tests_due(args: argparse.Namespace, window: float) -> int:
    """Tests the scheduler should have started in ``window`` seconds (same phases as the daemon)."""
    total = 0
    for svc, name, _ in check_keys(args):
        first = phase((svc, name), args.interval)
        if first < window:
            total += math.floor((window - first) / args.interval) + 1
    return total


# ------------------------------------------------------------------ the daemon


@dataclass
class Sampler:
    """Peak RSS by polling (the kernel's VmHWM is read too, as the exact figure). With
    ``workers: N`` the daemon is a process tree: RSS, VmHWM and CPU are its sums."""

    proc: psutil.Process
    peak_rss: int = 0
    vm_hwm: int = 0
    samples: int = 0

    def tree(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return [self.proc, *self.proc.children(recursive=True)]
        return [self.proc]

    def rss(self) -> int:
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.rss())
        self.samples += 1
        hwm = 0
        for proc in self.tree():
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm += int(line.split()[1]) * 1024
        self.vm_hwm = max(self.vm_hwm, hwm)

    def cpu(self) -> float:
        return tree_cpu_seconds(self.proc.pid)


def wait_started(log_path: Path, daemon: subprocess.Popen[bytes], sampler: Sampler) -> int:
    """The API port from the daemon.started JSON log line."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    offset = 0
    while time.monotonic() < deadline:
        sampler.sample()
        if daemon.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(
                f"the daemon exited with {daemon.returncode}; {log_path} ends with:\n"
                + "\n".join(tail)
            )
        with log_path.open("rb") as f:
            f.seek(offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break
                offset += len(raw)
                with contextlib.suppress(ValueError):
                    entry = json.loads(raw)
                    if entry.get("event") == "daemon.started":
                        return int(str(entry["listen"]).rsplit(":", 1)[1])
        time.sleep(0.1)
    raise RuntimeError(f"the daemon did not log daemon.started within {STARTUP_DEADLINE:.0f}s")


def scrape(port: int, deadline: float) -> str | None:
    """GET /metrics, giving up (None) at ``deadline`` (monotonic) however slow the daemon is."""
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=max(1.0, deadline - time.monotonic()))
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        chunks = []
        while chunk := response.read1(1 << 16):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                return None
        return b"".join(chunks).decode()
    except OSError:
        return None
    finally:
        conn.close()


@dataclass
class MetricFigures:
    passed: float = 0.0
    failed: float = 0.0
    lag_buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative)
    lag_count: float = 0.0
    lag_sum: float = 0.0
    loop_buckets: list[tuple[float, float]] = field(default_factory=list)  # the 20 ms heartbeat
    main_loop_buckets: list[tuple[float, float]] = field(default_factory=list)  # main process'
    discarded: float = 0.0
    series: int = 0


def parse_metrics(text: str) -> MetricFigures:
    """Only the lines we need: a prefix filter is far cheaper than a full parse of 10k checks."""
    m = MetricFigures()
    loop: dict[float, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m.series += 1
        if line.startswith("probed_probes_total{"):
            value = float(line.rsplit(" ", 1)[1])
            if 'result="pass"' in line:
                m.passed += value
            elif 'result="fail"' in line:
                m.failed += value
        elif line.startswith("probed_schedule_lag_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            m.lag_buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("probed_event_loop_lag_seconds_bucket{"):
            le = float(line.split('le="', 1)[1].split('"', 1)[0])
            count = float(line.rsplit(" ", 1)[1])
            loop[le] = loop.get(le, 0.0) + count  # every process' beats
            if 'process="main"' in line:
                m.main_loop_buckets.append((le, count))
        elif line.startswith("probed_tests_discarded_total{"):
            m.discarded += float(line.rsplit(" ", 1)[1])
        elif line.startswith("probed_schedule_lag_seconds_count"):
            m.lag_count = float(line.rsplit(" ", 1)[1])
        elif line.startswith("probed_schedule_lag_seconds_sum"):
            m.lag_sum = float(line.rsplit(" ", 1)[1])
    m.lag_buckets.sort()
    m.loop_buckets = sorted(loop.items())
    m.main_loop_buckets.sort()
    return m


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket; +Inf answers the last bound."""
    if not buckets or buckets[-1][1] == 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower  # the highest finite bound, as Prometheus does
            if cumulative == below:
                return le
            return lower + (le - lower) * (rank - below) / (cumulative - below)
        lower, below = le, cumulative
    return lower


SUMS = {  # what the row counts stand for
    "failed tests (sum of failure_weeks.count)": "SELECT COALESCE(SUM(count), 0) FROM failure_weeks",
    "tests (sum of segments.tests)": "SELECT COALESCE(SUM(tests), 0) FROM segments",
}


def db_figures(workdir: Path, storage: str | None = None) -> tuple[dict[str, int], dict[str, int]]:
    if storage and storage.startswith("postgresql"):
        return pg_figures(storage, workdir)
    sizes = {}
    for suffix in ("", "-wal", "-shm"):
        p = workdir / f"probed.db{suffix}"
        sizes[f"probed.db{suffix}"] = p.stat().st_size if p.exists() else 0
    rows: dict[str, int] = {}
    db = sqlite3.connect(f"file:{workdir / 'probed.db'}?mode=ro", uri=True)
    try:
        for table in ("checks", "pass_runs", "failure_weeks", "segments", "outages"):
            rows[table] = int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        for what, sql in SUMS.items():
            rows[what] = int(db.execute(sql).fetchone()[0])
    finally:
        db.close()
    return sizes, rows


def pg_figures(storage: str, workdir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """PostgreSQL: the database's size (pg_database_size) and the same row counts."""
    import psycopg

    password = os.environ.get("PROBED_BENCH_PGPASSWORD")
    with psycopg.connect(storage, password=password) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        rows: dict[str, int] = {}
        for table in ("checks", "pass_runs", "failure_weeks", "segments", "outages"):
            found = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            rows[table] = int(found[0]) if found else 0
        for what, sql in SUMS.items():
            found = conn.execute(sql).fetchone()
            rows[what] = int(found[0]) if found else 0
    return {"pg_database_size": int(size[0]) if size else 0}, rows


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its children (PostgreSQL: postmaster and backends)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
    return total


class Pinger(threading.Thread):
    """Measures event-loop stalls from outside: latency of a GET the daemon answers 404
    (no database, no metrics), every PING_EVERY seconds until stopped or ``until``."""

    def __init__(self, port: int, until: float) -> None:
        super().__init__(daemon=True)
        self.url = f"http://{HOST}:{port}/bench-ping"
        self.until = until
        self.stopped = threading.Event()
        self.latencies: list[tuple[float, float]] = []  # (t since start, seconds)
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.until:
            start = time.monotonic()
            try:
                urllib.request.urlopen(self.url, timeout=max(1.0, self.until - start)).close()
            except urllib.error.HTTPError:
                pass  # the 404 is the answer
            except OSError:
                pass  # timed out: recorded as the time waited
            self.latencies.append((start - self.t0, time.monotonic() - start))
            self.stopped.wait(max(0.0, PING_EVERY - (time.monotonic() - start)))

    def summary(self) -> str:
        if not self.latencies:
            return "n/a"
        xs = sorted(x for _, x in self.latencies)
        worst_t, worst = max(self.latencies, key=lambda p: p[1])
        p99 = xs[min(len(xs) - 1, math.ceil(0.99 * len(xs)) - 1)]
        slow = sum(1 for x in xs if x > 0.1)
        return (
            f"p50 {xs[len(xs) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {worst * 1000:.0f} ms at t={worst_t:.1f}s; {slow}/{len(xs)} pings > 100 ms"
        )


class Scraper(threading.Thread):
    """Emulates Prometheus: GET /metrics every ``every`` seconds during the window."""

    def __init__(
        self, port: int, every: float, until: float, cpu: Callable[[], float] = lambda: 0.0
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.every, self.until, self.cpu = port, every, until, cpu
        self.stopped = threading.Event()
        self.durations: list[float] = []
        self.cpu_used: list[float] = []  # the daemon's CPU during each scrape (probing included)

    def run(self) -> None:
        while not self.stopped.wait(self.every) and time.monotonic() < self.until:
            start, cpu0 = time.monotonic(), self.cpu()
            scrape(self.port, self.until + SCRAPE_DEADLINE)
            self.durations.append(time.monotonic() - start)
            self.cpu_used.append(self.cpu() - cpu0)

    def summary(self) -> str:
        if not self.durations:
            return "none"
        xs = self.durations
        return f"{len(xs)} scrapes, mean {sum(xs) / len(xs):.2f} s, max {max(xs):.2f} s"


def start_profiler(
    pid: int, seconds: float, out: Path, rate: int, idle: bool
) -> subprocess.Popen[bytes] | None:
    """py-spy (if installed) samples the daemon without stopping it; raw collapsed stacks."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        print("# --profile: py-spy not found next to python (pip install py-spy)", file=sys.stderr)
        return None
    cmd = [
        str(exe),
        "record",
        "--nonblocking",
        "-p",
        str(pid),
        "-d",
        str(max(1, int(seconds))),
        "-r",
        str(rate),
        "-f",
        "raw",
        "-o",
        str(out),
        *(["--idle"] if idle else []),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_table(path: Path, top: int = 25) -> list[str]:
    """Self and inclusive shares per function from py-spy's collapsed stacks."""
    if not path.exists():
        return ["(no profile written)"]
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if frames:
            self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + n
    out = [f"{total} samples", "", "  self%  incl%  function (file)"]
    for f, n in sorted(self_n.items(), key=lambda kv: -kv[1])[:top]:
        out.append(f"  {100 * n / total:5.1f}  {100 * incl_n[f] / total:5.1f}  {f}")
    out += ["", "  incl%  function (file) — probed/probes code only"]
    ours = [(f, n) for f, n in incl_n.items() if "probed/" in f or "probes/" in f]
    for f, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        out.append(f"  {100 * n / total:5.1f}  {f}")
    return out


def _frame(frame: str) -> str:
    """``func (path/file.py:123)`` → ``func (dir/file.py)``; process/thread frames dropped."""
    name, _, where = frame.partition(" (")
    if not where:
        return ""
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(file).parts[-2:])})"


def busy_cpu_seconds() -> float:
    """CPU seconds every process on the machine spent (all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def git_state(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# ------------------------------------------------------------------ the run


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def run(args: argparse.Namespace, table: list[tuple[str, str]] | None = None) -> int:
    return measure(args, table)["rc"]  # type: ignore[return-value]  # an int by construction


def measure(
    args: argparse.Namespace, table: list[tuple[str, str]] | None = None
) -> dict[str, float | int | None]:
    """One run: prints the table, returns the figures the scale ladder summarises;
    ``table`` (when given) receives the printed rows too."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="probed-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("probed.db*"):
        stale.unlink()  # every run starts from an empty store
    server_deadline = STARTUP_DEADLINE + args.duration + SCRAPE_DEADLINE + SHUTDOWN_DEADLINE + 60
    pool = ServerPool(args.server_procs, server_deadline).start()
    config = write_config(args, pool.port, workdir)
    log_path = workdir / "daemon.log"
    source = Path(args.source).resolve() if args.source else ROOT
    env = {**os.environ, "PYTHONPATH": str(source)}
    cmd = [sys.executable, "-m", "probed.cli", "run", "-c", str(config), "--log-format", "json"]
    print(
        f"# workdir {workdir}; server 127.0.0.1:{pool.port} in {args.server_procs} process(es)",
        file=sys.stderr,
    )
    print(f"# daemon: {shlex.join(cmd)}", file=sys.stderr)
    daemon_rc: int | None = None
    with log_path.open("wb") as log_file:
        t_spawn = time.monotonic()
        daemon = subprocess.Popen(
            cmd,
            cwd=source,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            preexec_fn=_die_with_parent,  # no threads exist yet (the pinger starts later)
        )
        try:
            sampler = Sampler(psutil.Process(daemon.pid))
            api_port = wait_started(log_path, daemon, sampler)
            t0 = time.monotonic()
            startup_s = t0 - t_spawn
            sampler.sample()
            rss_started, hwm_started = sampler.rss(), sampler.vm_hwm
            cpu0 = sampler.cpu()
            server_cpu0 = pool.cpu_seconds()
            db_cpu0 = tree_cpu_seconds(args.db_pid) if args.db_pid else 0.0
            busy0, load0 = busy_cpu_seconds(), os.getloadavg()[0]
            print(
                f"# daemon.started after {startup_s:.1f}s (CPU {cpu0:.2f}s); running {args.duration:g}s",
                file=sys.stderr,
            )
            end = t0 + args.duration
            pinger = Pinger(api_port, end)
            pinger.start()
            scraper = (
                Scraper(api_port, args.scrape_every, end, sampler.cpu)
                if args.scrape_every
                else None
            )
            if scraper is not None:
                scraper.start()
            profiler = (
                start_profiler(
                    daemon.pid,
                    args.duration,
                    workdir / "profile.txt",
                    args.profile_rate,
                    args.profile_idle,
                )
                if args.profile
                else None
            )
            next_progress = t0 + PROGRESS_EVERY
            last_cpu, last_t = cpu0, t0
            while (now := time.monotonic()) < end:
                if daemon.poll() is not None:
                    raise RuntimeError(
                        f"the daemon exited with {daemon.returncode}; see {log_path}"
                    )
                sampler.sample()
                if now >= next_progress:
                    cpu = sampler.cpu()
                    print(
                        f"#   t={now - t0:5.1f}s daemon CPU {100 * (cpu - last_cpu) / (now - last_t):5.1f}%"
                        f"  RSS {mib(sampler.rss())}",
                        file=sys.stderr,
                    )
                    last_cpu, last_t = cpu, now
                    next_progress += PROGRESS_EVERY
                time.sleep(min(SAMPLE_EVERY, max(0.0, end - now)))
            window = time.monotonic() - t0
            pinger.stopped.set()
            if scraper is not None:
                scraper.stopped.set()
                scraper.join(SCRAPE_DEADLINE)
            cpu1 = sampler.cpu()
            server_cpu1 = pool.cpu_seconds()
            db_cpu1 = tree_cpu_seconds(args.db_pid) if args.db_pid else 0.0
            busy1, load1 = busy_cpu_seconds(), os.getloadavg()[0]
            sampler.sample()
            hwm_window = sampler.vm_hwm
            rss_window = sampler.rss()
            s0 = time.monotonic()
            text = scrape(api_port, time.monotonic() + SCRAPE_DEADLINE)
            scrape_s = time.monotonic() - s0
            scrape_cpu = sampler.cpu() - cpu1
            sampler.sample()
            pinger.join(SHUTDOWN_DEADLINE)
            if profiler is not None:
                try:
                    profiler.wait(30)
                except subprocess.TimeoutExpired:
                    profiler.kill()
                    profiler.wait(5)
            # clean stop: SIGTERM, then keep sampling until it exits
            t_stop = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            while daemon.poll() is None and time.monotonic() - t_stop < SHUTDOWN_DEADLINE:
                sampler.sample()
                time.sleep(0.1)
            stop_s = time.monotonic() - t_stop
            daemon_rc = daemon.poll()
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(10)
            served_ok, served_fail = pool.stop()
    if daemon_rc is None:
        print(
            f"the daemon did not stop within {SHUTDOWN_DEADLINE:.0f}s of SIGTERM (killed)",
            file=sys.stderr,
        )

    if text is None:
        print(f"GET /metrics did not answer within {SCRAPE_DEADLINE:.0f}s", file=sys.stderr)
    m = parse_metrics(text or "")
    tests = m.passed + m.failed
    due = tests_due(args, window)
    sizes, rows = db_figures(workdir, args.storage)
    db_cpu = db_cpu1 - db_cpu0
    cpu_run = cpu1 - cpu0
    server_cpu = server_cpu1 - server_cpu0
    errors = sum(
        1
        for line in log_path.read_text(errors="replace").splitlines()
        if '"level": "error"' in line
    )

    rows_out: list[tuple[str, str]] = [
        (
            "checks / interval / duration",
            f"{args.checks} / {args.interval:g}s / {args.duration:g}s",
        ),
        (
            "failing checks (--fail-ratio)",
            f"{sum(f for *_, f in check_keys(args))} ({args.fail_ratio:g})",
        ),
        ("daemon startup (spawn → daemon.started)", f"{startup_s:.2f} s, {cpu0:.2f} CPU s"),
        ("measured window", f"{window:.2f} s"),
        (
            "tests done (probed_probes_total)",
            f"{tests:.0f} (pass {m.passed:.0f}, fail {m.failed:.0f})",
        ),
        ("tests due by the schedule", f"{due} ({100 * tests / due if due else 0:.1f}% done)"),
        ("probes/s", f"{tests / window:.1f} (target {args.checks / args.interval:.1f})"),
        (
            "daemon CPU in window (user+sys)",
            f"{cpu_run:.2f} s ({100 * cpu_run / window:.1f}% of one core)",
        ),
        ("CPU seconds per 1 000 tests", f"{1000 * cpu_run / tests:.3f}" if tests else "n/a"),
        ("server CPU in window", f"{server_cpu:.2f} s ({args.server_procs} process(es))"),
        (
            "database server CPU per 1 000 tests (--db-pid)",
            f"{1000 * db_cpu / tests:.3f} ({db_cpu:.2f} s)" if args.db_pid and tests else "n/a",
        ),
        (
            f"machine CPU in window ({psutil.cpu_count()} cores)",
            f"{busy1 - busy0:.2f} s busy, of which {max(0.0, busy1 - busy0 - cpu_run - server_cpu):.2f} s"
            f" not daemon/server; loadavg {load0:.2f} → {load1:.2f}",
        ),
        ("requests served (200 / 503)", f"{served_ok} / {served_fail}"),
        ("peak RSS (sampled every 0.5 s)", f"{mib(sampler.peak_rss)} ({sampler.samples} samples)"),
        ("peak RSS (VmHWM)", mib(sampler.vm_hwm)),
        ("RSS at daemon.started (VmHWM then)", f"{mib(rss_started)} ({mib(hwm_started)})"),
        ("VmHWM before the final scrape", mib(hwm_window)),
        ("schedule lag p50", _seconds(histogram_quantile(0.50, m.lag_buckets))),
        ("schedule lag p99", _seconds(histogram_quantile(0.99, m.lag_buckets))),
        ("schedule lag mean", _seconds(m.lag_sum / m.lag_count) if m.lag_count else "n/a"),
        (
            "loop lag p99: every process / the main one (heartbeats since startup)",
            f"{_seconds(histogram_quantile(0.99, m.loop_buckets))}"
            f" / {_seconds(histogram_quantile(0.99, m.main_loop_buckets))}",
        ),
        ("loop stalls (GET 404 every 0.5 s)", pinger.summary()),
        (
            f"scrapes during the window (--scrape-every {args.scrape_every:g})",
            scraper.summary() if scraper else "none",
        ),
        (
            "/metrics scrape (daemon CPU meanwhile)",
            f"{scrape_s:.2f} s, {scrape_cpu:.2f} CPU s, {len(text or '') / 2**20:.1f} MiB, {m.series} samples",
        ),
        ("SIGTERM → exit", f"{stop_s:.2f} s, exit code {daemon_rc}"),
        (
            "database size after stop",
            f"{mib(sum(sizes.values()))} ("
            + ", ".join(f"{k} {v}" for k, v in sizes.items())
            + " bytes)",
        ),
        ("database rows", ", ".join(f"{k} {v}" for k, v in rows.items())),
        ("error log lines", str(errors)),
    ]
    width = max(len(k) for k, _ in rows_out)
    print(f"\ncommand: {shlex.join([sys.executable, *sys.argv])}")
    print(f"daemon:  {shlex.join(cmd)}")
    print(f"workdir: {workdir}")
    print(f"tree:    {source} ({git_state(source)})\n")
    for key, value in rows_out:
        print(f"{key:<{width}}  {value}")
    if table is not None:
        table += rows_out
    lag_line = "  ".join(f"le={le:g}:{c:.0f}" for le, c in m.lag_buckets)
    print(f"\nlag histogram (cumulative): {lag_line}")
    if args.profile:
        print(f"\nprofile (py-spy, {workdir / 'profile.txt'}):")
        print("\n".join(profile_table(workdir / "profile.txt")))
    scrapes = list(zip(scraper.durations, scraper.cpu_used, strict=True)) if scraper else []
    scrapes.append((scrape_s, scrape_cpu))
    busy_wall = sum(w for w, _ in scrapes[:-1])
    base_rate = (cpu_run - sum(c for _, c in scrapes[:-1])) / max(1e-9, window - busy_wall)
    return {
        "rc": 0 if daemon_rc == 0 else 1,
        "checks": args.checks,
        "interval": args.interval,
        "done_ratio": tests / due if due else 0.0,
        "tests": tests,
        "due": due,
        "lag_p50": histogram_quantile(0.50, m.lag_buckets),
        "lag_p99": histogram_quantile(0.99, m.lag_buckets),
        "loop_p99": histogram_quantile(0.99, m.loop_buckets),
        "main_loop_p99": histogram_quantile(0.99, m.main_loop_buckets),
        "cpu_per_1000": 1000 * cpu_run / tests if tests else math.nan,
        "rss_window": rss_window,
        "startup": startup_s,
        # a scrape's own CPU: the daemon's CPU during it, less what probing used meanwhile
        "scrape_cpu": max(0.0, max(c - base_rate * w for w, c in scrapes)),
        "scrape_wall": max(w for w, _ in scrapes),
        "samples_per_check": m.series / args.checks,
        "failures": m.failed,
        "failed_rows": rows.get("failed_tests", 0),
        "discarded": m.discarded,
        "db_bytes": sum(sizes.values()),
        "stop": stop_s,
    }


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value * 1000:.1f} ms"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--checks", type=int, default=10000, help="HTTP checks (default 10000)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between tests of a check")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="test timeout in seconds (default: 5, at most half the interval)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds to measure after startup")
    p.add_argument("--services", type=int, default=1, help="services the checks are split over")
    p.add_argument(
        "--server-procs", type=int, default=1, help="HTTP server processes (SO_REUSEPORT)"
    )
    p.add_argument("--concurrency", type=int, default=1000, help="the daemon's concurrency setting")
    p.add_argument(
        "--workers", type=int, default=1, help="the daemon's workers setting (probing processes)"
    )
    p.add_argument(
        "--fail-ratio", type=float, default=0.0, help="share of checks answered 503 (0..1)"
    )
    p.add_argument(
        "--scrape-every",
        type=float,
        default=0.0,
        help="also GET /metrics every this many seconds during the window, like Prometheus",
    )
    p.add_argument(
        "--profile", action="store_true", help="sample the daemon with py-spy during the window"
    )
    p.add_argument(
        "--profile-idle", action="store_true", help="count idle samples too (wall-clock view)"
    )
    p.add_argument("--profile-rate", type=int, default=50, help="py-spy samples per second")
    p.add_argument("--source", help="run the daemon from this source tree (default: this checkout)")
    p.add_argument(
        "--workdir", help="where the config, store and daemon.log go (default: a new temp dir)"
    )
    p.add_argument("--storage", help="the daemon's storage URL (default: sqlite:// in the workdir)")
    p.add_argument("--storage-password-file", help="storage_password_file: for a PostgreSQL URL")
    p.add_argument(
        "--db-pid", type=int, help="count this process tree's CPU as the database server's"
    )
    args = p.parse_args(argv)
    if not 0.0 <= args.fail_ratio <= 1.0:
        p.error("--fail-ratio must be within 0..1")
    if args.checks < 1 or args.services < 1 or args.server_procs < 1 or args.workers < 1:
        p.error("--checks, --services, --server-procs and --workers must be at least 1")
    if args.timeout is None:
        args.timeout = min(5.0, args.interval / 2)
    if args.scrape_every < 0:
        p.error("--scrape-every must be 0 (off) or a number of seconds")
    if not 0 < args.duration <= 3600:
        p.error("--duration must be within (0, 3600] seconds")
    return args


if __name__ == "__main__":
    sys.exit(run(parse_args()))
