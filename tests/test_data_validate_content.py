"""Units of the content checks: analytic noise PSNR, recipe corners, alignment, same-picture detection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from unildiff.data.imageio import to_uint8
from unildiff.data.settings import SETTINGS, cdd11_task
from unildiff.data.sources import load_builtin_photos
from unildiff.data.validate_config import ContentRules
from unildiff.data.validate_duplicates import same_picture_columns
from unildiff.data.validate_features import (
    IDENTICAL_PSNR_DB,
    alignment,
    content_hash,
    luminance_map,
    perceptual_hash,
    psnr_db,
    structure,
    thumbnail_vector,
)
from unildiff.data.validate_recipe import analytic_noise_psnr_db, noise_sigma, recipe_corners
from unildiff.errors import ConfigError


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """The built-in photos as uint8 (H, W, 3), short side 128."""
    return [to_uint8(photo.image) for photo in load_builtin_photos(128)]


def _crop(image: np.ndarray, top: int, left: int, size: int = 64) -> np.ndarray:
    return np.ascontiguousarray(image[top : top + size, left : left + size])


@pytest.mark.parametrize("sigma", [15.0, 25.0, 50.0])
def test_analytic_noise_psnr_matches_simulated_clipped_noise(photos: list[np.ndarray], sigma: float) -> None:
    rng = np.random.default_rng(0)
    for gt in (photos[0], np.full((64, 64, 3), 250, np.uint8), np.full((64, 64, 3), 128, np.uint8)):
        noisy = to_uint8(gt.astype(np.float32) / 255.0 + rng.normal(0.0, sigma / 255.0, gt.shape))
        assert abs(psnr_db(noisy, gt) - analytic_noise_psnr_db(gt, sigma)) < 0.15
    # mid-grey: (almost) no clipping below σ50, the textbook value 20 log10(255 / σ) (σ25 -> 20.17 dB)
    textbook = 20 * np.log10(255 / sigma)
    mid_grey = analytic_noise_psnr_db(np.full((8, 8, 3), 128, np.uint8), sigma)
    assert (
        mid_grey == pytest.approx(textbook, abs=0.01) if sigma < 50 else textbook < mid_grey < textbook + 0.2
    )
    # clipping lowers the error of saturated pixels, so the expected PSNR rises
    assert analytic_noise_psnr_db(np.full((8, 8, 3), 255, np.uint8), sigma) > 20 * np.log10(255 / sigma) + 2.5


def test_psnr_of_identical_images_is_capped() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    assert psnr_db(image, image) == IDENTICAL_PSNR_DB


def test_recipe_corners_cover_the_parameter_bounds() -> None:
    rng = np.random.default_rng(0)
    dehaze = SETTINGS["aio3"].train_tasks[4]
    corners = recipe_corners(dehaze, 16, rng)
    assert len(corners) == 4  # beta x airlight
    assert {corner[0]["beta"] for corner in corners} == {0.6, 1.8}
    composite = cdd11_task("low_haze_rain")  # 8 * 4 * 16 = 512 corners, capped
    capped = recipe_corners(composite, 16, rng)
    assert len(capped) == 16 and len(set(map(repr, capped))) == 16
    lows = tuple({key: bounds[0] for key, bounds in step.ranges.items()} for step in composite.steps)
    highs = tuple({key: bounds[1] for key, bounds in step.ranges.items()} for step in composite.steps)
    assert lows in capped and highs in capped
    assert noise_sigma(SETTINGS["aio3"].train_tasks[1]) == 25.0 and noise_sigma(dehaze) is None


def test_alignment_separates_a_pair_from_a_mispair(photos: list[np.ndarray]) -> None:
    first, second = _crop(photos[0], 20, 40), _crop(photos[2], 30, 30)
    assert structure(luminance_map(first)) > 0.05 and structure(luminance_map(second)) > 0.05
    rng = np.random.default_rng(1)
    hazy = to_uint8(first.astype(np.float32) / 255.0 * 0.4 + 0.5 + rng.normal(0.0, 0.05, first.shape))
    assert alignment(luminance_map(hazy), luminance_map(first)) > 0.5
    assert abs(alignment(luminance_map(hazy), luminance_map(second))) < 0.3
    assert structure(luminance_map(np.full((64, 64, 3), 90, np.uint8))) == pytest.approx(0.0, abs=1e-6)


def _frame(images: list[np.ndarray], splits: list[str], sources: list[str]) -> tuple[pd.DataFrame, list]:
    frame = pd.DataFrame(
        {
            "pair_id": [f"pair{index}" for index in range(len(images))],
            "split": splits,
            "source_id": sources,
            "gt_hash": [content_hash(image) for image in images],
            "gt_phash": [perceptual_hash(luminance_map(image)) for image in images],
            "gt_contrast": [float(image.reshape(-1, 3).std(axis=0).mean()) / 255.0 for image in images],
        }
    )
    return frame, [thumbnail_vector(image) for image in images]


def test_same_picture_rules(photos: list[np.ndarray]) -> None:
    crop = _crop(photos[1], 10, 10)
    from PIL import Image

    resized = np.asarray(
        Image.fromarray(_crop(photos[1], 10, 10, 96)).resize((64, 64), Image.Resampling.BICUBIC)
    )
    smaller = np.asarray(Image.fromarray(crop).resize((48, 48), Image.Resampling.LANCZOS))
    images = [
        crop,
        crop.copy(),
        crop.copy(),
        smaller,
        _crop(photos[3], 0, 0),
        resized,
        _crop(photos[4], 5, 5),
    ]
    splits = ["test", "train", "test", "val", "train", "train", "train"]
    sources = ["a", "b", "a", "c", "d", "e", "f"]
    leak, duplicate = same_picture_columns(*_frame(images, splits, sources), ContentRules())
    # pair0 (test) == pair1 (train, exact) == pair3 (val, resized): leakage both ways
    assert leak[0] == "pair1 pair3" and leak[1] == "pair0 pair2 pair3" and leak[3] == "pair0 pair1 pair2"
    # pair2 is pair0's own crop (same split, same source): not a duplicate of pair0
    assert duplicate[0] is None and duplicate[2] is None and leak[2] == "pair1 pair3"
    # unrelated photos (and a differently framed crop of the same photo) are not the same picture
    assert leak[4] is leak[5] is leak[6] is None and duplicate[4] is duplicate[5] is None
    leak, duplicate = same_picture_columns(
        *_frame([crop, crop.copy()], ["train", "train"], ["a", "b"]), ContentRules()
    )
    assert leak == [None, None] and duplicate == ["pair1", "pair0"]
    blank = np.zeros((64, 64, 3), np.uint8)  # two black crops of different photos are not "the same picture"
    blanks = _frame([blank, blank.copy()], ["train", "test"], ["a", "b"])
    assert same_picture_columns(*blanks, ContentRules()) == ([None, None], [None, None])


def test_content_rules_name_the_bad_param() -> None:
    with pytest.raises(ConfigError, match="validate.content.gt_max_white_fraction"):
        ContentRules(gt_max_white_fraction=0.0)
    with pytest.raises(ConfigError, match="validate.content.short_side_range"):
        ContentRules(short_side_range=(64, 32))
