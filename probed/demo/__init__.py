"""``probed demo``: the whole product on this machine alone.

A small hosting platform runs in this process on loopback: SMTP, POP3 and
IMAP servers sharing one mailbox (probed.demo.mail) and an HTTP server for
webmail, a website and an API. Each server answers according to SCENES (up,
a single failed test, an outage, an outage during a DoS that the operator
flags afterwards). The real daemon probes them at short intervals into a
temporary store, a live view shows every test as the daemon records it, and
the month report follows. Nothing leaves the machine and nothing needs root.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from aiohttp import web

from probed import config as config_mod
from probed.core import accounting
from probed.core.accounting import ServiceFigures
from probed.core.outages import FailureRun
from probed.daemon.lifecycle import Daemon
from probed.daemon.scheduler import CheckKey
from probed.demo.mail import DOMAIN, ImapServer, Mailbox, Pop3Server, Script, SmtpServer
from probed.logs import configure as configure_logs
from probed.reports.figures import month_report
from probed.reports.html import gather_extras, render_html
from probed.reports.render import MonthReport, render_json, render_text
from probed.store.base import NewExclusion, Store, open_store

INTERVAL = 0.5  # seconds between tests of each demo check
FLOW_INTERVAL = 1.0  # the mail round trip's interval; its timeout is its delivery deadline
TIMEOUT = 0.4  # each test's; a scripted hang outlasts it
FLOW_TIMEOUT = 0.8
FAILURES_TO_DOWN = 2
ADDRESS = f"probe@{DOMAIN}"
CREDITS = [{"below": 99.5, "percent": 5}, {"below": 99.0, "percent": 10}]


@dataclass(frozen=True, slots=True)
class Scene:
    """One check's part in the script: which of its tests (counted from 0) its server fails."""

    service: str
    check: str
    down: range
    how: str  # what the server does then, for the legend
    hang: bool = False  # fail by not answering (the test times out) instead of refusing
    dos: bool = False  # the operator flags this outage as a DoS window afterwards
    interval: float = INTERVAL

    @property
    def outage(self) -> bool:
        return len(self.down) >= FAILURES_TO_DOWN

    @property
    def downtime(self) -> float:
        """What the SLA rules make of it: first to last failed test, unless excluded."""
        return (len(self.down) - 1) * self.interval if self.outage and not self.dos else 0.0

    def outcome(self) -> str:
        n = len(self.down)
        if n == 0:
            return "no failed test"
        if not self.outage:
            return f"{n} failed test{'s' * (n > 1)}: no outage, no downtime"
        span = f"an outage of {n} failed tests, {(n - 1) * self.interval:g}s from first to last"
        return f"{span}, flagged as a DoS afterwards: excluded" if self.dos else span


SCENES = (
    Scene("mail", "smtp", range(5, 6), "answers 421 once"),
    Scene("mail", "pop3", range(8, 12), "refuses 4 connections in a row with -ERR"),
    Scene("mail", "imap", range(16, 19), "says BYE 3 times under a flood", dos=True),
    Scene("mail", "webmail", range(22, 24), "answers 503 twice"),
    Scene(
        "mail", "roundtrip", range(0), "delivers on listeners of its own", interval=FLOW_INTERVAL
    ),
    Scene("web", "website", range(6, 7), "answers 503 once"),
    Scene("web", "api", range(12, 14), f"hangs past its {TIMEOUT:g}s timeout twice", hang=True),
)
RUN_SECONDS = (max(s.down.stop for s in SCENES) + 3) * INTERVAL  # the last recovery, and a bit


def legend() -> str:
    script = "; ".join(f"{s.check} {s.how} ({s.outcome()})" for s in SCENES)
    return textwrap.fill(
        'probed demo: a mail platform (service "mail": smtp, pop3, imap, webmail over HTTP, and'
        " roundtrip, a message sent over SMTP and found over IMAP) and a web site (service"
        ' "web": website, api), served by this process on 127.0.0.1 and tested by the real'
        f" daemon every {INTERVAL:g}s (roundtrip every {FLOW_INTERVAL:g}s). Two failed tests in"
        " a row make an outage; its downtime runs from the first to the last failed test."
        f" The script: {script}. The period is the demo's few seconds, so each second of"
        " downtime weighs like hours in a real month.",
        width=100,
    )


# ---------------------------------------------------------------- the platform


