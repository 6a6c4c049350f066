"""A maintenance window added by a reload is not recorded as created before the reload."""

from __future__ import annotations

from pathlib import Path

from probed import config as config_mod
from probed.core.maintenance import expand

T = 1_790_000_000.0  # 2026-09-21 14:13:20 UTC
BASE = """\
services:
  web:
    objective: 99.9
    checks: [{name: a, type: http, url: "http://127.0.0.1:9/"}]
"""
WINDOWS = '    maintenance: [{every: day, start: "02:00", duration: 1h, reason: backups}]\n'


def load(tmp_path: Path, text: str) -> config_mod.Config:
    path = tmp_path / "probed.yaml"
    path.write_text(text)
    return config_mod.load(path)


def created(config: config_mod.Config) -> list[tuple[float, float]]:
    windows = config.services["web"].maintenance
    spans = expand(windows, service="web", tz="UTC", span=(T - 3 * 86400, T + 86400))
    return [(x.start, x.created_at) for x in spans]


def test_windows_added_by_a_reload_count_as_created_at_the_reload(tmp_path: Path) -> None:
    started = load(tmp_path, BASE)
    reloaded = config_mod.adopt_windows(started, load(tmp_path, BASE + WINDOWS), T)
    occurrences = created(reloaded)
    assert len(occurrences) == 4  # three days back and tomorrow
    assert [c for s, c in occurrences] == [T, T, T, occurrences[-1][0]]  # tomorrow's: its start
    # an unchanged window keeps its stamp on the next reload
    again = config_mod.adopt_windows(reloaded, load(tmp_path, BASE + WINDOWS), T + 100)
    assert created(again) == occurrences


def test_windows_of_the_start_up_config_are_created_at_their_start(tmp_path: Path) -> None:
    assert all(start == made for start, made in created(load(tmp_path, BASE + WINDOWS)))
