"""Real ``dvc exp run -S section.key=value`` on the smoke pipeline: it succeeds and reruns what it must.

DVC rewrites params.yaml (ruamel.yaml, YAML 1.2) before it runs anything, so every stage that reruns
here has read its params back from DVC's rewrite. One full ``dvc repro`` makes the baseline; each
experiment then reruns only a few stages of the smoke configuration. ``tests/test_training_dvc_scope.py``
checks the same scope for one key of every section with ``dvc repro --dry``, without running stages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.smoke_repo import REPO_ROOT, make_smoke_repo, run
from unildiff.params import read_params

pytestmark = pytest.mark.slow


def _outs(stage: dict) -> list[str]:
    entries = [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries]


def _overlaps(first: str, second: str) -> bool:
    return first == second or first.startswith(second + "/") or second.startswith(first + "/")


def downstream(names: set[str]) -> set[str]:
    """Stages that consume, directly or not, an out of a stage in ``names`` (dvc.yaml), ``names`` excluded."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    found: set[str] = set()
    frontier = set(names)
    while frontier:
        outs = [out for name in frontier for out in _outs(stages[name])]
        frontier = {
            name
            for name, stage in stages.items()
            if name not in found | names and any(_overlaps(dep, out) for dep in stage["deps"] for out in outs)
        }
        found |= frontier
    return found


def _exp_run(repo: Path, *arguments: str) -> set[str]:
    """Run ``dvc exp run`` with ``arguments``; return the stages it ran (not those it found unchanged)."""
    completed = run(["dvc", "exp", "run", *arguments], repo)
    assert "error:" not in completed.stdout + completed.stderr, completed.stderr[-3000:]
    return set(re.findall(r"Running stage '([^']+)'", completed.stdout))


def _stale(repo: Path) -> set[str]:
    """Stages ``dvc status`` reports as changed (their deps, params or outs differ from dvc.lock)."""
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}")
    return {name.split(":")[-1] for name in status}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke repo after one full ``dvc repro``, committed, so experiments start from a clean baseline."""
    repo = make_smoke_repo(tmp_path_factory.mktemp("exp") / "repo")
    run(["dvc", "repro", "--quiet"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "baseline"], repo)
    assert _stale(repo) == set()
    return repo


def test_stage2_lambda2_reruns_train_daem_and_what_follows(pipeline: Path) -> None:
    ran = _exp_run(pipeline, "-S", "stage2.lambda2=0.02")
    assert ran == {"train_daem"} | downstream({"train_daem"})
    assert {"evaluate", "export", "bench"} <= ran
    params = read_params(pipeline / "params.yaml")
    assert params["stage2"]["lambda2"] == 0.02
    assert params["train"]["mixed_precision"] == "fp32"
    assert _stale(pipeline) == set()


def test_keys_of_validate_stage1_and_the_tail_rerun_only_their_stages(pipeline: Path) -> None:
    ran = _exp_run(
        pipeline,
        "-S", "validate.min_pairs_per_task=1",
        "-S", "stage1a.lr=0.0001",
        "-S", "stage1b.lr_denoiser=2e-05",
        "-S", "evaluate.grid_images=1",
        "-S", "export.parity_steps=1",
        "-S", "bench.repeats=2",
    )  # fmt: skip
    direct = {"validate", "train_daff", "train_joint", "evaluate", "export", "bench"}
    assert ran == direct | downstream(direct)
    assert not {"prepare", "prior", "encode_latents"} & ran
    assert _stale(pipeline) == set()


def test_train_and_data_keys_rerun_their_stages_and_leave_the_rest_stale(pipeline: Path) -> None:
    # Targets stop the run early; `dvc status` then names what a full run would rerun after them.
    ran = _exp_run(pipeline, "-S", "train.seed=1", "-S", "prior_train.vae_steps=3", "encode_latents")
    assert ran == {"prior", "encode_latents"}
    assert _stale(pipeline) == downstream({"prior"}) - {"encode_latents"}
    assert {"train_daff", "train_joint", "train_daem"} <= _stale(pipeline)
    ran = _exp_run(pipeline, "-S", "data.seed=1", "prepare")
    assert ran == {"prepare"}
    assert _stale(pipeline) == downstream({"prepare"})
