"""``probed demo`` end to end: its report shows exactly the outages its script stages.

One run of ``python -m probed.cli demo`` (about 15 s) serves every test here:
the report JSON it writes, and the store it keeps with ``--workdir``. The
expectations come from the script itself (``probed.demo.SCENES``), so a new
scene is checked without touching this file; the first test pins the
script's shape, so the demo keeps showing every rule it is meant to show.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probed.demo import SCENES, Scene
from tests.browser import parse_strict
from tests.stored_failures import stored_failures

pytestmark = pytest.mark.e2e

# Downtime is measured between test start times; each may drift a little from
# its schedule (event-loop latency), so figures match the script within this.
TOLERANCE = 0.2  # seconds


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    workdir: Path

    def service(self, name: str) -> dict[str, Any]:
        return next(s for s in self.report["services"] if s["service"] == name)

    def outages(self, scene: Scene) -> list[dict[str, Any]]:
        outages = self.service(scene.service)["outages"]
        return [o for o in outages if o["check"] == scene.check]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    base = tmp_path_factory.mktemp("demo")
    report, workdir = base / "report.json", base / "files"
    command = [sys.executable, "-m", "probed.cli", "demo"]
    proc = subprocess.run(
        [*command, "--json-report", str(report), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    return DemoRun(proc.returncode, proc.stdout, proc.stderr, data, workdir)


def by_name(check: str) -> Scene:
    return next(s for s in SCENES if s.check == check)


def test_script_stages_every_rule_the_demo_shows() -> None:
    assert len(by_name("smtp").down) == 1  # a single failed test: no outage
    assert len(by_name("pop3").down) == 4  # an outage, downtime of 3 intervals
    assert len(by_name("imap").down) == 3 and by_name("imap").dos  # excluded as a DoS
    assert not by_name("roundtrip").down  # the mail round trip always delivers
    checks = [s.check for s in SCENES]
    assert {"smtp", "pop3", "imap", "webmail", "roundtrip", "website", "api"} <= set(checks)


def test_demo_exits_0_with_legend_live_view_and_report(demo: DemoRun) -> None:
    assert demo.returncode == 0, demo.stderr
    assert demo.stderr == ""  # no warnings, no tracebacks: the live view tells the story
    assert "The script:" in demo.stdout
    assert "live view at" in demo.stdout
    assert "probed report " in demo.stdout


def test_demo_prints_the_status_page_url_and_ends_with_the_html_report(demo: DemoRun) -> None:
    url = re.search(
        r"^status page while it runs: (http://127\.0\.0\.1:\d+/status)$", demo.stdout, re.M
    )
    assert url is not None, demo.stdout
    last = demo.stdout.rstrip().splitlines()[-1]
    assert (
        last
        == f"HTML report (outage timelines, open it in a browser): {demo.workdir / 'report.html'}"
    )
    page = (demo.workdir / "report.html").read_text(encoding="utf-8")
    parse_strict(page)
    for scene in (s for s in SCENES if s.outage):
        assert f'data-check="{scene.check}"' in page  # its outage is a bar on the timeline


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s.service}/{s.check}")
def test_live_view_marks_every_test_of_every_check(demo: DemoRun, scene: Scene) -> None:
    # the table printed last: "  mail/pop3  ........####......  up"
    row = re.search(
        rf"^  {scene.service}/{scene.check} +(\S(?: ?\S)*)  +up$", demo.stdout, re.MULTILINE
    )
    assert row is not None, demo.stdout
    marks = row.group(1).replace(" ", "")
    assert marks.count(".") >= 10  # every test, passed ones too
    if scene.outage:
        assert "#" * len(scene.down) in marks and "x" not in marks
    else:
        assert marks.count("x") == len(scene.down) and "#" not in marks


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s.service}/{s.check}")
def test_each_check_fails_the_tests_its_script_fails(demo: DemoRun, scene: Scene) -> None:
    failed = stored_failures(demo.workdir / "demo.db", scene.service, scene.check)  # raw records
    with sqlite3.connect(demo.workdir / "demo.db") as db:
        [(passes,)] = db.execute(
            "SELECT COALESCE(SUM(p.count), 0) FROM pass_runs p JOIN checks c ON c.id = p.check_id"
            " WHERE c.service = ? AND c.name = ?",
            (scene.service, scene.check),
        ).fetchall()
    assert len(failed) == len(scene.down), failed
    assert passes + sum(r.passes for r, _ in failed) > 0  # and passes the others


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: f"{s.service}/{s.check}")
def test_each_check_has_the_outage_its_script_stages(demo: DemoRun, scene: Scene) -> None:
    outages = demo.outages(scene)
    if not scene.outage:
        assert outages == []
        return
    [outage] = outages
    assert outage["failed_tests"] == len(scene.down)
    assert outage["end"] is not None  # the check recovered before the demo ended
    span = (len(scene.down) - 1) * scene.interval  # first to last failed test
    assert outage["downtime_seconds"] == pytest.approx(scene.downtime, abs=TOLERANCE)
    if scene.dos:
        assert outage["downtime_seconds"] == 0
        assert outage["excluded_seconds"] == pytest.approx(span, abs=TOLERANCE)
    else:
        assert outage["excluded_seconds"] == 0


def test_dos_window_is_flagged_and_excludes_the_imap_outage(demo: DemoRun) -> None:
    mail = demo.service("mail")
    [outage] = demo.outages(by_name("imap"))
    assert outage["excluded_seconds"] > 0 and outage["downtime_seconds"] == 0
    assert mail["excluded_seconds"] == pytest.approx(outage["excluded_seconds"], abs=1e-6)
    assert "--kind dos" in demo.stdout  # the operator's step is shown, not hidden


@pytest.mark.parametrize("service", ["mail", "web"])
def test_service_downtime_is_the_sum_of_its_scripted_outages(demo: DemoRun, service: str) -> None:
    # the script keeps a service's outages apart in time, so the union is the sum
    figures = demo.service(service)
    scenes = [s for s in SCENES if s.service == service]
    assert len(figures["outages"]) == sum(s.outage for s in scenes)
    expected = sum(s.downtime for s in scenes)
    assert figures["downtime_seconds"] == pytest.approx(expected, abs=TOLERANCE)
    assert figures["unmonitored_seconds"] == 0


def test_the_printed_exclude_command_works_on_the_kept_workdir(demo: DemoRun) -> None:
    line = next(x.strip() for x in demo.stdout.splitlines() if "probed exclude add -c" in x)
    assert f"-c {demo.workdir / 'probed-demo.yaml'} " in line
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "probed.cli",
            "exclude",
            "list",
            "-c",
            str(demo.workdir / "probed-demo.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "dos" in listed.stdout and "by demo" in listed.stdout
