"""Padding, tile grids and blending."""

from __future__ import annotations

import pytest
import torch

from unildiff.colorfix import adain_color_fix, wavelet_color_fix, wavelet_decomposition
from unildiff.errors import ConfigError
from unildiff.tiling import crop, pad_to_multiple, tile_grid, tile_weights, tiled_map


@pytest.mark.parametrize(("height", "width"), [(13, 17), (64, 64), (5, 70)])
def test_pad_then_crop_restores_the_image(height, width):
    image = torch.rand(1, 3, height, width)
    padded, padding = pad_to_multiple(image, 16)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert torch.equal(crop(padded, padding), image)


def test_grid_covers_image_with_equal_tiles():
    tiles = tile_grid(96, 160, tile=64, overlap=16, multiple=16)
    covered = torch.zeros(96, 160)
    for tile in tiles:
        assert (tile.height, tile.width) == (64, 64)
        assert tile.top % 16 == 0 and tile.left % 16 == 0
        rows, columns = tile.slices(1)
        covered[rows, columns] += 1
    assert (covered >= 1).all()
    assert len(tile_grid(64, 64, tile=64, overlap=16, multiple=16)) == 1


def test_single_tile_weights_are_one_and_bad_tiles_raise():
    (tile,) = tile_grid(64, 64, tile=128, overlap=32, multiple=16)
    assert torch.equal(tile_weights(tile, 1, 32), torch.ones(1, 1, 64, 64))
    with pytest.raises(ConfigError, match="sampling.tile"):
        tile_grid(64, 64, tile=40, overlap=8, multiple=16)
    with pytest.raises(ConfigError, match="tile_overlap"):
        tile_grid(64, 64, tile=32, overlap=32, multiple=16)


def test_tiled_map_of_a_local_function_equals_untiled():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 80, 112)

    def function(part):
        downscaled = torch.nn.functional.avg_pool2d(part, 8)  # tile-local at factor 8
        return part * 2 - 1, downscaled

    tiles = tile_grid(80, 112, tile=48, overlap=16, multiple=16)
    assert len(tiles) > 4
    full, small = tiled_map(function, image, tiles, overlap=16)
    assert torch.allclose(full, image * 2 - 1, atol=1e-6)
    assert torch.allclose(small, torch.nn.functional.avg_pool2d(image, 8), atol=1e-6)


def test_color_fixes_move_colour_to_the_lq_statistics():
    torch.manual_seed(0)
    lq = torch.rand(1, 3, 32, 32) * 0.5 - 0.6
    restored = torch.rand(1, 3, 32, 32) * 0.5 + 0.1
    fixed = adain_color_fix(restored, lq)
    assert torch.allclose(fixed.mean(dim=(-2, -1)), lq.mean(dim=(-2, -1)), atol=1e-4)
    high, low = wavelet_decomposition(restored)
    assert torch.allclose(high + low, restored, atol=1e-5)
    wavelet = wavelet_color_fix(restored, lq)
    assert (wavelet.mean() - lq.mean()).abs() < (restored.mean() - lq.mean()).abs() / 4
