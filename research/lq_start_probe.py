"""Probe of the tiny LQ start on the validation split (docs/experiments/2026-11-30-lq-start-probe.md).

Trains a fresh stage 1a + 1b on the prior and the latent cache (``unildiff.paths.PRIOR``,
``LATENT_CACHE``; not the trained model: the probe retrains it) with the given LQ start, with the
stages' own functions and ``params.yaml``'s other settings, then scores one step from that start on the
validation split with a fresh DAEM decoder (its blocks start at zero, so it decodes like the plain VAE
decoder), with ``params.yaml``'s sampling settings and step 7's fixes off. Prints one JSON line: the
average and per-task PSNR of the input, the restoration, ``no_diffusion`` (the LQ latent decoded) and
``ceiling`` (the gt latent decoded).

    python research/lq_start_probe.py --timestep 19 --noise 0 --out /tmp/probe19
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from unildiff import paths
from unildiff.evaluation.evaluate import EvaluateConfig, evaluate_model
from unildiff.models.bundle import UniLDiffModel
from unildiff.models.config import DAEMConfig, DAFFConfig
from unildiff.models.daff import DAFF
from unildiff.models.decoder import DAEMDecoder
from unildiff.models.lq_encoder import LQEncoder
from unildiff.models.prior import load_prior
from unildiff.params import load_section, read_params
from unildiff.pipeline import SamplingConfig
from unildiff.pipeline_unildiff import pipeline_from_model
from unildiff.start import StartConfig
from unildiff.training.config import Stage1aConfig, Stage1bConfig, TrainConfig
from unildiff.training.latent_shards import ShardedLatentCache
from unildiff.training.loop import make_accelerator
from unildiff.training.stage1 import train_stage1a, train_stage1b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probability", type=float, default=1.0, help="start.training_fraction")
    parser.add_argument("--timestep", type=int, default=19, help="start.timestep (1000/N - 1)")
    parser.add_argument("--noise", type=float, default=0.0, help="start.noise")
    parser.add_argument("--steps1a", type=int, default=100)
    parser.add_argument("--steps1b", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="throw-away checkpoint folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = read_params()
    train_config = dataclasses.replace(
        load_section("train", TrainConfig, params), checkpoint_every=10**6, resume="never"
    )
    start = StartConfig(
        mode="lq", timestep=args.timestep, noise=args.noise, training_fraction=args.probability
    )
    stage1a = dataclasses.replace(load_section("stage1a", Stage1aConfig, params), steps=args.steps1a)
    stage1b = dataclasses.replace(load_section("stage1b", Stage1bConfig, params), steps=args.steps1b)
    prior = load_prior(paths.PRIOR)
    cache = ShardedLatentCache(paths.LATENT_CACHE)
    accelerator = make_accelerator(train_config)
    daff_config = load_section("daff", DAFFConfig, params)
    lq_encoder = LQEncoder.from_vae(prior.vae, num_scales=daff_config.lq_scales)
    daff = DAFF.from_unet(prior.unet, daff_config, lq_encoder.scale_channels, seed=train_config.seed)
    started = time.perf_counter()
    result_1a = train_stage1a(
        prior,
        lq_encoder,
        daff,
        cache,
        stage1a,
        start,
        train_config,
        args.out / "1a",
        None,
        accelerator,
        "probe",
    )
    result_1b = train_stage1b(
        prior,
        lq_encoder,
        daff,
        cache,
        stage1b,
        start,
        train_config,
        args.out / "1b",
        None,
        accelerator,
        "probe",
    )
    seconds = time.perf_counter() - started
    decoder = DAEMDecoder.from_vae(prior.vae, load_section("daem", DAEMConfig, params), seed=0)
    model = UniLDiffModel(prior=prior, lq_encoder=lq_encoder, daff=daff, unet=prior.unet, decoder=decoder)
    steps = round(1000 / (args.timestep + 1))  # trailing spacing: t = 1000/steps - 1 is the only step <= t
    sampling = dataclasses.replace(
        load_section("sampling", SamplingConfig, params),
        steps=steps,
        cfg=1.0,
        color_fix="none",
        detail_fix_radius=0,
        detail_fix_wide_radius=0,
    )
    config = EvaluateConfig(
        metrics=("psnr", "ssim"), ablations=("no_diffusion", "ceiling"), split="val", grid_images=0
    )
    pipeline = pipeline_from_model(model.eval(), sampling, start)
    result = evaluate_model(pipeline, paths.PREPARED, config, show_progress=False)
    print(
        json.dumps(
            {
                "start": dataclasses.asdict(start),
                "train_seconds": round(seconds),
                "loss_1a": result_1a.final_loss,
                "loss_1b": result_1b.final_loss,
                "avg": {variant: result.average(variant) for variant in result.variants()},
                "per_task": {
                    task: {
                        variant: round(result.average(variant, task)["psnr"], 2)
                        for variant in result.variants()
                    }
                    for task in result.tasks()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
