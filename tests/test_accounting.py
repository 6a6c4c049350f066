"""Worked examples of the SLA accounting (docs/sla-rules.md), each figure checked exactly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from probed.core.accounting import (
    CreditTier,
    ExcludedTime,
    ExclusionSpan,
    Interval,
    OutageSpan,
    Policy,
    ServiceFigures,
    clip,
    combine,
    intersection,
    month_of,
    month_period,
    months_between,
    parse_month,
    service_figures,
    subtract,
    total,
    union,
)

HOUR = 3600.0
OCTOBER_2026 = 31 * 24 * HOUR  # 2678400 s, the contract's period_seconds


def at(text: str) -> float:
    """``"2026-10-04 10:00"`` (UTC) as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def outage(
    check: str,
    start: str,
    end: str,
    failed_tests: int = 2,
    *,
    reasons: tuple[str, ...] = (),
    open: bool = False,
) -> OutageSpan:
    return OutageSpan(check, at(start), at(end), failed_tests, reasons=reasons, open=open)


def exclusion(
    start: str, end: str, *, service: str = "mail", id: int = 1, revoked: bool = False
) -> ExclusionSpan:
    return ExclusionSpan(
        id=id,
        service=service,
        start=at(start),
        end=at(end),
        kind="dos",
        reason="SYN flood",
        by="ops",
        created_at=at("2026-11-02 09:00"),
        revoked_at=at("2026-11-03 09:00") if revoked else None,
        revoked_by="lead" if revoked else None,
        revoke_reason="not a DoS after all" if revoked else None,
    )


MAIL_POLICY = Policy(
    objective=0.995,
    minimum=0.99,
    credits=(CreditTier(below=0.995, percent=5), CreditTier(below=0.99, percent=10)),
)


def october(
    outages: Sequence[OutageSpan] = (),
    exclusions: Sequence[ExclusionSpan] = (),
    *,
    policy: Policy = MAIL_POLICY,
    coverage: Sequence[Interval] | None = None,
    first_test_at: float | None = 0.0,
    now: float | None = None,
    month: str = "2026-10",
    tz: str = "UTC",
) -> ServiceFigures:
    """The mail service's figures for a finished month, fully monitored unless told."""
    return service_figures(
        service="mail",
        policy=policy,
        month=month,
        tz=tz,
        outages=outages,
        exclusions=exclusions,
        coverage=[(0.0, at("2100-01-01 00:00"))] if coverage is None else coverage,
        first_test_at=first_test_at,
        now=at("2027-01-01 00:00") if now is None else now,
    )


def with_downtime(seconds: float, policy: Policy = MAIL_POLICY) -> ServiceFigures:
    start = at("2026-10-04 10:00")
    return october([OutageSpan("pop3", start, start + seconds, 5)], policy=policy)


# --- interval arithmetic ---------------------------------------------------------


def test_union_merges_overlapping_and_touching_intervals() -> None:
    assert union([(5.0, 8.0), (0.0, 2.0), (1.0, 3.0), (3.0, 4.0)]) == [(0.0, 4.0), (5.0, 8.0)]


def test_union_drops_empty_and_reversed_intervals() -> None:
    assert union([(2.0, 2.0), (5.0, 1.0), (0.0, 1.0)]) == [(0.0, 1.0)]


def test_intersection_keeps_only_common_time() -> None:
    a = [(0.0, 10.0), (20.0, 30.0)]
    assert intersection(a, [(5.0, 25.0)]) == [(5.0, 10.0), (20.0, 25.0)]
    assert intersection(a, [(10.0, 20.0)]) == []


def test_subtract_cuts_holes_and_trims_ends() -> None:
    assert subtract([(0.0, 10.0)], [(2.0, 3.0), (5.0, 6.0), (9.0, 12.0)]) == [
        (0.0, 2.0),
        (3.0, 5.0),
        (6.0, 9.0),
    ]


def test_subtract_one_cut_spanning_several_intervals() -> None:
    assert subtract([(0.0, 10.0), (20.0, 30.0)], [(5.0, 25.0)]) == [(0.0, 5.0), (25.0, 30.0)]


def test_total_counts_overlapping_time_once() -> None:
    assert total([(0.0, 10.0), (5.0, 15.0), (15.0, 16.0)]) == 16.0


