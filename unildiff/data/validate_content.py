"""The per-pair statistics table the suite validates: one pass that decodes every lq and gt once.

Columns added to the manifest's (one row per pair; NaN where an image cannot be read):

- structure: ``{lq,gt}_readable``, ``{lq,gt}_{height,width,min,max}`` (decoded size, value range in [0, 1]);
- gt content: ``gt_std_min`` (smallest per-channel std), ``gt_white_fraction`` / ``gt_black_fraction``
  (pixels with all channels at 255 / at 0), ``gt_brightness`` and ``lq_brightness`` (mean luminance),
  ``gt_structure`` (see :func:`unildiff.data.validate_features.structure`), ``short_side``;
- degradation: ``lq_identical``, ``psnr_db``, ``alignment``, ``recipe_matches`` (the ``degradations``
  column is the task's recipe or ``real``), and the allowed ``psnr_low_db``/``psnr_high_db``,
  ``alignment_floor`` and ``psnr_rule`` from :mod:`unildiff.data.validate_recipe`;
- reference: ``noise_expected_db`` (the analytic PSNR of a pure-noise pair) and ``psnr_excess_db``
  (observed minus it); for the other synthetic recipes ``distribution_reference_draws`` fresh draws of
  the recipe per (task, split), spread over the group's own gts, returned beside the table as the
  reference distribution of PSNR and lq brightness;
- duplicates: ``gt_hash`` (SHA-256 of the pixels), ``gt_phash`` (63-bit perceptual hash); the 16x16 RGB
  thumbnails are returned beside the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from unildiff.data.imageio import to_uint8
from unildiff.data.manifest import COLUMNS, ManifestRow
from unildiff.data.settings import Setting, Task
from unildiff.data.validate_config import ContentRules
from unildiff.data.validate_features import (
    alignment,
    content_hash,
    luminance,
    luminance_map,
    perceptual_hash,
    psnr_db,
    structure,
    thumbnail_vector,
)
from unildiff.data.validate_recipe import (
    REAL,
    TaskEnvelope,
    analytic_noise_psnr_db,
    noise_sigma,
    real_envelope,
    simulate_envelope,
)

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def decode(path: Path) -> np.ndarray | None:
    """The 8-bit RGB pixels of an image file, uint8 (H, W, 3); None when it is missing or undecodable."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except _DECODE_ERRORS:
        return None


@dataclass(frozen=True)
class ContentTable:
    """The statistics table and what goes beside it.

    Attributes:
        frame: one row per pair (see the module docstring).
        envelopes: what each task's recipe allows, by task name.
        thumbnails: the 16x16 RGB gt thumbnails in row order (None where the gt is unreadable).
        references: ``(task, split) -> (draws, 2)`` PSNR (dB) and lq brightness of fresh recipe draws on
            the group's gts (synthetic non-noise groups only).
    """

    frame: pd.DataFrame
    envelopes: dict[str, TaskEnvelope]
    thumbnails: list[np.ndarray | None]
    references: dict[tuple[str, str], np.ndarray]


def _image_columns(side: str, image: np.ndarray | None) -> dict[str, Any]:
    if image is None:
        return {f"{side}_readable": False, f"{side}_height": -1, f"{side}_width": -1,
                f"{side}_min": math.nan, f"{side}_max": math.nan, f"{side}_brightness": math.nan}  # fmt: skip
    return {
        f"{side}_readable": True,
        f"{side}_height": int(image.shape[0]),
        f"{side}_width": int(image.shape[1]),
        f"{side}_min": float(image.min()) / 255.0,
        f"{side}_max": float(image.max()) / 255.0,
        f"{side}_brightness": float(luminance(image).mean()),
    }


