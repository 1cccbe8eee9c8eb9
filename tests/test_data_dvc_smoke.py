"""Smoke test: ``dvc repro validate`` in a throw-away copy of the repository (its own git + DVC init)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ("prepare", "validate")
SMOKE_DATA = {"patch_size": 32, "test_patch_size": 48, "train_pairs_per_task": 3, "val_pairs_per_task": 2,
              "test_pairs_per_task": 2, "source_short_side": 64}  # fmt: skip


def _run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(cwd))
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    completed = subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)
    if check and completed.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
        )
    return completed


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy with the data stages of dvc.yaml, smoke-sized data params, and fresh git + DVC repos."""
    repo = tmp_path_factory.mktemp("dvc") / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "unildiff", "data/raw/builtin"):
        shutil.copytree(REPO_ROOT / name, repo / name, ignore=ignore)
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in DATA_STAGES}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"].update(SMOKE_DATA)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run(["dvc", "init", "-q"], repo)
    return repo


def test_dvc_repro_validate_runs_both_stages(repo: Path) -> None:
    output = _run(["dvc", "repro", "validate"], repo).stdout
    assert "Running stage 'prepare'" in output and "Running stage 'validate'" in output
    report = json.loads((repo / "reports/validation.json").read_text())
    assert report["success"] is True and report["pairs"] == 5 * 3 + 5 * 2 + 5 * 2
    assert (repo / "reports/validation.html").is_file()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(DATA_STAGES)


def test_failing_suite_fails_the_stage_with_a_named_expectation(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["validate"]["min_pairs_per_task"] = 50
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    completed = _run(["dvc", "repro", "validate"], repo, check=False)
    assert completed.returncode != 0
    assert "Running stage 'prepare'" not in completed.stdout  # data params unchanged: prepare is cached
    output = completed.stdout + completed.stderr
    assert "expect_column_values_to_be_between(column='pairs', min_value=50.0)" in output
    assert "-> threshold validate.min_pairs_per_task; fix the data" in output  # the knob, named
