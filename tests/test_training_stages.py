"""Each training stage, a few steps on a tiny in-memory setup: exactly the right parameters change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unildiff.errors import ConfigError, MissingArtifactError
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.models.prior import build_tiny_prior, save_prior
from unildiff.start import StartConfig
from unildiff.training.batches import LatentBatches
from unildiff.training.config import PriorTrainConfig, Stage1aConfig, Stage1bConfig, Stage2Config, TrainConfig
from unildiff.training.latents import TrainingPairs, build_latent_cache
from unildiff.training.loop import make_accelerator
from unildiff.training.objectives import DecoderObjective

TRAIN = TrainConfig(checkpoint_every=1, log_every=1)


def _pairs(count: int = 6, size: int = 64) -> TrainingPairs:
    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(count, 3, size, size, generator=generator) * 2 - 1
    lq = (gt + 0.3 * torch.randn(count, 3, size, size, generator=generator)).clamp(-1, 1)
    prompts = tuple("remove noise" if i % 2 else "remove rain" for i in range(count))
    return TrainingPairs(
        lq=lq, gt=gt, prompts=prompts, tasks=prompts, pair_ids=tuple(str(i) for i in range(count))
    )


@pytest.fixture(scope="module")
def setup():
    prior = build_tiny_prior(PriorConfig(), seed=0)
    cache = build_latent_cache(_pairs(), prior.vae, batch_size=8)
    return prior, cache


def _snapshot(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [tensor.detach().clone() for module in modules for tensor in module.state_dict().values()]


def _same(before: list[torch.Tensor], *modules: torch.nn.Module) -> bool:
    after = [tensor for module in modules for tensor in module.state_dict().values()]
    return all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_fresh_daff_and_daem_are_seeded_and_leave_the_global_rng_alone(setup) -> None:
    from unildiff.models.daff import DAFF
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.models.lq_encoder import LQEncoder

    prior, _ = setup
    lq_encoder = LQEncoder.from_vae(prior.vae)
    config = DAFFConfig(width=16, num_heads=2)

    def build(seed: int) -> list[torch.Tensor]:
        return _snapshot(
            DAFF.from_unet(prior.unet, config, lq_encoder.out_channels, seed=seed),
            DAEMDecoder.from_vae(prior.vae, DAEMConfig(), seed=seed),
        )

    torch.manual_seed(123)
    first = build(0)
    after_first = torch.rand(1)
    torch.manual_seed(999)  # another global RNG state: the weights must not depend on it
    second, other = build(0), build(1)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_first)  # building consumed nothing from the global RNG


def test_stage1a_updates_only_daff(setup, tmp_path: Path) -> None:
    from unildiff.models.daff import DAFF
    from unildiff.models.lq_encoder import LQEncoder
    from unildiff.training.stage1 import train_stage1a

    prior, cache = setup
    lq_encoder = LQEncoder.from_vae(prior.vae)
    daff = DAFF.from_unet(prior.unet, DAFFConfig(width=16, num_heads=2), lq_encoder.out_channels, seed=0)
    frozen = (prior.vae, prior.unet, prior.text_encoder, prior.text_encoder_2, lq_encoder)
    before, daff_before = _snapshot(*frozen), _snapshot(daff)
    result = train_stage1a(
        prior,
        lq_encoder,
        daff,
        cache,
        Stage1aConfig(steps=2, batch_size=2),
        StartConfig(),
        TRAIN,
        tmp_path / "ckpt",
        tmp_path / "live",
        make_accelerator(TRAIN),
        "key",
    )
    assert result.steps == 2 and _same(before, *frozen)
    assert not _same(daff_before, daff)
    assert daff.proj_out.weight.abs().sum() > 0  # the zero-initialised output projection has started to learn


def test_stage1b_updates_lq_encoder_daff_unet_with_their_lrs(setup, tmp_path: Path) -> None:
    from unildiff.models.daff import DAFF
    from unildiff.models.lq_encoder import LQEncoder
    from unildiff.training.stage1 import train_stage1b

    prior, cache = setup
    lq_encoder = LQEncoder.from_vae(prior.vae)
    daff = DAFF.from_unet(prior.unet, DAFFConfig(width=16, num_heads=2), lq_encoder.out_channels, seed=0)
    unet = prior.unet
    frozen = (prior.vae, prior.text_encoder, prior.text_encoder_2)
    before, trained_before = _snapshot(*frozen), [_snapshot(m) for m in (lq_encoder, daff, unet)]
    unet_original = _snapshot(unet)
    config = Stage1bConfig(steps=2, batch_size=2, lr_lq_encoder=5e-6, lr_denoiser=1e-5)
    train_stage1b(
        prior, lq_encoder, daff, cache, config, StartConfig(), TRAIN, tmp_path / "ckpt", None,
        make_accelerator(TRAIN), "k",
    )  # fmt: skip
    assert _same(before, *frozen)
    for snapshot, module in zip(trained_before, (lq_encoder, daff, unet), strict=True):
        assert not _same(snapshot, module)
    state = json.loads((tmp_path / "ckpt" / "step-00000002" / "state.json").read_text())
    groups = {group["name"]: group["initial_lr"] for group in state["optimizer"]["param_groups"]}
    assert groups == {"lq_encoder": 5e-6, "denoiser": 1e-5}
    with torch.no_grad():  # put the shared prior back for the other tests
        for tensor, original in zip(unet.state_dict().values(), unet_original, strict=True):
            tensor.copy_(original)


def test_stage2_updates_only_decoder(setup, tmp_path: Path) -> None:
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.training.stage2 import train_stage2

    prior, cache = setup
    decoder = DAEMDecoder.from_vae(prior.vae, DAEMConfig())
    frozen = (prior.vae, prior.unet, prior.text_encoder, prior.text_encoder_2)
    before, decoder_before = _snapshot(*frozen), _snapshot(decoder)
    config = Stage2Config(steps=2, batch_size=2, crop_size=32)
    result = train_stage2(
        prior,
        decoder,
        cache,
        config,
        TRAIN,
        tmp_path / "ckpt",
        tmp_path / "live",
        make_accelerator(TRAIN),
        "key",
    )
    assert result.steps == 2 and _same(before, *frozen) and not _same(decoder_before, decoder)
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert {"l1", "ssim", "aux_loss", "expert_usage"} <= set(metrics)
    assert (tmp_path / "live" / "plots" / "custom" / "expert_usage.json").is_file()


def test_stage2_trains_the_decoder_at_its_scaled_rate_and_daem_at_lr(setup, tmp_path: Path) -> None:
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.training.stage2 import train_stage2

    prior, cache = setup
    decoder = DAEMDecoder.from_vae(prior.vae, DAEMConfig())
    config = Stage2Config(steps=1, lr=1e-3, decoder_lr_scale=0.01, batch_size=2, crop_size=32)
    train_stage2(
        prior, decoder, cache, config, TRAIN, tmp_path / "ckpt", None, make_accelerator(TRAIN), "key"
    )

    def groups(folder: Path) -> dict[str, tuple[float, int]]:
        state = json.loads((folder / "step-00000001" / "state.json").read_text())
        return {
            group["name"]: (group["initial_lr"], len(group["params"]))
            for group in state["optimizer"]["param_groups"]
        }

    daem_count = len(list(decoder.daem_blocks.parameters()))
    assert groups(tmp_path / "ckpt") == {
        "decoder": (pytest.approx(1e-5), len(list(decoder.parameters())) - daem_count),
        "daem": (1e-3, daem_count),
    }
    bare = DAEMDecoder.from_vae(prior.vae, DAEMConfig(up_blocks=()))
    train_stage2(prior, bare, cache, config, TRAIN, tmp_path / "bare", None, make_accelerator(TRAIN), "key")
    assert list(groups(tmp_path / "bare")) == ["decoder"]
    with pytest.raises(ConfigError, match="stage2.decoder_lr_scale"):
        Stage2Config(decoder_lr_scale=0.0)


def test_lambda2_reaches_the_loss(setup) -> None:
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.training.stage2 import SkipEncoder

    prior, cache = setup
    decoder = DAEMDecoder.from_vae(prior.vae, DAEMConfig()).train()
    skips = SkipEncoder(prior.vae).requires_grad_(False)
    batch = LatentBatches(cache, None)(torch.arange(2))
    outputs = {}
    for lambda2 in (0.0, 0.5):
        objective = DecoderObjective(decoder, skips, lambda1=0.2, lambda2=lambda2)
        outputs[lambda2] = objective(batch, torch.Generator().manual_seed(0))
    aux = outputs[0.5].terms["aux_loss"]
    assert aux > 0
    assert torch.allclose(outputs[0.5].loss - outputs[0.0].loss, 0.5 * aux, atol=1e-5)


def test_prior_trains_vae_and_unet_not_text_encoders(tmp_path: Path) -> None:
    from unildiff.training.prior import train_tiny_prior

    prior = build_tiny_prior(PriorConfig(), seed=1)
    text_before = _snapshot(prior.text_encoder, prior.text_encoder_2)
    vae_before, unet_before = _snapshot(prior.vae), _snapshot(prior.unet)
    config = PriorTrainConfig(vae_steps=1, unet_steps=1, batch_size=2)
    results = train_tiny_prior(
        prior, _pairs(4), config, TRAIN, tmp_path / "ckpt", tmp_path / "live", make_accelerator(TRAIN)
    )
    assert [r.stage for r in results] == ["prior_vae", "prior_unet"]
    assert _same(text_before, prior.text_encoder, prior.text_encoder_2)
    assert not _same(vae_before, prior.vae) and not _same(unet_before, prior.unet)
    assert (tmp_path / "ckpt" / "vae" / "step-00000001" / "state.json").is_file() and (
        tmp_path / "ckpt" / "unet" / "step-00000001" / "state.json"
    ).is_file()


def test_encode_latents_stage_streams_the_cache_to_shards(setup, tmp_path: Path) -> None:
    from unildiff.training.latent_shards import ShardedLatentCache, encode_dataset, write_latent_shards

    prior, cache = setup

    class Items(torch.utils.data.Dataset):  # what PairedImageDataset yields
        def __len__(self) -> int:
            return len(cache)

        def __getitem__(self, index: int) -> dict:
            pairs = cache.pairs
            return {"lq": pairs.lq[index], "gt": pairs.gt[index], "prompt": pairs.prompts[index],
                    "task": pairs.tasks[index], "pair_id": pairs.pair_ids[index]}  # fmt: skip

    batches = encode_dataset(Items(), prior.vae, batch_size=8, num_workers=0)
    write_latent_shards(batches, tmp_path / "latents", 4, float(prior.vae.config.scaling_factor))
    loaded = ShardedLatentCache(tmp_path / "latents")
    everything = list(range(len(cache)))
    assert torch.equal(loaded.read(everything).gt_latents, cache.gt_latents)
    assert loaded.prompts == cache.prompts and loaded.scaling_factor == prior.vae.config.scaling_factor
    factor = 2 ** (len(prior.vae.config.block_out_channels) - 1)
    assert loaded.read([0]).gt_latents.shape[-1] == cache.pairs.gt.shape[-1] // factor
    with pytest.raises(MissingArtifactError, match="encode_latents"):
        ShardedLatentCache(tmp_path / "absent")


def test_sdxl_directory_missing_a_component_is_named(setup, tmp_path: Path) -> None:
    import shutil

    from unildiff.training.sdxl import link_sdxl_prior

    prior, _ = setup
    save_prior(prior, tmp_path / "sdxl")
    link_sdxl_prior(tmp_path / "sdxl", tmp_path / "linked")
    assert (tmp_path / "linked" / "unet" / "config.json").is_file()
    shutil.rmtree(tmp_path / "sdxl" / "text_encoder_2")
    with pytest.raises(MissingArtifactError, match="text_encoder_2"):
        link_sdxl_prior(tmp_path / "sdxl", tmp_path / "linked2")
    assert not (tmp_path / "linked2").exists()


def test_stage2_killed_mid_run_resumes_to_the_uninterrupted_weights(setup, tmp_path: Path, monkeypatch):
    """A real tiny stage (stage 2: DAEM decoder, routing noise, two param groups) killed during step 3
    resumes from the state of step 2 and ends on exactly the weights of an uninterrupted run."""
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.training.objectives import DecoderObjective
    from unildiff.training.stage2 import train_stage2

    prior, cache = setup
    config = Stage2Config(steps=4, batch_size=2, crop_size=32)

    def run(folder: Path) -> dict[str, torch.Tensor]:
        decoder = DAEMDecoder.from_vae(prior.vae, DAEMConfig(), seed=0)
        train_stage2(prior, decoder, cache, config, TRAIN, folder, None, make_accelerator(TRAIN), "key")
        return {name: tensor.clone() for name, tensor in decoder.state_dict().items()}

    uninterrupted = run(tmp_path / "whole")
    forward, calls = DecoderObjective.forward, []

    def killed_in_step_3(self, batch, generator):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return forward(self, batch, generator)

    monkeypatch.setattr(DecoderObjective, "forward", killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    monkeypatch.setattr(DecoderObjective, "forward", forward)
    assert [path.name for path in (tmp_path / "killed").glob("step-*")] == ["step-00000002"]
    resumed = run(tmp_path / "killed")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[name], uninterrupted[name]) for name in uninterrupted)
