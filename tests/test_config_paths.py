"""Paths in a config resolve against the config file's directory; storage URL forms;
commands that do not probe load the config without reading secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from probed import config as config_mod
from probed.config import ConfigError

CONFIG = """\
storage: {storage}
api_token_file: token
services:
  mail:
    objective: 99.5
    checks:
      - {{name: pop3, type: pop3, host: 127.0.0.1, port: 1995, tls: true, ca_file: ca.pem,
         username: probe, password_file: secrets/pop3.pass}}
hooks:
  - {{type: webhook, url: "http://127.0.0.1:9/", secret_file: secrets/hook}}
"""


def make(tmp_path: Path, storage: str = "sqlite://probed.db", secrets: bool = True) -> Path:
    etc = tmp_path / "etc"
    (etc / "secrets").mkdir(parents=True)
    trustme.CA().cert_pem.write_to_path(str(etc / "ca.pem"))
    if secrets:
        (etc / "secrets" / "pop3.pass").write_text("pop3-password\n")
        (etc / "secrets" / "hook").write_text("hook-secret\n")
        (etc / "token").write_text("t" * 20 + "\n")
    path = etc / "probed.yaml"
    path.write_text(CONFIG.format(storage=storage))
    return path


def test_every_relative_path_resolves_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make(tmp_path)
    monkeypatch.chdir("/")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = config_mod.load(os.path.relpath(path, "/"))
    _, check = config.find_check("pop3")
    assert check.password == "pop3-password"  # type: ignore[attr-defined]
    assert check.ca_file == str(tmp_path / "etc" / "ca.pem")  # type: ignore[attr-defined]
    assert config.hooks[0].secret == "hook-secret"  # type: ignore[attr-defined]
    assert config.api_token == "t" * 20
    assert config.storage_path == tmp_path / "etc" / "probed.db"


def test_a_credential_wins_over_a_file_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make(tmp_path)
    creds = tmp_path / "creds"
    (creds / "secrets").mkdir(parents=True)
    (creds / "secrets" / "pop3.pass").write_text("from-credentials")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = config_mod.load(path)
    assert config.find_check("pop3")[1].password == "from-credentials"  # type: ignore[attr-defined]
    assert config.api_token == "t" * 20  # not among the credentials: beside the config


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("sqlite:////var/lib/probed/probed.db", "/var/lib/probed/probed.db"),
        ("sqlite:///var/lib/probed/probed.db", "/var/lib/probed/probed.db"),
        ("sqlite://probed.db", "{etc}/probed.db"),
        ("/srv/probed.db", "/srv/probed.db"),
        ("data/probed.db", "{etc}/data/probed.db"),
    ],
)
def test_storage_url_forms(tmp_path: Path, storage: str, expected: str) -> None:
    config = config_mod.load(make(tmp_path, storage))
    assert str(config.storage_path) == expected.format(etc=tmp_path / "etc")


def test_another_url_scheme_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.load(make(tmp_path, "mysql://db/probed"))
    assert (
        "storage: expected sqlite:////path/to/probed.db, a file path or"
        " postgresql://USER@HOST:PORT/DB" in info.value.problems[0]
    )


def test_commands_that_do_not_probe_need_no_secrets(tmp_path: Path) -> None:
    path = make(tmp_path, secrets=False)
    with pytest.raises(ConfigError):
        config_mod.load(path)
    config = config_mod.load(path, secrets=False)
    assert config.find_check("pop3")[1].password is None  # type: ignore[attr-defined]
    assert config.api_token is None
    for args in (["report", "--format", "json"], ["exclude", "list"]):
        result = subprocess.run(
            [sys.executable, "-m", "probed.cli", *args, "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # no store yet: a runtime failure (1), not a config error (78) about secrets
        assert result.returncode == 1, result.stderr
        assert "no store at" in result.stderr


def test_sqlite_four_slash_url_works_for_run_and_check_config_alike(tmp_path: Path) -> None:
    db = tmp_path / "abs" / "probed.db"
    db.parent.mkdir()
    path = make(tmp_path, f"sqlite:///{db}")
    assert config_mod.load(path).storage_path == db
    import asyncio

    from probed.store.base import open_store

    async def opened() -> None:
        await (await open_store(config_mod.load(path))).close()  # what run opens

    asyncio.run(opened())
    assert db.exists()


def test_exclude_add_without_by_names_the_login_not_unknown(tmp_path: Path) -> None:
    import pwd

    path = make(tmp_path, secrets=False)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}  # no USER, no SUDO_USER
    add = [sys.executable, "-m", "probed.cli", "exclude", "add", "-c", str(path), "--all"]
    window = ["--start", "2026-10-04T10:00", "--end", "2026-10-04T11:00"]
    added = subprocess.run(
        [*add, *window, "--kind", "other", "--reason", "test"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "probed.cli", "exclude", "list", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert f"by {pwd.getpwuid(os.getuid()).pw_name}: test" in listed.stdout
    assert "2026-10-04 10:00:00 UTC → 2026-10-04 11:00:00 UTC" in listed.stdout
