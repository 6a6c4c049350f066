"""Worked examples: figures read through the store equal the pure accounting.

Histories are written through the daemon's own Recorder
(tests/store_histories.py); the generated-histories property test is in
tests/test_store_contract.py.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import time

import pytest

from probed.core.maintenance import Window
from tests.store_engines import Engine
from tests.store_histories import (
    NY,
    SERVICE,
    Exclusion,
    assert_store_equals_pure,
    history,
    local,
)


def test_an_outage_across_new_york_midnight_into_march_is_split_at_the_boundary(
    engine: Engine,
) -> None:
    boundary = local("2026-03-01 00:00", NY)  # 05:00 UTC
    h = history(NY, {0: (boundary - 180, "UUDDDDDDUU")}, now=local("2026-04-02 00:00", NY))
    months = assert_store_equals_pure(h, engine)
    assert list(months) == ["2026-01", "2026-02", "2026-03", "2026-04"]
    feb, mar = months["2026-02"], months["2026-03"]
    assert months["2026-01"].period_seconds == 0.0  # nothing tested yet: no fake 100 %
    assert feb.partial and feb.period_seconds == 180.0  # tested only from 23:57
    assert feb.downtime_seconds == 60.0  # 23:59 .. 00:00
    assert mar.downtime_seconds == 240.0  # 00:00 .. 00:04, the last failed test
    assert not mar.partial and mar.period_seconds == 743 * 3600.0  # the DST month
    assert [o.span.failed_tests for o in mar.outages] == [6]


def test_a_revoked_exclusion_stops_counting_and_a_live_one_and_a_config_window_count(
    engine: Engine,
) -> None:
    t0 = local("2026-10-04 01:50", "UTC")  # a Sunday
    outage = {0: (t0, "U" + "D" * 30 + "U"), 1: (t0 + 30, "U" * 31)}
    dos = Exclusion(SERVICE, t0 + 60, t0 + 360, "dos", revoked=False)
    wrong = Exclusion("*", t0, t0 + 3600, "other", revoked=True)
    sunday = Window(weekday=6, start=time(2, 0), duration=600.0, reason="weekly patching")
    h = history(
        "UTC",
        outage,
        now=local("2026-10-31 00:00", "UTC"),
        exclusions=(dos, wrong),
        windows=(sunday,),
        restart_at=t0 + 15 * 60,  # the daemon restarts mid-outage: still one outage
    )
    october = assert_store_equals_pure(h, engine)["2026-10"]
    # the outage is 01:51 .. 02:20 = 29 min; DoS 01:51..01:56 and config 02:00..02:10 excluded
    assert october.excluded_seconds == 15 * 60.0
    assert october.downtime_seconds == 14 * 60.0
    assert [o.span.failed_tests for o in october.outages] == [30]
    assert [(x.by, x.live) for x in october.exclusions[:3]] == [
        ("ops", False),
        ("ops", True),
        ("config", True),
    ]


@pytest.mark.parametrize("flush", [True, False])
def test_the_running_month_counts_coverage_not_yet_flushed(engine: Engine, flush: bool) -> None:
    t0 = local("2026-11-10 12:00", "UTC")
    h = replace(history("UTC", {0: (t0, "UUUDDU"), 1: (t0, "UUUUUU")}, now=t0 + 330), flush=flush)
    november = assert_store_equals_pure(h, engine)["2026-11"]
    assert november.partial and november.period_seconds == 330.0
    assert november.unmonitored_seconds == 0.0
    assert november.downtime_seconds == 60.0
