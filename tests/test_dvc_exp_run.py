"""Real ``dvc exp run -S section.key=value`` on the smoke pipeline: it succeeds and reruns what it must.

DVC rewrites params.yaml (ruamel.yaml, YAML 1.2) before it runs anything, so every stage that reruns
here has read its params back from DVC's rewrite. The session's smoke run (``tests/conftest.py``) is the
baseline; each experiment runs only the stages that read its params, on a copy of it.
``tests/test_training_dvc_scope.py`` checks the scope of one key of every section with ``dvc status``,
without running stages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_pipeline
from tests.smoke_repo import REPO_ROOT, run
from unildiff.params import read_params

pytestmark = pytest.mark.slow


def _outs(stage: dict) -> list[str]:
    entries = [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in entries]


def _overlaps(first: str, second: str) -> bool:
    return first == second or first.startswith(second + "/") or second.startswith(first + "/")


def downstream(names: set[str], levels: int | None = None) -> set[str]:
    """Stages that consume, directly or not, an out of a stage in ``names`` (dvc.yaml), ``names`` excluded.

    ``levels=1`` keeps the direct consumers only: what ``dvc status`` lists after ``names`` reran, since
    it compares each stage's deps in the workspace with dvc.lock and the stages after those still see
    their recorded deps.
    """
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    found: set[str] = set()
    frontier = set(names)
    level = 0
    while frontier and (levels is None or level < levels):
        outs = [out for name in frontier for out in _outs(stages[name])]
        frontier = {
            name
            for name, stage in stages.items()
            if name not in found | names and any(_overlaps(dep, out) for dep in stage["deps"] for out in outs)
        }
        found |= frontier
        level += 1
    return found


def _exp_run(repo: Path, *arguments: str) -> set[str]:
    """Run ``dvc exp run`` with ``arguments``; return the stages it ran (not those it found unchanged)."""
    completed = run(["dvc", "exp", "run", *arguments], repo)
    assert "error:" not in completed.stdout + completed.stderr, completed.stderr[-3000:]
    return set(re.findall(r"Running stage '([^']+)'", completed.stdout))


def _stale(repo: Path) -> set[str]:
    """Stages of dvc.yaml (not deploy/, CUDA hosts only) that ``dvc status`` reports as changed."""
    status = json.loads(run(["dvc", "status", "--json", "dvc.yaml"], repo).stdout or "{}")
    return {name.split(":")[-1] for name in status}


@pytest.fixture(scope="module")
def pipeline(smoke_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's committed smoke run, so experiments start from a clean baseline."""
    repo = copy_pipeline(smoke_pipeline, tmp_path_factory.mktemp("exp") / "repo")
    assert _stale(repo) == set()
    return repo


# Targets stop each experiment at the stages that read the params it sets (every stage is a Python
# process with tens of seconds of imports on a 2-core machine). The experiments run one after another
# in the same workspace, so `dvc status` afterwards lists what was stale before and did not rerun, plus
# the direct consumers of what reran.


def _stale_after(before: set[str], ran: set[str]) -> set[str]:
    return (before - ran) | downstream(ran, levels=1)


def test_stage2_lambda2_reaches_stage2_and_keeps_the_other_params(pipeline: Path) -> None:
    before = _stale(pipeline)
    ran = _exp_run(pipeline, "-S", "stage2.lambda2=0.02", "stage2")
    assert ran == {"stage2"}
    params = read_params(pipeline / "params.yaml")
    assert params["stage2"]["lambda2"] == 0.02
    assert params["train"]["mixed_precision"] == "fp32"  # a str after DVC's YAML 1.2 round trip
    assert _stale(pipeline) == _stale_after(before, ran)
    assert "package" in _stale(pipeline)  # the model folder, which evaluate, export and bench read
    # The stage trained with the new λ2: its logged loss is l1 + λ1(1 − SSIM) + λ2·L_aux (eq. of stage 2).
    logged = json.loads((pipeline / "dvclive/stage2/metrics.json").read_text())
    assert abs(logged["aux_loss"]) * 0.01 > 1e-5  # λ2 0.01 and 0.02 give distinguishable losses
    expected = logged["l1"] + params["stage2"]["lambda1"] * (1 - logged["ssim"]) + 0.02 * logged["aux_loss"]
    assert logged["loss"] == pytest.approx(expected, abs=2e-6)


def test_keys_of_two_sections_rerun_only_their_stages(pipeline: Path) -> None:
    before = _stale(pipeline)
    ran = _exp_run(
        pipeline, "-S", "validate.min_pairs_per_task=1", "-S", "stage1a.lr=0.0001", "validate", "stage1a"
    )
    assert ran == {"validate", "stage1a"}
    assert not {"prepare", "prior", "encode_latents"} & ran
    assert downstream(ran, levels=1) == {"stage1b"}
    assert _stale(pipeline) == _stale_after(before, ran)


def test_train_and_data_keys_rerun_their_stages_and_leave_the_rest_stale(pipeline: Path) -> None:
    before = _stale(pipeline)
    ran = _exp_run(pipeline, "-S", "prior_train.seed=1", "-S", "prior_train.vae_steps=3", "prior")
    assert ran == {"prior"}
    assert _stale(pipeline) == _stale_after(before, ran)
    assert {"encode_latents", "stage1a", "stage1b", "stage2"} <= _stale(pipeline)
    before = _stale(pipeline)
    ran = _exp_run(pipeline, "-S", "data.seed=1", "prepare")
    assert ran == {"prepare"}
    assert _stale(pipeline) == _stale_after(before, ran)
    assert downstream({"prepare"}, levels=1) <= _stale(pipeline)
