"""The sharded latent cache: lossless, lazy, the same batches with or without DataLoader workers, and a
training process whose memory does not grow with the dataset (issue 14, "Streams")."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from unildiff.data.config import DataConfig
from unildiff.data.dataset import PairedImageDataset, pad_to_crop
from unildiff.data.prepare import prepare_dataset
from unildiff.errors import DataError, MissingArtifactError
from unildiff.models.config import PriorConfig
from unildiff.models.prior import build_tiny_prior
from unildiff.training.batch_stream import ScheduledBatches, stream_batches
from unildiff.training.batches import LatentBatches
from unildiff.training.latent_shards import (
    EncodedBatch,
    ShardedLatentCache,
    encode_dataset,
    write_latent_shards,
)
from unildiff.training.latents import TrainingPairs, build_latent_cache, encode_latents

REPO = Path(__file__).resolve().parents[1]


def _pairs(count: int, size: int = 32, eight_bit: bool = True) -> TrainingPairs:
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(count, 3, size, size, generator=generator)
    lq = (gt + 0.2 * torch.randn(count, 3, size, size, generator=generator)).clamp(0, 1)
    if eight_bit:  # what PairedImageDataset gives for 8-bit PNGs: k / 255 · 2 − 1
        gt, lq = (torch.round(x * 255) / 255.0 for x in (gt, lq))
    prompts = tuple("remove noise" if i % 3 else "remove rain" for i in range(count))
    ids = tuple(f"train-{i:03d}" for i in range(count))
    return TrainingPairs(lq=lq * 2 - 1, gt=gt * 2 - 1, prompts=prompts, tasks=prompts, pair_ids=ids)


@pytest.fixture(scope="module")
def prior():
    return build_tiny_prior(PriorConfig(), seed=0)


def _batches(cache, batch_size: int):
    pairs = cache.pairs
    for start in range(0, len(cache), batch_size):
        rows = slice(start, start + batch_size)
        yield EncodedBatch(
            pairs.lq[rows], pairs.gt[rows], cache.gt_latents[rows],
            pairs.prompts[rows], pairs.tasks[rows], pairs.pair_ids[rows],
        )  # fmt: skip


@pytest.mark.parametrize("eight_bit", [True, False])
def test_shards_give_back_every_pair_bit_for_bit_in_any_order(prior, tmp_path: Path, eight_bit: bool) -> None:
    memory = build_latent_cache(_pairs(11, eight_bit=eight_bit), prior.vae, batch_size=4)
    # batches of 3 into shards of 4: shard and batch boundaries fall apart
    write_latent_shards(_batches(memory, 3), tmp_path / "latents", 4, memory.scaling_factor)
    cache = ShardedLatentCache(tmp_path / "latents")
    assert [shard.path.name for shard in cache.shards] == [f"shard-0000{i}.safetensors" for i in range(3)]
    assert len(cache) == 11 and cache.prompts == memory.prompts and cache.pair_ids == memory.pair_ids
    assert cache.scaling_factor == prior.vae.config.scaling_factor
    order = [10, 0, 5, 4, 3, 9, 0]
    stored, expected = cache.read(order), memory.read(order)
    for name in ("lq", "gt", "gt_latents"):
        assert torch.equal(getattr(stored, name), getattr(expected, name)), name
    # 8-bit images are stored as uint8 (4x smaller), anything else as float32, and plain safetensors
    tensors = load_file(str(tmp_path / "latents" / "shard-00000.safetensors"))
    assert tensors["gt"].dtype == (torch.uint8 if eight_bit else torch.float32)
    assert tensors["gt_latents"].dtype == torch.float32


def test_broken_or_missing_caches_are_refused_in_one_line(prior, tmp_path: Path) -> None:
    with pytest.raises(MissingArtifactError, match="encode_latents"):
        ShardedLatentCache(tmp_path / "absent")
    memory = build_latent_cache(_pairs(6), prior.vae, batch_size=4)
    directory = write_latent_shards(_batches(memory, 6), tmp_path / "latents", 4, memory.scaling_factor)
    shard = directory / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DataError, match="shard-00001.safetensors is truncated"):
        ShardedLatentCache(directory).read([5])
    shard.unlink()
    with pytest.raises(DataError, match="shard-00001.safetensors is missing"):
        ShardedLatentCache(directory)
    index = json.loads((directory / "index.json").read_text())
    (directory / "index.json").write_text(json.dumps({key: index[key] for key in index if key != "format"}))
    with pytest.raises(DataError, match="old format"):
        ShardedLatentCache(directory)


def test_pairs_of_different_sizes_name_the_param_and_leave_nothing(prior, tmp_path: Path) -> None:
    small = build_latent_cache(_pairs(2, size=32), prior.vae, batch_size=2)
    large = build_latent_cache(_pairs(2, size=48), prior.vae, batch_size=2)
    with pytest.raises(DataError, match="train.cache_crop_size"):
        write_latent_shards([*_batches(small, 2), *_batches(large, 2)], tmp_path / "latents", 4, 1.0)
    assert not (tmp_path / "latents").exists()


def _folder_dataset(root: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for split, number in (("train", count), ("test", 2)):
        for index in range(number):
            gt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            lq = np.clip(gt.astype(np.int16) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
            for kind, image in (("gt", gt), ("lq", lq)):
                path = root / split / kind / f"{index:05d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path, compress_level=1)


def _prepared(tmp_path: Path, count: int, size: int) -> Path:
    _folder_dataset(tmp_path / "raw", count, size)
    config = DataConfig(setting="custom", source="folder", root=tmp_path / "raw")
    prepare_dataset(config, tmp_path / "prepared")
    return tmp_path / "prepared"


def test_streamed_encoding_matches_the_in_memory_encoder_with_workers(prior, tmp_path: Path) -> None:
    dataset = PairedImageDataset(_prepared(tmp_path, 10, 32), "train", crop_size=None)
    for workers in (0, 2):
        batches = encode_dataset(dataset, prior.vae, batch_size=4, num_workers=workers)
        scaling_factor = float(prior.vae.config.scaling_factor)
        write_latent_shards(batches, tmp_path / f"latents{workers}", 3, scaling_factor)
    first, second = ShardedLatentCache(tmp_path / "latents0"), ShardedLatentCache(tmp_path / "latents2")
    gt = torch.stack([dataset[index]["gt"] for index in range(len(dataset))])
    expected = encode_latents(prior.vae, gt, batch_size=4)
    everything = list(range(len(dataset)))
    assert torch.equal(first.read(everything).gt_latents, expected)
    assert torch.equal(first.read(everything).gt, gt)
    for name in ("lq", "gt", "gt_latents"):
        assert torch.equal(getattr(first.read(everything), name), getattr(second.read(everything), name))


def test_workers_read_the_same_batches_in_the_same_order(prior, tmp_path: Path) -> None:
    memory = build_latent_cache(_pairs(9), prior.vae, batch_size=4)
    write_latent_shards(_batches(memory, 4), tmp_path / "latents", 4, memory.scaling_factor)
    source = LatentBatches(ShardedLatentCache(tmp_path / "latents"), None)

    def run(workers: int) -> list[torch.Tensor]:
        schedule = ScheduledBatches(
            source, 3, seed=7, start_step=2, steps=6, accumulation=2, process=0, processes=1
        )
        return [batch.gt_latents for batch in stream_batches(schedule, workers, torch.device("cpu"))]

    inline, ahead = run(0), run(2)
    assert len(inline) == 8 and all(torch.equal(a, b) for a, b in zip(inline, ahead, strict=True))
    assert not torch.equal(inline[0], inline[1])  # micro-steps draw different items


def test_images_smaller_than_the_crop_are_padded_by_reflection() -> None:
    image = np.random.default_rng(0).random((20, 30, 3), dtype=np.float32)
    padded = pad_to_crop(image, 64)
    assert padded.shape == (64, 64, 3)
    assert np.array_equal(padded[:20, :30], image)  # the image itself is kept, top-left
    assert np.array_equal(padded[20:38, :30], image[-2:-20:-1])  # then mirrored, without the edge row
    assert pad_to_crop(image, 16) is image
    with pytest.raises(DataError, match="1x20 px"):
        pad_to_crop(np.zeros((20, 1, 3), dtype=np.float32), 64)


def test_dataset_crops_small_pairs_alike(tmp_path: Path) -> None:
    dataset = PairedImageDataset(_prepared(tmp_path, 3, 24), "train", crop_size=40, seed=1)
    item = dataset[0]
    assert item["gt"].shape == item["lq"].shape == (3, 40, 40)
    # lq = gt + bounded noise in every pixel, so the pair is still in register after the padding
    assert (item["lq"] - item["gt"]).abs().max() <= 2 * 21 / 255 + 1e-6


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import torch
    from unildiff.data.dataset import PairedImageDataset
    from unildiff.models.config import PriorConfig
    from unildiff.models.prior import build_tiny_prior
    from unildiff.training.batches import LatentBatches
    from unildiff.training.config import TrainConfig
    from unildiff.training.latent_shards import ShardedLatentCache, encode_dataset, write_latent_shards
    from unildiff.training.loop import ObjectiveOutput, ParamGroup, TrainingRun, make_accelerator, train

    torch.set_num_threads(1)
    prepared, out = Path(sys.argv[1]), Path(sys.argv[2])
    vae = build_tiny_prior(PriorConfig(), seed=0).vae

    class Objective(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
        def forward(self, batch, generator):
            return ObjectiveOutput(loss=(self.scale * batch.gt_latents).square().mean() + batch.lq.mean() * 0)

    def resident_mib():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    before = resident_mib()
    dataset = PairedImageDataset(prepared, "train", crop_size=None)
    write_latent_shards(encode_dataset(dataset, vae, 64, 0), out / "latents", 128, 1.0)
    cache = ShardedLatentCache(out / "latents")
    objective = Objective()
    config = TrainConfig(checkpoint_every=10**6, log_every=10**6)
    groups = [ParamGroup("scale", (objective.scale,), 0.1)]
    batches = LatentBatches(cache, None)
    run = TrainingRun(stage="probe", objective=objective, param_groups=groups, batches=batches, steps=40,
                      batch_size=256, checkpoint_dir=out / "ckpt", live_dir=None, fingerprint={})
    train(run, config, make_accelerator(config))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before": before, "peak": peak, "pairs": len(cache), "shards": len(cache.shards)}))
    """
)


