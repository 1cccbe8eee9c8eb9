"""Score a trained model on a named folder of pairs, without retraining: ``reports/named/<NAME>/``.

The folder holds ``lq/`` + ``gt/`` or ``input/`` + ``target/`` (matched by name,
:func:`unildiff.data.readers.read_named_pairs`). Every pair is scored as given (the degraded input) and
restored; the reports are ``metrics.json`` (the layout of the ``evaluate`` stage's, with the folder's
name as the one task) and ``per_image.csv`` (one row per pair, named by its lq file stem), written
together into ``reports/named/<NAME>/``, which is replaced whole only once both are complete.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rich.progress import Progress

from unildiff import paths
from unildiff.data.imageio import image_to_tensor
from unildiff.data.readers import NamedPair
from unildiff.errors import ConfigError, DataError
from unildiff.evaluation.metrics import MetricSuite
from unildiff.evaluation.reports import EvaluationResult, ImageRecord, metrics_payload, per_image_csv
from unildiff.imageio import DEFAULT_MAX_PIXELS, read_image
from unildiff.utils.atomic import atomic_dir

Restorer = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""Restores one image: lq [-1, 1], (1, 3, H, W) and a seeded generator -> restored, same range and shape."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def named_reports_dir(name: str, reports_dir: Path = paths.REPORTS) -> Path:
    """``<reports_dir>/named/<name>``, for a ``name`` that is one plain folder name.

    Raises:
        ConfigError: ``name`` is empty, holds a path separator, or starts with a dot or dash.
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"--name {name!r} must be a folder name: letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return Path(reports_dir) / "named" / name


def _load(path: Path, max_pixels: int) -> torch.Tensor:
    """The image at ``path`` as [-1, 1], (1, 3, H, W) float32 (any mode; alpha dropped)."""
    return image_to_tensor(read_image(path, max_pixels=max_pixels).rgb).contiguous()


def score_named_pairs(
    pairs: Sequence[NamedPair],
    restore: Restorer,
    suite: MetricSuite,
    name: str,
    seed: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    show_progress: bool = True,
) -> EvaluationResult:
    """Score every pair's input and its restoration against its gt.

    Args:
        pairs: the folder's pairs (:func:`unildiff.data.readers.read_named_pairs`).
        restore: the model (see :data:`Restorer`); each pair gets a generator seeded with ``seed``.
        suite: the metrics.
        name: the set's name: the ``task`` of every record.
        seed: the sampling seed.
        max_pixels: images above this many pixels are refused (with their size).
        show_progress: show a rich progress bar.

    Returns:
        One record per pair with the variants ``input`` and ``restored``.

    Raises:
        DataError: an image does not decode, or an lq and its gt differ in size (both files named).
    """
    records: list[ImageRecord] = []
    with Progress(disable=not show_progress) as progress:
        bar = progress.add_task(f"scoring {name}", total=len(pairs))
        for pair in pairs:
            lq, gt = _load(pair.lq_path, max_pixels), _load(pair.gt_path, max_pixels)
            if lq.shape != gt.shape:
                raise DataError(
                    f"size mismatch: lq {pair.lq_path} is {lq.shape[3]}x{lq.shape[2]}, "
                    f"gt {pair.gt_path} is {gt.shape[3]}x{gt.shape[2]}"
                )
            record = ImageRecord(pair.name, name)
            record.scores["input"] = suite.score(lq, gt)
            started = time.perf_counter()
            restored = restore(lq, torch.Generator().manual_seed(seed))
            record.seconds = time.perf_counter() - started
            record.scores["restored"] = suite.score(restored.to(gt.device, gt.dtype), gt)
            records.append(record)
            progress.advance(bar)
    for record in records:  # a learned metric that failed part-way is dropped everywhere
        for scores in record.scores.values():
            for skipped in suite.skipped:
                scores.pop(skipped, None)
    return EvaluationResult(records, suite.names, dict(suite.skipped))


def write_named_reports(result: EvaluationResult, directory: Path, source: Path) -> dict:
    """Write ``metrics.json`` and ``per_image.csv`` into ``directory``, replacing it whole at the end.

    Args:
        result: the scores.
        directory: ``reports/named/<NAME>`` (:func:`named_reports_dir`).
        source: the folder of pairs, recorded in ``metrics.json`` as ``pairs_dir``.

    Returns:
        The metrics.json payload.
    """
    import json

    payload = {"pairs_dir": str(source), **metrics_payload(result)}
    with atomic_dir(directory) as temporary:
        (temporary / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
        (temporary / "per_image.csv").write_text(per_image_csv(result))
    return payload
