"""Invariants of quorum downtime, checked on generated location histories."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from probed.core import accounting, quorum
from probed.core.accounting import Interval, Policy, ServiceFigures
from probed.core.outages import detect_outages
from probed.core.quorum import MAJORITY, CheckRecords, LocationRecord, Quorum
from tests.test_accounting_properties import LOW, MONTHS, NOW, interval_sets

NAMES = ("fra1", "ams1", "par1", "lon1")
location_sets = st.lists(interval_sets, min_size=1, max_size=4)
STEP = 600.0  # ten-minute tests keep a few dozen verdicts inside a day or two


def measure(spans: list[Interval]) -> float:
    return accounting.total(spans)


def down(sets: list[list[Interval]], k: Quorum) -> list[Interval]:
    return quorum.quorum_down(dict(zip(NAMES, sets, strict=False)), {}, k)


@given(location_sets, st.integers(min_value=1, max_value=4))
def test_raising_the_quorum_never_raises_downtime(sets: list[list[Interval]], k: int) -> None:
    lower, higher = down(sets, k), down(sets, k + 1)
    assert measure(higher) <= measure(lower)
    # Every instant down at k + 1 is down at k (closed intervals, instants included).
    assert all(any(a <= s and e <= b for a, b in lower) for s, e in higher)


@given(location_sets)
def test_quorum_one_is_the_union(sets: list[list[Interval]]) -> None:
    assert down(sets, 1) == quorum.closed_union(iv for one in sets for iv in one)


@given(location_sets)
def test_quorum_of_every_location_is_the_intersection(sets: list[list[Interval]]) -> None:
    common: list[Interval] = accounting.union(sets[0])
    for one in sets[1:]:
        common = accounting.intersection(common, one)
    assert measure(down(sets, len(sets))) == measure(common)


@given(location_sets)
def test_majority_of_locations_always_testing_is_more_than_half(sets: list[list[Interval]]) -> None:
    always = [(LOW, NOW)]
    coverage = {name: always for name in NAMES[: len(sets)]}
    majority = quorum.quorum_down(dict(zip(NAMES, sets, strict=False)), coverage, MAJORITY)
    assert majority == down(sets, len(sets) // 2 + 1)


@given(location_sets, st.integers(min_value=1, max_value=4))
def test_monitored_time_shrinks_as_the_quorum_grows(sets: list[list[Interval]], k: int) -> None:
    assert measure(quorum.monitored(sets, k + 1)) <= measure(quorum.monitored(sets, k))
    assert quorum.monitored(sets, MAJORITY) == quorum.monitored(sets, 1)


# --- histories of tests -------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> LocationRecord:
    """One location's tests of one check: verdicts every STEP seconds, with stops."""
    name = draw(st.sampled_from(NAMES))
    start = LOW + draw(st.integers(min_value=0, max_value=40 * 86400)) * 1.0
    verdicts, coverage, t = [], [], start
    for _ in range(draw(st.integers(min_value=1, max_value=4))):  # runs of the daemon
        oks = draw(st.lists(st.booleans(), min_size=1, max_size=30))
        verdicts += [(t + i * STEP, ok, "refused") for i, ok in enumerate(oks)]
        coverage.append((t, t + len(oks) * STEP))
        t += (len(oks) + draw(st.integers(min_value=0, max_value=20))) * STEP
    threshold = draw(st.integers(min_value=1, max_value=3))
    outages = detect_outages("pop3", verdicts, threshold)
    return LocationRecord(name, tuple(outages), tuple(coverage))


def billed(records: list[LocationRecord], k: Quorum, month: str) -> ServiceFigures:
    return quorum.service_figures(
        service="mail",
        policy=Policy(objective=0.995),
        month=month,
        tz="UTC",
        checks=[CheckRecords("pop3", k, tuple(records))],
        exclusions=[],
        first_test_at=LOW,
        now=NOW,
    )


@given(histories(), st.sampled_from(MONTHS), st.sampled_from([1, MAJORITY]))
def test_one_location_under_any_quorum_up_to_one_is_todays_rule(
    history: LocationRecord, month: str, k: Quorum
) -> None:
    today = accounting.service_figures(
        service="mail",
        policy=Policy(objective=0.995),
        month=month,
        tz="UTC",
        outages=history.outages,
        exclusions=[],
        coverage=history.coverage,
        first_test_at=LOW,
        now=NOW,
    )
    figures = billed([history], k, month)
    plain = tuple(replace(row, span=replace(row.span, members=())) for row in figures.outages)
    assert replace(figures, outages=plain) == today


@given(histories(), st.sampled_from([1, MAJORITY]), st.booleans())
def test_one_location_s_shortcut_gives_what_the_general_combination_does(
    history: LocationRecord, k: Quorum, renamed: bool
) -> None:
    if renamed:  # outages read under another name or location are the check's, here
        history = replace(history, outages=tuple(replace(o, check="x") for o in history.outages))
    assert quorum.check_verdict("pop3", [history], k) == quorum._combined("pop3", [history], k)


@given(st.lists(histories(), min_size=1, max_size=4), st.integers(min_value=1, max_value=4))
def test_every_location_outage_is_billed_in_a_quorum_outage_or_advised(
    records: list[LocationRecord], k: int
) -> None:
    records = [replace(r, location=f"{r.location}-{i}") for i, r in enumerate(records)]
    verdict = quorum.check_verdict("pop3", records, k)
    joined = {m for o in verdict.outages for m in o.members}
    alone = set(verdict.unreached)
    own = {replace(o, location=r.location) for r in records for o in r.outages}
    assert joined | alone == own and not joined & alone
    for outage in verdict.outages:
        assert len(outage.locations) >= k
        assert outage.failed_tests == sum(m.failed_tests for m in outage.members)


@given(st.lists(histories(), min_size=2, max_size=4), st.sampled_from(MONTHS))
def test_billed_downtime_never_exceeds_any_quorum_one_figure(
    records: list[LocationRecord], month: str
) -> None:
    records = [replace(r, location=f"{r.location}-{i}") for i, r in enumerate(records)]
    union = billed(records, 1, month)
    for k in (2, 3, MAJORITY):
        figures = billed(records, k, month)
        assert figures.downtime_seconds <= union.downtime_seconds
        assert all(f.downtime_seconds <= union.downtime_seconds for f in figures.locations)
        assert len(figures.locations) == len(records)
