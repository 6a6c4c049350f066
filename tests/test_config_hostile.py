"""Hostile config files: bombs and odd values are a config error (exit 78, FILE:LINE), never
a traceback, a hang or a daemon killed or frozen by SIGHUP; and a fuzz test of the loader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probed import config as config_mod
from probed.config import ConfigError
from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config, wait_for

BASE = """\
storage: sqlite:///tmp/probed-hostile.db
services:
  web:
    objective: 99.5
    checks:
      - {name: a, type: tcp, host: 127.0.0.1, port: 1}
"""


def billion_laughs() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefghi", "bcdefghij", strict=True):
        text += f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n"
    return text + BASE


BOMBS: dict[str, tuple[str | bytes, str]] = {
    "billion-laughs": (
        billion_laughs(),
        ":7: invalid YAML: aliases expand to more than 4000000 values",
    ),
    "self-alias": ("x: &x [1, *x]\n" + BASE, ":1: invalid YAML: an alias refers to itself"),
    "binary": (BASE.encode() + b"\xff\xfe\x00\x01binary\n", ":7: not UTF-8 text (byte 0xff"),
    "nul-bytes": (BASE + "\x00\x00\n", "invalid YAML:"),
    "deep-nesting": ("x: " + "[" * 5000 + "]" * 5000 + "\n" + BASE, ":1: invalid YAML: nested"),
    "nan-interval": (
        BASE.replace("port: 1}", "port: 1, interval: .nan}"),
        ":6: services.web.checks[0].interval: expected a duration above 0 and at most 168h",
    ),
    "inf-objective": (
        BASE.replace("99.5", ".inf"),
        ":4: services.web.objective: expected a number above 0 and at most 100, got inf",
    ),
    "huge-duration": (
        BASE.replace("port: 1}", "port: 1, timeout: 1h, interval: 100000h}"),
        ":6: services.web.checks[0].interval: expected a duration above 0 and at most 168h",
    ),
    "1e20s": (BASE.replace("port: 1}", "port: 1, interval: 1e20s}"), "expected a duration"),
    "failures-1e30": (
        BASE.replace("port: 1}", "port: 1, failures_to_down: 1.0e+30}"),
        ":6: services.web.checks[0].failures_to_down: expected a whole number from 1 to 1000",
    ),
    "5000-digits": (
        BASE.replace("port: 1}", "port: " + "9" * 5000 + "}"),
        ":6: invalid YAML: a number with 5000 digits (at most 30)",
    ),
    "duplicate-key": (
        BASE + "services:\n  other: {}\n",
        ':7: invalid YAML: duplicate key "services" (first at line 2, again at line 7)',
    ),
    "duplicate-flow-key": (
        BASE.replace("port: 1}", "port: 1, port: 2}"),
        ':6: invalid YAML: duplicate key "port" (first at line 6, again at line 6)',
    ),
    "impossible-date": (BASE + "timezone: 2026-13-45\n", ":7: invalid YAML: invalid value"),
    "empty-sqlite-url": (
        BASE.replace("sqlite:///tmp/probed-hostile.db", "'sqlite://'"),
        ":1: storage: expected sqlite:////path/to/probed.db, a file path or"
        ' postgresql://USER@HOST:PORT/DB, got "sqlite://"',
    ),
}


def check_config(path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "probed.cli", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,  # a hang is a failure, not a stuck suite
    )


@pytest.mark.parametrize("name", list(BOMBS))
def test_hostile_config_exits_78_naming_file_and_line(tmp_path: Path, name: str) -> None:
    content, expected = BOMBS[name]
    path = tmp_path / "probed.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    proc = check_config(path)
    assert proc.returncode == 78, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{path}:"), proc.stderr
    assert expected in proc.stderr


@pytest.mark.parametrize("kind", ["fifo", "directory", "eio"])
def test_a_config_that_is_not_a_readable_file_exits_78(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "probed.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/proc/self/mem")  # a regular file whose read fails (EIO), even for root
    proc = check_config(path, timeout=30)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.startswith(f"{path}:1: cannot read config:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_refuses_a_storage_path_that_run_refuses(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    path = tmp_path / "probed.yaml"
    path.write_text(BASE.replace("sqlite:///tmp/probed-hostile.db", "sqlite://data"))
    checked = check_config(path)
    run = subprocess.run(
        [sys.executable, "-m", "probed.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert (checked.returncode, run.returncode) == (78, 78), (checked.stderr, run.stderr)
    assert f"storage: {tmp_path}/data is a directory" in checked.stderr


def test_billion_laughs_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError):
            config_mod.loads(billion_laughs(), tmp_path / "probed.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * 1024 * 1024, f"peak {peak} bytes"


@pytest.mark.e2e
async def test_sighup_with_hostile_files_keeps_the_daemon_running(tmp_path: Path) -> None:
    async with ScriptedHTTP() as http:
        path = http_config(tmp_path, http.port, ["site"], interval=0.2)
        good = path.read_text()
        daemon = await DaemonProcess(path).start()
        try:
            for name in ("billion-laughs", "binary", "deep-nesting", "nan-interval"):
                content = BOMBS[name][0]
                if isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    path.write_text(content)
                refused = len(daemon.events("config.reload_failed"))
                assert daemon.proc is not None
                daemon.proc.send_signal(signal.SIGHUP)
                await wait_for(
                    lambda n=refused: len(daemon.events("config.reload_failed")) > n,  # type: ignore[misc]
                    timeout=20,
                    what=f"{name} refused",
                )
                assert await daemon.metric("probed_config_last_reload_successful") == 0
            path.unlink()
            os.mkfifo(path)
            daemon.proc.send_signal(signal.SIGHUP)
            await wait_for(
                lambda: len(daemon.events("config.reload_failed")) == 5, what="fifo refused"
            )
            path.unlink()
            path.write_text(good)
            tests = http.counts.get("site", 0)
            await wait_for(lambda: http.counts.get("site", 0) > tests + 2, what="still testing")
            assert daemon.proc.poll() is None
        finally:
            code = await daemon.stop()
    assert code == 0
    assert not [e for e in daemon.log if e.get("event") == "raw"], "a line that is not JSON"
    problems = [p for e in daemon.events("config.reload_failed") for p in e["problems"]]
    assert all(p.startswith(f"{path}:") for p in problems), problems


# --- fuzz: every input loads or raises ConfigError, nothing else --------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["30s", "500ms", "1h", "tcp", "http", "imap", "UTC", ".nan", "-1"]),
)
_keys = st.sampled_from(
    [
        "services",
        "checks",
        "name",
        "type",
        "host",
        "port",
        "url",
        "interval",
        "timeout",
        "failures_to_down",
        "objective",
        "minimum",
        "credits",
        "below",
        "percent",
        "defaults",
        "hooks",
        "timezone",
        "storage",
        "listen",
        "maintenance",
        "every",
        "start",
        "duration",
        "reason",
        "concurrency",
        "web",
    ]
)
_structures = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=30,
)


def _loads_or_config_error(text: str, tmp_path: Path) -> None:
    problems: list[str] = []
    try:
        config_mod.loads(text, tmp_path / "probed.yaml")
    except ConfigError as exc:  # anything else fails the test with its traceback
        problems = exc.problems or ["(a ConfigError without problems)"]
    assert all(p.startswith(f"{tmp_path}/probed.yaml:") for p in problems), problems


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_structures)
def test_fuzz_structured_configs_load_or_raise_config_error(tmp_path: Path, data: object) -> None:
    import yaml

    _loads_or_config_error(yaml.safe_dump(data, allow_unicode=True), tmp_path)


_fragments = st.sampled_from(
    [
        BASE,
        "services:\n",
        "  web:\n",
        "    objective: 99.5\n",
        "    checks:\n",
        "      - {name: a, type: http, url: 'http://127.0.0.1:1/'}\n",
        "&a [1, 2]\n",
        "*a\n",
        "<<: *a\n",
        "x: !!python/object:os.system ls\n",
        "{[: ]}\n",
        "- - - -\n",
        "%YAML 1.1\n---\n",
        "interval: 0x7fffffffffff\n",
        "timezone: 2026-02-30\n",
        "? [a, b]\n: 1\n",
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(_fragments | st.text(max_size=40), max_size=12),
    noise=st.text(max_size=200),
)
def test_fuzz_text_configs_load_or_raise_config_error(
    tmp_path: Path, parts: list[str], noise: str
) -> None:
    _loads_or_config_error("".join(parts) + noise, tmp_path)
