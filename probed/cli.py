"""The ``probed`` command. Exit codes: 0 ok, 1 runtime failure, 2 usage, 78 bad config."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import pwd
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import NoReturn, TypeVar

import click

from probed import __version__, eventloop
from probed import config as config_mod
from probed.config import EX_CONFIG, Config, ConfigError
from probed.core import accounting
from probed.logs import configure as configure_logs
from probed.store.base import NewExclusion, StorageError, Store, open_store

FORMATS = ("text", "json", "csv", "markdown", "html")
T = TypeVar("T")


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"probed: {message}", err=True)
    sys.exit(code)


def _load(path: str, *, secrets: bool = True) -> Config:
    """``secrets=False`` for commands that do not probe: they need no probe secrets."""
    try:
        return config_mod.load(path, secrets=secrets)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(EX_CONFIG)


def _with_store(config: Config, use: Callable[[Store], Awaitable[T]], *, readonly: bool) -> T:
    """Open the config's store, run ``use`` on it, close it; a store problem is one line."""

    async def _go() -> T:
        store = await open_store(config, readonly=readonly)
        try:
            return await use(store)
        finally:
            await store.close()

    try:
        return asyncio.run(_go())
    except StorageError as exc:
        _fail(str(exc))


def _author(by: str | None) -> str:
    """``--by``, else who ran sudo, else the login name of this process (not $USER)."""
    if by:
        return by
    if os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (e.g. a container's DynamicUser)
        return f"uid {os.getuid()}"


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(),  # the loader checks it, so that a directory exits 78 like any bad config
    help="the YAML configuration file",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="probed")
def main() -> None:
    """Measure mail and web hosting availability exactly as hosting SLAs define it."""


@main.command()
@config_option
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--location",
    default=None,
    help="this instance's identity in the store (overrides the config's location:)",
)
def run(config_path: str, log_format: str, log_level: str, location: str | None) -> None:
    """Run the daemon in the foreground (systemd runs this)."""
    from probed.daemon import heap
    from probed.daemon.lifecycle import Daemon

    heap.pin_mmap_threshold()  # before the config's text and the daemon's large buffers
    configure_logs(log_format, log_level)  # type: ignore[arg-type]
    faulthandler.enable()  # a watchdog abort (SIGABRT) leaves every thread's stack in the journal
    if location is not None:
        try:
            config_mod.check_location(location)
        except ValueError as exc:
            _fail(f"--location: {exc}", 2)
    config = _load(config_path)
    eventloop.install()

    async def _run() -> int:
        try:
            daemon = await Daemon.open(config_path, config, location=location)
        except StorageError as exc:
            _fail(str(exc))
        try:
            return await daemon.run()
        except OSError as exc:  # e.g. the listen address is taken
            _fail(
                f"cannot listen on {config.listen_host}:{config.listen_port}: {exc.strerror or exc}"
            )

    sys.exit(asyncio.run(_run()))


@main.command("check-config")
@config_option
def check_config(config_path: str) -> None:
    """Validate the configuration and print a summary (exit 0 or 78)."""
    click.echo(config_mod.summary(_load(config_path)))


@main.command("reload")
@config_option
@click.option(
    "--pid",
    type=int,
    envvar="MAINPID",
    help="the daemon's pid, to signal (default: $MAINPID; without it, POST /-/reload with the token)",
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds to wait")
def reload_command(config_path: str, pid: int | None, timeout: float) -> None:
    """Reload the running daemon's config; returns once it is applied (0) or refused (78)."""
    from probed.reload import ReloadError, reload, target

    try:
        where = target(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(EX_CONFIG)
    try:
        verdict = asyncio.run(reload(where, pid, timeout))
    except ReloadError as exc:
        _fail(str(exc))
    if not verdict.applied:
        for problem in verdict.problems:
            click.echo(problem, err=True)
        _fail("the daemon refused the new config and keeps running the old one", EX_CONFIG)
    click.echo("reloaded")


@main.command()
@config_option
@click.argument("check")
def probe(config_path: str, check: str) -> None:
    """Run one CHECK (name or service/check) once and print its verdict and transcript."""
    from probed.daemon.runner import run_test
    from probes import REGISTRY
    from probes.base import Transcript

    config = _load(config_path)
    try:
        service, chk = config.find_check(check)
    except KeyError as exc:
        _fail(str(exc.args[0]), 2)
    transcript = Transcript(chk.secrets())
    eventloop.install()
    outcome = asyncio.run(run_test(REGISTRY[chk.type], chk, transcript))
    verdict = "PASS" if outcome.ok else f"FAIL: {outcome.result.reason}"
    click.echo(f"{service.name}/{chk.name} ({chk.type} {chk.target()}): {verdict}")
    click.echo(f"  duration {outcome.duration * 1000:.1f} ms (timeout {chk.timeout:g}s)")
    for key, value in sorted(outcome.result.details.items()):
        if key == "cert_not_after" and isinstance(value, int | float):
            left = (value - time.time()) / 86400
            value = (
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(value))} (in {left:.0f} days)"
            )
        click.echo(f"  {key}: {value}")
    click.echo("transcript:")
    for line in transcript.lines:
        click.echo(f"  {line}")
    if outcome.error is not None:  # a bug in probed: the traceback is what a bug report needs
        import traceback

        click.echo("".join(traceback.format_exception(outcome.error)), err=True, nl=False)
    sys.exit(0 if outcome.ok else 1)