def test_clip_keeps_the_part_inside_the_window() -> None:
    assert clip([(0.0, 10.0), (12.0, 20.0)], (5.0, 15.0)) == [(5.0, 10.0), (12.0, 15.0)]


# --- months --------------------------------------------------------------------


def test_parse_month_reads_year_and_month() -> None:
    assert parse_month("2026-10") == (2026, 10)


@pytest.mark.parametrize(
    "text",
    ["2026-13", "2026-00", "2026-1", "26-10", "2026/10", "2026-10-01", " 2026-10", "2026-10\n"],
)
def test_parse_month_rejects_anything_but_yyyy_mm(text: str) -> None:
    with pytest.raises(ValueError, match="2026-10"):
        parse_month(text)


def test_parse_month_rejects_non_ascii_digits() -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month("٢٠٢٦-١٠")


def test_october_2026_in_utc_is_31_days() -> None:
    start, end = month_period("2026-10", "UTC")
    assert (start, end) == (at("2026-10-01 00:00"), at("2026-11-01 00:00"))
    assert end - start == OCTOBER_2026


def test_new_york_march_2026_is_743_hours() -> None:
    start, end = month_period("2026-03", "America/New_York")
    assert (end - start) / HOUR == 743
    assert start == at("2026-03-01 05:00")  # EST midnight
    assert end == at("2026-04-01 04:00")  # EDT midnight


def test_new_york_november_2026_is_721_hours() -> None:
    # 30 days plus the hour repeated when clocks fall back on 1 November.
    start, end = month_period("2026-11", "America/New_York")
    assert (end - start) / HOUR == 721


def test_berlin_october_2026_is_745_hours() -> None:
    start, end = month_period("2026-10", "Europe/Berlin")
    assert (end - start) / HOUR == 745
    assert start == at("2026-09-30 22:00")


def test_month_period_rejects_an_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        month_period("2026-10", "Mars/Olympus")


def test_month_boundary_instant_belongs_to_the_new_month() -> None:
    assert month_of(at("2026-11-01 00:00"), "UTC") == "2026-11"


def test_instant_just_before_midnight_belongs_to_the_old_month() -> None:
    # datetime rounds this to the microsecond, i.e. to midnight; the month must not move.
    assert month_of(math.nextafter(at("2026-11-01 00:00"), 0.0), "UTC") == "2026-10"


def test_month_of_uses_the_billing_time_zone() -> None:
    assert month_of(at("2026-10-31 23:30"), "Europe/Berlin") == "2026-11"


def test_months_between_crosses_the_year_end() -> None:
    assert months_between("2026-11", "2027-02") == ["2026-11", "2026-12", "2027-01", "2027-02"]
    assert months_between("2026-10", "2026-10") == ["2026-10"]


def test_months_between_refuses_a_reversed_range() -> None:
    with pytest.raises(ValueError, match="ends before it starts"):
        months_between("2026-10", "2026-09")


# --- worked examples from sla-rules.md ---------------------------------------------


def test_three_failed_tests_a_minute_apart_are_two_minutes_of_downtime() -> None:
    # Failed tests at 10:00, 10:01, 10:02, a pass at 10:03: downtime 10:00 to 10:02.
    figures = october([outage("pop3", "2026-10-04 10:00", "2026-10-04 10:02", failed_tests=3)])
    assert figures.downtime_seconds == 120.0
    assert figures.downtime_minutes == 2.0


def test_contract_example_month_figures() -> None:
    figures = october(
        [
            outage("pop3", "2026-10-04 10:00", "2026-10-04 10:03", 4),
            outage("smtp-in", "2026-10-09 12:00", "2026-10-09 12:10", 11),
        ],
        [exclusion("2026-10-09 11:55", "2026-10-09 12:30")],
    )
    assert figures.period_seconds == OCTOBER_2026
    assert not figures.partial
    assert figures.downtime_seconds == 180.0
    assert figures.downtime_minutes == 3.0
    assert figures.excluded_seconds == 600.0
    assert figures.unmonitored_seconds == 0.0
    assert figures.availability == 1 - 180 / OCTOBER_2026
    assert round(figures.availability, 6) == 0.999933
    assert figures.met
    assert figures.credit_percent == 0


