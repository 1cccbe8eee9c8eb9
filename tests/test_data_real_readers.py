"""Settings single, autodir and udc, and the RainDrop and UDC readers, on trees the tests build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_data_readers import _counts, _png, _promptir_tree
from unildiff.data.config import DataConfig
from unildiff.data.manifest import read_manifest
from unildiff.data.prepare import prepare_dataset
from unildiff.data.readers import read_folder_pairs
from unildiff.data.settings import SINGLE_TASKS, get_setting
from unildiff.errors import ConfigError, DataError


def _raindrop_tree(root: Path, count: int = 2) -> Path:
    for folder in ("train", "test_a"):
        for index in range(count):
            _png(root / folder / "data" / f"{index}_rain.png", index)
            _png(root / folder / "gt" / f"{index}_clean.png", index + 10)
    return root


def _udc_tree(root: Path, train: bool = True, test: str = "Test") -> Path:
    splits = ([("Train", 3)] if train else []) + [(test, 2)]
    for split, count in splits:
        for display in ("Toled", "Poled"):
            for index in range(count):
                _png(root / split / display / "LQ" / f"{index}.png", index)
                _png(root / split / display / "HQ" / f"{index}.png", index + 10)
    return root


def test_single_setting_is_the_named_task_only():
    setting = get_setting("single", task="derain")
    assert [task.name for task in setting.train_tasks] == ["derain"]
    assert setting.task_names == ("derain",)
    assert "raindrop" in SINGLE_TASKS


@pytest.mark.parametrize("task", ["", "desnow"])
def test_single_setting_without_a_valid_task_lists_the_names(task):
    expected = r"data.setting=single needs data.task, one of denoise_15, .*raindrop"
    with pytest.raises(ConfigError, match=expected):
        get_setting("single", task=task)


def test_a_task_for_another_setting_is_an_error():
    with pytest.raises(ConfigError, match="data.task='derain' is read only with data.setting=single"):
        get_setting("aio3", task="derain")


def test_single_reads_one_task_of_the_promptir_tree(tmp_path):
    pairs = read_folder_pairs(_promptir_tree(tmp_path), get_setting("single", task="dehaze"))
    assert _counts(pairs) == {("train", "dehaze"): 4, ("test", "dehaze"): 2}


def test_raindrop_layout_pairs_rain_with_clean(tmp_path):
    pairs = read_folder_pairs(_raindrop_tree(tmp_path), get_setting("single", task="raindrop"))
    assert _counts(pairs) == {("train", "raindrop"): 2, ("test", "raindrop"): 2}
    for pair in pairs:
        assert pair.lq_path.stem.removesuffix("_rain") == pair.gt_path.stem.removesuffix("_clean")
        assert pair.lq_path.parent.parent == pair.gt_path.parent.parent


def test_raindrop_unmatched_pair_names_the_image(tmp_path):
    root = _raindrop_tree(tmp_path)
    (root / "test_a/gt/1_clean.png").unlink()
    with pytest.raises(DataError, match=r"unmatched pair: lq .*test_a/data/1_rain.png has no gt"):
        read_folder_pairs(root, get_setting("single", task="raindrop"))


def test_raindrop_needs_its_test_folder(tmp_path):
    root = _raindrop_tree(tmp_path)
    for path in (root / "test_a").rglob("*.png"):
        path.unlink()
    for folder in ("data", "gt"):
        (root / "test_a" / folder).rmdir()
    (root / "test_a").rmdir()
    with pytest.raises(DataError, match=r"missing folder .*test_a"):
        read_folder_pairs(root, get_setting("single", task="raindrop"))


def test_autodir_reads_the_aio5_tree_and_raindrop(tmp_path):
    root = _promptir_tree(tmp_path, five=True)
    _raindrop_tree(root / "RainDrop")
    counts = _counts(read_folder_pairs(root, get_setting("autodir")))
    assert counts[("train", "raindrop")] == 2 and counts[("test", "raindrop")] == 2
    assert counts[("train", "deblur")] == 2 and counts[("test", "lowlight")] == 2
    assert {task for _, task in counts} == {
        "denoise_15", "denoise_25", "denoise_50", "derain", "dehaze", "deblur", "lowlight", "raindrop",
    }  # fmt: skip


def test_udc_reads_both_displays(tmp_path):
    pairs = read_folder_pairs(_udc_tree(tmp_path), get_setting("udc"))
    assert _counts(pairs) == {
        ("train", "udc_toled"): 3,
        ("train", "udc_poled"): 3,
        ("test", "udc_toled"): 2,
        ("test", "udc_poled"): 2,
    }
    assert all("Toled" in str(pair.gt_path) for pair in pairs if pair.task == "udc_toled")
    sources = {pair.task: {pair.source_id for pair in pairs if pair.split == "test"} for pair in pairs}
    assert sources["udc_toled"] == sources["udc_poled"] == {"Test/0", "Test/1"}  # one picture, two displays


def test_udc_for_zero_shot_needs_only_the_test_pairs(tmp_path):
    pairs = read_folder_pairs(_udc_tree(tmp_path, train=False, test="Val"), get_setting("udc"))
    assert _counts(pairs) == {("test", "udc_toled"): 2, ("test", "udc_poled"): 2}
    assert all(task.prompt == "" for task in get_setting("udc").test_tasks)  # zero-shot: blind


def test_udc_errors_name_the_missing_folder_and_pair(tmp_path):
    with pytest.raises(DataError, match=r"missing folder .*Test \(or .*Val\)"):
        read_folder_pairs(tmp_path, get_setting("udc"))
    root = _udc_tree(tmp_path / "udc", train=False)
    (root / "Test/Poled/HQ/0.png").unlink()
    with pytest.raises(DataError, match=r"unmatched pair: lq .*Test/Poled/LQ/0.png has no gt"):
        read_folder_pairs(root, get_setting("udc"))


def test_prepare_raindrop_from_folder_and_refuses_builtin(tmp_path):
    root = _raindrop_tree(tmp_path / "raw", count=3)
    config = DataConfig(setting="single", task="raindrop", source="folder", root=root, val_fraction=0.0)
    rows = prepare_dataset(config, tmp_path / "prepared")
    assert {(row.split, row.task, row.degradations, row.prompt) for row in rows} == {
        ("train", "raindrop", "real", "remove raindrops"),
        ("test", "raindrop", "real", "remove raindrops"),
    }
    assert len(read_manifest(tmp_path / "prepared")) == 6
    builtin = DataConfig(setting="autodir", source="builtin")
    with pytest.raises(DataError, match="task raindrop has real pairs only"):
        prepare_dataset(builtin, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_prepare_single_builtin_makes_one_task(tmp_path):
    config = DataConfig(setting="single", task="denoise_25", train_pairs_per_task=2, test_pairs_per_task=1,
                        val_pairs_per_task=1)  # fmt: skip
    rows = prepare_dataset(config, tmp_path / "prepared")
    assert {row.task for row in rows} == {"denoise_25"}
    assert np.unique([row.split for row in rows]).tolist() == ["test", "train", "val"]


def test_prepare_cli_single_task_and_its_error(tmp_path):
    from typer.testing import CliRunner

    from unildiff.cli import app

    root = _raindrop_tree(tmp_path / "raw")
    output = tmp_path / "prepared"
    command = ["prepare", "--setting", "single", "--source", "folder", "--root", str(root), "--output"]
    result = CliRunner().invoke(app, [*command, str(output), "--task", "raindrop"])
    assert result.exit_code == 0, result.output
    assert {row.task for row in read_manifest(output)} == {"raindrop"}
    result = CliRunner().invoke(app, [*command, str(tmp_path / "refused"), "--task", "desnow"])
    assert result.exit_code != 0
    assert "data.setting=single needs data.task, one of denoise_15" in result.output
    assert not (tmp_path / "refused").exists()
