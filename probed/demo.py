"""``probed demo``: the whole product on this machine alone.

A small hosting platform runs in this process on loopback: SMTP, POP3 and
IMAP servers sharing one mailbox (probed.demo_mail) and an HTTP server for
webmail, a website and an API. Each server answers according to SCENES (up,
a single failed test, an outage, an outage during a DoS that the operator
flags afterwards). The real daemon probes them at short intervals into a
temporary store, a live view shows every test as the daemon records it, and
the month report follows. Nothing leaves the machine and nothing needs root.
"""

from __future__ import annotations

import asyncio
import secrets
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

from probed import accounting
from probed import config as config_mod
from probed.daemon import Daemon
from probed.figures import month_report
from probed.logs import configure as configure_logs
from probed.outages import FailureRun
from probed.report import MonthReport, render_json, render_text
from probed.scheduler import CheckKey
from probed.storage import SqliteStore
from probed.demo_mail import DOMAIN, ImapServer, Mailbox, Pop3Server, Script, SmtpServer

INTERVAL = 0.5  # seconds between tests of each demo check
FLOW_INTERVAL = 1.0  # the mail round trip's interval; its timeout is its delivery deadline
TIMEOUT = 0.4
FLOW_TIMEOUT = 0.8
FAILURES_TO_DOWN = 2
ADDRESS = f"probe@{DOMAIN}"


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
    Scene("mail", "pop3", range(8, 12), "refuses 4 connections in a row (-ERR)"),
    Scene("mail", "imap", range(16, 19), "says BYE 3 times under a flood", dos=True),
    Scene("mail", "webmail", range(22, 24), "answers 503 twice"),
    Scene("mail", "roundtrip", range(0), "delivers every message", interval=FLOW_INTERVAL),
    Scene("web", "website", range(6, 7), "answers 503 once"),
    Scene(
        "web", "api", range(12, 14), f"hangs past its {TIMEOUT * 1000:.0f}ms timeout twice", True
    ),
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
        script = self.scripts[request.match_info["name"]]
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
            "listen": "127.0.0.1:0",
            "defaults": {
                "interval": f"{INTERVAL:g}s",
                "timeout": f"{TIMEOUT * 1000:.0f}ms",
                "failures_to_down": FAILURES_TO_DOWN,
            },
            "services": {"mail": {**policy, "checks": mail}, "web": {**policy, "checks": site}},
        }


CREDITS = [{"below": 99.5, "percent": 5}, {"below": 99.0, "percent": 10}]


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
        self.counts: dict[CheckKey, tuple[int, int]] = {}  # passed, failed
        self.runs: dict[CheckKey, FailureRun | None] = {}
        self.drawn = 0  # table lines on screen (terminal only)

    async def run(self, until: float, daemon_task: asyncio.Task[int]) -> None:
        last_draw = 0.0
        while time.monotonic() < until and not daemon_task.done():
            lines = self.poll()
            if self.tty and (lines or time.monotonic() - last_draw >= 0.5):
                self.draw(lines, until)
                last_draw = time.monotonic()
            elif lines:
                self.out.write("".join(f"{line}\n" for line in lines))
                self.out.flush()
            await asyncio.sleep(0.1)
        self.draw(self.poll(), until)

    def poll(self) -> list[str]:
        """New marks since the last poll, from the daemon's counters; the lines they make."""
        lines = []
        for key, state in sorted(self.daemon.monitor.checks.items()):
            passed, failed = self._tests(key, state.check.type)
            old_passed, old_failed = self.counts.get(key, (0, 0))
            self.counts[key] = (passed, failed)
            run, before = state.tracker.run, self.runs.get(key)
            new_fails, new_passes = ["x"] * (failed - old_failed), ["."] * (passed - old_passed)
            marks = self.marks.setdefault(key, [])
            marks += new_passes + new_fails if run is not None else new_fails + new_passes
            if state.tracker.in_outage and run is not None:
                marks[-run.count :] = ["#"] * run.count
            self.runs[key] = run
            change = _change(before, run, state.tracker.failures_to_down)
            if change:
                elapsed = time.monotonic() - self.started
                lines.append(f"{elapsed:+6.1f}s  {key[0]}/{key[1]:<10} {change}")
        return lines

    def _tests(self, key: CheckKey, type_: str) -> tuple[int, int]:
        labels = {"service": key[0], "check": key[1], "type": type_}
        get = self.daemon.registry.get_sample_value
        passed = get("probed_probes_total", {**labels, "result": "pass"}) or 0
        failed = get("probed_probes_total", {**labels, "result": "fail"}) or 0
        return int(passed), int(failed)

    def table(self, until: float) -> list[str]:
        elapsed = min(time.monotonic(), until) - self.started
        rows = [
            f"live view at {elapsed:4.1f}s of {until - self.started:.1f}s;"
            " one mark per test: . passed, x failed, # failed in an outage"
        ]
        for key, state in sorted(self.daemon.monitor.checks.items()):
            gap = " " * (round(state.check.interval / INTERVAL) - 1)
            timeline = "".join(mark + gap for mark in self.marks.get(key, []))
            run = state.tracker.run
            now = "DOWN" if state.tracker.in_outage else "failing" if run else "up"
            reason = run.reasons[-1] if run and run.reasons else ""
            rows.append(
                f"  {key[0]}/{key[1]:<10} {timeline:<{RUN_SECONDS / INTERVAL + 2:.0f}} {now:<8}{reason}"
            )
        return [row.rstrip() for row in rows]

    def draw(self, lines: list[str], until: float) -> None:
        table = self.table(until)
        if not self.tty:
            self.out.write("".join(f"{line}\n" for line in [*lines, "", *table]))
        else:
            clear = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
            self.out.write(clear + "".join(f"{line}\n" for line in [*lines, *table]))
            self.drawn = len(table)
        self.out.flush()


