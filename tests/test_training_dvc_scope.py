"""``dvc exp run -S section.key=value`` scope: each param reruns exactly the stages that read it.

Params are set by DVC's own writer (``dvc.utils.hydra.apply_overrides``, what ``dvc exp run -S`` calls:
a Hydra override, then a ruamel.yaml YAML 1.2 round trip of params.yaml), and ``dvc status`` on a
committed placeholder pipeline lists the stages whose own params changed. What follows them reruns
through their outs; ``tests/test_dvc_exp_run.py`` checks that with real ``dvc exp run`` runs.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml

from tests.smoke_repo import REPO_ROOT, make_smoke_repo, run
from unildiff.params import read_params

pytestmark = pytest.mark.slow

TRAINING = {"prior", "encode_latents", "stage1a", "stage1b", "stage2"}
#: One key of every section (and of every stage): the stages whose own params it changes.
SCOPE = {
    ("data.seed", 1): {"prepare"},
    ("data.setting", "aio5"): {"prepare", "validate", "package", "card"},  # the model records its tasks
    ("data.task", "derain"): {"prepare", "validate"},
    ("validate.min_pairs_per_task", 1): {"validate"},
    ("prior_train.vae_steps", 3): {"prior"},
    ("train.seed", 1): TRAINING - {"prior"},  # the prior's seed is prior_train.seed
    ("prior_train.seed", 1): {"prior"},
    ("train.log_every", 2): TRAINING - {"encode_latents"},
    # the restoration stages' switch (the prior keeps its prompts); the model folder records no tasks
    ("train.prompts", False): {"stage1a", "stage1b", "stage2", "package"},
    ("daff.width", 32): {"stage1a"},
    ("stage1a.lr", 1e-4): {"stage1a"},
    ("stage1b.lr_denoiser", 2e-5): {"stage1b"},
    ("stage2.lambda2", 0.02): {"stage2"},
    ("daem.num_experts", 3): {"stage2"},
    ("start.timestep", 39): {"stage1a", "stage1b", "stage2", "package"},  # training and the model folder
    ("sampling.cfg", 4.0): {"package"},  # recorded in the model folder, which evaluate/export/bench read
    ("evaluate.grid_images", 1): {"evaluate"},
    ("export.parity_steps", 1): {"export"},
    ("bench.repeats", 2): {"bench"},
    ("gate.metrics_file", "other.json"): set(),  # read by `unildiff check-metrics` only
}


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
    """Stages of dvc.yaml whose own deps or params changed (what ``dvc repro --dry`` lists first).

    DVC's Python API, in this process: one ``dvc status`` costs about half the CPU of a ``dvc`` process.
    """
    from dvc.repo import Repo

    # DVC resolves the outs' paths against the working directory: open the repo from inside it.
    with contextlib.chdir(repo), Repo(".") as dvc_repo:
        status = dvc_repo.status(targets=["dvc.yaml"])
    return {name.split(":")[-1] for name in status}


@pytest.fixture(scope="module")
def placeholder_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke repo whose every out is a committed placeholder, so ``dvc status`` lists nothing."""
    repo = make_smoke_repo(tmp_path_factory.mktemp("scope") / "repo")
    for stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].values():
        for path in _out_paths(stage):
            _placeholder(repo / path)
    run(["dvc", "commit", "--force", "--quiet", "dvc.yaml"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "placeholders"], repo)
    assert _would_run(repo) == set()
    return repo


def test_each_param_reruns_exactly_the_stages_that_read_it(placeholder_repo: Path) -> None:
    from dvc.utils.hydra import apply_overrides

    wrong = {}
    for (key, value), expected in SCOPE.items():
        apply_overrides(placeholder_repo / "params.yaml", [f"{key}={value!r}"])
        section, name = key.split(".")
        assert read_params(placeholder_repo / "params.yaml")[section][name] == value, key
        would_run = _would_run(placeholder_repo)
        if would_run != expected:
            wrong[key] = {"expected": sorted(expected), "dvc": sorted(would_run)}
        run(["git", "checkout", "params.yaml"], placeholder_repo)
    assert not wrong, f"stages DVC would rerun differ from the params they read: {wrong}"


def test_prior_declares_every_train_key_it_reads() -> None:
    """The prior lists the ``train`` keys one by one (all but ``prompts`` and ``seed``): a new key must be
    added there."""
    import dataclasses

    from unildiff.training.config import TrainConfig

    declared = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["prior"]["params"]
    train_keys = {entry.split(".", 1)[1] for entry in declared if entry.startswith("train.")}
    assert "train" not in declared
    assert train_keys == {field.name for field in dataclasses.fields(TrainConfig)} - {"prompts", "seed"}
