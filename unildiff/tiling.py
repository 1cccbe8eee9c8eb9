"""Padding to the model's multiple and overlapping tiles with smooth blending.

Tiles are described in **pixel** units (multiples of the model's pixel multiple), so the same tile
can be cut from any tensor whose spatial size is the image size divided by a whole factor (the
latent at 1/8, the VAE encoder's multi-scale skips, the image itself).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as functional
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from unildiff.errors import ConfigError

PROGRESS_COLUMNS = (
    TextColumn("[progress.description]{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)
"""Columns of the progress bars over files and over tile calls."""


@dataclass(frozen=True)
class Padding:
    """How much was added to the bottom and right of an image (crop it back with :func:`crop`)."""

    height: int
    width: int
    bottom: int
    right: int


def pad_to_multiple(image: torch.Tensor, multiple: int) -> tuple[torch.Tensor, Padding]:
    """Pad the bottom/right of ``image`` (reflect; replicate where it is too small to reflect).

    Args:
        image: [-1, 1], (B, C, H, W).
        multiple: the padded height and width are multiples of this.

    Returns:
        The padded image, (B, C, H', W'), and the :class:`Padding` to undo it.
    """
    height, width = image.shape[-2:]
    bottom = (-height) % multiple
    right = (-width) % multiple
    padding = Padding(height, width, bottom, right)
    if bottom == 0 and right == 0:
        return image, padding
    mode = "reflect" if bottom < height and right < width else "replicate"
    return functional.pad(image, (0, right, 0, bottom), mode=mode), padding


def crop(image: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: crop (B, C, H', W') back to (B, C, H, W)."""
    return image[..., : padding.height, : padding.width]


