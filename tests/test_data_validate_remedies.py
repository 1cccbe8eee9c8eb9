"""Every validation failure names the params key of its threshold and says whether to fix data or threshold.

Failures are planted in copies of a tiny built-in ``aio3`` set (one of each kind: a per-pair content
check with a threshold, a structural check without one, a same-picture check, a per-split distribution
check and the pair count) and each one's part of the one-line message is read back.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unildiff.data import validate_remedies
from unildiff.data.config import DataConfig
from unildiff.data.manifest import read_manifest
from unildiff.data.prepare import prepare_dataset
from unildiff.data.validate import validate_prepared, write_reports
from unildiff.data.validate_config import ContentRules, ValidateConfig
from unildiff.data.validate_remedies import Remedy
from unildiff.errors import DataError
from unildiff.params import read_params

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = DataConfig(
    setting="aio3", patch_size=32, test_patch_size=48, train_pairs_per_task=3, test_pairs_per_task=2,
    val_pairs_per_task=2, source_short_side=64,
)  # fmt: skip
REMEDIES = {name: value for name, value in vars(validate_remedies).items() if isinstance(value, Remedy)}


def _has_key(params: dict, dotted: str) -> bool:
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("name", sorted(REMEDIES))
def test_every_remedy_names_real_params_keys_and_a_fix(name: str) -> None:
    remedy = REMEDIES[name]
    params = read_params(REPO_ROOT / "params.yaml")
    assert all(_has_key(params, key) for key in remedy.keys), (name, remedy.keys)
    assert remedy.fix.startswith(("fix the data", "fix the threshold")), remedy.fix
    if "threshold" in remedy.fix.split(":")[0]:
        assert remedy.keys, f"{name} offers to fix a threshold but names no key"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("remedies") / "prepared"
    prepare_dataset(TINY, output)
    return output


def _part(message: str, reason: str) -> str:
    """The part of the one-line failure message about the check whose reason starts with ``reason``."""
    failures = message.split(" checks: ", 1)[-1]
    part = next((part for part in failures.split(" | ") if part.startswith(reason)), None)
    assert part is not None, f"{reason!r} not in: {message}"
    return part


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_failures_name_their_threshold_key_and_what_to_fix(prepared: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(prepared, tmp_path / "prepared"))
    rows = {row.pair_id: row for row in read_manifest(copy)}
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(copy / rows["train-derain-00000"].gt_path)
    shutil.copyfile(copy / rows["test-dehaze-00000"].gt_path, copy / rows["test-dehaze-00000"].lq_path)
    test_gt = Image.fromarray(_read(copy / rows["test-denoise_25-00000"].gt_path))  # leaked into train
    test_gt.resize((32, 32), Image.Resampling.LANCZOS).save(copy / rows["train-dehaze-00001"].gt_path)
    # the built-in gts' brightness quantiles lie inside [0.02, 0.98]; this range leaves them out
    rules = ContentRules(gt_brightness_range=(0.9, 0.95))
    config = ValidateConfig(min_pairs_per_task=3, content=rules)

    report = validate_prepared(copy, "aio3", config)
    with pytest.raises(DataError) as raised:
        report.raise_for_failure()
    message = str(raised.value)
    assert "\n" not in message

    expected = {
        "gt is flat": "threshold validate.content.gt_min_channel_std; fix the data",
        "lq is identical to gt": "no threshold; fix the data",
        "gt is the same picture as a gt of another split": (
            "threshold validate.content.duplicate_max_hamming, "
            "validate.content.duplicate_max_thumbnail_difference; fix the data"
        ),
        "gt_brightness quantiles outside [0.9, 0.95]": (
            "threshold validate.content.gt_brightness_range; fix the threshold if"
        ),
        "too few pairs for a task and split": "threshold validate.min_pairs_per_task; fix the data",
    }
    for reason, remedy in expected.items():
        part = _part(message, reason)
        assert f" -> {remedy}" in part, part
    # the evidence stays: pair ids (per-pair checks) and the group (split / count checks)
    assert "pair_id=train-derain-00000" in _part(message, "gt is flat")
    assert "split=val, task=denoise_15" in _part(message, "too few pairs")
    # every outcome, passed or failed, carries its remedy, and the HTML report lists it beside each check
    assert all(outcome.remedy for outcome in report.outcomes)
    write_reports(report, tmp_path / "validation.json", tmp_path / "validation.html")
    page = (tmp_path / "validation.html").read_text()
    assert page.count("threshold validate.content.gt_min_channel_std; fix the data") == 2  # failure + table


def test_a_drifted_group_names_the_distribution_keys(prepared: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(prepared, tmp_path / "prepared"))
    rng = np.random.default_rng(3)
    for row in read_manifest(copy):
        if row.task == "denoise_15" and row.split == "train":  # exported at σ 25 instead of 15
            gt = _read(copy / row.gt_path) / 255.0
            noisy = np.clip(np.rint((gt + rng.normal(0.0, 25 / 255.0, gt.shape)) * 255.0), 0, 255)
            Image.fromarray(noisy.astype(np.uint8)).save(copy / row.lq_path)
    rules = ContentRules(noise_tolerance_db=10.0)  # only the distribution checks see it
    report = validate_prepared(copy, "aio3", dataclasses.replace(ValidateConfig(), content=rules))
    with pytest.raises(DataError) as raised:
        report.raise_for_failure()
    part = _part(str(raised.value), "mean psnr_db drifted from its recipe")
    assert "task=denoise_15, split=train" in part
    assert (
        " -> threshold validate.content.distribution_margin_db, validate.content.distribution_z; "
        "fix the data" in part
    ), part


def test_the_tutorial_table_lists_every_threshold_key() -> None:
    text = (REPO_ROOT / "docs/data.md").read_text(encoding="utf-8")
    section = text.split("## Train on your own data", 1)[1].split("### 5.", 1)[0]
    keys = {key for remedy in REMEDIES.values() for key in remedy.keys}
    # the table writes a key in full once and then by its last part within the same cell
    missing = sorted(
        key for key in keys if f"`{key}`" not in section and f"`{key.split('.')[-1]}`" not in section
    )
    assert not missing, f"docs/data.md's validation table lacks {missing}"
