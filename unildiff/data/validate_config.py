"""Typed settings of the content checks of ``validate``, built by the stage from ``validate.content``.

:class:`ValidateConfig` adds the structural settings (``min_pairs_per_task``, ``max_examples``). Every
threshold here is documented in ``docs/data.md`` (section "Content checks") with the statistic of the
built-in data it was measured against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unildiff.errors import ConfigError


@dataclass(frozen=True)
class ContentRules:
    """Thresholds of the per-pair content checks and of the per-(task, split) distribution checks.

    Images are read as ``[0, 1]`` RGB; brightness is the mean Rec. 601 luminance in ``[0, 1]``.

    Attributes:
        gt_min_channel_std: a gt whose smallest per-channel standard deviation is below this is flat.
        gt_max_white_fraction: largest fraction of gt pixels with all channels at 255 (blown out).
        gt_max_black_fraction: largest fraction of gt pixels with all channels at 0 (crushed).
        noise_tolerance_db: allowed |PSNR - analytic PSNR| of a pure Gaussian-noise pair.
        recipe_margin_db: margin around the PSNR range simulated at a recipe's parameter extremes.
        recipe_reference_images: gts per task the extremes are simulated on (the task's darkest,
            brightest, flattest and most contrasted valid gts, then evenly spaced by brightness).
        recipe_simulations: parameter corners simulated per reference gt (all corners when a recipe has
            at most this many, else the all-low and all-high corners plus seeded random ones).
        recipe_seeds: random seeds each corner is run with (drop positions, depth field, blur
            trajectory), as long as corners x seeds stays within ``recipe_simulations``.
        real_max_psnr_db: a real pair (``degradations == real``) above this PSNR is not degraded.
        alignment_min_correlation: floor of the lq/gt alignment correlation (lowered per synthetic task
            to what its recipe extremes leave, minus ``alignment_margin``).
        alignment_margin: margin below the simulated alignment of a synthetic task.
        alignment_min_structure: gts with less structure than this (std of the high-passed 32x32
            luminance) carry too little to tell a mis-pair; their alignment is not checked.
        duplicate_max_hamming: two gts whose 63-bit perceptual hashes differ in at most this many bits
            and whose 16x16 thumbnails are within ``duplicate_max_thumbnail_difference`` are the same
            picture (identical decoded pixels always are).
        duplicate_max_thumbnail_difference: mean absolute difference of the 16x16 RGB thumbnails.
        duplicate_min_contrast: gts with a mean per-channel std below this are featureless and are not
            compared (two blank crops of different photos are equal without being the same picture).
        distribution_reference_draws: fresh recipe draws per (task, split) of a synthetic, non-noise
            task, spread over the group's gts: the reference distribution of PSNR and lq brightness.
        distribution_z: width of the distribution bounds in standard errors.
        distribution_margin_db: PSNR margin added to the distribution bounds.
        brightness_margin: brightness margin added to the distribution bounds.
        gt_brightness_range: allowed range of the 10/50/90 % quantiles of gt brightness per group.
        short_side_range: allowed range of the 10/50/90 % quantiles of the short side per group.
        thumbnail_size: long side in pixels of the lq/gt thumbnails in the HTML report.
        seed: seed of the simulations (the recipe's random parts: noise, drops, depth, kernels).
    """

    gt_min_channel_std: float = 0.001
    gt_max_white_fraction: float = 0.2
    gt_max_black_fraction: float = 0.9
    noise_tolerance_db: float = 0.5
    recipe_margin_db: float = 1.0
    recipe_reference_images: int = 5
    recipe_simulations: int = 16
    recipe_seeds: int = 4
    real_max_psnr_db: float = 40.0
    alignment_min_correlation: float = 0.2
    alignment_margin: float = 0.1
    alignment_min_structure: float = 0.05
    duplicate_max_hamming: int = 6
    duplicate_max_thumbnail_difference: float = 0.02
    duplicate_min_contrast: float = 0.01
    distribution_reference_draws: int = 16
    distribution_z: float = 4.0
    distribution_margin_db: float = 0.25
    brightness_margin: float = 0.05
    gt_brightness_range: tuple[float, float] = (0.02, 0.98)
    short_side_range: tuple[int, int] = (16, 8192)
    thumbnail_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        fractions = ("gt_max_white_fraction", "gt_max_black_fraction")
        for name in fractions:
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"validate.content.{name} must be in (0, 1], got {getattr(self, name)}")
        positive = ("recipe_reference_images", "recipe_simulations", "recipe_seeds", "thumbnail_size")
        positive += ("distribution_z",)
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"validate.content.{name} must be > 0, got {getattr(self, name)}")
        non_negative = (
            "gt_min_channel_std", "noise_tolerance_db", "recipe_margin_db", "alignment_margin",
            "alignment_min_structure", "duplicate_max_hamming", "duplicate_max_thumbnail_difference",
            "duplicate_min_contrast", "distribution_reference_draws", "distribution_margin_db",
            "brightness_margin",
        )  # fmt: skip
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"validate.content.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("gt_brightness_range", "short_side_range"):
            low, high = getattr(self, name)
            if not low < high:
                raise ConfigError(f"validate.content.{name} must be [low, high] with low < high")


@dataclass(frozen=True)
class ValidateConfig:
    """Settings of the ``validate`` stage.

    Attributes:
        min_pairs_per_task: each task of the setting needs at least this many pairs in each split.
        max_examples: offending rows quoted per failing expectation.
        content: thresholds of the content and distribution checks (``validate.content``).
    """

    min_pairs_per_task: int = 2
    max_examples: int = 5
    content: ContentRules = field(default_factory=ContentRules)
