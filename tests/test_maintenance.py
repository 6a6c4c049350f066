"""Recurring maintenance windows: config validation, DST-true expansion, figures."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probed import config as config_mod
from probed.config import ConfigError
from probed.core import accounting
from probed.core.accounting import ExclusionSpan, OutageSpan, Policy
from probed.core.maintenance import CONFIG_BY, CONFIG_ID, Window, expand, is_configured, occurrences
from probed.reports.render import MonthReport, render_json, render_text

NY = "America/New_York"
SUNDAY, MONDAY = 6, 0
H = 3600.0


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def local(text: str, tz: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


# --- expansion: worked examples ---------------------------------------------------


def test_weekly_window_stays_at_local_time_across_the_spring_dst_change() -> None:
    # New York springs forward on Sunday 2026-03-08 at 02:00; a 04:00 window moves
    # from 09:00 UTC (EST, -5) to 08:00 UTC (EDT, -4).
    w = Window(weekday=SUNDAY, start=time(4, 0), duration=H)
    got = occurrences(w, NY, (utc("2026-02-28 00:00"), utc("2026-03-16 00:00")))
    assert [(iso(a), b - a) for a, b in got] == [
        ("2026-03-01 09:00", H),
        ("2026-03-08 08:00", H),
        ("2026-03-15 08:00", H),
    ]


def test_weekly_window_in_the_fall_back_week_moves_one_hour_later_in_utc() -> None:
    w = Window(weekday=SUNDAY, start=time(4, 0), duration=H)
    got = occurrences(w, NY, (utc("2026-10-25 00:00"), utc("2026-11-09 00:00")))
    assert [iso(a) for a, _ in got] == ["2026-10-25 08:00", "2026-11-01 09:00", "2026-11-08 09:00"]


def test_a_start_skipped_by_the_dst_jump_begins_at_the_jump() -> None:
    # 02:00 does not exist on 2026-03-08 in New York: fold=0 reads it with the
    # winter offset, i.e. 07:00 UTC, which is the instant the clock jumps to 03:00.
    w = Window(weekday=SUNDAY, start=time(2, 0), duration=H)
    [(start, end)] = occurrences(w, NY, (utc("2026-03-08 00:00"), utc("2026-03-09 00:00")))
    assert iso(start) == "2026-03-08 07:00"
    assert datetime.fromtimestamp(start, ZoneInfo(NY)).strftime("%H:%M %Z") == "03:00 EDT"
    assert end - start == H  # a duration is elapsed time, not wall time


def test_a_start_that_occurs_twice_is_the_first_one() -> None:
    # 01:30 happens twice on 2026-11-01 in New York; the window starts at the first (EDT).
    w = Window(weekday=SUNDAY, start=time(1, 30), duration=H)
    [(start, _)] = occurrences(w, NY, (utc("2026-11-01 00:00"), utc("2026-11-02 00:00")))
    assert iso(start) == "2026-11-01 05:30"


def test_daily_window_crossing_midnight_reaches_into_the_next_day_and_month() -> None:
    w = Window(weekday=None, start=time(23, 30), duration=2 * H, reason="backups")
    october = accounting.month_period("2026-10", "UTC")
    spans = expand([w], service="web", tz="UTC", span=october)
    # 31 nights inside October, plus 30 September's that reaches 00:00..01:30 on Oct 1
    assert len(spans) == 32
    assert (iso(spans[0].start), iso(spans[0].end)) == ("2026-09-30 23:30", "2026-10-01 01:30")
    assert iso(spans[-1].start) == "2026-10-31 23:30"


def test_expanded_windows_are_live_config_exclusions_of_the_service() -> None:
    w = Window(weekday=MONDAY, start=time(2, 0), duration=1800, kind="maintenance", reason="patch")
    [x] = expand(
        [w], service="mail", tz="UTC", span=(utc("2026-10-05 00:00"), utc("2026-10-06 00:00"))
    )
    assert x == ExclusionSpan(
        id=CONFIG_ID,
        service="mail",
        start=utc("2026-10-05 02:00"),
        end=utc("2026-10-05 02:30"),
        kind="maintenance",
        reason="patch",
        by=CONFIG_BY,
        created_at=utc("2026-10-05 02:00"),
    )
    assert x.live and x.applies_to("mail") and not x.applies_to("web") and is_configured(x)


def test_an_empty_or_reversed_span_has_no_occurrences() -> None:
    w = Window(weekday=None, start=time(0, 0), duration=H)
    assert occurrences(w, "UTC", (utc("2026-10-05 00:00"), utc("2026-10-05 00:00"))) == []
    assert occurrences(w, "UTC", (utc("2026-10-06 00:00"), utc("2026-10-05 00:00"))) == []


# --- expansion: properties ---------------------------------------------------------

ZONES = st.sampled_from(["UTC", NY, "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kolkata"])
WINDOWS = st.builds(
    Window,
    weekday=st.none() | st.integers(0, 6),
    start=st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45])),
    duration=st.integers(60, 23 * 3600).map(float),
)
# 2025-01-01 .. 2027-12-31, whole minutes: several DST changes in every zone above
INSTANTS = st.integers(int(utc("2025-01-01 00:00")) // 60, int(utc("2027-12-31 00:00")) // 60).map(
    lambda m: m * 60.0
)


@settings(max_examples=300, deadline=None)
@given(WINDOWS, ZONES, INSTANTS, st.integers(1, 40 * 86400), st.integers(0, 40 * 86400))
def test_splitting_the_span_never_changes_the_occurrences(
    w: Window, tz: str, lo: float, first: int, second: int
) -> None:
    mid, hi = lo + first, lo + first + second
    whole = occurrences(w, tz, (lo, hi))
    parts = sorted(set(occurrences(w, tz, (lo, mid)) + occurrences(w, tz, (mid, hi))))
    assert parts == whole


@settings(max_examples=300, deadline=None)
@given(WINDOWS, ZONES, INSTANTS, st.integers(1, 30 * 86400))
def test_every_occurrence_starts_at_the_local_wall_time_on_its_weekday(
    w: Window, tz: str, lo: float, length: int
) -> None:
    zone = ZoneInfo(tz)
    found = occurrences(w, tz, (lo, lo + length))
    for start, end in found:
        assert end - start == w.duration
        assert start < lo + length and end > lo
        # Round-trip through the local calendar: the instant is the configured wall
        # time of some local day (fold=0), on the configured weekday.
        day = datetime.fromtimestamp(start, zone).date()
        candidates = {day, day - timedelta(days=1)}  # a skipped start lands after the jump
        assert any(
            datetime.combine(d, w.start, tzinfo=zone).timestamp() == start
            and (w.weekday is None or d.weekday() == w.weekday)
            for d in candidates
        )
    # One occurrence per local day (or week) in the span, none missed:
    per = 7 if w.weekday is not None else 1
    days = length / 86400
    assert len(found) >= int(days // per) - 1
    assert len(found) <= int(days // per) + 2 + int(w.duration // (per * 86400))


# --- figures: config windows count like flagged exclusions -------------------------


def test_a_config_window_removes_downtime_like_a_flagged_one() -> None:
    policy = Policy(objective=0.995)
    outage = OutageSpan("pop3", utc("2026-10-04 01:50"), utc("2026-10-04 02:20"), 31)
    window = Window(weekday=SUNDAY, start=time(2, 0), duration=H, reason="weekly patching")
    october = accounting.month_period("2026-10", "UTC")
    flagged = ExclusionSpan(
        5, "mail", utc("2026-10-04 02:00"), utc("2026-10-04 03:00"), "maintenance", "w", "ops", 0.0
    )

    def figures(exclusions: list[ExclusionSpan]) -> accounting.ServiceFigures:
        return accounting.service_figures(
            service="mail",
            policy=policy,
            month="2026-10",
            tz="UTC",
            outages=[outage],
            exclusions=exclusions,
            coverage=[october],
            first_test_at=october[0],
            now=october[1],
        )

    from_config = figures(expand([window], service="mail", tz="UTC", span=october))
    from_store = figures([flagged])
    assert from_config.downtime_seconds == from_store.downtime_seconds == 600.0
    assert from_config.excluded_seconds == from_store.excluded_seconds == 1200.0
    assert [iso(x.start) for x in from_config.exclusions] == [
        "2026-10-04 02:00",
        "2026-10-11 02:00",
        "2026-10-18 02:00",
        "2026-10-25 02:00",
    ]
    report = MonthReport("2026-10", "UTC", october[1], (from_config,))
    text = render_text(report)
    assert "mail: exclusions" in text
    row = next(
        line for line in text.splitlines() if "2026-10-04 02:00:00" in line and "patching" in line
    )
    assert row.split()[:3] == ["—", "mail", "maintenance"]
    assert " config " in row and row.rstrip().endswith("live")
    assert '"by": "config"' in render_json(report)


# --- config ---------------------------------------------------------------------------

BASE = """\
timezone: America/New_York
services:
  web:
    objective: 99.5
    maintenance:
{windows}
    checks:
      - {{name: home, type: tcp, host: 127.0.0.1, port: 8080}}
