"""The documented install (deploy/README.md, "1. Install"): build a wheel from the
checkout, install it into a fresh virtual environment, run the command it provides."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from tests.test_docs import EXAMPLE, secrets_named

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "*.db*",
)


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # the pip configuration of the machine applies (its index, caches and find-links),
    # as it does for the operator following deploy/README.md
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False
    )


def test_a_wheel_built_from_the_checkout_installs_and_runs(tmp_path: Path) -> None:
    checkout = tmp_path / "probed"
    shutil.copytree(ROOT, checkout, ignore=NOT_SHIPPED)
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", "dist", "./probed", cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    assert wheel.name.startswith("probed_sla-")  # not PyPI's unrelated "probed"

    venv.create(tmp_path / "opt", with_pip=True)
    pip, probed = tmp_path / "opt" / "bin" / "pip", tmp_path / "opt" / "bin" / "probed"
    installed = run(pip, "install", "--quiet", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    version = run(probed, "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("probed, version 0.1"), version

    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(EXAMPLE, etc / "probed.yaml")
    for name in secrets_named(yaml.safe_load(EXAMPLE.read_text())):
        urls = name.endswith("-urls")
        (etc / name).write_text("json://127.0.0.1:9/probed\n" if urls else "s3cret-" * 4)
    checked = run(probed, "check-config", "-c", etc / "probed.yaml", cwd=Path("/"))
    assert checked.returncode == 0, checked.stderr
    assert "service mail: objective 99.5%" in checked.stdout


def test_setup_scripts_wait_for_the_dpkg_lock() -> None:
    # a machine that is installing updates holds the lock; waiting beats failing at once
    scripts = [
        *sorted(p for p in (ROOT / ".ci").iterdir() if p.is_file()),
        ROOT / "scripts" / "test",
    ]
    calls = [
        line.strip()
        for script in scripts
        for line in script.read_text().splitlines()
        if "apt-get " in line and not line.strip().startswith("#")
    ]
    assert calls
    assert [c for c in calls if "-o DPkg::Lock::Timeout=300" not in c] == []
