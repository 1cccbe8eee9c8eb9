"""The fixed artifact locations of the pipeline, relative to the repository root (as ``dvc.yaml`` names them).

Stages read and write exactly these paths; the CLI uses them as option defaults. Nothing else here:
this module imports only :mod:`pathlib`, so every layer may import it.
"""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
PREPARED = Path("data/prepared")

PRIOR = Path("models/prior")
LATENT_CACHE = Path("models/cache/latents")
STAGE1A = Path("models/stage1a")
STAGE1B = Path("models/stage1b")
STAGE2 = Path("models/stage2")
MODEL = Path("models/unildiff")
MODEL_CARD = MODEL / "README.md"

REPORTS = Path("reports")
VALIDATION_JSON = REPORTS / "validation.json"
VALIDATION_HTML = REPORTS / "validation.html"
BENCH_REPORT = REPORTS / "bench.json"
SEEDS_MD = REPORTS / "seeds.md"
SEEDS_JSON = REPORTS / "seeds.json"

ONNX = Path("export/onnx")
ENGINES = Path("export/engines")
PARITY = Path("export/parity.json")


def checkpoints(stage: str) -> Path:
    """``checkpoints/<stage>``: the persistent resume checkpoints of a training stage."""
    return Path("checkpoints") / stage


def live(stage: str) -> Path:
    """``dvclive/<stage>``: the DVCLive metrics and plots of a training stage."""
    return Path("dvclive") / stage
