"""Folder readers (PromptIR/AdaIR, CDD-11, custom) against small trees, including broken ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unildiff.data.config import DataConfig
from unildiff.data.imageio import read_image, write_image
from unildiff.data.manifest import read_manifest
from unildiff.data.prepare import prepare_dataset
from unildiff.data.readers import read_folder_pairs
from unildiff.data.settings import CDD11_TASKS, get_setting
from unildiff.errors import DataError


def _png(path: Path, seed: int = 0, size: tuple[int, int] = (20, 24)) -> None:
    write_image(path, np.random.default_rng(seed).random((*size, 3), dtype=np.float32))


def _promptir_tree(root: Path, five: bool = False) -> Path:
    for index in range(2):
        _png(root / "Train/Denoise" / f"clean{index}.png", index)
        _png(root / "Train/Derain/rainy" / f"rain-{index}.png", index)
        _png(root / "Train/Derain/gt" / f"norain-{index}.png", index)
        _png(root / "Train/Dehaze/original" / f"{index:04d}.png", index)
        _png(root / "Train/Dehaze/synthetic/part1" / f"{index:04d}_0.8_0.2.png", index)
        _png(root / "Train/Dehaze/synthetic/part1" / f"{index:04d}_0.9_0.1.png", index)
        _png(root / "test/denoise/bsd68" / f"test{index}.png", index)
        _png(root / "test/derain/Rain100L/input" / f"rain-{index}.png", index)
        _png(root / "test/derain/Rain100L/target" / f"norain-{index}.png", index)
        _png(root / "test/dehaze/input" / f"{index:04d}_0.8_0.2.png", index)
        _png(root / "test/dehaze/target" / f"{index:04d}.png", index)
        if five:
            for train, lq, gt, test in (
                ("Deblur", "blur", "sharp", "deblur/gopro"),
                ("Enhance", "low", "gt", "enhance/lol"),
            ):
                _png(root / "Train" / train / lq / f"{index}.png", index)
                _png(root / "Train" / train / gt / f"{index}.png", index)
                _png(root / "test" / test / "input" / f"{index}.png", index)
                _png(root / "test" / test / "target" / f"{index}.png", index)
    return root


def _counts(pairs) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for pair in pairs:
        counts[(pair.split, pair.task)] = counts.get((pair.split, pair.task), 0) + 1
    return counts


def test_promptir_aio3_tree(tmp_path: Path) -> None:
    pairs = read_folder_pairs(_promptir_tree(tmp_path), get_setting("aio3"))
    counts = _counts(pairs)
    assert counts[("train", "denoise_15")] == 2 and counts[("test", "denoise_50")] == 2
    assert counts[("train", "dehaze")] == 4  # two synthetic images per original
    derain = [pair for pair in pairs if pair.task == "derain" and pair.split == "train"]
    assert [(pair.lq_path.name, pair.gt_path.name) for pair in derain] == [
        ("rain-0.png", "norain-0.png"),
        ("rain-1.png", "norain-1.png"),
    ]
    assert all(pair.lq_path is None for pair in pairs if pair.task.startswith("denoise"))


def test_adair_aio5_tree_tests_sigma_25_only(tmp_path: Path) -> None:
    counts = _counts(read_folder_pairs(_promptir_tree(tmp_path, five=True), get_setting("aio5")))
    assert counts[("train", "deblur")] == 2 and counts[("test", "lowlight")] == 2
    assert ("test", "denoise_15") not in counts and counts[("test", "denoise_25")] == 2


def test_unmatched_derain_pair_names_both_sides(tmp_path: Path) -> None:
    root = _promptir_tree(tmp_path)
    (root / "Train/Derain/gt/norain-1.png").unlink()
    with pytest.raises(DataError, match=r"rain-1\.png.*Derain/gt"):
        read_folder_pairs(root, get_setting("aio3"))


def test_dehaze_without_original_is_an_error(tmp_path: Path) -> None:
    root = _promptir_tree(tmp_path)
    _png(root / "Train/Dehaze/synthetic/part1/0007_0.8_0.2.png")
    with pytest.raises(DataError, match=r"0007_0\.8_0\.2\.png.*'0007'"):
        read_folder_pairs(root, get_setting("aio3"))


def test_missing_task_folder_is_named(tmp_path: Path) -> None:
    root = _promptir_tree(tmp_path)  # aio3 tree lacks Deblur/Enhance
    with pytest.raises(DataError, match="Deblur"):
        read_folder_pairs(root, get_setting("aio5"))


def test_missing_root_names_the_param(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root"):
        read_folder_pairs(tmp_path / "nowhere", get_setting("aio3"))


def _cdd11_tree(root: Path) -> Path:
    for split in ("train", "test"):
        for index in range(2):
            _png(root / split / "clear" / f"{index}.png", index)
            for task in CDD11_TASKS:
                _png(root / split / task / f"{index}.png", index + 10)
    return root


def test_cdd11_tree_and_broken_variants(tmp_path: Path) -> None:
    root = _cdd11_tree(tmp_path)
    counts = _counts(read_folder_pairs(root, get_setting("cdd11")))
    assert len(counts) == 22 and set(counts.values()) == {2}
    _png(root / "test/low_haze/7.png")
    with pytest.raises(DataError, match=r"low_haze/7\.png.*test/clear"):
        read_folder_pairs(root, get_setting("cdd11"))
    (root / "test/low_haze/7.png").unlink()
    (root / "train/fog").mkdir()
    with pytest.raises(DataError, match="fog.*valid: clear, low, haze"):
        read_folder_pairs(root, get_setting("cdd11"))


def test_custom_layout_splits_by_file_and_rejects_orphans(tmp_path: Path) -> None:
    for index in range(4):
        _png(tmp_path / "lq" / f"img{index}.png", index)
        _png(tmp_path / "gt" / f"img{index}.png", index + 1)
    pairs = read_folder_pairs(tmp_path, get_setting("custom"), test_fraction=0.25, seed=0)
    assert _counts(pairs) == {("train", "custom"): 3, ("test", "custom"): 1}
    _png(tmp_path / "gt" / "orphan.png")
    with pytest.raises(DataError, match=r"gt .*orphan\.png has no lq"):
        read_folder_pairs(tmp_path, get_setting("custom"))


def test_undecodable_image_names_its_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        read_image(broken)


def test_prepare_from_folder_writes_pairs_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    root = _cdd11_tree(tmp_path / "raw")
    output = tmp_path / "prepared"
    config = DataConfig(setting="cdd11", source="folder", root=root)
    rows = prepare_dataset(config, output)
    assert len(rows) == 44 and read_manifest(output) == rows
    assert {row.degradations for row in rows} == {"real"}
    assert read_image(output / rows[0].lq_path).shape == (20, 24, 3)
    (root / "train/rain/1.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"rain/1\.png"):
        prepare_dataset(config, tmp_path / "second")
    assert not (tmp_path / "second").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_real_pair_with_different_sizes_names_both_files(tmp_path: Path) -> None:
    for index in range(2):
        _png(tmp_path / "raw/lq" / f"{index}.png", index)
        _png(tmp_path / "raw/gt" / f"{index}.png", index, size=(20, 24) if index else (22, 24))
    config = DataConfig(setting="custom", source="folder", root=tmp_path / "raw")
    with pytest.raises(DataError, match=r"lq .*lq/0\.png.*gt .*gt/0\.png"):
        prepare_dataset(config, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


def test_colour_photos_are_weighted_in_the_training_round_robin() -> None:
    from types import SimpleNamespace

    import numpy as np

    from unildiff.data.sources import is_colour, weighted_sources

    grey = np.repeat(np.random.default_rng(0).random((8, 8, 1)), 3, axis=2)
    colour = np.random.default_rng(1).random((8, 8, 3))
    assert not is_colour(grey) and is_colour(colour)
    photos = {"a/grey": SimpleNamespace(image=grey), "b/colour": SimpleNamespace(image=colour)}
    assert weighted_sources(["a/grey", "b/colour"], photos, 1) == ["a/grey", "b/colour"]
    assert weighted_sources(["a/grey", "b/colour"], photos, 3) == ["a/grey"] + ["b/colour"] * 3
