"""Training pairs in memory and the cached clean latents of the frozen-encoder stages.

Every training stage after ``prior`` keeps the VAE encoder frozen, so ``encode(gt)`` is computed once,
by the ``encode_latents`` stage, for fixed crops of the train split (the tiny patches are 64×64 already,
so the crop is the whole patch), and stored in ``models/cache/latents/``:

- ``pairs.safetensors``: ``lq`` and ``gt`` [-1, 1] (N, 3, S, S) and ``gt_latents`` (N, C, S/8, S/8),
  scaled latents ``vae.encode(gt).latent_dist.mode() * vae.config.scaling_factor``;
- ``index.json``: prompts, tasks and pair ids in the same order, the crop size and the scaling factor.

DVC keys the cache by its deps (``data/prepared`` and ``models/prior``): either changing re-encodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unildiff.errors import DataError, MissingArtifactError
from unildiff.utils.atomic import atomic_dir, atomic_write_json

CACHE_STAGE = "encode_latents"


@dataclass(frozen=True)
class TrainingPairs:
    """The train split as tensors.

    Attributes:
        lq: Degraded images, [-1, 1], (N, 3, S, S), float32.
        gt: Clean images, [-1, 1], (N, 3, S, S), float32.
        prompts: Task prompt or caption of each pair.
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
class LatentCache:
    """Training pairs with the frozen VAE's scaled latents of ``gt``.

    Attributes:
        pairs: The images, prompts and ids.
        gt_latents: Scaled latents of ``pairs.gt``, (N, C, S/8, S/8).
        scaling_factor: ``vae.config.scaling_factor`` the latents were scaled with.
    """

    pairs: TrainingPairs
    gt_latents: torch.Tensor
    scaling_factor: float

    def __len__(self) -> int:
        return len(self.pairs)


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
        prompts=tuple(item["prompt"] for item in items),
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


def build_latent_cache(pairs: TrainingPairs, vae: torch.nn.Module, batch_size: int) -> LatentCache:
    """Encode ``pairs.gt`` once with the frozen VAE."""
    was_training = vae.training
    vae.eval()
    latents = encode_latents(vae, pairs.gt, batch_size)
    vae.train(was_training)
    return LatentCache(pairs=pairs, gt_latents=latents, scaling_factor=float(vae.config.scaling_factor))


def save_latent_cache(cache: LatentCache, directory: str | Path) -> Path:
    """Write ``cache`` atomically to ``directory`` (safetensors + JSON)."""
    directory = Path(directory)
    pairs = cache.pairs
    with atomic_dir(directory) as temporary:
        tensors = {
            "lq": pairs.lq.contiguous(),
            "gt": pairs.gt.contiguous(),
            "gt_latents": cache.gt_latents.contiguous(),
        }
        save_file(tensors, str(temporary / "pairs.safetensors"))
        atomic_write_json(
            temporary / "index.json",
            {
                "count": len(pairs),
                "crop_size": int(pairs.gt.shape[-1]),
                "scaling_factor": cache.scaling_factor,
                "prompts": list(pairs.prompts),
                "tasks": list(pairs.tasks),
                "pair_ids": list(pairs.pair_ids),
            },
        )
    return directory


def load_latent_cache(directory: str | Path) -> LatentCache:
    """Read a cache written by :func:`save_latent_cache`.

    Raises:
        MissingArtifactError: The cache is absent (run the ``encode_latents`` stage).
        DataError: The tensors and the index disagree.
    """
    directory = Path(directory)
    index_path, tensor_path = directory / "index.json", directory / "pairs.safetensors"
    if not index_path.is_file() or not tensor_path.is_file():
        raise MissingArtifactError(f"latent cache {directory} is missing; run `dvc repro {CACHE_STAGE}`")
    index = json.loads(index_path.read_text())
    tensors = load_file(str(tensor_path))
    count = index["count"]
    if (
        not all(len(tensors[name]) == count for name in ("lq", "gt", "gt_latents"))
        or len(index["prompts"]) != count
    ):
        raise DataError(f"latent cache {directory} is inconsistent: index.json says {count} pairs")
    pairs = TrainingPairs(
        lq=tensors["lq"],
        gt=tensors["gt"],
        prompts=tuple(index["prompts"]),
        tasks=tuple(index["tasks"]),
        pair_ids=tuple(index["pair_ids"]),
    )
    return LatentCache(
        pairs=pairs, gt_latents=tensors["gt_latents"], scaling_factor=float(index["scaling_factor"])
    )
