"""Invariants of the SLA accounting, checked on generated interval sets and histories.

Endpoints are drawn from September 2026 to January 2027, epoch values in
[2**30, 2**31): there every float is a multiple of 2**-22, so lengths and
their sums are exact and the identities below hold with ``==``, not
approximately. That is the precision the accounting promises.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

from hypothesis import example, given
from hypothesis import strategies as st

from probed.core.accounting import (
    ExcludedTime,
    ExclusionSpan,
    Interval,
    OutageSpan,
    Policy,
    ServiceFigures,
    clip,
    combine,
    exact_sum,
    intersection,
    month_of,
    month_period,
    months_between,
    service_figures,
    subtract,
    total,
    union,
)

LOW, _ = month_period("2026-09", "UTC")
_, HIGH = month_period("2027-01", "UTC")
NOW = HIGH + 86400.0  # all months in range are over
MONTHS = ("2026-09", "2026-10", "2026-11", "2026-12", "2027-01")

instants = st.floats(min_value=LOW, max_value=HIGH, allow_nan=False, allow_infinity=False)
# Mostly short spans (outages last minutes), sometimes days; never a set of only long ones.
durations = st.one_of(
    st.floats(min_value=0.0, max_value=3600.0),
    st.floats(min_value=0.0, max_value=10 * 86400.0),
)


@st.composite
def intervals(draw: st.DrawFn) -> Interval:
    start = draw(instants)
    return (start, min(start + draw(durations), HIGH))


interval_sets = st.lists(intervals(), max_size=12)
# Any pair of instants, empty and reversed intervals included.
raw_interval_sets = st.lists(st.tuples(instants, instants), max_size=12)
policies = st.sampled_from(("not_downtime", "not_counted"))


@st.composite
def outage_histories(draw: st.DrawFn) -> list[OutageSpan]:
    checks = st.sampled_from(("smtp-in", "pop3", "imap", "webmail"))
    return [
        OutageSpan(draw(checks), start, end, failed_tests=2)
        for start, end in draw(st.lists(intervals(), max_size=8))
    ]


@st.composite
def exclusion_sets(draw: st.DrawFn) -> list[ExclusionSpan]:
    spans = draw(st.lists(intervals(), max_size=4))
    return [
        ExclusionSpan(
            id=i,
            service=draw(st.sampled_from(("mail", "*", "web"))),
            start=start,
            end=end,
            kind="dos",
            reason="flood",
            by="ops",
            created_at=LOW,
            revoked_at=draw(st.sampled_from((None, None, HIGH))),
        )
        for i, (start, end) in enumerate(spans)
    ]


def exact_length(spans: Sequence[Interval]) -> Fraction:
    return sum((Fraction(e) - Fraction(s) for s, e in spans if e > s), Fraction(0))


def figures_for(
    month: str,
    outages: Sequence[OutageSpan],
    exclusions: Sequence[ExclusionSpan] = (),
    *,
    excluded_time: ExcludedTime = "not_downtime",
    coverage: Sequence[Interval] = ((LOW, NOW),),  # monitored throughout unless told
    first_test_at: float | None = LOW,
    now: float = NOW,
) -> ServiceFigures:
    return service_figures(
        service="mail",
        policy=Policy(objective=0.995, excluded_time=excluded_time),
        month=month,
        tz="UTC",
        outages=outages,
        exclusions=exclusions,
        coverage=coverage,
        first_test_at=first_test_at,
        now=now,
    )


def live_windows(exclusions: Sequence[ExclusionSpan]) -> list[Interval]:
    return [(x.start, x.end) for x in exclusions if x.live and x.applies_to("mail")]


# --- interval algebra -------------------------------------------------------------


@given(raw_interval_sets)
def test_union_is_sorted_disjoint_and_not_touching(spans: list[Interval]) -> None:
    merged = union(spans)
    assert all(s < e for s, e in merged)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(merged))
    assert union(merged) == merged


@given(raw_interval_sets)
def test_union_covers_every_input_and_nothing_more(spans: list[Interval]) -> None:
    merged = union(spans)
    for s, e in spans:
        if s < e:
            assert any(ms <= s and e <= me for ms, me in merged)
    starts, ends = {s for s, _ in spans}, {e for _, e in spans}
    assert all(ms in starts and me in ends for ms, me in merged)


@given(raw_interval_sets)
def test_union_is_never_longer_than_the_sum(spans: list[Interval]) -> None:
    assert total(spans) <= float(exact_length(spans))


@given(interval_sets, interval_sets)
def test_subtract_and_intersection_partition_the_first_set(
    a: list[Interval], b: list[Interval]
) -> None:
    outside, inside = subtract(a, b), intersection(a, b)
    assert total(outside) + total(inside) == total(a)
    assert union(outside + inside) == union(a)
    assert intersection(outside, inside) == []
    assert intersection(outside, b) == []


@given(interval_sets, interval_sets)
def test_intersection_is_symmetric(a: list[Interval], b: list[Interval]) -> None:
    assert intersection(a, b) == intersection(b, a)


@given(interval_sets)
def test_subtracting_a_set_from_itself_leaves_nothing(a: list[Interval]) -> None:
    assert subtract(a, a) == []


@given(interval_sets, instants, instants, instants)
def test_splitting_a_period_at_any_point_never_changes_the_total(
    spans: list[Interval], x: float, y: float, z: float
) -> None:
    start, split, end = sorted((x, y, z))
    whole = total(clip(spans, (start, end)))
    assert total(clip(spans, (start, split))) + total(clip(spans, (split, end))) == whole


# --- service figures --------------------------------------------------------------


@given(outage_histories(), exclusion_sets(), st.sampled_from(MONTHS), policies)
def test_availability_stays_between_zero_and_one(
    outages: list[OutageSpan],
    exclusions: list[ExclusionSpan],
    month: str,
    excluded_time: ExcludedTime,
) -> None:
    figures = figures_for(month, outages, exclusions, excluded_time=excluded_time)
    if figures.period_seconds > 0:
        assert figures.availability is not None
        assert 0.0 <= figures.availability <= 1.0
    else:  # all of it excluded under not_counted: nothing measured, no figure
        assert (figures.availability, figures.met, figures.status) == (None, None, "no data")
    assert 0.0 <= figures.downtime_seconds <= figures.period_seconds


@given(outage_histories(), exclusion_sets(), intervals(), st.sampled_from(MONTHS), policies)
def test_an_exclusion_never_increases_downtime(
    outages: list[OutageSpan],
    exclusions: list[ExclusionSpan],
    extra: Interval,
    month: str,
    excluded_time: ExcludedTime,
) -> None:
    added = ExclusionSpan(99, "mail", extra[0], extra[1], "dos", "flood", "ops", LOW)
    before = figures_for(month, outages, exclusions, excluded_time=excluded_time)
    after = figures_for(month, outages, [*exclusions, added], excluded_time=excluded_time)
    assert after.downtime_seconds <= before.downtime_seconds
    assert after.excluded_seconds >= before.excluded_seconds


@given(outage_histories(), exclusion_sets(), intervals(), st.sampled_from(MONTHS))
def test_an_exclusion_never_lowers_availability_when_the_period_stays_whole(
    outages: list[OutageSpan], exclusions: list[ExclusionSpan], extra: Interval, month: str
) -> None:
    # Only for not_downtime: with not_counted an exclusion over uptime shrinks
    # the period and so can lower availability, which is how Zabbix behaves.
    added = ExclusionSpan(99, "*", extra[0], extra[1], "maintenance", "window", "ops", LOW)
    before = figures_for(month, outages, exclusions)
    after = figures_for(month, outages, [*exclusions, added])
    assert before.availability is not None and after.availability is not None
    assert after.availability >= before.availability


@given(outage_histories(), exclusion_sets(), st.sampled_from(MONTHS), intervals(), policies)
@example(  # found by hypothesis: the only tested second lies inside a DoS window
    outages=[],
    exclusions=[ExclusionSpan(1, "*", LOW + 990, LOW + 1010, "dos", "flood", "ops", LOW)],
    month="2026-09",
    tested=(LOW + 1000, LOW + 1001),
    excluded_time="not_counted",
)
def test_a_month_without_tests_has_no_figures_never_a_full_availability(
    outages: list[OutageSpan],
    exclusions: list[ExclusionSpan],
    month: str,
    tested: Interval,
    excluded_time: ExcludedTime,
) -> None:
    # Tested only in ``tested``, with the outages that fall inside it: a month that
    # neither ``tested`` nor an outage reaches has no figure at all.
    inside = [o for o in outages if tested[0] <= o.start and o.end <= tested[1]]
    figures = figures_for(month, inside, exclusions, excluded_time=excluded_time, coverage=[tested])
    start, end = month_period(month, "UTC")
    # Under not_counted, tested time inside a live exclusion is not part of the
    # period: a month whose only tests were all excluded has measured nothing.
    removed = live_windows(exclusions) if excluded_time == "not_counted" else []
    counted_tests = subtract(intersection([tested], [(start, end)]), removed)
    reached = total(counted_tests) > 0 or any(min(o.end, end) > max(o.start, start) for o in inside)
    if not reached or figures.period_seconds == 0:
        assert figures.availability is None
        assert (figures.met, figures.below_minimum, figures.credit_percent) == (None, None, None)
        assert figures.status == "no data"
    else:
        assert figures.availability is not None and figures.status != "no data"
    assert (figures.availability is None) == (figures.met is None)


@given(outage_histories(), exclusion_sets(), st.sampled_from(MONTHS), policies)
def test_downtime_plus_uptime_is_the_period(
    outages: list[OutageSpan],
    exclusions: list[ExclusionSpan],
    month: str,
    excluded_time: ExcludedTime,
) -> None:
    figures = figures_for(month, outages, exclusions, excluded_time=excluded_time)
    window = (figures.period_start, figures.period_end)
    excluded = live_windows(exclusions)
    counted = subtract([window], excluded) if excluded_time == "not_counted" else [window]
    down = subtract([(o.start, o.end) for o in outages], excluded)
    uptime = total(subtract(counted, down))
    assert figures.downtime_seconds + uptime == figures.period_seconds


@given(outage_histories(), exclusion_sets(), st.sampled_from(MONTHS), policies)
def test_downtime_plus_excluded_is_all_outage_time_in_the_period(
    outages: list[OutageSpan],
    exclusions: list[ExclusionSpan],
    month: str,
    excluded_time: ExcludedTime,
) -> None:
    figures = figures_for(month, outages, exclusions, excluded_time=excluded_time)
    window = (figures.period_start, figures.period_end)
    in_period = total(clip([(o.start, o.end) for o in outages], window))
    assert figures.downtime_seconds + figures.excluded_seconds == in_period


@given(outage_histories(), exclusion_sets(), st.sampled_from(MONTHS))
def test_each_outage_is_at_most_the_service_downtime_and_together_at_least(
    outages: list[OutageSpan], exclusions: list[ExclusionSpan], month: str
) -> None:
    figures = figures_for(month, outages, exclusions)
    shares = [row.downtime_seconds for row in figures.outages]
    assert all(share <= figures.downtime_seconds for share in shares)
    assert float(sum(map(Fraction, shares), Fraction(0))) >= figures.downtime_seconds


@given(outage_histories(), exclusion_sets(), policies)
def test_splitting_into_months_never_changes_the_total(
    outages: list[OutageSpan], exclusions: list[ExclusionSpan], excluded_time: ExcludedTime
) -> None:
    months = [figures_for(m, outages, exclusions, excluded_time=excluded_time) for m in MONTHS]
    totals = combine(months)
    whole = (LOW, HIGH)
    down = subtract(clip([(o.start, o.end) for o in outages], whole), live_windows(exclusions))
    assert totals.downtime_seconds == total(down)
    assert sum(row.downtime_seconds for m in months for row in m.outages) >= totals.downtime_seconds


@given(outage_histories(), st.sampled_from(MONTHS), raw_interval_sets, instants)
def test_unmonitored_time_is_within_the_period(
    outages: list[OutageSpan], month: str, coverage: list[Interval], first_test_at: float
) -> None:
    figures = figures_for(month, outages, coverage=coverage, first_test_at=first_test_at)
    assert 0.0 <= figures.unmonitored_seconds <= figures.period_seconds


@given(outage_histories(), st.sampled_from(MONTHS), instants)
def test_period_runs_from_the_later_of_month_start_and_first_test_to_now(
    outages: list[OutageSpan], month: str, now: float
) -> None:
    start, end = month_period(month, "UTC")
    figures = figures_for(month, outages, first_test_at=LOW, now=now)
    assert figures.period_end == min(max(now, start), end)
    assert figures.period_seconds == figures.period_end - figures.period_start
    assert figures.error_budget_seconds == 0.005 * (end - start)


# --- calendar months ----------------------------------------------------------------

zones = st.sampled_from(
    ("UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago")
)
months = st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(1970, 2100), st.integers(1, 12))


@given(months, zones)
def test_consecutive_months_meet_without_gap_or_overlap(month: str, tz: str) -> None:
    start, end = month_period(month, tz)
    year, mon = map(int, month.split("-"))
    following = f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"
    assert month_period(following, tz)[0] == end
    assert 27 * 86400 < end - start < 32 * 86400


@given(months, zones)
def test_every_instant_of_a_month_maps_back_to_it(month: str, tz: str) -> None:
    start, end = month_period(month, tz)
    assert month_of(start, tz) == month
    assert month_of(math.nextafter(end, start), tz) == month
    assert month_of(end, tz) != month


@given(months, months)
def test_months_between_counts_every_month_once(first: str, last: str) -> None:
    first, last = sorted((first, last))
    span = months_between(first, last)
    (y1, m1), (y2, m2) = (tuple(map(int, m.split("-"))) for m in (first, last))
    assert len(span) == 12 * (y2 - y1) + (m2 - m1) + 1
    assert span == sorted(set(span))
    assert (span[0], span[-1]) == (first, last)


@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300))
)
@example([1e300, 1.0, -1e300, 2**-1074])
@example([0.1, 0.2, 0.3, -0.6])
def test_exact_sum_is_the_sum_of_the_exact_values(terms: list[float]) -> None:
    """The fsum rounds behind lengths give exactly what summing Fractions gives."""
    assert exact_sum(list(terms)) == sum((Fraction(x) for x in terms), Fraction(0))
