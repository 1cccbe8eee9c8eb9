"""The latent cache on disk, in shards that training reads row by row (``models/cache/latents/``).

Every training stage after ``prior`` keeps the VAE encoder frozen, so ``encode(gt)`` is computed once, by
the ``encode_latents`` stage, and streamed to disk while it is computed:

- ``shard-00000.safetensors``, ``shard-00001.safetensors``, …: up to ``shard_size`` pairs each, with
  ``lq`` and ``gt`` (uint8 [0, 255] when the images are 8-bit, which the prepared PNGs are, else float32
  [-1, 1]; (n, 3, S, S)) and ``gt_latents`` (float32, (n, C, S/f, S/f): the scaled latents
  ``vae.encode(gt).latent_dist.mode() * vae.config.scaling_factor``);
- ``index.json``: the shard files and row counts, prompts, tasks and pair ids in row order, the crop
  size and the scaling factor.

Encoding holds one shard in memory; reading holds one batch. :class:`ShardedLatentCache` reads a row
with ``os.pread`` at its offset in the safetensors file instead of mapping the file, so the resident
memory of a training process does not grow with the dataset (a mapped file's touched pages count as
resident). The files are plain safetensors: ``safetensors.torch.load_file`` opens them too.
DVC keys the cache by its deps (``data/prepared`` and ``models/prior``): either changing re-encodes.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from unildiff.data.captions import compose_prompt
from unildiff.errors import DataError, MissingArtifactError
from unildiff.training.latents import CACHE_STAGE, LatentRows, encode_latents
from unildiff.utils.atomic import atomic_dir, atomic_write_json

INDEX_NAME = "index.json"
FORMAT = 2
_DTYPES = {"U8": (np.uint8, torch.uint8), "F32": (np.float32, torch.float32)}


def images_for_storage(images: torch.Tensor) -> torch.Tensor:
    """``images`` ([-1, 1], (n, 3, H, W) float32) as uint8 [0, 255] when that is lossless, else unchanged.

    Lossless means :func:`images_from_storage` gives back the same floats bit for bit, which holds for
    images decoded from 8-bit files (``x = k / 255 · 2 − 1``, as ``PairedImageDataset`` computes it).
    """
    quantised = torch.round((images + 1.0) / 2.0 * 255.0).clamp(0, 255).to(torch.uint8)
    return quantised if torch.equal(images_from_storage(quantised), images) else images.contiguous()


def images_from_storage(stored: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`images_for_storage`: [-1, 1], (n, 3, H, W) float32."""
    if stored.dtype == torch.uint8:
        return (stored.float() / 255.0).mul(2.0).sub(1.0)
    return stored.float()


class _ShardWriter:
    """Collects encoded rows and writes a shard file each time ``shard_size`` rows are in."""

    def __init__(self, directory: Path, shard_size: int) -> None:
        self.directory, self.shard_size = directory, shard_size
        self.buffer: dict[str, list[torch.Tensor]] = {"lq": [], "gt": [], "gt_latents": []}
        self.buffered = 0
        self.shards: list[dict[str, int | str]] = []

    def add(self, lq: torch.Tensor, gt: torch.Tensor, gt_latents: torch.Tensor) -> None:
        start = 0
        while start < len(gt):
            take = min(self.shard_size - self.buffered, len(gt) - start)
            rows = slice(start, start + take)
            for name, tensor in (("lq", lq), ("gt", gt), ("gt_latents", gt_latents)):
                self.buffer[name].append(tensor[rows])
            self.buffered += take
            start += take
            if self.buffered == self.shard_size:
                self.flush()

    def flush(self) -> None:
        if not self.buffered:
            return
        name = f"shard-{len(self.shards):05d}.safetensors"
        tensors = {
            "lq": images_for_storage(torch.cat(self.buffer["lq"])),
            "gt": images_for_storage(torch.cat(self.buffer["gt"])),
            "gt_latents": torch.cat(self.buffer["gt_latents"]).float().contiguous(),
        }
        save_file(tensors, str(self.directory / name))
        self.shards.append({"file": name, "count": self.buffered})
        self.buffer = {key: [] for key in self.buffer}
        self.buffered = 0


