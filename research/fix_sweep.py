"""Sweep of step 7's fixes against the LQ on the validation split.

Backs docs/experiments/2026-12-01-fixes-against-lq.md.

Each model (a repository whose ``models/unildiff`` is one training seed's model, opened with
``UniLDiffPipeline.from_pretrained``) restores the split once with its recorded settings and both
fixes off; every grid setting is then applied to those restorations with the pipeline's own
:func:`~unildiff.pipeline.fix_against_lq` and scored with the evaluate stage's ``MetricSuite``. Prints
one line per setting: the (task, metric) pairs whose seed mean beats the input, the average PSNR/SSIM
and the per-task PSNR/SSIM.

    python research/fix_sweep.py . /path/to/seed1 /path/to/seed2 --split val
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import torch

from unildiff import UniLDiffPipeline, paths
from unildiff.data.dataset import PairedImageDataset
from unildiff.evaluation.metrics import MetricSuite
from unildiff.pipeline import SamplingConfig, fix_against_lq

#: Step 7 off: the restorations the grid's fixes are applied to.
RAW = {"color_fix": "none", "detail_fix_radius": 0, "detail_fix_wide_radius": 0}


def raw_restorations(root: Path, items: list[dict]) -> tuple[list[torch.Tensor], SamplingConfig]:
    """The model of ``root`` restoring every item with both fixes off, [-1, 1], (1, 3, H, W) each, and the
    model's recorded sampling settings."""
    pipeline = UniLDiffPipeline.from_pretrained(root / paths.MODEL)
    outputs = [
        pipeline(item["lq"].unsqueeze(0), item["prompt"], output_type="pt", **RAW).images[0] for item in items
    ]
    return outputs, pipeline.sampling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="+", type=Path, help="repositories holding models/unildiff (one per seed)"
    )
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--prepared", type=Path, default=paths.PREPARED)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = PairedImageDataset(args.prepared, args.split, crop_size=None)
    items = [dataset[index] for index in range(len(dataset))]
    suite = MetricSuite(("psnr", "ssim"))
    runs = [raw_restorations(root, items) for root in args.models]
    restorations = [outputs for outputs, _ in runs]
    sampling = runs[0][1]  # the grid varies the first model's recorded step-7 settings

    def table(config: SamplingConfig | None) -> dict[str, np.ndarray]:
        scores: dict[str, list] = {}
        for item_index, item in enumerate(items):
            lq, gt = item["lq"].unsqueeze(0), item["gt"].unsqueeze(0)
            images = (
                [lq]
                if config is None
                else [fix_against_lq(run[item_index], lq, config) for run in restorations]
            )
            for image in images:
                score = suite.score(image, gt)
                scores.setdefault(item["task"], []).append((score["psnr"], score["ssim"]))
        return {task: np.array(values) for task, values in scores.items()}

    reference = {task: values.mean(axis=0) for task, values in table(None).items()}
    # rounds 1-2: colour fix and detail radius (no wide radius); round 3: the wide radius on top of params
    grid = [("none", 5, 0.25, 0, 0)]
    grid += list(itertools.product(["adaptive"], [2, 3, 4], [0.2, 0.25, 0.3], [0, 1, 2], [0]))
    adopted = (sampling.color_fix, sampling.color_fix_levels, sampling.color_fix_tolerance)
    grid += [(*adopted, sampling.detail_fix_radius, wide) for wide in (2, 4, 8, 16, 32)]
    for color_fix, levels, tolerance, radius, wide_radius in grid:
        config = dataclasses.replace(
            sampling,
            color_fix=color_fix,
            color_fix_levels=levels,
            color_fix_tolerance=tolerance,
            detail_fix_radius=radius,
            detail_fix_wide_radius=wide_radius,
        )
        scores = table(config)
        means = {task: values.mean(axis=0) for task, values in scores.items()}
        passes = sum(int(means[task][k] > reference[task][k]) for task in means for k in (0, 1))
        every = np.concatenate(list(scores.values()))
        cells = " ".join(f"{task} {m[0]:.2f}/{m[1]:.3f}" for task, m in sorted(means.items()))
        print(
            f"{color_fix} levels={levels} tolerance={tolerance} radius={radius} wide={wide_radius}: "
            f"passes {passes}/"
            f"{2 * len(means)}, avg {every[:, 0].mean():.2f}/{every[:, 1].mean():.3f} | {cells}",
            flush=True,
        )


if __name__ == "__main__":
    main()
