"""Report rendering: the contract's JSON exactly, and the text, CSV and Markdown a person reads."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from probed.core.accounting import (
    CreditTier,
    ExclusionSpan,
    OutageSpan,
    Policy,
    ServiceFigures,
    service_figures,
)
from probed.reports.render import (
    CSV_COLUMNS,
    RENDERERS,
    MonthReport,
    RangeReport,
    Report,
    iso_utc,
    render_csv,
    render_json,
    render_markdown,
    render_text,
    to_json_dict,
)

CONTRACT_SERVICE_KEYS = {
    "service",
    "objective",
    "minimum",
    "period_seconds",
    "partial",
    "downtime_seconds",
    "downtime_minutes",
    "excluded_seconds",
    "unmonitored_seconds",
    "availability",
    "met",
    "credit_percent",
    "outages",
}
ADDED_SERVICE_KEYS = {
    "status",
    "error_budget_seconds",
    "error_budget_remaining_seconds",
    "below_minimum",
    "period_start",
    "period_end",
    "exclusions",
}
CONTRACT_OUTAGE_KEYS = {
    "id",  # the contract names it; `probed report --incident ID` takes it
    "check",
    "start",
    "end",
    "failed_tests",
    "downtime_seconds",
    "excluded_seconds",
    "reasons",
}
EXCLUSION_KEYS = {
    "id",
    "service",
    "start",
    "end",
    "kind",
    "reason",
    "by",
    "created_at",
    "revoked",
    "revoked_at",
    "revoked_by",
    "revoke_reason",
}

MAIL = Policy(
    objective=0.995,
    minimum=0.99,
    credits=(CreditTier(below=0.995, percent=5), CreditTier(below=0.99, percent=10)),
)


def as_json(report: Report) -> Any:
    """The JSON as a consumer reads it (which also proves it serialises)."""
    return json.loads(render_json(report))


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


DOS = ExclusionSpan(
    id=7,
    service="mail",
    start=at("2026-10-09 11:55"),
    end=at("2026-10-09 12:30"),
    kind="dos",
    reason="SYN flood",
    by="ops",
    created_at=at("2026-10-09 13:00"),
)
REVOKED = ExclusionSpan(
    id=8,
    service="*",
    start=at("2026-10-20 00:00"),
    end=at("2026-10-20 01:00"),
    kind="maintenance",
    reason="kernel upgrade",
    by="ops",
    created_at=at("2026-10-19 09:00"),
    revoked_at=at("2026-10-21 09:00"),
    revoked_by="lead",
    revoke_reason="the window was never used",
)
POP3 = OutageSpan(
    "pop3", at("2026-10-04 10:00"), at("2026-10-04 10:03"), 4, ("connection refused",), id=17
)
SMTP = OutageSpan("smtp-in", at("2026-10-09 12:00"), at("2026-10-09 12:10"), 11, ("SMTP 421",))


def figures(
    service: str = "mail",
    outages: tuple[OutageSpan, ...] = (POP3, SMTP),
    *,
    policy: Policy = MAIL,
    month: str = "2026-10",
    tz: str = "UTC",
    first_test_at: float | None = 0.0,
    now: float | None = None,
) -> ServiceFigures:
    return service_figures(
        service=service,
        policy=policy,
        month=month,
        tz=tz,
        outages=outages,
        exclusions=(DOS, REVOKED),
        coverage=[(0.0, at("2030-01-01 00:00"))],
        first_test_at=first_test_at,
        now=at("2026-11-05 08:00") if now is None else now,
    )


def month_report(*services: ServiceFigures, month: str = "2026-10", tz: str = "UTC") -> MonthReport:
    return MonthReport(
        month=month,
        timezone=tz,
        generated_at=at("2026-11-05 08:00"),
        services=services or (figures(),),
    )


def down_for(seconds: float, service: str = "mail") -> ServiceFigures:
    start = at("2026-10-14 03:00")
    return figures(service, (OutageSpan("imap", start, start + seconds, 9),))


def range_report() -> RangeReport:
    boundary = OutageSpan("imap", at("2026-10-31 23:00"), at("2026-11-01 01:00"), 30)
    return RangeReport(
        first="2026-10",
        last="2026-11",
        timezone="UTC",
        months=tuple(
            month_report(figures(outages=(POP3, boundary), month=m), month=m)
            for m in ("2026-10", "2026-11")
        ),
    )


# --- JSON ----------------------------------------------------------------------------


def test_json_has_the_contract_keys_plus_only_the_documented_additions() -> None:
    document = as_json(month_report())
    assert list(document) == ["month", "timezone", "generated_at", "services"]
    (service,) = document["services"]
    assert set(service) == CONTRACT_SERVICE_KEYS | ADDED_SERVICE_KEYS
    assert {frozenset(o) for o in service["outages"]} == {frozenset(CONTRACT_OUTAGE_KEYS)}
    assert {frozenset(x) for x in service["exclusions"]} == {frozenset(EXCLUSION_KEYS)}


def test_json_reproduces_the_contract_example() -> None:
    document = as_json(month_report())
    assert (document["month"], document["timezone"]) == ("2026-10", "UTC")
    assert document["generated_at"] == "2026-11-05T08:00:00Z"
    (service,) = document["services"]
    contract_part = {key: service[key] for key in CONTRACT_SERVICE_KEYS - {"outages"}}
    assert contract_part == {
        "service": "mail",
        "objective": 0.995,
        "minimum": 0.99,
        "period_seconds": 2678400,
        "partial": False,
        "downtime_seconds": 180.0,
        "downtime_minutes": 3.0,
        "excluded_seconds": 600.0,
        "unmonitored_seconds": 0.0,
        "availability": 0.999933,
        "met": True,
        "credit_percent": 0,
    }
    assert service["outages"][0] == {
        "id": 17,
        "check": "pop3",
        "start": "2026-10-04T10:00:00Z",
        "end": "2026-10-04T10:03:00Z",
        "failed_tests": 4,
        "downtime_seconds": 180.0,
        "excluded_seconds": 0.0,
        "reasons": ["connection refused"],
    }


def test_json_whole_counts_are_integers_and_seconds_are_floats() -> None:
    text = render_json(month_report())
    assert '"period_seconds": 2678400,' in text
    assert '"credit_percent": 0,' in text
    assert '"downtime_seconds": 180.0,' in text


def test_json_open_outage_has_a_null_end() -> None:
    span = OutageSpan("pop3", at("2026-11-05 07:50"), at("2026-11-05 07:58"), 9, open=True)
    document = as_json(month_report(figures(outages=(span,), month="2026-11"), month="2026-11"))
    (outage,) = document["services"][0]["outages"]
    assert outage["end"] is None
    assert outage["downtime_seconds"] == 480.0


def test_json_availability_is_rounded_to_six_places() -> None:
    document = as_json(month_report(down_for(1000.0)))
    assert document["services"][0]["availability"] == 0.999627


def test_json_objective_and_minimum_are_ratios() -> None:
    service = as_json(month_report(figures(policy=Policy(objective=99.9 / 100))))["services"][0]
    assert service["objective"] == 0.999
    assert service["minimum"] is None


def test_json_times_keep_sub_second_precision() -> None:
    start = at("2026-10-04 10:00") + 0.25
    span = OutageSpan("pop3", start, start + 120, 3)
    document = as_json(month_report(figures(outages=(span,))))
    assert document["services"][0]["outages"][0]["start"] == "2026-10-04T10:00:00.250000Z"


def test_json_lists_exclusions_with_their_revocation() -> None:
    document = as_json(month_report())
    exclusions = document["services"][0]["exclusions"]
    assert exclusions[1] == {
        "id": 8,
        "service": "*",
        "start": "2026-10-20T00:00:00Z",
        "end": "2026-10-20T01:00:00Z",
        "kind": "maintenance",
        "reason": "kernel upgrade",
        "by": "ops",
        "created_at": "2026-10-19T09:00:00Z",
        "revoked": True,
        "revoked_at": "2026-10-21T09:00:00Z",
        "revoked_by": "lead",
        "revoke_reason": "the window was never used",
    }
    assert exclusions[0]["revoked"] is False


def test_json_budget_and_period_additions() -> None:
    service = as_json(month_report())["services"][0]
    assert service["error_budget_seconds"] == 13392.0
    assert service["error_budget_remaining_seconds"] == 13212.0
    assert (service["period_start"], service["period_end"]) == (
        "2026-10-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
    )
    assert service["below_minimum"] is False


def test_rendered_json_parses_back_to_the_same_document() -> None:
    report = month_report()
    assert json.loads(render_json(report)) == to_json_dict(report)


@pytest.mark.parametrize("report", [month_report(), range_report()], ids=["month", "range"])
def test_rendered_json_is_what_json_dumps_writes(report: Report) -> None:
    """The same text as the standard library's encoder with two spaces of indent."""
    expected = json.dumps(to_json_dict(report), indent=2, ensure_ascii=False) + "\n"
    assert render_json(report) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["service", "outage"])