@dataclass
class WebServer:
    """webmail, website and api: one path each, answering according to its Script."""

    scripts: dict[str, Script]
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        script = self.scripts.get(request.match_info["name"])
        if script is None:
            raise web.HTTPNotFound()
        if script.next_is_up():
            return web.Response(text="ok\n")
        if script.hang:
            await asyncio.sleep(2 * TIMEOUT)  # the probe has given up by then
        return web.Response(status=503, text="scripted outage\n")

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port: int = self.runner.addresses[0][1]
        return port

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Platform:
    """Every demo server. roundtrip has its own SMTP and IMAP listeners (as submission has
    port 587 beside 25), so the failures scripted for smtp and imap stay theirs alone."""

    mailbox: Mailbox = field(default_factory=lambda: Mailbox(ADDRESS, secrets.token_urlsafe(12)))
    servers: dict[str, SmtpServer | Pop3Server | ImapServer | WebServer] = field(
        default_factory=dict
    )
    ports: dict[str, int] = field(default_factory=dict)

    async def start(self) -> None:
        scripts = {s.check: Script(s.down, s.hang) for s in SCENES}
        self.mailbox.deliver(
            f"From: postmaster@{DOMAIN}\nTo: {ADDRESS}\nSubject: Welcome\n\n"
            "A message for the pop3 and imap checks to find.\n".encode()
        )
        self.servers = {
            "smtp": SmtpServer(self.mailbox, scripts["smtp"]),
            "pop3": Pop3Server(self.mailbox, scripts["pop3"]),
            "imap": ImapServer(self.mailbox, scripts["imap"]),
            "submission": SmtpServer(self.mailbox),
            "imap-roundtrip": ImapServer(self.mailbox),
            "http": WebServer({name: scripts[name] for name in ("webmail", "website", "api")}),
        }
        for name, server in self.servers.items():
            self.ports[name] = await server.start()

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()

    def config(self, db: Path, password_file: Path) -> dict[str, Any]:
        local, port = "127.0.0.1", self.ports
        login = {"username": ADDRESS, "password_file": str(password_file)}
        envelope = {"mail_from": ADDRESS, "rcpt_to": ADDRESS}
        url = f"http://{local}:{port['http']}"
        policy = {"objective": 99.5, "minimum": 99.0, "credits": CREDITS}
        mail = [
            {"name": "smtp", "type": "smtp", "host": local, "port": port["smtp"], **envelope},
            {"name": "pop3", "type": "pop3", "host": local, "port": port["pop3"], **login},
            {"name": "imap", "type": "imap", "host": local, "port": port["imap"], **login},
            {"name": "webmail", "type": "http", "url": f"{url}/webmail", "expect_status": [200]},
            {
                "name": "roundtrip",
                "type": "mailflow",
                "interval": f"{FLOW_INTERVAL:g}s",
                "timeout": f"{FLOW_TIMEOUT * 1000:.0f}ms",
                "poll_interval": "100ms",
                "send": {"host": local, "port": port["submission"], **envelope},
                "receive": {"type": "imap", "host": local, "port": port["imap-roundtrip"], **login},
            },
        ]
        site = [
            {"name": name, "type": "http", "url": f"{url}/{name}", "expect_status": [200]}
            for name in ("website", "api")
        ]
        return {
            "timezone": "UTC",
            "storage": f"sqlite://{db}",
            "listen": f"127.0.0.1:{_free_port()}",  # known before start: the status page URL
            "defaults": {
                "interval": f"{INTERVAL:g}s",
                "timeout": f"{TIMEOUT * 1000:.0f}ms",
                "failures_to_down": FAILURES_TO_DOWN,
            },
            "status_page": {"title": "probed demo: example hosting status", "logo_text": "demo"},
            "services": {
                "mail": {**policy, "checks": mail},
                "web": {**policy, "public": True, "checks": site},
            },
        }