def test_outage_across_a_month_boundary_is_split_at_midnight() -> None:
    span = outage("imap", "2026-10-31 23:50", "2026-11-01 00:10", 21)
    assert october([span]).downtime_seconds == 600.0
    november = october([span], month="2026-11")
    assert november.downtime_seconds == 600.0
    assert [row.downtime_seconds for row in november.outages] == [600.0]


def test_split_outage_pieces_add_up_to_the_whole_outage() -> None:
    # Odd sub-second test times: the two months' pieces still sum exactly.
    start, end = at("2026-10-31 23:50") + 0.1234567, at("2026-11-01 00:10") + 0.7654321
    span = OutageSpan("imap", start, end, 21)
    pieces = october([span]).downtime_seconds + october([span], month="2026-11").downtime_seconds
    assert pieces == total([(start, end)])


def test_outage_ending_exactly_at_midnight_is_not_in_the_next_month() -> None:
    span = outage("imap", "2026-10-31 23:50", "2026-11-01 00:00")
    november = october([span], month="2026-11")
    assert november.downtime_seconds == 0.0
    assert november.outages == ()


def test_overlapping_outages_of_two_checks_count_once() -> None:
    figures = october(
        [
            outage("smtp-in", "2026-10-04 10:00", "2026-10-04 10:05"),
            outage("imap", "2026-10-04 10:03", "2026-10-04 10:08"),
        ]
    )
    assert figures.downtime_seconds == 480.0
    assert [(r.span.check, r.downtime_seconds) for r in figures.outages] == [
        ("smtp-in", 300.0),
        ("imap", 300.0),
    ]


def test_exclusion_covering_part_of_an_outage_removes_only_that_part() -> None:
    figures = october(
        [outage("pop3", "2026-10-04 10:00", "2026-10-04 11:00")],
        [exclusion("2026-10-04 10:40", "2026-10-04 12:00")],
    )
    assert figures.downtime_seconds == 40 * 60
    assert figures.excluded_seconds == 20 * 60
    assert (figures.outages[0].downtime_seconds, figures.outages[0].excluded_seconds) == (
        2400.0,
        1200.0,
    )


def test_revoked_exclusion_is_ignored_but_kept_for_the_audit_trail() -> None:
    revoked = exclusion("2026-10-04 09:00", "2026-10-04 12:00", revoked=True)
    figures = october([outage("pop3", "2026-10-04 10:00", "2026-10-04 11:00")], [revoked])
    assert figures.downtime_seconds == HOUR
    assert figures.excluded_seconds == 0.0
    assert figures.exclusions == (revoked,)


def test_exclusion_of_another_service_does_not_apply() -> None:
    web = exclusion("2026-10-04 09:00", "2026-10-04 12:00", service="web")
    figures = october([outage("pop3", "2026-10-04 10:00", "2026-10-04 11:00")], [web])
    assert figures.downtime_seconds == HOUR
    assert figures.exclusions == ()


def test_exclusion_of_all_services_applies() -> None:
    everyone = exclusion("2026-10-04 09:00", "2026-10-04 12:00", service="*")
    figures = october([outage("pop3", "2026-10-04 10:00", "2026-10-04 11:00")], [everyone])
    assert figures.downtime_seconds == 0.0
    assert figures.excluded_seconds == HOUR


def test_audit_trail_lists_only_exclusions_overlapping_the_period() -> None:
    inside = exclusion("2026-10-30 23:00", "2026-11-01 00:00", id=2)
    before = exclusion("2026-09-30 23:00", "2026-10-01 00:00", id=1)
    assert october([], [inside, before]).exclusions == (inside,)


def test_first_test_inside_the_month_starts_a_partial_period() -> None:
    figures = october(
        [outage("pop3", "2026-10-20 10:00", "2026-10-20 10:30")],
        first_test_at=at("2026-10-16 00:00"),
    )
    assert figures.partial
    assert figures.period_start == at("2026-10-16 00:00")
    assert figures.period_seconds == 16 * 24 * HOUR
    assert figures.availability == 1 - 1800 / (16 * 24 * HOUR)


def test_first_test_before_the_month_gives_a_whole_period() -> None:
    figures = october(first_test_at=at("2026-09-30 23:59"))
    assert not figures.partial
    assert figures.period_seconds == OCTOBER_2026


