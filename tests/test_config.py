"""Config loading: good files load, bad files give FILE:LINE: path: expectation."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from probed import config as config_mod
from probed.config import ConfigError

GOOD = """\
timezone: Europe/Berlin
storage: sqlite:///tmp/probed-test.db
listen: 127.0.0.1:9469
defaults: {interval: 30s, timeout: 5s, failures_to_down: 2}
services:
  web:
    objective: 99.5
    minimum: 99.0
    credits: [{below: 99.5, percent: 5}, {below: 99.0, percent: 10}]
    checks:
      - {name: home, type: http, url: "http://127.0.0.1:8080/"}
      - {name: port, type: tcp, host: 127.0.0.1, port: 8080, interval: 1m}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "probed.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, text))
    # messages name the file as given; strip the temporary directory for readability
    return [p.replace(f"{tmp_path}/", "") for p in info.value.problems]


def test_good_config_loads_with_defaults_inherited(tmp_path: Path) -> None:
    config = config_mod.load(write(tmp_path, GOOD))
    web = config.services["web"]
    assert web.policy.objective == pytest.approx(0.995)
    assert web.policy.minimum == pytest.approx(0.99)
    home, port = web.checks
    assert (home.interval, home.timeout, home.failures_to_down) == (30.0, 5.0, 2)
    assert port.interval == 60.0
    assert config.timezone == "Europe/Berlin"
    assert config.storage_path == Path("/tmp/probed-test.db")


def test_bad_duration_names_file_line_and_path(tmp_path: Path) -> None:
    text = GOOD.replace("interval: 1m", 'interval: "fast"')
    assert problems(tmp_path, text) == [
        'probed.yaml:12: services.web.checks[1].interval: expected a duration like 30s, got "fast"'
    ]


def test_timeout_must_be_shorter_than_interval(tmp_path: Path) -> None:
    text = GOOD.replace("interval: 1m", "interval: 2s")
    [problem] = problems(tmp_path, text)
    assert problem.startswith(
        "probed.yaml:12: services.web.checks[1]: timeout (5s) must be shorter"
    )


def test_unknown_check_type_lists_valid_types(tmp_path: Path) -> None:
    text = GOOD.replace("type: tcp", "type: ftp")
    [problem] = problems(tmp_path, text)
    assert problem.startswith(
        'probed.yaml:12: services.web.checks[1].type: unknown check type "ftp"; valid types: '
    )
    assert "http" in problem and "tcp" in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace(
        'url: "http://127.0.0.1:8080/"', 'url: "http://127.0.0.1:8080/", bogus: 1'
    ).replace("port: 8080, interval", "port: 99999, interval")
    found = problems(tmp_path, text)
    assert len(found) == 2
    assert found[0].startswith("probed.yaml:11: services.web.checks[0].bogus: unknown field")
    assert found[1].startswith("probed.yaml:12: services.web.checks[1].port:")


def test_duplicate_check_names_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace("name: port", "name: home")
    assert problems(tmp_path, text) == [
        'probed.yaml:12: services.web.checks[1].name: duplicate check name "home"'
    ]


def test_objective_out_of_range_and_bad_timezone(tmp_path: Path) -> None:
    text = GOOD.replace("objective: 99.5", "objective: 150").replace(
        "Europe/Berlin", "Mars/Olympus"
    )
    found = problems(tmp_path, text)
    assert found[0].startswith("probed.yaml:1: timezone: expected an IANA time zone")
    assert found[1].startswith("probed.yaml:7: services.web.objective:")


def test_inline_password_is_refused_and_missing_secret_file_named(tmp_path: Path) -> None:
    text = GOOD + (
        "  mail:\n    objective: 99\n    checks:\n"
        "      - {name: pop, type: tcp, host: 127.0.0.1, port: 110}\n"
    )
    config_mod.load(write(tmp_path, text))  # sanity: a second service is fine
    bad = text.replace("api_token_file", "x") + "api_token_file: /nonexistent/token\n"
    [problem] = problems(tmp_path, bad)
    assert problem.startswith(
        "probed.yaml:17: api_token_file: cannot read secret file /nonexistent/token"
    )


def test_invalid_yaml_reports_its_line(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD + "  broken: [unclosed\n")
    assert problem.startswith("probed.yaml:")
    assert "invalid YAML" in problem


