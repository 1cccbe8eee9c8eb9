"""Training pairs in memory, the frozen VAE's latents of them, and the row interface training reads.

The ``encode_latents`` stage streams the train split's latents to disk in shards
(:mod:`unildiff.training.latent_shards`); the stages after it read them through
:class:`~unildiff.training.latent_shards.ShardedLatentCache`. The tiny prior's own UNet phase, which
runs before that stage exists, keeps its small cache in memory (:class:`InMemoryLatentCache`). Both
satisfy :class:`LatentSource`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from unildiff.errors import DataError

CACHE_STAGE = "encode_latents"


@dataclass(frozen=True)
class TrainingPairs:
    """The train split as tensors.

    Attributes:
        lq: Degraded images, [-1, 1], (N, 3, S, S), float32.
        gt: Clean images, [-1, 1], (N, 3, S, S), float32.
        prompts: Training prompt of each pair: its task prompt and description
            (:func:`unildiff.data.captions.compose_prompt`).
        tasks: Task name of each pair.
        pair_ids: Manifest pair id of each pair.
    """

    lq: torch.Tensor
    gt: torch.Tensor
    prompts: tuple[str, ...]
    tasks: tuple[str, ...]
    pair_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.pair_ids)


@dataclass(frozen=True)
class LatentRows:
    """Some pairs of a latent cache, as CPU tensors.

    Attributes:
        lq: Degraded images, [-1, 1], (B, 3, S, S), float32.
        gt: Clean images, [-1, 1], (B, 3, S, S), float32.
        gt_latents: Scaled latents of ``gt``, (B, C, S/f, S/f), float32 (f: the VAE factor).
    """

    lq: torch.Tensor
    gt: torch.Tensor
    gt_latents: torch.Tensor


class LatentSource(Protocol):
    """The train pairs with their latents, read by index (in memory or from the shards on disk)."""

    prompts: tuple[str, ...]
    tasks: tuple[str, ...]
    pair_ids: tuple[str, ...]
    scaling_factor: float

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int] | torch.Tensor) -> LatentRows: ...


@dataclass(frozen=True)
class InMemoryLatentCache:
    """Training pairs with the frozen VAE's scaled latents of ``gt``, held in memory.

    Attributes:
        pairs: The images, prompts and ids.
        gt_latents: Scaled latents of ``pairs.gt``, (N, C, S/f, S/f).
        scaling_factor: ``vae.config.scaling_factor`` the latents were scaled with.
    """

    pairs: TrainingPairs
    gt_latents: torch.Tensor
    scaling_factor: float

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def prompts(self) -> tuple[str, ...]:
        return self.pairs.prompts

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.pairs.tasks

    @property
    def pair_ids(self) -> tuple[str, ...]:
        return self.pairs.pair_ids

    def read(self, indices: Sequence[int] | torch.Tensor) -> LatentRows:
        """The pairs ``indices`` in that order."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        pairs = self.pairs
        return LatentRows(lq=pairs.lq[indices], gt=pairs.gt[indices], gt_latents=self.gt_latents[indices])


def load_training_pairs(prepared_dir: str | Path, crop_size: int | None, seed: int) -> TrainingPairs:
    """Read the train split of a prepared dir, whole or with one fixed ``crop_size`` crop per pair.

    The training stages draw fresh random crops of these patches at every step
    (:func:`unildiff.training.batches.random_crop_flip`).

    Args:
        prepared_dir: Output of the ``prepare`` stage.
        crop_size: Side of the square crop (the crops of epoch 0 of ``PairedImageDataset``); ``None``
            keeps whole patches, which must then share one size.
        seed: Seed of the crop positions.

    Raises:
        DataError: whole patches of different sizes (names ``train.cache_crop_size``).
    """
    from unildiff.data.captions import compose_prompt
    from unildiff.data.dataset import PairedImageDataset

    dataset = PairedImageDataset(prepared_dir, "train", crop_size=crop_size, seed=seed)
    items = [dataset[index] for index in range(len(dataset))]
    sizes = {tuple(item["gt"].shape[-2:]) for item in items}
    if len(sizes) > 1:
        raise DataError(
            f"train patches in {prepared_dir} have {len(sizes)} different sizes; "
            "set train.cache_crop_size to cache one fixed crop per pair"
        )
    return TrainingPairs(
        lq=torch.stack([item["lq"] for item in items]),
        gt=torch.stack([item["gt"] for item in items]),
        prompts=tuple(compose_prompt(item["prompt"], item.get("caption", "")) for item in items),
        tasks=tuple(item["task"] for item in items),
        pair_ids=tuple(item["pair_id"] for item in items),
    )


def load_split_images(prepared_dir: str | Path, split: str) -> torch.Tensor | None:
    """The clean images of ``split`` ([-1, 1], (N, 3, H, W)), or ``None`` when the split is empty or
    its images differ in size."""
    from unildiff.data.dataset import PairedImageDataset
    from unildiff.data.manifest import read_manifest

    if not any(row.split == split for row in read_manifest(Path(prepared_dir))):
        return None
    dataset = PairedImageDataset(prepared_dir, split, crop_size=None)
    images = [dataset[index]["gt"] for index in range(len(dataset))]
    if len({tuple(image.shape) for image in images}) > 1:
        return None
    return torch.stack(images)


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Scaled latents ``vae.encode(x).latent_dist.mode() * vae.config.scaling_factor``.

    Args:
        vae: A diffusers ``AutoencoderKL`` (used in eval mode, no gradient).
        images: [-1, 1], (N, 3, H, W).
        batch_size: Images per encoder pass.

    Returns:
        (N, C, H/8, W/8) float32 on the CPU.
    """
    device = next(vae.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        chunks.append(vae.encode(batch).latent_dist.mode().float().cpu())
    return torch.cat(chunks) * vae.config.scaling_factor


def build_latent_cache(pairs: TrainingPairs, vae: torch.nn.Module, batch_size: int) -> InMemoryLatentCache:
    """Encode ``pairs.gt`` once with the frozen VAE, in memory (the tiny prior's UNet phase)."""
    was_training = vae.training
    vae.eval()
    latents = encode_latents(vae, pairs.gt, batch_size)
    vae.train(was_training)
    scaling_factor = float(vae.config.scaling_factor)
    return InMemoryLatentCache(pairs=pairs, gt_latents=latents, scaling_factor=scaling_factor)
