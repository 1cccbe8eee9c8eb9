"""Sampling sweep on the validation split, with the evaluate stage's own calls (docs/evaluation.md).

Scores the trained weights under a few ``SamplingConfig`` settings on ``evaluate.split = val`` (never on
test) and prints one JSON line per setting: the average PSNR/SSIM of each variant and the per-task PSNR.

    python scripts/sampling_sweep.py --split val
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from unildiff.evaluation.evaluate import EvaluateConfig, evaluate_model
from unildiff.models.bundle import load_trained_model
from unildiff.pipeline import SamplingConfig

GRID = (
    {"start": "noise", "steps": 1, "cfg": 1.0},
    {"start": "noise", "steps": 2, "cfg": 1.0},
    {"start": "noise", "steps": 4, "cfg": 1.0},
    {"start": "noise", "steps": 1, "cfg": 2.0},
    {"start": "lq", "steps": 4, "strength": 0.5, "cfg": 1.0},
    {"start": "lq", "steps": 4, "strength": 0.25, "cfg": 1.0},
    {"start": "lq", "steps": 2, "strength": 0.1, "cfg": 1.0},
    {"start": "lq", "steps": 1, "strength": 0.05, "cfg": 1.0},
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_trained_model("models/prior", "models/stage1b", "models/stage2")
    for index, setting in enumerate(GRID):
        sampling = dataclasses.replace(SamplingConfig(), **setting)
        ablations = ("no_diffusion", "ceiling", "no_prompt") if index == 0 else ()
        config = EvaluateConfig(
            metrics=("psnr", "ssim"), ablations=ablations, split=args.split, grid_images=0
        )
        result = evaluate_model(model, args.prepared, sampling, config, show_progress=False)
        averages = {variant: result.average(variant) for variant in result.variants()}
        per_task = {
            task: {
                variant: round(result.average(variant, task)["psnr"], 2) for variant in ("input", "restored")
            }
            for task in result.tasks()
        }
        print(json.dumps({"setting": setting, "avg": averages, "per_task": per_task}), flush=True)


if __name__ == "__main__":
    main()
