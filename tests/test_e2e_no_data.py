"""Months without tests have no figures: null in JSON, "no data" in text, CSV and
Markdown, and no availability sample in /metrics (real daemon, real store)."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from probed.core.accounting import month_of, parse_month
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for
from tests.daemon_storage import DaemonStorage
from tests.test_e2e_exclusions import cli

pytestmark = pytest.mark.e2e


def previous(month: str) -> str:
    year, mon = parse_month(month)
    return f"{year - 1}-12" if mon == 1 else f"{year}-{mon - 1:02d}"


async def test_months_without_tests_have_no_figures_anywhere(
    tmp_path: Path, daemon_storage: DaemonStorage
) -> None:
    this_month = month_of(time.time(), "UTC")
    last_month = previous(this_month)
    async with ScriptedHTTP() as http:
        config = http_config(tmp_path, http.port, ["site"], 0.2, "", daemon_storage.lines)
        daemon = await DaemonProcess(config).start()
        try:
            await wait_for(
                lambda: daemon.metric(
                    "probed_service_availability_ratio", service="web", window="month_to_date"
                ),
                what="month-to-date availability",
            )
            previous_sample = await daemon.metric(
                "probed_service_availability_ratio", service="web", window="previous_month"
            )
            previous_downtime = await daemon.metric(
                "probed_service_downtime_seconds", service="web", window="previous_month"
            )
            api = await daemon.json(f"/api/v1/report?month={last_month}")
        finally:
            assert await daemon.stop() == 0
    assert previous_sample is None  # was 1.0: "100 % available" for a month never monitored
    assert previous_downtime == 0.0
    [web] = api["services"]
    assert (web["availability"], web["met"], web["credit_percent"]) == (None, None, None)
    assert web["status"] == "no data"

    code, out, err = await cli(config, "report", "--month", last_month, "--format", "json")
    assert code == 0, err
    [web] = json.loads(out)["services"]
    assert (web["availability"], web["met"], web["status"]) == (None, None, "no data")
    code, out, _ = await cli(config, "report", "--month", "2001-01", "--format", "text")
    [row] = [line for line in out.splitlines() if line.startswith("web ")]
    assert row.split()[1:3] == ["no", "data"] and "100" not in row
    assert row.split()[-3:] == ["no", "data", "—"]  # status, then no credit
    code, out, _ = await cli(config, "report", "--month", "2001-01", "--format", "csv")
    [row] = csv.DictReader(io.StringIO(out))
    assert (row["availability"], row["met"], row["credit_percent"], row["status"]) == (
        "",
        "",
        "",
        "no data",
    )
    code, out, _ = await cli(config, "report", "--month", "2001-01", "--format", "markdown")
    [row] = [line for line in out.splitlines() if line.startswith("| web |")]
    assert "| no data |" in row and "100" not in row
    code, out, _ = await cli(
        config, "report", "--from", last_month, "--to", this_month, "--format", "json"
    )
    [totals] = json.loads(out)["totals"]
    assert totals["availability"] is not None  # this month was measured: only it counts
    assert totals["period_seconds"] < 3600