def _gt_columns(gt: np.ndarray | None, gt_map: np.ndarray | None) -> dict[str, Any]:
    if gt is None or gt_map is None:
        names = ("gt_std_min", "gt_contrast", "gt_white_fraction", "gt_black_fraction", "gt_structure")
        return {name: math.nan for name in names} | {"gt_hash": None, "gt_phash": None}
    channels = np.ascontiguousarray(gt.reshape(-1, 3).T).astype(np.float32)  # (3, H*W): fast reductions
    deviations = channels.std(axis=1) / 255.0
    white = (gt[..., 0] == 255) & (gt[..., 1] == 255) & (gt[..., 2] == 255)
    black = (gt[..., 0] == 0) & (gt[..., 1] == 0) & (gt[..., 2] == 0)
    return {
        "gt_std_min": float(deviations.min()),
        "gt_contrast": float(deviations.mean()),
        "gt_white_fraction": float(white.mean()),
        "gt_black_fraction": float(black.mean()),
        "gt_structure": structure(gt_map),
        "gt_hash": content_hash(gt),
        "gt_phash": perceptual_hash(gt_map),
    }


def _pair_columns(lq: np.ndarray | None, gt: np.ndarray | None, gt_map: np.ndarray | None) -> dict[str, Any]:
    if lq is None or gt is None or gt_map is None or lq.shape != gt.shape:
        return {"lq_identical": False, "psnr_db": math.nan, "alignment": math.nan}
    return {
        "lq_identical": bool(np.array_equal(lq, gt)),
        "psnr_db": psnr_db(lq, gt),
        "alignment": alignment(luminance_map(lq), gt_map),
    }


def _draw_counts(rows: list[ManifestRow], tasks: dict[str, Task], draws: int) -> dict[int, int]:
    """Recipe draws per row: ``draws`` per (task, split) of a synthetic, non-noise task, spread evenly."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, row in enumerate(rows):
        task = tasks.get(row.task)
        if task is not None and task.steps and row.degradations != REAL and noise_sigma(task) is None:
            groups.setdefault((row.task, row.split), []).append(index)
    counts: dict[int, int] = {}
    for members in groups.values():
        if draws >= len(members):  # every gt gets draws // n or draws // n + 1 draws
            for rank, index in enumerate(members):
                counts[index] = draws // len(members) + int(rank < draws % len(members))
        else:
            for position in np.linspace(0, len(members) - 1, draws).round():
                counts[members[int(position)]] = 1
    return counts


def _recipe_draw(task: Task, gt: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """PSNR and lq brightness of ``gt`` (uint8) degraded by a fresh draw of its recipe."""
    lq = to_uint8(task.degrade(gt.astype(np.float32) / 255.0, rng))
    return psnr_db(lq, gt), float(luminance(lq).mean())


def _choose_references(frame: pd.DataFrame, task: str, rules: ContentRules) -> list[int]:
    """Row indices of the task's valid gts at the extremes of brightness, contrast and structure."""
    valid = frame[
        (frame["task"] == task) & frame["gt_readable"]
        & (frame["gt_std_min"] >= rules.gt_min_channel_std)
        & (frame["gt_white_fraction"] <= rules.gt_max_white_fraction)
        & (frame["gt_black_fraction"] <= rules.gt_max_black_fraction)
    ]  # fmt: skip
    if valid.empty:
        return []
    structured = valid[valid["gt_structure"] >= rules.alignment_min_structure]
    picks = [valid["gt_brightness"].idxmin(), valid["gt_brightness"].idxmax(), valid["gt_structure"].idxmax()]
    picks.append(valid["gt_contrast"].idxmax())
    if not structured.empty:
        picks.append(structured["gt_structure"].idxmin())
    by_brightness = list(valid["gt_brightness"].sort_values().index)
    for position in np.linspace(0, len(by_brightness) - 1, max(rules.recipe_reference_images, 2)).round():
        picks.append(by_brightness[int(position)])
    return list(dict.fromkeys(int(index) for index in picks))[: max(rules.recipe_reference_images, 1)]


