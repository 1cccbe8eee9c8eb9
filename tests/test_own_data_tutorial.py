"""docs/data.md, "Train on your own data", followed step by step at smoke size in a scratch repository.

One run of the chain: a generated ``custom`` tree is tracked with ``dvc add``; a too-strict threshold
stops ``validate`` naming its key; ``dvc exp run … validate evaluate`` prepares, validates, trains,
packages and evaluates; ``unildiff evaluate --pairs`` scores a named test set and ``unildiff restore``
restores with the model folder, both as the tutorial types them.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.own_data import write_custom_pairs
from tests.smoke_repo import make_smoke_repo, run

pytestmark = pytest.mark.slow

FOLDER = ["-S", "data.source=folder", "-S", "data.setting=custom", "-S", "data.root=data/raw/mine"]


def _layout(tmp_path: Path, repo: Path) -> Path:
    """Step 1: 12 training pairs in data/raw/mine (lq/ + gt/) and a named test set of 3 other pictures."""
    generated = tmp_path / "generated"
    names = write_custom_pairs(generated, count=15)
    benchmark = tmp_path / "benchmark"
    for name in names:
        for side, named_side in (("lq", "input"), ("gt", "target")):
            inside = name in names[12:]
            destination = benchmark / named_side if inside else repo / "data/raw/mine" / side
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(generated / side / name, destination / name)
    return benchmark


def test_from_a_folder_of_pairs_to_a_restored_image(tmp_path: Path) -> None:
    repo = make_smoke_repo(tmp_path / "repo")
    benchmark = _layout(tmp_path, repo)

    # 2. track the folder with DVC
    run(["dvc", "add", "-q", "data/raw/mine"], repo)
    run(["git", "add", "data/raw/mine.dvc", "data/raw/.gitignore"], repo)
    run(["git", "commit", "-q", "-m", "data: mine"], repo)

    # 4. validation guards it: a failure names the key of its threshold, and nothing is trained
    strict = ["-S", "validate.min_pairs_per_task=50"]
    with pytest.raises(AssertionError) as failed:
        run(["dvc", "exp", "run", *FOLDER, *strict, "validate", "evaluate"], repo)
    assert "-> threshold validate.min_pairs_per_task; fix the data" in str(failed.value), failed.value
    assert "Running stage 'prior'" not in str(failed.value)
    run(["git", "checkout", "--", "params.yaml"], repo)

    # 3. train (the chain up to evaluate, validate included)
    output = run(["dvc", "exp", "run", *FOLDER, "validate", "evaluate"], repo).stdout
    # prepare ran in step 4 with these data params (its lock entry stayed), so it may be skipped now
    prepared = (repo / "data/prepared/manifest.csv").read_text().splitlines()[1:]
    assert len(prepared) == 12 and all(",custom," in row for row in prepared)
    for stage in (
        "validate",
        "prior",
        "encode_latents",
        "stage1a",
        "stage1b",
        "stage2",
        "package",
        "evaluate",
    ):
        assert f"Running stage '{stage}'" in output, f"{stage} did not run:\n{output}"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    dataset = next(dep for dep in lock["stages"]["prepare"]["deps"] if dep["path"] == "data/raw/mine")
    assert dataset["md5"] == yaml.safe_load((repo / "data/raw/mine.dvc").read_text())["outs"][0]["md5"]
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert set(metrics["restored"]["per_task"]) == {"custom"} and metrics["num_images"] > 0

    # 5. score the model on a named test set
    run(
        ["unildiff", "evaluate", "--pairs", str(benchmark), "--name", "benchmark",
         "--model", "models/unildiff", "--task", "custom", "--metric", "psnr"],
        repo,
    )  # fmt: skip
    named = repo / "reports/named/benchmark"
    payload = json.loads((named / "metrics.json").read_text())
    rows = list(csv.DictReader((named / "per_image.csv").open()))
    assert [row["pair_id"] for row in rows] == ["img12", "img13", "img14"]
    assert payload["num_images"] == 3 and set(payload) >= {"input", "restored", "pairs_dir"}
    for row in rows:  # the input column scores the files themselves; the restored one is a number
        lq, gt = (np.asarray(Image.open(benchmark / side / f"{row['pair_id']}.png"), np.float64)
                  for side in ("input", "target"))  # fmt: skip
        assert float(row["input_psnr"]) == pytest.approx(
            10 * np.log10(255**2 / np.mean((lq - gt) ** 2)), abs=0.05
        )
        assert np.isfinite(float(row["restored_psnr"]))

    # 6. restore with the result
    photo = benchmark / "input" / "img12.png"
    restore = ["unildiff", "restore", str(photo), "-o", "restored", "--model", "models/unildiff"]
    run([*restore, "--task", "custom"], repo)
    with Image.open(repo / "restored" / "img12.png") as restored, Image.open(photo) as original:
        assert restored.size == original.size
