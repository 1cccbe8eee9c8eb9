"""What a task's recipe implies for PSNR(lq, gt) and alignment: analytic for noise, simulated otherwise.

- Pure Gaussian noise (``denoise_15/25/50``): the expected MSE of ``clip(gt + n)`` against ``gt`` is
  computed per pixel in closed form (the clipping at 0 and 1 lowers it on dark and bright pixels), plus
  1/12 LSB² for rounding the lq to 8 bits. A pair must sit within ``noise_tolerance_db`` of it.
- Other recipes (rain, haze, blur, low light, snow, composites): the recipe is run at its parameter
  corners (every parameter at its low or high bound), each with several random seeds (drop positions,
  depth field, blur trajectory), on a few reference gts of the task; the PSNR range they span, widened
  by ``recipe_margin_db``, is the allowed range, and the lowest alignment they leave, less
  ``alignment_margin``, lowers the alignment floor of the task (every synthetic task, noise included).
- Real pairs (``degradations == real``): only a ceiling (``real_max_psnr_db``: lq ≠ gt) and the alignment
  floor ``alignment_min_correlation``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import special

from unildiff.data import degradations
from unildiff.data.imageio import to_uint8
from unildiff.data.settings import Step, Task
from unildiff.data.validate_config import ContentRules
from unildiff.data.validate_features import alignment, luminance_map, psnr_db, structure

REAL = "real"


@dataclass(frozen=True)
class TaskEnvelope:
    """The allowed PSNR(lq, gt) range and alignment floor of one task.

    Attributes:
        task: task name.
        rule: how the range was derived, in words (shown in reports and failure messages).
        psnr_low_db: lowest allowed PSNR in dB (None: no lower bound; for noise it is per pair).
        psnr_high_db: highest allowed PSNR in dB (for noise it is per pair).
        alignment_floor: lowest allowed alignment correlation (None: not checked).
        noise_sigma: the noise level on [0, 255] of a pure-noise recipe (None otherwise).
        references: pair ids of the gts the recipe was simulated on.
    """

    task: str
    rule: str
    psnr_low_db: float | None
    psnr_high_db: float | None
    alignment_floor: float | None
    noise_sigma: float | None = None
    references: tuple[str, ...] = ()


def noise_sigma(task: Task) -> float | None:
    """The σ (on [0, 255]) of a task made of one fixed-level Gaussian noise step, else None."""
    if len(task.steps) != 1 or task.steps[0].function is not degradations.gaussian_noise:
        return None
    low, high = task.steps[0].ranges.get("sigma", (None, None))
    return float(low) if low is not None and low == high else None


def analytic_noise_psnr_db(gt: np.ndarray, sigma: float) -> float:
    """Expected PSNR in dB of ``round(clip(gt + n, 0, 1))`` against ``gt``, ``n ~ N(0, (σ/255)²)``.

    Args:
        gt: the clean image, uint8 (H, W, 3).
        sigma: noise standard deviation on the [0, 255] scale.

    Per value v and s = σ/255, with a = -v/s and b = (1 - v)/s, the clipped error has
    E = v²Φ(a) + (1 - v)²(1 - Φ(b)) + s²[Φ(b) - Φ(a) - (bφ(b) - aφ(a))]; rounding adds 1/12 LSB².
    """
    values = np.arange(256, dtype=np.float64) / 255.0  # the error depends on the 8-bit value only
    scale = sigma / 255.0
    lower, upper = -values / scale, (1.0 - values) / scale
    cdf_lower, cdf_upper = special.ndtr(lower), special.ndtr(upper)
    pdf_lower = np.exp(-0.5 * lower * lower) / np.sqrt(2.0 * np.pi)
    pdf_upper = np.exp(-0.5 * upper * upper) / np.sqrt(2.0 * np.pi)
    inside = cdf_upper - cdf_lower - (upper * pdf_upper - lower * pdf_lower)
    error = values**2 * cdf_lower + (1.0 - values) ** 2 * (1.0 - cdf_upper) + scale**2 * inside
    counts = np.bincount(gt.ravel(), minlength=256)
    mse = float(np.dot(counts, error)) / gt.size + 1.0 / (12.0 * 255.0**2)
    return 10.0 * float(np.log10(1.0 / mse))


Corner = tuple[dict[str, float], ...]


def _step_corners(step: Step) -> list[dict[str, float]]:
    """Every combination of a step's parameters at their bounds (all-low first, all-high last)."""
    names = sorted(step.ranges)
    bounds = [sorted(set(step.ranges[name]), key=step.ranges[name].index) for name in names]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*bounds)]


