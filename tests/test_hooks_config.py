"""Hook configuration: each type's model, errors as FILE:LINE: path: expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from probed import config as config_mod
from probed.config import ConfigError
from probed.core.events import Event
from probed.hooks.alertmanager import AlertmanagerConfig
from probed.hooks.webhook import WebhookConfig

# apprise's e-mail plugin imports the stdlib's deprecated imghdr when its plugins load
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

HEAD = """\
storage: sqlite:///tmp/probed-hooks-test.db
services:
  web:
    objective: 99.5
    checks:
      - {name: home, type: http, url: "http://127.0.0.1:8080/"}
  mail:
    objective: 99.9
    checks:
      - {name: smtp, type: tcp, host: 127.0.0.1, port: 25}
hooks:
"""


def write(tmp_path: Path, hooks: str) -> Path:
    path = tmp_path / "probed.yaml"
    path.write_text(HEAD + hooks, encoding="utf-8")
    return path


def problems(tmp_path: Path, hooks: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, hooks))
    return [p.replace(f"{tmp_path}/", "") for p in info.value.problems]


def test_every_hook_type_loads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "hmac").write_text("k3y\n")
    config = config_mod.load(
        write(
            tmp_path,
            f"""\
  - {{type: webhook, url: "https://hooks.example.net/probed", secret_file: {tmp_path}/hmac}}
  - {{type: alertmanager, name: am, url: "http://127.0.0.1:9093", services: [mail]}}
  - {{type: apprise, urls: ["json://127.0.0.1:8000/notify"], min_severity: P1}}
  - {{type: exec, command: [/bin/true, --flag], events: [outage_opened], timeout: 5s}}
""",
        )
    )
    webhook, am, apprise, exec_ = config.hooks
    assert [h.name for h in config.hooks] == ["webhook-0", "am", "apprise-2", "exec-3"]
    assert isinstance(webhook, WebhookConfig) and webhook.secret == "k3y"
    assert "k3y" not in repr(webhook) and "secret" not in webhook.model_dump()
    assert isinstance(am, AlertmanagerConfig) and am.resend_every == 60.0
    assert (apprise.min_severity, exec_.timeout, webhook.timeout) == ("P1", 5.0, 10.0)
    assert "outage_extended" not in webhook.events  # opt-in: it fires on every failed test
    assert config_mod.summary(config).endswith("hooks: 4")


def test_filters_accept_by_event_service_and_severity() -> None:
    hook = WebhookConfig.model_validate(
        {
            "type": "webhook",
            "name": "w",
            "url": "http://x/",
            "events": ["service_down"],
            "services": ["mail"],
            "min_severity": "P2",
        }
    )
    assert hook.accepts(Event("service_down", "mail", 0.0, severity="P1"))
    assert hook.accepts(Event("service_down", "mail", 0.0, severity="P2"))
    assert not hook.accepts(Event("service_down", "mail", 0.0, severity="P3"))
    assert not hook.accepts(Event("service_down", "web", 0.0, severity="P1"))
    assert not hook.accepts(Event("service_up", "mail", 0.0, severity="P1"))


def test_bad_hooks_name_file_line_path_and_expectation(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """\
  - {type: pager, url: "http://x/"}
  - type: webhook
    url: "ftp://example.net/"
    timeout: soon
  - {type: alertmanager, url: "http://am:9093", events: [outage_opened, outage_started]}
  - {type: exec, command: [/nonexistent/notify-team]}
  - {type: webhook, name: pager, url: "http://x/", services: [shop]}
  - {type: webhook, name: pager, url: "http://x/", min_severity: P4}
  - {type: apprise, urls: ["json://127.0.0.1/x", "nosuchservice://token"]}
  - {type: webhook, url: "http://x/", secret: hunter2}
  - {type: apprise}
""",
    )
    assert found == [
        'probed.yaml:12: hooks[0].type: unknown hook type "pager"; valid types: webhook, alertmanager, apprise, exec',
        'probed.yaml:15: hooks[1].timeout: expected a duration like 30s, got "soon"',
        'probed.yaml:14: hooks[1].url: expected an http:// or https:// URL like https://example.net/, got "ftp://example.net/"',
        "probed.yaml:16: hooks[2].events[1]: Input should be 'outage_opened', 'outage_extended', 'outage_closed', 'service_down', 'service_up', 'budget_threshold', 'objective_missed', 'location_outage_opened' or 'location_outage_closed'",
        'probed.yaml:17: hooks[3].command: command not found or not executable: "/nonexistent/notify-team"',
        'probed.yaml:18: hooks[4].services[0]: unknown service "shop"; configured services: web, mail',
        "probed.yaml:19: hooks[5].min_severity: Input should be 'P1', 'P2' or 'P3'",
        'probed.yaml:20: hooks[6].urls: not a valid Apprise URL: "nosuchservice://token" (item 1)',
        "probed.yaml:21: hooks[7]: inline secrets are not allowed: use secret_file",
        "probed.yaml:22: hooks[8]: expected urls: [...] or a urls_file with at least one Apprise URL",
    ]


def test_duplicate_hook_names_are_an_error(tmp_path: Path) -> None:
    assert problems(
        tmp_path,
        """\
  - {type: webhook, name: team, url: "http://x/"}
  - {type: webhook, name: team, url: "http://y/"}
""",
    ) == ['probed.yaml:13: hooks[1].name: duplicate hook name "team"']


def test_missing_secret_file_is_an_error_not_an_unsigned_hook(tmp_path: Path) -> None:
    [problem] = problems(
        tmp_path, f'  - {{type: webhook, url: "http://x/", secret_file: {tmp_path}/nope}}\n'
    )
    assert problem == (
        "probed.yaml:12: hooks[0]: cannot read secret file nope: No such file or directory"
    )


def test_a_bad_url_in_the_apprise_urls_file_is_named_by_line_without_echoing_it(
    tmp_path: Path,
) -> None:
    urls = tmp_path / "apprise.urls"
    urls.write_text("# team\njson://127.0.0.1/ok\nnosuchservice://s3cr3t-token\n")
    [problem] = problems(tmp_path, f"  - {{type: apprise, urls_file: {urls}}}\n")
    assert problem == "probed.yaml:12: hooks[0]: apprise.urls line 3: not a valid Apprise URL"
    assert "s3cr3t" not in problem


def test_check_config_exits_78_on_a_bad_hook(tmp_path: Path) -> None:
    path = write(tmp_path, '  - {type: webhook, url: "nope"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "probed.cli", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    assert f"{path}:12: hooks[0].url: expected an http:// or https:// URL" in result.stderr
    assert "Traceback" not in result.stderr