def _change(before: FailureRun | None, after: FailureRun | None, failures_to_down: int) -> str:
    """What a check's new tests did, in words; "" when nothing worth a line happened."""
    if after is not None and (before is None or before.first_at != after.first_at):
        reason = after.reasons[-1] if after.reasons else "failed"
        if after.count < failures_to_down:
            return f"test failed: {reason}"
        return f"DOWN: {after.count} failed tests in a row, an outage ({reason})"
    if after is not None and before is not None and before.count < failures_to_down <= after.count:
        return f"DOWN: {after.count} failed tests in a row, an outage from the first one"
    if after is None and before is not None:
        if before.count < failures_to_down:
            return f"passes again: {before.count} failed test is no outage, no downtime"
        downtime = before.last_at - before.first_at
        return f"up again after {before.count} failed tests: {downtime:.1f}s of downtime"
    return ""


# ---------------------------------------------------------------- run, flag, report


async def run_demo(
    *, duration: float | None, workdir: Path | None, json_report: Path | None
) -> int:
    # The live view tells what happens; the daemon's warnings would only tear it apart.
    configure_logs("console", "error")
    tmp = tempfile.TemporaryDirectory(prefix="probed-demo-") if workdir is None else None
    base = Path(tmp.name) if tmp else workdir
    assert base is not None
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.glob("demo.db*"):  # a previous run's store would mix into this report
        stale.unlink()
    platform = Platform()
    await platform.start()
    password_file = base / "mailbox.pass"
    password_file.write_text(platform.mailbox.password + "\n", encoding="utf-8")
    password_file.chmod(0o600)
    cfg_path = base / "probed-demo.yaml"
    document = platform.config(base / "demo.db", password_file)
    header = "# probed demo: generated, loopback only\n"
    cfg_path.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    config = config_mod.load(cfg_path)
    run_for = duration if duration is not None else RUN_SECONDS
    print(legend())
    print(f"\nconfig: {cfg_path}; running for {run_for:.0f}s\n", flush=True)
    daemon = Daemon(str(cfg_path), config)
    task = asyncio.create_task(daemon.run())
    view = LiveView(daemon)
    try:
        await view.run(time.monotonic() + run_for, task)
    finally:
        daemon.request_stop()
        await task
        await platform.stop()
    try:
        return _report(config, cfg_path, json_report)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _flag_dos(store: SqliteStore, cfg_path: Path) -> None:
    """Flag the DoS window the way an operator would, after the fact."""
    for scene in (s for s in SCENES if s.dos):
        found = [
            o for o in store.outages(scene.service, (0, time.time() + 1)) if o.check == scene.check
        ]
        if not found:
            continue
        start, end = found[-1].start - INTERVAL / 2, found[-1].end + INTERVAL / 2
        reason = f"SYN flood against {scene.check} (scripted)"
        store.add_exclusion(
            service=scene.service, start=start, end=end, kind="dos", reason=reason, by="demo"
        )
        print(
            f"\nThe operator flags the {scene.check} outage as a DoS window, as this would:\n"
            f"  probed exclude add -c {cfg_path} --service {scene.service} --start {_iso(start)}"
            f" --end {_iso(end)} --kind dos --reason '{reason}'"
        )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _report(config: config_mod.Config, cfg_path: Path, json_report: Path | None) -> int:
    store = SqliteStore(config.storage_path)
    try:
        _flag_dos(store, cfg_path)
        now = time.time()
        month = accounting.month_of(now, config.timezone)
        report = MonthReport(
            month=month,
            timezone=config.timezone,
            generated_at=now,
            services=tuple(month_report(store, config, month, now)),
        )
    finally:
        store.close()
    print()
    print(render_text(report), end="")
    for service in dict.fromkeys(s.service for s in SCENES):
        scenes = [s for s in SCENES if s.service == service and s.outage]
        counted = sum(s.downtime for s in scenes)
        print(
            f"The script foresaw for {service}: {len(scenes)} outage(s),"
            f" {counted:g}s of downtime"
            + "".join(f", {s.check}'s excluded" for s in scenes if s.dos)
            + "."
        )
    if json_report is not None:
        json_report.write_text(render_json(report), encoding="utf-8")
    return 0