def test_service_never_tested_has_no_figures_not_full_availability() -> None:
    figures = october(first_test_at=None)
    assert figures.period_seconds == 0.0
    assert figures.partial
    assert (figures.availability, figures.met, figures.below_minimum) == (None, None, None)
    assert (figures.credit_percent, figures.status) == (None, "no data")


def test_service_first_tested_after_the_month_has_no_figures() -> None:
    figures = october(first_test_at=at("2026-11-03 00:00"))
    assert (figures.period_seconds, figures.availability, figures.partial) == (0.0, None, True)
    assert figures.status == "no data"


def test_a_month_the_daemon_was_stopped_throughout_has_no_figures() -> None:
    # Tested in September and again in November: October's 744 hours are all unmonitored.
    coverage = [
        (at("2026-09-01 00:00"), at("2026-10-01 00:00")),
        (at("2026-11-01 00:00"), at("2026-12-01 00:00")),
    ]
    figures = october(first_test_at=at("2026-09-01 00:00"), coverage=coverage)
    assert (figures.period_seconds, figures.unmonitored_seconds) == (OCTOBER_2026, OCTOBER_2026)
    assert (figures.availability, figures.status, figures.credit_percent) == (None, "no data", None)


def test_an_outage_reaching_across_a_stopped_month_is_still_billed() -> None:
    # Failing on Sep 30 and again on Nov 1 with the daemon stopped in between: a gap
    # does not end a failure run, so October is down throughout, not "no data".
    coverage = [
        (at("2026-09-01 00:00"), at("2026-10-01 00:00")),
        (at("2026-11-01 00:00"), at("2026-12-01 00:00")),
    ]
    down = outage("pop3", "2026-09-30 23:00", "2026-11-01 00:05")
    figures = october([down], first_test_at=at("2026-09-01 00:00"), coverage=coverage)
    assert (figures.availability, figures.met, figures.credit_percent) == (0.0, False, 10.0)


def test_current_month_period_ends_now() -> None:
    now = at("2026-10-11 00:00")
    figures = october([outage("pop3", "2026-10-10 23:00", "2026-10-10 23:10")], now=now)
    assert figures.period_end == now
    assert figures.period_seconds == 10 * 24 * HOUR
    assert not figures.partial
    assert figures.downtime_seconds == 600.0


def test_open_outage_counts_up_to_its_latest_failed_test() -> None:
    span = outage("pop3", "2026-10-10 23:00", "2026-10-10 23:07", 8, open=True)
    figures = october([span], now=at("2026-10-10 23:07") + 30)
    assert figures.downtime_seconds == 420.0
    assert figures.outages[0].span.open


def test_unmonitored_time_is_the_period_not_covered_by_testing() -> None:
    coverage = [(0.0, at("2026-10-05 00:00")), (at("2026-10-05 02:30"), at("2027-01-01 00:00"))]
    assert october(coverage=coverage).unmonitored_seconds == 2.5 * HOUR


def test_unmonitored_time_is_counted_inside_a_partial_period_only() -> None:
    figures = october(coverage=[], first_test_at=at("2026-10-31 00:00"))
    assert figures.unmonitored_seconds == 24 * HOUR


# --- the two exclusion policies, one worked example ----------------------------------
# October 2026 (2678400 s): a 2 h outage 10:00-12:00, a DoS window 11:00-13:00.

POLICY_EXAMPLE_OUTAGE = ("pop3", "2026-10-04 10:00", "2026-10-04 12:00")
POLICY_EXAMPLE_DOS = ("2026-10-04 11:00", "2026-10-04 13:00")


def policy_example(excluded_time: ExcludedTime) -> ServiceFigures:
    return october(
        [outage(*POLICY_EXAMPLE_OUTAGE)],
        [exclusion(*POLICY_EXAMPLE_DOS)],
        policy=Policy(objective=0.995, excluded_time=excluded_time),
    )


def test_not_downtime_policy_keeps_the_whole_month_as_period() -> None:
    figures = policy_example("not_downtime")
    assert figures.downtime_seconds == HOUR
    assert figures.excluded_seconds == HOUR
    assert figures.period_seconds == OCTOBER_2026
    assert round(figures.availability, 6) == 0.998656  # 1 - 3600 / 2678400