"""


def load(tmp_path: Path, windows: str) -> config_mod.Config:
    path = tmp_path / "probed.yaml"
    path.write_text(BASE.format(windows=windows), encoding="utf-8")
    return config_mod.load(path)


def problems(tmp_path: Path, windows: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, windows)
    return [p.replace(f"{tmp_path}/", "") for p in info.value.problems]


def test_config_windows_load_as_typed_windows(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '      - {every: Sunday, start: "02:00", duration: 1h, kind: maintenance, reason: weekly patching}\n'
        '      - {every: day, start: "23:30", duration: 90m, reason: backups}',
    )
    assert config.services["web"].maintenance == (
        Window(SUNDAY, time(2, 0), 3600.0, "maintenance", "weekly patching"),
        Window(None, time(23, 30), 5400.0, "maintenance", "backups"),
    )
    assert "maintenance window every sunday 02:00 for 1h: weekly patching" in config_mod.summary(
        config
    )


def test_bad_config_windows_name_file_line_field_and_expectation(tmp_path: Path) -> None:
    windows = (
        "      - {every: sundya, start: 12:30, duration: 1h, reason: x}\n"
        '      - {every: day, start: "25:00", duration: 25h, kind: nap, reason: x}\n'
        '      - {every: monday, start: "01:00", duration: soon}\n'
        '      - {every: monday, start: "01:00", duration: 1h, reason: x, until: never}'
    )
    assert problems(tmp_path, windows) == [
        'probed.yaml:6: services.web.maintenance[0].every: expected a weekday like sunday (monday .. sunday) or "day", got "sundya"',
        'probed.yaml:6: services.web.maintenance[0].start: expected a local time in quotes like "02:00", got the number 750 (YAML reads an unquoted time like 12:30 as a number)',
        'probed.yaml:7: services.web.maintenance[1].start: expected a local time like "02:00" (HH:MM), got "25:00"',
        "probed.yaml:7: services.web.maintenance[1].duration: expected a duration shorter than its recurrence (1 day) like 1h, got 90000s",
        "probed.yaml:7: services.web.maintenance[1].kind: Input should be 'dos', 'maintenance' or 'other'",
        'probed.yaml:8: services.web.maintenance[2].duration: expected a duration like 30s, got "soon"',
        "probed.yaml:8: services.web.maintenance[2].reason: required field is missing",
        "probed.yaml:9: services.web.maintenance[3].until: unknown field (check its spelling)",
    ]


def test_a_weekly_window_may_not_last_a_week(tmp_path: Path) -> None:
    assert problems(
        tmp_path, '      - {every: friday, start: "18:00", duration: 168h, reason: x}'
    ) == [
        "probed.yaml:6: services.web.maintenance[0].duration: expected a duration shorter than its recurrence (1 week) like 1h, got 604800s"
    ]