@dataclass(frozen=True)
class EncodedBatch:
    """One batch of pairs and its latents, as the encoder delivers them to :func:`write_latent_shards`.

    Attributes:
        lq: [-1, 1], (n, 3, S, S) float32, CPU.
        gt: [-1, 1], (n, 3, S, S) float32, CPU.
        gt_latents: Scaled latents of ``gt``, (n, C, S/f, S/f) float32, CPU.
        prompts: Training prompt of each pair (task prompt and description, ``compose_prompt``).
        tasks: Task of each pair.
        pair_ids: Manifest id of each pair.
    """

    lq: torch.Tensor
    gt: torch.Tensor
    gt_latents: torch.Tensor
    prompts: Sequence[str]
    tasks: Sequence[str]
    pair_ids: Sequence[str]


def _collate(items: list[dict]) -> dict:
    sizes = {tuple(item["gt"].shape) for item in items}
    if len(sizes) > 1:
        raise DataError(
            f"train pairs {items[0]['pair_id']} … {items[-1]['pair_id']} differ in size; "
            "set train.cache_crop_size to cache one fixed crop per pair"
        )
    return {
        "lq": torch.stack([item["lq"] for item in items]),
        "gt": torch.stack([item["gt"] for item in items]),
        "prompt": [compose_prompt(item["prompt"], item.get("caption", "")) for item in items],
        **{key: [item[key] for item in items] for key in ("task", "pair_id")},
    }


def encode_dataset(
    dataset: torch.utils.data.Dataset, vae: torch.nn.Module, batch_size: int, num_workers: int
) -> Iterator[EncodedBatch]:
    """Encode a ``PairedImageDataset`` batch by batch on the VAE's device (frozen, eval mode).

    Args:
        dataset: Items ``{"lq", "gt": [-1, 1] (3, S, S), "prompt", "caption", "task", "pair_id"}`` in cache
            order; each pair's training prompt joins its prompt and caption.
        vae: A diffusers ``AutoencoderKL`` on the training device.
        batch_size: Pairs per encoder pass (``train.encode_batch_size``).
        num_workers: DataLoader processes that decode the images (``train.dataloader_workers``).

    Yields:
        One :class:`EncodedBatch` per ``batch_size`` pairs, on the CPU.
    """
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate
    )
    was_training = vae.training
    vae.eval()
    try:
        for items in loader:
            yield EncodedBatch(
                lq=items["lq"],
                gt=items["gt"],
                gt_latents=encode_latents(vae, items["gt"], batch_size),
                prompts=items["prompt"],
                tasks=items["task"],
                pair_ids=items["pair_id"],
            )
    finally:
        vae.train(was_training)


def write_latent_shards(
    batches: Iterable[EncodedBatch], directory: str | Path, shard_size: int, scaling_factor: float
) -> Path:
    """Stream encoded batches into ``directory`` (atomically: all shards and the index, or nothing).

    Args:
        batches: The encoded pairs in order; they must share one image size.
        directory: The cache folder (``models/cache/latents``).
        shard_size: Pairs per shard file (``train.latent_shard_size``).
        scaling_factor: ``vae.config.scaling_factor`` the latents were scaled with.

    Raises:
        DataError: no pairs, or pairs of different sizes (names ``train.cache_crop_size``).
    """
    directory = Path(directory)
    prompts: list[str] = []
    tasks: list[str] = []
    pair_ids: list[str] = []
    size: tuple[int, ...] | None = None
    with atomic_dir(directory) as temporary:
        writer = _ShardWriter(temporary, shard_size)
        for batch in batches:
            if size is None:
                size = tuple(batch.gt.shape[-2:])
            if tuple(batch.gt.shape[-2:]) != size or batch.lq.shape != batch.gt.shape:
                raise DataError(
                    f"train pair {batch.pair_ids[0]} is {tuple(batch.gt.shape[-2:])}, "
                    f"not {size} as the first; "
                    "set train.cache_crop_size to cache one fixed crop per pair"
                )
            writer.add(batch.lq, batch.gt, batch.gt_latents)
            prompts += batch.prompts
            tasks += batch.tasks
            pair_ids += batch.pair_ids
        writer.flush()
        if size is None:
            raise DataError(f"no train pairs to encode into {directory}")
        atomic_write_json(
            temporary / INDEX_NAME,
            {
                "format": FORMAT,
                "count": len(pair_ids),
                "crop_size": int(size[-1]),
                "scaling_factor": scaling_factor,
                "shards": writer.shards,
                "prompts": prompts,
                "tasks": tasks,
                "pair_ids": pair_ids,
            },
        )
    return directory