def test_json_refuses_a_figure_that_is_not_a_number(bad: float, where: str) -> None:
    """orjson would write null; a broken figure must fail rather than read as no data."""
    f = figures()
    if where == "service":
        f = replace(f, unmonitored_seconds=bad)
    else:
        f = replace(f, outages=(replace(f.outages[0], downtime_seconds=bad), *f.outages[1:]))
    with pytest.raises(ValueError, match="mail 2026-10"):
        render_json(month_report(f))


@given(st.floats(min_value=-1e10, max_value=3e11, allow_nan=False) | st.integers(0, 2**35))
def test_iso_utc_is_what_datetime_writes(ts: float) -> None:
    """The fast path for whole seconds writes exactly what datetime.isoformat does."""
    ts = float(ts)
    try:
        moment = datetime.fromtimestamp(ts, UTC)
    except (ValueError, OverflowError, OSError):
        return  # beyond datetime's years: not an instant a store holds
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    assert iso_utc(ts) == moment.isoformat(timespec=spec).replace("+00:00", "Z")


# --- text ----------------------------------------------------------------------------


def summary_line(text: str, service: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{service} "))


def test_text_shows_each_service_with_its_figures() -> None:
    line = summary_line(render_text(month_report()), "mail")
    assert line.split() == [
        "mail",
        "99.9932",
        "%",
        "99.5",
        "%",
        "99",
        "%",
        "3.00",
        "10.00",
        "0.00",
        "full",
        "met",
        "0",
        "%",
    ]


@pytest.mark.parametrize(
    ("downtime", "status", "credit"),
    [(600.0, "met", "0 %"), (20000.0, "MISSED", "5 %"), (30000.0, "BELOW MINIMUM", "10 %")],
)
def test_text_status_says_met_missed_or_below_minimum(
    downtime: float, status: str, credit: str
) -> None:
    line = summary_line(render_text(month_report(down_for(downtime))), "mail")
    assert f"  {status}  " in line
    assert line.endswith(credit)


def test_text_availability_is_never_rounded_up_to_the_objective() -> None:
    # 13393 s of downtime misses 99.5 % by a hair: the table must not show 99.5000 %.
    line = summary_line(render_text(month_report(down_for(13393.0))), "mail")
    assert "99.4999 %" in line
    assert "MISSED" in line


def test_text_lists_outages_per_service_with_open_ones_marked() -> None:
    span = OutageSpan(
        "imap", at("2026-11-05 07:50"), at("2026-11-05 07:58"), 9, ("timeout",), True, 42
    )
    text = render_text(month_report(figures(outages=(span,), month="2026-11"), month="2026-11"))
    assert "mail: 1 outage" in text
    row = next(line for line in text.splitlines() if " imap " in line)
    assert row.split() == [
        "42",  # the id `probed report --incident` takes
        "imap",
        "2026-11-05",
        "07:50:00",
        "UTC",
        "open",
        "9",
        "8.00",
        "0.00",
        "timeout",
    ]


def test_text_marks_periods_that_are_partial_to_date_or_untested() -> None:
    report = month_report(
        figures(first_test_at=at("2026-10-16 00:00")),
        figures("web", (), now=at("2026-10-20 00:00")),
        figures("dns", (), first_test_at=None),
    )
    text = render_text(report)
    assert "  partial  " in summary_line(text, "mail")
    assert "  to date  " in summary_line(text, "web")
    assert "  no tests  " in summary_line(text, "dns")


def test_text_shows_times_in_the_billing_zone() -> None:
    report = month_report(figures(tz="America/New_York"), tz="America/New_York")
    assert "2026-10-04 06:00:00 EDT" in render_text(report)


def test_text_shows_the_exclusion_audit_trail() -> None:
    text = render_text(month_report())
    assert "mail: exclusions" in text
    assert "revoked 2026-10-21 09:00:00 UTC by lead: the window was never used" in text


# --- CSV -------------------------------------------------------------------------------


def test_csv_has_a_header_and_one_row_per_service() -> None:
    report = month_report(figures(), down_for(30000.0, service="web"))
    rows = list(csv.DictReader(io.StringIO(render_csv(report))))
    assert [row["service"] for row in rows] == ["mail", "web"]
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["availability"] == "0.999933"
    assert rows[0]["period_seconds"] == "2678400"
    assert rows[0]["met"] == "true"
    assert rows[1]["below_minimum"] == "true"
    assert rows[1]["credit_percent"] == "10"


def test_csv_leaves_an_absent_minimum_empty() -> None:
    report = month_report(figures(policy=Policy(objective=0.999)))
    (row,) = csv.DictReader(io.StringIO(render_csv(report)))
    assert row["minimum"] == ""


# --- Markdown ----------------------------------------------------------------------------


def test_markdown_has_a_summary_table_and_a_section_per_service() -> None:
    text = render_markdown(month_report())
    assert text.startswith("# probed report 2026-10 (UTC)\n")
    assert "| service | availability |" in text
    assert "| mail | 99.9932 % | 99.5 % | 99 % | 3.00 | 10.00 | 0.00 | full | met | 0 % |" in text
    assert "### mail" in text


def test_markdown_escapes_pipes_in_reasons() -> None:
    span = OutageSpan("http", at("2026-10-04 10:00"), at("2026-10-04 10:02"), 3, ("a|b\nc",))
    text = render_markdown(month_report(figures(outages=(span,))))
    assert "| a\\|b c |" in text


def test_markdown_says_when_a_service_had_no_outages() -> None:
    assert "No outages." in render_markdown(month_report(figures(outages=())))


# --- range reports --------------------------------------------------------------------


def test_range_json_has_months_and_totals() -> None:
    document = as_json(range_report())
    assert list(document) == ["from", "to", "timezone", "months", "totals"]
    assert [m["month"] for m in document["months"]] == ["2026-10", "2026-11"]
    (totals,) = document["totals"]
    assert totals["service"] == "mail"
    assert (totals["from"], totals["to"], totals["months"]) == ("2026-10", "2026-11", 2)
    assert totals["period_seconds"] == 2678400 + 4 * 86400 + 8 * 3600  # November to date
    assert totals["downtime_seconds"] == 180.0 + 7200.0
    assert totals["met"] is True
    assert "credit_percent" not in totals


def test_range_text_ends_with_the_totals() -> None:
    text = render_text(range_report())
    assert text.index("probed report 2026-10") < text.index("probed report 2026-11")
    totals = text[text.index("totals 2026-10 .. 2026-11 (UTC)") :]
    assert summary_line(totals, "mail").split()[:2] == ["mail", "2"]


def test_range_csv_has_a_row_per_month_and_a_totals_row() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(range_report()))))
    assert [row["month"] for row in rows] == ["2026-10", "2026-11", "2026-10/2026-11"]
    assert rows[-1]["downtime_seconds"] == "7380.0"
    assert rows[-1]["credit_percent"] == ""


def test_range_markdown_starts_with_the_totals() -> None:
    text = render_markdown(range_report())
    assert text.index("## Totals") < text.index("## probed report 2026-10")


def test_every_contract_format_has_a_renderer() -> None:
    assert set(RENDERERS) == {"text", "json", "csv", "markdown"}
    for render in RENDERERS.values():
        assert render(month_report()).endswith("\n")
        assert render(range_report()).endswith("\n")


def test_every_format_names_the_outage_ids_that_incident_takes() -> None:
    report = month_report()
    assert "| 17 | pop3 |" in render_markdown(report)
    (row,) = csv.DictReader(io.StringIO(render_csv(report)))
    assert row["outage_ids"].split()[0] == "17"
    assert json.loads(render_json(report))["services"][0]["outages"][0]["id"] == 17
    assert any(line.split()[:2] == ["17", "pop3"] for line in render_text(report).splitlines())
