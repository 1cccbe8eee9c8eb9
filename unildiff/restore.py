"""Restore image files and folders with a :class:`~unildiff.pipeline.RestorationPipeline`.

Each output keeps its input's size and mode (RGB, RGBA with the alpha copied, grayscale, 16-bit) and
is written atomically. A file that cannot be read is reported by name and skipped; the rest are still
restored. Inputs are never overwritten.

The restorations run a :class:`~unildiff.pipeline.RestorationPipeline` that the model folder built
(``UniLDiffPipeline.sampler``), so they use the model's recorded settings unless the caller overrode one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from unildiff.data.imageio import image_to_tensor, tensor_to_image
from unildiff.errors import ConfigError, DataError, UniLDiffError
from unildiff.imageio import is_supported, read_image, write_image
from unildiff.tiling import PROGRESS_COLUMNS


@dataclass(frozen=True)
class RestoreJob:
    """One file to restore and where its result goes."""

    source: Path
    destination: Path


@dataclass
class RestoreSummary:
    """What happened: files written and ``(file, reason)`` for every failure."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan_jobs(inputs: Sequence[Path], output_dir: Path) -> list[RestoreJob]:
    """Map input files and folders to output files under ``output_dir``.

    A file goes to ``output_dir/<name>``; a folder's supported images (recursively) keep their path
    relative to the folder. Files already inside ``output_dir`` are not picked up again.

    Raises:
        DataError: an input does not exist, or the output folder is an input folder or would
            overwrite an input file.
    """
    output_dir = output_dir.resolve()
    jobs: list[RestoreJob] = []
    for given in inputs:
        path = Path(given).resolve()
        if not path.exists():
            raise DataError(f"input not found: {given}")
        if path.is_dir():
            if output_dir == path:
                raise DataError(f"output folder {output_dir} is the input folder {given}; choose another -o")
            for source in sorted(path.rglob("*")):
                if source.is_file() and is_supported(source) and not _inside(source, output_dir):
                    jobs.append(RestoreJob(source, output_dir / source.relative_to(path)))
        else:
            jobs.append(RestoreJob(path, output_dir / path.name))
    sources = {job.source for job in jobs}
    destinations: dict[Path, Path] = {}
    for job in jobs:
        if job.destination in sources:
            raise DataError(f"refusing to overwrite input {job.destination}; choose another -o")
        if job.destination in destinations:
            raise DataError(
                f"{job.source} and {destinations[job.destination]} would both write {job.destination}"
            )
        destinations[job.destination] = job.source
    if not jobs:
        raise DataError(f"no images found in {', '.join(str(path) for path in inputs)}")
    return jobs


def restore_files(
    pipeline,
    inputs: Sequence[Path],
    output_dir: Path,
    prompt: str,
    seed: int,
    max_pixels: int,
    device: str = "cpu",
    console: Console | None = None,
) -> RestoreSummary:
    """Restore ``inputs`` (files or folders) into ``output_dir``.

    Args:
        pipeline: a :class:`~unildiff.pipeline.RestorationPipeline`; its tile calls show as a second
            bar under the bar over files.
        inputs: image files and/or folders.
        output_dir: destination folder (must not be an input folder).
        prompt: task prompt, or "" for prompt-free restoration.
        seed: each image's generator is seeded with this.
        max_pixels: images with more pixels are refused with their pixel count.
        device: torch device of the pipeline.
        console: where failures are printed (stderr by default).

    Returns:
        The files written and the failures (the caller turns failures into a non-zero exit code).
    """
    if max_pixels < 1:
        raise ConfigError(f"--max-pixels must be ≥ 1, got {max_pixels}")
    console = console or Console(stderr=True)
    jobs = plan_jobs(inputs, output_dir)
    summary = RestoreSummary()
    with Progress(*PROGRESS_COLUMNS, console=console, transient=True) as progress:
        bar = progress.add_task("restoring", total=len(jobs))
        for job in jobs:
            progress.update(bar, description=f"restoring {job.source.name}")
            try:
                image = read_image(job.source, max_pixels=max_pixels)
                lq = image_to_tensor(image.rgb).to(device)
                restored = pipeline(lq, prompt, torch.Generator().manual_seed(seed), progress=progress)
                write_image(job.destination, tensor_to_image(restored), like=image)
            except UniLDiffError as error:
                summary.failed.append((job.source, str(error)))
                console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
            else:
                summary.written.append(job.destination)
            progress.advance(bar)
    return summary