@main.command()
@config_option
@click.option("--month", help="YYYY-MM (default: the current month)")
@click.option("--from", "from_month", help="first month of a range, YYYY-MM")
@click.option("--to", "to_month", help="last month of a range, YYYY-MM")
@click.option("--service", help="only this service")
@click.option("--incident", type=int, help="the evidence of one outage, by id")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
def report(
    config_path: str,
    month: str | None,
    from_month: str | None,
    to_month: str | None,
    service: str | None,
    incident: int | None,
    fmt: str,
) -> None:
    """The month's figures and outages (or a range of months, or one incident)."""
    # ~10^5 records (10 000 checks' month) that live until the command ends: collections
    # would only rescan them, ~40 % of the report's CPU
    click.get_current_context().with_resource(config_mod.no_collections())
    from probed.reports import render as render
    from probed.reports.figures import month_report

    config = _load(config_path, secrets=False)
    if service is not None and service not in config.services:
        _fail(f'unknown service "{service}"; configured: {", ".join(config.services)}', 2)
    now = time.time()
    if incident is not None:
        from probed.reports.incident import incident_evidence, render_incident

        evidence = _with_store(
            config, lambda store: incident_evidence(store, config, incident, now), readonly=True
        )
        if evidence is None:
            _fail(f"no outage with id {incident}", 1)
        if fmt == "html":
            from probed.reports.html import render_incident_html

            click.echo(render_incident_html(evidence, now), nl=False)
            return
        click.echo(render_incident(evidence, fmt), nl=False)
        return
    if (from_month is None) != (to_month is None):
        _fail("--from and --to go together", 2)
    if month is not None and from_month is not None:
        _fail("give either --month or --from/--to, not both", 2)
    try:
        if from_month and to_month:
            months = accounting.months_between(from_month, to_month)
        else:
            months = [month or accounting.month_of(now, config.timezone)]
            accounting.parse_month(months[0])
    except ValueError as exc:
        _fail(str(exc), 2)

    async def _report(store: Store) -> str:
        reports = tuple(
            [
                render.MonthReport(
                    month=m,
                    timezone=config.timezone,
                    generated_at=now,
                    services=tuple(await month_report(store, config, m, now, service)),
                )
                for m in months
            ]
        )
        result: render.Report = (
            reports[0]
            if len(reports) == 1
            else render.RangeReport(months[0], months[-1], config.timezone, reports)
        )
        if fmt == "html":
            from probed.reports.html import gather_extras, render_html

            return render_html(result, await gather_extras(store, config, result, now), now)
        return render.RENDERERS[fmt](result)

    click.echo(_with_store(config, _report, readonly=True), nl=False)


@main.group()
def exclude() -> None:
    """Flag windows (DoS, maintenance) whose downtime is not counted."""


@exclude.command("add")
@config_option
@click.option("--service", help="the service the window applies to")
@click.option("--all", "all_services", is_flag=True, help="the window applies to every service")
@click.option(
    "--start", required=True, help="ISO 8601; without an offset, in the configured time zone"
)
@click.option(
    "--end", required=True, help="ISO 8601; without an offset, in the configured time zone"
)
@click.option("--kind", type=click.Choice(["dos", "maintenance", "other"]), required=True)
@click.option("--reason", required=True)
@click.option("--by", default=None, help="who flags it (default: the login name)")
def exclude_add(
    config_path: str,
    service: str | None,
    all_services: bool,
    start: str,
    end: str,
    kind: str,
    reason: str,
    by: str | None,
) -> None:
    """Flag a window; prints the new exclusion's id alone on stdout."""
    from pydantic import ValidationError

    from probed.exclusions import ExclusionRequest, InvalidRequest, from_validation_error, resolve

    if all_services == (service is not None):
        _fail("give exactly one of --service S or --all", 2)
    config = _load(config_path, secrets=False)
    author = _author(by)
    try:
        try:
            req = ExclusionRequest(
                service=service or "*",
                start=start,
                end=end,
                kind=kind,  # type: ignore[arg-type]
                reason=reason,
                by=author,
            )
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        svc, t0, t1 = resolve(req, config)
    except InvalidRequest as exc:
        _fail(f"--{exc.field}: {exc.message}", 2)
    new = NewExclusion(svc, t0, t1, kind, reason, author)
    stored = _with_store(config, lambda store: store.add_exclusion(new), readonly=False)
    click.echo(str(stored.id))