def _free_port() -> int:
    """A free loopback port, so that the status page URL can be printed before the run."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- the live view


class LiveView:
    """Every test as the daemon records it (one mark each), and a line when a check changes.

    On a terminal the table is redrawn in place under the scrolling lines; otherwise
    only the lines are printed, and the table once at the end.
    """

    def __init__(self, daemon: Daemon, out: TextIO = sys.stdout) -> None:
        self.daemon = daemon
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.marks: dict[CheckKey, list[str]] = {}
        self.runs: dict[CheckKey, FailureRun | None] = {}
        self.lines: list[str] = []  # not printed yet
        self.drawn = 0  # table lines on screen (terminal only)
        daemon.observers.append(
            lambda service, check, outcome: self.record((service, check.name), outcome.ok)
        )

    def record(self, key: CheckKey, ok: bool) -> None:
        tracker = self.daemon.recorder.checks[key].tracker
        marks = self.marks.setdefault(key, [])
        marks.append("." if ok else "x")
        if tracker.in_outage and tracker.run is not None:
            marks[-tracker.run.count :] = ["#"] * tracker.run.count
        change = _change(self.runs.get(key), tracker.run, tracker.failures_to_down)
        self.runs[key] = tracker.run
        if change:
            elapsed = time.monotonic() - self.started
            self.lines.append(f"{elapsed:+6.1f}s  {'/'.join(key):<15} {change}")

    async def run(self, until: float, daemon_task: asyncio.Task[int]) -> bool:
        """Until ``until``; False when the daemon stopped before (Ctrl-C)."""
        last_draw = 0.0
        while time.monotonic() < until and not daemon_task.done():
            if self.tty and (self.lines or time.monotonic() - last_draw >= 0.5):
                self.draw(until)
                last_draw = time.monotonic()
            elif self.lines and not self.tty:
                self.out.write("".join(f"{line}\n" for line in self.lines))
                self.out.flush()
                self.lines = []
            await asyncio.sleep(0.1)
        self.draw(until)
        return not daemon_task.done()

    def table(self, until: float) -> list[str]:
        elapsed = min(time.monotonic(), until) - self.started
        rows = [
            f"live view at {elapsed:4.1f}s of {until - self.started:.1f}s;"
            " one mark per test: . passed, x failed, # failed in an outage"
        ]
        checks = self.daemon.recorder.checks
        timelines = {  # a check tested every second gets two columns per mark
            key: "".join(
                m.ljust(round(s.check.interval / INTERVAL)) for m in self.marks.get(key, [])
            )
            for key, s in checks.items()
        }
        expected = round((until - self.started) / INTERVAL) + 1  # keeps the columns still
        width = max([expected, *map(len, timelines.values())])
        for key, state in checks.items():
            run = state.tracker.run
            now = "DOWN" if state.tracker.in_outage else "failing" if run else "up"
            reason = run.reasons[-1] if run and run.reasons else ""
            rows.append(f"  {'/'.join(key):<15} {timelines[key]:<{width}}  {now:<8}{reason}")
        # a wrapped row would throw the redraw off by a line
        cut = shutil.get_terminal_size().columns - 1 if self.tty else None
        return [row.rstrip()[:cut] for row in rows]

    def draw(self, until: float) -> None:
        table = self.table(until)
        if not self.tty:
            self.out.write("".join(f"{line}\n" for line in [*self.lines, "", *table]))
        else:
            clear = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
            self.out.write(clear + "".join(f"{line}\n" for line in [*self.lines, *table]))
            self.drawn = len(table)
        self.lines = []
        self.out.flush()


def _change(before: FailureRun | None, after: FailureRun | None, failures_to_down: int) -> str:
    """What one more test did to a check, in words; "" when it is not worth a line."""
    if after is not None:
        reason = after.reasons[-1] if after.reasons else "failed"
        if after.count == failures_to_down:
            return f"DOWN: {after.count} failed tests in a row make an outage, from the first one"
        return f"test failed: {reason}" if after.count == 1 else ""
    if before is None:
        return ""
    if before.count < failures_to_down:
        return f"passes again after {before.count} failed test: no outage, no downtime"
    downtime = before.last_at - before.first_at
    return f"up again after {before.count} failed tests: {downtime:.1f}s of downtime"


# ---------------------------------------------------------------- run, flag, report


async def run_demo(
    *,
    duration: float | None,
    workdir: Path | None,
    json_report: Path | None,
    html_report: Path | None = None,
) -> int:
    # The live view tells what happens; the daemon's warnings would only tear it apart.
    configure_logs("console", "error")
    tmp = tempfile.TemporaryDirectory(prefix="probed-demo-") if workdir is None else None
    base = Path(tmp.name) if tmp else workdir
    assert base is not None
    platform = Platform()
    await platform.start()
    try:
        cfg_path = _write_config(platform, base)
        config = config_mod.load(cfg_path)
        run_for = duration if duration is not None else RUN_SECONDS
        print(legend())
        print(f"\nconfig: {cfg_path}; running for {run_for:.0f}s")
        status_url = f"http://{config.listen_host}:{config.listen_port}/status"
        print(f"status page while it runs: {status_url}\n", flush=True)
        daemon = await Daemon.open(str(cfg_path), config)
        view = LiveView(daemon)
        task = asyncio.create_task(daemon.run())
        try:
            ran_out = await view.run(time.monotonic() + run_for, task)
        finally:
            daemon.request_stop()
            await task
        kept = cfg_path if tmp is None else None  # a temporary workdir is gone after the demo
        report, html = await _report(config, kept)
        html_path = html_report or _html_path(workdir)
        return _show(report, html, json_report, html_path, whole=ran_out and run_for >= RUN_SECONDS)
    finally:
        await platform.stop()
        if tmp is not None:
            tmp.cleanup()


def _html_path(workdir: Path | None) -> Path:
    """Where the HTML report goes: the workdir, or a file that outlives the demo's tmp dir."""
    if workdir is not None:
        return workdir / "report.html"
    fd, name = tempfile.mkstemp(prefix="probed-demo-report-", suffix=".html")
    os.close(fd)
    return Path(name)


