"""Benchmark: probed's CPU per test against Prometheus' blackbox_exporter, protocol by protocol.

Both tools test the same loopback servers at the same rate: probed runs as
its daemon (``python -m probed.cli run``) with ``--checks`` checks at
``--interval``; blackbox_exporter (Debian's ``prometheus-blackbox-exporter``)
is driven like Prometheus drives it, by GET ``/probe?module=…&target=…`` at
checks/interval requests per second from this process (whose CPU is not
counted). Servers: the asyncio responder of ``http_checks.py`` for http and
tcp, the test suite's real Postfix and Dovecot (``tests/mailservers.py``,
needs root) for smtp, imap and pop3, plain text, each tool logging in as its
own account. The dialogues are the same for both tools (see ``MODULES``).

For each protocol, after a warm-up, two windows of ``--duration`` seconds:
without any ``/metrics`` scrape of probed, then with one every
``--scrape-every`` seconds (the window's last scrape ends it). Each window
prints the CPU seconds per 1 000 tests of each tool (user+system from
``/proc/PID/stat``) and the ratio probed / blackbox_exporter.

    .venv/bin/python bench/vs_blackbox.py --protocols http tcp --duration 30

Traffic goes to 127.0.0.1 only; every loop ends at a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import http_checks as hc  # noqa: E402

PROTOCOLS = ("http", "tcp", "smtp", "imap", "pop3")
MAIL = ("smtp", "imap", "pop3")
BLACKBOX = "prometheus-blackbox-exporter"
WARMUP = 5.0  # seconds before the first window: imports, first connections, the first refresh
READY_DEADLINE = 30.0  # seconds for blackbox_exporter to answer
TICKS = os.sysconf("SC_CLK_TCK")
HELO = "probed.localhost"


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


# ------------------------------------------------------------------ the targets


@dataclass(frozen=True, slots=True)
class Account:
    user: str
    password: str
    password_file: Path


@dataclass(frozen=True, slots=True)
class Target:
    """Where a protocol's server listens, and the two tools' accounts (mail only)."""

    port: int
    probed: Account | None = None
    blackbox: Account | None = None


@contextlib.contextmanager
def mail_targets() -> Iterator[dict[str, Target]]:
    """The suite's Postfix and Dovecot on loopback; probed logs in as ``probe@``,
    blackbox_exporter as ``other@`` (Dovecot limits connections per user and IP)."""
    from tests.mailservers import running_mail_servers

    with running_mail_servers() as servers:
        mine, theirs = (
            Account(a.user, a.password, a.password_file) for a in (servers.account, servers.other)
        )
        yield {
            "smtp": Target(servers.ports.smtp),
            "imap": Target(servers.ports.imap, mine, theirs),
            "pop3": Target(servers.ports.pop3, mine, theirs),
        }


# ------------------------------------------------------------------ the two tools' configs


def probed_check(protocol: str, name: str, target: Target) -> str:
    at = f"host: {hc.HOST}, port: {target.port}"
    if protocol == "http":
        return f'{{name: {name}, type: http, url: "http://{hc.HOST}:{target.port}/ok/{name}"}}'
    if protocol in ("tcp", "smtp"):
        return f"{{name: {name}, type: {protocol}, {at}}}"
    assert target.probed is not None
    login = f"username: {target.probed.user}, password_file: {target.probed.password_file}"
    return f"{{name: {name}, type: {protocol}, {at}, {login}}}"


def checks(args: argparse.Namespace, protocol: str) -> int:
    return int(args.mail_checks if protocol in MAIL else args.checks)


def probed_config(args: argparse.Namespace, protocol: str, target: Target, workdir: Path) -> Path:
    lines = [
        "timezone: UTC",
        f"storage: sqlite://{workdir / 'probed.db'}",
        f"listen: {hc.HOST}:0",
        f"defaults: {{interval: {args.interval:g}s, timeout: {args.timeout:g}s}}",
        "services:",
        "  bench:",
        "    objective: 99.5",
        "    checks:",
        *(
            f"      - {probed_check(protocol, f'c{i:05d}', target)}"
            for i in range(checks(args, protocol))
        ),
    ]
    path = workdir / "probed.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _dialogue(steps: list[tuple[str, str]]) -> str:
    """blackbox_exporter's query_response list: ("expect"|"send", text)."""
    return "".join(f"        - {kind}: {_yaml_string(text)}\n" for kind, text in steps)