class _ShardFile:
    """Row reads from one safetensors file with ``os.pread`` (no mapping, no whole-file read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as stream:
            length = int.from_bytes(stream.read(8), "little")
            header = json.loads(stream.read(length))
        header.pop("__metadata__", None)
        self.data_start = 8 + length
        self.tensors = header

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name]["shape"])

    def rows(self, name: str, rows: Sequence[int]) -> torch.Tensor:
        """Rows ``rows`` of tensor ``name``, (len(rows), *shape[1:]).

        The file is opened for the call and closed after it, so a process holds no descriptor between
        batches however many shards the cache has (an open costs microseconds next to the reads).
        """
        entry = self.tensors[name]
        numpy_dtype, _ = _DTYPES[entry["dtype"]]
        shape = entry["shape"]
        row_bytes = int(np.prod(shape[1:])) * np.dtype(numpy_dtype).itemsize
        begin = self.data_start + entry["data_offsets"][0]
        handle = os.open(self.path, os.O_RDONLY)
        try:
            chunks = [os.pread(handle, row_bytes, begin + row * row_bytes) for row in rows]
        finally:
            os.close(handle)
        if any(len(chunk) != row_bytes for chunk in chunks):
            raise DataError(f"latent cache shard {self.path} is truncated; run `dvc repro -f {CACHE_STAGE}`")
        array = np.frombuffer(b"".join(chunks), dtype=numpy_dtype).reshape(len(rows), *shape[1:])
        return torch.from_numpy(array.copy())


class ShardedLatentCache:
    """The latent cache on disk (:func:`write_latent_shards`), read lazily one batch at a time.

    Args:
        directory: The cache folder.

    Raises:
        MissingArtifactError: The cache is absent (run the ``encode_latents`` stage).
        DataError: The index and the shards disagree, or the cache has an older format.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_NAME
        if not index_path.is_file():
            raise MissingArtifactError(
                f"latent cache {self.directory} is missing; run `dvc repro {CACHE_STAGE}`"
            )
        index = json.loads(index_path.read_text())
        if index.get("format") != FORMAT:
            raise DataError(
                f"latent cache {self.directory} has an old format; run `dvc repro -f {CACHE_STAGE}`"
            )
        self.prompts: tuple[str, ...] = tuple(index["prompts"])
        self.tasks: tuple[str, ...] = tuple(index["tasks"])
        self.pair_ids: tuple[str, ...] = tuple(index["pair_ids"])
        self.scaling_factor = float(index["scaling_factor"])
        self.crop_size = int(index["crop_size"])
        self.shards: list[_ShardFile] = []
        self.starts: list[int] = []
        total = 0
        for entry in index["shards"]:
            path = self.directory / entry["file"]
            if not path.is_file():
                raise DataError(f"latent cache shard {path} is missing; run `dvc repro -f {CACHE_STAGE}`")
            shard = _ShardFile(path)
            if any(shard.shape(name)[0] != entry["count"] for name in ("lq", "gt", "gt_latents")):
                raise DataError(
                    f"latent cache shard {path} does not hold the {entry['count']} rows index.json says"
                )
            self.shards.append(shard)
            self.starts.append(total)
            total += entry["count"]
        if total != index["count"] or len(self.pair_ids) != total or len(self.prompts) != total:
            raise DataError(
                f"latent cache {self.directory} is inconsistent: index.json says {index['count']} pairs"
            )

    def __len__(self) -> int:
        return len(self.pair_ids)

    def read(self, indices: Sequence[int] | torch.Tensor) -> LatentRows:
        """The pairs ``indices`` in that order (CPU tensors; see :class:`LatentRows`)."""
        positions = [int(index) for index in indices]
        if any(not 0 <= position < len(self) for position in positions):
            raise IndexError(f"latent cache index out of range 0..{len(self) - 1}")
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for order, position in enumerate(positions):
            shard = bisect.bisect_right(self.starts, position) - 1
            by_shard.setdefault(shard, []).append((order, position - self.starts[shard]))
        parts: dict[str, list[torch.Tensor]] = {"lq": [], "gt": [], "gt_latents": []}
        orders: list[int] = []
        for shard, entries in sorted(by_shard.items()):
            rows = [row for _, row in entries]
            orders += [order for order, _ in entries]
            for name in parts:
                parts[name].append(self.shards[shard].rows(name, rows))
        inverse = torch.empty(len(orders), dtype=torch.long)
        inverse[torch.tensor(orders, dtype=torch.long)] = torch.arange(len(orders))
        return LatentRows(
            lq=images_from_storage(torch.cat(parts["lq"])[inverse]),
            gt=images_from_storage(torch.cat(parts["gt"])[inverse]),
            gt_latents=torch.cat(parts["gt_latents"])[inverse],
        )
