"""The documentation a user gets with the repository: links resolve, the example config is
complete and valid, and every config key is documented."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from probed.config import ConfigModel
from probed.hooks import HOOK_TYPES
from probes import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "probed.example.yaml"
REFERENCE = ROOT / "docs" / "configuration.md"
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_SKIPPED_DIRS = {".venv", ".git", "node_modules", ".mypy_cache", ".ruff_cache", ".hypothesis"}


def markdown_files() -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*.md")
        if not _SKIPPED_DIRS.intersection(p.relative_to(ROOT).parts)
        and not any(part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", markdown.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, flags=re.MULTILINE)}


def relative_links(markdown: Path) -> Iterator[str]:
    text = re.sub(r"```.*?```", "", markdown.read_text(encoding="utf-8"), flags=re.DOTALL)
    for match in _LINK.finditer(text):
        target = match.group(1)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            yield target


def broken_links(markdown: Path, root: Path = ROOT) -> list[str]:
    broken = []
    for target in relative_links(markdown):
        path, _, anchor = target.partition("#")
        resolved = (markdown.parent / path).resolve() if path else markdown
        if not resolved.exists() or not resolved.is_relative_to(root):
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor})")
    return broken


def test_the_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [web](https://example.net/)\n")
    assert [t for t in relative_links(page)] == ["#title", "missing.md"]
    assert [b.split()[0] for b in broken_links(page, tmp_path)] == ["missing.md"]


@pytest.mark.parametrize("markdown", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_in_markdown_resolve(markdown: Path) -> None:
    assert broken_links(markdown) == []


def test_docs_are_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in readme, page.name
    assert "../shared" not in readme


# ---------------------------------------------------------------- config keys


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models(arg)
    if isinstance(annotation, types.UnionType):
        for arg in annotation.__args__:
            yield from _models(arg)


def model_keys(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every key a user can write in this model and the models nested in it."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        if info.exclude:  # internal: loaded from a *_file key
            continue
        keys.add(info.alias or name)
        for nested in _models(info.annotation):
            keys |= model_keys(nested, seen)
    return keys


def accepted_keys() -> set[str]:
    keys = model_keys(ConfigModel)
    for probe in REGISTRY.values():
        keys |= model_keys(probe.config)
    for hook in HOOK_TYPES.values():
        keys |= model_keys(hook.config)
    return keys


def yaml_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node).union(*(yaml_keys(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(yaml_keys(v) for v in node))
    return set()


def test_the_key_walker_finds_nested_keys() -> None:
    keys = accepted_keys()
    assert {"poll_interval", "mailbox", "helo_name", "rcpt_to", "every", "below"} <= keys
    assert {"mute_during", "urls_file", "command", "resend_every"} <= keys
    assert "password" not in keys and "secret_urls" not in keys


# keys that exclude what the example uses (PostgreSQL's password and timeout beside an SQLite
# storage):
# the example shows them commented out, next to the alternative they belong to
ALTERNATIVES = {"storage_password_file", "storage_timeout"}


def test_the_example_config_uses_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    unused = accepted_keys() - yaml_keys(yaml.safe_load(text))
    assert sorted(unused - ALTERNATIVES) == []
    for key in ALTERNATIVES:
        assert re.search(rf"^#\s*{key}:", text, flags=re.MULTILINE), key


def test_the_reference_documents_every_key() -> None:
    reference = REFERENCE.read_text(encoding="utf-8")
    missing = [k for k in sorted(accepted_keys()) if f"`{k}`" not in reference]
    assert missing == []


def secrets_named(config: Any) -> set[str]:
    """The relative file names a config reads secrets from."""
    found: set[str] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            if key.endswith("_file") and key != "ca_file" and isinstance(value, str):
                found.add(value)
            found |= secrets_named(value)
    elif isinstance(config, list):
        for value in config:
            found |= secrets_named(value)
    return found


def test_the_example_config_passes_check_config_with_its_secrets(tmp_path: Path) -> None:
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    names = secrets_named(example)
    assert "probed.pop3.pass" in names and "probed.apprise-urls" in names
    config = tmp_path / "probed.yaml"
    shutil.copy(EXAMPLE, config)
    for name in names:
        assert not Path(name).is_absolute(), name
        content = "json://127.0.0.1:9/probed\n" if name.endswith("-urls") else "s3cret-" * 4
        (tmp_path / name).write_text(content)
    env = {"PATH": "/usr/bin:/bin"}  # no CREDENTIALS_DIRECTORY: names resolve next to the config
    result = subprocess.run(
        [sys.executable, "-m", "probed.cli", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd="/",  # relative paths resolve against the config's directory, not the cwd
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "write API enabled" in result.stdout
    assert "storage /var/lib/probed/probed.db" in result.stdout


def test_the_example_config_without_its_secrets_names_each_missing_file(tmp_path: Path) -> None:
    config = tmp_path / "probed.yaml"
    shutil.copy(EXAMPLE, config)
    result = subprocess.run(
        [sys.executable, "-m", "probed.cli", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 78
    assert "cannot read secret file probed.pop3.pass" in result.stderr
