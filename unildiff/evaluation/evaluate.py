"""Evaluate a trained UniLDiff model on a split: the degraded input, the full model and inference-time
rows beside it: without the task prompt, the plain VAE decoder instead of DAEM, no diffusion (the DAEM
decoder on the LQ latent, then the same colour and detail fixes as the full model) and the ceiling (the
DAEM decoder on the clean latent, no fixes: it measures the VAE and the decoder alone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress

from unildiff.data.imageio import tensor_to_image
from unildiff.errors import ConfigError
from unildiff.evaluation.metrics import MetricSuite, check_metric_names
from unildiff.evaluation.reports import EvaluationResult, GridRow, ImageRecord
from unildiff.pipeline import fix_against_lq

ABLATIONS = ("no_prompt", "plain_decoder", "no_diffusion", "ceiling")
"""Inference-time rows ``evaluate.ablations`` may name (docs/evaluation.md)."""


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation settings (params ``evaluate``).

    Attributes:
        metrics: metric names (see :data:`unildiff.evaluation.metrics.METRICS`); learned metrics without
            local weights are reported as skipped.
        y_channel: PSNR and SSIM on the Y channel instead of RGB.
        ablations: inference-time rows to run (subset of :data:`ABLATIONS`).
        split: the prepared split scored: ``test`` for the reports, ``val`` for tuning.
        max_images: evaluate at most this many test pairs (0 = all), spread evenly over the tasks' order.
        grid_images: rows per task grid (LQ | restored | GT).
        device: torch device.
    """

    metrics: tuple[str, ...] = ("psnr", "ssim", "lpips", "dists", "niqe", "musiq", "maniqa", "clipiqa")
    y_channel: bool = False
    ablations: tuple[str, ...] = ABLATIONS
    max_images: int = 0
    grid_images: int = 4
    device: str = "cpu"
    split: str = "test"

    def __post_init__(self) -> None:
        check_metric_names(self.metrics)
        if self.split not in ("val", "test"):
            raise ConfigError(f"evaluate.split must be 'val' or 'test', got {self.split!r}")
        for ablation in self.ablations:
            if ablation not in ABLATIONS:
                raise ConfigError(
                    f"unknown ablation {ablation!r} in evaluate.ablations (valid: {', '.join(ABLATIONS)})"
                )
        if self.max_images < 0 or self.grid_images < 0:
            raise ConfigError("evaluate.max_images and evaluate.grid_images must be ≥ 0")


@torch.no_grad()
def decode_without_diffusion(graphs, lq: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
    """The DAEM decoder on a VAE latent with no denoising step, skips from ``lq``.

    Args:
        graphs: torch :class:`~unildiff.backends.torch.TorchGraphs`.
        lq: the degraded image, [-1, 1], (1, 3, H, W).
        image: the image whose latent is decoded ([-1, 1], (1, 3, H, W)): ``None`` decodes the LQ latent
            (the ``no_diffusion`` row), the clean image gives the ``ceiling`` row.

    Returns:
        [-1, 1], (1, 3, H, W).
    """
    from unildiff.tiling import crop, pad_to_multiple

    lq_padded, padding = pad_to_multiple(lq, graphs.pixel_multiple)
    encoding = graphs.encode_lq(lq_padded)
    latent = encoding.lq_latent
    if image is not None:
        latent = graphs.encode_lq(pad_to_multiple(image, graphs.pixel_multiple)[0]).lq_latent
    return crop(graphs.decode(latent, encoding.skips).clamp(-1.0, 1.0), padding)


def _select(rows: list, max_images: int) -> list[int]:
    """Indices of at most ``max_images`` rows, round-robin over tasks so every task is represented."""
    if max_images == 0 or max_images >= len(rows):
        return list(range(len(rows)))
    by_task: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_task.setdefault(row.task, []).append(index)
    chosen: list[int] = []
    while len(chosen) < max_images:
        for indices in by_task.values():
            if indices and len(chosen) < max_images:
                chosen.append(indices.pop(0))
    return sorted(chosen)


def evaluate_model(
    pipeline,
    prepared_dir: str | Path,
    config: EvaluateConfig,
    show_progress: bool = True,
) -> EvaluationResult:
    """Restore every test pair and score it, its degraded input and the ablations.

    Every variant restores with the model's recorded sampling settings and start, and every variant of
    a pair uses the same seed (``sampling.seed``), so differences come from the variant. The full model
    gets each pair's task prompt, unless the model records no tasks (trained without prompts).

    Args:
        pipeline: the model (:class:`~unildiff.pipeline_unildiff.UniLDiffPipeline`); moved to
            ``config.device``.
        prepared_dir: the prepared data folder (``manifest.csv`` + images).
        config: evaluation settings.
        show_progress: show a rich progress bar.

    Returns:
        The per-image scores, the skipped metrics and the grid rows.
    """
    from unildiff.data.dataset import PairedImageDataset

    device = torch.device(config.device)
    dataset = PairedImageDataset(prepared_dir, config.split, crop_size=None)
    suite = MetricSuite(config.metrics, y_channel=config.y_channel, device=config.device)
    pipeline.to(config.device)
    sampling = pipeline.sampling
    full = pipeline.sampler()
    plain = None
    if "plain_decoder" in config.ablations:
        plain = pipeline.sampler(graphs=full.graphs.with_plain_decoder())

    records: list[ImageRecord] = []
    grids: dict[str, list[GridRow]] = {}
    indices = _select(dataset.rows, config.max_images)
    with Progress(disable=not show_progress) as progress:
        task_bar = progress.add_task("evaluating", total=len(indices))
        for index in indices:
            item = dataset[index]
            lq = item["lq"].unsqueeze(0).to(device)
            gt = item["gt"].unsqueeze(0).to(device)
            record = ImageRecord(item["pair_id"], item["task"])
            record.scores["input"] = suite.score(lq, gt)

            prompt = item["prompt"] if pipeline.tasks else ""  # a model trained without prompts: blind
            started = time.perf_counter()
            restored = full(lq, prompt, torch.Generator().manual_seed(sampling.seed))
            record.seconds = time.perf_counter() - started
            record.scores["restored"] = suite.score(restored, gt)

            if "no_prompt" in config.ablations:
                no_prompt = full(lq, "", torch.Generator().manual_seed(sampling.seed))
                record.scores["no_prompt"] = suite.score(no_prompt, gt)
            if plain is not None:
                plain_restored = plain(lq, prompt, torch.Generator().manual_seed(sampling.seed))
                record.scores["plain_decoder"] = suite.score(plain_restored, gt)
            if "no_diffusion" in config.ablations:
                # the same step-7 fixes as the full model, so the row isolates the denoising
                no_diffusion = fix_against_lq(decode_without_diffusion(full.graphs, lq), lq, sampling)
                record.scores["no_diffusion"] = suite.score(no_diffusion, gt)
            if "ceiling" in config.ablations:
                record.scores["ceiling"] = suite.score(decode_without_diffusion(full.graphs, lq, gt), gt)

            rows = grids.setdefault(item["task"], [])
            if len(rows) < config.grid_images:
                rows.append(GridRow(tensor_to_image(lq), tensor_to_image(restored), tensor_to_image(gt)))
            records.append(record)
            progress.advance(task_bar)

    # A learned metric that failed part-way is dropped everywhere, so averages never mix subsets.
    for record in records:
        for scores in record.scores.values():
            for name in suite.skipped:
                scores.pop(name, None)
    return EvaluationResult(records, suite.names, dict(suite.skipped), grids)
