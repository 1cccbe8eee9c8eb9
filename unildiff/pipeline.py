"""The restoration pipeline: LQ image + prompt → restored image (inference only, diffusers style).

The sampling settings and the denoising loop live here and only here. The loop runs on any
:class:`~unildiff.backends.RestorationGraphs` (torch modules, ONNX Runtime sessions or TensorRT engines,
see :mod:`unildiff.backends`), so every backend shares the same sampling code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from rich.progress import Progress

from unildiff.backends import Backend, RestorationGraphs, open_backend
from unildiff.colorfix import (
    COLOR_FIXES,
    adaptive_color_fix_with_weight,
    apply_color_fix,
    lq_colour_weight,
)
from unildiff.detailfix import guided_detail_fix
from unildiff.errors import ConfigError
from unildiff.models.text import make_time_ids
from unildiff.start import StartConfig
from unildiff.tiling import (
    Padding,
    ProgressCallback,
    Tile,
    TileBlender,
    TileProgress,
    crop,
    pad_to_multiple,
    tile_grid,
    tile_progress,
    tiled_map,
)

SCHEDULERS = {
    "euler": EulerDiscreteScheduler,
    "euler_ancestral": EulerAncestralDiscreteScheduler,
    "ddim": DDIMScheduler,
    "dpmsolver": DPMSolverMultistepScheduler,
}
"""Valid ``sampling.scheduler`` names and their diffusers classes."""


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings (params ``sampling``).

    Attributes:
        scheduler: diffusers scheduler, one of :data:`SCHEDULERS`, built from the prior's scheduler config.
        steps: number of denoising steps.
        cfg: classifier-free guidance scale; ≤ 1 runs the conditional pass only.
        seed: seed of the torch.Generator used when the caller passes none.
        tile: tile side in pixels (a multiple of the model's multiple); 0 = automatic (``auto_tile``).
        tile_overlap: overlap between neighbouring tiles in pixels.
        auto_tile: with ``tile`` 0, an image whose padded height or width exceeds this many pixels is
            tiled with tiles of this side (large images switch to tiling by themselves, as in DiffBIR
            and SUPIR); 0 = never tile automatically. A multiple of the model's multiple.
        color_fix: ``none``, ``wavelet``, ``adain`` or ``adaptive`` (see :mod:`unildiff.colorfix`).
        color_fix_levels: wavelet levels of the ``wavelet`` and ``adaptive`` fixes.
        color_fix_tolerance: low-frequency change at which ``adaptive`` keeps the restoration's own
            colours (see :func:`~unildiff.colorfix.adaptive_color_fix`).
        detail_fix_radius: window radius of the detail fix against the LQ image (see
            :mod:`unildiff.detailfix`); 0 = off.
        detail_fix_eps: regulariser of the detail fix.
        detail_fix_wide_radius: the detail fix's radius on images whose low frequencies the model moved
            on purpose (:func:`~unildiff.colorfix.lq_colour_weight` < 0.5: haze, low light), where the LQ
            is an affine function of the clean image over wide windows; 0 = ``detail_fix_radius``
            everywhere.
    """

    scheduler: str = "euler"
    steps: int = 20
    cfg: float = 5.0
    seed: int = 0
    tile: int = 0
    tile_overlap: int = 32
    auto_tile: int = 1024
    color_fix: str = "none"
    color_fix_levels: int = 5
    color_fix_tolerance: float = 0.25
    detail_fix_radius: int = 0
    detail_fix_eps: float = 1.0e-4
    detail_fix_wide_radius: int = 0

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(
                f"unknown sampling.scheduler {self.scheduler!r} (valid: {', '.join(SCHEDULERS)})"
            )
        if self.steps < 1:
            raise ConfigError(f"sampling.steps must be ≥ 1, got {self.steps}")
        if self.cfg < 0:
            raise ConfigError(f"sampling.cfg must be ≥ 0, got {self.cfg}")
        if self.tile < 0 or self.tile_overlap < 0 or self.auto_tile < 0:
            raise ConfigError("sampling.tile, sampling.tile_overlap and sampling.auto_tile must be ≥ 0")
        if self.tile_side and self.tile_overlap >= self.tile_side:
            source = "tile" if self.tile else "auto_tile"
            raise ConfigError(
                f"sampling.tile_overlap={self.tile_overlap} must be smaller than "
                f"sampling.{source}={self.tile_side}"
            )
        if self.color_fix not in COLOR_FIXES:
            raise ConfigError(
                f"unknown sampling.color_fix {self.color_fix!r} (valid: {', '.join(COLOR_FIXES)})"
            )
        if self.color_fix_levels < 1:
            raise ConfigError(f"sampling.color_fix_levels must be ≥ 1, got {self.color_fix_levels}")
        if self.color_fix_tolerance <= 0:
            raise ConfigError(f"sampling.color_fix_tolerance must be > 0, got {self.color_fix_tolerance}")
        if self.detail_fix_radius < 0:
            raise ConfigError(f"sampling.detail_fix_radius must be ≥ 0, got {self.detail_fix_radius}")
        if self.detail_fix_wide_radius < 0:
            raise ConfigError(
                f"sampling.detail_fix_wide_radius must be ≥ 0, got {self.detail_fix_wide_radius}"
            )
        if self.detail_fix_eps <= 0:
            raise ConfigError(f"sampling.detail_fix_eps must be > 0, got {self.detail_fix_eps}")

    @property
    def tile_side(self) -> int:
        """The tile side in pixels: ``tile``, else ``auto_tile``; 0 = never tiled. An image that fits
        one tile is not tiled (:func:`~unildiff.tiling.tile_grid` gives a single tile)."""
        return self.tile or self.auto_tile