def _yaml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def blackbox_module(protocol: str, target: Target, timeout: float) -> str:
    """The same dialogue as probed's probe (plain text): see probes/<protocol>.py."""
    head = f"  {protocol}:\n    timeout: {timeout:g}s\n"
    if protocol == "http":
        return head + "    prober: http\n    http:\n      valid_status_codes: [200]\n"
    if protocol == "tcp":
        return head + "    prober: tcp\n"
    if protocol == "smtp":  # banner, EHLO, QUIT
        steps = [("expect", "^220 "), ("send", f"EHLO {HELO}"), ("expect", "^250 ")]
        steps += [("send", "QUIT"), ("expect", "^221")]
    elif protocol == "imap":  # greeting, CAPABILITY, LOGIN, CAPABILITY, EXAMINE, LOGOUT
        assert target.blackbox is not None
        user, password = target.blackbox.user, target.blackbox.password
        steps = [("expect", r"^\* OK"), ("send", "A1 CAPABILITY"), ("expect", "^A1 OK")]
        steps += [("send", f'A2 LOGIN "{user}" "{password}"'), ("expect", "^A2 OK")]
        steps += [("send", "A3 CAPABILITY"), ("expect", "^A3 OK")]
        steps += [("send", 'A4 EXAMINE "INBOX"'), ("expect", "^A4 OK")]
        steps += [("send", "A5 LOGOUT"), ("expect", "^A5 OK")]
    else:  # pop3: greeting, CAPA, USER, PASS, STAT, QUIT
        assert target.blackbox is not None
        user, password = target.blackbox.user, target.blackbox.password
        steps = [("expect", r"^\+OK"), ("send", "CAPA"), ("expect", r"^\.$")]
        steps += [("send", f"USER {user}"), ("expect", r"^\+OK")]
        steps += [("send", f"PASS {password}"), ("expect", r"^\+OK")]
        steps += [("send", "STAT"), ("expect", r"^\+OK"), ("send", "QUIT"), ("expect", r"^\+OK")]
    return head + "    prober: tcp\n    tcp:\n      query_response:\n" + _dialogue(steps)


def blackbox_target(protocol: str, target: Target) -> str:
    if protocol == "http":
        return f"http://{hc.HOST}:{target.port}/ok/blackbox"
    return f"{hc.HOST}:{target.port}"


