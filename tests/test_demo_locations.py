"""``probed demo --locations 3``: a location failing alone bills nothing, two failing
together bill their overlap (docs/locations.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probed.demo.locations import INTERVAL, SCRIPT

pytestmark = pytest.mark.e2e

TOLERANCE = 0.3  # seconds: three daemons' tests drift a little from their schedules


def test_the_locations_demo_bills_only_what_two_locations_agree_on(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "probed.cli",
            "demo",
            "--locations",
            "3",
            "--workdir",
            str(tmp_path),
            "--json-report",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [web] = json.loads(report_path.read_text())["services"]
    alone, first, second = ((r.stop - 1 - r.start) * INTERVAL for r in SCRIPT)
    overlap = (SCRIPT[1].stop - SCRIPT[2].start - 1) * INTERVAL
    [outage] = web["outages"]
    assert outage["locations"] == ["fra", "par"]
    assert web["downtime_seconds"] == pytest.approx(overlap, abs=TOLERANCE)
    [advisory] = web["advisories"]
    assert advisory["location"] == "ams"
    assert advisory["downtime_seconds"] == pytest.approx(alone, abs=TOLERANCE)
    own = {loc["location"]: loc["downtime_seconds"] for loc in web["locations"]}
    assert own == pytest.approx({"ams": alone, "fra": first, "par": second}, abs=TOLERANCE)
    assert "billed nothing (1 advisories)" in done.stdout
