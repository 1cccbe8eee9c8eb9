"""The model card: ``models/unildiff/README.md``, in the model hub's form (YAML front matter + Markdown).

It is generated from what the pipeline measured (``reports/metrics.json``, and the seed report
``reports/seeds.json`` where one exists) and from the model folder's own recorded settings, never
written by hand, so it cannot drift from the model it describes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from unildiff.errors import DataError

#: Metrics shown per task (the full-reference ones every run has; learned ones appear when computed).
CARD_METRICS = ("psnr", "ssim", "lpips", "dists")


@dataclass(frozen=True)
class CardFacts:
    """What the card says about the data and the run, besides the measured metrics.

    Attributes:
        preset: ``tiny`` or ``sdxl`` (params ``prior.preset``).
        setting: the task setting (params ``data.setting``).
        source: ``builtin`` or ``folder`` (params ``data.source``).
        train_photos: distinct source photos of the training split.
        test_pairs: pairs in the evaluated split.
        test_size: the evaluated images' sides, e.g. ``128²`` (or ``mixed``).
        split: the evaluated split (``test`` or ``val``).
    """

    preset: str
    setting: str
    source: str
    train_photos: int
    test_pairs: int
    test_size: str
    split: str


def _value(metrics: Mapping[str, Any], variant: str, task: str, metric: str) -> float | None:
    block = metrics.get(variant, {})
    scores = block.get("avg", {}) if task == "avg" else block.get("per_task", {}).get(task, {})
    value = scores.get(metric)
    return None if value is None else float(value)


def _seed_cell(seeds: Mapping[str, Any] | None, metric: str, variant: str, task: str) -> str:
    if not seeds:
        return ""
    entry = seeds.get("tables", {}).get(metric, {}).get(variant, {}).get(task)
    if not entry:
        return ""
    digits = 2 if metric == "psnr" else 3
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def _metric_table(metrics: Mapping[str, Any], seeds: Mapping[str, Any] | None, names: Sequence[str]) -> str:
    tasks = list(metrics.get("restored", {}).get("per_task", {})) + ["avg"]
    header = "| task | " + " | ".join(f"{name.upper()} input → restored" for name in names)
    runs = len(seeds.get("runs", ())) if seeds else 0
    if runs:
        header += f" | PSNR over {runs} training seeds (mean ± std)"
    lines = [header + " |", "|---" * (len(names) + 1 + bool(runs)) + "|"]
    for task in tasks:
        cells = []
        for name in names:
            digits = 2 if name == "psnr" else 3
            before, after = _value(metrics, "input", task, name), _value(metrics, "restored", task, name)
            cells.append("" if after is None else f"{before:.{digits}f} → {after:.{digits}f}")
        if runs:
            cells.append(_seed_cell(seeds, "psnr", "restored", task))
        label = "**average**" if task == "avg" else task
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: How far (dB) this run's average PSNR may lie outside the seed report's range for the report to be shown.
SEED_REPORT_MARGIN_DB = 0.5


def seed_report_applies(metrics: Mapping[str, Any], seeds: Mapping[str, Any] | None) -> bool:
    """Whether the seed report describes this model's configuration: this run's restored average PSNR
    lies within the report's per-seed range (± :data:`SEED_REPORT_MARGIN_DB`). A report of another
    configuration (other params, the smoke run) is left out rather than shown beside the wrong model."""
    entry = (seeds or {}).get("tables", {}).get("psnr", {}).get("restored", {}).get("avg")
    value = _value(metrics, "restored", "avg", "psnr")
    if not entry or value is None:
        return False
    return entry["min"] - SEED_REPORT_MARGIN_DB <= value <= entry["max"] + SEED_REPORT_MARGIN_DB


def _front_matter(metrics: Mapping[str, Any], facts: CardFacts, names: Sequence[str]) -> str:
    dataset = f"{facts.setting} {facts.split} split ({facts.test_pairs} pairs, {facts.source} data)"
    entries = []
    for name in names:
        value = _value(metrics, "restored", "avg", name)
        if value is not None:
            entries.append(
                f"          - type: {name}\n            name: {name.upper()}\n            value: {value:.4f}"
            )
    return "\n".join(
        [
            "---",
            "license: apache-2.0",
            "library_name: unildiff",
            "pipeline_tag: image-to-image",
            "tags:",
            "  - image-restoration",
            "  - all-in-one-image-restoration",
            "  - latent-diffusion",
            "  - diffusers",
            "metrics:",
            *[f"  - {name}" for name in names],
            "model-index:",
            f"  - name: UniLDiff ({facts.preset})",
            "    results:",
            "      - task:",
            "          type: image-to-image",
            "          name: All-in-one image restoration",
            "        dataset:",
            f"          name: {json.dumps(dataset)}",
            f"          type: {facts.source}",
            "        metrics:",
            *entries,
            "---",
        ]
    )


def _limits(facts: CardFacts) -> str:
    if facts.preset == "tiny":
        return (
            f"- This is the `tiny` preset: a small SDXL-shaped prior trained from scratch on "
            f"{facts.train_photos} clean photos, with synthetic degradations. It proves the method and the "
            "pipeline on a CPU; it is not a general-purpose restorer.\n"
            f"- It was evaluated on {facts.test_pairs} {facts.test_size} crops of held-out photos. Expect "
            "lower quality on real photos, other sizes and degradations outside its tasks.\n"
            "- It restores best with the right task prompt; blind (no prompt) restoration is its "
            "`no_prompt` row."
        )
    return (
        f"- Fine-tuned from SDXL on {facts.train_photos} training photos ({facts.setting}). Evaluated on "
        f"{facts.test_pairs} {facts.test_size} pairs.\n"
        "- Generative restoration can invent plausible detail: do not use it where exact pixel evidence "
        "matters (forensics, medical images)."
    )


def render_model_card(
    model_index: Mapping[str, Any],
    metrics: Mapping[str, Any],
    seeds: Mapping[str, Any] | None,
    facts: CardFacts,
) -> str:
    """The model card's Markdown.

    Args:
        model_index: the model folder's ``model_index.json`` (its ``sampling``, ``start`` and ``tasks``).
        metrics: ``reports/metrics.json`` of this model.
        seeds: ``reports/seeds.json`` (the seed report) or ``None``; shown only where it describes this
            configuration (:func:`seed_report_applies`).
        facts: the data and run facts.

    Raises:
        DataError: ``metrics`` has no ``restored`` row or ``model_index`` no ``tasks``.
    """
    if "restored" not in metrics or "input" not in metrics:
        raise DataError("reports/metrics.json has no input/restored rows (run `dvc repro evaluate`)")
    if "tasks" not in model_index:
        raise DataError("model_index.json has no tasks (run `dvc repro package`)")
    names = [name for name in CARD_METRICS if _value(metrics, "restored", "avg", name) is not None]
    seeds = seeds if seed_report_applies(metrics, seeds) else None
    tasks = "\n".join(f"| `{name}` | {prompt} |" for name, prompt in dict(model_index["tasks"]).items())
    start = model_index["start"]
    sampling = ", ".join(f"{key} {value}" for key, value in model_index["sampling"].items())
    skipped = metrics.get("skipped", {})
    skipped_line = (
        f"\nNot computed here: {', '.join(sorted(skipped))} (no local weights).\n" if skipped else ""
    )
    seeds_line = ""
    if seeds and seeds.get("runs"):
        seeds_line = (
            f"\nThe last column is the seed report `reports/seeds.json`: the restored PSNR's mean ± std over "
            f"{len(seeds['runs'])} training seeds (`train.seed`: stages 1a-2 retrained on the same prior) of "
            "the default configuration (after changing params, rebuild it with `unildiff seed-report`).\n"
        )
    return f"""{_front_matter(metrics, facts, names)}