@dataclass(frozen=True)
class Tile:
    """One tile in pixel units; ``neighbours`` says which sides overlap another tile."""

    top: int
    left: int
    height: int
    width: int
    overlap_top: bool
    overlap_bottom: bool
    overlap_left: bool
    overlap_right: bool

    def slices(self, factor: int) -> tuple[slice, slice]:
        """The (row, column) slices of this tile in a tensor downscaled by ``factor``."""
        return (
            slice(self.top // factor, (self.top + self.height) // factor),
            slice(self.left // factor, (self.left + self.width) // factor),
        )


def _starts(size: int, tile: int, overlap: int, multiple: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = max(multiple, ((tile - overlap) // multiple) * multiple)
    count = math.ceil((size - tile) / stride) + 1
    starts = [min(index * stride, size - tile) for index in range(count)]
    return sorted(set(starts))


def tile_grid(height: int, width: int, tile: int, overlap: int, multiple: int) -> list[Tile]:
    """Cover a (height, width) image with equal-size overlapping tiles.

    Args:
        height: padded image height in pixels (a multiple of ``multiple``).
        width: padded image width in pixels (a multiple of ``multiple``).
        tile: tile side in pixels (a multiple of ``multiple``); 0 means one tile for the whole image.
        overlap: overlap between neighbouring tiles in pixels.
        multiple: the model's pixel multiple; every tile start and size is a multiple of it.

    Returns:
        Tiles in row-major order. Every tile has the same size (min(tile, side) per axis).
    """
    if tile == 0:
        return [Tile(0, 0, height, width, False, False, False, False)]
    if tile % multiple != 0:
        raise ConfigError(f"sampling.tile={tile} must be 0 or a multiple of {multiple} pixels")
    if not 0 <= overlap < tile:
        raise ConfigError(f"sampling.tile_overlap={overlap} must be in [0, tile={tile})")
    tile_height, tile_width = min(tile, height), min(tile, width)
    rows = _starts(height, tile, overlap, multiple)
    columns = _starts(width, tile, overlap, multiple)
    tiles = []
    for row_index, top in enumerate(rows):
        for column_index, left in enumerate(columns):
            tiles.append(
                Tile(
                    top,
                    left,
                    tile_height,
                    tile_width,
                    overlap_top=row_index > 0,
                    overlap_bottom=row_index < len(rows) - 1,
                    overlap_left=column_index > 0,
                    overlap_right=column_index < len(columns) - 1,
                )
            )
    return tiles


def _ramp(length: int, ramp: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D weights: 1 inside, a raised-cosine ramp over ``ramp`` samples on the overlapping ends."""
    weights = torch.ones(length)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        position = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
        rising = 0.5 - 0.5 * torch.cos(math.pi * position)
        if at_start:
            weights[:ramp] = rising
        if at_end:
            weights[length - ramp :] = rising.flip(0)
    return weights


def tile_weights(tile: Tile, factor: int, overlap: int) -> torch.Tensor:
    """Blending weights (1, 1, h, w) of ``tile`` at downscale ``factor``.

    The weights are 1 except for a raised-cosine ramp on sides that overlap a neighbour, so a single
    tile has weight 1 everywhere and blending it is exact.
    """
    height, width = tile.height // factor, tile.width // factor
    ramp = overlap // factor
    rows = _ramp(height, ramp, tile.overlap_top, tile.overlap_bottom)
    columns = _ramp(width, ramp, tile.overlap_left, tile.overlap_right)
    return (rows[:, None] * columns[None, :])[None, None]


class TileBlender:
    """Accumulates weighted tile outputs into one tensor and normalises by the summed weights.

    Args:
        shape: shape of the full output (B, C, H/factor, W/factor).
        factor: downscale factor of the output relative to pixels.
        overlap: tile overlap in pixels.
        reference: a tensor whose dtype and device the buffers use.
    """

    def __init__(self, shape: Sequence[int], factor: int, overlap: int, reference: torch.Tensor):
        self.factor = factor
        self.overlap = overlap
        self.total = torch.zeros(tuple(shape), dtype=reference.dtype, device=reference.device)
        self.weight = torch.zeros((1, 1, *shape[-2:]), dtype=reference.dtype, device=reference.device)

    def add(self, tile: Tile, value: torch.Tensor) -> None:
        """Add ``value`` (B, C, tile.height/factor, tile.width/factor) for ``tile``."""
        rows, columns = tile.slices(self.factor)
        weights = tile_weights(tile, self.factor, self.overlap).to(value)
        self.total[..., rows, columns] += value * weights
        self.weight[..., rows, columns] += weights

    def result(self) -> torch.Tensor:
        """The blended tensor (B, C, H/factor, W/factor)."""
        return self.total / self.weight


def scale_factor(full_size: int, part_size: int) -> int:
    """Whole downscale factor between a pixel size and a tensor size (e.g. 64 px → 8 latents = 8)."""
    if part_size <= 0 or full_size % part_size != 0:
        raise ValueError(f"size {full_size} is not a whole multiple of {part_size}")
    return full_size // part_size


def tiled_map(
    function: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    image: torch.Tensor,
    tiles: Sequence[Tile],
    overlap: int,
    on_tile: Callable[[int], None] | None = None,
) -> list[torch.Tensor]:
    """Apply ``function`` to pixel tiles of ``image`` and blend each of its outputs.

    Args:
        function: maps a pixel tile (B, C, h, w) to tensors at whole downscale factors of it.
        image: [-1, 1], (B, C, H, W), padded to the tiles' multiple.
        tiles: from :func:`tile_grid`.
        overlap: tile overlap in pixels.
        on_tile: called with each tile's index once it is done (progress).

    Returns:
        The blended outputs, each (B, C_k, H/factor_k, W/factor_k).
    """
    blenders: list[TileBlender] = []
    for index, tile in enumerate(tiles):
        rows, columns = tile.slices(1)
        outputs = function(image[..., rows, columns])
        if not blenders:
            for output in outputs:
                factor = scale_factor(tile.height, output.shape[-2])
                shape = (*output.shape[:-2], image.shape[-2] // factor, image.shape[-1] // factor)
                blenders.append(TileBlender(shape, factor, overlap, output))
        for blender, output in zip(blenders, outputs, strict=True):
            blender.add(tile, output)
        if on_tile is not None:
            on_tile(index)
    return [blender.result() for blender in blenders]


ProgressCallback = Callable[[int, int, str], None]
"""``callback(done, total, description)``: called after every graph call of one image."""


class TileProgress:
    """One progress task over the graph calls of one image: tiles × (encode + steps + decode).

    Args:
        progress: an active rich ``Progress`` to add the task to (removed again on :meth:`close`);
            ``None`` shows nothing.
        description: the task's first description.
        callback: also told of every call as ``callback(done, total, description)`` (``total`` is 0
            until :meth:`set_total`).
    """

    def __init__(self, progress: Progress | None, description: str, callback: ProgressCallback | None = None):
        self.progress = progress
        self.task = None if progress is None else progress.add_task(description, total=None)
        self.callback = callback
        self.done = 0
        self.total = 0

    def set_total(self, total: int) -> None:
        """The number of calls :meth:`advance` will count."""
        self.total = total
        if self.progress is not None:
            self.progress.update(self.task, total=total)

    def advance(self, description: str) -> None:
        """Count one call and describe the phase (e.g. ``denoising step 1/2, tile 3/6``)."""
        self.done += 1
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=description)
        if self.callback is not None:
            self.callback(self.done, max(self.total, self.done), description)

    def close(self) -> None:
        """Remove the task (the caller's bar over files stays)."""
        if self.progress is not None:
            self.progress.remove_task(self.task)


@contextlib.contextmanager
def tile_progress(
    progress: Progress | None, show: bool, description: str, callback: ProgressCallback | None = None
) -> Iterator[TileProgress]:
    """A :class:`TileProgress` on ``progress``; without one, on a transient bar of its own if ``show``."""
    with contextlib.ExitStack() as stack:
        if progress is None and show:
            progress = stack.enter_context(Progress(*PROGRESS_COLUMNS, transient=True))
        tracker = TileProgress(progress, description, callback)
        try:
            yield tracker
        finally:
            tracker.close()