def content_table(
    prepared_dir: Path, rows: list[ManifestRow], setting: Setting, rules: ContentRules
) -> ContentTable:
    """Decode every pair once and build the statistics table (see the module docstring).

    Args:
        prepared_dir: the prepared dir (image paths in ``rows`` are relative to it).
        rows: the manifest.
        setting: the data setting (its tasks give each pair's recipe).
        rules: the thresholds.
    """
    tasks = {task.name: task for task in setting.train_tasks + setting.test_tasks}
    task_index = {name: index for index, name in enumerate(tasks)}
    draw_counts = _draw_counts(rows, tasks, rules.distribution_reference_draws)
    draws: dict[tuple[str, str], list[tuple[float, float]]] = {}
    records: list[dict[str, Any]] = []
    thumbnails: list[np.ndarray | None] = []
    for index, row in enumerate(rows):
        lq, gt = decode(prepared_dir / row.lq_path), decode(prepared_dir / row.gt_path)
        task = tasks.get(row.task)
        synthetic = task is not None and bool(task.steps) and row.degradations != REAL
        record = {column: getattr(row, column) for column in COLUMNS}
        gt_map = luminance_map(gt) if gt is not None else None
        record.update(_image_columns("lq", lq) | _image_columns("gt", gt))
        record.update(_gt_columns(gt, gt_map) | _pair_columns(lq, gt, gt_map))
        record["short_side"] = min(row.height, row.width)
        record["recipe_matches"] = task is not None and row.degradations in (task.degradations, REAL)
        record["noise_expected_db"] = math.nan
        if synthetic and gt is not None:
            sigma = noise_sigma(task)
            if sigma is not None:  # pure noise: the analytic expectation is the exact reference
                record["noise_expected_db"] = analytic_noise_psnr_db(gt, sigma)
            group = draws.setdefault((row.task, row.split), [])
            for draw in range(draw_counts.get(index, 0)):
                group.append(_recipe_draw(task, gt, np.random.default_rng([rules.seed, 1, index, draw])))
        records.append(record)
        thumbnails.append(thumbnail_vector(gt) if gt is not None else None)
    frame = pd.DataFrame.from_records(records)
    frame["psnr_excess_db"] = frame["psnr_db"] - frame["noise_expected_db"]
    envelopes = _envelopes(prepared_dir, rows, frame, tasks, task_index, rules)
    _apply_envelopes(frame, envelopes, rules)
    references = {key: np.array(values, dtype=np.float64) for key, values in draws.items() if values}
    return ContentTable(frame, envelopes, thumbnails, references)


def _envelopes(
    prepared_dir: Path,
    rows: list[ManifestRow],
    frame: pd.DataFrame,
    tasks: dict[str, Task],
    task_index: dict[str, int],
    rules: ContentRules,
) -> dict[str, TaskEnvelope]:
    """One envelope per task of the data: simulated when it has synthetic pairs, else the real one."""
    envelopes: dict[str, TaskEnvelope] = {}
    for name in dict.fromkeys(frame["task"]):
        task = tasks.get(name)
        if task is None:
            continue
        if not task.steps or bool((frame.loc[frame["task"] == name, "degradations"] == REAL).all()):
            envelopes[name] = real_envelope(name, rules)
            continue
        references = []
        for index in _choose_references(frame, name, rules):
            gt = decode(prepared_dir / rows[index].gt_path)
            if gt is not None:
                references.append((rows[index].pair_id, gt))
        envelopes[name] = simulate_envelope(task, references, rules, task_index[name])
    return envelopes


def _apply_envelopes(frame: pd.DataFrame, envelopes: dict[str, TaskEnvelope], rules: ContentRules) -> None:
    """Fill ``psnr_low_db``, ``psnr_high_db``, ``alignment_floor`` and ``psnr_rule`` per pair in place."""
    low, high, floor, rule = [], [], [], []
    for task, degradations, expected, gt_structure in zip(
        frame["task"], frame["degradations"], frame["noise_expected_db"], frame["gt_structure"], strict=True
    ):
        envelope = real_envelope(task, rules) if degradations == REAL else envelopes.get(task)
        if envelope is None:
            low.append(math.nan), high.append(math.nan), floor.append(math.nan), rule.append("unknown task")
            continue
        if envelope.noise_sigma is not None:
            low.append(expected - rules.noise_tolerance_db)
            high.append(expected + rules.noise_tolerance_db)
        else:
            low.append(math.nan if envelope.psnr_low_db is None else envelope.psnr_low_db)
            high.append(math.nan if envelope.psnr_high_db is None else envelope.psnr_high_db)
        checked = envelope.alignment_floor is not None and gt_structure >= rules.alignment_min_structure
        floor.append(envelope.alignment_floor if checked else math.nan)
        rule.append(envelope.rule)
    frame["psnr_low_db"], frame["psnr_high_db"] = low, high
    frame["alignment_floor"], frame["psnr_rule"] = floor, rule
