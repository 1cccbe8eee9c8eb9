"""Built-in prepare, PairedImageDataset, and the Great Expectations suite (including corrupted manifests)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from unildiff.data.config import DataConfig
from unildiff.data.dataset import PairedImageDataset
from unildiff.data.manifest import SPLITS, read_manifest
from unildiff.data.prepare import prepare_dataset
from unildiff.data.validate import validate_prepared, write_reports
from unildiff.data.validate_config import ValidateConfig
from unildiff.errors import DataError

TINY = DataConfig(
    setting="aio3", patch_size=32, test_patch_size=48, train_pairs_per_task=3, test_pairs_per_task=2,
    val_pairs_per_task=2, source_short_side=64,
)  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("data") / "prepared"
    prepare_dataset(TINY, output)
    return output


def _copy(prepared: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "prepared"
    shutil.copytree(prepared, copy)
    return copy


def _edit_manifest(prepared: Path, row_index: int, **changes: str) -> None:
    path = prepared / "manifest.csv"
    with path.open(newline="") as stream:
        records = list(csv.DictReader(stream))
    records[row_index].update(changes)
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def test_builtin_prepare_is_deterministic_and_split_by_source(prepared: Path, tmp_path: Path) -> None:
    rows = read_manifest(prepared)
    assert len(rows) == 5 * 3 + 5 * 2 + 5 * 2
    sources = {split: {row.source_id for row in rows if row.split == split} for split in SPLITS}
    assert all(sources.values())
    assert not sources["train"] & sources["test"] and not sources["train"] & sources["val"]
    assert not sources["val"] & sources["test"]
    assert {(row.height, row.width) for row in rows if row.split == "test"} == {(48, 48)}
    again = tmp_path / "again"
    assert prepare_dataset(TINY, again) == rows
    for row in rows[:4]:
        assert (again / row.lq_path).read_bytes() == (prepared / row.lq_path).read_bytes()


def test_paired_dataset_items(prepared: Path) -> None:
    dataset = PairedImageDataset(prepared, "train", crop_size=16, seed=0)
    item = dataset[0]
    assert item["lq"].shape == item["gt"].shape == (3, 16, 16)
    assert item["lq"].dtype == torch.float32 and -1.0 <= item["gt"].min() and item["gt"].max() <= 1.0
    assert item["prompt"] == "remove noise" and item["task"] == "denoise_15"
    assert torch.equal(dataset[0]["gt"], item["gt"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["gt"], item["gt"])
    whole = PairedImageDataset(prepared, "test", crop_size=None)
    assert len(whole) == 10 and whole[0]["lq"].shape == (3, 48, 48)


def test_suite_passes_on_prepared_data_and_writes_reports(prepared: Path, tmp_path: Path) -> None:
    report = validate_prepared(prepared, "aio3", ValidateConfig(min_pairs_per_task=2))
    assert report.success and report.pairs == 35 and not report.failures, report.failures
    assert report.per_task["derain"] == {"train": 3, "val": 2, "test": 2}
    assert {envelope.task for envelope in report.envelopes} == {
        "denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"
    }  # fmt: skip
    write_reports(report, tmp_path / "validation.json", tmp_path / "validation.html")
    metrics = json.loads((tmp_path / "validation.json").read_text())
    assert metrics["success"] is True and metrics["failed_pairs"] == 0
    page = (tmp_path / "validation.html").read_text()
    assert "PASSED" in page and "What each task's recipe allows" in page
    report.raise_for_failure()


@pytest.mark.parametrize(
    ("corruption", "expectation"),
    [
        ({"task": "desnow"}, "task is not in the setting [expect_column_values_to_be_in_set(column='task')]"),
        ({"height": "33"}, "lq height differs from the manifest [expect_column_pair_values_to_be_equal("
         "column_A='height', column_B='lq_height')]"),
        ({"lq_path": "train/lq/missing.png"}, "lq cannot be decoded [expect_column_values_to_be_in_set("
         "column='lq_readable')]"),
        ({"source_id": "TEST_SOURCE"}, "source photo is in more than one split"),
        ({"pair_id": "test-dehaze-00001"}, "pair id is not unique [expect_column_values_to_be_unique("),
        ({"degradations": "haze"}, "degradations column is not the task's recipe"),
    ],
)  # fmt: skip
def test_suite_rejects_corrupted_manifest(
    prepared: Path, tmp_path: Path, corruption: dict, expectation: str
) -> None:
    copy = _copy(prepared, tmp_path)
    rows = read_manifest(copy)
    if corruption.get("source_id") == "TEST_SOURCE":
        corruption = {"source_id": next(row.source_id for row in rows if row.split == "test")}
    _edit_manifest(copy, 0, **corruption)
    report = validate_prepared(copy, "aio3", ValidateConfig(min_pairs_per_task=2))
    assert not report.success
    with pytest.raises(DataError) as raised:
        report.raise_for_failure()
    message = str(raised.value)
    part = next((part for part in message.split(" | ") if expectation in part), None)
    assert part is not None, message
    assert f"pair_id={corruption.get('pair_id', rows[0].pair_id)}" in part


def test_suite_rejects_too_few_pairs_and_wrong_size_image(prepared: Path, tmp_path: Path) -> None:
    report = validate_prepared(prepared, "aio3", ValidateConfig(min_pairs_per_task=4))
    with pytest.raises(DataError, match=r"column='pairs', min_value=4.*split=train, task=denoise_15"):
        report.raise_for_failure()
    copy = _copy(prepared, tmp_path)
    row = read_manifest(copy)[1]
    from unildiff.data.imageio import write_image

    write_image(copy / row.gt_path, np.zeros((8, 8, 3), np.float32))
    failures = validate_prepared(copy, "aio3", ValidateConfig()).failures
    assert {failure.arguments for failure in failures} >= {"column_A='height', column_B='gt_height'"}
    pair_failures = [failure for failure in failures if not failure.group]
    assert all(failure.pair_ids == (row.pair_id,) for failure in pair_failures), pair_failures