def _write_config(platform: Platform, base: Path) -> Path:
    """The demo's config and password file, in its directory; a previous run's store goes."""
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("demo.db*"):  # it would mix into this run's report
        stale.unlink()
    password_file = base / "mailbox.pass"
    password_file.write_text(platform.mailbox.password + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    cfg_path = base / "probed-demo.yaml"
    document = platform.config(base / "demo.db", password_file)
    header = "# probed demo: generated, loopback only\n"
    cfg_path.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return cfg_path


async def _flag_dos(store: Store, cfg_path: Path | None) -> None:
    """Flag the DoS window the way an operator would, after the fact. The command is shown
    with the demo's config when it outlives the demo (``--workdir``)."""
    for scene in (s for s in SCENES if s.dos):
        outages = await store.outages(scene.service, (0, time.time() + 1))
        found = [o for o in outages if o.check == scene.check]
        if not found:
            continue
        start, end = found[-1].start - INTERVAL / 2, found[-1].end + INTERVAL / 2
        reason = f"SYN flood against {scene.check} (scripted)"
        await store.add_exclusion(NewExclusion(scene.service, start, end, "dos", reason, "demo"))
        config = str(cfg_path) if cfg_path else "DIR/probed-demo.yaml"
        print(
            f"\nThe operator flags the {scene.check} outage as a DoS window, as this command would:\n"
            f"  probed exclude add -c {config} --service {scene.service} --start {_iso(start)}"
            f" --end {_iso(end)} --kind dos --reason '{reason}'"
            + ("" if cfg_path else "\n(run `probed demo --workdir DIR` to keep the demo's files)")
        )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _foreseen(figures: ServiceFigures) -> str:
    """The script's figures for a service beside the measured ones (the SLA's rules, by hand)."""
    scenes = [s for s in SCENES if s.service == figures.service and s.outage]
    excluded = [s.check for s in scenes if s.dos]
    return (
        f"{figures.service}: the script foresaw {_count(len(scenes), 'outage')}"
        f" and {sum(s.downtime for s in scenes):.1f}s of downtime"
        + (f" ({' and '.join(excluded)} excluded)" if excluded else "")
        + f"; measured: {_count(len(figures.outages), 'outage')},"
        f" {figures.downtime_seconds:.2f}s of downtime, {figures.excluded_seconds:.2f}s excluded."
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


async def _report(config: config_mod.Config, cfg_path: Path | None) -> tuple[MonthReport, str]:
    """Flag the DoS window, then the month's report and its HTML page."""
    store = await open_store(config)
    try:
        await _flag_dos(store, cfg_path)
        now = time.time()
        month = accounting.month_of(now, config.timezone)
        report = MonthReport(
            month=month,
            timezone=config.timezone,
            generated_at=now,
            services=tuple(await month_report(store, config, month, now)),
        )
        html = render_html(report, await gather_extras(store, config, report, now), now)
    finally:
        await store.close()
    return report, html


def _show(
    report: MonthReport, html: str, json_report: Path | None, html_report: Path, *, whole: bool
) -> int:
    print()
    print(render_text(report), end="")
    if whole:  # a shorter run has not played the whole script
        print()
        for figures in report.services:
            print(_foreseen(figures))
    if json_report is not None:
        json_report.write_text(render_json(report), encoding="utf-8")
    html_report.write_text(html, encoding="utf-8")
    print(f"\nHTML report (outage timelines, open it in a browser): {html_report}")
    return 0