# ------------------------------------------------------------------ blackbox_exporter


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((hc.HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def blackbox(module: str, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    exe = subprocess.run(["which", BLACKBOX], capture_output=True, text=True, check=False)
    if exe.returncode != 0:
        raise SystemExit(f"{BLACKBOX} is not installed (apt-get install {BLACKBOX})")
    config = workdir / "blackbox.yml"
    config.write_text("modules:\n" + module, encoding="utf-8")
    port = free_port()
    cmd = [
        exe.stdout.strip(),
        f"--config.file={config}",
        f"--web.listen-address={hc.HOST}:{port}",
        "--log.level=warn",
    ]
    with (workdir / "blackbox.log").open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=hc._die_with_parent
        )
    try:
        deadline = time.monotonic() + READY_DEADLINE
        while True:
            try:
                urllib.request.urlopen(f"http://{hc.HOST}:{port}/-/healthy", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{BLACKBOX} did not start; see {workdir}/blackbox.log"
                    ) from None
                time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Driver(threading.Thread):
    """Prometheus' part: GET /probe at ``rate`` per second until stopped or ``until``
    (monotonic). Counts finished probes, and those whose probe_success was not 1."""

    def __init__(self, port: int, module: str, target: str, rate: float, until: float) -> None:
        super().__init__(daemon=True)
        query = urllib.parse.urlencode({"module": module, "target": target})
        self.url = f"http://{hc.HOST}:{port}/probe?{query}"
        self.rate, self.until = rate, until
        self.done = 0
        self.failed = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            sent = 0
            while not self.stopped.is_set() and (now := time.monotonic()) < self.until:
                due = start + sent / self.rate
                if now < due:
                    await asyncio.sleep(due - now)
                    continue
                task = asyncio.create_task(self._one(session))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            if tasks:
                await asyncio.wait(tasks, timeout=10)

    async def _one(self, session: object) -> None:
        import aiohttp

        assert isinstance(session, aiohttp.ClientSession)
        try:
            async with session.get(self.url) as response:
                body = await response.text()
        except aiohttp.ClientError:
            body = ""
        self.done += 1
        if "\nprobe_success 1" not in body:
            self.failed += 1


# ------------------------------------------------------------------ one protocol


@dataclass
class Window:
    seconds: float = 0.0
    scrapes: int = 0
    probed_cpu: float = 0.0
    probed_tests: float = 0.0
    probed_failed: float = 0.0
    blackbox_cpu: float = 0.0
    blackbox_tests: int = 0
    blackbox_failed: int = 0

    def per_1000(self, cpu: float, tests: float) -> float:
        return 1000 * cpu / tests if tests else float("nan")

    @property
    def probed(self) -> float:
        return self.per_1000(self.probed_cpu, self.probed_tests)

    @property
    def blackbox(self) -> float:
        return self.per_1000(self.blackbox_cpu, self.blackbox_tests)


@dataclass
class Result:
    protocol: str
    quiet: Window = field(default_factory=Window)
    scraped: Window = field(default_factory=Window)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    machine_busy: float = 0.0  # CPU seconds of every process during both windows
    profile: list[str] = field(default_factory=list)


class ProbedDaemon:
    def __init__(self, args: argparse.Namespace, config: Path, workdir: Path) -> None:
        source = Path(args.source).resolve() if args.source else ROOT
        self.cmd = [sys.executable, "-m", "probed.cli", "run", "-c", str(config)]
        self.cmd += ["--log-format", "json"]
        self.log = workdir / "daemon.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=source,
                env={**os.environ, "PYTHONPATH": str(source)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=hc._die_with_parent,
            )
        self.port = hc.wait_started(
            self.log, self.proc, hc.Sampler(hc.psutil.Process(self.proc.pid))
        )

    def counts(self) -> tuple[float, float]:
        """(tests, failed) from one /metrics scrape."""
        text = hc.scrape(self.port, time.monotonic() + hc.SCRAPE_DEADLINE)
        if text is None:
            raise RuntimeError("probed did not answer GET /metrics")
        figures = hc.parse_metrics(text)
        return figures.passed + figures.failed, figures.failed

    def stop(self) -> int | None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(hc.SHUTDOWN_DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return None


def measure_window(
    daemon: ProbedDaemon,
    bb_pid: int,
    driver: Driver,
    seconds: float,
    scrape_every: float,
    start_counts: tuple[float, float],
) -> tuple[Window, tuple[float, float]]:
    """One window from just after a scrape to the end of the scrape that closes it.

    The closing scrape counts towards the window only when scrapes are on (it is
    then one of them); without scrapes, the CPU is read just before it.
    """
    w = Window(seconds=seconds)
    t0 = time.monotonic()
    p0, b0 = cpu_seconds(daemon.proc.pid), cpu_seconds(bb_pid)
    bb_done0, bb_failed0 = driver.done, driver.failed
    end = t0 + seconds
    next_scrape = t0 + scrape_every if scrape_every else end + 1
    while (now := time.monotonic()) < end:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"probed exited with {daemon.proc.returncode}; see {daemon.log}")
        if now >= next_scrape and next_scrape < end - 0.5:
            daemon.counts()
            w.scrapes += 1
            next_scrape += scrape_every
        time.sleep(min(0.2, max(0.0, min(end, next_scrape) - now)))
    p1 = cpu_seconds(daemon.proc.pid)
    w.blackbox_cpu = cpu_seconds(bb_pid) - b0
    w.blackbox_tests, w.blackbox_failed = driver.done - bb_done0, driver.failed - bb_failed0
    counts = daemon.counts()
    if scrape_every:
        p1 = cpu_seconds(daemon.proc.pid)
        w.scrapes += 1
    w.seconds = time.monotonic() - t0
    w.probed_cpu = p1 - p0
    w.probed_tests = counts[0] - start_counts[0]
    w.probed_failed = counts[1] - start_counts[1]
    return w, counts


def run_protocol(args: argparse.Namespace, protocol: str, target: Target) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix=f"probed-vs-blackbox-{protocol}-", dir=args.workdir))
    rate = checks(args, protocol) / args.interval
    result = Result(protocol)
    print(f"# {protocol}: {rate:g} tests/s each; workdir {workdir}", file=sys.stderr)
    module = blackbox_module(protocol, target, args.timeout)
    with blackbox(module, workdir) as (bb, bb_port):
        daemon = ProbedDaemon(args, probed_config(args, protocol, target, workdir), workdir)
        until = time.monotonic() + WARMUP + 2 * args.duration + hc.SCRAPE_DEADLINE
        driver = Driver(bb_port, protocol, blackbox_target(protocol, target), rate, until)
        driver.start()
        try:
            time.sleep(WARMUP)
            busy0 = hc.busy_cpu_seconds()
            profiler = (
                hc.start_profiler(
                    daemon.proc.pid, 2 * args.duration, workdir / "profile.txt", 100, False
                )
                if args.profile
                else None
            )
            counts = daemon.counts()
            result.quiet, counts = measure_window(daemon, bb.pid, driver, args.duration, 0, counts)
            result.scraped, _ = measure_window(
                daemon, bb.pid, driver, args.duration, args.scrape_every, counts
            )
            result.machine_busy = hc.busy_cpu_seconds() - busy0
            result.load = os.getloadavg()
            if profiler is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    profiler.wait(30)
                result.profile = hc.profile_table(workdir / "profile.txt")
        finally:
            driver.stopped.set()
            driver.join(15)
            rc = daemon.stop()
    errors = sum('"level": "error"' in line for line in daemon.log.read_text().splitlines())
    if rc != 0 or errors:
        print(f"# {protocol}: probed exit code {rc}, {errors} error log lines", file=sys.stderr)
    return result


