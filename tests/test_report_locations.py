"""Reports with several probing locations: the billed (quorum) figures, each location's own
figures as evidence, who agreed on each outage, and the advisories (docs/contract.md)."""

from __future__ import annotations

import csv
import io
import json

from probed.core.accounting import OutageSpan, Policy, ServiceFigures
from probed.core.quorum import CheckRecords, LocationRecord, Quorum, service_figures
from probed.reports.render import (
    CSV_COLUMNS,
    LOCATION_CSV_COLUMNS,
    MonthReport,
    render_csv,
    render_json,
    render_markdown,
    render_text,
)
from tests.test_accounting import at

DAY = ((at("2026-10-04 00:00"), at("2026-10-05 00:00")),)


def location(name: str, *spans: tuple[str, str]) -> LocationRecord:
    outages = tuple(
        OutageSpan("pop3", at(s), at(e), 3, reasons=(f"{name}: refused",)) for s, e in spans
    )
    return LocationRecord(name, outages, DAY)


def report(records: list[LocationRecord], quorum: Quorum = 2) -> MonthReport:
    figures = service_figures(
        service="mail",
        policy=Policy(objective=0.995),
        month="2026-10",
        tz="UTC",
        checks=[CheckRecords("pop3", quorum, tuple(records))],
        exclusions=[],
        first_test_at=DAY[0][0],
        now=DAY[0][1],
    )
    return MonthReport("2026-10", "UTC", at("2026-10-05 00:00"), (figures,))


# sla-rules.md's worked example, plus a lone failure of C later that day.
WORKED = [
    location("A", ("2026-10-04 10:00", "2026-10-04 10:10")),
    location("B", ("2026-10-04 10:05", "2026-10-04 10:20")),
    location("C", ("2026-10-04 14:00", "2026-10-04 14:30")),
]


def service_json(r: MonthReport) -> dict[str, object]:
    [service] = json.loads(render_json(r))["services"]
    assert isinstance(service, dict)
    return service


def test_json_bills_the_quorum_and_names_who_agreed() -> None:
    service = service_json(report(WORKED))
    assert service["downtime_seconds"] == 300.0
    [outage] = service["outages"]  # type: ignore[misc]
    assert outage["locations"] == ["A", "B"]
    assert outage["start"] == "2026-10-04T10:05:00Z" and outage["end"] == "2026-10-04T10:10:00Z"
    assert outage["failed_tests"] == 6
    assert outage["location_outages"] == [
        {
            "location": "A",
            "start": "2026-10-04T10:00:00Z",
            "end": "2026-10-04T10:10:00Z",
            "failed_tests": 3,
        },
        {
            "location": "B",
            "start": "2026-10-04T10:05:00Z",
            "end": "2026-10-04T10:20:00Z",
            "failed_tests": 3,
        },
    ]


def test_json_lists_each_locations_own_figures_and_the_advisories() -> None:
    service = service_json(report(WORKED))
    locations = service["locations"]
    assert [
        (loc["location"], loc["downtime_seconds"], loc["unmonitored_seconds"], len(loc["outages"]))
        for loc in locations  # type: ignore[attr-defined]
    ] == [("A", 600.0, 0.0, 1), ("B", 900.0, 0.0, 1), ("C", 1800.0, 0.0, 1)]
    assert [loc["availability"] for loc in locations] == [0.993056, 0.989583, 0.979167]  # type: ignore[attr-defined]
    assert service["advisories"] == [
        {
            "location": "C",
            "check": "pop3",
            "start": "2026-10-04T14:00:00Z",
            "end": "2026-10-04T14:30:00Z",
            "downtime_seconds": 1800.0,
        }
    ]


def test_one_location_report_has_no_location_keys() -> None:
    alone = report([location("A", ("2026-10-04 10:00", "2026-10-04 10:10"))], quorum=1)
    service = service_json(alone)
    assert "locations" not in service and "advisories" not in service
    assert "locations" not in service["outages"][0]  # type: ignore[index]
    assert render_csv(alone).splitlines()[0] == ",".join(CSV_COLUMNS)
    assert "location" not in render_text(alone)


def test_text_shows_agreeing_locations_the_location_table_and_advisories() -> None:
    text = render_text(report(WORKED))
    assert "A 2026-10-04 10:00:00 UTC – 2026-10-04 10:10:00 UTC; B 2026-10-04 10:05:00 UTC" in text
    assert "mail: by location (evidence, not billed)" in text
    lines = text.splitlines()
    row_c = next(line for line in lines if line.strip().startswith("C ") and "%" in line)
    assert row_c.split() == ["C", "97.9166", "%", "30.00", "0.00", "0.00", "1"]
    assert "mail: advisories: location outages that never reached the quorum (not billed)" in text
    advisory = next(line for line in lines if line.strip().startswith("C  ") and "pop3" in line)
    assert "2026-10-04 14:00:00 UTC" in advisory and advisory.endswith("30.00")


def test_markdown_has_the_same_tables() -> None:
    markdown = render_markdown(report(WORKED))
    assert "By location (evidence, not billed):" in markdown
    assert "| C | pop3 | 2026-10-04 14:00:00 UTC | 2026-10-04 14:30:00 UTC | 30.00 |" in markdown


def test_csv_adds_one_evidence_row_per_location_after_the_billed_row() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(report(WORKED)))))
    assert list(rows[0]) == [*CSV_COLUMNS, *LOCATION_CSV_COLUMNS]
    assert [(r["location"], r["downtime_seconds"], r["met"]) for r in rows] == [
        ("", "300.0", "true"),
        ("A", "600.0", ""),
        ("B", "900.0", ""),
        ("C", "1800.0", ""),
    ]
    assert rows[0]["advisories"] == "1"


def _figures(r: MonthReport) -> ServiceFigures:
    return r.services[0]


def test_location_with_no_test_in_the_period_has_no_availability() -> None:
    silent = LocationRecord("D", (), ())
    f = _figures(report([*WORKED, silent]))
    assert [(loc.location, loc.availability) for loc in f.locations][-1] == ("D", None)
    assert service_json(report([*WORKED, silent]))["locations"][-1]["availability"] is None  # type: ignore[index]
