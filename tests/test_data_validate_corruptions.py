"""Planted corruptions: each must be named (pair id + reason) in the failure message; the clean set passes.

A small built-in ``aio3`` set is prepared once; every test plants into its own copy.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unildiff.data.config import DataConfig
from unildiff.data.imageio import to_uint8
from unildiff.data.manifest import read_manifest
from unildiff.data.prepare import prepare_dataset
from unildiff.data.sources import load_builtin_photos
from unildiff.data.validate import validate_prepared, write_reports
from unildiff.data.validate_config import ContentRules, ValidateConfig
from unildiff.data.validate_features import luminance_map, structure
from unildiff.errors import DataError

SMALL = DataConfig(
    setting="aio3", patch_size=48, test_patch_size=64, train_pairs_per_task=6, test_pairs_per_task=3,
    val_pairs_per_task=3, source_short_side=128,
)  # fmt: skip
CONFIG = ValidateConfig(min_pairs_per_task=2, max_examples=20)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("planted") / "prepared"
    prepare_dataset(SMALL, output)
    return output


def _copy(prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "prepared"))


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _write(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, format="PNG")


def _named(message: str, reason: str, pair_id: str) -> bool:
    """Whether the failure part of ``reason`` in the one-line message names ``pair_id``."""
    failures = message.split(" checks: ", 1)[-1]  # after "data validation failed, N of M checks: "
    return any(part.startswith(reason) and f"pair_id={pair_id}" in part for part in failures.split(" | "))


def _structured(prepared: Path, split: str, task: str) -> list[str]:
    """Pair ids of (split, task), most structured gt first (their alignment is checked)."""
    rows = [row for row in read_manifest(prepared) if row.split == split and row.task == task]
    score = {row.pair_id: structure(luminance_map(_read(prepared / row.gt_path))) for row in rows}
    return sorted(score, key=score.get, reverse=True)


def test_clean_set_passes(clean: Path, tmp_path: Path) -> None:
    report = validate_prepared(clean, "aio3", CONFIG)
    assert report.success, report.failures
    write_reports(report, tmp_path / "validation.json", tmp_path / "validation.html")
    page = (tmp_path / "validation.html").read_text()
    assert "PASSED" in page and "data:image/png" not in page  # thumbnails only for failures


def test_every_planted_corruption_is_named(clean: Path, tmp_path: Path) -> None:
    prepared = _copy(clean, tmp_path)
    rows = {row.pair_id: row for row in read_manifest(prepared)}
    rng = np.random.default_rng(0)
    planted: list[tuple[str, str]] = []

    flat = "train-derain-00000"
    _write(prepared / rows[flat].gt_path, np.full((48, 48, 3), 128, np.uint8))
    planted.append(("gt is flat", flat))

    identical = "test-dehaze-00000"
    shutil.copyfile(prepared / rows[identical].gt_path, prepared / rows[identical].lq_path)
    planted.append(("lq is identical to gt", identical))

    resized = "test-derain-00001"
    lq = Image.fromarray(_read(prepared / rows[resized].lq_path)).resize((40, 40), Image.Resampling.BILINEAR)
    _write(prepared / rows[resized].lq_path, np.asarray(lq))
    planted.append(("lq height differs from the manifest", resized))

    truncated = "train-dehaze-00001"
    data = (prepared / rows[truncated].lq_path).read_bytes()
    (prepared / rows[truncated].lq_path).write_bytes(data[: len(data) // 2])
    planted.append(("lq cannot be decoded", truncated))

    swapped, other = _structured(prepared, "train", "denoise_15")[:2]
    shutil.copyfile(prepared / rows[other].lq_path, prepared / rows[swapped].lq_path)
    planted.append(("lq does not line up with its gt", swapped))

    saturated = "train-denoise_50-00002"
    gt = _read(prepared / rows[saturated].gt_path).copy()
    gt[: int(0.6 * gt.shape[0])] = 255
    _write(prepared / rows[saturated].gt_path, gt)
    planted.append(("gt is blown out", saturated))

    leaked, test_pair = "train-dehaze-00003", "test-denoise_25-00000"
    small = Image.fromarray(_read(prepared / rows[test_pair].gt_path)).resize(
        (48, 48), Image.Resampling.LANCZOS
    )
    _write(prepared / rows[leaked].gt_path, np.asarray(small))
    planted.append(("gt is the same picture as a gt of another split", leaked))
    planted.append(("gt is the same picture as a gt of another split", test_pair))

    noisy = "train-denoise_25-00004"
    gt = _read(prepared / rows[noisy].gt_path)
    _write(prepared / rows[noisy].lq_path, to_uint8(gt / 255.0 + rng.normal(0.0, 35 / 255.0, gt.shape)))
    planted.append(("lq is more degraded than its recipe allows", noisy))

    report = validate_prepared(prepared, "aio3", CONFIG)
    assert not report.success
    with pytest.raises(DataError) as raised:
        report.raise_for_failure()
    message = str(raised.value)
    assert "\n" not in message
    missing = [(reason, pair_id) for reason, pair_id in planted if not _named(message, reason, pair_id)]
    assert not missing, f"not named: {missing}\n{message}"
    # no clean pair is blamed by a per-pair check (distribution checks show a failed group's extremes)
    pair_failures = [failure for failure in report.failures if not failure.group]
    assert {pair_id for failure in pair_failures for pair_id in failure.pair_ids} <= {p for _, p in planted}

    write_reports(report, tmp_path / "validation.json", tmp_path / "validation.html")
    page = (tmp_path / "validation.html").read_text()
    assert "FAILED" in page
    for _, pair_id in planted:
        assert f"{pair_id} (LQ | GT)" in page
    assert page.count("data:image/png;base64,") >= 2 * len(planted) - 2  # the truncated lq has no thumbnail
    assert "[LQ unreadable]" in page


def test_a_drifted_noise_level_fails_the_distribution_check(clean: Path, tmp_path: Path) -> None:
    prepared = _copy(clean, tmp_path)
    rng = np.random.default_rng(1)
    for row in read_manifest(prepared):
        if row.task == "denoise_25" and row.split == "train":  # a new export at σ 27 instead of 25
            gt = _read(prepared / row.gt_path)
            _write(prepared / row.lq_path, to_uint8(gt / 255.0 + rng.normal(0.0, 27 / 255.0, gt.shape)))
    rules = ContentRules(noise_tolerance_db=2.0)  # so that only the distribution checks can see it
    report = validate_prepared(prepared, "aio3", dataclasses.replace(CONFIG, content=rules))
    # Only distribution checks fire (the mean and, at this drift, the quantiles), all on that task/split.
    assert report.failures, "a drifted noise level passed"
    assert all("drifted from its recipe" in failure.reason for failure in report.failures), report.failures
    assert all(failure.group == "task=denoise_25, split=train" for failure in report.failures)
    mean = next(failure for failure in report.failures if failure.reason.startswith("mean psnr_db drifted"))
    assert mean.examples[0].startswith("task=denoise_25, split=train: observed -0.")


def _folder_dataset(root: Path) -> None:
    """A ``custom`` folder of 12 real-looking pairs: structured 64 px crops, lq = haze + noise."""
    rng = np.random.default_rng(2)
    count = 0
    for photo in load_builtin_photos(256):
        image = to_uint8(photo.image)
        for top, left in ((0, 0), (96, 96), (160, 32)):
            gt = np.ascontiguousarray(image[top : top + 64, left : left + 64])
            if structure(luminance_map(gt)) < 0.08 or count == 12:
                continue
            lq = to_uint8(gt / 255.0 * 0.6 + 0.35 + rng.normal(0.0, 0.03, gt.shape))
            for side, array in (("lq", lq), ("gt", gt)):
                (root / side).mkdir(parents=True, exist_ok=True)
                _write(root / side / f"img{count:02d}.png", array)
            count += 1
    assert count == 12


def test_real_pairs_lq_not_gt_and_alignment(tmp_path: Path) -> None:
    _folder_dataset(tmp_path / "raw")
    prepared = tmp_path / "prepared"
    config = DataConfig(setting="custom", source="folder", root=tmp_path / "raw", val_fraction=0.2)
    rows = prepare_dataset(config, prepared)
    assert {row.degradations for row in rows} == {"real"}
    report = validate_prepared(prepared, "custom", CONFIG)
    assert report.success, report.failures
    by_split = {}
    for row in rows:
        by_split.setdefault(row.split, []).append(row)
    first, second = by_split["train"][:2]  # a mis-paired file: two lq files swapped
    first_lq, second_lq = (prepared / first.lq_path).read_bytes(), (prepared / second.lq_path).read_bytes()
    (prepared / first.lq_path).write_bytes(second_lq)
    (prepared / second.lq_path).write_bytes(first_lq)
    identical = by_split["test"][0]  # a "degraded" file that is really the gt
    shutil.copyfile(prepared / identical.gt_path, prepared / identical.lq_path)
    report = validate_prepared(prepared, "custom", CONFIG)
    with pytest.raises(DataError) as raised:
        report.raise_for_failure()
    message = str(raised.value)
    for pair_id in (first.pair_id, second.pair_id):
        assert _named(message, "lq does not line up with its gt", pair_id), message
    assert _named(message, "lq is identical to gt", identical.pair_id), message
    assert _named(message, "lq is less degraded than its recipe allows", identical.pair_id), message
