"""Batches of the training stages and the frozen prompt table used for classifier-free guidance."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unildiff.errors import ConfigError
from unildiff.training.latents import LatentSource, TrainingPairs


class _Pinnable:
    """``pin_memory()`` for a dataclass batch: the DataLoader's pinning thread calls it on CUDA hosts, so
    the copy to the GPU can run asynchronously (``non_blocking``)."""

    def pin_memory(self):
        tensors = {
            name: value.pin_memory() for name, value in vars(self).items() if isinstance(value, torch.Tensor)
        }
        return dataclasses.replace(self, **tensors)


@dataclass
class ImageBatch(_Pinnable):
    """Clean images for the prior's VAE. ``gt``: [-1, 1], (B, 3, H, W)."""

    gt: torch.Tensor


@dataclass
class LatentBatch(_Pinnable):
    """One training batch of the latent stages.

    Attributes:
        lq: Degraded images, [-1, 1], (B, 3, H, W).
        gt: Clean images, [-1, 1], (B, 3, H, W).
        gt_latents: Cached scaled latents of ``gt``, (B, C, H/8, W/8).
        prompt_ids: Row of each prompt in the :class:`PromptTable`, (B,) int64.
    """

    lq: torch.Tensor
    gt: torch.Tensor
    gt_latents: torch.Tensor
    prompt_ids: torch.Tensor


def _draw(count: int, high: int, generator: torch.Generator) -> list[int]:
    return torch.randint(0, high, (count,), generator=generator, device=generator.device).tolist()