@pytest.mark.slow
def test_training_memory_stays_flat_as_the_dataset_grows(tmp_path: Path) -> None:
    """8x the pairs (4000 at 64², of which ~3400 train: ~330 MB more as the fp32 lq/gt tensors the old
    cache held in memory), and the encode + train process peaks within a few MiB of the small run."""
    size, growth, pairs = 64, {}, {}
    for count in (500, 4000):
        folder = tmp_path / str(count)
        prepared = _prepared(folder, count, size)
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, str(prepared), str(folder)],
            capture_output=True, text=True, cwd=REPO, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["pairs"] > 0.8 * count  # the rest went to the validation split
        growth[count] = report["peak"] - report["before"]
        pairs[count] = report["pairs"]
    # what the fp32 lq/gt tensors of the extra pairs would add if the cache were held in memory
    in_memory_mib = (pairs[4000] - pairs[500]) * 2 * 3 * size * size * 4 / 2**20
    assert in_memory_mib > 250
    assert growth[4000] - growth[500] < 40, (growth, in_memory_mib)


@pytest.mark.gpu
def test_batches_are_pinned_for_the_asynchronous_cuda_copy(prior, tmp_path: Path) -> None:
    memory = build_latent_cache(_pairs(4), prior.vae, batch_size=4)
    write_latent_shards(_batches(memory, 4), tmp_path / "latents", 4, memory.scaling_factor)
    source = LatentBatches(ShardedLatentCache(tmp_path / "latents"), None)
    schedule = ScheduledBatches(
        source, 2, seed=0, start_step=0, steps=2, accumulation=1, process=0, processes=1
    )
    loader = torch.utils.data.DataLoader(schedule, batch_size=None, num_workers=1, pin_memory=True)
    batch = next(iter(loader))
    assert batch.gt_latents.is_pinned() and batch.lq.is_pinned()
    assert torch.equal(batch.gt_latents, schedule[0].gt_latents)