def test_not_counted_policy_takes_excluded_windows_out_of_the_period() -> None:
    figures = policy_example("not_counted")
    assert figures.downtime_seconds == HOUR
    assert figures.excluded_seconds == HOUR
    assert figures.period_seconds == OCTOBER_2026 - 2 * HOUR
    assert round(figures.availability, 6) == 0.998652  # 1 - 3600 / 2671200


def test_both_policies_keep_the_same_error_budget() -> None:
    budgets = {policy_example(p).error_budget_seconds for p in ("not_downtime", "not_counted")}
    assert budgets == {13392.0}


def test_not_counted_exclusion_over_uptime_still_shrinks_the_period() -> None:
    figures = october(
        exclusions=[exclusion("2026-10-20 00:00", "2026-10-21 00:00")],
        policy=Policy(objective=0.995, excluded_time="not_counted"),
    )
    assert figures.period_seconds == OCTOBER_2026 - 24 * HOUR
    assert figures.excluded_seconds == 0.0


def test_not_counted_excluded_window_is_not_unmonitored_time() -> None:
    figures = october(
        exclusions=[exclusion("2026-10-20 00:00", "2026-10-21 00:00")],
        coverage=[(0.0, at("2026-10-20 00:00")), (at("2026-10-21 00:00"), at("2027-01-01 00:00"))],
        policy=Policy(objective=0.995, excluded_time="not_counted"),
    )
    assert figures.unmonitored_seconds == 0.0


# --- objective, minimum, budget, credits ---------------------------------------------


def test_error_budget_is_the_allowed_downtime_of_the_whole_month() -> None:
    figures = with_downtime(600.0)
    assert figures.error_budget_seconds == 13392.0  # 0.5 % of 2678400
    assert figures.error_budget_remaining_seconds == 12792.0


def test_error_budget_uses_the_full_month_even_when_partial() -> None:
    figures = october(first_test_at=at("2026-10-16 00:00"))
    assert figures.error_budget_seconds == 13392.0


def test_error_budget_remaining_goes_negative_when_overspent() -> None:
    assert with_downtime(14392.0).error_budget_remaining_seconds == -1000.0


def test_availability_exactly_at_the_objective_is_met() -> None:
    assert with_downtime(13392.0).met
    assert not with_downtime(13392.0 + 1e-3).met


def test_objective_computed_from_a_percent_is_read_as_its_decimal() -> None:
    # 99.9 / 100 is 0.9990000000000001 in binary; the SLA means 0.999.
    # November has 2592000 s, so its 0.1 % budget is a whole 2592 s: spending
    # all of it lands exactly on the objective, which is met.
    policy = Policy(objective=99.9 / 100)
    start = at("2026-11-04 10:00")
    figures = october([OutageSpan("pop3", start, start + 2592, 5)], policy=policy, month="2026-11")
    assert figures.objective == 0.999
    assert figures.error_budget_seconds == 2592.0
    assert figures.error_budget_remaining_seconds == 0.0
    assert figures.met


@pytest.mark.parametrize(
    ("downtime", "credit"),
    [
        (0.0, 0),
        (13392.0, 0),  # exactly 99.5 %: not below the 99.5 tier
        (13392.0 + 60, 5),
        (26784.0, 5),  # exactly 99.0 %: below 99.5 only
        (26784.0 + 60, 10),
        (OCTOBER_2026 / 2, 10),
    ],
)
def test_credit_is_that_of_the_lowest_tier_the_availability_falls_below(
    downtime: float, credit: float
) -> None:
    assert with_downtime(downtime).credit_percent == credit


def test_credit_tiers_may_be_given_in_any_order() -> None:
    tiers = (CreditTier(below=0.99, percent=10), CreditTier(below=0.995, percent=5))
    policy = Policy(objective=0.995, credits=tiers)
    assert with_downtime(26784.0 + 60, policy).credit_percent == 10


def test_no_credit_schedule_means_no_credit() -> None:
    assert with_downtime(OCTOBER_2026 / 2, Policy(objective=0.995)).credit_percent == 0