def random_image_crop_flip(images: torch.Tensor, crop_size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``crop_size`` crop (any offset) and a random horizontal flip of a whole batch.

    Args:
        images: [-1, 1], (B, 3, H, W).
        crop_size: Crop side in pixels; 0 (or ≥ the image) keeps the whole image (the flip still applies).
        generator: The step's generator (the loop seeds it per step).

    Returns:
        [-1, 1], (B, 3, crop_size, crop_size).
    """
    side = min(images.shape[-2:])
    if crop_size and crop_size < side:
        top, left = _draw(2, side - crop_size + 1, generator)
        images = images[..., top : top + crop_size, left : left + crop_size]
    if _draw(1, 2, generator)[0]:
        images = images.flip(-1)
    return images


def random_crop_flip(batch: LatentBatch, crop_size: int, generator: torch.Generator) -> LatentBatch:
    """A fresh random crop and horizontal flip of a latent batch, drawn at every step.

    The crop is aligned to the VAE's factor f (the cached latents are cut at the matching latent cells),
    so images and latents stay in register. The latents of the crop are cut from the cached latents of
    the larger patch instead of re-encoding the crop; they differ only within the encoder's receptive
    field of the crop border. The flip mirrors images and latents together, which assumes the VAE is
    flip-equivariant (its training draws flips too). Both approximations are documented in
    docs/training.md ("Random crops").

    Args:
        batch: lq/gt [-1, 1], (B, 3, H, W) and their latents (B, C, H/f, W/f).
        crop_size: Crop side in pixels, a multiple of f; 0 (or ≥ the patch) keeps the whole patch.
        generator: The step's generator.

    Raises:
        ConfigError: ``crop_size`` is not a multiple of the VAE factor.
    """
    factor = batch.gt.shape[-1] // batch.gt_latents.shape[-1]
    side = min(batch.gt.shape[-2:])
    if crop_size and crop_size < side:
        if crop_size % factor:
            raise ConfigError(f"crop size {crop_size} must be a multiple of the VAE factor {factor}")
        cells = (side - crop_size) // factor + 1
        top, left = _draw(2, cells, generator)
        latent_size = crop_size // factor
        pixel_top, pixel_left = top * factor, left * factor

        def cut_images(images: torch.Tensor) -> torch.Tensor:
            return images[..., pixel_top : pixel_top + crop_size, pixel_left : pixel_left + crop_size]

        batch = LatentBatch(
            lq=cut_images(batch.lq),
            gt=cut_images(batch.gt),
            gt_latents=batch.gt_latents[..., top : top + latent_size, left : left + latent_size],
            prompt_ids=batch.prompt_ids,
        )
    if _draw(1, 2, generator)[0]:
        batch = LatentBatch(
            lq=batch.lq.flip(-1),
            gt=batch.gt.flip(-1),
            gt_latents=batch.gt_latents.flip(-1),
            prompt_ids=batch.prompt_ids,
        )
    return batch


class PromptTable(torch.nn.Module):
    """Embeddings of every distinct training prompt, computed once with the frozen text encoders.

    Row 0 is the empty prompt ``""`` (the unconditional branch of classifier-free guidance). The table
    is a buffer of the objective, so it follows the objective to its device.

    Args:
        prompts: Distinct prompts (without ``""``).
        prompt_embeds: (P + 1, L, D) embeddings, row 0 for ``""``.
        pooled: (P + 1, Dp) pooled embeddings.
    """

    def __init__(self, prompts: Sequence[str], prompt_embeds: torch.Tensor, pooled: torch.Tensor) -> None:
        super().__init__()
        self.prompts = ("", *prompts)
        self.register_buffer("prompt_embeds", prompt_embeds.detach().float().clone(), persistent=False)
        self.register_buffer("pooled", pooled.detach().float().clone(), persistent=False)

    @classmethod
    def from_prior(cls, prior: object, prompts: Sequence[str]) -> PromptTable:
        """Encode ``""`` and the distinct ``prompts`` with ``unildiff.models.text.encode_prompt``."""
        from unildiff.models.text import encode_prompt

        distinct = sorted({prompt for prompt in prompts if prompt})
        embeds, pooled = encode_prompt(prior, ["", *distinct])
        return cls(distinct, embeds.cpu(), pooled.cpu())

    def ids(self, prompts: Sequence[str]) -> torch.Tensor:
        """Row index of each prompt, (B,) int64."""
        rows = {prompt: row for row, prompt in enumerate(self.prompts)}
        return torch.tensor([rows[prompt] for prompt in prompts], dtype=torch.long)

    def lookup(self, prompt_ids: torch.Tensor, dropout: float, generator: torch.Generator | None) -> tuple:
        """Embeddings of ``prompt_ids``, each replaced by ``""`` with probability ``dropout`` (CFG training).

        Returns:
            prompt_embeds (B, L, D) and pooled (B, Dp).
        """
        if dropout > 0:
            keep = torch.rand(prompt_ids.shape, generator=generator, device=prompt_ids.device) >= dropout
            prompt_ids = torch.where(keep, prompt_ids, torch.zeros_like(prompt_ids))
        return self.prompt_embeds[prompt_ids], self.pooled[prompt_ids]


class ImageBatches:
    """Batch source of clean images (the prior's VAE phase), held in memory (tiny preset only)."""

    def __init__(self, pairs: TrainingPairs) -> None:
        self.gt = pairs.gt

    def __len__(self) -> int:
        return len(self.gt)

    def __call__(self, indices: torch.Tensor) -> ImageBatch:
        return ImageBatch(gt=self.gt[indices])


class LatentBatches:
    """Batch source over a :class:`~unildiff.training.latents.LatentSource` (prior UNet phase, stages 1a,
    1b, 2). Picklable, so DataLoader workers can read batches ahead of the step that needs them.

    Args:
        cache: The pairs and their latents (in memory, or the shards on disk read lazily).
        table: Prompt table giving the ``prompt_ids``; ``None`` (stage 2 uses no text) gives zeros.
    """

    def __init__(self, cache: LatentSource, table: PromptTable | None) -> None:
        self.cache = cache
        if table is None:
            self.prompt_ids = torch.zeros(len(cache), dtype=torch.long)
        else:
            self.prompt_ids = table.ids(cache.prompts)

    def __len__(self) -> int:
        return len(self.cache)

    def __call__(self, indices: torch.Tensor) -> LatentBatch:
        rows = self.cache.read(indices)
        return LatentBatch(
            lq=rows.lq, gt=rows.gt, gt_latents=rows.gt_latents, prompt_ids=self.prompt_ids[indices]
        )
