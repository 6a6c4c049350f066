"""Exclusions, reports and incident evidence against the real daemon subprocess.

The write API's refusals each leave the store untouched; a DoS window flagged
over a live outage (through the API, then through ``probed exclude`` in
another process) moves downtime into excluded time at the next scrape, and
revoking it brings the downtime back; ``probed report`` reads the store while
the daemon writes it, in every format, and keeps the contract's JSON keys.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from probed.core import accounting
from probed.core.accounting import ExclusionSpan
from probed.reports.render import CSV_COLUMNS
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, wait_for
from tests.daemon_storage import DaemonStorage, sqlite_storage

pytestmark = pytest.mark.e2e
INTERVAL = 0.2
U, D = True, False
TOKEN = "s3cret-token-for-the-e2e-tests"
MAX_BODY = 64 * 1024
UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
WIDE = (0.0, 4e9)


# --- config and clients -------------------------------------------------------------


def write_config(
    tmp: Path, port: int, *, token: str | None = TOKEN, storage: DaemonStorage | None = None
) -> Path:
    """Services web (site, api) and static (files), the latter with a daily
    config maintenance window that covers the whole test run; ``storage`` is
    the store the daemon writes (default SQLite in ``tmp``)."""
    storage = storage or sqlite_storage(tmp)
    extra = ""
    if token is not None:
        (tmp / "token").write_text(token + "\n", encoding="utf-8")
        extra = f"api_token_file: {tmp / 'token'}\n"
    window_start = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%H:%M")

    def check(name: str) -> str:
        return f'      - {{name: {name}, type: http, url: "http://127.0.0.1:{port}/{name}"}}'

    path = tmp / "probed.yaml"
    path.write_text(
        f"timezone: UTC\n{storage.lines}\nlisten: 127.0.0.1:0\n{extra}"
        f"defaults: {{interval: {INTERVAL}s, timeout: {INTERVAL * 0.75:.3f}s, failures_to_down: 2}}\n"
        "services:\n"
        "  web:\n    objective: 99.5\n    minimum: 99.0\n"
        "    credits: [{below: 99.5, percent: 5}, {below: 99.0, percent: 10}]\n"
        f"    checks:\n{check('site')}\n{check('api')}\n"
        "  static:\n    objective: 99.9\n"
        f'    maintenance: [{{every: day, start: "{window_start}", duration: 2h,'
        " kind: maintenance, reason: nightly cache rebuild}]\n"
        f"    checks:\n{check('files')}\n",
        encoding="utf-8",
    )
    return path


async def call(
    daemon: DaemonProcess,
    path: str,
    body: bytes | Mapping[str, Any] | None = None,
    *,
    token: str | None = TOKEN,
    scheme: str = "Bearer",
    method: str = "POST",
) -> tuple[int, Any]:
    """One request; returns the status and the parsed JSON body (every answer is JSON)."""
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    url = f"http://127.0.0.1:{daemon.port}{path}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, url, data=data, headers=headers) as r,
    ):
        assert r.content_type == "application/json", (r.status, await r.text())
        return r.status, await r.json()


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    """``probed ARGS -c CONFIG`` in its own process, as an operator runs it."""
    command, rest = (args[:2], args[2:]) if args[0] == "exclude" else (args[:1], args[1:])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "probed.cli",
        *command,
        "-c",
        str(config),
        *rest,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def stored_exclusions(storage: DaemonStorage) -> tuple[list[ExclusionSpan], int]:
    """Every exclusion (live and revoked) and the change counter, as another process
    reads them through the product's store."""
    async with storage.reading() as store:
        return await store.exclusions(), await store.generation()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def exclusion(**changes: Any) -> dict[str, Any]:
    now = time.time()
    good = {
        "service": "web",
        "start": iso(now - 600),
        "end": iso(now + 600),
        "kind": "dos",
        "reason": "SYN flood from AS64500",
        "by": "noc",
    }
    return {k: v for k, v in (good | changes).items() if v is not None}


# --- (a) the write API ------------------------------------------------------------------