# ------------------------------------------------------------------ the table


def print_results(args: argparse.Namespace, results: list[Result]) -> None:
    print(f"\ncommand: {shlex.join([sys.executable, *sys.argv])}")
    print(f"tree:    {args.source or ROOT} ({hc.git_state(Path(args.source or ROOT))})")
    print(
        f"rate:    {args.checks} checks (smtp, imap, pop3: {args.mail_checks}) every "
        f"{args.interval:g}s for each tool; windows of {args.duration:g}s"
    )
    print("CPU seconds per 1 000 tests (user+sys); ratio = probed / blackbox_exporter\n")
    head = (
        f"{'protocol':<9}{'window':<18}{'probed':>9}{'blackbox':>10}{'ratio':>7}"
        f"{'tests p/b':>14}{'failed p/b':>12}"
    )
    print(head)
    for r in results:
        for label, w in (
            ("no scrape", r.quiet),
            (f"{r.scraped.scrapes} scrapes/{args.scrape_every:g}s", r.scraped),
        ):
            ratio = w.probed / w.blackbox if w.blackbox else float("nan")
            print(
                f"{r.protocol:<9}{label:<18}{w.probed:>9.3f}{w.blackbox:>10.3f}{ratio:>7.2f}"
                f"{f'{w.probed_tests:.0f}/{w.blackbox_tests}':>14}"
                f"{f'{w.probed_failed:.0f}/{w.blackbox_failed}':>12}"
            )
    print()
    for r in results:
        seconds = r.quiet.seconds + r.scraped.seconds
        print(
            f"{r.protocol}: machine busy {r.machine_busy / seconds:.2f} cores on average "
            f"({os.cpu_count()} cores); load average after {r.load[0]:.2f} {r.load[1]:.2f} {r.load[2]:.2f}"
        )
    for r in results:
        if r.profile:
            print(f"\nprofile of probed, {r.protocol} (py-spy):")
            print("\n".join(r.profile))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS))
    p.add_argument("--checks", type=int, default=1000, help="checks per protocol (default 1000)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between tests of a check")
    p.add_argument(
        "--mail-checks",
        type=int,
        default=200,
        help="checks for smtp, imap and pop3 (default 200: Dovecot forks a process per login)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="test timeout (default 5)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of each window")
    p.add_argument("--scrape-every", type=float, default=15.0, help="the second window's scrapes")
    p.add_argument("--profile", action="store_true", help="py-spy the daemon over both windows")
    p.add_argument("--source", help="run probed from this source tree (default: this checkout)")
    p.add_argument("--workdir", help="parent of the per-protocol work directories")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 600 or args.checks < 1 or args.scrape_every <= 0:
        p.error("--duration must be within (0, 600], --checks and --scrape-every above 0")
    if args.timeout >= args.interval:
        p.error("--timeout must be shorter than --interval")
    if args.duration % args.scrape_every:
        p.error("--duration must be a multiple of --scrape-every (the scraped window's rate)")
    return args


def main() -> int:
    args = parse_args()
    results: list[Result] = []
    plain = [p for p in args.protocols if p not in MAIL]
    if plain:
        deadline = WARMUP + 2 * args.duration + 600
        pool = hc.ServerPool(1, deadline * len(plain)).start()
        try:
            for protocol in plain:
                results.append(run_protocol(args, protocol, Target(pool.port)))
        finally:
            pool.stop()
    mail = [p for p in args.protocols if p in MAIL]
    if mail:
        with mail_targets() as targets:
            for protocol in mail:
                results.append(run_protocol(args, protocol, targets[protocol]))
    print_results(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
