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


class RecordingProgress:
    """Stands in for a rich Progress: records the task calls the pipeline makes."""

    def __init__(self):
        self.totals: list[int | None] = []
        self.descriptions: list[str] = []
        self.advanced = 0
        self.removed = 0

    def add_task(self, description, total=None):
        self.totals.append(total)
        return 0

    def update(self, task, total=None, advance=None, description=None):
        if total is not None:
            self.totals.append(total)
        self.advanced += advance or 0
        if description is not None:
            self.descriptions.append(description)

    def remove_task(self, task):
        self.removed += 1


def test_auto_tile_switches_tiling_on_above_its_side_only():
    from tests.test_pipeline_sampling import LocalGraphs, lq_image, make_pipeline

    graphs = LocalGraphs()
    lq = lq_image(64, 96)
    untiled = make_pipeline(graphs, auto_tile=0)(lq, "remove rain")
    graphs.denoise_batches.clear()
    fits = make_pipeline(graphs, auto_tile=96)(lq, "remove rain")  # both sides ≤ 96: one tile
    assert torch.equal(fits, untiled) and len(graphs.denoise_batches) == 3
    graphs.denoise_batches.clear()
    auto = make_pipeline(graphs, auto_tile=32, tile_overlap=16)(lq, "remove rain")
    assert len(graphs.denoise_batches) == 3 * len(tile_grid(64, 96, 32, 16, 16)) > 3
    assert torch.allclose(auto, untiled, atol=1e-4)
    explicit = make_pipeline(graphs, tile=32, tile_overlap=16, auto_tile=0)(lq, "remove rain")
    assert torch.equal(auto, explicit)


def test_progress_counts_every_tile_call_and_removes_its_task():
    from tests.test_pipeline_sampling import LocalGraphs, lq_image, make_pipeline

    progress = RecordingProgress()
    make_pipeline(LocalGraphs(), tile=32, tile_overlap=16)(lq_image(64, 96), "remove rain", progress=progress)
    tiles = len(tile_grid(64, 96, 32, 16, 16))
    assert progress.totals == [None, tiles * (3 + 2)]  # encode + 3 steps + decode, per tile
    assert progress.advanced == tiles * 5 and progress.removed == 1
    assert f"denoising step 3/3, tile {tiles}/{tiles}" in progress.descriptions
    assert progress.descriptions[-1] == f"decoding tile {tiles}/{tiles}"

    class Failing(LocalGraphs):
        def decode(self, latents, skips):
            raise RuntimeError("decoder failed")

    failing = RecordingProgress()
    with pytest.raises(RuntimeError):
        make_pipeline(Failing(), tile=32, tile_overlap=16)(lq_image(64, 96), "", progress=failing)
    assert failing.removed == 1  # the caller's bar over files does not keep a stale task


def test_tile_settings_are_checked_naming_the_param():
    from tests.test_pipeline_sampling import LocalGraphs, make_pipeline
    from unildiff.pipeline import SamplingConfig

    with pytest.raises(ConfigError, match=r"sampling\.auto_tile=40 must be 0 or a multiple of 16"):
        make_pipeline(LocalGraphs(), auto_tile=40, tile_overlap=8)
    with pytest.raises(ConfigError, match=r"tile_overlap=32 must be smaller than sampling\.auto_tile=32"):
        SamplingConfig(auto_tile=32)
    with pytest.raises(ConfigError, match=r"sampling\.auto_tile must be ≥ 0"):
        SamplingConfig(auto_tile=-16)
    assert SamplingConfig(tile=64, auto_tile=0).tile_side == 64
    assert SamplingConfig(tile=0, auto_tile=128).tile_side == 128
    assert SamplingConfig(tile=0, auto_tile=0).tile_side == 0
