"""Scoring folders (``read_named_pairs``) and the check that ``data.root`` lies inside the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unildiff.data.imageio import write_image
from unildiff.data.readers import check_dataset_root, read_named_pairs
from unildiff.errors import ConfigError, DataError


def _png(path: Path, seed: int = 0) -> None:
    write_image(path, np.random.default_rng(seed).random((12, 16, 3), dtype=np.float32))


def _names(pairs) -> list[tuple[str, str, str]]:
    return [(pair.name, pair.lq_path.name, pair.gt_path.name) for pair in pairs]


def test_lq_gt_folder_matches_by_stem(tmp_path: Path) -> None:
    for name in ("b", "a", "c"):
        _png(tmp_path / "lq" / f"{name}.png")
        _png(tmp_path / "gt" / f"{name}.png")
    assert _names(read_named_pairs(tmp_path)) == [("a", "a.png", "a.png"), ("b", "b.png", "b.png"),
                                                  ("c", "c.png", "c.png")]  # fmt: skip


def test_promptir_test_sets_match_by_their_conventions(tmp_path: Path) -> None:
    rain = tmp_path / "Rain100L"
    for index in range(2):
        _png(rain / "input" / f"rain-{index}.png")
        _png(rain / "target" / f"norain-{index}.png")
    assert _names(read_named_pairs(rain)) == [("rain-0", "rain-0.png", "norain-0.png"),
                                              ("rain-1", "rain-1.png", "norain-1.png")]  # fmt: skip
    sots = tmp_path / "SOTS"
    for index in range(2):
        _png(sots / "Input" / f"{index:04d}_0.8_0.2.png")
        _png(sots / "Target" / f"{index:04d}.png")
    pairs = read_named_pairs(sots)
    assert [(pair.lq_path.name, pair.gt_path.name) for pair in pairs] == [
        ("0000_0.8_0.2.png", "0000.png"),
        ("0001_0.8_0.2.png", "0001.png"),
    ]


def test_an_unmatched_file_is_an_error_naming_it(tmp_path: Path) -> None:
    for name in ("a", "b"):
        _png(tmp_path / "lq" / f"{name}.png")
        _png(tmp_path / "gt" / f"{name}.png")
    _png(tmp_path / "lq" / "extra.png")
    with pytest.raises(DataError, match=r"unmatched pair: lq .*lq/extra\.png has no gt with key 'extra'"):
        read_named_pairs(tmp_path)
    (tmp_path / "lq" / "extra.png").unlink()
    _png(tmp_path / "gt" / "orphan.png")
    with pytest.raises(DataError, match=r"unmatched pair: gt .*gt/orphan\.png has no lq"):
        read_named_pairs(tmp_path)


def test_a_folder_without_exactly_one_layout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folder not found"):
        read_named_pairs(tmp_path / "nowhere")
    (tmp_path / "lq").mkdir()
    with pytest.raises(DataError, match=r"must hold lq/ \+ gt/ or input/ \+ target/ \(found neither\)"):
        read_named_pairs(tmp_path)
    for name in ("gt", "input", "target"):
        (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=r"\(found both\)"):
        read_named_pairs(tmp_path)


def test_dataset_root_inside_the_repository_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "data/raw/mine").mkdir(parents=True)
    assert check_dataset_root(Path("data/raw/mine"), tmp_path) == Path("data/raw/mine")
    assert check_dataset_root(tmp_path / "data/raw/mine", tmp_path) == Path("data/raw/mine")


@pytest.mark.parametrize("root", ["../photos", "ABSOLUTE", "data/raw/link"])
def test_dataset_root_outside_the_repository_is_refused_in_one_line(tmp_path: Path, root: str) -> None:
    repository, photos = tmp_path / "repo", tmp_path / "photos"
    photos.mkdir()
    (repository / "data/raw").mkdir(parents=True)
    (repository / "data/raw/link").symlink_to(photos)  # a link out of the repository is outside too
    given = Path(str(photos) if root == "ABSOLUTE" else root)
    with pytest.raises(ConfigError) as raised:
        check_dataset_root(given, repository)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"data.root {given} is outside the repository")
    assert f"`dvc import-url {photos} data/raw/photos`" in message
    assert "`dvc add data/raw/photos`" in message and message.endswith("set data.root=data/raw/photos")


def test_the_builtin_placeholder_is_refused_as_a_folder_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data/raw/builtin, the built-in source's empty placeholder"):
        check_dataset_root(Path("data/raw/builtin"), tmp_path)
