"""``dvc exp run -S <param>`` scope: a stage-2 param reruns train_daem and downstream only; a stage-1 one
reruns stage 1 and downstream only. Checked with ``dvc repro --dry`` on a committed placeholder pipeline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.smoke_repo import make_smoke_repo, run

pytestmark = pytest.mark.slow


def _out_paths(stage: dict) -> list[str]:
    paths = []
    for key in ("outs", "metrics", "plots"):
        for entry in stage.get(key, []):
            paths.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return paths


def _placeholder(path: Path) -> None:
    if path.suffix:  # a file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n" if path.suffix == ".json" else "placeholder\n")
    else:  # a directory
        path.mkdir(parents=True, exist_ok=True)
        (path / "placeholder.txt").write_text("placeholder\n")


def _would_run(repo: Path) -> set[str]:
    output = run(["dvc", "repro", "--dry"], repo).stdout
    return set(re.findall(r"Running stage '([^']+)'", output))


def _set_param(repo: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_param_changes_rerun_only_their_stage_and_downstream(tmp_path: Path) -> None:
    repo = make_smoke_repo(tmp_path / "repo")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for path in _out_paths(stage):
            _placeholder(repo / path)
    run(["dvc", "commit", "--force", "--quiet", "dvc.yaml"], repo)
    assert _would_run(repo) == set()

    # `--dry` lists the stages whose own deps/params changed; what follows them reruns through their outs.
    _set_param(repo, "stage2", "lambda2", 0.02)
    assert _would_run(repo) == {"train_daem"}
    run(["git", "checkout", "params.yaml"], repo)
    _set_param(repo, "stage1a", "lr", 1e-4)
    assert _would_run(repo) == {"train_daff"}
    run(["git", "checkout", "params.yaml"], repo)
    _set_param(repo, "stage1b", "lr_denoiser", 2e-5)
    assert _would_run(repo) == {"train_joint"}
    # Downstream wiring: stage 1b consumes 1a's weights; stage 2 does not depend on stage 1 at all.
    assert "models/stage1a" in stages["train_joint"]["deps"]
    assert not {"models/stage1a", "models/stage1b"} & set(stages["train_daem"]["deps"])