def fix_against_lq(image: torch.Tensor, lq: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Step 7's fixes of a decoded image against its LQ input: the colour fix, then the detail fix.

    Args:
        image: the decoded image, [-1, 1] (clamped here), (B, 3, H, W).
        lq: the LQ image, [-1, 1], (B, 3, H, W), the same size.
        config: ``color_fix*`` and ``detail_fix*`` are read.

    Returns:
        [-1, 1], (B, 3, H, W).
    """
    decoded = image.clamp(-1.0, 1.0)
    levels, tolerance = config.color_fix_levels, config.color_fix_tolerance
    weight = None  # the LQ's weight in the adaptive colour fix, (B, 1, 1, 1)
    if config.color_fix == "adaptive":
        image, weight = adaptive_color_fix_with_weight(decoded, lq, tolerance, levels)
    else:
        image = apply_color_fix(config.color_fix, decoded, lq, levels, tolerance)
    if not config.detail_fix_radius:
        return image
    fixed = guided_detail_fix(image, lq, config.detail_fix_radius, config.detail_fix_eps)
    if not config.detail_fix_wide_radius:
        return fixed
    if weight is None:  # other colour fixes: the weight the adaptive fix would have given the LQ
        weight = lq_colour_weight(decoded, lq, tolerance, levels)
    moved = weight < 0.5
    if not moved.any():  # the wide box filters cost O(radius²) a pixel: skip them when unused
        return fixed
    wide = guided_detail_fix(image, lq, config.detail_fix_wide_radius, config.detail_fix_eps)
    return torch.where(moved, wide, fixed)


def make_scheduler(name: str, scheduler_config):
    """Build the diffusers scheduler ``name`` (a key of :data:`SCHEDULERS`) from a scheduler config."""
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown sampling.scheduler {name!r} (valid: {', '.join(SCHEDULERS)})")
    return SCHEDULERS[name].from_config(scheduler_config)


PromptEncoder = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
"""prompts → (prompt_embeds (B, L, D), pooled (B, Dp)), e.g. ``functools.partial(encode_prompt, prior)``."""


@dataclass
class PromptConditioning:
    """Encoded prompts for one image: unconditional first when guidance is on (batch 2), else batch 1."""

    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    guidance: bool


class RestorationPipeline:
    """Restore one LQ image with the UniLDiff denoiser, DAFF conditioning and the DAEM decoder.

    Args:
        graphs: the encode/denoise/decode graphs (any backend).
        prompt_encoder: encodes prompts (stays torch on every backend).
        scheduler: a diffusers scheduler (mutated by ``set_timesteps``; one pipeline per thread).
        config: sampling settings.
        start: where denoising starts (:class:`~unildiff.start.StartConfig`); use the start the model was
            trained with (``UniLDiffPipeline.start``), which :meth:`UniLDiffPipeline.sampler` checks.
        pixel_multiple: padded sides are multiples of this (defaults to ``graphs.pixel_multiple``).
        show_progress: show a rich progress bar over the graph calls (tiles × steps) of each image
            when the caller passes no ``progress`` of its own.
    """

    def __init__(
        self,
        graphs: RestorationGraphs,
        prompt_encoder: PromptEncoder,
        scheduler,
        config: SamplingConfig,
        start: StartConfig,
        pixel_multiple: int | None = None,
        show_progress: bool = False,
    ):
        self.graphs = graphs
        self.prompt_encoder = prompt_encoder
        self.scheduler = scheduler
        self.config = config
        self.start = start
        self.pixel_multiple = pixel_multiple or graphs.pixel_multiple
        self.show_progress = show_progress
        for name in ("tile", "auto_tile"):
            if getattr(config, name) % self.pixel_multiple:
                raise ConfigError(
                    f"sampling.{name}={getattr(config, name)} must be 0 or a multiple of "
                    f"{self.pixel_multiple} pixels"
                )

    @classmethod
    def from_model(
        cls,
        model,
        config: SamplingConfig,
        start: StartConfig,
        plain_decoder: bool = False,
        device: str | None = None,
        **kwargs,
    ) -> RestorationPipeline:
        """Torch pipeline for a ``UniLDiffModel`` (``plain_decoder`` = the VAE-decoder ablation).

        ``device`` moves the model there first (``None`` leaves it where it is); ``kwargs`` go to the
        constructor.
        """
        graphs = open_backend(Backend.TORCH, model=model, device=device, plain_decoder=plain_decoder)
        return cls.with_prior(graphs, model.prior, config, start, **kwargs)

    @classmethod
    def with_prior(
        cls, graphs: RestorationGraphs, prior, config: SamplingConfig, start: StartConfig, **kwargs
    ) -> RestorationPipeline:
        """A pipeline on ``graphs`` (any backend) with the prior's text encoders (torch on every backend)
        and a fresh scheduler built from the prior's scheduler config; ``kwargs`` go to the constructor."""
        from unildiff.models.text import encode_prompt

        scheduler = make_scheduler(config.scheduler, prior.scheduler.config)
        return cls(graphs, functools.partial(encode_prompt, prior), scheduler, config, start, **kwargs)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, device: torch.device) -> PromptConditioning:
        """Encode ``prompt`` and, when guidance applies, the empty unconditional prompt in one batch.

        Guidance is skipped for ``cfg ≤ 1`` and for the empty prompt (prompt-free restoration), where
        the conditional and unconditional passes are identical.
        """
        guidance = self.config.cfg > 1.0 and prompt != ""
        prompts = ["", prompt] if guidance else [prompt]
        prompt_embeds, pooled = self.prompt_encoder(prompts)
        return PromptConditioning(prompt_embeds.to(device), pooled.to(device), guidance)

    @torch.no_grad()
    def predict_noise(
        self,
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        lq_features: torch.Tensor,
        conditioning: PromptConditioning,
        height: int,
        width: int,
    ) -> torch.Tensor:
        """Guided noise prediction for one latent (tile), both CFG passes in one batch.

        Args:
            model_input: scheduler-scaled latent, (1, 4, h, w).
            timestep: scalar timestep tensor.
            lq_features: f^LQ of the same region, (1, C_lq, h, w); both passes keep it.
            conditioning: from :meth:`encode_prompt`.
            height: pixel height of the region (SDXL time ids).
            width: pixel width of the region.

        Returns:
            ε̂ = ε_uncond + cfg (ε_cond − ε_uncond) (classifier-free guidance), (1, 4, h, w).
        """
        batch = conditioning.prompt_embeds.shape[0]
        noise_pred = self.graphs.denoise(
            model_input.repeat(batch, 1, 1, 1),
            timestep.to(model_input.device, torch.float32).reshape(1).repeat(batch),
            lq_features.repeat(batch, 1, 1, 1),
            conditioning.prompt_embeds,
            conditioning.pooled,
            make_time_ids(height, width, batch).to(model_input.device),
        )
        if not conditioning.guidance:
            return noise_pred
        noise_uncond, noise_cond = noise_pred.chunk(2)
        return noise_uncond + self.config.cfg * (noise_cond - noise_uncond)

    def _timesteps(self, device: torch.device) -> torch.Tensor:
        """Set the scheduler's ``steps``-step schedule and return the timesteps this start runs.

        From noise: all of them. From the LQ latent: those ≤ ``start.timestep`` (the scheduler's begin
        index is set to the first of them).
        """
        self.scheduler.set_timesteps(self.config.steps, device=device)
        timesteps = self.scheduler.timesteps
        if self.start.mode == "noise":
            return timesteps
        kept = (timesteps <= self.start.timestep).nonzero()
        if not len(kept):
            raise ConfigError(
                f"start.timestep={self.start.timestep} is below every timestep of the "
                f"{self.config.steps}-step schedule (the last is {int(timesteps[-1])}); raise sampling.steps"
            )
        start_index = int(kept[0])
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start_index)
        return timesteps[start_index:]

    def timesteps(self) -> list[int]:
        """The denoising timesteps one restoration runs, first to last (what the start check reads)."""
        return [int(timestep) for timestep in self._timesteps(torch.device("cpu"))]

    @torch.no_grad()
    def __call__(
        self,
        lq: torch.Tensor,
        prompt: str,
        generator: torch.Generator | None = None,
        progress: Progress | None = None,
        callback: ProgressCallback | None = None,
    ) -> torch.Tensor:
        """Restore ``lq``.

        Args:
            lq: the degraded image, [-1, 1], (1, 3, H, W), any H and W.
            prompt: the task prompt (e.g. "remove rain"), or "" for prompt-free restoration.
            generator: CPU torch.Generator for the initial noise (seeded from ``config.seed`` if None).
            progress: an active rich ``Progress`` (e.g. a bar over files) that gets a task over this
                image's graph calls; without one, a bar of its own when ``show_progress``.
            callback: called as ``callback(done, total, description)`` after every graph call (a web
                page's progress bar, for example).

        Returns:
            The restored image, [-1, 1], (1, 3, H, W).
        """
        config = self.config
        if generator is None:
            generator = torch.Generator().manual_seed(config.seed)
        lq_padded, padding = pad_to_multiple(lq, self.pixel_multiple)
        height, width = lq_padded.shape[-2:]
        tiles = tile_grid(height, width, config.tile_side, config.tile_overlap, self.pixel_multiple)
        description = f"encoding {len(tiles)} tile(s)"
        with tile_progress(progress, self.show_progress, description, callback) as tracker:
            return self._restore(lq_padded, padding, tiles, prompt, generator, tracker)

    def _restore(
        self,
        lq_padded: torch.Tensor,
        padding: Padding,
        tiles: list[Tile],
        prompt: str,
        generator: torch.Generator,
        tracker: TileProgress,
    ) -> torch.Tensor:
        """Steps 1–7 of :meth:`__call__` on the padded LQ image [-1, 1], (1, 3, H', W')."""
        config = self.config
        device = lq_padded.device
        height, width = lq_padded.shape[-2:]
        tiled = len(tiles) > 1

        # 1. Encode the LQ image (tiled: f^LQ and the latent blended; each tile's skips kept for its decode)
        tile_skips: list[tuple[torch.Tensor, ...]] = []
        if tiled:

            def encode_tile(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                encoding = self.graphs.encode_lq(part)
                tile_skips.append(encoding.skips)
                return encoding.lq_features, encoding.lq_latent

            lq_features, lq_latent = tiled_map(
                encode_tile,
                lq_padded,
                tiles,
                config.tile_overlap,
                on_tile=lambda index: tracker.advance(f"encoding tile {index + 1}/{len(tiles)}"),
            )
            skips: tuple[torch.Tensor, ...] = ()
        else:
            encoding = self.graphs.encode_lq(lq_padded)
            lq_features, lq_latent, skips = encoding.lq_features, encoding.lq_latent, encoding.skips
            tracker.advance("encoded")
        latent_factor = height // lq_latent.shape[-2]

        # 2. Encode the prompt (task prompt, and "" as the unconditional prompt)
        conditioning = self.encode_prompt(prompt, device)

        # 3. Prepare the timesteps (an LQ start runs those at or below start.timestep)
        timesteps = self._timesteps(device)
        tracker.set_total(len(tiles) * (len(timesteps) + 2))

        # 4. Prepare the initial latents: the LQ latent (noised by start.noise) or pure noise
        noise = torch.randn(lq_latent.shape, generator=generator, dtype=torch.float32).to(
            device, lq_latent.dtype
        )
        if self.start.mode == "lq":
            latents = self.scheduler.add_noise(lq_latent, self.start.noise * noise, timesteps[:1])
        else:
            latents = noise * self.scheduler.init_noise_sigma

        # 5. Denoising loop (latent tiles blended with raised-cosine weights when tiled)
        for step, timestep in enumerate(timesteps, start=1):
            model_input = self.scheduler.scale_model_input(latents, timestep)
            blender = TileBlender(latents.shape, latent_factor, config.tile_overlap, latents)
            for index, tile in enumerate(tiles, start=1):
                rows, columns = tile.slices(latent_factor)
                blender.add(
                    tile,
                    self.predict_noise(
                        model_input[..., rows, columns],
                        timestep,
                        lq_features[..., rows, columns],
                        conditioning,
                        tile.height,
                        tile.width,
                    ),
                )
                tracker.advance(f"denoising step {step}/{len(timesteps)}, tile {index}/{len(tiles)}")
            latents = self.scheduler.step(
                blender.result(), timestep, latents, generator=generator
            ).prev_sample

        # 6. Decode with the DAEM decoder (tiled: per pixel tile, with that tile's skips)
        if tiled:
            image = self._decode_tiled(latents, tile_skips, tiles, latent_factor, tracker)
        else:
            image = self.graphs.decode(latents, skips)
            tracker.advance("decoded")

        # 7. Colour and detail fixes against the LQ image, and crop back to the input size
        return crop(fix_against_lq(image, lq_padded, config), padding)

    def _decode_tiled(
        self,
        latents: torch.Tensor,
        tile_skips: list[tuple[torch.Tensor, ...]],
        tiles: list[Tile],
        latent_factor: int,
        tracker: TileProgress,
    ) -> torch.Tensor:
        """Decode each latent tile with its own LQ skips (step 1) and blend the pixel tiles."""
        height, width = latents.shape[-2] * latent_factor, latents.shape[-1] * latent_factor
        blender = TileBlender((latents.shape[0], 3, height, width), 1, self.config.tile_overlap, latents)
        for index, (tile, skips) in enumerate(zip(tiles, tile_skips, strict=True), start=1):
            latent_rows, latent_columns = tile.slices(latent_factor)
            blender.add(tile, self.graphs.decode(latents[..., latent_rows, latent_columns], skips))
            tracker.advance(f"decoding tile {index}/{len(tiles)}")
        return blender.result()