@exclude.command("list")
@config_option
@click.option("--month", help="only exclusions touching YYYY-MM")
@click.option("--revoked/--no-revoked", default=False, help="also show revoked exclusions")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def exclude_list(config_path: str, month: str | None, revoked: bool, fmt: str) -> None:
    """List exclusions."""
    from probed.exclusions import to_json
    from probed.reports.render import _local

    config = _load(config_path, secrets=False)
    try:
        window = accounting.month_period(month, config.timezone) if month else None
    except ValueError as exc:
        _fail(str(exc), 2)
    stored = _with_store(config, lambda store: store.exclusions(window), readonly=True)
    rows = [e for e in stored if revoked or e.revoked_at is None]
    if fmt == "json":
        click.echo(json.dumps([to_json(e) for e in rows], indent=2))
        return
    if not rows:
        click.echo("no exclusions")
    when = partial(_local, tz=config.timezone)  # as in `probed report`; JSON stays UTC
    for e in rows:
        state = (
            f"  REVOKED {when(e.revoked_at)} by {e.revoked_by}: {e.revoke_reason}"
            if e.revoked_at
            else ""
        )
        click.echo(
            f"{e.id:>4}  {e.service:<12} {when(e.start)} → {when(e.end)}  {e.kind:<11} by {e.by}: {e.reason}{state}"
        )


@exclude.command("revoke")
@config_option
@click.argument("exclusion_id", type=int)
@click.option("--reason", required=True)
@click.option("--by", default=None)
def exclude_revoke(config_path: str, exclusion_id: int, reason: str, by: str | None) -> None:
    """Revoke an exclusion (it is kept, marked revoked)."""
    from pydantic import ValidationError

    from probed.exclusions import RevokeRequest, from_validation_error
    from probed.store.base import AlreadyRevoked, UnknownExclusion

    author = _author(by)
    try:
        RevokeRequest(reason=reason, by=author)
    except ValidationError as exc:
        refused = from_validation_error(exc)
        _fail(f"--{refused.field}: {refused.message}", 2)
    config = _load(config_path, secrets=False)
    try:
        _with_store(
            config,
            lambda store: store.revoke_exclusion(exclusion_id, by=author, reason=reason),
            readonly=False,
        )
    except (UnknownExclusion, AlreadyRevoked) as exc:
        _fail(str(exc))
    click.echo(f"revoked {exclusion_id}")


@main.group("store")
def store_group() -> None:
    """Storage maintenance: move a history between stores."""


def _password(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip("\r\n")
    except OSError as exc:
        _fail(f"cannot read password file {path}: {exc.strerror or exc}", 2)


@store_group.command("copy")
@click.option("--from", "source", required=True, help="sqlite:///path or postgresql://USER@HOST/DB")
@click.option(
    "--to", "target", required=True, help="an empty store: sqlite:///path or postgresql://…"
)
@click.option("--from-password-file", type=click.Path(dir_okay=False), help="PostgreSQL source")
@click.option("--to-password-file", type=click.Path(dir_okay=False), help="PostgreSQL target")
def store_copy(
    source: str, target: str, from_password_file: str | None, to_password_file: str | None
) -> None:
    """Copy a whole history into an empty store, ids kept (stop the daemon first)."""
    from probed.store.copy import copy_store

    try:
        copied = asyncio.run(
            copy_store(
                source,
                target,
                source_password=_password(from_password_file),
                target_password=_password(to_password_file),
            )
        )
    except StorageError as exc:
        _fail(str(exc))
    for c in copied:
        click.echo(f"{c.table:<20} {c.rows:>10} rows")


@main.command()
@click.option("--duration", type=float, default=None, help="seconds to run before the report")
@click.option(
    "--workdir", type=click.Path(file_okay=False), default=None, help="keep the demo's files here"
)
@click.option(
    "--json-report",
    type=click.Path(dir_okay=False),
    default=None,
    help="also write the report JSON here",
)
@click.option(
    "--html-report",
    type=click.Path(dir_okay=False),
    default=None,
    help="write the HTML report here (default: report.html in --workdir, else a temp file)",
)
@click.option(
    "--locations",
    type=click.IntRange(3, 9),
    default=None,
    help="instead: this many probing locations and a quorum of 2 (docs/locations.md)",
)
def demo(
    duration: float | None,
    workdir: str | None,
    json_report: str | None,
    html_report: str | None,
    locations: int | None,
) -> None:
    """Run the whole product on this machine alone, then print the report."""
    from probed.demo import run_demo
    from probed.demo.locations import run_locations_demo

    configure_logs("console", "warning")
    eventloop.install()
    if locations is not None:
        sys.exit(
            asyncio.run(
                run_locations_demo(
                    locations,
                    duration=duration,
                    workdir=Path(workdir) if workdir else None,
                    json_report=Path(json_report) if json_report else None,
                )
            )
        )
    sys.exit(
        asyncio.run(
            run_demo(
                duration=duration,
                workdir=Path(workdir) if workdir else None,
                json_report=Path(json_report) if json_report else None,
                html_report=Path(html_report) if html_report else None,
            )
        )
    )


if __name__ == "__main__":
    main()