# UniLDiff ({facts.preset})

All-in-one image restoration with a latent-diffusion prior: one model for every task below. A
Degradation-Aware Feature Fusion module (DAFF) feeds the low-quality image's features into the UNet
at every denoising step, and a Detail-Aware Expert Module (DAEM) in the VAE decoder restores detail
from the low-quality image's skip features.

## Use

```python
from PIL import Image
from unildiff import UniLDiffPipeline

pipe = UniLDiffPipeline.from_pretrained("path/to/this/folder")
restored = pipe(Image.open("rainy.png"), prompt="remove rain").images[0]
restored.save("restored.png")
```

Command line: `unildiff restore rainy.png -o restored/ --model path/to/this/folder --task derain`.

## Task prompts

| task | prompt |
|---|---|
{tasks}

An empty prompt restores blind (the model is not told the degradation).

## Settings

Recorded with the weights and used by every restoration: {sampling}.
Denoising starts from {"the LQ latent" if start["mode"] == "lq" else "pure noise"}
(start: mode {start["mode"]}, timestep {start["timestep"]}, noise {start["noise"]}, trained at this start in
{start["training_fraction"]:.0%} of stage-1 batches). A request that starts elsewhere is refused unless
allowed explicitly (`allow_untrained_start=True`, `--allow-untrained-start`).

## Metrics

{facts.setting} {facts.split} split, {facts.test_pairs} pairs ({facts.test_size}), {facts.source} data.

{_metric_table(metrics, seeds, names)}
{seeds_line}{skipped_line}
## Intended use and limits

{_limits(facts)}
"""
