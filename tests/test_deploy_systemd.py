"""deploy/systemd/probed.service: systemd accepts it, and it says what the daemon relies on.

``systemd-analyze verify`` loads the unit the way systemd would, and also
insists that ExecStart's program exists and is executable. probed is not
installed at /usr/local/bin on a CI machine, so the tests verify a copy whose
ExecStart points at a stand-in script in a temporary directory; every other
line is the shipped file's. verify reports bad values and unknown keys as
warnings while still exiting 0, so its output has to be empty too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "probed.service"
SHIPPED_EXEC = "/usr/local/bin/probed"


def settings(text: str) -> dict[str, list[str]]:
    """Key -> values in file order. Repeated keys add up, as in systemd."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def one(key: str) -> str:
    (value,) = settings(UNIT.read_text())[key]
    return value


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    stand_in = tmp_path / "probed"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    shipped = UNIT.read_text()
    assert shipped.count(f"ExecStart={SHIPPED_EXEC} ") == 1
    assert shipped.count(f"ExecReload={SHIPPED_EXEC} ") == 1
    copy = tmp_path / "probed.service"  # verify wants the real unit name
    copy.write_text(shipped.replace(f"={SHIPPED_EXEC} ", f"={stand_in} "))
    return copy


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("systemd-analyze"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_unit_passes_systemd_analyze_verify(verifiable_unit: Path) -> None:
    result = analyze("verify", str(verifiable_unit))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", output


def test_verify_would_catch_a_mistake(verifiable_unit: Path) -> None:
    # the check above is only worth something if verify complains about typos
    broken = verifiable_unit.read_text().replace("WatchdogSec=", "WatchdogSecs=")
    verifiable_unit.write_text(broken)
    result = analyze("verify", str(verifiable_unit))
    assert "Unknown key" in result.stdout + result.stderr


def test_unit_sandbox_scores_ok_in_systemd_analyze_security(verifiable_unit: Path) -> None:
    # exposure 0.0 (locked down) .. 10.0 (unprotected); --threshold is in tenths
    result = analyze("security", "--offline=yes", "--threshold=20", str(verifiable_unit))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


def test_unit_runs_the_daemon_with_the_documented_config() -> None:
    assert one("ExecStart") == f"{SHIPPED_EXEC} run -c /etc/probed/probed.yaml"
    assert (
        one("ExecReload")
        == "/usr/local/bin/probed reload -c /etc/probed/probed.yaml --pid $MAINPID"
    )


def test_unit_tells_systemd_about_readiness_and_liveness() -> None:
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("WatchdogSec") == "30s"


def test_a_bad_config_does_not_restart_loop() -> None:
    assert one("Restart") == "on-failure"
    assert one("RestartPreventExitStatus") == "78"  # EX_CONFIG, docs/contract.md
    assert one("TimeoutStopSec")


def test_state_lives_where_the_default_storage_url_points() -> None:
    # contract default: storage: sqlite:///var/lib/probed/probed.db
    assert one("StateDirectory") == "probed"


def test_secrets_arrive_as_credentials_from_the_credstore() -> None:
    loaded = settings(UNIT.read_text())["LoadCredential"]
    assert loaded == [
        "probed.smtp.pass",
        "probed.pop3.pass",
        "probed.imap.pass",
        "probed.api-token",
    ]
    # A bare name is looked up in /etc/credstore and may be missing there; an
    # absolute path that does not exist would fail every start (243/CREDENTIALS).
    assert not any(":" in entry for entry in loaded)


def test_unit_is_sandboxed() -> None:
    found = settings(UNIT.read_text())
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
        "LockPersonality": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
    }
    for key, value in expected.items():
        assert found[key] == [value], key
    assert "@system-service" in found["SystemCallFilter"]
