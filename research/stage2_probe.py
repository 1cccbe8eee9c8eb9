"""Probe of stage-2 decoder variants on a trained stage 1b.

Backs docs/experiments/2026-12-01-daem-stage2-variants.md. Research code: its ``DecodedImageDAEM`` (a DAEM
block on the decoded image, not the paper's placement) exists only here, not in the library.

Opens the trained model under ``--root`` (``unildiff.paths.MODEL``) with
``UniLDiffPipeline.from_pretrained``, trains a fresh stage 2 for its prior and stage-1b network with the
stage's own ``train_stage2`` (the eq.-10 loss, its two param groups, cosine decay, the model's start and
``params.yaml``'s other ``stage2`` settings), then restores every ``--every``-th pair of ``--split`` with
the model's recorded sampling settings and scores it with step 7's fixes off ("raw") and on. Nothing
is saved. Prints one JSON line.

    python research/stage2_probe.py                                  # the committed stage 2 (blocks 1, 2)
    python research/stage2_probe.py --up-blocks ""                   # without DAEM
    python research/stage2_probe.py --split train --every 12         # on 42 of the 500 training pairs
    python research/stage2_probe.py --up-blocks "" --decoder-lr-scale 1
    python research/stage2_probe.py --expert-residual-init 1 --shared-bias-init 1
    python research/stage2_probe.py --up-blocks "" --decoded-image-block
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from unildiff import UniLDiffPipeline, paths
from unildiff.data.dataset import PairedImageDataset
from unildiff.evaluation.metrics import MetricSuite
from unildiff.models.config import DAEMConfig
from unildiff.models.daem import DAEMBlock
from unildiff.models.decoder import DAEMDecoder, DecoderOutput
from unildiff.params import load_section, read_params
from unildiff.pipeline import RestorationPipeline, SamplingConfig, fix_against_lq
from unildiff.start import StartConfig
from unildiff.training.config import Stage2Config, TrainConfig
from unildiff.training.latent_shards import ShardedLatentCache
from unildiff.training.loop import make_accelerator
from unildiff.training.stage2 import train_stage2


class DecodedImageDAEM(torch.nn.Module):
    """A DAEM block on the decoded image (a prototype; the paper places DAEM after decoder up blocks).

    A 3×3 convolution lifts the decoded image to ``width`` channels, one :class:`DAEMBlock` fuses it with
    the full-resolution LQ skip, and a zero-initialised 3×3 convolution adds the result to the decoded
    image, so at initialisation the output is the wrapped decoder's. All three sit in ``daem_blocks``,
    so ``stage2_param_groups`` trains them at the DAEM rate. Its router adds nothing to L_aux (the
    probe passes on only the wrapped decoder's), so its experts train without load balancing.

    Args:
        decoder: The wrapped ``DAEMDecoder``.
        daem: Experts, top-k and heads of the block (the window is 0: per-image routing).
        width: Channels of the block.
    """

    def __init__(self, decoder: DAEMDecoder, daem: DAEMConfig, width: int = 32):
        super().__init__()
        self.decoder = decoder
        skip_channels = decoder.config.block_out_channels[0]
        head = torch.nn.Conv2d(width, 3, 3, padding=1)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        self.daem_blocks = torch.nn.ModuleDict(
            {
                "lift": torch.nn.Conv2d(3, width, 3, padding=1),
                "block": DAEMBlock(width, skip_channels, daem.num_experts, daem.top_k, 0, daem.num_heads),
                "head": head,
            }
        )

    @property
    def config(self) -> dict:
        return {**self.decoder.config, "decoded_image_block": True}

    def forward(self, latents, skips, routing_generator=None) -> DecoderOutput:
        """Decode scaled latents (B, C, h, w) with LQ skips; the sample is [-1, 1] nominally, (B, 3, H, W)."""
        output = self.decoder(latents, skips, routing_generator)
        hidden = self.daem_blocks["lift"](output.sample)
        block = self.daem_blocks["block"]
        noise = None
        if self.training and routing_generator is not None:
            noise = torch.randn(block.router_shape(hidden), generator=routing_generator)
        refined, *_ = block(hidden, skips[0], noise)
        sample = output.sample + self.daem_blocks["head"](refined)
        return DecoderOutput(sample=sample, aux_loss=output.aux_loss, expert_usage=output.expert_usage)


def make_decoder(prior, daem: DAEMConfig, args: argparse.Namespace, seed: int) -> torch.nn.Module:
    """The stage's ``DAEMDecoder`` with the probe's initialisations, or wrapped by the image block."""
    decoder = DAEMDecoder.from_vae(prior.vae, daem, seed=seed)
    for block in decoder.daem_blocks.values():
        for expert in block.experts:
            if args.expert_residual_init is not None:  # NAFBlock's β and γ (zero by default)
                torch.nn.init.constant_(expert.beta, args.expert_residual_init)
                torch.nn.init.constant_(expert.gamma, args.expert_residual_init)
        if args.shared_bias_init is not None:  # S ≈ this constant at initialisation
            torch.nn.init.constant_(block.shared.project_out.bias, args.shared_bias_init)
    return DecodedImageDAEM(decoder, daem) if args.decoded_image_block else decoder


def score(model, sampling: SamplingConfig, start: StartConfig, split: str, every: int) -> dict:
    """Average PSNR/SSIM, raw (step 7 off) and fixed (step 7 on), overall and per task."""
    raw_sampling = dataclasses.replace(
        sampling, color_fix="none", detail_fix_radius=0, detail_fix_wide_radius=0
    )
    pipeline = RestorationPipeline.from_model(model, raw_sampling, start, device="cpu")
    pipeline.show_progress = False
    dataset = PairedImageDataset(paths.PREPARED, split, crop_size=None)
    suite = MetricSuite(("psnr", "ssim"))
    per_task = collections.defaultdict(list)
    for index in range(0, len(dataset), every):
        item = dataset[index]
        lq, gt = item["lq"][None], item["gt"][None]
        restored = pipeline(lq, item["prompt"], torch.Generator().manual_seed(sampling.seed))
        raw, fixed = suite.score(restored, gt), suite.score(fix_against_lq(restored, lq, sampling), gt)
        per_task[item["task"]].append((raw["psnr"], raw["ssim"], fixed["psnr"], fixed["ssim"]))

    def mean(rows: list, column: int) -> float:
        return round(sum(row[column] for row in rows) / len(rows), 4)

    every_row = [row for rows in per_task.values() for row in rows]
    names = ("raw_psnr", "raw_ssim", "fixed_psnr", "fixed_ssim")
    return {
        "pairs": len(every_row),
        "avg": {name: mean(every_row, column) for column, name in enumerate(names)},
        "per_task": {
            task: {name: mean(rows, column) for column, name in enumerate(names)}
            for task, rows in sorted(per_task.items())
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root", type=Path, default=Path("."), help="the repository whose models/unildiff is probed"
    )
    parser.add_argument("--cache", type=Path, default=paths.LATENT_CACHE, help="the latent cache")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--every", type=int, default=1, help="score every N-th pair of the split")
    parser.add_argument("--up-blocks", default="1,2", help='daem.up_blocks, comma-separated ("" = none)')
    parser.add_argument("--steps", type=int, help="stage2.steps (default: params.yaml)")
    parser.add_argument("--lr", type=float, help="stage2.lr (default: params.yaml)")
    parser.add_argument("--decoder-lr-scale", type=float, help="stage2.decoder_lr_scale")
    parser.add_argument("--expert-residual-init", type=float, help="experts' NAFBlock β, γ at init (0)")
    parser.add_argument("--shared-bias-init", type=float, help="bias of S's output projection at init")
    parser.add_argument("--decoded-image-block", action="store_true", help="add DecodedImageDAEM")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.every < 1:
        parser.error(f"--every must be at least 1, got {args.every}")
    torch.set_num_threads(args.threads)

    params = read_params()
    train_config = dataclasses.replace(
        load_section("train", TrainConfig, params), checkpoint_every=10**6, resume="never"
    )
    overrides = {"steps": args.steps, "lr": args.lr, "decoder_lr_scale": args.decoder_lr_scale}
    stage2 = dataclasses.replace(
        load_section("stage2", Stage2Config, params),
        **{key: value for key, value in overrides.items() if value is not None},
    )
    up_blocks = tuple(int(block) for block in args.up_blocks.split(",") if block.strip())
    daem = dataclasses.replace(load_section("daem", DAEMConfig, params), up_blocks=up_blocks)

    trained = UniLDiffPipeline.from_pretrained(args.root / paths.MODEL)
    stage1, start = trained.model, trained.start  # the prior and the stage-1b network, its decoder replaced
    prior = stage1.prior
    decoder = make_decoder(prior, daem, args, train_config.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as checkpoints:
        result = train_stage2(
            prior,
            decoder,
            ShardedLatentCache(args.cache),
            stage2,
            train_config,
            Path(checkpoints),
            None,
            make_accelerator(train_config),
            "probe",
            stage1,
            start.timestep if start.trains_lq_start else None,
            start.noise,
        )
    seconds = time.perf_counter() - started
    stage1.decoder = decoder.eval()
    report = {
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "train_seconds": round(seconds),
        "final_loss": result.final_loss,
        **score(stage1, trained.sampling, start, args.split, args.every),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
