"""Outage detection: the failure-run rules, incremental and batch."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from probed.core.outages import Tracker, detect_outages


def test_single_failed_test_is_not_downtime() -> None:
    tests = [(0.0, True, ""), (60.0, False, "refused"), (120.0, True, "")]
    assert detect_outages("c", tests, 2) == []


def test_three_failures_then_pass_is_one_outage_of_two_minutes() -> None:
    # sla-rules.md: failed at 10:00, 10:01, 10:02, a pass at 10:03 -> 10:00 to 10:02
    tests = [(0.0, False, "a"), (60.0, False, "b"), (120.0, False, "b"), (180.0, True, "")]
    [outage] = detect_outages("c", tests, 2)
    assert (outage.start, outage.end, outage.failed_tests, outage.open) == (0.0, 120.0, 3, False)
    assert outage.reasons == ("a", "b")


def test_open_outage_reaches_its_latest_failed_test() -> None:
    [outage] = detect_outages("c", [(0.0, False, "x"), (60.0, False, "x"), (120.0, False, "x")], 2)
    assert outage.open and outage.end == 120.0


def test_threshold_three_needs_three_failures() -> None:
    tests = [(0.0, False, ""), (60.0, False, ""), (120.0, True, "")]
    assert detect_outages("c", tests, 3) == []


def test_tracker_emits_opened_extended_closed() -> None:
    tracker = Tracker(2)
    kinds = [
        c.kind if c else None
        for c in (
            tracker.observe(t, ok)
            for t, ok in [(0, False), (1, False), (2, False), (3, True), (4, True)]
        )
    ]
    assert kinds == [None, "opened", "extended", "closed", None]


verdicts = st.lists(st.booleans(), max_size=60)


@given(verdicts, st.integers(min_value=1, max_value=5))
def test_outages_are_exactly_the_long_enough_failure_runs(oks: list[bool], threshold: int) -> None:
    tests = [(float(i), ok, "r") for i, ok in enumerate(oks)]
    spans = detect_outages("c", tests, threshold)
    # reference: split into runs of failures by hand
    runs, current = [], []
    for i, ok in enumerate(oks):
        if ok:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(i)
    if current:
        runs.append(current)
    expected = [(r[0], r[-1], len(r)) for r in runs if len(r) >= threshold]
    assert [(s.start, s.end, s.failed_tests) for s in spans] == expected


@given(verdicts, st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=60))
def test_restoring_the_run_after_a_restart_changes_nothing(
    oks: list[bool], threshold: int, cut: int
) -> None:
    """A gap (restart) does not end a failure run: resuming from the saved run gives the same outages."""
    tests = [(float(i), ok, "r") for i, ok in enumerate(oks)]
    whole = detect_outages("c", tests, threshold)
    first = Tracker(threshold)
    for t, ok, r in tests[:cut]:
        first.observe(t, ok, r)
    resumed = Tracker(threshold, first.run)
    closed = []
    for t, ok, r in tests[cut:]:
        change = resumed.observe(t, ok, r)
        if change and change.kind == "closed":
            closed.append((change.run.first_at, change.run.last_at))
    # an outage is closed by the pass right after its last failed test (index end + 1)
    assert closed == [(s.start, s.end) for s in whole if not s.open and s.end + 1 >= cut]
    still_open = [s for s in whole if s.open]
    assert resumed.in_outage == bool(still_open)
    if still_open:
        assert resumed.run is not None and resumed.run.first_at == still_open[0].start