def test_below_minimum_when_availability_falls_under_the_minimum() -> None:
    assert not with_downtime(26784.0).below_minimum
    missed = with_downtime(26784.0 + 60)
    assert missed.below_minimum
    assert not missed.met


def test_no_minimum_is_never_below_minimum() -> None:
    assert not with_downtime(OCTOBER_2026, Policy(objective=0.995)).below_minimum


def test_policy_refuses_an_objective_given_as_a_percent() -> None:
    with pytest.raises(ValueError, match=r"ratio 0\.\.1"):
        Policy(objective=99.5)


def test_policy_refuses_an_unknown_exclusion_policy() -> None:
    with pytest.raises(ValueError, match="not_downtime, not_counted"):
        Policy(objective=0.995, excluded_time="sometimes")  # type: ignore[arg-type]


def test_credit_tier_refuses_a_negative_percent() -> None:
    with pytest.raises(ValueError, match="credit percent"):
        CreditTier(below=0.99, percent=-5)


# --- per-outage figures ----------------------------------------------------------------


def test_outages_are_listed_in_start_order_with_their_own_figures() -> None:
    late = outage("imap", "2026-10-20 10:00", "2026-10-20 10:02", 3, reasons=("timeout",))
    early = outage("pop3", "2026-10-04 10:00", "2026-10-04 10:03", 4)
    figures = october([late, early])
    assert [row.span for row in figures.outages] == [early, late]
    assert [row.downtime_seconds for row in figures.outages] == [180.0, 120.0]


def test_outages_of_other_months_are_not_listed() -> None:
    figures = october([outage("pop3", "2026-09-04 10:00", "2026-09-04 10:03")])
    assert figures.outages == ()


# --- several months --------------------------------------------------------------------


def test_combine_sums_the_months_and_recomputes_availability() -> None:
    span = outage("imap", "2026-10-31 23:00", "2026-11-01 01:00")
    months = [october([span], month=m) for m in ("2026-10", "2026-11")]
    totals = combine(months)
    assert (totals.first_month, totals.last_month, totals.months) == ("2026-10", "2026-11", 2)
    assert totals.period_seconds == OCTOBER_2026 + 30 * 24 * HOUR
    assert totals.downtime_seconds == 2 * HOUR
    assert totals.availability == 1 - 2 * HOUR / totals.period_seconds
    assert totals.met


def test_combine_accepts_months_in_any_order() -> None:
    months = [october(month=m) for m in ("2026-12", "2026-10", "2026-11")]
    totals = combine(months)
    assert (totals.first_month, totals.last_month) == ("2026-10", "2026-12")


def test_combine_of_months_without_tests_has_no_figures() -> None:
    totals = combine([october(first_test_at=None), october(first_test_at=None, month="2026-11")])
    assert (totals.period_seconds, totals.availability, totals.partial) == (0.0, None, True)
    assert (totals.met, totals.status) == (None, "no data")


def test_a_month_without_tests_adds_no_period_to_a_range() -> None:
    # November measured (30 days, 1 hour down), October not: the range is November's figure.
    coverage = [(at("2026-11-01 00:00"), at("2026-12-01 00:00"))]
    down = outage("pop3", "2026-11-10 10:00", "2026-11-10 11:00")
    oct_ = october([down], first_test_at=at("2026-09-01 00:00"), coverage=coverage)
    nov = october([down], first_test_at=at("2026-09-01 00:00"), coverage=coverage, month="2026-11")
    totals = combine([oct_, nov])
    assert oct_.availability is None
    assert totals.period_seconds == 30 * 86400
    assert totals.availability == nov.availability == 1 - 3600 / (30 * 86400)


def test_combine_refuses_mixed_services() -> None:
    web = service_figures(
        service="web",
        policy=MAIL_POLICY,
        month="2026-11",
        tz="UTC",
        outages=[],
        exclusions=[],
        coverage=[],
        first_test_at=0.0,
        now=at("2027-01-01 00:00"),
    )
    with pytest.raises(ValueError, match="different services"):
        combine([october(), web])


def test_combine_refuses_a_repeated_month() -> None:
    with pytest.raises(ValueError, match="repeat a month"):
        combine([october(), october()])


def test_combine_refuses_nothing() -> None:
    with pytest.raises(ValueError, match="empty"):
        combine([])