async def test_write_api_without_a_configured_token_answers_403_and_writes_nothing(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with ScriptedHTTP() as http:
        config = write_config(tmp_path, http.port, token=None, storage=daemon_storage)
        daemon = await DaemonProcess(config).start()
        try:
            for token in (None, TOKEN):
                status, body = await call(daemon, "/api/v1/exclusions", exclusion(), token=token)
                assert status == 403
                assert "api_token_file" in body["error"]
            status, body = await call(daemon, "/api/v1/exclusions/1/revoke", {"reason": "x"})
            assert status == 403
            assert await daemon.json("/api/v1/exclusions") == {"exclusions": []}
        finally:
            assert await daemon.stop() == 0
    assert await stored_exclusions(daemon_storage) == ([], 0)


WRONG = "s3cret-token-for-the-e2e-testz"
# (authorization token, body, expected status, field named in the answer)
REFUSED: list[tuple[str, str | None, bytes | dict[str, Any], int, str | None]] = [
    ("no authorization header", None, exclusion(), 401, None),
    ("wrong token", WRONG, exclusion(), 401, None),
    ("a prefix of the token", TOKEN[:-1], exclusion(), 401, None),
    ("malformed JSON", TOKEN, b'{"service": "web", "start": ', 400, "(body)"),
    ("not an object", TOKEN, b"[1, 2]", 400, "(body)"),
    ("absurdly nested JSON", TOKEN, b"[" * 60_000, 400, "(body)"),
    ("oversized body", TOKEN, b"[" * (MAX_BODY + 1), 413, None),
    ("service not a string", TOKEN, exclusion(service=7), 400, "service"),
    ("start not a string", TOKEN, exclusion(start=1700000000), 400, "start"),
    ("unknown kind", TOKEN, exclusion(kind="flood"), 400, "kind"),
    ("missing reason", TOKEN, exclusion(reason=None), 400, "reason"),
    ("unknown field", TOKEN, exclusion(color="red"), 400, "color"),
    ("start not ISO 8601", TOKEN, exclusion(start="yesterday"), 400, "start"),
    ("end before start", TOKEN, exclusion(end=iso(time.time() - 3600)), 400, "end"),
    ("unknown service", TOKEN, exclusion(service="mail"), 400, "service"),
]


async def test_write_api_refusals_write_nothing_and_a_good_request_is_stored(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with ScriptedHTTP() as http:
        config = write_config(tmp_path, http.port, storage=daemon_storage)
        daemon = await DaemonProcess(config).start()
        try:
            for what, token, body, expected, field in REFUSED:
                status, answer = await call(daemon, "/api/v1/exclusions", body, token=token)
                assert (status, answer.get("field")) == (expected, field), (what, answer)
                assert answer["error"], what
                assert await daemon.json("/api/v1/exclusions") == {"exclusions": []}, what
                assert await stored_exclusions(daemon_storage) == ([], 0), what
            # the scheme is case-insensitive (RFC 9110): this one gets past authorization
            status, answer = await call(
                daemon, "/api/v1/exclusions", exclusion(kind=7), scheme="bearer"
            )
            assert (status, answer["field"]) == (400, "kind")
            assert await stored_exclusions(daemon_storage) == ([], 0)

            sent = exclusion()  # one request, compared with itself (no second clock read)
            status, created = await call(daemon, "/api/v1/exclusions", sent)
            assert status == 201
            assert isinstance(created["id"], int)
            assert UTC_TIME.fullmatch(created["created_at"])
            assert created | {"id": 0, "created_at": ""} == {
                **sent,
                "id": 0,
                "created_at": "",
                "revoked": False,
                "revoked_at": None,
                "revoked_by": None,
                "revoke_reason": None,
            }
            assert await daemon.json("/api/v1/exclusions") == {"exclusions": [created]}

            revoke = f"/api/v1/exclusions/{created['id']}/revoke"
            status, answer = await call(daemon, revoke, {"reason": "not an attack"}, token=None)
            assert status == 401
            status, answer = await call(daemon, revoke, b"{")
            assert (status, answer["field"]) == (400, "(body)")
            status, answer = await call(daemon, revoke, {"by": "lead"})
            assert (status, answer["field"]) == (400, "reason")
            assert await daemon.json("/api/v1/exclusions") == {"exclusions": [created]}
            status, revoked = await call(daemon, revoke, {"reason": "not an attack", "by": "lead"})
            assert status == 200
            assert revoked["revoked"] is True and revoked["revoked_by"] == "lead"
            assert revoked["revoke_reason"] == "not an attack"
            assert UTC_TIME.fullmatch(revoked["revoked_at"])
            status, again = await call(daemon, revoke, {"reason": "twice"})
            assert (status, again["field"]) == (409, "id")
            assert "already revoked" in again["error"]
            status, missing = await call(daemon, "/api/v1/exclusions/999/revoke", {"reason": "x"})
            assert (status, missing["field"]) == (404, "id")
            huge = f"/api/v1/exclusions/{'9' * 40}/revoke"
            status, bad_id = await call(daemon, huge, {"reason": "x"})
            assert (status, bad_id["field"]) == (400, "id")
            assert await daemon.json("/api/v1/exclusions") == {"exclusions": [revoked]}
            assert await daemon.json("/api/v1/exclusions?revoked=false") == {"exclusions": []}
        finally:
            assert await daemon.stop() == 0
    [row], generation = await stored_exclusions(daemon_storage)
    assert row.id == created["id"] and row.revoke_reason == "not an attack"
    assert generation == 2  # one add, one revoke: nothing else was ever written


# --- (b) a DoS window over a live outage -------------------------------------------------


async def month_to_date(daemon: DaemonProcess) -> tuple[float | None, float | None]:
    labels = {"service": "web", "window": "month_to_date"}
    return (
        await daemon.metric("probed_service_downtime_seconds", **labels),
        await daemon.metric("probed_service_excluded_seconds", **labels),
    )


async def until(daemon: DaemonProcess, what: str, test: Any) -> tuple[float, float]:
    async def check() -> tuple[float, float] | None:
        down, excluded = await month_to_date(daemon)
        assert down is not None and excluded is not None
        return (down, excluded) if test(down, excluded) else None

    found: tuple[float, float] = await wait_for(check, timeout=20, what=what)
    return found


async def test_a_dos_window_over_a_live_outage_moves_downtime_to_excluded_and_back(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with ScriptedHTTP({"site": [U] * 3}) as http:
        config = write_config(tmp_path, http.port, storage=daemon_storage)
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(lambda: http.counts.get("site", 0) >= 3, what="three passing tests")
            http.down.add("site")
            down, excluded = await until(
                daemon, "downtime to count", lambda d, e: d >= 3 * INTERVAL
            )
            assert excluded == 0.0
            status = await daemon.json("/api/v1/status")
            [outage] = next(s for s in status["services"] if s["service"] == "web")["open_outages"]
            start = datetime.fromisoformat(outage["start"]).timestamp()
            window = {"start": iso(start - 60), "end": iso(time.time() + 3600)}

            # through the API: the daemon refreshes its figures before answering
            code, flagged = await call(daemon, "/api/v1/exclusions", exclusion(**window))
            assert code == 201
            _, excluded = await until(daemon, "the API's DoS window", lambda d, e: d == 0 and e > 0)
            assert excluded >= down  # the whole outage so far, and it keeps growing
            code, _ = await call(
                daemon, f"/api/v1/exclusions/{flagged['id']}/revoke", {"reason": "not an attack"}
            )
            assert code == 200
            back, _ = await until(daemon, "downtime to come back", lambda d, e: d > 0 and e == 0)
            assert back >= down

            # through the command line, in another process, while the daemon runs
            code, out, err = await cli(
                config,
                "exclude",
                "add",
                "--service",
                "web",
                "--kind",
                "dos",
                "--start",
                window["start"],
                "--end",
                window["end"],
                "--reason",
                "SYN flood, ticket 4711",
                "--by",
                "noc",
            )
            assert code == 0, err
            assert re.fullmatch(r"[0-9]+\n", out), out  # the id alone
            cli_id = int(out)
            await until(daemon, "the CLI's DoS window", lambda d, e: d == 0 and e > 0)
            code, out, err = await cli(
                config, "exclude", "revoke", str(cli_id), "--reason", "a load test", "--by", "lead"
            )
            assert (code, out) == (0, f"revoked {cli_id}\n"), err
            await until(daemon, "downtime to come back again", lambda d, e: d > back and e == 0)

            code, live, _ = await cli(config, "exclude", "list")
            assert (code, live) == (0, "no exclusions\n")
            code, everything, _ = await cli(config, "exclude", "list", "--revoked")
            assert code == 0
            lines = everything.splitlines()
            assert len(lines) == 2
            assert lines[1].split()[0] == str(cli_id)
            assert "REVOKED" in lines[1] and "by lead: a load test" in lines[1]
            assert "SYN flood, ticket 4711" in lines[1]
            code, listed, _ = await cli(config, "exclude", "list", "--revoked", "--format", "json")
            assert [(x["id"], x["revoked"]) for x in json.loads(listed)] == [
                (flagged["id"], True),
                (cli_id, True),
            ]
        finally:
            assert await daemon.stop() == 0
    assert [e["id"] for e in daemon.events("exclusion.added")] == [flagged["id"]]


async def test_cli_refuses_a_bad_window_with_exit_2_and_writes_nothing(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    async with ScriptedHTTP() as http:
        config = write_config(tmp_path, http.port, storage=daemon_storage)
        daemon = await DaemonProcess(config).start()
        try:
            now = time.time()
            common = ["--kind", "dos", "--reason", "flood", "--start", iso(now)]
            for args, message in (
                (["--service", "mail", *common, "--end", iso(now + 60)], "--service: unknown"),
                (["--service", "web", *common, "--end", iso(now - 60)], "--end: the end must"),
                (["--all", "--service", "web", *common, "--end", iso(now + 60)], "exactly one"),
            ):
                code, out, err = await cli(config, "exclude", "add", *args)
                assert (code, out) == (2, ""), err
                assert message in err
            assert await stored_exclusions(daemon_storage) == ([], 0)
        finally:
            assert await daemon.stop() == 0


# --- (c) reports while the daemon runs --------------------------------------------------

CONTRACT_EXAMPLE = json.loads("""
{"month": "2026-10", "timezone": "UTC", "generated_at": "...",
 "services": [{
   "service": "mail", "objective": 0.995, "minimum": 0.99,
   "period_seconds": 2678400, "partial": false,
   "downtime_seconds": 180.0, "downtime_minutes": 3.0,
   "excluded_seconds": 600.0, "unmonitored_seconds": 0.0,
   "availability": 0.999933, "met": true, "credit_percent": 0,
   "outages": [{"check": "pop3", "start": "2026-10-04T10:00:00Z",
                "end": "2026-10-04T10:03:00Z", "failed_tests": 4,
                "downtime_seconds": 180.0, "excluded_seconds": 0.0,
                "reasons": ["connection refused"]}]}]}
""")
# the contract: "end is null for an open outage"; availability, met (and so the credit)
# are null for a month without tests ("status": "no data")
NULLABLE = {"minimum", "end", "availability", "met", "credit_percent"}


def assert_contract_shape(actual: Any, example: Any, path: str = "") -> None:
    """Every key of the contract's example exists in ``actual`` with the example's type."""
    if isinstance(example, dict):
        assert isinstance(actual, dict), path
        for key, value in example.items():
            assert key in actual, f"{path}.{key} is missing"
            if actual[key] is None and key in NULLABLE:
                continue
            assert_contract_shape(actual[key], value, f"{path}.{key}")
    elif isinstance(example, list):
        assert isinstance(actual, list) and actual, f"{path} is not a non-empty list"
        for n, item in enumerate(actual):
            assert_contract_shape(item, example[0], f"{path}[{n}]")
    elif isinstance(example, bool):
        assert isinstance(actual, bool), path
    elif isinstance(example, int | float):
        assert isinstance(actual, int | float) and not isinstance(actual, bool), path
    else:
        assert isinstance(actual, str), path
        if example.endswith("Z"):
            assert UTC_TIME.fullmatch(actual), (path, actual)


async def test_reports_in_every_format_while_the_daemon_runs(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    scripts = {"site": [U] * 3 + [D] * 4, "files": [U] * 2 + [D] * 3}
    async with ScriptedHTTP(scripts) as http:
        config = write_config(tmp_path, http.port, storage=daemon_storage)
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(
                lambda: all(http.counts.get(n, 0) >= len(s) + 2 for n, s in scripts.items()),
                what="both scripts to play out",
            )
            await wait_for(lambda: _all_up(daemon), what="both outages to close")
            await asyncio.sleep(0)  # the reports below run while the daemon keeps testing
            month = accounting.month_of(time.time(), "UTC")
            incidents = await _outage_ids(daemon_storage)
            await _check_month_reports(config, month)
            await _check_range_reports(config, month)
            await _check_incidents(config, incidents)
        finally:
            assert await daemon.stop() == 0


async def _all_up(daemon: DaemonProcess) -> bool:
    status = await daemon.json("/api/v1/status")
    return all(s["up"] and not s["open_outages"] for s in status["services"])


async def _outage_ids(storage: DaemonStorage) -> dict[str, int]:
    async with storage.reading() as store:
        spans = [o for service in ("web", "static") for o in await store.outages(service, WIDE)]
    assert sorted(o.check for o in spans) == ["files", "site"]
    return {o.check: o.id for o in spans if o.id is not None}


async def _report(config: Path, *args: str) -> str:
    code, out, err = await cli(config, "report", *args)
    assert code == 0, err
    return out


async def _check_month_reports(config: Path, month: str) -> None:
    document = json.loads(await _report(config, "--format", "json"))
    assert_contract_shape(document, CONTRACT_EXAMPLE)
    assert (document["month"], document["timezone"]) == (month, "UTC")
    web, static = document["services"]
    assert (web["service"], static["service"]) == ("web", "static")
    [outage] = web["outages"]
    assert (outage["check"], outage["failed_tests"]) == ("site", 4)
    assert outage["reasons"] == ["HTTP 503 Service Unavailable (expected 200)"]
    assert web["downtime_seconds"] == pytest.approx(3 * INTERVAL, abs=0.08)
    assert web["excluded_seconds"] == 0.0 and web["exclusions"] == []
    # static's outage fell inside its config maintenance window: excluded, not downtime
    assert static["downtime_seconds"] == 0.0
    assert static["excluded_seconds"] == pytest.approx(2 * INTERVAL, abs=0.08)
    [window] = static["exclusions"]
    assert (window["by"], window["kind"], window["reason"]) == (
        "config",
        "maintenance",
        "nightly cache rebuild",
    )
    assert window["revoked"] is False

    only_web = json.loads(
        await _report(config, "--month", month, "--service", "web", "--format", "json")
    )
    assert [s["service"] for s in only_web["services"]] == ["web"]

    text = await _report(config, "--format", "text")
    assert text.startswith(f"probed report {month} (UTC), generated ")
    assert "web: 1 outage" in text and "static: 1 outage" in text
    assert "static: exclusions" in text
    [config_row] = [line for line in text.splitlines() if "nightly cache rebuild" in line]
    assert config_row.split()[:3] == ["—", "static", "maintenance"] and " config " in config_row

    rows = list(csv.DictReader(io.StringIO(await _report(config, "--format", "csv"))))
    assert [r["service"] for r in rows] == ["web", "static"]
    assert tuple(rows[0]) == CSV_COLUMNS and rows[0]["outages"] == "1"

    markdown = await _report(config, "--format", "markdown")
    assert markdown.startswith(f"# probed report {month} (UTC)")
    assert "### web" in markdown and "### static" in markdown
    assert "| — | static | maintenance |" in markdown


async def _check_range_reports(config: Path, month: str) -> None:
    year, mon = accounting.parse_month(month)
    previous = f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"
    span = ("--from", previous, "--to", month)
    document = json.loads(await _report(config, *span, "--format", "json"))
    assert (document["from"], document["to"]) == (previous, month)
    assert [m["month"] for m in document["months"]] == [previous, month]
    for report in document["months"]:
        assert_contract_shape(
            report | {"services": [_with_outage(s) for s in report["services"]]}, CONTRACT_EXAMPLE
        )
    totals = {t["service"]: t for t in document["totals"]}
    assert set(totals) == {"web", "static"}
    assert {s["status"] for s in document["months"][0]["services"]} == {"no data"}
    assert "no data" not in {s["status"] for s in document["months"][1]["services"]}
    current = {s["service"]: s for s in document["months"][1]["services"]}
    for name, t in totals.items():
        assert t["months"] == 2 and t["partial"] is True
        # nothing was tested last month: the totals are this month's figures
        assert t["downtime_seconds"] == current[name]["downtime_seconds"]
        assert t["period_seconds"] == current[name]["period_seconds"]

    text = await _report(config, *span, "--service", "web")
    assert f"totals {previous} .. {month} (UTC)" in text
    assert "static" not in text
    rows = list(csv.DictReader(io.StringIO(await _report(config, *span, "--format", "csv"))))
    assert [(r["month"], r["service"]) for r in rows] == [
        (previous, "web"),
        (previous, "static"),
        (month, "web"),
        (month, "static"),
        (f"{previous}/{month}", "web"),
        (f"{previous}/{month}", "static"),
    ]
    markdown = await _report(config, *span, "--format", "markdown")
    assert markdown.startswith(f"# probed report {previous} .. {month} (UTC)\n\n## Totals")

    code, _, err = await cli(config, "report", "--month", month, *span)
    assert code == 2 and "either --month or --from/--to" in err


def _with_outage(service: dict[str, Any]) -> dict[str, Any]:
    # a month without outages has an empty list; its shape is checked elsewhere
    example = CONTRACT_EXAMPLE["services"][0]["outages"]
    return service if service["outages"] else service | {"outages": example}


async def _check_incidents(config: Path, incidents: dict[str, int]) -> None:
    site, files = incidents["site"], incidents["files"]
    text = await _report(config, "--incident", str(site))
    assert text.startswith(f"Incident {site}: service web, check site\n")
    failed = [line for line in text.splitlines() if "HTTP 503" in line]
    assert len(failed) == 4
    assert "overlapping exclusions" not in text

    markdown = await _report(config, "--incident", str(site), "--format", "markdown")
    assert markdown.startswith(f"## Credit request: incident {site}\n")
    assert "- **Service affected:** web (check `site`)" in markdown
    assert markdown.count("| HTTP 503 Service Unavailable (expected 200) |") == 4
    month = accounting.month_of(time.time(), "UTC")
    assert f"- **SLA {month} (UTC):** availability " in markdown  # what the credit is owed on

    document = json.loads(await _report(config, "--incident", str(site), "--format", "json"))
    assert (document["incident"], document["service"], document["check"]) == (site, "web", "site")
    assert document["open"] is False and UTC_TIME.fullmatch(document["end"])
    assert document["failed_tests"] == len(document["tests"]) == 4
    assert document["downtime_seconds"] == pytest.approx(3 * INTERVAL, abs=0.08)
    assert document["excluded_seconds"] == 0.0
    [billed] = document["billing_months"]
    assert billed["month"] == month and billed["objective"] == 0.995

    # the config window excludes static's outage in its evidence as in the month's figures
    excluded = json.loads(await _report(config, "--incident", str(files), "--format", "json"))
    assert excluded["downtime_seconds"] == 0.0 and excluded["excluded_seconds"] > 0
    assert [x["by"] for x in excluded["exclusions"]] == ["config"]
    markdown = await _report(config, "--incident", str(files), "--format", "markdown")
    assert "- config window `maintenance`" in markdown and "nightly cache rebuild" in markdown

    code, _, err = await cli(config, "report", "--incident", "999999")
    assert code == 1 and "no outage with id 999999" in err
