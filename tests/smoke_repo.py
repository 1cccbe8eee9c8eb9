"""Build a throw-away copy of this repository configured with the smoke parameters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from unildiff.params import read_params

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_PARAMS = REPO_ROOT / "tests" / "smoke_params.yaml"
# Source files a pipeline run needs; outputs (data/prepared, models/, reports/, export/) are left out.
COPIED = (
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".dvcignore",
    ".dvc/config",
    "stages",
    "unildiff",
    "presets",
    "reports/seeds.json",  # the committed seed report, a dep of the card stage
    "data/raw/builtin",  # data.root of the built-in source: a dependency of prepare
)


def merge_into(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base`` in place, recursing into nested mappings; return ``base``."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_into(base[key], value)
        else:
            base[key] = value
    return base


def write_params(source: Path, override: dict[str, Any], destination: Path) -> Path:
    """Write ``source`` with ``override`` merged in to ``destination`` the way DVC writes params files.

    ruamel.yaml's round trip (YAML 1.2) keeps the comments and layout, as ``dvc exp run -S`` does.
    """
    from ruamel.yaml import YAML

    yaml = YAML()
    params = yaml.load(source.read_text(encoding="utf-8"))
    merge_into(params, override)
    with destination.open("w", encoding="utf-8") as stream:
        yaml.dump(params, stream)
    return destination


def smoke_params() -> dict[str, Any]:
    """The default params.yaml with tests/smoke_params.yaml merged over it (YAML 1.2, as DVC reads it)."""
    return merge_into(read_params(REPO_ROOT / "params.yaml"), read_params(SMOKE_PARAMS))


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
    write_params(REPO_ROOT / "params.yaml", read_params(SMOKE_PARAMS), destination / "params.yaml")
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
