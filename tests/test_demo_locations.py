"""``probed demo --locations 3``: a location failing alone bills nothing, two failing
together bill their overlap (docs/locations.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from probed.core import accounting
from probed.store.base import open_store

pytestmark = pytest.mark.e2e


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
    [outage] = web["outages"]
    assert outage["locations"] == ["fra", "par"]
    [advisory] = web["advisories"]
    assert advisory["location"] == "ams"
    assert "billed nothing (1 advisories)" in done.stdout
    # the seconds come from each location's own outage as stored (a loaded machine
    # stretches the schedule): the quorum bills exactly the overlap of fra and par
    spans = asyncio.run(location_outages(tmp_path / "demo-locations.db"))
    assert {loc: len(s) for loc, s in spans.items()} == {"ams": 1, "fra": 1, "par": 1}
    length = {loc: end - start for loc, [(start, end)] in spans.items()}
    own = {loc["location"]: loc["downtime_seconds"] for loc in web["locations"]}
    assert own == pytest.approx(length, abs=1e-6)
    assert advisory["downtime_seconds"] == pytest.approx(length["ams"], abs=1e-6)
    overlap = accounting.total(accounting.intersection(spans["fra"], spans["par"]))
    assert overlap > 0
    assert web["downtime_seconds"] == pytest.approx(overlap, abs=1e-6)
    assert all(v > 0 for v in length.values())


async def location_outages(path: Path) -> dict[str, list[tuple[float, float]]]:
    store = await open_store(f"sqlite://{path}", location="reader", readonly=True)
    try:
        found: dict[str, list[tuple[float, float]]] = {}
        for o in await store.outages("web", (0.0, 4e9)):
            found.setdefault(o.location, []).append((o.start, o.end))
        return found
    finally:
        await store.close()