def recipe_corners(task: Task, limit: int, rng: np.random.Generator) -> list[Corner]:
    """Parameter corners of ``task``: all when at most ``limit``, else all-low, all-high and random ones."""
    per_step = [_step_corners(step) for step in task.steps]
    total = int(np.prod([len(corners) for corners in per_step]))
    if total <= limit:
        return [tuple(corner) for corner in itertools.product(*per_step)]
    chosen = {tuple(0 for _ in per_step), tuple(len(corners) - 1 for corners in per_step)}
    while len(chosen) < limit:
        chosen.add(tuple(int(rng.integers(len(corners))) for corners in per_step))
    return [tuple(per_step[step][index] for step, index in enumerate(indices)) for indices in sorted(chosen)]


def degrade_at(task: Task, gt: np.ndarray, corner: Corner, rng: np.random.Generator) -> np.ndarray:
    """Run ``task``'s steps with the fixed parameters ``corner`` on a uint8 gt; returns the uint8 lq."""
    image = gt.astype(np.float32) / 255.0
    for step, params in zip(task.steps, corner, strict=True):
        image = step.function(image, rng, **params)
    return to_uint8(image)


def simulate_envelope(
    task: Task, references: list[tuple[str, np.ndarray]], rules: ContentRules, task_index: int
) -> TaskEnvelope:
    """The envelope of a synthetic task, simulated at the recipe's parameter corners on reference gts.

    Pure-noise recipes keep a per-pair analytic PSNR range (see :func:`analytic_noise_psnr_db`): only
    their alignment floor comes from the simulation.

    Args:
        task: the task of the setting (its recipe).
        references: ``(pair_id, gt)`` with gt uint8 (H, W, 3): valid gts of the task to simulate on.
        rules: the thresholds.
        task_index: position of the task in the setting (seeds the simulation).
    """
    corners = recipe_corners(
        task, rules.recipe_simulations, np.random.default_rng([rules.seed, 2, task_index])
    )
    seeds = min(rules.recipe_seeds, -(-rules.recipe_simulations // len(corners)))
    draws = corners * seeds  # each corner with several random seeds (drops, depth field, blur kernel)
    values: list[float] = []
    alignments: list[float] = []
    for reference_index, (_, gt) in enumerate(references):
        gt_map = luminance_map(gt)
        structured = structure(gt_map) >= rules.alignment_min_structure
        for draw_index, corner in enumerate(draws):
            rng = np.random.default_rng([rules.seed, 0, task_index, reference_index, draw_index])
            lq = degrade_at(task, gt, corner, rng)
            values.append(psnr_db(lq, gt))
            if structured:
                alignments.append(alignment(luminance_map(lq), gt_map))
    floor = None
    if alignments:
        floor = min(rules.alignment_min_correlation, min(alignments) - rules.alignment_margin)
    ids = tuple(pair_id for pair_id, _ in references)
    sigma = noise_sigma(task)
    if sigma is not None:
        tolerance = rules.noise_tolerance_db
        rule = f"{task.degradations}: analytic PSNR of clipped noise σ={sigma:g} ± {tolerance:g} dB"
        return TaskEnvelope(task.name, rule, None, None, floor, sigma, ids)
    if not values:
        rule = f"{task.degradations}: no valid reference gt to simulate the recipe on"
        return TaskEnvelope(task.name, rule, None, None, None, None, ids)
    rule = (
        f"{task.degradations}: {len(draws)} draws at {len(corners)} parameter corner(s) on {len(references)} "
        f"reference gt(s), ± {rules.recipe_margin_db:g} dB"
    )
    low, high = min(values) - rules.recipe_margin_db, max(values) + rules.recipe_margin_db
    return TaskEnvelope(task.name, rule, low, high, floor, None, ids)


def real_envelope(task_name: str, rules: ContentRules) -> TaskEnvelope:
    """The looser envelope of real pairs: lq ≠ gt (a PSNR ceiling) and the alignment floor."""
    rule = (
        f"real pairs: PSNR ≤ {rules.real_max_psnr_db:g} dB, alignment ≥ {rules.alignment_min_correlation:g}"
    )
    return TaskEnvelope(task_name, rule, None, rules.real_max_psnr_db, rules.alignment_min_correlation)