def test_check_config_exits_78_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("interval: 1m", 'interval: "fast"'))
    proc = subprocess.run(
        [sys.executable, "-m", "probed.cli", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 78
    assert "Traceback" not in proc.stderr
    assert (
        'services.web.checks[1].interval: expected a duration like 30s, got "fast"' in proc.stderr
    )


def test_check_config_prints_summary(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "probed.cli", "check-config", "-c", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "service web: objective 99.5%, minimum 99%, 2 checks" in proc.stdout
    assert "home" in proc.stdout and "every 30s" in proc.stdout


def test_find_check_accepts_service_slash_check(tmp_path: Path) -> None:
    config = config_mod.load(write(tmp_path, GOOD))
    assert config.find_check("web/port")[1].name == "port"
    with pytest.raises(KeyError, match="not configured"):
        config.find_check("web/nope")


def test_a_list_as_check_type_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, GOOD.replace("type: tcp", "type: [a]"))
    assert problem.startswith(
        "probed.yaml:12: services.web.checks[1].type: unknown check type \"['a']\""
    )


def test_location_defaults_to_the_host_name_and_can_be_named(tmp_path: Path) -> None:
    import socket

    assert config_mod.load(write(tmp_path, GOOD)).location == socket.gethostname()
    named = config_mod.load(write(tmp_path, "location: fra1\n" + GOOD))
    assert named.location == "fra1"
    assert "location fra1" in config_mod.summary(named)


def test_a_location_with_odd_characters_is_refused(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, "location: 'fra 1'\n" + GOOD)
    assert problem.startswith("probed.yaml:1: location: a location uses letters, digits")


def test_run_refuses_a_bad_location_override_with_exit_2(tmp_path: Path) -> None:
    config = str(write(tmp_path, GOOD))
    done = subprocess.run(
        [sys.executable, "-m", "probed.cli", "run", "-c", config, "--location", "no/slashes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("probed: --location: a location uses letters")


QUORUMS = """\
defaults: {interval: 30s, timeout: 5s, quorum: 2}
services:
  mail:
    objective: 99.5
    quorum: majority
    checks:
      - {name: smtp, type: tcp, host: 127.0.0.1, port: 25}
      - {name: pop3, type: tcp, host: 127.0.0.1, port: 110, quorum: 3}
  web:
    objective: 99.5
    checks:
      - {name: home, type: http, url: "http://127.0.0.1:8080/"}
  lone:
    objective: 99.5
    checks:
      - {name: home, type: http, url: "http://127.0.0.1:8080/", quorum: 1}
"""


def test_quorum_is_inherited_from_defaults_then_service_then_check(tmp_path: Path) -> None:
    config = config_mod.load(write(tmp_path, QUORUMS))
    assert [(s.name, c.name, c.quorum) for s, c in config.all_checks()] == [
        ("mail", "smtp", "majority"),
        ("mail", "pop3", 3),
        ("web", "home", 2),
        ("lone", "home", 1),
    ]


def test_quorum_defaults_to_one_location(tmp_path: Path) -> None:
    config = config_mod.load(write(tmp_path, GOOD))
    assert {c.quorum for _, c in config.all_checks()} == {1}


@pytest.mark.parametrize(
    ("value", "line", "path"),
    [
        ("0", 8, "services.mail.checks[1].quorum"),
        ("half", 8, "services.mail.checks[1].quorum"),
        ('"2"', 8, "services.mail.checks[1].quorum"),
        ("true", 8, "services.mail.checks[1].quorum"),
    ],
)
def test_a_bad_quorum_names_file_line_and_what_a_quorum_is(
    tmp_path: Path, value: str, line: int, path: str
) -> None:
    [problem] = problems(tmp_path, QUORUMS.replace("quorum: 3", f"quorum: {value}"))
    assert problem.startswith(
        f"probed.yaml:{line}: {path}: expected a quorum: a whole number >= 1 or majority, got "
    )


def test_a_bad_service_quorum_is_reported_on_the_service(tmp_path: Path) -> None:
    [problem] = problems(tmp_path, QUORUMS.replace("quorum: majority", "quorum: most"))
    assert problem == (
        "probed.yaml:5: services.mail.quorum: expected a quorum: a whole number >= 1 or majority, got 'most'"
    )


def test_check_config_shows_each_checks_quorum(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "probed.cli", "check-config", "-c", str(write(tmp_path, QUORUMS))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.strip().startswith("smtp") and "quorum majority" in line for line in lines)
    assert any(line.strip().startswith("pop3") and "quorum 3" in line for line in lines)


def test_no_garbage_collection_while_loading_and_collector_left_as_found(tmp_path: Path) -> None:
    starts: list[str] = []  # the loading functions a collection interrupted

    def count(phase: str, info: dict[str, int]) -> None:
        frame = sys._getframe(1)
        while phase == "start" and frame is not None:
            if frame.f_code in (config_mod._loads.__code__, config_mod.configfile.parse.__code__):
                starts.append(frame.f_code.co_name)
            frame = frame.f_back

    good = write(tmp_path, GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("99.5\n", "101\n", 1), encoding="utf-8")
    threshold = gc.get_threshold()
    gc.set_threshold(1)  # without the guard, every allocation would trigger a collection
    gc.callbacks.append(count)
    try:
        config_mod.load(good)
        assert starts == []
        assert gc.isenabled()
        with pytest.raises(ConfigError):
            config_mod.load(bad)
        assert gc.isenabled()
        gc.disable()  # a caller that turned it off keeps it off
        config_mod.load(good)
        assert not gc.isenabled()
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*threshold)
        gc.enable()
