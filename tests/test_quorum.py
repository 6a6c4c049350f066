"""Worked examples of quorum downtime over several locations (docs/sla-rules.md, "Several locations")."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from probed.core.accounting import Advisory, Interval, OutageSpan, Policy, ServiceFigures
from probed.core.quorum import (
    MAJORITY,
    CheckRecords,
    LocationRecord,
    Quorum,
    check_verdict,
    monitored,
    next_transition,
    ongoing,
    quorum_down,
    service_figures,
    validate,
)
from tests.test_accounting import at

MINUTE = 60.0
DAY = ("2026-10-04 00:00", "2026-10-05 00:00")  # every location tests all day unless told


def down(location: str, start: str, end: str, *, failed: int = 2, open: bool = False) -> OutageSpan:
    return OutageSpan(
        "pop3", at(start), at(end), failed, reasons=(f"refused at {location}",), open=open
    )


def record(
    location: str, *outages: OutageSpan, coverage: Sequence[tuple[str, str]] = (DAY,)
) -> LocationRecord:
    return LocationRecord(location, tuple(outages), tuple((at(s), at(e)) for s, e in coverage))


def spans(*pairs: tuple[str, str]) -> list[Interval]:
    return [(at(s), at(e)) for s, e in pairs]


def october(records: Sequence[LocationRecord], quorum: Quorum) -> ServiceFigures:
    return service_figures(
        service="mail",
        policy=Policy(objective=0.995),
        month="2026-10",
        tz="UTC",
        checks=[CheckRecords("pop3", quorum, tuple(records))],
        exclusions=[],
        first_test_at=at("2026-10-04 00:00"),
        now=at("2026-10-05 00:00"),
    )


# The worked example of sla-rules.md: A down 10:00-10:10, B 10:05-10:20, C up.
A = record("A", down("A", "2026-10-04 10:00", "2026-10-04 10:10"))
B = record("B", down("B", "2026-10-04 10:05", "2026-10-04 10:20", failed=4))
C = record("C")


def test_two_of_three_bill_only_the_overlap() -> None:
    verdict = check_verdict("pop3", [A, B, C], 2)
    assert [o.interval for o in verdict.outages] == spans(("2026-10-04 10:05", "2026-10-04 10:10"))
    [outage] = verdict.outages
    assert outage.locations == ("A", "B")
    assert [m.interval for m in outage.members] == spans(
        ("2026-10-04 10:00", "2026-10-04 10:10"), ("2026-10-04 10:05", "2026-10-04 10:20")
    )
    assert outage.failed_tests == 6
    assert outage.reasons == ("refused at A", "refused at B")
    assert verdict.unreached == ()


def test_quorum_one_is_the_union_and_quorum_three_is_never() -> None:
    assert [o.interval for o in check_verdict("pop3", [A, B, C], 1).outages] == spans(
        ("2026-10-04 10:00", "2026-10-04 10:20")
    )
    assert check_verdict("pop3", [A, B, C], 3).outages == ()


def test_worked_example_bills_five_minutes_and_shows_each_location() -> None:
    figures = october([A, B, C], 2)
    assert figures.downtime_seconds == 5 * MINUTE
    assert [(f.location, f.downtime_seconds) for f in figures.locations] == [
        ("A", 10 * MINUTE),
        ("B", 15 * MINUTE),
        ("C", 0.0),
    ]
    assert [f.availability for f in figures.locations] == [
        1 - 600 / 86400,
        1 - 900 / 86400,
        1.0,
    ]
    assert [row.span.locations for row in figures.outages] == [("A", "B")]
    assert figures.advisories == ()


def test_a_location_failing_alone_bills_nothing_and_is_an_advisory() -> None:
    figures = october([A, record("B"), C], 2)
    assert figures.downtime_seconds == 0.0
    assert figures.outages == ()
    assert figures.advisories == (
        Advisory("A", "pop3", at("2026-10-04 10:00"), at("2026-10-04 10:10"), 10 * MINUTE),
    )
    assert figures.locations[0].downtime_seconds == 10 * MINUTE


def test_majority_with_one_location_stopped_counts_the_locations_still_testing() -> None:
    # C stops at 10:00. Before that, 2 of 3 down is a majority; after it, A alone
    # is 1 of 2 (not a majority) and A with B is 2 of 2.
    a = record(
        "A",
        down("A", "2026-10-04 09:50", "2026-10-04 09:55"),
        down("A", "2026-10-04 11:00", "2026-10-04 11:10"),
        down("A", "2026-10-04 12:00", "2026-10-04 12:10"),
    )
    b = record(
        "B",
        down("B", "2026-10-04 09:50", "2026-10-04 09:55"),
        down("B", "2026-10-04 12:05", "2026-10-04 12:30"),
    )
    c = record("C", coverage=[("2026-10-04 00:00", "2026-10-04 10:00")])
    verdict = check_verdict("pop3", [a, b, c], MAJORITY)
    assert [o.interval for o in verdict.outages] == spans(
        ("2026-10-04 09:50", "2026-10-04 09:55"), ("2026-10-04 12:05", "2026-10-04 12:10")
    )
    assert [(o.location, o.start) for o in verdict.unreached] == [("A", at("2026-10-04 11:00"))]
    # Monitored whenever one location tests: C stopping leaves nothing unmonitored.
    assert october([a, b, c], MAJORITY).unmonitored_seconds == 0.0


def test_majority_lets_the_only_location_still_testing_decide_alone() -> None:
    a = record("A", down("A", "2026-10-04 11:00", "2026-10-04 11:10"))
    b = record("B", coverage=[("2026-10-04 00:00", "2026-10-04 10:00")])
    assert [o.interval for o in check_verdict("pop3", [a, b], MAJORITY).outages] == spans(
        ("2026-10-04 11:00", "2026-10-04 11:10")
    )


def test_a_gap_inside_a_location_outage_stays_inside_it_under_majority() -> None:
    # A crashed at 10:02 mid-outage and came back at 10:08 still failing.
    a = record(
        "A",
        down("A", "2026-10-04 10:00", "2026-10-04 10:10"),
        coverage=[
            ("2026-10-04 00:00", "2026-10-04 10:02"),
            ("2026-10-04 10:08", "2026-10-05 00:00"),
        ],
    )
    assert quorum_down(
        {"A": [o.interval for o in a.outages]}, {"A": a.coverage}, MAJORITY
    ) == spans(("2026-10-04 10:00", "2026-10-04 10:10"))


def test_unmonitored_while_fewer_than_k_locations_test() -> None:
    a = record("A")
    b = record(
        "B",
        coverage=[
            ("2026-10-04 00:00", "2026-10-04 10:00"),
            ("2026-10-04 11:00", "2026-10-05 00:00"),
        ],
    )
    c = record("C", coverage=[("2026-10-04 00:00", "2026-10-04 10:30")])
    assert october([a, b, c], 2).unmonitored_seconds == 30 * MINUTE
    assert october([a, b, c], 3).unmonitored_seconds == 14 * 60 * MINUTE
    assert october([a, b, c], 1).unmonitored_seconds == 0.0
    assert monitored([a.coverage, b.coverage, c.coverage], 4) == []


def test_open_quorum_outage_stays_open_while_enough_outages_are_open() -> None:
    a = record("A", down("A", "2026-10-04 10:00", "2026-10-04 10:10", open=True))
    b_open = record("B", down("B", "2026-10-04 10:05", "2026-10-04 10:09", open=True))
    b_closed = record("B", down("B", "2026-10-04 10:05", "2026-10-04 10:09"))
    assert [o.open for o in check_verdict("pop3", [a, b_open], 2).outages] == [True]
    assert [o.open for o in check_verdict("pop3", [a, b_closed], 2).outages] == [False]


def test_one_failed_test_outage_of_one_location_is_kept_as_an_instant() -> None:
    # failures_to_down 1: an outage of a single failed test has no length but is listed.
    single = OutageSpan("pop3", at("2026-10-04 10:00"), at("2026-10-04 10:00"), 1, id=7)
    [outage] = check_verdict("pop3", [record("A", single)], 1).outages
    assert (outage.interval, outage.failed_tests, outage.id) == (single.interval, 1, 7)


def test_quorum_outage_takes_the_id_of_its_earliest_location_outage() -> None:
    a = record("A", OutageSpan("pop3", at("2026-10-04 10:00"), at("2026-10-04 10:10"), 3, id=12))
    b = record("B", OutageSpan("pop3", at("2026-10-04 10:05"), at("2026-10-04 10:20"), 3, id=9))
    assert [o.id for o in check_verdict("pop3", [a, b], 2).outages] == [12]


def test_one_location_has_no_location_table() -> None:
    assert october([A], 1).locations == ()
    assert october([A], 1).downtime_seconds == 10 * MINUTE


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "half", None])
def test_a_quorum_is_a_whole_number_or_majority(bad: object) -> None:
    with pytest.raises(ValueError, match="whole number >= 1 or majority"):
        validate(bad)
    assert validate(3) == 3 and validate("majority") == MAJORITY


def test_majority_outage_closes_when_a_closed_outage_leaves_no_majority() -> None:
    # 3 of 4 down is a majority; C passing at 10:09 leaves 2 of 4 down, which is not.
    a = record("A", down("A", "2026-10-04 10:00", "2026-10-04 10:10", open=True))
    b = record("B", down("B", "2026-10-04 10:00", "2026-10-04 10:10", open=True))
    c = record("C", down("C", "2026-10-04 10:05", "2026-10-04 10:09"))
    [outage] = check_verdict("pop3", [a, b, c, record("D")], MAJORITY).outages
    assert outage.interval == (at("2026-10-04 10:05"), at("2026-10-04 10:09"))
    assert not outage.open
    c_open = record("C", down("C", "2026-10-04 10:05", "2026-10-04 10:09", open=True))
    assert [
        o.open for o in check_verdict("pop3", [a, b, c_open, record("D")], MAJORITY).outages
    ] == [True]


def test_each_quorum_transition_has_one_key_that_only_one_daemon_can_claim() -> None:
    told: set[str] = set()

    def daemon_sees(down: bool) -> str | None:
        decided = next_transition(told, "pop3", down)
        if decided is None or decided[1] in told:  # the store's unique key: first claim wins
            return None
        told.add(decided[1])
        return decided[0]

    # a, b and c all see the quorum reached, then all see it gone, twice over
    assert [daemon_sees(True) for _ in "abc"] == ["opened", None, None]
    assert [daemon_sees(True) for _ in "abc"] == [None, None, None]
    assert [daemon_sees(False) for _ in "abc"] == ["closed", None, None]
    assert [daemon_sees(True) for _ in "abc"] == ["opened", None, None]
    assert sorted(told) == ["pop3/closed/1", "pop3/opened/1", "pop3/opened/2"]
    assert next_transition(told, "smtp", False) is None
    assert next_transition(told, "pop3", False) == ("closed", "pop3/closed/2")


def test_the_ongoing_quorum_outage_is_the_open_one() -> None:
    a = record("A", down("A", "2026-10-04 10:00", "2026-10-04 10:10", open=True))
    b = record("B", down("B", "2026-10-04 10:05", "2026-10-04 10:09", open=True))
    verdict = check_verdict("pop3", [a, b, C], 2)
    assert ongoing(verdict) == verdict.outages[0]
    assert ongoing(check_verdict("pop3", [A, B, C], 2)) is None
