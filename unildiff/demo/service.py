"""One demo request without Gradio: read an uploaded file, restore it, write the full-resolution result.

The upload is read by :func:`unildiff.imageio.read_image`, as ``unildiff restore`` reads a file: any
size, RGB, RGBA, greyscale and 16-bit files are kept; the PNG written back has the input's size, channels
and bit depth (:func:`unildiff.imageio.write_image`). Errors are :class:`~unildiff.errors.UniLDiffError`
whose one line is the page's message (the CLI prints the same line after ``error: ``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unildiff.errors import ConfigError, DataError
from unildiff.imageio import LoadedImage, read_image, write_image

BLIND = "no prompt (blind)"
"""The task selector's entry for prompt-free restoration (prompt ``""``)."""

PREVIEW_SIDE = 2048
"""Longest side of the images shown in the page; the download always has the full resolution."""

Callback = Callable[[int, int, str], None]
"""``callback(done, total, description)`` after every graph call of the pipeline."""


@dataclass(frozen=True)
class Settings:
    """The advanced panel: the sampling settings a user may change (names of ``SamplingConfig`` fields).

    Every field starts at the model's recorded value (:meth:`recorded`).
    """

    steps: int
    cfg: float
    seed: int
    tile: int
    tile_overlap: int
    auto_tile: int
    color_fix: str
    detail_fix_radius: int
    detail_fix_wide_radius: int

    @classmethod
    def recorded(cls, sampling: Any) -> Settings:
        """The values recorded with the model (``pipe.sampling``, a ``SamplingConfig``)."""
        return cls(**{item.name: getattr(sampling, item.name) for item in dataclasses.fields(cls)})

    @classmethod
    def from_page(cls, **values: Any) -> Settings:
        """Settings from the page's widgets: numbers come back as floats; whole-number fields must be whole.

        Raises:
            ConfigError: a whole-number field is not whole, naming ``sampling.<field>``.
        """
        converted: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            value = values[item.name]
            if item.type == "int":
                if value is None or float(value) != int(float(value)):
                    raise ConfigError(f"sampling.{item.name} must be a whole number, got {value}")
                value = int(float(value))
            elif item.type == "float":
                if value is None:
                    raise ConfigError(f"sampling.{item.name} must be a number, got nothing")
                value = float(value)
            converted[item.name] = value
        return cls(**converted)

    def overrides(self) -> dict[str, Any]:
        """Keyword overrides for the pipeline call (``pipe(image, prompt, **overrides)``)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Restoration:
    """The result of one request.

    Attributes:
        before: the input as shown in the page, [0, 255] uint8, (h, w, 3) (at most PREVIEW_SIDE).
        after: the restoration as shown in the page, [0, 255] uint8, (h, w, 3), the size of ``before``.
        download: the full-resolution PNG in the input's size, channels and bit depth.
        summary: one line for the page (size, mode, prompt, time).
    """

    before: np.ndarray
    after: np.ndarray
    download: Path
    summary: str


def task_choices(tasks: Mapping[str, str]) -> list[tuple[str, str]]:
    """The task selector's ``(label, value)`` entries: every trained task, then :data:`BLIND`."""
    return [(f"{name}: {prompt}", name) for name, prompt in tasks.items()] + [(BLIND, BLIND)]


def prompt_for(task: str, tasks: Mapping[str, str]) -> str:
    """The prompt sent for the selector's ``task`` ("" for :data:`BLIND`).

    Raises:
        ConfigError: ``task`` is neither a trained task nor :data:`BLIND`.
    """
    if task == BLIND:
        return ""
    if task not in tasks:
        raise ConfigError(f"unknown task {task!r} (this model knows: {', '.join(tasks)}, or {BLIND!r})")
    return tasks[task]


def describe(image: LoadedImage) -> str:
    """``"640×480, RGBA, 16-bit"``: what the page says about an input."""
    mode = {1: "greyscale", 2: "greyscale + alpha", 3: "RGB", 4: "RGBA"}[image.channels]
    return f"{image.width}×{image.height}, {mode}, {image.bit_depth}-bit"


def load_upload(path: str | Path, max_pixels: int) -> LoadedImage:
    """Read an uploaded file as ``unildiff restore`` does; errors name the file by its own name.

    Raises:
        DataError: the file is corrupt, of an unsupported type or mode, or above ``max_pixels`` pixels.
    """
    path = Path(path)
    try:
        return read_image(path, max_pixels=max_pixels)
    except DataError as error:  # the upload's temporary folder means nothing to the user
        raise DataError(str(error).replace(str(path), path.name)) from None
    except Exception as error:  # a decoder failure that read_image does not classify
        raise DataError(f"cannot read image {path.name}: {error}") from None


def display_copy(rgb: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    """``rgb`` ([0, 1], (H, W, 3)) as [0, 255] uint8, shrunk to at most ``side`` pixels a side."""
    from PIL import Image

    array = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    height, width = array.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))


def restore_upload(
    pipe: Any,
    path: str | Path,
    task: str,
    settings: Settings,
    output_dir: Path,
    max_pixels: int,
    callback: Callback | None = None,
    prompt_text: str = "",
) -> Restoration:
    """Restore the uploaded file ``path`` with ``pipe`` and write ``<stem>_restored.png`` in ``output_dir``.

    Args:
        pipe: a ``UniLDiffPipeline`` (``pipe.tasks``, ``pipe(image, prompt, generator=..., **overrides)``).
        path: the uploaded file.
        task: a key of ``pipe.tasks`` or :data:`BLIND`.
        settings: the advanced panel's values (the seed seeds the start noise).
        output_dir: where the download is written (atomically).
        max_pixels: larger images are refused, as ``unildiff restore --max-pixels`` does.
        callback: ``callback(done, total, description)`` after every graph call (the progress bar).
        prompt_text: free text sent as the prompt instead of ``task``'s (a description of the image, or
            a task phrased otherwise); empty or blank keeps ``task``'s.

    Raises:
        UniLDiffError: bad file, unknown task, or a setting the model refuses (one line each).
    """
    prompt = prompt_text.strip() or prompt_for(task, pipe.tasks)
    image = load_upload(path, max_pixels)
    started = time.perf_counter()
    # no generator: the pipeline seeds the start noise with settings.seed, as `unildiff restore` does
    result = pipe(image.rgb, prompt, output_type="np", callback=callback, **settings.overrides())
    restored = result.images[0]
    download = write_image(Path(output_dir) / f"{Path(path).stem}_restored.png", restored, like=image)
    seconds = time.perf_counter() - started
    sent = f'prompt "{prompt}"' if prompt else "no prompt (blind)"
    summary = f"{describe(image)}; {sent}; steps {settings.steps}, seed {settings.seed}; {seconds:.1f} s"
    return Restoration(display_copy(image.rgb), display_copy(restored), download, summary)
