"""DVC stage ``card``: reports/metrics.json (+ the seed report) → the model card models/unildiff/README.md."""

from __future__ import annotations

import json
from pathlib import Path

from stages import run_stage
from unildiff import paths
from unildiff.params import load_section, read_params


def _json(path: Path) -> dict:
    from unildiff.errors import MissingArtifactError

    if not path.is_file():
        raise MissingArtifactError(f"{path} is missing (run `dvc repro`)")
    return json.loads(path.read_text(encoding="utf-8"))


def main() -> None:
    from unildiff.card import CardFacts, render_model_card
    from unildiff.data.config import DataConfig
    from unildiff.data.manifest import read_manifest
    from unildiff.evaluation.evaluate import EvaluateConfig
    from unildiff.models.config import PriorConfig
    from unildiff.utils.atomic import atomic_write_text

    params = read_params()
    prior = load_section("prior", PriorConfig, params)
    data = load_section("data", DataConfig, params)
    evaluate = load_section("evaluate", EvaluateConfig, params)
    rows = read_manifest(paths.PREPARED)
    evaluated = [row for row in rows if row.split == evaluate.split]
    sizes = sorted({f"{row.width}×{row.height}" for row in evaluated})
    facts = CardFacts(
        preset=prior.preset,
        setting=data.setting,
        source=data.source,
        train_photos=len({row.source_id for row in rows if row.split == "train"}),
        test_pairs=_json(paths.REPORTS / "metrics.json").get("num_images", len(evaluated)),
        test_size=sizes[0] if len(sizes) == 1 else "mixed sizes",
        split=evaluate.split,
    )
    seeds = _json(paths.SEEDS_JSON) if paths.SEEDS_JSON.is_file() and prior.preset == "tiny" else None
    card = render_model_card(
        _json(paths.MODEL / "model_index.json"), _json(paths.REPORTS / "metrics.json"), seeds, facts
    )
    atomic_write_text(paths.MODEL_CARD, card)
    print(f"card: wrote {paths.MODEL_CARD}")


if __name__ == "__main__":
    run_stage(main)
