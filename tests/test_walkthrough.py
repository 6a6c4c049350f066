"""deploy/README.md's operator walkthrough, executed as far as this machine allows.

Step 1 (install from the checkout as a wheel) is tests/test_install.py; the
unit's `systemd-analyze verify` and `security` are tests/test_deploy_systemd.py;
the alerting path is tests/test_e2e_alerting.py. This file runs the steps in
between the way the README writes them: the example config in /etc/probed, its
secrets as systemd credentials, `check-config` as the service sees it, the
daemon, and `systemctl reload` as the unit's ExecReload= command line.
(systemd-nspawn is not part of the test machine's setup, so the unit is not
booted for real here.)
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from tests.daemon_helpers import DaemonProcess, ScriptedHTTP, http_config
from tests.hooks_receiver import free_port
from tests.test_docs import EXAMPLE, secrets_named

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "probed.service"
DEPLOY_README = ROOT / "deploy" / "README.md"
PROBED = [sys.executable, "-m", "probed.cli"]


def unit_lines(key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def test_every_credential_the_unit_loads_is_in_the_readme_table() -> None:
    table = DEPLOY_README.read_text()
    for name in unit_lines("LoadCredential"):
        assert f"| `{name}` |" in table, name


def test_check_config_as_the_service_sees_it(tmp_path: Path) -> None:
    """Step 2 and 3: the example in /etc/probed, its secrets in the credstore only."""
    etc, credstore = tmp_path / "etc" / "probed", tmp_path / "etc" / "credstore"
    etc.mkdir(parents=True)
    credstore.mkdir(mode=0o700)
    (etc / "probed.yaml").write_text(EXAMPLE.read_text())
    names = secrets_named(yaml.safe_load(EXAMPLE.read_text()))
    loaded = set(unit_lines("LoadCredential"))
    assert loaded <= names  # the unit loads nothing the example does not use
    for name in names:
        secret = credstore / name
        secret.write_text("json://127.0.0.1:9/x\n" if name.endswith("-urls") else "s3cret-" * 4)
        secret.chmod(0o600)
    command = [*PROBED, "check-config", "-c", str(etc / "probed.yaml")]
    as_service = subprocess.run(
        command,
        env={"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": str(credstore)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_service.returncode == 0, as_service.stderr
    without = subprocess.run(
        command, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
    )
    assert without.returncode == 78
    assert re.search(r"probed\.yaml:\d+: .*cannot read secret file probed\.", without.stderr)


async def test_systemctl_reload_runs_the_units_exec_reload(tmp_path: Path) -> None:
    """Step 5: `systemctl reload probed` runs ExecReload= with $MAINPID; it returns once the
    new check runs, and fails (78) on a bad file, leaving the daemon as it was."""
    (exec_reload,) = unit_lines("ExecReload")
    async with ScriptedHTTP() as http:
        config = http_config(tmp_path, http.port, ["www"], 0.2)
        text = config.read_text().replace("listen: 127.0.0.1:0", f"listen: 127.0.0.1:{free_port()}")
        config.write_text(text)
        daemon = await DaemonProcess(config).start()
        try:
            assert daemon.proc is not None
            argv = shlex.split(exec_reload.replace("$MAINPID", str(daemon.proc.pid)))
            assert argv[:2] == ["/usr/local/bin/probed", "reload"]
            argv = [*PROBED, *argv[1:]]
            argv[argv.index("/etc/probed/probed.yaml")] = str(config)

            def reload() -> subprocess.CompletedProcess[str]:
                return subprocess.run(argv, capture_output=True, text=True, timeout=60)

            new = f'      - {{name: shop, type: http, url: "http://127.0.0.1:{http.port}/shop"}}\n'
            config.write_text(text + new)
            done = await asyncio.to_thread(reload)
            assert done.returncode == 0, done.stderr
            status = await daemon.json("/api/v1/status")
            assert [c["check"] for c in status["services"][0]["checks"]] == ["www", "shop"]
            config.write_text(text.replace("timezone: UTC", "timezone: Mars/Olympus"))
            refused = await asyncio.to_thread(reload)
            assert refused.returncode == 78
            assert "timezone: expected an IANA time zone" in refused.stderr
        finally:
            assert await daemon.stop() == 0
