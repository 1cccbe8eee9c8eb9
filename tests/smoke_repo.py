"""Build a throw-away copy of this repository configured with the smoke parameters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_PARAMS = REPO_ROOT / "tests" / "smoke_params.yaml"
# Source files a pipeline run needs; outputs (data/prepared, models/, reports/, export/) are left out.
COPIED = ("dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".dvc/config", "stages", "unildiff")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``override`` merged in, recursing into nested mappings."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def smoke_params() -> dict[str, Any]:
    """The default params.yaml with tests/smoke_params.yaml merged over it."""
    base = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    override = yaml.safe_load(SMOKE_PARAMS.read_text()) or {}
    return deep_merge(base, override)


def make_smoke_repo(destination: Path) -> Path:
    """Copy the pipeline's sources into ``destination``, write smoke params, and init git + DVC there."""
    destination.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in COPIED:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore, dirs_exist_ok=True)
        elif source.exists():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    deploy = REPO_ROOT / "deploy"
    if deploy.is_dir():
        shutil.copytree(deploy, destination / "deploy", ignore=ignore, dirs_exist_ok=True)
    (destination / "params.yaml").write_text(yaml.safe_dump(smoke_params(), sort_keys=False))
    run(["git", "init", "-q"], destination)
    run(["git", "config", "user.email", "smoke@unildiff.invalid"], destination)
    run(["git", "config", "user.name", "smoke"], destination)
    (destination / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    run(["git", "add", "-A"], destination)
    run(["git", "commit", "-q", "-m", "smoke"], destination)
    return destination


def run(command: list[str], cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd`` with this interpreter's bin dir first on PATH; raise on failure."""
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["PYTHONPATH"] = str(cwd)
    completed = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {completed.returncode}\n--- stdout\n{completed.stdout[-6000:]}"
            f"\n--- stderr\n{completed.stderr[-6000:]}"
        )
    return completed
